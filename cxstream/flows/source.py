"""A Kafka source that hands over whole polls, not one Python object per message.

Bytewax's own ``KafkaSource`` wraps every message in a ``KafkaSourceMessage`` (a dataclass with
nine fields) before the first step sees it; at tens of thousands of events per second that
alone costs a sixth of a core. :class:`BatchKafkaSource` is the same source — one input
partition per Kafka partition, partitions assigned rather than joined as a group, the next
offset as the recovery state (so it resumes where the last snapshot was), consumer lag in
``bytewax_kafka_consumer_lag`` — but each poll becomes one :class:`RawBatch` of values and
offsets. Errors from the consumer are passed on as items of their own (they end in the
dead-letter topic), never raised.

With a :class:`PollProcessor` the partition also does the first steps of the hot path on each
poll (parse, enrich, the per-subscriber detectors) and keeps their state next to its offset.
Producers key QoS events by subscriber, so a subscriber's events and state stay in one Kafka
partition, on the worker Bytewax assigned it: in a cluster, no subscriber state or event crosses
between processes before demarcation, and a snapshot holds an offset and exactly the state that
reflects the events before it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from typing_extensions import override

from cxstream.batches import RawBatch
from cxstream.errors import RecoveryError, ServiceError
from cxstream.metrics import KAFKA_INPUT_SILENT

__all__ = ["BatchKafkaSource", "InputSilence", "PollProcessor", "RawBatch", "SourceError"]

log = logging.getLogger(__name__)


class InputSilence:
    """How long the broker leading an input partition has not answered its consumer.

    Read from librdkafka's statistics: ``rxidle``, the time since the leader's connection last
    received anything, measured in librdkafka's own clock (``ts``), so statistics that queued
    up while the worker was busy are each judged as of when they were taken. A consumer's fetch
    is answered at least every ``fetch.wait.max.ms`` (500 ms by default), data or none, so an
    input whose broker answers is never silent for more than about that. A broker that hangs
    (a frozen process, a partition that drops packets) keeps the connection up and answers
    nothing: the silence grows; once librdkafka gives up on the connection and reconnects
    (``socket.timeout.ms``), the leader is not ``UP`` and the silence goes on growing until it
    answers again.

    >>> def stats(at_s, state, idle_s, leader=1):
    ...     broker = {"nodeid": leader, "state": state, "rxidle": int(idle_s * 1e6)}
    ...     return {"ts": int(at_s * 1e6), "brokers": {"kafka-0:9092/1": broker}}, leader
    >>> silence = InputSilence()
    >>> silence.observe(*stats(10, "UP", 0.4)); round(silence.seconds, 1)
    0.4
    >>> silence.observe(*stats(40, "UP", 30.4)); round(silence.seconds, 1)  # nothing received
    30.4
    >>> silence.observe(*stats(75, "APIVERSION_QUERY", -1e-6)); round(silence.seconds, 1)
    65.4
    >>> silence.observe(*stats(76, "UP", 0.2)); round(silence.seconds, 1)  # it answers again
    0.2
    """

    def __init__(self) -> None:
        self._heard: int | None = None  # when the leader last answered, librdkafka's clock (µs)
        self.seconds = 0.0

    def observe(self, stats: dict[str, Any], leader: int | None) -> None:
        """Take one statistics report and the partition's leader (its broker id, if known)."""
        ts = stats.get("ts")
        if not isinstance(ts, int):
            return
        if leader is not None and leader >= 0:
            for broker in stats.get("brokers", {}).values():
                if broker.get("nodeid") == leader:
                    idle = broker.get("rxidle", -1)
                    if broker.get("state") == "UP" and isinstance(idle, int) and idle >= 0:
                        self._heard = ts - idle
                    break
        if self._heard is None:  # the first report: silence is counted from here
            self._heard = ts
        self.seconds = max(0.0, (ts - self._heard) / 1e6)


_SILENCES: dict[int, InputSilence] = {}
_SILENCES_LOCK = threading.Lock()


def longest_input_silence() -> float:
    """``cxstream_kafka_input_silent_seconds``: the longest silence over this process's input
    partitions (0 with none)."""
    with _SILENCES_LOCK:
        return max((s.seconds for s in _SILENCES.values()), default=0.0)


KAFKA_INPUT_SILENT.set_function(longest_input_silence)


@dataclass(frozen=True, slots=True)
class _ErrorMessage:
    value: bytes | None
    topic: str | None
    partition: int | None
    offset: int | None


@dataclass(frozen=True, slots=True)
class SourceError:
    """An error the consumer reported, with the message it came with (``err`` and ``msg``,
    as Bytewax's ``KafkaError`` has)."""

    err: KafkaError
    msg: _ErrorMessage


class PollProcessor(Protocol):
    """Work done on each poll inside the partition that read it, with state kept beside the
    partition's offset: snapshotted together, restored together, never shipped elsewhere."""

    def new_state(self) -> Any: ...
    def process(self, items: list[RawBatch | SourceError], state: Any) -> list[Any]: ...


class _Partition(StatefulSourcePartition[Any, Any]):
    def __init__(
        self,
        step_id: str,
        config: dict[str, Any],
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        processor: PollProcessor | None = None,
        state: Any = None,
        linger_s: float = 0.0,
        start_file: Path | None = None,
        from_start: bool = False,
        added: bool = False,
    ) -> None:
        self._offset = offset
        self._linger = timedelta(seconds=linger_s)
        self._awake: datetime | None = None
        self._processor = processor
        self._state = state
        self._topic = topic
        self._partition = partition
        self._batch_size = batch_size
        self._labels = {"step_id": step_id, "topic": topic, "partition": partition}
        self._silence = InputSilence()
        with _SILENCES_LOCK:
            _SILENCES[id(self)] = self._silence
        self._consumer = Consumer({**config, "stats_cb": self._stats})
        if offset == OFFSET_END:
            offset = self._offset = self._first_offset(start_file, added)
        elif offset >= 0 and from_start:
            log.info(
                "%s[%d]: the snapshot's offset %d is not used: the topic is new, read from its start",
                topic,
                partition,
                offset,
            )
            offset = self._offset = OFFSET_BEGINNING
        self._consumer.assign([TopicPartition(topic, partition, offset)])

    def _first_offset(self, start_file: Path | None, added: bool) -> int:
        """Where a start without a snapshot begins: the offset recorded by the first such start,
        if ``start_file`` holds one, else the partition's end now (then recorded there), or its
        first offset for a partition ``added`` after the first start (everything on it came
        since)."""
        if start_file is not None and start_file.exists():
            text = start_file.read_text(errors="replace").strip()
            if not (text.isascii() and text.isdigit()):  # '²' is a digit to isdigit(), not to int()
                msg = (
                    f"{start_file} should hold the offset {self._topic}[{self._partition}] was "
                    f"first read from, not {text[:40]!r}; delete the recovery directory as a "
                    "whole to start afresh"
                )
                raise RecoveryError(msg)
            return int(text)
        # resolved now, not by the fetcher later: a message produced after this point (and
        # before the fetcher's own lookup) must not be skipped
        marks = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), timeout=30, cached=False
        )
        if marks is None:
            msg = f"could not read the end offset of {self._topic}[{self._partition}] within 30 s"
            raise ServiceError(msg)
        first = marks[0] if added else marks[1]
        if added:
            log.info(
                "%s[%d]: added after the first start, read from its first offset %d",
                self._topic,
                self._partition,
                first,
            )
        if start_file is not None:
            _write_atomically(start_file, str(first))
        return int(first)

    def _stats(self, raw: str) -> None:
        # called from inside consume(): whatever it raised would end the poll, so nothing is
        # assumed of the report's shape (a partition is missing until its metadata arrives)
        stats = json.loads(raw)
        topic = stats.get("topics", {}).get(self._topic, {})
        part = topic.get("partitions", {}).get(str(self._partition), {})
        self._silence.observe(stats, part.get("leader"))
        if self._offset > 0 and isinstance(part.get("ls_offset"), int):
            lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(**self._labels)
            lag.set(part["ls_offset"] - self._offset)

    @override
    def next_awake(self) -> datetime | None:
        return self._awake

    @override
    def next_batch(self) -> list[Any]:
        polled = self._poll()
        if self._processor is None or not polled:
            return polled
        return self._processor.process(polled, self._state)

    def _poll(self) -> list[RawBatch | SourceError]:
        # Never block while lingering: an empty partition (the side inputs are empty most of the
        # time) would hold the whole worker for the timeout at every poll, 1 ms in 20 per
        # partition. Without a linger, a short wait keeps an idle input from spinning.
        msgs = self._consumer.consume(self._batch_size, 0 if self._linger else 0.001)
        # Less than a full poll: the partition has caught up. Let the next batch build up for
        # `linger` rather than polling a few messages at a time: every batch has a fixed cost
        # (array set-up, Redis round trips), so tiny batches would waste the core at low rates.
        full = len(msgs) >= self._batch_size
        self._awake = None if full or not self._linger else datetime.now(UTC) + self._linger
        if not msgs:
            return []
        values: list[bytes | None] = []
        offsets: list[int] = []
        errors: list[RawBatch | SourceError] = []
        tombstones: dict[int, bytes] = {}  # offset -> key of the messages without a value
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                errors.append(
                    SourceError(
                        error,
                        _ErrorMessage(msg.value(), msg.topic(), msg.partition(), msg.offset()),
                    )
                )
                continue
            value = msg.value()
            if value is None and (key := msg.key()) is not None:  # a tombstone: the key erased
                tombstones[msg.offset()] = key  # type: ignore[index]
            values.append(value)
            offsets.append(msg.offset())  # type: ignore[arg-type]
        last = msgs[-1].offset()
        if last is not None and last >= 0:
            self._offset = last + 1  # resume from the next message, not this one
        out: list[RawBatch | SourceError] = errors
        if values:
            out.append(RawBatch(self._topic, self._partition, values, offsets, tombstones or None))
        return out

    @override
    def snapshot(self) -> Any:
        if self._processor is None:
            return self._offset
        return (self._offset, self._state)

    @override
    def close(self) -> None:
        with _SILENCES_LOCK:
            _SILENCES.pop(id(self), None)
        self._consumer.close()


class BatchKafkaSource(FixedPartitionedSource[Any, Any]):
    """Kafka topics as input, a poll at a time (see the module docstring).

    Parameters
    ----------
    brokers
        ``host:port`` of the bootstrap brokers.
    topics
        Topics to read; every partition is an input partition.
    add_config
        More librdkafka consumer properties (security, fetch tuning).
    admin_config
        The properties for listing the topics' partitions (security; None: ``add_config``).
        Consumer-only properties given to the admin client are ignored with a warning each.
    batch_size
        Messages per poll at most.
    processor
        Optional work to do on each poll in the partition itself, with per-partition state
        (the QoS hot path: parse, enrich and the subscribers' detectors).
    linger_s
        After a poll that was not full, wait this long before the next one, so that batches
        build up at low rates (adds at most this much latency).
    from_end
        Without a recovery snapshot, start at each partition's end as it is when the partition
        is built (its high watermark, read from the broker then) instead of its beginning: for an
        input that must only see what was produced from this start on (the actions topic, read
        back for webhook deliveries, must not re-send the history).
    start_dir
        With ``from_end``: a directory kept with the recovery snapshots, where the first start
        records each partition's end offset (a file per partition). A later start that still
        has no snapshot to resume from (the process died before its first snapshot) begins at
        the recorded offset, not at the end as it is by then: what the dead run's epoch put on
        the topic is read, not skipped. It also records how many partitions each topic had
        (``<topic>.partitions``): a partition added since, which has neither a snapshot nor a
        recorded offset, is read from its first offset (everything on it came since).
    from_start
        Resume each partition's state from the snapshot but read the partition from its start,
        not from the snapshot's offset: the topics are new ones of the same names (the demo
        replaces its embedded broker with an empty one: see
        :class:`cxstream.devtools.generations.Generations`).
        Kafka itself needs no such option for a topic created again: an offset beyond a
        partition's end is reset by ``auto.offset.reset``; the embedded broker neither answers
        such a fetch with an error nor reports an exact end (its high watermark is the first
        offset of the last batch), so the offsets cannot be checked against the log there.
    """

    def __init__(
        self,
        brokers: Iterable[str],
        topics: Iterable[str],
        *,
        add_config: dict[str, str] | None = None,
        admin_config: dict[str, str] | None = None,
        batch_size: int = 5_000,
        processor: PollProcessor | None = None,
        linger_s: float = 0.0,
        from_end: bool = False,
        start_dir: Path | None = None,
        from_start: bool = False,
    ) -> None:
        if isinstance(brokers, str) or isinstance(topics, str):
            msg = "brokers and topics must be lists of strings, not a string"
            raise TypeError(msg)
        self._brokers = list(brokers)
        self._topics = list(topics)
        self.topics = tuple(self._topics)  # the topics it reads
        self._add_config = dict(add_config or {})
        self._admin_config = dict(admin_config) if admin_config is not None else self._add_config
        self._batch_size = batch_size
        self.processor = processor
        self._linger_s = linger_s
        self._from_end = from_end
        self._start_dir = start_dir
        self._from_start = from_start
        self.listed: dict[str, int] = {}  # partitions per topic when Bytewax listed them
        self._admin: AdminClient | None = None

    def _with_brokers(self, config: dict[str, str]) -> dict[str, Any]:
        return {"bootstrap.servers": ",".join(self._brokers), **config}

    def _config(self) -> dict[str, Any]:
        return self._with_brokers(self._add_config)

    @override
    def list_parts(self) -> list[str]:
        client = AdminClient(self._with_brokers(self._admin_config))
        parts: list[str] = []
        for topic in self._topics:
            partitions = _partitions(client, topic)
            parts.extend(f"{i}-{topic}" for i in partitions)
            self.listed[topic] = len(partitions)
            count = self._count_file(topic)
            if count is not None and not count.exists():  # the first start: what it found
                _write_atomically(count, str(len(partitions)))
        return parts

    def _count_file(self, topic: str) -> Path | None:
        """Where a source that starts from the end records how many partitions ``topic`` had
        at its first start: a partition numbered beyond them was added since."""
        return (
            self._start_dir / f"{topic}.partitions" if self._from_end and self._start_dir else None
        )

    def partitions_on_broker(self, topic: str, timeout_s: float = 10.0) -> int:
        """How many partitions ``topic`` has now (compared with :attr:`listed`: Bytewax lists a
        source's partitions once, at the start)."""
        if self._admin is None:  # one client for every check (each holds threads and sockets)
            self._admin = AdminClient(self._with_brokers(self._admin_config))
        return len(_partitions(self._admin, topic, timeout_s))

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Partition:
        idx, topic = for_part.split("-", 1)
        if topic not in self._topics:
            msg = f"cannot resume partition {for_part!r}: topic {topic!r} is no longer an input"
            raise RecoveryError(msg)
        config = {
            "group.id": "cxstream-assigned",  # partitions are assigned: no group join
            "enable.auto.commit": "false",
            "enable.partition.eof": "false",
            "statistics.interval.ms": 1000,
            **self._config(),
        }
        offset, state = (OFFSET_END if self._from_end else OFFSET_BEGINNING), None
        if isinstance(resume_state, tuple):
            offset, state = resume_state
        elif resume_state is not None:
            offset = resume_state
        if self.processor is not None and state is None:
            state = self.processor.new_state()
        start_file, added = None, False
        count = self._count_file(topic)
        if count is not None:
            start_file = count.with_name(f"{topic}-{idx}")
            text = count.read_text(errors="replace").strip() if count.exists() else ""
            added = text.isascii() and text.isdigit() and int(idx) >= int(text)
        return _Partition(
            step_id,
            config,
            topic,
            int(idx),
            offset,
            self._batch_size,
            self.processor,
            state,
            self._linger_s,
            start_file,
            self._from_start,
            added,
        )


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text``: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    with scratch.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    scratch.replace(path)


def _partitions(client: AdminClient, topic: str, timeout_s: float = -1) -> list[int]:
    """The partition ids of ``topic`` (``timeout_s`` -1: librdkafka's default wait)."""
    meta = client.list_topics(topic, timeout=timeout_s).topics[topic]
    if meta.error is not None:
        msg = f"cannot list the partitions of Kafka topic {topic!r}: {meta.error.str()}"
        raise ServiceError(msg)
    return list(meta.partitions)

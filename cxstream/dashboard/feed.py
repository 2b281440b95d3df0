"""Feed the dashboard state from Kafka (partitions assigned, no consumer-group join).

With a Redis ``store``, what the dashboard knows is saved there every ``save_s`` seconds
(when it changed), and at once after a customer's erasure (a tombstone), together with the
offset of the last record read from each topic partition, as one JSON document under ``key``;
a restarted dashboard loads it and reads each partition from the next offset, so it shows the
same incidents, decisions and customers at once without re-reading the topics from the
beginning. On Kafka, a partition whose saved offset is no longer there (a topic recreated) is
read from its start (``auto.offset.reset``). The embedded broker does not say so: a consumer
asking past a partition's end waits there, so with ``flow.inputs_from_start`` (set by the demo
when it replaces that broker: the topics are new) every partition is read from its start."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from cxstream.dashboard.state import DashboardState
from cxstream.settings import Settings

__all__ = ["KafkaFeed"]

log = logging.getLogger(__name__)


class KafkaFeed:
    """A background thread consuming the topics the dashboard shows."""

    def __init__(
        self,
        settings: Settings,
        state: DashboardState,
        *,
        pseudonyms: Callable[[str], str] | None = None,
        store: redis.Redis | None = None,
        key: str = "cx:dashboard:state",
        save_s: float = 5.0,
    ) -> None:
        topics = settings.kafka.topics
        self._store = store
        self._key = key
        self._save_s = save_s
        self._offsets: dict[tuple[str, int], int] = {}
        self._erased = False  # a customer was erased since the last save
        self.resumed = False  # whether the last start loaded a saved state
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            topics.alerts: state.on_alert,
            topics.alarm_updates: state.on_alarm_update,
            topics.decisions: state.on_decision,
            topics.cells: state.on_cell,
            topics.deliveries: state.on_delivery,
        }
        self._customers = topics.customers  # read for its tombstones (erased customers)
        self._from_start = settings.flow.inputs_from_start  # new topics: no saved offset holds
        self._state = state
        self._pseudonyms = pseudonyms  # the customers topic carries real ids; outputs do not
        self._config = {
            **settings.kafka.client_config(),
            "group.id": "cxstream-dashboard",  # not joined: partitions are assigned
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": "100",
            "auto.offset.reset": "earliest",  # a saved offset no longer there: from the start
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def start(self) -> KafkaFeed:
        """Start consuming from the beginning of each topic."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (saving what it knows first)."""
        self._stop.set()
        self._thread.join(5)

    def _restore(self) -> dict[tuple[str, int], int]:
        """Load the saved state; the saved offsets (empty when there is none)."""
        if self._store is None:
            return {}
        try:
            raw = self._store.get(self._key)
        except redis.RedisError as exc:
            log.warning("dashboard state not loaded (reading the topics from the start): %s", exc)
            return {}
        if raw is None:
            return {}
        try:
            saved = orjson.loads(raw)
            offsets = {(str(t), int(p)): int(o) for t, p, o in saved["offsets"]}
            self._state.load(saved["state"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("dashboard state unreadable, reading the topics from the start: %s", exc)
            return {}
        self.resumed = True
        log.info("dashboard state loaded: %d partitions resume where they were", len(offsets))
        return offsets

    def _save(self) -> None:
        if self._store is None:
            return
        document = {
            "state": self._state.dump(),
            "offsets": [[t, p, o] for (t, p), o in self._offsets.items()],
        }
        try:
            self._store.set(self._key, orjson.dumps(document))
        except redis.RedisError as exc:
            log.warning("dashboard state not saved: %s", exc)

    def _start(self, saved: int | None) -> int:
        """Where to read a partition from: after the saved offset, unless the topics are new
        (``flow.inputs_from_start``). On Kafka, one no longer on the broker (a recreated topic,
        or before its retention) is read from the start (``auto.offset.reset``). The broker's
        listed end offsets are not asked: the embedded broker's lag behind its last batch."""
        return OFFSET_BEGINNING if saved is None or self._from_start else saved + 1

    def _customer_record(self, key: bytes | None, value: bytes | None) -> None:
        """A tombstone erases the customer it is keyed by; a later profile creates them again."""
        if key is None:
            return
        sid = key.decode("utf-8", "replace")
        if self._pseudonyms is not None:
            sid = self._pseudonyms(sid)
        if value is None:
            self._state.forget(sid)
            self._erased = True  # the saved state forgets them at once, not within save_s
        elif sid in self._state.erased:
            self._state.restore(sid)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        saved = self._restore()
        self._offsets = dict(saved)
        saved_version, saved_at = self._state.version, time.monotonic()
        try:
            parts = []
            for topic in [*self._handlers, self._customers]:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                parts += [
                    TopicPartition(topic, p, self._start(saved.get((topic, p))))
                    for p in meta.partitions
                ]
            consumer.assign(parts)
            while not self._stop.is_set():
                if self._erased or (
                    self._state.version != saved_version
                    and time.monotonic() - saved_at >= self._save_s
                ):
                    saved_version, saved_at = self._state.version, time.monotonic()
                    self._erased = False
                    self._save()
                for msg in consumer.consume(500, timeout=0.2):
                    value, name = msg.value(), msg.topic()
                    if msg.error() or name is None:
                        continue
                    self._offsets[(name, msg.partition() or 0)] = msg.offset() or 0
                    if name == self._customers:
                        self._customer_record(msg.key(), value)
                        continue
                    if value is None:
                        continue
                    try:
                        self._handlers[name](orjson.loads(value))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        log.warning("dashboard skipped a record on %s: %s", msg.topic(), exc)
        except KafkaException as exc:
            log.error("dashboard feed stopped: %s", exc)
        finally:
            if self._state.version != saved_version:
                self._save()
            consumer.close()

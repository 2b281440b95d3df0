"""Ingest: Kafka messages in; dead letters, and the valid QoS events as enriched columnar batches,
out. Each value is decoded and validated in one C call (msgspec); one that fails goes through the
pydantic model for its exact reason. The customer's context comes from Redis, one ``MGET`` per
batch for what the cache does not hold."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from cxstream import metrics
from cxstream.batches import RawBatch, ShardBatch, group_by_shard
from cxstream.context import ContextStore
from cxstream.events import (
    Action,
    BadEvent,
    CustomerErasure,
    CustomerUpdate,
    Outcome,
    QosEvent,
    QosRecord,
    decode_qos,
    invalid_id_positions,
    is_id,
    parse_action,
    parse_customer,
    parse_outcome,
    parse_qos,
)
from cxstream.settings import Settings
from cxstream.steps.common import count_dead_letters, parse_batch, source_error

__all__ = [
    "Ingest",
    "parse_action_batch",
    "parse_customer_batch",
    "parse_outcome_batch",
    "pseudonymise",
]


class Ingest:
    """Parse, validate and enrich QoS events.

    Parameters
    ----------
    settings
        Validated settings (``flow.max_event_age_s``, ``flow.max_event_ahead_s``, shards).
    context
        The customer-context store (None: no enrichment, for offline evaluation).
    clock
        Returns the current UTC time (events too old or too far ahead are dead-lettered).
    shard_keys
        The state key of each shard of subscribers.
    """

    def __init__(
        self,
        settings: Settings,
        context: ContextStore | None,
        *,
        clock: Callable[[], datetime],
        shard_keys: Sequence[str],
    ) -> None:
        self.settings = settings
        self.context = context
        self.clock = clock
        self.shard_keys = tuple(shard_keys)
        self.max_age = timedelta(seconds=settings.flow.max_event_age_s)
        self.max_ahead = timedelta(seconds=settings.flow.max_event_ahead_s)
        self.lateness = settings.flow.allowed_lateness_s
        self.late_events = settings.flow.late_events
        # per (topic, partition): the newest event time it delivered (kept in memory: after a
        # restart the first poll of each partition sets it again)
        self.watermarks: dict[tuple[str | None, int | None], float] = {}
        self.pseudonyms = settings.privacy.pseudonyms()

    def ingest(self, messages: Sequence[Any]) -> list[BadEvent | tuple[str, ShardBatch]]:
        """Parse, validate and enrich a batch of source items; valid events come out as one
        columnar batch per shard of subscribers, invalid ones as dead letters."""
        bad, batch = self.parse(messages)
        out: list[BadEvent | tuple[str, ShardBatch]] = list(bad)
        if batch is not None:
            for shard, positions in group_by_shard(batch.subscribers, self.settings.flow.shards):
                out.append((self.shard_keys[shard], batch.take(positions)))
        return out

    def parse(self, messages: Sequence[Any]) -> tuple[list[BadEvent], ShardBatch | None]:
        """Dead letters (counted), and the valid events as one enriched columnar batch.

        Items are whole polls (:class:`~cxstream.flows.source.RawBatch`), consumer errors, or
        single messages with ``value``/``topic``/``partition``/``offset``. Each value is
        decoded and validated in one step (:func:`~cxstream.events.decode_qos`, the same rules
        as :class:`QosEvent`); one that fails goes through :func:`parse_qos` for its exact
        reason.
        """
        now = self.clock()
        now_ts = now.timestamp()
        max_age = self.max_age.total_seconds()
        newest = now_ts + self.max_ahead.total_seconds()
        decode = decode_qos
        bad: list[BadEvent] = []
        chunks: list[tuple[str | None, int | None, list[Any], list[Any]]] = []
        for item in messages:
            if isinstance(item, RawBatch):
                chunks.append((item.topic, item.partition, item.values, item.offsets))
                continue
            error = source_error(item, "qos")
            if error is not None:
                bad.append(error)
            else:
                chunks.append((item.topic, item.partition, [item.value], [item.offset]))
        # each chunk's records, their times, and the positions of the late ones (usually none)
        loose: list[tuple[list[QosRecord | QosEvent], list[float], list[int]]] = []
        for topic, partition, values, offsets in chunks:
            # staleness and lateness are judged against the partition's own watermark (the
            # newest event time it delivered), so a replay of old data runs like live data
            watermark = self.watermarks.get((topic, partition))
            records: list[QosRecord | QosEvent] = []
            times: list[float] = []
            origin: list[int] = []  # where each record came from in ``values``
            slow_path: list[int] = []
            for i, value in enumerate(values):
                if value:
                    try:
                        record = decode(value)
                        ts = record.event_time.timestamp()
                    except (msgspec.DecodeError, RecursionError, OverflowError, ValueError):
                        pass  # the model says why
                    else:
                        if 0.0 <= ts <= newest:  # from 1970 (the model says why not)
                            records.append(record)
                            times.append(ts)
                            origin.append(i)
                            continue
                slow_path.append(i)
            # the stream's time: the partition's watermark, or this poll's newest event
            reference = max(times) if times else -math.inf
            if watermark is not None and watermark > reference:
                reference = watermark
            drop = invalid_id_positions(records)
            if times and min(times) < reference - max_age:  # stale: the model says so
                drop = sorted({*drop, *(k for k, t in enumerate(times) if t < reference - max_age)})
            for p in reversed(drop):
                slow_path.append(origin[p])
                del records[p], times[p], origin[p]
            stream_time = datetime.fromtimestamp(reference, UTC) if reference != -math.inf else None
            for i in slow_path:
                value, offset = values[i], offsets[i]
                slow = parse_qos(
                    value,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    now=now,
                    max_age=self.max_age,
                    max_ahead=self.max_ahead,
                    stream_time=stream_time,
                )
                if isinstance(slow, BadEvent):
                    bad.append(slow)
                else:  # the two validators disagree: trust the model, keep the event
                    records.append(slow)
                    times.append(slow.event_time.timestamp())
                    origin.append(i)
            if not records:
                continue
            late = self._late(watermark, times)
            top = max(times)
            if watermark is None or top > watermark:
                self.watermarks[(topic, partition)] = top
            if late is not None and self.late_events == "dead_letter":
                for k in reversed(late):
                    i = origin[k]
                    bad.append(
                        BadEvent.of(
                            "late",
                            f"event_time more than {self.lateness}s behind its partition",
                            values[i],
                            topic=topic,
                            partition=partition,
                            offset=offsets[i],
                        )
                    )
                    del records[k], times[k]
                if not records:
                    continue
                late = None
            loose.append((records, times, late or []))
        count_dead_letters(bad)
        if not loose:
            return bad, None
        if len(loose) == 1:
            records, times, _ = loose[0]
        else:
            records = [r for rs, _, _ in loose for r in rs]
            times = [t for _, ts, _ in loose for t in ts]
        batch = self.enrich(records, times)
        offset = 0
        for rs, _, late_positions in loose:  # flagged only where a chunk had late events
            if late_positions:
                batch.late[[offset + k for k in late_positions]] = True
            offset += len(rs)
        return bad, batch

    def _late(self, watermark: float | None, times: list[float]) -> list[int] | None:
        """Positions of the events later than the allowed lateness behind ``watermark``
        (counted), or None."""
        if watermark is None:
            return None
        limit = watermark - self.lateness
        if min(times) >= limit:  # the usual case: nothing late, no pass over the events
            return None
        late = [k for k, t in enumerate(times) if t < limit]
        if not late:
            return None
        metrics.LATE_EVENTS.labels(self.late_events).inc(len(late))
        return late

    def enrich(self, records: list[QosRecord | QosEvent], times: list[float]) -> ShardBatch:
        """Columns of the records, with each customer's context (one MGET for the uncached)."""
        batch = ShardBatch.from_records(records, times)
        if self.pseudonyms is not None:  # from here on only pseudonyms (privacy settings)
            batch.subscribers = self.pseudonyms.many(batch.subscribers)
        if self.context is None:  # offline evaluation: the caller attaches the context
            return batch
        found = self.context.get_many(batch.subscribers)
        lookups = [found[sid] for sid in batch.subscribers]
        batch.set_context([lk.customer for lk in lookups], [lk.stale for lk in lookups])
        return batch


def parse_customer_batch(
    messages: Sequence[Any],
) -> list[CustomerUpdate | CustomerErasure | BadEvent]:
    """Validate a batch of customer-update messages: each a full profile or a partial patch
    (the fields it carries, :class:`~cxstream.events.CustomerUpdate`), or a tombstone (no value,
    the subscriber id as key: :class:`~cxstream.events.CustomerErasure`)."""
    out: list[CustomerUpdate | CustomerErasure | BadEvent] = []
    erasures: dict[int, CustomerErasure | BadEvent] = {}
    for i, msg in enumerate(messages):
        key = getattr(msg, "key", None)
        if getattr(msg, "value", b"") is None and key is not None:
            erasures[i] = _erasure(msg, key)
    rest = [m for i, m in enumerate(messages) if i not in erasures]
    parsed_rest = iter(zip(rest, parse_batch(rest, parse_customer, "customer"), strict=True))
    for i in range(len(messages)):
        if i in erasures:
            out.append(erasures[i])
            continue
        msg, parsed = next(parsed_rest)
        if isinstance(parsed, BadEvent):
            out.append(parsed)
            continue
        fields = frozenset(parsed.model_fields_set) - {"subscriber_id"}
        out.append(
            CustomerUpdate(parsed, fields, msg.value or b"", msg.topic, msg.partition, msg.offset)
        )
    return out


def _erasure(msg: Any, key: bytes) -> CustomerErasure | BadEvent:
    sid = key.decode("utf-8", "replace")
    if not is_id(sid):
        bad = BadEvent.of(
            "bad_id",
            "tombstone key: not an identifier (letters, digits, _:@+#=- and single dots)",
            key,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            kind="customer",
        )
        count_dead_letters([bad])
        return bad
    return CustomerErasure(sid, msg.topic, msg.partition, msg.offset)


def parse_outcome_batch(messages: Sequence[Any]) -> list[Outcome | BadEvent]:
    """Validate a batch of outcome messages."""
    return parse_batch(messages, parse_outcome, "outcome")


_Side = TypeVar("_Side", bound=CustomerUpdate | CustomerErasure | Outcome | BadEvent)


def pseudonymise(items: list[_Side], pseudonyms: Callable[[str], str] | None) -> list[_Side]:
    """The side inputs' records with their subscriber ids replaced by pseudonyms (privacy
    settings; ``None``: as they are). Dead letters keep the message as it came."""
    if pseudonyms is None:
        return items
    out: list[Any] = []
    for item in items:
        if isinstance(item, CustomerUpdate):
            c = item.customer
            c = c.model_copy(update={"subscriber_id": pseudonyms(c.subscriber_id)})
            out.append(replace(item, customer=c))
        elif isinstance(item, CustomerErasure):
            out.append(replace(item, subscriber_id=pseudonyms(item.subscriber_id)))
        elif isinstance(item, Outcome):
            out.append(item.model_copy(update={"subscriber_id": pseudonyms(item.subscriber_id)}))
        else:
            out.append(item)
    return out


def parse_action_batch(messages: Sequence[Any]) -> list[Action | BadEvent]:
    """Validate a batch of records read back from the actions topic (webhook deliveries)."""
    return parse_batch(messages, parse_action, "action")

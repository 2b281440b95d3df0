"""Columnar batches: what flows between the hot-path steps instead of one object per event.

A :class:`ShardBatch` holds the valid, enriched events of one shard of subscribers as columns
(lists of ids, numpy arrays of times and measurements); the detector step turns it into
:class:`CellBatch` es, one per shard of cells, for demarcation. Bytewax routes and snapshots a
few dozen shard keys per batch instead of every event, and the per-subscriber maths runs on
arrays (:class:`~cxstream.detectors.table.SubscriberTable`).
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from cxstream.events import CustomerContext
from cxstream.qos import QOS, SERVICE_CODES, QosTable

__all__ = [
    "AlarmClear",
    "CellBatch",
    "RawBatch",
    "ShardBatch",
    "SourceMessage",
    "group_by_shard",
    "shard_of",
]

F64 = NDArray[np.float64]


def shard_of(key: str, shards: int) -> int:
    """The shard of a subscriber or cell id: stable across processes and restarts (CRC-32)."""
    return zlib.crc32(key.encode()) % shards


def group_by_shard(keys: Sequence[str], shards: int) -> list[tuple[int, NDArray[np.intp]]]:
    """``(shard, positions)`` for each shard present, positions in input order."""
    if not keys:
        return []
    crc = zlib.crc32
    codes = np.fromiter((crc(k.encode()) % shards for k in keys), np.int64, len(keys))
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    cuts = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    return [(int(codes[g[0]]), g) for g in np.split(order, cuts)]


_SUBSCRIBER = operator.attrgetter("subscriber_id")
_CELL = operator.attrgetter("cell_id")
_EVENT_ID = operator.attrgetter("event_id")
_EVENT_TIME = operator.attrgetter("event_time")
_SERVICE = operator.attrgetter("service")


@dataclass(frozen=True, slots=True)
class RawBatch:
    """The messages of one poll of one Kafka partition: values and offsets, in order."""

    topic: str
    partition: int
    values: list[bytes | None]
    offsets: list[int]
    tombstones: dict[int, bytes] | None = None  # offset -> key, for the messages without a value

    def messages(self) -> list[SourceMessage]:
        """One item per message, for the low-volume inputs that take them one at a time."""
        topic, partition = self.topic, self.partition
        keys = self.tombstones or {}
        return [
            SourceMessage(value, topic, partition, offset, keys.get(offset))
            for value, offset in zip(self.values, self.offsets, strict=True)
        ]


class SourceMessage(NamedTuple):
    """One Kafka message: what the parse steps read of it (the key only of a tombstone)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(slots=True)
class ShardBatch:
    """Valid events of one shard of subscribers, with their customers' context, as columns."""

    subscribers: list[str]
    cells: list[str]
    event_ids: list[str]
    times: list[datetime]
    t: F64  # event time, epoch seconds
    service: NDArray[np.int8]
    measurements: F64  # one column per measure of cxstream.qos.QOS; NaN = not reported
    plan: F64  # the customer's plan (Mbps); NaN = context unknown
    customers: list[CustomerContext | None]
    stale: list[bool]
    late: NDArray[np.bool_]  # later than flow.allowed_lateness_s behind its partition

    def __len__(self) -> int:
        return len(self.subscribers)

    @staticmethod
    def from_records(
        records: Sequence[Any],
        times: Sequence[float] | None = None,
        customers: Sequence[CustomerContext | None] | None = None,
        stale: Sequence[bool] | None = None,
        table: QosTable = QOS,
    ) -> ShardBatch:
        """Columns from validated QoS records (:class:`~cxstream.events.QosRecord` or
        :class:`~cxstream.events.QosEvent`: the same attributes), their event times as epoch
        seconds if known, and each one's context (unknown when not given). The measurement
        columns are those of ``table``."""
        n = len(records)
        # a column at a time: one C-level map per attribute, no tuple per record
        event_times = list(map(_EVENT_TIME, records))
        if times is None:
            times = [d.timestamp() for d in event_times]
        batch = ShardBatch(
            subscribers=list(map(_SUBSCRIBER, records)),
            cells=list(map(_CELL, records)),
            event_ids=list(map(_EVENT_ID, records)),
            times=event_times,
            t=np.array(times, dtype=np.float64),
            service=np.array(
                list(map(SERVICE_CODES.__getitem__, map(_SERVICE, records))), dtype=np.int8
            ),
            measurements=table.matrix(records),
            plan=np.full(n, np.nan),
            customers=[None] * n,
            stale=[False] * n,
            late=np.zeros(n, dtype=bool),
        )
        if customers is not None:
            batch.set_context(customers, stale if stale is not None else [False] * n)
        return batch

    def set_context(
        self, customers: Sequence[CustomerContext | None], stale: Sequence[bool]
    ) -> None:
        """Attach each event's customer context (None = unknown), whether it may be out of date,
        and the plan each is judged against (NaN where unknown)."""
        self.customers = list(customers)
        self.stale = list(stale)
        self.plan = np.fromiter(
            (c.plan_mbps if c is not None else np.nan for c in customers),
            np.float64,
            len(self.customers),
        )

    def take(self, positions: NDArray[np.intp]) -> ShardBatch:
        """The events at ``positions``, in that order."""
        idx = positions.tolist()
        return ShardBatch(
            subscribers=[self.subscribers[i] for i in idx],
            cells=[self.cells[i] for i in idx],
            event_ids=[self.event_ids[i] for i in idx],
            times=[self.times[i] for i in idx],
            t=self.t[positions],
            service=self.service[positions],
            measurements=self.measurements[positions],
            plan=self.plan[positions],
            customers=[self.customers[i] for i in idx],
            stale=[self.stale[i] for i in idx],
            late=self.late[positions],
        )

    @staticmethod
    def concat(batches: Sequence[ShardBatch]) -> ShardBatch:
        """One batch of all events, in order."""
        if len(batches) == 1:
            return batches[0]
        return ShardBatch(
            subscribers=[s for b in batches for s in b.subscribers],
            cells=[c for b in batches for c in b.cells],
            event_ids=[e for b in batches for e in b.event_ids],
            times=[d for b in batches for d in b.times],
            t=np.concatenate([b.t for b in batches]),
            service=np.concatenate([b.service for b in batches]),
            measurements=np.concatenate([b.measurements for b in batches]),
            plan=np.concatenate([b.plan for b in batches]),
            customers=[c for b in batches for c in b.customers],
            stale=[s for b in batches for s in b.stale],
            late=np.concatenate([b.late for b in batches]),
        )


B1 = NDArray[np.bool_]
_NONE: B1 = np.zeros(0, dtype=bool)


class AlarmClear(NamedTuple):
    """A subscriber's degradation episode ended: its alarms (raised at ``raised_at``) clear."""

    alert_id: str
    subscriber_id: str
    cell_id: str
    raised_at: float  # epoch seconds
    cleared_at: float  # epoch seconds: the event that ended the episode
    probable_cause: str  # X.733, as its raise said (actions.tmf.probable_cause)


@dataclass(slots=True)
class CellBatch:
    """What demarcation needs about events of one shard of cells (and their new alerts).

    The numeric columns stay numpy arrays until demarcation reads them: half the batches cross
    to another process in a two-process cluster, and Bytewax pickles each crossing item twice
    (once for its length); an array is one buffer to copy, a list one object per value.
    """

    t: F64
    subscribers: list[str]
    cells: list[str]
    event_ids: list[str]
    degraded: B1
    experience: F64  # the subscriber's experience index after the event
    loss: F64  # the event's packet loss (%), 0 if not reported
    throughput: F64  # the event's throughput (kbit/s), NaN if not reported
    tiers: list[str | None]
    sample: B1  # record the index in the subscriber's history
    candidates: dict[int, Any]  # position -> the new alert's Candidate
    # (event time, cell left, cell arrived in, subscriber) for subscribers that moved out of a
    # cell of this shard: where its users went, evidence when it goes silent
    departures: list[tuple[float, str, str, str]] = field(default_factory=list)
    # degradation alarms of this shard's cells whose episodes ended
    clears: list[AlarmClear] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def empty(
        departures: list[tuple[float, str, str, str]], clears: list[AlarmClear] | None = None
    ) -> CellBatch:
        """A batch of no events that carries departures and clears only."""
        none = np.empty(0)
        return CellBatch(
            t=none,
            subscribers=[],
            cells=[],
            event_ids=[],
            degraded=np.empty(0, dtype=bool),
            experience=none,
            loss=none,
            throughput=none,
            tiers=[],
            sample=np.empty(0, dtype=bool),
            candidates={},
            departures=departures,
            clears=clears or [],
        )

    def for_demarcation(self) -> CellBatch:
        """The same events without the columns only needed before demarcation (``event_ids``
        and ``sample`` are empty): less to pickle when the batch crosses to another process."""
        return replace(self, event_ids=[], sample=_NONE)

    def sorted_by_time(self) -> CellBatch:
        """The same events in event-time order (stable; candidate positions follow; empty
        columns stay empty)."""
        t = self.t
        if len(t) < 2 or bool(np.all(t[1:] >= t[:-1])):
            return self
        order = np.argsort(t, kind="stable")
        idx = order.tolist()
        where = np.empty_like(order)
        where[order] = np.arange(len(order))

        def pick(column: list[Any]) -> list[Any]:
            return [column[i] for i in idx] if column else []

        return CellBatch(
            t=t[order],
            subscribers=pick(self.subscribers),
            cells=pick(self.cells),
            event_ids=pick(self.event_ids),
            degraded=self.degraded[order],
            experience=self.experience[order],
            loss=self.loss[order],
            throughput=self.throughput[order],
            tiers=pick(self.tiers),
            sample=self.sample[order] if len(self.sample) else _NONE,
            candidates={int(where[k]): c for k, c in self.candidates.items()},
            departures=self.departures,
            clears=self.clears,
        )

    @staticmethod
    def concat(batches: Sequence[CellBatch]) -> CellBatch:
        """One batch of all events, in order (candidate positions shifted; a column empty in
        any of them is empty in the result)."""
        if len(batches) == 1:
            return batches[0]
        candidates: dict[int, Any] = {}
        offset = 0
        for b in batches:
            candidates.update({offset + k: c for k, c in b.candidates.items()})
            offset += len(b)

        def full(column: str) -> bool:
            return all(len(getattr(b, column)) == len(b) for b in batches)

        def join(column: str) -> list[Any]:
            return [x for b in batches for x in getattr(b, column)] if full(column) else []

        return CellBatch(
            t=np.concatenate([b.t for b in batches]),
            subscribers=join("subscribers"),
            cells=join("cells"),
            event_ids=join("event_ids"),
            degraded=np.concatenate([b.degraded for b in batches]),
            experience=np.concatenate([b.experience for b in batches]),
            loss=np.concatenate([b.loss for b in batches]),
            throughput=np.concatenate([b.throughput for b in batches]),
            tiers=join("tiers"),
            sample=np.concatenate([b.sample for b in batches]) if full("sample") else _NONE,
            candidates=candidates,
            departures=[d for b in batches for d in b.departures],
            clears=[c for b in batches for c in b.clears],
        )

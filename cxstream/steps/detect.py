"""Detect: each subscriber's experience against the subscriber's own baseline, a batch at a time
(array state, :class:`~cxstream.detectors.table.SubscriberTable`); the events come out grouped by
shard of cells, with an alert candidate where a degradation episode began. Due experience
samples go to the subscribers' histories and event ids to the processing audit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from cxstream import metrics
from cxstream.actions.tmf import probable_cause
from cxstream.batches import AlarmClear, CellBatch, ShardBatch, group_by_shard, shard_of
from cxstream.context import ContextStore, HistorySample
from cxstream.detectors.table import SubscriberTable
from cxstream.events import Alert, bounded_id
from cxstream.qos import QOS
from cxstream.settings import Settings
from cxstream.steps.common import Candidate, RedisTrouble, severity_of

__all__ = ["Detect"]


_LOSS = QOS.column("loss_pct")
_MAX_OPEN_ALARMS = 8  # per subscriber: the first raise of an episode and its fallback alerts
_THROUGHPUT = QOS.column("throughput_kbps")


class Erasures:
    """Customers erased while this process runs (tombstones on the customers topic): every
    subscriber table drops their state before its next batch. The most recent ``keep`` are kept;
    a table that has not looked for longer (or was restored from a snapshot) checks them all."""

    def __init__(self, keep: int = 10_000) -> None:
        self._ids: list[str] = []
        self._base = 0  # how many were dropped from the front of the list
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, subscriber_ids: Sequence[str]) -> None:
        """Erase these customers from every table at its next batch."""
        with self._lock:
            self._ids.extend(subscriber_ids)
            extra = len(self._ids) - self._keep
            if extra > 0:
                del self._ids[:extra]
                self._base += extra

    def apply(self, table: SubscriberTable) -> None:
        """Drop from ``table`` the customers erased since it last looked."""
        total = self._base + len(self._ids)
        seen = getattr(table, "erased_seen", 0)
        if seen == total:
            return
        with self._lock:
            since = seen - self._base
            new = self._ids[since:] if 0 <= since <= len(self._ids) else list(self._ids)
            total = self._base + len(self._ids)
        table.forget(new)
        table.erased_seen = total


class Detect:
    """The per-subscriber detectors and what follows them before demarcation."""

    def __init__(
        self,
        settings: Settings,
        context: ContextStore,
        *,
        clock: Callable[[], datetime],
        shard_keys: Sequence[str],
        trouble: RedisTrouble,
    ) -> None:
        self.settings = settings
        self.context = context
        self.clock = clock
        self.shard_keys = tuple(shard_keys)
        self.trouble = trouble
        self._processed = metrics.EVENTS.labels("processed")
        self.erasures = Erasures()

    def new_table(self) -> SubscriberTable:
        """Fresh array state for one shard of subscribers, from the detector settings."""
        d = self.settings.detector
        return SubscriberTable(
            grace_events=d.grace_events,
            fast_alpha=d.fast_alpha,
            slow_alpha=d.slow_alpha,
            poor=d.poor_experience,
            threshold=d.threshold,
            clear_s=d.clear_s,
            sample_interval_s=min(
                self.settings.history.recent_interval_s, self.settings.history.interval_s
            ),
            voice_codec=d.voice_codec,
        )

    def detect_shard(
        self, table: SubscriberTable, batches: Sequence[ShardBatch]
    ) -> list[tuple[str, CellBatch]]:
        """Score then learn a shard's events at once; return them grouped by shard of cells.

        The same results as :meth:`detect` event by event (tested), in a few array operations.
        """
        self.erasures.apply(table)
        batch = ShardBatch.concat(batches)
        n = len(batch)
        if n == 0:
            return []
        result = table.observe(
            batch.subscribers, batch.t, batch.service, batch.measurements, batch.plan, batch.cells
        )
        index = result.index
        # ValueTier is a StrEnum: the member is the string (``.value`` would cost an enum lookup)
        tiers: list[str | None] = [c.value_tier if c is not None else None for c in batch.customers]
        candidates = {
            j: self._candidate(batch, j, found, float(index[j]), float(result.episodes[j]))
            for j, found in result.detections.items()
        }
        self._processed.inc(n)
        # loss is 0 when not reported (its QoS default); throughput stays NaN
        loss = np.nan_to_num(batch.measurements[:, _LOSS])
        shards = self.settings.flow.shards
        # a subscriber that moved is news for the cell it left, in that cell's shard
        departures: dict[int, list[tuple[float, str, str, str]]] = {}
        for j, left in result.came_from.items():
            departures.setdefault(shard_of(left, shards), []).append(
                (float(batch.t[j]), left, batch.cells[j], batch.subscribers[j])
            )
        clears = self._track_alarms(table, batch, result.closed, candidates, shards)
        out = []
        for shard, pos in group_by_shard(batch.cells, shards):
            idx = pos.tolist()
            out.append(
                (
                    self.shard_keys[shard],
                    CellBatch(
                        t=batch.t[pos],
                        subscribers=[batch.subscribers[i] for i in idx],
                        cells=[batch.cells[i] for i in idx],
                        event_ids=[batch.event_ids[i] for i in idx],
                        degraded=result.in_episode[pos],
                        experience=index[pos],
                        loss=loss[pos],
                        throughput=batch.measurements[pos, _THROUGHPUT],
                        tiers=[tiers[i] for i in idx],
                        sample=result.sample[pos],
                        candidates={k: candidates[i] for k, i in enumerate(idx) if i in candidates},
                        departures=departures.pop(shard, []),
                        clears=clears.pop(shard, []),
                    ),
                )
            )
        for shard in sorted(departures.keys() | clears.keys()):  # no event of their own here
            batch_out = CellBatch.empty(departures.get(shard, []), clears.get(shard, []))
            out.append((self.shard_keys[shard], batch_out))
        return out

    @staticmethod
    def _track_alarms(
        table: SubscriberTable,
        batch: ShardBatch,
        closed: Sequence[int],
        candidates: dict[int, Candidate],
        shards: int,
    ) -> dict[int, list[AlarmClear]]:
        """Remember each new alert's alarm as open for its subscriber, and clear the open ones
        of a subscriber whose episode ended, in event order; the clears go to the shard of the
        alarm's cell (where its raise was held), by shard."""
        out: dict[int, list[AlarmClear]] = {}
        ended = set(closed)
        for j in sorted(ended | candidates.keys()):
            sid = batch.subscribers[j]
            if j in ended:
                for alert_id, cell, raised, cause in table.open_alarms.pop(sid, ()):
                    clear = AlarmClear(alert_id, sid, cell, raised, float(batch.t[j]), cause)
                    out.setdefault(shard_of(cell, shards), []).append(clear)
            candidate = candidates.get(j)
            if candidate is not None:
                alert = candidate.alert
                alarms = table.open_alarms.setdefault(sid, [])
                if len(alarms) < _MAX_OPEN_ALARMS:
                    cause = probable_cause(alert.why)
                    alarms.append((alert.alert_id, alert.cell_id, float(batch.t[j]), cause))
        return out

    def _candidate(
        self,
        batch: ShardBatch,
        j: int,
        found: tuple[float, float, dict[str, Any]],
        index: float,
        episodes: float,
    ) -> Candidate:
        score, exp, why = found
        customer = batch.customers[j]
        alert = Alert(
            alert_id=bounded_id(f"deg-{batch.subscribers[j]}-{batch.event_ids[j]}"),
            kind="degradation",
            severity=severity_of(score),
            subscriber_id=batch.subscribers[j],
            cell_id=batch.cells[j],
            score=round(score, 4),
            experience=round(exp, 1),
            event_time=batch.times[j].astimezone(UTC),
            detected_at=self.clock(),
            why=why,
            value_tier=customer.value_tier if customer is not None else None,
            context_stale=batch.stale[j],
            late=bool(batch.late[j]),
            experience_index=round(index, 1),
            degradations_7d=round(episodes, 3),
        )
        metrics.ALERTS.labels(alert.kind, alert.severity).inc()
        return Candidate(alert, customer)

    def record_cell_batches(
        self, items: Sequence[tuple[str, CellBatch]]
    ) -> list[tuple[str, CellBatch]]:
        """Append due experience samples to histories and audit event ids (one round trip for
        everything the detectors emitted in this activation), and merge the batches bound for
        the same shard of cells, in event-time order, so demarcation gets few, large batches
        (without the event ids and samples, which demarcation does not use)."""
        h = self.settings.history
        if h.enabled:
            samples: list[HistorySample] = []
            for _, b in items:
                due = np.flatnonzero(b.sample)
                if len(due):
                    at = due.tolist()
                    subs, cells = b.subscribers, b.cells
                    samples.extend(
                        zip(
                            [subs[i] for i in at],
                            b.t[due].tolist(),
                            b.experience[due].tolist(),
                            [cells[i] for i in at],
                            strict=True,
                        )
                    )
            if samples:
                self.context.append_history(
                    samples,
                    keep=h.keep,
                    recent_keep=h.recent_keep,
                    slot_s=h.interval_s,
                    recent_s=min(h.recent_interval_s, h.interval_s),
                )
        audit = self.settings.flow.audit_key
        if audit is not None and items:
            try:
                self.context.audit(
                    [
                        f"{sub}/{event}"
                        for _, b in items
                        for sub, event in zip(b.subscribers, b.event_ids, strict=True)
                    ],
                    audit,
                    self.settings.flow.audit_ttl_s,
                )
            except redis.RedisError as exc:
                self.trouble("processing audit", exc)
        merged: dict[str, list[CellBatch]] = {}
        for key, b in items:
            merged.setdefault(key, []).append(b.for_demarcation())
        # Polls of different partitions cover overlapping stretches of event time (a backlog
        # is read a poll per partition at a time): cells see them merged in event-time order.
        return [(key, CellBatch.concat(bs).sorted_by_time()) for key, bs in merged.items()]

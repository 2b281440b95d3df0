"""The steps of the CEM pipeline as plain Python, independent of the stream engine.

:mod:`cxstream.flows` wires these methods into a Bytewax dataflow; tests call them directly. Each
batch method takes and returns lists, so the engine can hand over whole batches (one Redis round
trip per batch, not per event).

ingest (parse, validate, enrich; columnar batches per shard of subscribers) -> detect (arrays per
shard) -> demarcate (per cell, shards of cells) -> churn risk -> decide (policy) -> actions
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal, Protocol, TypeVar

import msgspec
import numpy as np
import redis

from cxstream import metrics
from cxstream.actions.ledger import (
    ContactLedger,
    DeferredQueue,
    ExperimentLedger,
    MemoryLedger,
)
from cxstream.actions.policy import ContactPolicy, Decision, SignalIn
from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import ClaimStore
from cxstream.batches import CellBatch, RawBatch, ShardBatch, group_by_shard
from cxstream.churn_state import ChurnState, MemoryChurnState
from cxstream.context import ContextStore
from cxstream.detectors.cells import (
    CellMonitor,
    CellSettings,
    CellStats,
    IncidentUpdate,
    Released,
)
from cxstream.detectors.churn import (
    ChurnLearner,
    ChurnModel,
    IncompatibleCheckpoint,
    QualityMonitor,
    Schema,
)
from cxstream.detectors.table import SubscriberTable
from cxstream.errors import ConfigError
from cxstream.events import (
    Action,
    AffectedSubscriber,
    Alert,
    BadEvent,
    CellIncident,
    CustomerContext,
    Outcome,
    OutcomeKind,
    QosEvent,
    QosRecord,
    RecordKind,
    ValueTier,
    decode_qos,
    parse_action,
    parse_customer,
    parse_outcome,
    parse_qos,
    utcnow,
)
from cxstream.settings import Settings

__all__ = ["Candidate", "CellOutput", "Pipeline", "SourceMessage"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")


class SourceMessage(Protocol):
    """What a Kafka source hands over (Bytewax's ``KafkaSourceMessage`` has these)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def partition(self) -> int | None: ...
    @property
    def offset(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """An alert and the context the policy needs to act on it."""

    alert: Alert
    customer: CustomerContext | None


CellOutput = Candidate | CellIncident | CellStats
"""What demarcation emits: released individual alerts (maybe explained) and incident changes."""


def _source_error(msg: Any, kind: RecordKind) -> BadEvent | None:
    """A dead letter for an error item from the Kafka source (it has ``err`` and ``msg``)."""
    inner = getattr(msg, "msg", None)
    if inner is None or not hasattr(msg, "err"):
        return None
    return BadEvent.of(
        "kafka_error",
        str(msg.err),
        inner.value,
        topic=inner.topic,
        partition=inner.partition,
        offset=inner.offset,
        kind=kind,
    )


def _parse_batch(
    messages: Sequence[Any], parse: Callable[..., _R | BadEvent], kind: RecordKind
) -> list[_R | BadEvent]:
    """Validate a batch of side-input messages; consumer errors and bad records become dead
    letters of ``kind`` (counted here)."""
    out: list[_R | BadEvent] = []
    for msg in messages:
        error = _source_error(msg, kind)
        out.append(
            error
            if error is not None
            else parse(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset)
        )
    Pipeline.count_dead_letters(item for item in out if isinstance(item, BadEvent))
    return out


_SEVERITY: tuple[tuple[float, Literal["minor", "major", "critical"]], ...] = (
    (0.99, "critical"),
    (0.95, "major"),
    (0.0, "minor"),
)


def severity_of(score: float) -> Literal["minor", "major", "critical"]:
    """Map a detector score to an alert severity."""
    return next(name for bound, name in _SEVERITY if score >= bound)


class Pipeline:
    """All the per-process objects the steps need: settings, context store, policy.

    Parameters
    ----------
    settings
        Validated settings.
    context
        Customer-context store (batched Redis reads with a cache).
    claims
        Where cooldowns and idempotency keys are claimed.
    clock
        Returns the current UTC time (injected in tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        context: ContextStore,
        claims: ClaimStore,
        ledger: ContactLedger | None = None,
        deferred: DeferredQueue | None = None,
        experiment: ExperimentLedger | None = None,
        policy: PolicySource | None = None,
        churn: ChurnState | None = None,
        clock: Callable[[], datetime] = utcnow,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        # the state key of each shard of subscribers and of cells (the engine's routing may want
        # particular names; see cxstream.flows.routing)
        self.shard_keys = (
            tuple(shard_keys)
            if shard_keys is not None
            else tuple(str(i) for i in range(settings.flow.shards))
        )
        if len(self.shard_keys) != settings.flow.shards:
            msg = f"{len(self.shard_keys)} shard keys for flow.shards={settings.flow.shards}"
            raise ValueError(msg)
        self.context = context
        self.claims = claims
        self.deferred = deferred if deferred is not None else DeferredQueue()
        self.experiment = experiment if experiment is not None else ExperimentLedger()
        source = policy or PolicySource(
            settings.policy.file, default=DEFAULT_POLICY, check_s=settings.policy.reload_check_s
        )
        self.policy = ContactPolicy(
            source,
            ledger if ledger is not None else MemoryLedger(),
            key_prefix=settings.redis.key_prefix,
            experiment=self.experiment,
        )
        self.clock = clock
        self.churn = churn if churn is not None else MemoryChurnState()
        c = settings.churn
        self.churn_schema = Schema(tuple(c.numeric), tuple(c.categorical))
        self._churn_model = self._fresh_churn_model()
        self._churn_rev = 0
        self._churn_checked = -math.inf
        self._last_redis_log = 0.0
        self._processed = metrics.EVENTS.labels("processed")
        self._max_age = timedelta(seconds=settings.flow.max_event_age_s)
        self._max_ahead = timedelta(seconds=settings.flow.max_event_ahead_s)

    # -- parse ---------------------------------------------------------------------------------
    def ingest(self, messages: Sequence[Any]) -> list[BadEvent | tuple[str, ShardBatch]]:
        """Parse, validate and enrich a batch of source items; valid events come out as one
        columnar batch per shard of subscribers, invalid ones as dead letters."""
        bad, batch = self._parse(messages)
        out: list[BadEvent | tuple[str, ShardBatch]] = list(bad)
        if batch is not None:
            for shard, positions in group_by_shard(batch.subscribers, self.settings.flow.shards):
                out.append((self.shard_keys[shard], batch.take(positions)))
        return out

    def _parse(self, messages: Sequence[Any]) -> tuple[list[BadEvent], ShardBatch | None]:
        """Dead letters (counted), and the valid events as one enriched columnar batch.

        Items are whole polls (:class:`~cxstream.flows.source.RawBatch`), consumer errors, or
        single messages with ``value``/``topic``/``partition``/``offset``. Each value is
        decoded and validated in one step (:func:`~cxstream.events.decode_qos`, the same rules
        as :class:`QosEvent`); one that fails goes through :func:`parse_qos` for its exact
        reason.
        """
        now = self.clock()
        now_ts = now.timestamp()
        oldest = now_ts - self._max_age.total_seconds()
        newest = now_ts + self._max_ahead.total_seconds()
        decode = decode_qos
        bad: list[BadEvent] = []
        chunks: list[tuple[str | None, int | None, list[Any], list[Any]]] = []
        for item in messages:
            if isinstance(item, RawBatch):
                chunks.append((item.topic, item.partition, item.values, item.offsets))
                continue
            error = _source_error(item, "qos")
            if error is not None:
                bad.append(error)
            else:
                chunks.append((item.topic, item.partition, [item.value], [item.offset]))
        loose: list[tuple[list[QosRecord | QosEvent], list[float]]] = []
        for topic, partition, values, offsets in chunks:
            records: list[QosRecord | QosEvent] = []
            times: list[float] = []
            for value, offset in zip(values, offsets, strict=True):
                if value:
                    try:
                        record = decode(value)
                    except msgspec.DecodeError:
                        pass
                    else:
                        ts = record.event_time.timestamp()
                        if oldest <= ts <= newest:
                            records.append(record)
                            times.append(ts)
                            continue
                slow = parse_qos(
                    value,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    now=now,
                    max_age=self._max_age,
                    max_ahead=self._max_ahead,
                )
                if isinstance(slow, BadEvent):
                    bad.append(slow)
                else:  # the two validators disagree: trust the model, keep the event
                    records.append(slow)
                    times.append(slow.event_time.timestamp())
            if not records:
                continue
            loose.append((records, times))
        self.count_dead_letters(bad)
        if not loose:
            return bad, None
        if len(loose) == 1:
            records, times = loose[0]
        else:
            records = [r for rs, _ in loose for r in rs]
            times = [t for _, ts in loose for t in ts]
        return bad, self._enrich(records, times)

    def new_poll_state(self) -> SubscriberTable:
        """The state kept beside each Kafka partition: its subscribers' detectors."""
        return self.new_table()

    def process_poll(
        self, items: list[Any], table: SubscriberTable
    ) -> list[BadEvent | tuple[str, CellBatch]]:
        """One poll of one partition: parse, validate, enrich, detect; dead letters and batches
        for the shards of cells come out (the flow's first steps, run in the source).

        The partition's table holds all its subscribers: the poll's events go to it as one
        batch, without being grouped by shard of subscribers first."""
        bad, batch = self._parse(items)
        out: list[BadEvent | tuple[str, CellBatch]] = list(bad)
        if batch is not None:
            out.extend(self.detect_shard(table, [batch]))
        return out

    def _enrich(self, records: list[QosRecord | QosEvent], times: list[float]) -> ShardBatch:
        """Columns of the records, with each customer's context (one MGET for the uncached)."""
        batch = ShardBatch.from_records(records, times)
        found = self.context.get_many(batch.subscribers)
        lookups = [found[sid] for sid in batch.subscribers]
        batch.set_context([lk.customer for lk in lookups], [lk.stale for lk in lookups])
        return batch

    @staticmethod
    def parse_customer_batch(messages: Sequence[Any]) -> list[CustomerContext | BadEvent]:
        """Validate a batch of customer-update messages."""
        return _parse_batch(messages, parse_customer, "customer")

    @staticmethod
    def parse_outcome_batch(messages: Sequence[Any]) -> list[Outcome | BadEvent]:
        """Validate a batch of outcome messages."""
        return _parse_batch(messages, parse_outcome, "outcome")

    @staticmethod
    def parse_action_batch(messages: Sequence[Any]) -> list[Action | BadEvent]:
        """Validate a batch of records read back from the actions topic (webhook deliveries)."""
        return _parse_batch(messages, parse_action, "action")

    @staticmethod
    def count_dead_letters(bad: Iterable[BadEvent]) -> None:
        """Count dead letters by kind and reason (QoS ones also as events that ended)."""
        for item in bad:
            metrics.DEAD_LETTERS.labels(item.kind, item.reason).inc()
            if item.kind == "qos":
                metrics.EVENTS.labels("dead_letter").inc()

    def new_table(self) -> SubscriberTable:
        """Fresh array state for one shard of subscribers, from the detector settings."""
        d = self.settings.detector
        return SubscriberTable(
            grace_events=d.grace_events,
            fast_alpha=d.fast_alpha,
            slow_alpha=d.slow_alpha,
            poor=d.poor_experience,
            threshold=d.threshold,
            sample_interval_s=self.settings.history.interval_s,
        )

    def detect_shard(
        self, table: SubscriberTable, batches: Sequence[ShardBatch]
    ) -> list[tuple[str, CellBatch]]:
        """Score then learn a shard's events at once; return them grouped by shard of cells.

        The same results as :meth:`detect` event by event (tested), in a few array operations.
        """
        batch = ShardBatch.concat(batches)
        n = len(batch)
        if n == 0:
            return []
        result = table.observe(
            batch.subscribers, batch.t, batch.service, batch.measurements, batch.plan
        )
        index = result.index
        # ValueTier is a StrEnum: the member is the string (``.value`` would cost an enum lookup)
        tiers: list[str | None] = [c.value_tier if c is not None else None for c in batch.customers]
        candidates = {
            j: self._candidate(batch, j, found, float(index[j]), float(result.episodes[j]))
            for j, found in result.detections.items()
        }
        self._processed.inc(n)
        out = []
        for shard, pos in group_by_shard(batch.cells, self.settings.flow.shards):
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
                        tiers=[tiers[i] for i in idx],
                        sample=result.sample[pos],
                        candidates={k: candidates[i] for k, i in enumerate(idx) if i in candidates},
                    ),
                )
            )
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
            alert_id=f"deg-{batch.subscribers[j]}-{batch.event_ids[j]}",
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
            samples: list[tuple[str, float, float]] = []
            for _, b in items:
                due = np.flatnonzero(b.sample)
                if len(due):
                    subs = b.subscribers
                    samples.extend(
                        zip(
                            [subs[i] for i in due.tolist()],
                            b.t[due].tolist(),
                            b.experience[due].tolist(),
                            strict=True,
                        )
                    )
            if samples:
                self.context.append_history(samples, keep=h.keep)
        audit = self.settings.flow.audit_key
        if audit is not None and items:
            try:
                self.context.audit(
                    [e for _, b in items for e in b.event_ids],
                    audit,
                    self.settings.flow.audit_ttl_s,
                )
            except redis.RedisError as exc:
                self._redis_trouble("processing audit", exc)
        merged: dict[str, list[CellBatch]] = {}
        for key, b in items:
            merged.setdefault(key, []).append(b.for_demarcation())
        # Polls of different partitions cover overlapping stretches of event time (a backlog
        # is read a poll per partition at a time): cells see them merged in event-time order.
        return [(key, CellBatch.concat(bs).sorted_by_time()) for key, bs in merged.items()]

    # -- demarcate -----------------------------------------------------------------------------
    def new_cell_monitor(self, cell_id: str) -> CellMonitor[Candidate]:
        """Fresh demarcation state for one cell."""
        return CellMonitor(cell_id, CellSettings(**self.settings.cells.model_dump()))

    def demarcate_shard(
        self, monitors: dict[str, CellMonitor[Candidate]], batches: Sequence[CellBatch]
    ) -> list[CellOutput]:
        """Feed a shard's events to their cells, in order; incident changes, released alerts
        and periodic cell stats come out."""
        out: list[CellOutput] = []
        held = 0
        metrics.CELL_EVENTS.inc(sum(map(len, batches)))
        for b in batches:
            candidates = b.candidates
            # lists: indexing one costs less than a numpy scalar, and the monitors keep floats
            t, subs, tiers = b.t.tolist(), b.subscribers, b.tiers
            degraded, exp = b.degraded.tolist(), b.experience.tolist()
            for i, cell_id in enumerate(b.cells):
                monitor = monitors.get(cell_id)
                if monitor is None:
                    monitor = monitors[cell_id] = self.new_cell_monitor(cell_id)
                candidate = candidates.get(i) if candidates else None
                if candidate is None and monitor.observe_quiet(
                    t[i], subs[i], degraded[i], exp[i], tiers[i]
                ):
                    continue
                if candidate is not None:
                    held += 1
                updates, released = monitor.observe(
                    t[i],
                    subs[i],
                    degraded=degraded[i],
                    experience=exp[i],
                    tier=tiers[i],
                    alert=candidate,
                )
                if updates:
                    out.extend(self._incident(u) for u in updates)
                if released:
                    held -= len(released)
                    out.extend(self._explain(r) for r in released)
                stats = monitor.take_stats()
                if stats is not None:
                    out.append(stats)
        if held:
            metrics.HELD_ALERTS.inc(held)
        return out

    def release_held(self, monitor: CellMonitor[Candidate]) -> list[CellOutput]:
        """Release every held alert of a cell (its traffic stopped, or end of input)."""
        released = monitor.flush()
        if released:
            metrics.HELD_ALERTS.dec(len(released))
        return [self._explain(r) for r in released]

    @staticmethod
    def _explain(released: Released[Candidate]) -> Candidate:
        candidate = released.item
        if released.explained_by is None:
            return candidate
        alert = candidate.alert.model_copy(update={"explained_by": released.explained_by})
        return Candidate(alert, candidate.customer)

    def _incident(self, update: IncidentUpdate) -> CellIncident:
        metrics.CELL_INCIDENTS.labels(update.state).inc()
        severity: Literal["minor", "major", "critical"] = (
            "critical" if update.share >= 0.6 else "major" if update.share >= 0.4 else "minor"
        )
        if update.state == "open":
            metrics.ALERTS.labels("cell_incident", severity).inc()
        return CellIncident(
            incident_id=update.incident_id,
            cell_id=update.cell_id,
            state=update.state,
            severity=severity,
            opened_at=datetime.fromtimestamp(update.opened_at, UTC),
            updated_at=datetime.fromtimestamp(update.at, UTC),
            affected=[
                AffectedSubscriber(subscriber_id=sid, value_tier=ValueTier(tier) if tier else None)
                for sid, tier in sorted(update.affected.items())
            ],
            new_affected=list(update.new_affected),
            active_subscribers=update.active,
            share=update.share,
            experience=update.experience,
            why={
                "degraded_share": update.share,
                "affected": len(update.affected),
                "active": update.active,
                "cell_experience": update.experience,
                "cell_kpi_anomaly_score": update.kpi_score,
            },
        )

    # -- decide --------------------------------------------------------------------------------
    def decide_batch(self, items: Sequence[CellOutput]) -> list[Decision]:
        """Turn released alerts and incident changes into contact decisions.

        A degradation is a signal for its subscriber; an opened or updated cell incident is an
        area-notice signal for each subscriber newly caught in it (their context fetched in one
        batch). Deferred actions go to the deferred queue; every decision is counted.
        """
        now = self.clock()
        signals: list[SignalIn] = []
        incidents = [i for i in items if isinstance(i, CellIncident) and i.new_affected]
        found = (
            self.context.get_many(s for i in incidents for s in i.new_affected) if incidents else {}
        )
        for item in items:
            if isinstance(item, Candidate):
                a = item.alert
                signals.append(
                    SignalIn(
                        signal="degradation",
                        subscriber_id=a.subscriber_id or "",
                        customer=item.customer,
                        score=a.score,
                        source_id=a.alert_id,
                        event_time=a.event_time,
                        stale=a.context_stale,
                        explained_by=a.explained_by,
                        details={
                            "experience": a.experience,
                            "experience_index": a.experience_index,
                            "degradations_7d": a.degradations_7d,
                            "why": a.why,
                            "cell_id": a.cell_id,
                        },
                    )
                )
            elif isinstance(item, CellIncident) and item.new_affected:
                for sid in item.new_affected:
                    lookup = found[sid]
                    signals.append(
                        SignalIn(
                            signal="cell_incident",
                            subscriber_id=sid,
                            customer=lookup.customer,
                            score=1.0,
                            source_id=item.incident_id,
                            # when this update caught them (the incident may have opened long
                            # before they were affected; opened_at is in the incident itself)
                            event_time=item.updated_at,
                            stale=lookup.stale,
                            details={
                                "cell_id": item.cell_id,
                                "incident_state": item.state,
                                "share": item.share,
                            },
                        )
                    )
        if not signals:
            return []
        signals = self.score_churn(signals, now)
        try:
            decisions = self.policy.decide_many(signals, now)
        except redis.RedisError as exc:
            # Caps, cooldowns and consent state cannot be checked: no outreach at all.
            self._redis_trouble("contact state", exc)
            decisions = [Decision(s, "suppressed:state_unavailable", s.signal) for s in signals]
        out = []
        for decision in decisions:
            action = decision.action
            if action is not None and decision.result == "deferred" and action.send_at is not None:
                try:
                    self.deferred.push(action.send_at.timestamp(), action)
                except redis.RedisError as exc:
                    self._redis_trouble("deferred queue", exc)
                    decision = Decision(
                        decision.signal,
                        "suppressed:state_unavailable",
                        decision.kind,
                        decision.rule,
                    )
            elif action is not None:
                delay = (now - action.event_time).total_seconds()
                metrics.EVENT_TO_ACTION.observe(max(delay, 0.0))
            metrics.DECISIONS.labels(decision.kind, decision.result).inc()
            out.append(decision)
        return out

    def _redis_trouble(self, what: str, exc: Exception) -> None:
        """Log a Redis failure at most every 10 seconds (per-message events go to metrics)."""
        now = time.monotonic()
        if now - self._last_redis_log > 10.0:
            self._last_redis_log = now
            log.warning(
                "Redis unavailable for the %s (outreach suppressed meanwhile): %s", what, exc
            )

    def release_deferred(self) -> list[Action]:
        """Actions whose quiet hours are over, removed from the deferred queue."""
        try:
            released = self.deferred.pop_due(self.clock().timestamp())
        except redis.RedisError as exc:  # they wait in Redis until it is back
            self._redis_trouble("deferred queue", exc)
            return []
        for action in released:
            metrics.DECISIONS.labels(action.kind, "released").inc()
        return released

    # -- churn risk ----------------------------------------------------------------------------
    def _fresh_churn_model(self) -> ChurnModel:
        c = self.settings.churn
        return ChurnModel(
            self.churn_schema, prior_variance=c.prior_variance, max_categories=c.max_categories
        )

    def _load_checkpoint(self, data: bytes) -> tuple[ChurnModel, dict[str, float]]:
        """Restore a checkpoint; refuse one of another format or another feature schema."""
        model, metrics_ = ChurnModel.from_bytes(data)
        if model.schema != self.churn_schema:
            msg = (
                f"the stored churn model reads columns {list(model.schema.columns)}, the "
                f"configuration says {list(self.churn_schema.columns)}: delete "
                f"{self.settings.redis.key_prefix}:churn:model and :revision to start a fresh model"
            )
            raise IncompatibleCheckpoint(msg)
        return model, metrics_

    def check_churn_checkpoint(self) -> None:
        """At start-up: a stored checkpoint this version cannot use is a clear error, not a crash
        later in the flow."""
        if not self.settings.churn.enabled:
            return
        data = self.churn.load_checkpoint()
        if data is None:
            return
        try:
            self._load_checkpoint(data)
        except IncompatibleCheckpoint as exc:
            msg = f"churn model checkpoint refused: {exc}"
            raise ConfigError(msg) from exc

    def new_churn_learner(self) -> ChurnLearner:
        """The learner's state at start: the last checkpoint, else a fresh model."""
        window = self.settings.churn.quality_window
        try:
            data = self.churn.load_checkpoint()
        except redis.RedisError as exc:
            self._redis_trouble("churn checkpoint (starting from a fresh model)", exc)
            data = None
        if data is not None:
            model, stored = self._load_checkpoint(data)
            log.info("churn model restored at revision %d", int(stored.get("revision", 0)))
            return ChurnLearner(model, QualityMonitor(window), revision=int(stored["revision"]))
        return ChurnLearner(self._fresh_churn_model(), QualityMonitor(window))

    def _scorer(self) -> ChurnModel:
        """The model scorers use: reloaded when the learner has stored a newer revision."""
        now = time.monotonic()
        if now - self._churn_checked < self.settings.churn.refresh_s:
            return self._churn_model
        self._churn_checked = now
        try:
            revision = self.churn.revision()
            if revision is not None and revision != self._churn_rev:
                data = self.churn.load_checkpoint()
                if data is not None:
                    self._churn_model, _ = self._load_checkpoint(data)
                    self._churn_rev = revision
                    metrics.CHURN_REVISION.labels("scorer").set(revision)
        except redis.RedisError as exc:
            self._redis_trouble("churn model refresh", exc)
        except IncompatibleCheckpoint as exc:
            log.error("newer churn model not loaded, keeping revision %d: %s", self._churn_rev, exc)
        return self._churn_model

    def churn_row(self, sig: SignalIn) -> dict[str, Any]:
        """The model's input for one signal: context fields, experience features, signal kind."""
        row: dict[str, Any] = {}
        customer = sig.customer
        for col in self.churn_schema.columns:
            if col == "signal":
                value: Any = sig.signal
            elif col in sig.details:
                value = sig.details[col]
            else:
                value = getattr(customer, col, None) if customer is not None else None
            row[col] = value.value if isinstance(value, Enum) else value
        return row

    def score_churn(self, signals: list[SignalIn], now: datetime) -> list[SignalIn]:
        """Attach churn risk and its explanation to each actionable signal (one batch).

        A degradation whose risk reaches ``churn.escalate_risk`` becomes a ``churn_risk`` signal.
        The features used are stored as the customer's snapshot, for the outcome to come.
        """
        c = self.settings.churn
        if not c.enabled:
            return signals
        todo = [
            i
            for i, s in enumerate(signals)
            if s.customer is not None and not s.stale and s.explained_by is None
        ]
        if not todo:
            return signals
        model = self._scorer()
        rows = [self.churn_row(signals[i]) for i in todo]
        probs, why = model.score_many(rows, c.explain_top)
        out = list(signals)
        snapshots: list[tuple[str, dict[str, Any]]] = []
        scored_at = now.isoformat()
        for i, row, p, contributions in zip(todo, rows, probs.tolist(), why, strict=True):
            sig = signals[i]
            escalate = sig.signal == "degradation" and p >= c.escalate_risk
            metrics.CHURN_SCORES.labels("true" if escalate else "false").inc()
            churn = {
                "risk": round(p, 4),
                "model_revision": self._churn_rev,
                "top_features": [x.as_dict() for x in contributions],
            }
            out[i] = dataclasses.replace(
                sig,
                signal="churn_risk" if escalate else sig.signal,
                risk=p,
                details={**sig.details, "churn": churn},
            )
            snapshots.append(
                (
                    sig.subscriber_id,
                    {
                        "features": row,
                        "risk": round(p, 6),
                        "revision": self._churn_rev,
                        "scored_at": scored_at,
                        "source_id": sig.source_id,
                    },
                )
            )
        try:
            self.churn.save_snapshots(snapshots)
        except redis.RedisError as exc:  # their outcomes will count as no_snapshot
            self._redis_trouble("churn snapshots", exc)
        return out

    _LABELS: dict[OutcomeKind, bool] = {OutcomeKind.CHURNED: True, OutcomeKind.RETAINED: False}

    def learn_outcome(
        self, learner: ChurnLearner | None, outcome: Outcome
    ) -> tuple[ChurnLearner, dict[str, Any]]:
        """Learn one outcome from the features its customer was scored with (delayed label).

        Returns the learner and a record for the decisions topic: ``learned``, ``no_snapshot``
        (never scored, or the snapshot expired), ``not_a_label``, or ``state_unavailable``.
        """
        if learner is None:
            learner = self.new_churn_learner()
        record: dict[str, Any] = {
            "subscriber_id": outcome.subscriber_id,
            "outcome": outcome.kind.value,
            "result": "not_a_label",
        }
        label = self._LABELS.get(outcome.kind)
        if label is None or not self.settings.churn.enabled:
            metrics.CHURN_OUTCOMES.labels("not_a_label").inc()
            return learner, {"churn_outcome": record}
        try:
            (snapshot,) = self.churn.get_snapshots([outcome.subscriber_id])
        except redis.RedisError as exc:
            self._redis_trouble("churn snapshots", exc)
            record["result"] = "state_unavailable"
            return learner, {"churn_outcome": record}
        if snapshot is None:
            metrics.CHURN_OUTCOMES.labels("no_snapshot").inc()
            record["result"] = "no_snapshot"
            return learner, {"churn_outcome": record}
        p, drifted = learner.learn_one(snapshot["features"], label)
        metrics.CHURN_OUTCOMES.labels("learned").inc()
        if drifted:
            metrics.CHURN_DRIFTS.inc()
            log.warning(
                "churn model quality changed (ADWIN on the loss): %s", learner.quality.report()
            )
        quality = learner.quality.report()
        metrics.CHURN_ROC_AUC.set(quality["roc_auc"])
        metrics.CHURN_LOG_LOSS.set(quality["log_loss"])
        try:
            data = learner.checkpoint()
            self.churn.save_checkpoint(learner.revision, data)
            self.churn.drop_snapshots([outcome.subscriber_id])
        except redis.RedisError as exc:  # the learner keeps it; the next checkpoint carries it
            self._redis_trouble("churn checkpoint", exc)
        metrics.CHURN_REVISION.labels("learner").set(learner.revision)
        record.update(
            result="learned",
            probability_before=round(p, 4),
            risk_at_scoring=snapshot.get("risk"),
            scored_at=snapshot.get("scored_at"),
            revision=learner.revision,
            drift=drifted,
        )
        return learner, {"churn_outcome": record}

    # -- outcomes ------------------------------------------------------------------------------
    def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[dict[str, str | None]]:
        """Join outcomes to the customer's experiment group and refresh the uplift gauges."""
        joined: list[dict[str, str | None]] = []
        for outcome in outcomes:
            record: dict[str, str | None] = {
                "subscriber_id": outcome.subscriber_id,
                "outcome": outcome.kind.value,
                "group": None,
            }
            try:
                record["group"] = self.experiment.outcome(outcome.subscriber_id, outcome.kind.value)
            except redis.RedisError as exc:  # reported unjoined on cx.decisions, not lost
                self._redis_trouble("experiment ledger", exc)
                record["error"] = "redis unavailable: not joined"
            joined.append(record)
        if outcomes:
            try:
                self.publish_experiment()
            except redis.RedisError as exc:
                self._redis_trouble("experiment report", exc)
        return joined

    def publish_experiment(self) -> None:
        """Export subjects, outcome rates per group, and uplift (control minus treated)."""
        report = self.experiment.report()
        for group in ("treated", "control"):
            values = report.get(group, {})
            metrics.EXPERIMENT_SUBJECTS.labels(group).set(values.get("subjects", 0.0))
            for kind, rate in values.items():
                if kind != "subjects":
                    metrics.EXPERIMENT_RATE.labels(group, kind).set(rate)
        for kind, uplift in report.get("uplift", {}).items():
            metrics.EXPERIMENT_UPLIFT.labels(kind).set(uplift)

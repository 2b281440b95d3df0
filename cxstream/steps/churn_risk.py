"""Churn risk: every customer a signal concerns is scored (one batch) by the churn model
(:class:`~cxstream.detectors.churn.ChurnModel`), with the features that pushed the risk up or
down; a degradation of a customer at risk becomes a ``churn_risk`` signal. Every customer with a
profile is also scored on a schedule (:class:`BaseScoring`), so the model learns from the whole
base, not only from customers who had trouble. The features used are kept as the customer's
snapshot; when the outcome arrives, days or weeks later, the learner learns from it and writes a
versioned checkpoint that every scorer reloads. The trees are refit in a background thread."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from enum import Enum
from typing import Any, Final

import redis

from cxstream import metrics
from cxstream.actions.policy import SignalIn
from cxstream.churn_state import ChurnState, learned_outcome
from cxstream.detectors.churn import (
    ChurnLearner,
    ChurnModel,
    QualityMonitor,
    Schema,
    TreeSettings,
)
from cxstream.errors import ConfigError, IncompatibleCheckpoint, UntrustedCheckpoint
from cxstream.events import CustomerContext, Outcome, OutcomeKind
from cxstream.settings import ChurnSettings, Settings
from cxstream.steps.common import RedisTrouble

__all__ = ["SCHEDULED", "BaseScoring", "ChurnRisk", "churn_model"]

SCHEDULED: Final = "scheduled"
"""The ``signal`` and ``source_id`` of a snapshot taken by the scheduled pass."""


def churn_model(schema: Schema, churn: ChurnSettings, *, trees: bool = True) -> ChurnModel:
    """The model the ``churn`` section describes (its prior, category cap and trees; no trees
    when ``trees`` is false): the flow's, and what ``cxstream eval churn`` measures."""
    return ChurnModel(
        schema,
        prior_variance=churn.prior_variance,
        max_categories=churn.max_categories,
        trees=TreeSettings(window=churn.tree_window) if trees and churn.trees else None,
    )


log = logging.getLogger(__name__)


class ChurnRisk:
    """The scorer (every worker) and the learner's steps (one worker owns the learner).

    Parameters
    ----------
    settings
        Validated settings (``churn``, ``redis.key_prefix``).
    state
        Where snapshots, the checkpoint and its revision are kept.
    trouble
        Logs Redis failures now and then.
    """

    def __init__(self, settings: Settings, state: ChurnState, *, trouble: RedisTrouble) -> None:
        self.settings = settings
        self.state = state
        self.trouble = trouble
        c = settings.churn
        self.schema = Schema(tuple(c.numeric), tuple(c.categorical))
        self._model = self.fresh_model()
        self._revision = 0
        self._checked = -math.inf
        self._refused: int | None = None
        key = c.checkpoint_key
        self.key = key.get_secret_value().encode() if key is not None else None
        self._refits: ThreadPoolExecutor | None = None  # the learner's background refits

    def fresh_model(self) -> ChurnModel:
        return churn_model(self.schema, self.settings.churn)

    def load_checkpoint(self, data: bytes) -> tuple[ChurnModel, dict[str, float]]:
        """Restore a checkpoint; refuse one not authenticated by the key, of another format or
        of another feature schema."""
        model, stored = ChurnModel.from_bytes(data, key=self.key)
        if model.schema != self.schema:
            msg = (
                f"the stored churn model reads columns {list(model.schema.columns)}, the "
                f"configuration says {list(self.schema.columns)}: delete "
                f"{self.settings.redis.key_prefix}:churn:model and :revision to start a fresh model"
            )
            raise IncompatibleCheckpoint(msg)
        return model, stored

    def check_checkpoint(self) -> None:
        """At start-up: a stored checkpoint of another format or schema is a clear error, not a
        crash later in the flow; one the key does not authenticate is refused with an error in
        the log, and the flow starts with a fresh model."""
        if not self.settings.churn.enabled:
            return
        if self.key is None:
            log.warning(
                "churn model checkpoints are not authenticated: set churn.checkpoint_key "
                "(CXSTREAM_CHURN__CHECKPOINT_KEY) so that one written by anyone else is refused"
            )
        data = self.state.load_checkpoint()
        if data is None:
            return
        try:
            self.load_checkpoint(data)
        except UntrustedCheckpoint as exc:
            log.error("churn model checkpoint refused, starting from a fresh model: %s", exc)
        except IncompatibleCheckpoint as exc:
            msg = f"churn model checkpoint refused: {exc}"
            raise ConfigError(msg) from exc

    def new_learner(self) -> ChurnLearner:
        """The learner's state at start: the last checkpoint, else a fresh model."""
        window = self.settings.churn.quality_window
        try:
            data = self.state.load_checkpoint()
        except redis.RedisError as exc:
            self.trouble("churn checkpoint (starting from a fresh model)", exc)
            data = None
        if data is not None:
            try:
                model, stored = self.load_checkpoint(data)
            except IncompatibleCheckpoint as exc:
                log.error("churn model checkpoint refused, starting from a fresh model: %s", exc)
            else:
                revision = int(stored.get("revision", 0))
                log.info("churn model restored at revision %d", revision)
                return ChurnLearner(model, QualityMonitor(window), revision, self.key)
        return ChurnLearner(self.fresh_model(), QualityMonitor(window), key=self.key)

    def scorer(self) -> ChurnModel:
        """The model scorers use: reloaded when the learner has stored a newer revision."""
        now = time.monotonic()
        if now - self._checked < self.settings.churn.refresh_s:
            return self._model
        self._checked = now
        revision = None
        try:
            revision = self.state.revision()
            if revision is not None and revision not in (self._revision, self._refused):
                data = self.state.load_checkpoint()
                if data is not None:
                    self._model, _ = self.load_checkpoint(data)
                    self._revision = revision
                    metrics.CHURN_REVISION.labels("scorer").set(revision)
        except redis.RedisError as exc:
            self.trouble("churn model refresh", exc)
        except IncompatibleCheckpoint as exc:
            self._refused = revision  # said once per revision
            log.error("newer churn model not loaded, keeping revision %d: %s", self._revision, exc)
        return self._model

    def churn_row(self, sig: SignalIn) -> dict[str, Any]:
        """The model's input for one signal: context fields, experience features, signal kind."""
        return self._row(sig.customer, sig.signal, sig.details)

    def profile_row(self, customer: CustomerContext) -> dict[str, Any]:
        """The model's input for a customer scored by the scheduled pass (no signal, no recent
        experience: those columns are missing)."""
        return self._row(customer, SCHEDULED, {})

    def _row(
        self, customer: CustomerContext | None, signal: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for col in self.schema.columns:
            if col == "signal":
                value: Any = signal
            elif col in details:
                value = details[col]
            else:
                value = getattr(customer, col, None) if customer is not None else None
            row[col] = value.value if isinstance(value, Enum) else value
        return row

    def score_profiles(self, profiles: Sequence[tuple[str, CustomerContext]], now: datetime) -> int:
        """Score stored profiles (the scheduled pass) and keep their snapshots; returns how many.

        A snapshot taken at a signal is kept: it holds the experience that may explain the
        outcome to come. The pass writes one where there is none or where the last was its own,
        but not for a customer whose last learned outcome says they left: nothing of theirs is
        at risk any more (a signal about them, were they still seen, scores them again).
        """
        if not profiles or not self.settings.churn.enabled:
            return 0
        ids = [sid for sid, _ in profiles]
        existing = self.state.get_snapshots(ids)
        unscored = [sid for sid, snap in zip(ids, existing, strict=True) if snap is None]
        gone = {
            sid
            for sid, learned in zip(unscored, self.state.get_learned(unscored), strict=True)
            if _left(learned)
        }
        todo = [
            (sid, customer)
            for (sid, customer), snap in zip(profiles, existing, strict=True)
            if (snap is None and sid not in gone)
            or (snap is not None and snap.get("source_id") == SCHEDULED)
        ]
        before = dict(zip(ids, existing, strict=True))
        if not todo:
            return 0
        model = self.scorer()
        rows = [self.profile_row(customer) for _, customer in todo]
        probs, why = model.score_many(rows, self.settings.churn.explain_top)
        scored_at = now.isoformat()
        self.state.save_snapshots(
            [
                (
                    sid,
                    {
                        "features": row,
                        "risk": round(p, 6),
                        "revision": self._revision,
                        "scored_at": scored_at,
                        "source_id": SCHEDULED,
                        "top_features": [c.as_dict() for c in reasons],
                        "trend": _trend(before.get(sid), scored_at, p),
                    },
                )
                for (sid, _), row, p, reasons in zip(todo, rows, probs.tolist(), why, strict=True)
            ]
        )
        metrics.CHURN_BASE_SCORED.inc(len(todo))
        return len(todo)

    def score(self, signals: list[SignalIn], now: datetime) -> list[SignalIn]:
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
        model = self.scorer()
        rows = [self.churn_row(signals[i]) for i in todo]
        probs, why = model.score_many(rows, c.explain_top)
        out = list(signals)
        snapshots: list[tuple[str, dict[str, Any]]] = []
        scored_at = now.isoformat()
        try:  # the scores so far, for each customer's trend
            previous = self.state.get_snapshots([signals[i].subscriber_id for i in todo])
        except redis.RedisError as exc:
            self.trouble("churn snapshots", exc)
            previous = [None] * len(todo)
        for i, row, p, contributions, before in zip(
            todo, rows, probs.tolist(), why, previous, strict=True
        ):
            sig = signals[i]
            escalate = sig.signal == "degradation" and p >= c.escalate_risk
            metrics.CHURN_SCORES.labels("true" if escalate else "false").inc()
            churn = {
                "risk": round(p, 4),
                "model_revision": self._revision,
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
                        "revision": self._revision,
                        "scored_at": scored_at,
                        "source_id": sig.source_id,
                        "top_features": churn["top_features"],
                        "trend": _trend(before, scored_at, p),
                    },
                )
            )
        try:
            self.state.save_snapshots(snapshots)
        except redis.RedisError as exc:  # their outcomes will count as no_snapshot
            self.trouble("churn snapshots", exc)
        return out

    _LABELS: dict[OutcomeKind, bool] = {OutcomeKind.CHURNED: True, OutcomeKind.RETAINED: False}

    def learn_outcomes(
        self, learner: ChurnLearner | None, outcomes: Sequence[Outcome]
    ) -> tuple[ChurnLearner, list[dict[str, Any]]]:
        """Learn a batch of outcomes, in order, from the features each customer was scored with
        (delayed labels); one read of the snapshots, one checkpoint for the whole batch.

        Returns the learner and a record per outcome for the decisions topic: ``learned``,
        ``duplicate`` (this outcome is already in the model), ``no_snapshot`` (never scored, or
        the snapshot expired), ``not_a_label``, or ``state_unavailable``. An outcome replayed
        after a restart that resumed from a learner that had not learned it yet is learned
        again, from the same snapshot (see :mod:`cxstream.churn_state`). A checkpoint is about a
        megabyte: written per outcome it would cap the learner at some hundred outcomes a second
        and hold up the worker it shares with the stream, so a backlog costs one write a batch.
        """
        if learner is None:
            learner = self.new_learner()
        records: list[dict[str, Any]] = []
        labelled: list[tuple[dict[str, Any], bool, str]] = []
        for outcome in outcomes:
            record: dict[str, Any] = {
                "subscriber_id": outcome.subscriber_id,
                "outcome": outcome.kind.value,
                "result": "not_a_label",
            }
            records.append(record)
            label = self._LABELS.get(outcome.kind)
            if label is None or not self.settings.churn.enabled:
                metrics.CHURN_OUTCOMES.labels("not_a_label").inc()
            else:
                labelled.append((record, label, f"{outcome.kind.value}@{outcome.time.isoformat()}"))
        out = [{"churn_outcome": r} for r in records]  # the records are filled in below
        if not labelled:
            return learner, out
        ids = [r["subscriber_id"] for r, _, _ in labelled]
        try:
            snapshots = dict(zip(ids, self.state.get_snapshots(ids), strict=True))
            learned = dict(zip(ids, self.state.get_learned(ids), strict=True))
        except redis.RedisError as exc:
            self.trouble("churn snapshots", exc)
            for record, _, _ in labelled:
                record["result"] = "state_unavailable"
            return learner, out
        if learner.model.background is None:  # refits never block the outcome stream
            if self._refits is None:
                self._refits = ThreadPoolExecutor(1, thread_name_prefix="churn-refit")
            learner.model.background = self._refits
        held = learner.model.n_learned  # what the learner's state holds, before this batch
        done: dict[str, dict[str, Any]] = {}  # learned in this batch, by customer
        for record, label, key in labelled:
            sid = record["subscriber_id"]
            before = done.get(sid) or learned[sid]
            if before is not None and before.get("outcome") == key:
                count = before.get("n_learned")
                if sid in done or not (isinstance(count, int) and count > held):
                    metrics.CHURN_OUTCOMES.labels("duplicate").inc()
                    record["result"] = "duplicate"
                    continue
                snapshot: dict[str, Any] | None = before  # a replay: the learner is older
            else:
                snapshot = snapshots[sid]
            if snapshot is None or not isinstance(snapshot.get("features"), dict):
                metrics.CHURN_OUTCOMES.labels("no_snapshot").inc()
                record["result"] = "no_snapshot"
                continue
            snapshots[sid] = None
            p, drifted = learner.learn_one(snapshot["features"], label)
            done[sid] = {**snapshot, "outcome": key, "n_learned": learner.model.n_learned}
            metrics.CHURN_OUTCOMES.labels("learned").inc()
            if drifted:
                metrics.CHURN_DRIFTS.inc()
                log.warning(
                    "churn model quality changed (ADWIN on the loss): %s; posteriors widened, "
                    "trees refit on the recent outcomes go on trial",
                    learner.quality.report(),
                )
            self._report_events(learner)
            record.update(
                result="learned",
                probability_before=round(p, 4),
                risk_at_scoring=snapshot.get("risk"),
                scored_at=snapshot.get("scored_at"),
                drift=drifted,
            )
        if done:
            self._save(learner, done)
            for record, _, _ in labelled:
                if record["result"] == "learned":
                    record["revision"] = learner.revision
        return learner, out

    def _save(self, learner: ChurnLearner, done: dict[str, dict[str, Any]]) -> None:
        """After a batch: the quality gauges, one checkpoint, and the learned snapshots moved."""
        quality = learner.quality.report()
        # NaN (no figure, no alert) until the window's AUC means something
        metrics.CHURN_ROC_AUC.set(quality["roc_auc"] if learner.quality.measured else math.nan)
        metrics.CHURN_LOG_LOSS.set(quality["log_loss"])
        try:
            # revisions only grow, also after a restart resumed an older learner: scorers reload
            # when the number changes
            learner.revision = max(learner.revision, self.state.revision() or 0)
            data = learner.checkpoint()
            self.state.save_checkpoint(learner.revision, data)
            self.state.mark_learned(
                [(sid, {**snap, "revision": learner.revision}) for sid, snap in done.items()]
            )
        except redis.RedisError as exc:  # the learner keeps it; the next checkpoint carries it
            self.trouble("churn checkpoint", exc)
        metrics.CHURN_REVISION.labels("learner").set(learner.revision)

    @staticmethod
    def _report_events(learner: ChurnLearner) -> None:
        """Count and log the model's refit and drift events since the last call."""
        for event in learner.take_events():
            name, _, detail = event.partition(": ")
            metrics.CHURN_MODEL_EVENTS.labels(name).inc()
            if name == "refit_failed":
                log.error("churn trees refit failed, the previous trees keep serving: %s", detail)
            elif name != "refit":
                log.info("churn model: %s at %d outcomes", name, learner.model.n_learned)


TREND_KEPT = 12
"""How many of a customer's latest scores their snapshot keeps (the churn trend)."""


def _trend(previous: dict[str, Any] | None, scored_at: str, p: float) -> list[list[Any]]:
    """The customer's last scores, ``[scored_at, probability]``, oldest first, this one last.

    >>> _trend({"trend": [["t0", 0.2]]}, "t1", 0.31234)
    [['t0', 0.2], ['t1', 0.3123]]
    """
    kept = previous.get("trend") if isinstance(previous, dict) else None
    trend = (
        [x for x in kept if isinstance(x, list) and len(x) == 2] if isinstance(kept, list) else []
    )
    return [*trend[-(TREND_KEPT - 1) :], [scored_at, round(p, 4)]]


def _left(learned: dict[str, Any] | None) -> bool:
    """Whether a learned record's outcome says the customer left."""
    return learned_outcome(learned) == OutcomeKind.CHURNED.value


class BaseScoring:
    """The scheduled pass that scores every customer with a profile.

    A pass starts at start-up and then every ``churn.score_base_every_s``; each call of
    :meth:`step` scores one chunk of ``churn.score_base_chunk`` profiles (one ``SCAN`` page, one
    ``MGET``, one batch through the model, one pipelined write), so a pass over millions of
    profiles is spread over many short steps and never holds up the stream. A Redis failure
    ends the pass (logged); the next one starts a minute later.

    Parameters
    ----------
    churn
        The churn step (model, snapshots).
    profiles
        Opens a scan over the stored profiles, in chunks (``ContextStore.scan_profiles``);
        None where there is no store (the pass is then off).
    now
        The wall clock, for the snapshots' ``scored_at``.
    clock
        A monotonic clock, for the schedule.
    """

    RETRY_S: Final = 60.0

    def __init__(
        self,
        churn: ChurnRisk,
        profiles: Callable[[int], Iterator[list[tuple[str, CustomerContext]]]] | None,
        now: Callable[[], datetime],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.churn = churn
        self._profiles = profiles
        self._now = now
        self._clock = clock
        self._next = clock()
        self._scan: Iterator[list[tuple[str, CustomerContext]]] | None = None
        self._started = 0.0
        self._count = 0

    @property
    def enabled(self) -> bool:
        """Whether a schedule is configured."""
        c = self.churn.settings.churn
        return self._profiles is not None and c.enabled and c.score_base_every_s > 0

    def step(self) -> dict[str, Any] | None:
        """Score the next chunk when a pass is due or under way; the pass's summary when it
        ends (for the decisions topic), else None."""
        if not self.enabled:
            return None
        c = self.churn.settings.churn
        if self._scan is None:
            if self._clock() < self._next or self._profiles is None:
                return None
            self._scan = self._profiles(c.score_base_chunk)
            self._started = self._clock()
            self._count = 0
        try:
            chunk = next(self._scan, None)
            if chunk is not None:
                self._count += self.churn.score_profiles(chunk, self._now())
                return None
        except redis.RedisError as exc:
            self.churn.trouble("the scheduled churn scoring pass (retried in a minute)", exc)
            self._scan = None
            self._next = self._clock() + self.RETRY_S
            return None
        self._scan = None
        self._next = self._started + c.score_base_every_s
        seconds = self._clock() - self._started
        log.info("scheduled churn scoring: %d customers in %.1f s", self._count, seconds)
        return {
            "churn_base_scored": {
                "customers": self._count,
                "seconds": round(seconds, 3),
                "revision": self.churn._revision,
                "finished_at": self._now().isoformat(),
            }
        }

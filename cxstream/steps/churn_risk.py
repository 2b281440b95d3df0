"""Churn risk: every customer a signal concerns is scored (one batch) by the online Bayesian
logistic model, with the features that pushed the risk up or down; a degradation of a customer
at risk becomes a ``churn_risk`` signal. The features used are kept as the customer's snapshot;
when the outcome arrives, days or weeks later, the learner learns from it and writes a
versioned checkpoint that every scorer reloads."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from datetime import datetime
from enum import Enum
from typing import Any

import redis

from cxstream import metrics
from cxstream.actions.policy import SignalIn
from cxstream.churn_state import ChurnState
from cxstream.detectors.churn import ChurnLearner, ChurnModel, QualityMonitor, Schema
from cxstream.errors import ConfigError, IncompatibleCheckpoint, UntrustedCheckpoint
from cxstream.events import Outcome, OutcomeKind
from cxstream.settings import Settings
from cxstream.steps.common import RedisTrouble

__all__ = ["ChurnRisk"]

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

    def fresh_model(self) -> ChurnModel:
        c = self.settings.churn
        return ChurnModel(
            self.schema, prior_variance=c.prior_variance, max_categories=c.max_categories
        )

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
        row: dict[str, Any] = {}
        customer = sig.customer
        for col in self.schema.columns:
            if col == "signal":
                value: Any = sig.signal
            elif col in sig.details:
                value = sig.details[col]
            else:
                value = getattr(customer, col, None) if customer is not None else None
            row[col] = value.value if isinstance(value, Enum) else value
        return row

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
        for i, row, p, contributions in zip(todo, rows, probs.tolist(), why, strict=True):
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
                    },
                )
            )
        try:
            self.state.save_snapshots(snapshots)
        except redis.RedisError as exc:  # their outcomes will count as no_snapshot
            self.trouble("churn snapshots", exc)
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
            learner = self.new_learner()
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
            (snapshot,) = self.state.get_snapshots([outcome.subscriber_id])
        except redis.RedisError as exc:
            self.trouble("churn snapshots", exc)
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
            self.state.save_checkpoint(learner.revision, data)
            self.state.drop_snapshots([outcome.subscriber_id])
        except redis.RedisError as exc:  # the learner keeps it; the next checkpoint carries it
            self.trouble("churn checkpoint", exc)
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

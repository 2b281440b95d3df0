"""Outcomes: what happened to a customer afterwards (churned, retained, took the offer,
complained), joined to the customer's group of the hold-out experiment; the uplift gauges
follow. (Learning the churn model from an outcome is :class:`~cxstream.steps.churn_risk.ChurnRisk`'s.)"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from cxstream import metrics
from cxstream.actions.ledger import ExperimentLedger
from cxstream.events import Outcome
from cxstream.steps.common import RedisTrouble

__all__ = ["Outcomes"]


class Outcomes:
    """The hold-out experiment's side of outcomes."""

    def __init__(self, experiment: ExperimentLedger, *, trouble: RedisTrouble) -> None:
        self.experiment = experiment
        self.trouble = trouble

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[dict[str, str | None]]:
        """Join outcomes to the customer's experiment group and refresh the uplift gauges."""
        joined: list[dict[str, str | None]] = []
        for outcome in outcomes:
            record: dict[str, str | None] = {
                "subscriber_id": outcome.subscriber_id,
                "outcome": outcome.kind.value,
                "time": outcome.time.isoformat(),
                "group": None,
            }
            try:
                record["group"] = self.experiment.outcome(outcome.subscriber_id, outcome.kind.value)
            except redis.RedisError as exc:  # reported unjoined on cx.decisions, not lost
                self.trouble("experiment ledger", exc)
                record["error"] = "redis unavailable: not joined"
            joined.append(record)
        if outcomes:
            try:
                self.publish_experiment()
            except redis.RedisError as exc:
                self.trouble("experiment report", exc)
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

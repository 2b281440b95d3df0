"""Decide: released alerts and incident changes become signals (a degradation for its
subscriber; an incident for each subscriber newly caught in it), scored for churn risk, then
decided by the contact policy: sent, deferred to the end of quiet hours, or suppressed with the
reason. Every decision is counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import redis

from cxstream import metrics
from cxstream.actions.ledger import DeferredQueue
from cxstream.actions.policy import ContactPolicy, Decision, SignalIn
from cxstream.context import ContextStore
from cxstream.events import Action, CellIncident
from cxstream.steps.churn_risk import ChurnRisk
from cxstream.steps.common import Candidate, CellOutput, RedisTrouble

__all__ = ["Decide"]


class Decide:
    """Signals to decisions, and the deferred actions released when their time comes."""

    def __init__(
        self,
        context: ContextStore,
        policy: ContactPolicy,
        deferred: DeferredQueue,
        churn: ChurnRisk,
        *,
        clock: Callable[[], datetime],
        trouble: RedisTrouble,
    ) -> None:
        self.context = context
        self.policy = policy
        self.deferred = deferred
        self.churn = churn
        self.clock = clock
        self.trouble = trouble

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
        signals = self.churn.score(signals, now)
        try:
            decisions = self.policy.decide_many(signals, now)
        except redis.RedisError as exc:
            # Caps, cooldowns and consent state cannot be checked: no outreach at all.
            self.trouble("contact state", exc)
            decisions = [Decision(s, "suppressed:state_unavailable", s.signal) for s in signals]
        out = []
        for decision in decisions:
            action = decision.action
            if action is not None and decision.result == "deferred" and action.send_at is not None:
                try:
                    self.deferred.push(action.send_at.timestamp(), action)
                except redis.RedisError as exc:
                    self.trouble("deferred queue", exc)
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

    def release_deferred(self) -> list[Action]:
        """Actions whose quiet hours are over, removed from the deferred queue."""
        try:
            released = self.deferred.pop_due(self.clock().timestamp())
        except redis.RedisError as exc:  # they wait in Redis until it is back
            self.trouble("deferred queue", exc)
            return []
        for action in released:
            metrics.DECISIONS.labels(action.kind, "released").inc()
        return released

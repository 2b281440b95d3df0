"""Decide: released alerts and incident changes become signals (a degradation for its
subscriber; an incident for each subscriber newly caught in it), scored for churn risk, then
decided by the contact policy: sent, deferred to the end of quiet hours, or suppressed with the
reason. Every decision is counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast

import redis

from cxstream import metrics
from cxstream.actions.ledger import DeferredQueue
from cxstream.actions.policy import ContactPolicy, Decision, SignalIn
from cxstream.context import ContextStore
from cxstream.events import CellIncident, SignalKind
from cxstream.steps.churn_risk import ChurnRisk
from cxstream.steps.common import Candidate, CellOutput, RedisTrouble

__all__ = ["RECHECK_RETRY_S", "Decide"]

RECHECK_RETRY_S = 60.0
"""How long a released action waits when its customer's context cannot be read."""


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

    def release_deferred(self) -> list[Decision]:
        """Actions whose quiet hours are over, each decided afresh against the customer's current
        context (:meth:`~cxstream.actions.policy.ContactPolicy.recheck`): ``released`` with the
        action, or ``suppressed:<reason>``. With the context unavailable the action waits (it is
        deferred again by ``RECHECK_RETRY_S``) rather than go out unchecked."""
        now = self.clock()
        try:
            due = self.deferred.pop_due(now.timestamp())
        except redis.RedisError as exc:  # they wait in Redis until it is back
            self.trouble("deferred queue", exc)
            return []
        if not due:
            return []
        found = self.context.get_many(a.subscriber_id for a in due)
        out = []
        for action in due:
            lookup = found[action.subscriber_id]
            sig = SignalIn(
                signal=cast("SignalKind", action.reason),
                subscriber_id=action.subscriber_id,
                customer=lookup.customer,
                score=1.0,
                source_id=action.alert_id,
                event_time=action.event_time,
                stale=lookup.stale,
            )
            if lookup.stale:
                try:
                    self.deferred.push(now.timestamp() + RECHECK_RETRY_S, action)
                    decision = Decision(sig, "deferred", action.kind, action.rule, action)
                except redis.RedisError as exc:
                    self.trouble("deferred queue", exc)
                    decision = Decision(
                        sig, "suppressed:state_unavailable", action.kind, action.rule
                    )
            else:
                why = self.policy.recheck(action, lookup.customer)
                decision = (
                    Decision(sig, "released", action.kind, action.rule, action)
                    if why is None
                    else Decision(sig, f"suppressed:{why}", action.kind, action.rule)
                )
            metrics.DECISIONS.labels(decision.kind, decision.result).inc()
            out.append(decision)
        return out

"""Decide: released alerts and incident changes become signals (a degradation for its
subscriber; an incident for each subscriber newly caught in it), scored for churn risk, then
decided by the contact policy: sent, deferred to the end of quiet hours, or suppressed with the
reason. Every decision is counted."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import redis

from cxstream import metrics
from cxstream.actions.ledger import DeferredQueue
from cxstream.actions.policy import ContactPolicy, Decision, SignalIn
from cxstream.context import ContextStore
from cxstream.events import Action, CellIncident, CustomerContext, SignalKind
from cxstream.steps.churn_risk import ChurnRisk
from cxstream.steps.common import Candidate, CellOutput, RedisTrouble

__all__ = ["RECHECK_RETRY_S", "UNAVAILABLE", "Decide"]

log = logging.getLogger(__name__)

UNAVAILABLE = frozenset({"suppressed:stale_context", "suppressed:state_unavailable"})
"""Results that say only that Redis could not be read: such signals are decided again."""

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
        redecide_window_s: float = 900.0,
        redecide_max: int = 100_000,
        record_ttl_s: int = 7 * 86_400,
    ) -> None:
        self.context = context
        self.policy = policy
        self.deferred = deferred
        self.churn = churn
        self.clock = clock
        self.trouble = trouble
        self.redecide_window_s = redecide_window_s
        self.record_ttl_s = record_ttl_s  # how long the action index and incident marks live
        # (first decided at, signal before churn scoring), oldest first; bounded
        self._waiting: deque[tuple[float, SignalIn]] = deque(maxlen=redecide_max)
        self._lock = threading.Lock()
        metrics.DECISIONS_WAITING.set_function(lambda: float(len(self._waiting)))

    def decide_batch(self, items: Sequence[CellOutput]) -> list[Decision]:
        """Turn released alerts and incident changes into contact decisions.

        A degradation is a signal for its subscriber; an opened or updated cell incident is an
        area-notice signal for each subscriber newly caught in it (their context fetched in one
        batch). Deferred actions go to the deferred queue; every decision is counted.
        """
        now = self.clock()
        signals: list[SignalIn] = []
        over = [
            i.incident_id for i in items if isinstance(i, CellIncident) and i.state == "resolved"
        ]
        if over and self.context is not None:
            try:
                self.context.mark_resolved(over, self.record_ttl_s)
            except redis.RedisError as exc:
                self.trouble("incident state", exc)
        cancelled = self._cancel_notices(items)
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
                                "cause": item.cause,  # outage: the cell went dark
                                "share": item.share,
                            },
                        )
                    )
        if not signals:
            return cancelled
        return cancelled + self._decide(signals, now, [now.timestamp()] * len(signals))

    def _cancel_notices(self, items: Sequence[CellOutput]) -> list[Decision]:
        """The area notices still waiting for quiet hours to end for incidents an operator just
        resolved: taken out of the deferred queue, each ``suppressed:incident_resolved`` (with
        the operator in its details). If Redis cannot be read they stay, and their release is
        suppressed the same way (the incident is marked resolved)."""
        by = {i.incident_id: i.resolved_by for i in items
              if isinstance(i, CellIncident) and i.state == "resolved" and i.resolved_by}  # fmt: skip
        if not by:
            return []
        try:
            cancelled = self.deferred.cancel(list(by))
        except redis.RedisError as exc:
            self.trouble("deferred queue", exc)
            return []
        out = []
        for action in cancelled:
            sig = _signal_of(action, details={"resolved_by": by[action.alert_id]})
            decision = Decision(sig, "suppressed:incident_resolved", action.kind, action.rule)
            metrics.DECISIONS.labels(decision.kind, decision.result).inc()
            out.append(decision)
        return out

    def _decide(self, signals: list[SignalIn], now: datetime, since: list[float]) -> list[Decision]:
        """Score and decide ``signals``; those suppressed only because Redis could not be read
        wait to be decided again (:meth:`redecide`), each with the time it was first decided."""
        scored = self.churn.score(signals, now)
        try:
            decisions = self.policy.decide_many(scored, now)
        except redis.RedisError as exc:
            # Caps, cooldowns and consent state cannot be checked: no outreach at all.
            self.trouble("contact state", exc)
            decisions = [Decision(s, "suppressed:state_unavailable", s.signal) for s in scored]
        if self.redecide_window_s > 0:
            again = [
                (first, sig)
                for sig, first, d in zip(signals, since, decisions, strict=True)
                if d.result in UNAVAILABLE
            ]
            if again:
                with self._lock:
                    self._waiting.extend(again)
        self._index([d.action for d in decisions if d.action is not None])
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

    def _index(self, actions: list[Action]) -> None:
        """Record the actions under their customers, for erasure to find their ledger entries."""
        if not actions or self.context is None:  # (an evaluation runs without a context store)
            return
        try:
            self.context.index_actions(
                [(a.subscriber_id, a.action_id) for a in actions], self.record_ttl_s
            )
        except redis.RedisError as exc:
            self.trouble("action index", exc)

    def forget(self, subscriber_ids: Sequence[str]) -> None:
        """Drop the signals of erased customers that wait to be decided again."""
        gone = set(subscriber_ids)
        with self._lock:
            kept = [(t, sig) for t, sig in self._waiting if sig.subscriber_id not in gone]
            self._waiting.clear()
            self._waiting.extend(kept)

    @property
    def waiting(self) -> int:
        """Signals waiting to be decided again once Redis can be read."""
        return len(self._waiting)

    def redecide(self) -> list[Decision]:
        """Decide again the signals suppressed only because Redis could not be read (stale
        context, contact state unavailable), now that it can: those still inside
        ``redecide_window_s`` of their first decision, each against the customer's current
        context. The new decision (sent, deferred or suppressed with a reason) supersedes the
        first; signals whose context still cannot be read keep waiting."""
        if not self._waiting:
            return []
        now = self.clock()
        with self._lock:
            items = list(self._waiting)
            self._waiting.clear()
        cutoff = now.timestamp() - self.redecide_window_s
        live = [(first, sig) for first, sig in items if first >= cutoff]
        if len(live) < len(items):
            metrics.DECISIONS_EXPIRED.inc(len(items) - len(live))
        found = self.context.get_many(sig.subscriber_id for _, sig in live)
        still = [(first, sig) for first, sig in live if found[sig.subscriber_id].stale]
        ready = [(first, sig) for first, sig in live if not found[sig.subscriber_id].stale]
        if still:
            with self._lock:
                self._waiting.extendleft(reversed(still))
        if not ready:
            return []
        fresh = [
            replace(sig, customer=found[sig.subscriber_id].customer, stale=False)
            for _, sig in ready
        ]
        decisions = self._decide(fresh, now, [first for first, _ in ready])
        log.info("%d signals held back while Redis was unavailable decided again", len(ready))
        return decisions

    def release_deferred(self) -> list[Decision]:
        """Actions whose quiet hours are over, each decided afresh against the customer's current
        context (:meth:`~cxstream.actions.policy.ContactPolicy.recheck`): ``released`` with the
        action, or ``suppressed:<reason>`` (an area notice whose incident is over meanwhile:
        ``suppressed:incident_resolved``). With the context unavailable the action waits (it is
        deferred again by ``RECHECK_RETRY_S``) rather than go out unchecked. Signals held back
        while Redis was unavailable are decided again here too (:meth:`redecide`)."""
        return self.redecide() + self._release_due()

    def _release_due(self) -> list[Decision]:
        now = self.clock()
        try:
            due = self.deferred.pop_due(now.timestamp())
        except redis.RedisError as exc:  # they wait in Redis until it is back
            self.trouble("deferred queue", exc)
            return []
        if not due:
            return []
        found = self.context.get_many(a.subscriber_id for a in due)
        notices = [a for a in due if a.reason == "cell_incident"]
        try:
            over = dict(
                zip(
                    (a.alert_id for a in notices),
                    self.context.resolved([a.alert_id for a in notices]),
                    strict=True,
                )
            )
        except redis.RedisError as exc:  # cannot tell: they wait like an unreadable profile
            self.trouble("incident state", exc)
            over = None
        out = []
        for action in due:
            lookup = found[action.subscriber_id]
            sig = _signal_of(action, lookup.customer, stale=lookup.stale)
            if lookup.stale or (over is None and action.reason == "cell_incident"):
                try:
                    self.deferred.push(now.timestamp() + RECHECK_RETRY_S, action)
                    decision = Decision(sig, "deferred", action.kind, action.rule, action)
                except redis.RedisError as exc:
                    self.trouble("deferred queue", exc)
                    decision = Decision(
                        sig, "suppressed:state_unavailable", action.kind, action.rule
                    )
            elif over and over.get(action.alert_id):
                decision = Decision(sig, "suppressed:incident_resolved", action.kind, action.rule)
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


def _signal_of(
    action: Action,
    customer: CustomerContext | None = None,
    *,
    stale: bool = False,
    details: dict[str, Any] | None = None,
) -> SignalIn:
    """The signal a deferred action is decided on again (at its release, or when it is
    cancelled): its reason, customer and alert, as when it was first decided."""
    return SignalIn(
        signal=cast("SignalKind", action.reason),
        subscriber_id=action.subscriber_id,
        customer=customer,
        score=1.0,
        source_id=action.alert_id,
        event_time=action.event_time,
        stale=stale,
        details=details or {},
    )

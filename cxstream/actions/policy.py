"""The first contact policy: who is contacted, on which channel, and why not.

For each degradation alert the policy decides one of: ``emitted`` (an :class:`~cxstream.events.Action`
is produced) or a suppression reason — ``below_threshold``, ``explained_by_incident`` (a cell
incident covers it), ``unknown_customer``, ``stale_context``
(Redis unreachable: consent unknown, so no outreach), ``no_consent``, ``cooldown`` (the same customer
was already contacted for the same reason inside ``policy.cooldown_s``). Every decision is returned,
so the flow can count and record it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cxstream.actions.store import ClaimStore
from cxstream.events import Action, Alert, Channel, CustomerContext
from cxstream.settings import PolicySettings

__all__ = ["ContactPolicy", "Decision", "DecisionOutcome"]

DecisionOutcome = Literal[
    "emitted",
    "below_threshold",
    "explained_by_incident",
    "unknown_customer",
    "stale_context",
    "no_consent",
    "cooldown",
]
OUTCOMES: tuple[DecisionOutcome, ...] = (
    "explained_by_incident",
    "emitted",
    "below_threshold",
    "unknown_customer",
    "stale_context",
    "no_consent",
    "cooldown",
)

_FALLBACK_CHANNELS = (Channel.PUSH, Channel.SMS, Channel.EMAIL)


@dataclass(frozen=True)
class Decision:
    """What the policy did with one alert."""

    alert: Alert
    outcome: DecisionOutcome
    action: Action | None = None


def pick_channel(customer: CustomerContext) -> Channel | None:
    """The preferred channel if consent is granted there, else the first granted fallback."""
    if customer.may_contact(customer.preferred_channel):
        return customer.preferred_channel
    for channel in _FALLBACK_CHANNELS:
        if customer.may_contact(channel):
            return channel
    return None


class ContactPolicy:
    """Threshold, consent and cooldown, with state in a :class:`ClaimStore`."""

    def __init__(self, settings: PolicySettings, claims: ClaimStore, *, key_prefix: str = "cx"):
        self.settings = settings
        self._claims = claims
        self._prefix = key_prefix

    def decide_many(
        self,
        candidates: Sequence[tuple[Alert, CustomerContext | None]],
        now: datetime,
    ) -> list[Decision]:
        """Decide every candidate; cooldown claims for the batch take one round trip."""
        decisions: list[Decision | None] = []
        pending: list[tuple[int, Action]] = []
        for alert, customer in candidates:
            early = self._precheck(alert, customer)
            if early is not None:
                decisions.append(Decision(alert, early))
                continue
            assert customer is not None  # noqa: S101 - _precheck returned None only with a customer
            channel = pick_channel(customer)
            if channel is None:
                decisions.append(Decision(alert, "no_consent"))
                continue
            action = Action(
                action_id=f"{alert.alert_id}:proactive_apology",
                kind="proactive_apology",
                subscriber_id=customer.subscriber_id,
                channel=channel,
                reason=alert.kind,
                alert_id=alert.alert_id,
                event_time=alert.event_time,
                created_at=now,
                language=customer.language,
                value_tier=customer.value_tier,
                details={"experience": alert.experience, "score": alert.score, "why": alert.why},
            )
            pending.append((len(decisions), action))
            decisions.append(None)
        claims = [
            (f"{self._prefix}:cooldown:{a.subscriber_id}:{a.reason}", a.action_id)
            for _, a in pending
        ]
        held = self._claims.claim_many(claims, self.settings.cooldown_s)
        for (index, action), holder in zip(pending, held, strict=True):
            alert = candidates[index][0]
            if holder is None or holder == action.action_id:
                decisions[index] = Decision(alert, "emitted", action)
            else:
                decisions[index] = Decision(alert, "cooldown")
        return [d for d in decisions if d is not None]

    def _precheck(self, alert: Alert, customer: CustomerContext | None) -> DecisionOutcome | None:
        if alert.score < self.settings.min_score:
            return "below_threshold"
        if alert.explained_by is not None:
            return "explained_by_incident"  # the cell incident is handled as one, not per customer
        if alert.context_stale:
            return "stale_context"
        if customer is None:
            return "unknown_customer"
        return None

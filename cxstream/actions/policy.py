"""The contact policy: for every signal, send, defer, or suppress — and say why.

Order of checks for one signal (a degradation, a cell incident reaching an affected customer, a
churn risk):

1. ``unknown_customer`` / ``stale_context`` (Redis unreachable: consent unknown, so no outreach);
2. ``explained_by_incident``: a cell incident explains this degradation; the customer gets at most
   one area notice for the incident instead;
3. the highest-priority matching **rule** picks the action (``no_rule`` if none matches);
4. ``ticket_open``: no outreach while a ticket is open, unless the rule is for open tickets;
5. **consent**: the rule's channel, else the preferred one, else a granted fallback (``no_consent``);
6. ``holdout``: the random control group is never contacted (recorded for the experiment);
7. **offers** for credits and retention: the eligible catalogue entry with the best expected value
   (``no_eligible_offer``);
8. **contact rules**, claimed atomically in the ledger in priority order: ``cooldown`` per (customer,
   reason), ``cap:<channel>:<hours>h`` per customer, ``household_cap:...`` per account, ``budget``
   per hour;
9. **quiet hours** in the customer's time zone: ``deferred`` to the next allowed time, not dropped.

Every decision is returned with its result (``sent``, ``deferred``, ``suppressed:<reason>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cxstream.actions.ledger import CapCheck, Contact, ContactLedger, ExperimentLedger
from cxstream.actions.rules import Cap, PolicyConfig, PolicySource, Rule
from cxstream.events import Action, Channel, CustomerContext, SignalKind, bounded_id

__all__ = ["ContactPolicy", "Decision", "SignalIn", "pick_channel"]


@dataclass(frozen=True)
class SignalIn:
    """Something that may justify contacting one customer."""

    signal: SignalKind
    subscriber_id: str
    customer: CustomerContext | None
    score: float
    source_id: str  # the alert or incident id
    event_time: datetime
    stale: bool = False
    explained_by: str | None = None
    risk: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the policy did with one signal, and why."""

    signal: SignalIn
    result: str  # "sent", "deferred" or "suppressed:<reason>"
    kind: str  # the action kind considered (or the signal kind when no rule matched)
    rule: str | None = None
    action: Action | None = None

    @property
    def suppressed(self) -> bool:
        """Whether no contact results."""
        return self.result.startswith("suppressed:")


def pick_channel(
    customer: CustomerContext, fallback: Sequence[Channel], forced: Channel | None = None
) -> Channel | None:
    """The forced channel if granted; else the preferred one if granted; else a granted fallback."""
    if forced is not None:
        return forced if customer.may_contact(forced) else None
    if customer.may_contact(customer.preferred_channel):
        return customer.preferred_channel
    return next((c for c in fallback if customer.may_contact(c)), None)


def _cap_checks(
    caps: Sequence[Cap], scope: str, owner: str, channel: Channel, prefix: str
) -> list[CapCheck]:
    out = []
    for cap in caps:
        if cap.channel != "any" and cap.channel != channel:
            continue
        name = f"{scope}:{cap.channel}:{cap.window_h:g}h"
        out.append(
            CapCheck(
                f"{prefix}:{scope}:{owner}:{cap.channel}:{cap.window_h:g}",
                cap.max,
                cap.window_h * 3600.0,
                name,
            )
        )
    return out


class ContactPolicy:
    """Apply a :class:`~cxstream.actions.rules.PolicyConfig` with state in a ledger."""

    def __init__(
        self,
        source: PolicySource,
        ledger: ContactLedger,
        *,
        key_prefix: str = "cx",
        experiment: ExperimentLedger | None = None,
    ) -> None:
        self.source = source
        self._ledger = ledger
        self._prefix = key_prefix
        self.experiment = experiment

    def decide_many(self, signals: Sequence[SignalIn], now: datetime) -> list[Decision]:
        """Decide every signal; the ledger is claimed in priority order, one round trip."""
        policy = self.source.policy
        decisions: list[Decision | None] = [None] * len(signals)
        pending: list[tuple[int, int, float, Action, Rule, CustomerContext]] = []
        for i, sig in enumerate(signals):
            early = self._prepare(policy, sig, now)
            if isinstance(early, Decision):
                decisions[i] = early
            else:
                action, rule, customer, value = early
                pending.append((i, rule.priority, value, action, rule, customer))
        pending.sort(key=lambda p: (-p[1], -p[2]))
        hour = now.strftime("%Y%m%d%H")
        contacts = []
        for _, _, _, action, _, customer in pending:
            caps = _cap_checks(
                policy.caps, "cap", customer.subscriber_id, action.channel, self._prefix
            )
            if customer.account_id is not None:
                caps += _cap_checks(
                    policy.household_caps,
                    "household_cap",
                    customer.account_id,
                    action.channel,
                    self._prefix,
                )
            contacts.append(
                Contact(
                    action_id=action.action_id,
                    cooldown_key=f"{self._prefix}:cooldown:{customer.subscriber_id}:{action.reason}",
                    cooldown_s=policy.cooldown_h * 3600.0,
                    caps=tuple(caps),
                    budget_key=f"{self._prefix}:budget:{hour}",
                    budget=policy.global_budget_per_hour,
                )
            )
        results = self._ledger.try_contact(contacts, now.timestamp())
        for (i, _, _, action, rule, customer), result in zip(pending, results, strict=True):
            sig = signals[i]
            if result not in ("ok", "replay"):
                decisions[i] = Decision(sig, f"suppressed:{result}", action.kind, rule.name)
                continue
            wake = policy.quiet_hours.next_allowed(now, customer.timezone)
            if wake is not None:
                action = action.model_copy(update={"send_at": wake})
            if self.experiment is not None:
                self.experiment.assign(customer.subscriber_id, "treated", action)
            result_text = "deferred" if wake is not None else "sent"
            decisions[i] = Decision(sig, result_text, action.kind, rule.name, action)
        return [d for d in decisions if d is not None]

    def recheck(self, action: Action, customer: CustomerContext | None) -> str | None:
        """Why a deferred action may no longer go out when its time comes (None: it may).

        A release is a fresh decision on what can have changed since: the customer's consent
        for the action's channel, an open ticket, the customer's profile itself.
        """
        policy = self.source.policy
        if customer is None:
            return "unknown_customer"
        if policy.suppress_when_ticket_open and customer.open_tickets > 0:
            rule = next((r for r in policy.rules if r.name == action.rule), None)
            if rule is None or rule.when.open_ticket is not True:
                return "ticket_open"
        if not customer.may_contact(action.channel):
            return "no_consent"
        return None

    def _prepare(
        self, policy: PolicyConfig, sig: SignalIn, now: datetime
    ) -> Decision | tuple[Action, Rule, CustomerContext, float]:
        customer = sig.customer
        if sig.stale:
            return Decision(sig, "suppressed:stale_context", sig.signal)
        if customer is None:
            return Decision(sig, "suppressed:unknown_customer", sig.signal)
        if sig.explained_by is not None:
            return Decision(sig, "suppressed:explained_by_incident", sig.signal)
        matching = [
            r for r in policy.rules if r.when.matches(sig.signal, sig.score, sig.risk, customer)
        ]
        if not matching:
            return Decision(sig, "suppressed:no_rule", sig.signal)
        rule = max(matching, key=lambda r: r.priority)
        if (
            policy.suppress_when_ticket_open
            and customer.open_tickets > 0
            and rule.when.open_ticket is not True
        ):
            return Decision(sig, "suppressed:ticket_open", rule.action, rule.name)
        channel = pick_channel(customer, policy.channel_fallback, rule.channel)
        if channel is None:
            return Decision(sig, "suppressed:no_consent", rule.action, rule.name)
        if policy.holdout.is_control(customer.subscriber_id):
            if self.experiment is not None:
                self.experiment.assign(customer.subscriber_id, "control", None)
            return Decision(sig, "suppressed:holdout", rule.action, rule.name)
        value = policy.value_model.value(customer, sig.risk)
        offer: dict[str, Any] | None = None
        if rule.action in ("service_credit", "retention_offer"):
            best = policy.best_offer(rule.action, customer, sig.risk)
            if best is None:
                return Decision(sig, "suppressed:no_eligible_offer", rule.action, rule.name)
            chosen, expected = best
            offer = {"id": chosen.id, "cost": chosen.cost, "expected_value": round(expected, 2)}
            if chosen.text is not None:
                offer["text"] = chosen.text
        suffix = f":{customer.subscriber_id}" if sig.signal == "cell_incident" else ""
        action = Action(
            action_id=bounded_id(f"{sig.source_id}{suffix}:{rule.action}"),
            kind=rule.action,
            subscriber_id=customer.subscriber_id,
            channel=channel,
            reason=sig.signal,
            alert_id=sig.source_id,
            event_time=sig.event_time,
            created_at=now,
            language=policy.message_language(rule.action, customer.language),
            customer_language=customer.language,
            value_tier=customer.value_tier,
            priority=rule.priority,
            rule=rule.name,
            customer_value=round(value, 2),
            offer=offer,
            details=sig.details,
            content=policy.message(
                rule.action,
                customer.language,
                {
                    "cell": str(sig.details.get("cell_id") or ""),
                    "offer": str(offer.get("text") or offer["id"]) if offer else "",
                },
            ),
        )
        return action, rule, customer, value

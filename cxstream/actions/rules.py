"""The contact policy as data: ``config/policy.yaml``, validated, and reloaded when it changes.

A policy has **rules** (a signal and conditions on the customer -> an action kind, with a priority),
**contact rules** (quiet hours in the customer's time zone, frequency caps per channel and per
household, a cooldown per customer and reason, a global budget per hour, suppression while a ticket
is open), a **value model** whose weights management sets, an **offer catalogue**, and a random
**hold-out** share that is never contacted. Validation errors name the rule and the field
(``rules[2] 'gold-credit'.when.min_tier: ...``).

:class:`PolicySource` re-reads the file when its modification time changes; a bad new file keeps the
old policy, logs the error and counts it in ``cxstream_policy_reloads_total{outcome="rejected"}``.
"""

from __future__ import annotations

import hashlib
import logging
import string
import time
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cxstream import metrics, yamlfile
from cxstream.errors import ConfigError
from cxstream.events import ActionKind, Channel, CustomerContext, SignalKind, ValueTier

__all__ = [
    "DEFAULT_POLICY",
    "Cap",
    "Offer",
    "PolicyConfig",
    "PolicySource",
    "QuietHours",
    "Rule",
    "load_policy",
]

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid", frozen=True)

_TIERS = list(ValueTier)


def _tier_rank(tier: ValueTier | None) -> int:
    return _TIERS.index(tier) if tier is not None else -1


class When(BaseModel):
    """The conditions of a rule; all given ones must hold."""

    model_config = _STRICT

    signal: SignalKind
    min_score: Annotated[float, Field(ge=0, le=1)] | None = None
    min_tier: ValueTier | None = None
    max_tier: ValueTier | None = None
    min_risk: Annotated[float, Field(ge=0, le=1)] | None = None
    contracts: list[Literal["month_to_month", "one_year", "two_year"]] | None = None
    open_ticket: bool | None = None  # true: only with an open ticket (exempt from its suppression)

    def matches(self, signal: str, score: float, risk: float | None, c: CustomerContext) -> bool:
        """Whether a signal for this customer satisfies every condition."""
        if signal != self.signal:
            return False
        if self.min_score is not None and score < self.min_score:
            return False
        if self.min_tier is not None and _tier_rank(c.value_tier) < _tier_rank(self.min_tier):
            return False
        if self.max_tier is not None and _tier_rank(c.value_tier) > _tier_rank(self.max_tier):
            return False
        if self.min_risk is not None and (risk is None or risk < self.min_risk):
            return False
        if self.contracts is not None and c.contract not in self.contracts:
            return False
        return self.open_ticket is None or self.open_ticket == (c.open_tickets > 0)


class Rule(BaseModel):
    """Signal and conditions -> an action kind, with a priority (higher wins)."""

    model_config = _STRICT

    name: Annotated[str, Field(min_length=1, max_length=64)]
    when: When
    action: ActionKind
    priority: Annotated[int, Field(ge=0, le=1000)] = 50
    channel: Channel | None = None  # force a channel (e.g. voice_call for care callbacks)


class QuietHours(BaseModel):
    """No contact between ``start`` and ``end``, in the customer's local time."""

    model_config = _STRICT

    start: dtime = dtime(21, 0)
    end: dtime = dtime(8, 0)

    def _quiet(self, local: dtime) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, now: datetime, zone: str) -> datetime | None:
        """``None`` if contact is allowed at ``now`` (UTC), else the next allowed UTC instant.

        Computed on the customer's wall clock, so daylight-saving changes are respected.

        >>> from datetime import UTC
        >>> q = QuietHours()
        >>> q.next_allowed(datetime(2026, 3, 7, 23, 0, tzinfo=UTC), "Europe/Berlin").isoformat()
        '2026-03-08T07:00:00+00:00'
        >>> q.next_allowed(datetime(2026, 3, 8, 12, 0, tzinfo=UTC), "Europe/Berlin") is None
        True
        """
        tz = ZoneInfo(zone)
        local = now.astimezone(tz)
        if not self._quiet(local.time()):
            return None
        day = local.date()
        if local.time() >= self.end and self.start > self.end:
            day += timedelta(days=1)
        wake = datetime.combine(day, self.end, tzinfo=tz)
        # An end time that falls into a spring-forward gap resolves to the next valid instant.
        utc = wake.astimezone(ZoneInfo("UTC"))
        return utc if utc > now else now


class Cap(BaseModel):
    """At most ``max`` contacts per ``window_h`` hours (on one channel, or ``any``)."""

    model_config = _STRICT

    channel: Channel | Literal["any"] = "any"
    max: Annotated[int, Field(ge=1, le=10_000)]
    window_h: Annotated[float, Field(gt=0, le=24 * 365)]


class Holdout(BaseModel):
    """A random, stable control group that is never contacted (for measuring uplift)."""

    model_config = _STRICT

    share: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    salt: Annotated[str, Field(min_length=1)] = "cxstream-holdout"

    def is_control(self, subscriber_id: str) -> bool:
        """Stable assignment by a keyed hash of the subscriber id."""
        digest = hashlib.sha256(f"{self.salt}:{subscriber_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share


class ValueModel(BaseModel):
    """Customer value = sum of weight x feature; management sets the weights (it orders contacts
    and prices offers). What a customer's departure would cost, in ``currency``, is their
    monthly charge over ``revenue_months``: the value at risk is that times their churn
    probability (:meth:`at_risk`)."""

    model_config = _STRICT

    weights: dict[Literal["monthly_charge", "tenure_months", "churn_risk", "household_size"], float]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"  # ISO 4217
    revenue_months: Annotated[float, Field(ge=0, le=600)] = 12.0

    def revenue(self, c: CustomerContext) -> float:
        """What the customer's departure would cost: their monthly charge over
        ``revenue_months`` (in ``currency``)."""
        return c.monthly_charge * self.revenue_months

    def at_risk(self, c: CustomerContext, probability: float) -> float:
        """The expected loss: churn probability x :meth:`revenue`.

        >>> from cxstream.events import CustomerContext
        >>> m = ValueModel(weights={}, revenue_months=12)
        >>> m.at_risk(CustomerContext(subscriber_id="s1", monthly_charge=50.0), 0.25)
        150.0
        """
        return probability * self.revenue(c)

    def value(self, c: CustomerContext, risk: float | None) -> float:
        """The customer's value under these weights."""
        features = {
            "monthly_charge": c.monthly_charge,
            "tenure_months": float(c.tenure_months),
            "churn_risk": risk or 0.0,
            "household_size": float(c.household_size),
        }
        return sum(w * features[name] for name, w in self.weights.items())


class Eligibility(BaseModel):
    """Who may receive an offer."""

    model_config = _STRICT

    min_tier: ValueTier | None = None
    contracts: list[Literal["month_to_month", "one_year", "two_year"]] | None = None
    min_risk: Annotated[float, Field(ge=0, le=1)] | None = None
    min_tenure_months: Annotated[int, Field(ge=0)] | None = None

    def admits(self, c: CustomerContext, risk: float | None) -> bool:
        """Whether the customer may receive the offer."""
        if self.min_tier is not None and _tier_rank(c.value_tier) < _tier_rank(self.min_tier):
            return False
        if self.contracts is not None and c.contract not in self.contracts:
            return False
        if self.min_risk is not None and (risk or 0.0) < self.min_risk:
            return False
        return self.min_tenure_months is None or c.tenure_months >= self.min_tenure_months


class Offer(BaseModel):
    """An entry in the offer catalogue."""

    model_config = _STRICT

    id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Literal["service_credit", "retention_offer"]
    cost: Annotated[float, Field(ge=0)]
    acceptance: Annotated[float, Field(gt=0, le=1)]  # expected take-up
    eligible: Eligibility = Eligibility()
    text: Annotated[str, Field(max_length=200)] | None = None  # as the customer reads it

    def expected_value(self, customer_value: float) -> float:
        """Expected value of making this offer to a customer of the given value."""
        return self.acceptance * customer_value - self.cost


MESSAGE_FIELDS = ("cell", "offer")
"""What a message template may name: the cell and the offer (its ``text``, else its id). Nothing
else: a template is operator text, with no attribute access and no customer data."""

MESSAGES: dict[ActionKind, dict[str, str]] = {
    "proactive_apology": {
        "en": "We noticed your connection has not been at its best. We are on it, and sorry "
        "for the trouble."
    },
    "area_notice": {
        "en": "There is a network problem in your area. Our engineers are working on it; "
        "no need to call us."
    },
    "service_credit": {
        "en": "Sorry for the poor service you had. We have added {offer} to your account."
    },
    "retention_offer": {"en": "Thank you for staying with us. We have an offer for you: {offer}."},
    "care_callback": {
        "en": "We would like to call you about your recent service. Reply to choose a time."
    },
    "noc_alert": {"en": "Degradation detected for a subscriber in cell {cell}."},
}
"""The built-in text of each action kind (English); a policy file's ``messages`` adds or replaces
languages."""


class PolicyConfig(BaseModel):
    """The whole policy file."""

    model_config = _STRICT

    version: Literal[1] = 1
    rules: list[Rule]
    quiet_hours: QuietHours = QuietHours()
    caps: list[Cap] = Field(default_factory=list)
    household_caps: list[Cap] = Field(default_factory=list)
    cooldown_h: Annotated[float, Field(gt=0, le=24 * 90)] = 6.0
    global_budget_per_hour: Annotated[int, Field(ge=0)] = 0  # 0 = unlimited
    suppress_when_ticket_open: bool = True
    channel_fallback: list[Channel] = Field(
        default_factory=lambda: [Channel.PUSH, Channel.SMS, Channel.EMAIL]
    )
    holdout: Holdout = Holdout()
    value_model: ValueModel = ValueModel(
        weights={
            "monthly_charge": 1.0,
            "tenure_months": 0.5,
            "churn_risk": 100.0,
            "household_size": 5.0,
        }
    )
    offers: list[Offer] = Field(default_factory=list)
    # The text of each action kind per language (TMF681 content): {kind: {language: template}};
    # placeholders among MESSAGE_FIELDS; a language without a template uses "en".
    messages: dict[ActionKind, dict[str, str]] = Field(default_factory=lambda: dict(MESSAGES))

    @field_validator("messages")
    @classmethod
    def _known_placeholders(
        cls, value: dict[ActionKind, dict[str, str]]
    ) -> dict[ActionKind, dict[str, str]]:
        for kind, by_language in value.items():
            for language, template in by_language.items():
                try:
                    fields = [
                        f for _, f, _, _ in string.Formatter().parse(template) if f is not None
                    ]
                except ValueError as exc:
                    msg = f"messages.{kind}.{language}: {exc}"
                    raise ValueError(msg) from None
                unknown = sorted(set(fields) - set(MESSAGE_FIELDS))
                if unknown:
                    msg = (
                        f"messages.{kind}.{language}: unknown placeholder {unknown[0]!r}; "
                        f"use {', '.join(sorted(MESSAGE_FIELDS))}"
                    )
                    raise ValueError(msg)
        merged = {kind: dict(by_language) for kind, by_language in MESSAGES.items()}
        for kind, by_language in value.items():
            merged.setdefault(kind, {}).update(by_language)
        return merged

    def message_language(self, kind: ActionKind, language: str) -> str:
        """The language an action's text will be in: the customer's, "en" when the policy has
        no text of that kind in it."""
        return language if self.messages.get(kind, {}).get(language) else "en"

    def message(self, kind: ActionKind, language: str, values: dict[str, str]) -> str:
        """The text of one action for the customer's language ("en" when it has none: see
        :meth:`message_language`)."""
        chosen = self.message_language(kind, language)
        template: str = self.messages.get(kind, {}).get(chosen) or MESSAGES[kind].get("en", "")
        return template.format_map({f: values.get(f, "") for f in MESSAGE_FIELDS})

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                msg = f"rule name {rule.name!r} is used twice"
                raise ValueError(msg)
            seen.add(rule.name)
        ids = [o.id for o in self.offers]
        if len(ids) != len(set(ids)):
            msg = "offer ids must be unique"
            raise ValueError(msg)
        return self

    def best_offer(
        self, kind: str, customer: CustomerContext, risk: float | None
    ) -> tuple[Offer, float] | None:
        """The eligible offer of ``kind`` with the highest expected value, if any is positive."""
        value = self.value_model.value(customer, risk)
        scored = [
            (o, o.expected_value(value))
            for o in self.offers
            if o.kind == kind and o.eligible.admits(customer, risk)
        ]
        scored = [(o, ev) for o, ev in scored if ev > 0]
        return max(scored, key=lambda item: item[1]) if scored else None


DEFAULT_POLICY = PolicyConfig(
    rules=[
        Rule(
            name="cell-incident-area-notice",
            when=When(signal="cell_incident"),
            action="area_notice",
            priority=60,
        ),
        Rule(
            name="open-ticket-callback",
            when=When(
                signal="degradation", min_score=0.9, min_tier=ValueTier.GOLD, open_ticket=True
            ),
            action="care_callback",
            priority=80,
            channel=Channel.VOICE_CALL,
        ),
        Rule(
            name="valuable-degradation-credit",
            when=When(signal="degradation", min_score=0.95, min_tier=ValueTier.GOLD),
            action="service_credit",
            priority=70,
        ),
        Rule(
            name="degradation-apology",
            when=When(signal="degradation", min_score=0.9),
            action="proactive_apology",
            priority=50,
        ),
        Rule(
            name="churn-risk-retention",
            when=When(signal="churn_risk", min_risk=0.6),
            action="retention_offer",
            priority=90,
        ),
    ],
    caps=[Cap(channel="any", max=3, window_h=168), Cap(channel=Channel.SMS, max=2, window_h=24)],
    household_caps=[Cap(channel="any", max=3, window_h=24)],
    global_budget_per_hour=5000,
    offers=[
        Offer(
            id="credit-5",
            kind="service_credit",
            cost=5,
            acceptance=0.9,
            eligible=Eligibility(min_tier=ValueTier.SILVER),
            text="a credit of 5 on your next bill",
        ),
        Offer(
            id="credit-10",
            kind="service_credit",
            cost=10,
            acceptance=0.95,
            eligible=Eligibility(min_tier=ValueTier.GOLD),
            text="a credit of 10 on your next bill",
        ),
        Offer(
            id="retention-discount-20",
            kind="retention_offer",
            cost=40,
            acceptance=0.35,
            eligible=Eligibility(contracts=["month_to_month"], min_risk=0.5),
            text="20 % off for six months",
        ),
        Offer(
            id="retention-upgrade",
            kind="retention_offer",
            cost=25,
            acceptance=0.25,
            eligible=Eligibility(min_tenure_months=12),
            text="a free upgrade to the next plan",
        ),
    ],
    messages={
        "area_notice": {
            "es": "Hay un problema de red en su zona. Nuestros técnicos ya están trabajando "
            "en ello."
        }
    },
)
"""The policy in force when no ``policy.file`` is configured (``config/policy.yaml`` spells it out)."""


def _error_text(exc: ValidationError, data: object, path: str) -> str:
    lines = [f"invalid policy in {path}:"]
    rules = data.get("rules") if isinstance(data, dict) else None
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        if (
            len(loc) >= 2
            and loc[0] == "rules"
            and isinstance(loc[1], int)
            and isinstance(rules, list)
        ):
            index = loc[1]
            name = (
                rules[index].get("name")
                if index < len(rules) and isinstance(rules[index], dict)
                else None
            )
            rest = ".".join(str(p) for p in loc[2:])
            where = f"rules[{index}] {name!r}" + (f".{rest}" if rest else "")
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_policy(path: str | Path) -> PolicyConfig:
    """Read and validate a policy file; :class:`~cxstream.errors.ConfigError` names rule and field."""
    try:
        data = yamlfile.load(Path(path).read_text(encoding="utf-8"), path)
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read policy {path}: {exc}"
        raise ConfigError(msg) from exc
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_error_text(exc, data, str(path))) from exc


class PolicySource:
    """The current policy, re-read when the file changes (checked at most every ``check_s``)."""

    def __init__(
        self, path: str | Path | None, *, default: PolicyConfig | None = None, check_s: float = 2.0
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.check_s = check_s
        self._mtime: float | None = None
        self._checked = 0.0
        if self.path is not None:
            self._mtime = self.path.stat().st_mtime
            self._policy = load_policy(self.path)
        elif default is not None:
            self._policy = default
        else:
            msg = "PolicySource needs a path or a default policy"
            raise ConfigError(msg)

    @property
    def policy(self) -> PolicyConfig:
        """The policy in force, reloading first if the file changed."""
        now = time.monotonic()
        if self.path is not None and now - self._checked >= self.check_s:
            self._checked = now
            self._maybe_reload()
        return self._policy

    def _maybe_reload(self) -> None:
        assert self.path is not None  # noqa: S101 - only called with a path
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            log.error("policy file unreadable, keeping the current policy: %s", exc)
            metrics.POLICY_RELOADS.labels("rejected").inc()
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self._policy = load_policy(self.path)
        except ConfigError as exc:
            log.error("policy change rejected, keeping the current policy:\n%s", exc)
            metrics.POLICY_RELOADS.labels("rejected").inc()
            return
        log.info("policy reloaded from %s (%d rules)", self.path, len(self._policy.rules))
        metrics.POLICY_RELOADS.labels("applied").inc()

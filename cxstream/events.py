"""The records that flow through cxstream, validated where they enter.

Every record that comes from outside (a Kafka message, a CSV row, an HTTP body) is turned into one of
these models in exactly one place, with pydantic doing the checking. What does not validate becomes a
:class:`BadEvent` carrying a reason from a closed set, so metric labels stay bounded and nothing is
dropped silently.

>>> raw = (b'{"event_id": "e1", "event_time": "2026-01-01T00:00:00Z", "subscriber_id": "s1",'
...        b' "cell_id": "c1", "service": "voice", "rtt_ms": 40, "jitter_ms": 2, "loss_pct": 0.1}')
>>> parse_qos(raw).subscriber_id
's1'
>>> parse_qos(b"not json").reason
'not_json'
>>> parse_qos(raw.replace(b'"rtt_ms": 40', b'"rtt_ms": -5')).reason
'out_of_range'
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import operator
import re
import string
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from cxstream.qos import QOS, Measure, QosTable

__all__ = [
    "Action",
    "ActionKind",
    "AffectedSubscriber",
    "AlarmCommand",
    "Alert",
    "BadEvent",
    "BadReason",
    "CellIncident",
    "Channel",
    "ConsentStatus",
    "CustomerContext",
    "CustomerErasure",
    "CustomerUpdate",
    "Outcome",
    "OutcomeKind",
    "QosEvent",
    "QosRecord",
    "RecordKind",
    "Service",
    "SignalKind",
    "ValueTier",
    "bounded_id",
    "decode_qos",
    "invalid_id_positions",
    "key_written_twice",
    "known_time_zone",
    "parse_action",
    "parse_alarm_command",
    "parse_customer",
    "parse_outcome",
    "parse_qos",
    "qos_types",
    "utcnow",
]


class Service(StrEnum):
    """The kind of traffic a QoS measurement describes."""

    VOICE = "voice"
    VIDEO = "video"
    DATA = "data"


class Channel(StrEnum):
    """A channel through which a customer can be contacted."""

    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    VOICE_CALL = "voice_call"


class ConsentStatus(StrEnum):
    """Consent for one channel: only ``granted`` allows outreach."""

    GRANTED = "granted"
    DENIED = "denied"
    REVOKED = "revoked"


class ValueTier(StrEnum):
    """The operator's value segmentation of a customer."""

    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


class OutcomeKind(StrEnum):
    """What eventually happened to a customer."""

    CHURNED = "churned"
    RETAINED = "retained"
    OFFER_ACCEPTED = "offer_accepted"
    COMPLAINT = "complaint"


ActionKind = Literal[
    "noc_alert",
    "proactive_apology",
    "area_notice",
    "service_credit",
    "retention_offer",
    "care_callback",
]
"""What an action does (the policy's rules name one; receivers branch on it)."""

SignalKind = Literal["degradation", "cell_incident", "churn_risk"]
"""What the policy decides on: a subscriber's degradation, a cell incident, a churn risk."""


BadReason = Literal[
    "not_json",
    "missing_field",
    "bad_id",
    "bad_type",
    "out_of_range",
    "stale",
    "future",
    "late",
    "kafka_error",
    "redis_unavailable",
    "step_error",
]
"""Why a record went to the dead-letter topic (a closed set: it is a metric label)."""

_FROZEN = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False, str_max_length=256)

ID_PATTERN = r"^[A-Za-z0-9_:@+#=-]+(\.[A-Za-z0-9_:@+#=-]+)*$"
"""What an identifier may be made of: letters, digits and ``_:@+#=-``, with single dots between
them (no spaces, control characters, slashes or ``..``), so that ids are safe in Kafka keys,
Redis key names, file names and URLs."""

ID_MAX = 128

Id = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


_ID_FULL = re.compile(ID_PATTERN)
_ID_CHARS = (string.ascii_letters + string.digits + "_:@+#=.-").encode()
_RECORD_IDS = operator.attrgetter("event_id", "subscriber_id", "cell_id")


def invalid_id_positions(records: Sequence[Any]) -> list[int]:
    """Positions of the records (decoded by :data:`decode_qos`) whose ids are not identifiers
    (:data:`ID_PATTERN`). The common case, all valid, costs a join and three scans in C.

    >>> r = decode_qos(b'{"event_id": "e1", "event_time": "2026-01-01T00:00:00Z",'
    ...                b' "subscriber_id": "a b", "cell_id": "c1", "service": "voice", "rtt_ms": 4}')
    >>> invalid_id_positions([r])
    [0]
    """
    if not records:
        return []
    joined = " ".join(itertools.chain.from_iterable(map(_RECORD_IDS, records)))
    if (
        joined.count(" ") == 3 * len(records) - 1  # no id holds the separator
        and not joined.encode().translate(None, _ID_CHARS + b" ")  # nothing else left
        and ".." not in joined
        and " ." not in joined
        and ". " not in joined
        and joined[0] != "."
        and joined[-1] != "."
    ):
        return []
    full = _ID_FULL.fullmatch
    return [i for i, ids in enumerate(map(_RECORD_IDS, records)) if not all(full(x) for x in ids)]


def is_id(text: str) -> bool:
    """Whether ``text`` is an identifier (:data:`ID_PATTERN`, at most :data:`ID_MAX` long).

    >>> is_id("sub-1"), is_id("../etc"), is_id("")
    (True, False, False)
    """
    return 0 < len(text) <= ID_MAX and _ID_FULL.fullmatch(text) is not None


def bounded_id(text: str) -> str:
    """An id derived from others (``deg-<subscriber>-<event>``) kept within :data:`ID_MAX`: a
    long one keeps its start and ends in a hash of the whole, so it stays unique and stable.

    >>> bounded_id("deg-s1-e1")
    'deg-s1-e1'
    >>> len(bounded_id("x" * 300))
    128
    """
    if len(text) <= ID_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    return f"{text[: ID_MAX - len(digest) - 3]}-h-{digest}"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def known_time_zone(value: str) -> str:
    """``value`` if it names an IANA time zone (the validator of customers' and the cells' zones)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown IANA time zone {value!r}"
        raise ValueError(msg) from exc
    return value


def _as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    try:
        utc: datetime | None = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved past the calendar by its offset
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        kind, message = "datetime_out_of_range", "time must be from 1970 to 2199, got {value}"
        raise PydanticCustomError(kind, message, {"value": str(value)})
    return utc


def _pydantic_measure(measure: Measure) -> tuple[Any, Any]:
    kind = measure.kind
    ranged: Any = Annotated[kind, Field(ge=measure.ge, le=measure.le)]
    if measure.required:
        return ranged, ...
    if measure.default is None:
        return ranged | None, None
    return ranged, measure.kind(measure.default)


def _msgspec_measure(measure: Measure) -> tuple[str, Any] | tuple[str, Any, Any]:
    kind = measure.kind
    ranged: Any = Annotated[kind, msgspec.Meta(ge=measure.ge, le=measure.le)]
    if measure.required:
        return measure.name, ranged
    if measure.default is None:
        return measure.name, ranged | None, None
    return measure.name, ranged, measure.kind(measure.default)


class _QosIdentity(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="ignore", allow_inf_nan=False, str_max_length=256, strict=True
    )

    event_id: Id
    event_time: AwareDatetime
    subscriber_id: Id
    cell_id: Id
    service: Service

    _utc = field_validator("event_time")(_as_utc)


# The fast decoder checks the ids' length; their characters are checked a whole batch at a time
# (invalid_id_positions): a pattern per string would triple the decoder's cost.
_StructId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)]
_STRUCT_IDENTITY: list[tuple[str, Any]] = [
    ("event_id", _StructId),
    ("event_time", Annotated[datetime, msgspec.Meta(tz=True)]),
    ("subscriber_id", _StructId),
    ("cell_id", _StructId),
    ("service", Service),
]


def qos_types(table: QosTable) -> tuple[type[BaseModel], type[msgspec.Struct]]:
    """The validated model and the fast decoder's struct for a table of measures.

    The identity fields (event and subscriber ids, time, cell, service) are the same for every
    table; the measured fields, their ranges and defaults come from ``table``.
    """
    fields: dict[str, Any] = {m.name: _pydantic_measure(m) for m in table.measures}
    model = create_model("QosMeasurement", __base__=_QosIdentity, **fields)
    record = msgspec.defstruct(
        "QosMeasurementRecord",
        [*_STRUCT_IDENTITY, *(_msgspec_measure(m) for m in table.measures)],
        gc=False,
    )
    return model, record


_QOS_MODEL, _QOS_STRUCT = qos_types(QOS)


class QosEvent(_QOS_MODEL):  # type: ignore[misc,valid-type]
    """One network quality-of-service measurement for one subscriber session.

    The measured fields are those of :data:`cxstream.qos.MEASURES`; radio fields are optional: not
    every probe sees the radio layer. Validation is strict: a boolean or a numeric string where a
    number is expected is a ``bad_type``, not a number (probes that send them send garbage).
    """


class QosRecord(_QOS_STRUCT, gc=False):  # type: ignore[misc,valid-type,call-arg]
    """:class:`QosEvent` as a msgspec struct: the hot path's decoder (:func:`decode_qos`).

    The same fields, ranges and strictness (a boolean or a numeric string is not a number; no
    NaN or infinity; an aware time), checked while the JSON is parsed, in one C call and without
    pydantic's per-field work: 1.2-1.4 us per event against 5.4-5.8 us (measured on the
    simulator's events). A property test keeps the two in step; what this rejects goes through
    :func:`parse_qos` for the exact reason. ``event_time`` keeps the offset it was sent with
    (its ``timestamp()`` is exact); :class:`QosEvent` converts it to UTC. One known difference:
    beyond microseconds this rounds the fraction of a second and pydantic truncates it.
    """


decode_qos = msgspec.json.Decoder(QosRecord).decode
"""One message value to a :class:`QosRecord` (raises ``msgspec.DecodeError`` if it is not one)."""


class CustomerContext(BaseModel):
    """What the operator knows about a subscriber, held in Redis and joined to every event."""

    model_config = _FROZEN

    subscriber_id: Id
    account_id: Id | None = None  # household / account: contact caps apply to it too
    household_size: Annotated[int, Field(ge=1, le=1_000)] = 1
    plan: Annotated[str, Field(max_length=64)] = "standard"
    plan_mbps: Annotated[float, Field(gt=0, le=100_000)] = 50.0
    monthly_charge: Annotated[float, Field(ge=0, le=100_000)] = 0.0
    tenure_months: Annotated[int, Field(ge=0, le=1_200)] = 0
    contract: Literal["month_to_month", "one_year", "two_year"] = "month_to_month"
    payment_method: Annotated[str, Field(max_length=64)] | None = None
    value_tier: ValueTier = ValueTier.SILVER
    consent: dict[Channel, ConsentStatus] = Field(default_factory=dict)
    consent_updated: AwareDatetime | None = None
    preferred_channel: Channel = Channel.SMS
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    language: Annotated[str, Field(min_length=2, max_length=16)] = "en"
    open_tickets: Annotated[int, Field(ge=0, le=1_000)] = 0
    updated_at: AwareDatetime | None = None  # when the operator's system made this update

    _utc_consent = field_validator("consent_updated", "updated_at")(_as_utc_or_none)

    _known_zone = field_validator("timezone")(known_time_zone)

    def may_contact(self, channel: Channel) -> bool:
        """Whether consent for ``channel`` is explicitly granted (unknown means no)."""
        return self.consent.get(channel) is ConsentStatus.GRANTED


@dataclass(frozen=True, slots=True)
class CustomerUpdate:
    """One message of the customers topic: a full profile or a partial patch.

    ``fields`` are the profile fields the message carried; only those change the stored profile
    (:meth:`cxstream.context.ContextStore.merge_many`), each only if the update is not older than
    the one that last set it. ``raw`` keeps the message's bytes for its dead letter."""

    customer: CustomerContext
    fields: frozenset[str]
    raw: bytes
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class CustomerErasure:
    """A tombstone on the customers topic (key: the subscriber id, no value): the customer was
    erased (``cxstream erase``); whatever the flow holds about them goes."""

    subscriber_id: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class Outcome(BaseModel):
    """A late-arriving fact about a customer: churned, retained, accepted an offer, complained."""

    model_config = _FROZEN

    subscriber_id: Id
    kind: OutcomeKind
    time: AwareDatetime
    action_id: Id | None = None

    _utc = field_validator("time")(_as_utc)


class Alert(BaseModel):
    """A detected degradation, for the NOC (alerts topic) and as the trigger of actions."""

    model_config = _FROZEN

    alert_id: Id
    kind: Literal["degradation", "cell_incident"]
    severity: Literal["minor", "major", "critical"]
    subscriber_id: Id | None
    cell_id: Id
    score: float
    experience: float  # of the triggering event, 0-100
    event_time: AwareDatetime
    detected_at: AwareDatetime
    why: dict[str, Any] = Field(default_factory=dict)
    value_tier: ValueTier | None = None
    context_stale: bool = False
    experience_index: float | None = None  # the subscriber's rolling index, 0-100
    degradations_7d: float | None = None  # episodes in about the last week (7-day half-life)
    explained_by: Id | None = None  # the cell incident that explains this degradation
    late: bool = False  # raised by an event later than flow.allowed_lateness_s


class AffectedSubscriber(BaseModel):
    """A subscriber caught in a cell incident."""

    model_config = _FROZEN

    subscriber_id: Id
    value_tier: ValueTier | None = None


class CellIncident(BaseModel):
    """One degraded cell, for the NOC: opened, updated as it grows, resolved."""

    model_config = _FROZEN

    incident_id: Id
    kind: Literal["cell_incident"] = "cell_incident"
    cell_id: Id
    # what opened it: a share of degraded subscribers, a cell KPI out of its normal, or the
    # cell's traffic collapsing (a silent outage)
    cause: Literal["degraded_share", "kpi_anomaly", "outage"] = "degraded_share"
    state: Literal["open", "updated", "resolved"]
    severity: Literal["minor", "major", "critical"]
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    affected: list[AffectedSubscriber]
    new_affected: list[Id] = Field(default_factory=list)  # caught in it since the last update
    active_subscribers: int
    share: float
    experience: float
    why: dict[str, Any] = Field(default_factory=dict)
    # who resolved it: an operator's clear from the dashboard (None: the cell recovered)
    resolved_by: str | None = None


class _AlarmedObjectIn(BaseModel):
    model_config = _FROZEN
    id: Id


class _AlarmChangeIn(BaseModel):
    """The ``Alarm_Update`` fields of an operator's change that the flow reads."""

    model_config = _FROZEN
    id: Id
    alarmedObject: _AlarmedObjectIn
    state: str | None = None
    ackState: str | None = None
    ackUserId: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    clearUserId: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    alarmChangedTime: AwareDatetime


class _AlarmEventPayloadIn(BaseModel):
    model_config = _FROZEN
    alarm: _AlarmChangeIn


class _AlarmEventIn(BaseModel):
    """A TMF642 alarm change event as the dashboard publishes it on the alarm-updates topic."""

    model_config = _FROZEN
    eventType: Literal["AlarmStateChangeEvent", "AlarmAttributeValueChangeEvent"]
    event: _AlarmEventPayloadIn


class AlarmCommand(BaseModel):
    """An operator's command on a cell incident (from the alarm-updates topic): ``resolve`` closes
    it in demarcation; ``ack`` is recorded. ``user`` is who issued it."""

    model_config = _FROZEN

    incident_id: Id
    cell_id: Id
    verb: Literal["ack", "resolve"]
    user: Annotated[str, Field(min_length=1, max_length=64)]
    at: AwareDatetime


class Action(BaseModel):
    """An outreach decided by the policy; ``action_id`` is its idempotency key."""

    model_config = _FROZEN

    action_id: Id
    kind: ActionKind
    subscriber_id: Id
    channel: Channel
    reason: str
    alert_id: Id
    event_time: AwareDatetime
    created_at: AwareDatetime
    # the language of ``content``: the customer's, "en" where the policy has no text in it
    language: str = "en"
    customer_language: str | None = None  # the customer's own, for a sender that translates
    value_tier: ValueTier | None = None
    priority: int = 50
    rule: str | None = None  # the policy rule that chose it
    customer_value: float | None = None  # from the policy's value model
    offer: dict[str, Any] | None = None  # the catalogue offer, for credits and retention
    send_at: AwareDatetime | None = None  # set when quiet hours deferred it
    details: dict[str, Any] = Field(default_factory=dict)
    content: str | None = None  # the message, in ``language`` (policy messages)


RecordKind = Literal["qos", "customer", "outcome", "action", "command"]
"""Which input a record came from (the actions topic is the webhook deliveries' input; commands
are the operators' acknowledgements and clears on the alarm-updates topic)."""


DEAD_LETTER_RAW_MAX = 64 * 1024
"""Bytes of a refused record kept in its dead letter (base64 makes it a third larger)."""


class BadEvent(BaseModel):
    """A record that could not be processed, as written to the dead-letter topic."""

    model_config = ConfigDict(frozen=True)

    reason: BadReason
    detail: str
    raw_b64: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    kind: RecordKind = "qos"

    @classmethod
    def of(
        cls,
        reason: BadReason,
        detail: str,
        raw: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        kind: RecordKind = "qos",
    ) -> BadEvent:
        """Build a dead letter, keeping the raw bytes (base64) so nothing is lost; a record over
        :data:`DEAD_LETTER_RAW_MAX` bytes keeps its start, its size and its SHA-256."""
        raw = raw or b""
        extra = ""
        if len(raw) > DEAD_LETTER_RAW_MAX:
            digest = hashlib.sha256(raw).hexdigest()
            extra = (
                f" (record of {len(raw)} bytes, sha256 {digest}; first {DEAD_LETTER_RAW_MAX} kept)"
            )
            raw = raw[:DEAD_LETTER_RAW_MAX]
        return cls(
            reason=reason,
            detail=detail[:500] + extra,
            raw_b64=base64.b64encode(raw).decode("ascii"),
            topic=topic,
            partition=partition,
            offset=offset,
            kind=kind,
        )


_M = TypeVar("_M", bound=BaseModel)

_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "datetime_out_of_range",
    }
)


def classify_error(exc: ValidationError) -> tuple[BadReason, str]:
    """Map a pydantic error to a dead-letter reason and a short detail naming the field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    kind = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "<record>"
    detail = f"{where}: {first['msg']}"
    if kind in ("json_invalid", "json_type"):
        return "not_json", detail
    if kind == "missing":
        return "missing_field", detail
    if kind == "string_pattern_mismatch":
        return "bad_id", f"{where}: not an identifier (letters, digits, _:@+#=- and single dots)"
    if kind in _RANGE_ERRORS or kind.startswith("string_too"):
        return "out_of_range", detail
    return "bad_type", detail


def _parse_record(
    model: type[_M],
    kind: RecordKind,
    raw: bytes | None,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    *,
    unique_keys: bool = False,
) -> _M | BadEvent:
    """``raw`` validated as ``model``, or the dead letter that says why not. With
    ``unique_keys``, a key written twice in one object is ``not_json``: JSON leaves open which
    value holds, and a reader keeping the last would act on a value the message does not
    clearly give (a consent, a churn label, an alarm's state)."""
    if not raw:
        reason: BadReason = "not_json"
        detail = "empty message"
    else:
        try:
            record = model.model_validate_json(raw)
        except ValidationError as exc:
            reason, detail = classify_error(exc)
        else:
            twice = key_written_twice(raw) if unique_keys else None
            if twice is None:
                return record
            reason = "not_json"
            detail = f"{twice}: key written twice in one object (which value holds is unknown)"
    return BadEvent.of(
        reason, detail, raw, topic=topic, partition=partition, offset=offset, kind=kind
    )


def parse_qos(
    raw: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    now: datetime | None = None,
    max_age: timedelta | None = None,
    max_ahead: timedelta | None = None,
    stream_time: datetime | None = None,
) -> QosEvent | BadEvent:
    """Turn one message value into a :class:`QosEvent` or a :class:`BadEvent` with the reason.

    ``max_age`` before ``stream_time`` (the input partition's watermark; ``now`` if not given)
    and ``max_ahead`` after ``now`` send events too far in the past or future to the dead-letter
    topic as ``stale`` or ``future``.
    """
    event = _parse_record(QosEvent, "qos", raw, topic, partition, offset)
    if now is None or isinstance(event, BadEvent):
        return event
    reason: BadReason | None = None
    if max_age is not None and event.event_time < (stream_time or now) - max_age:
        reason, detail = "stale", f"event_time older than {max_age}"
    elif max_ahead is not None and event.event_time > now + max_ahead:
        reason, detail = "future", f"event_time more than {max_ahead} ahead"
    if reason is not None:
        return BadEvent.of(reason, detail, raw, topic=topic, partition=partition, offset=offset)
    return event


def parse_customer(
    raw: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> CustomerContext | BadEvent:
    """Turn one customer-update message into a :class:`CustomerContext` or a :class:`BadEvent`
    (among them, one that writes a key twice: ``"consent": {"sms": "denied", "sms": "granted"}``
    gives no consent)."""
    return _parse_record(
        CustomerContext, "customer", raw, topic, partition, offset, unique_keys=True
    )


@dataclass(frozen=True)
class _Twice:
    path: str  # the key written twice, with the keys of the objects holding it


def key_written_twice(raw: bytes | str) -> str | None:
    """The first key written twice in one object of a JSON document (its path), or None.

    >>> key_written_twice(b'{"id": "a", "consent": {"sms": "denied", "sms": "granted"}}')
    'consent.sms'
    >>> key_written_twice(b'{"a": [{"x": 1, "x": 2}], "a2": 3}')
    'a[].x'
    >>> key_written_twice(b'{"a": {"x": 1}, "b": {"x": 2}}') is None
    True
    """

    def found_in(value: Any) -> _Twice | None:
        if isinstance(value, list):
            return next((f for v in value if (f := found_in(v)) is not None), None)
        return value if isinstance(value, _Twice) else None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any] | _Twice:
        out: dict[str, Any] = {}
        for key, value in items:
            inner = found_in(value)
            if inner is not None:  # found below: named through this object's key
                joint = "[]." if isinstance(value, list) else "."
                return _Twice(f"{key}{joint}{inner.path}")
            if key in out:
                return _Twice(key)
            out[key] = value
        return out

    try:
        whole = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # the validator read it already: not expected here
        return None
    twice = found_in(whole)
    return None if twice is None else twice.path


def parse_outcome(
    raw: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> Outcome | BadEvent:
    """Turn one outcome message into an :class:`Outcome` or a :class:`BadEvent`."""
    return _parse_record(Outcome, "outcome", raw, topic, partition, offset, unique_keys=True)


def parse_alarm_command(
    raw: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> AlarmCommand | BadEvent:
    """Turn one TMF642 event of the alarm-updates topic into an :class:`AlarmCommand`: a clear
    (``state: cleared``, by ``clearUserId``) resolves, an acknowledgement (``ackState:
    acknowledged``, by ``ackUserId``) acknowledges; anything else is a :class:`BadEvent`."""
    event = _parse_record(_AlarmEventIn, "command", raw, topic, partition, offset, unique_keys=True)
    if isinstance(event, BadEvent):
        return event
    alarm = event.event.alarm
    verb: Literal["ack", "resolve"] | None = None
    user: str | None = None
    if alarm.state == "cleared":
        verb, user = "resolve", alarm.clearUserId
    elif alarm.ackState == "acknowledged":
        verb, user = "ack", alarm.ackUserId
    if verb is None or user is None:
        detail = "neither a clear with clearUserId nor an acknowledgement with ackUserId"
        return BadEvent.of(
            "missing_field", detail, raw, topic=topic, partition=partition, offset=offset,
            kind="command",
        )  # fmt: skip
    return AlarmCommand(
        incident_id=alarm.id,
        cell_id=alarm.alarmedObject.id,
        verb=verb,
        user=user,
        at=alarm.alarmChangedTime,
    )


def parse_action(
    raw: bytes | None,
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> Action | BadEvent:
    """Turn one record of the actions topic into an :class:`Action` or a :class:`BadEvent`."""
    return _parse_record(Action, "action", raw, topic, partition, offset)

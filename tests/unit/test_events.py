from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from cxstream.events import (
    BadEvent,
    Channel,
    ConsentStatus,
    CustomerContext,
    Outcome,
    QosEvent,
    parse_customer,
    parse_outcome,
    parse_qos,
)

GOOD = {
    "event_id": "e-1",
    "event_time": "2026-03-01T12:00:00+01:00",
    "subscriber_id": "sub-1",
    "cell_id": "cell-1",
    "service": "video",
    "rtt_ms": 42.5,
    "jitter_ms": 3.0,
    "loss_pct": 0.2,
    "throughput_kbps": 5200.0,
    "rsrp_dbm": -95.0,
    "rsrq_db": -11.0,
    "sinr_db": 12.0,
}


def raw(**changes):
    record = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in record.items() if v is not ...})


def test_valid_event_is_parsed_and_event_time_converted_to_utc():
    event = parse_qos(raw(), topic="q", partition=1, offset=7)
    assert isinstance(event, QosEvent)
    assert event.event_time == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert event.service == "video"
    assert event.throughput_kbps == 5200.0


def test_radio_fields_are_optional():
    event = parse_qos(raw(rsrp_dbm=..., rsrq_db=..., sinr_db=..., throughput_kbps=...))
    assert isinstance(event, QosEvent)
    assert event.rsrp_dbm is None


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    assert isinstance(parse_qos(raw(firmware="1.2")), QosEvent)


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b"", "not_json", "empty"),
        (b"{not json", "not_json", ""),
        (b"[1, 2]", "bad_type", "<record>"),
        (raw(subscriber_id=...), "missing_field", "subscriber_id"),
        (raw(rtt_ms="fast"), "bad_type", "rtt_ms"),
        (raw(service="hologram"), "bad_type", "service"),
        (raw(loss_pct=250), "out_of_range", "loss_pct"),
        (raw(rtt_ms=-1), "out_of_range", "rtt_ms"),
        (raw(rsrp_dbm=-20), "out_of_range", "rsrp_dbm"),
        (raw(event_time="2026-03-01T12:00:00"), "bad_type", "event_time"),
        (raw(subscriber_id=""), "out_of_range", "subscriber_id"),
        (b'{"event_id": "e", "rtt_ms": NaN}', "missing_field", ""),
    ],
)
def test_bad_records_become_dead_letters_with_a_reason(payload, reason, field):
    bad = parse_qos(payload, topic="cx.qos", partition=3, offset=99)
    assert isinstance(bad, BadEvent)
    assert bad.reason == reason
    assert field in bad.detail
    assert (bad.topic, bad.partition, bad.offset) == ("cx.qos", 3, 99)
    assert base64.b64decode(bad.raw_b64) == payload  # nothing lost


def test_nan_and_infinity_are_out_of_range():
    bad = parse_qos(raw().replace(b"42.5", b"NaN"))
    assert isinstance(bad, BadEvent)
    assert bad.reason == "out_of_range"


def test_events_too_old_or_too_far_ahead_are_dead_lettered():
    now = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    window = {"now": now, "max_age": timedelta(days=1), "max_ahead": timedelta(minutes=5)}
    assert isinstance(parse_qos(raw(), **window), QosEvent)
    stale = parse_qos(raw(event_time="2026-02-01T00:00:00Z"), **window)
    future = parse_qos(raw(event_time="2026-03-01T11:06:00Z"), **window)
    assert (stale.reason, future.reason) == ("stale", "future")


def test_customer_context_defaults_and_consent():
    customer = parse_customer(
        b'{"subscriber_id": "s1", "consent": {"sms": "granted", "email": "revoked"}}'
    )
    assert isinstance(customer, CustomerContext)
    assert customer.may_contact(Channel.SMS)
    assert not customer.may_contact(Channel.EMAIL)
    assert not customer.may_contact(Channel.PUSH)  # unknown consent means no
    assert customer.consent[Channel.EMAIL] is ConsentStatus.REVOKED


def test_customer_with_unknown_time_zone_is_rejected_naming_the_field():
    bad = parse_customer(b'{"subscriber_id": "s1", "timezone": "Mars/Olympus"}')
    assert isinstance(bad, BadEvent)
    assert bad.kind == "customer"
    assert "timezone" in bad.detail


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (b'{"subscriber_id": "s1", "consent": {"sms": "denied", "sms": "granted"}}', "consent.sms"),
        (b'{"subscriber_id": "s1", "plan": "a", "monthly_charge": 9, "plan": "b"}', "plan"),
    ],
)
def test_a_customer_update_with_a_key_written_twice_is_dead_lettered(payload, path):
    # JSON leaves it open which value holds: the consent is not taken from the last one
    bad = parse_customer(payload, topic="cx.customers", partition=0, offset=7)
    assert isinstance(bad, BadEvent)
    assert (bad.reason, bad.kind, bad.offset) == ("not_json", "customer", 7)
    assert bad.detail.startswith(f"{path}: key written twice")
    assert base64.b64decode(bad.raw_b64) == payload  # kept whole for correction
    same_key_apart = b'{"subscriber_id": "s1", "consent": {"sms": "denied"}, "sms": 1}'
    assert isinstance(parse_customer(same_key_apart), CustomerContext)
    # the same for the other low-rate inputs that decide something: a churn label
    label = b'{"subscriber_id": "s1", "kind": "retained", "time": "2026-01-01T00:00:00Z", "kind": "churned"}'
    bad = parse_outcome(label)
    assert isinstance(bad, BadEvent) and bad.kind == "outcome"
    assert bad.detail.startswith("kind: key written twice")


def test_outcome_parsing():
    outcome = parse_outcome(
        b'{"subscriber_id": "s1", "kind": "churned", "time": "2026-01-01T00:00:00Z"}'
    )
    assert isinstance(outcome, Outcome)
    bad = parse_outcome(b'{"subscriber_id": "s1", "kind": "left", "time": "2026-01-01T00:00:00Z"}')
    assert isinstance(bad, BadEvent)
    assert bad.kind == "outcome"

"""Poison never stops the stream: whatever arrives on an input topic ends processed or
dead-lettered with a reason, and no step raises (Hypothesis drives every input topic)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxstream.batches import RawBatch, SourceMessage
from cxstream.detectors.cells import CellMonitor, CellSettings
from cxstream.events import ID_MAX, BadEvent, bounded_id
from cxstream.steps import Detect
from cxstream.steps.common import RedisTrouble, isolating
from cxstream.steps.ingest import parse_action_batch, parse_customer_batch, parse_outcome_batch
from tests.unit.steps.test_steps import KEYS, NOON, SETTINGS, ingest_step

HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
ids = st.text(max_size=140) | st.from_regex(r"\A[A-Za-z0-9_:@+#=.-]{1,140}\Z")
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=offsets
    ).map(lambda d: d.isoformat()),
    st.datetimes(
        min_value=datetime(2026, 5, 4, 11), max_value=datetime(2026, 5, 4, 12), timezones=offsets
    ).map(lambda d: d.isoformat()),
    st.text(max_size=30),
)
qos_records = st.fixed_dictionaries(
    {"event_id": ids, "event_time": times, "subscriber_id": ids, "cell_id": ids},
    optional={
        "service": st.sampled_from(["voice", "video", "data", "fax"]),
        "rtt_ms": st.floats(0, 60_000) | json_values,
        "loss_pct": st.floats(0, 100),
        "ignored": json_values,
    },
).map(lambda r: {"service": "voice", "rtt_ms": 900.0, **r})
outcome_records = st.fixed_dictionaries(
    {"subscriber_id": ids, "kind": st.sampled_from(["churned", "retained", "x"]), "time": times},
    optional={"action_id": ids | json_values},
)
customer_records = st.fixed_dictionaries(
    {"subscriber_id": ids},
    optional={
        "consent": st.dictionaries(st.sampled_from(["sms", "email", "fax"]), json_values),
        "timezone": st.sampled_from(["UTC", "America/New_York", "Mars/Olympus", ""]),
        "open_tickets": json_values,
        "consent_updated": times,
    },
)


def deep(n: int) -> bytes:
    return b'{"subscriber_id":"s1","x":' + b"[" * n + b"]" * n + b"}"


def payloads(records: st.SearchStrategy[dict]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        records.map(lambda r: json.dumps(r).encode()),
        st.integers(100, 3000).map(deep),
    )


def messages(values: list[bytes], topic: str) -> list[SourceMessage]:
    return [SourceMessage(v, topic, 0, i) for i, v in enumerate(values)]


def detect_step(ingest):
    return Detect(
        SETTINGS, ingest.context, clock=lambda: NOON, shard_keys=KEYS, trouble=RedisTrouble()
    )


@HYPOTHESIS
@given(st.lists(payloads(qos_records), min_size=1, max_size=12))
def test_every_qos_record_is_accounted_for_and_no_step_raises(values):
    ingest = ingest_step()
    detect = detect_step(ingest)
    out = ingest.ingest([RawBatch("cx.qos", 0, values, list(range(len(values))))])
    dead = [o for o in out if isinstance(o, BadEvent)]
    batches = [o[1] for o in out if not isinstance(o, BadEvent)]
    assert len(dead) + sum(len(b) for b in batches) == len(values)
    assert all(d.reason and d.detail and d.offset is not None for d in dead)
    for cell_batch in detect.detect_shard(detect.new_table(), batches) if batches else []:
        for candidate in cell_batch[1].candidates.values():
            assert len(candidate.alert.alert_id) <= ID_MAX


@HYPOTHESIS
@given(
    st.lists(payloads(customer_records), max_size=8),
    st.lists(payloads(outcome_records), max_size=8),
    st.lists(payloads(st.just({"action_id": "a"})), max_size=8),
)
def test_every_side_input_record_is_accounted_for(customers, outcomes, actions):
    for values, parse, topic in (
        (customers, parse_customer_batch, "cx.customers"),
        (outcomes, parse_outcome_batch, "cx.outcomes"),
        (actions, parse_action_batch, "cx.actions"),
    ):
        out = parse(messages(values, topic))
        assert len(out) == len(values)
        for item in out:
            if isinstance(item, BadEvent):
                assert item.reason and item.detail and item.topic == topic


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "1900-01-01T00:00:00Z"]
)
def test_times_beyond_the_calendar_are_out_of_range(when):
    (bad,) = parse_outcome_batch(
        messages([orjson.dumps({"subscriber_id": "s1", "kind": "churned", "time": when})], "o")
    )
    assert isinstance(bad, BadEvent) and bad.reason == "out_of_range"
    record = {"event_id": "e", "event_time": when, "subscriber_id": "s", "cell_id": "c",
              "service": "voice", "rtt_ms": 1.0}  # fmt: skip
    (qos_bad,) = ingest_step().ingest([RawBatch("q", 0, [orjson.dumps(record)], [0])])
    assert isinstance(qos_bad, BadEvent) and qos_bad.reason in ("out_of_range", "stale")


@pytest.mark.parametrize("sub", ["nul\x00", "line\nbreak", "../etc/passwd", "a b", "a..b", "a/b"])
def test_identifiers_are_checked_at_the_edge(sub):
    record = {"event_id": "e", "event_time": NOON.isoformat(), "subscriber_id": sub,
              "cell_id": "c", "service": "voice", "rtt_ms": 1.0}  # fmt: skip
    (bad,) = ingest_step().ingest([RawBatch("q", 0, [orjson.dumps(record)], [0])])
    assert isinstance(bad, BadEvent) and bad.reason == "bad_id"
    assert "subscriber_id" in bad.detail


def test_a_huge_record_is_dead_lettered_bounded_with_its_size_and_hash():
    value = random.Random(1).randbytes(1_000_000)
    (bad,) = ingest_step().ingest([RawBatch("q", 0, [value], [0])])
    assert len(bad.model_dump_json()) < 100_000
    assert "1000000 bytes" in bad.detail and "sha256" in bad.detail


def test_deep_json_is_a_reason_not_a_crash():
    (bad,) = ingest_step().ingest([RawBatch("q", 0, [deep(1000)], [0])])
    assert bad.reason == "not_json" and "recursion" in bad.detail


def test_long_ids_give_bounded_derived_ids():
    sub, event = "s" * 120, "e" * 103
    record = {"event_id": event, "event_time": NOON.isoformat(), "subscriber_id": sub,
              "cell_id": "c" * ID_MAX, "service": "voice", "rtt_ms": 900.0, "loss_pct": 30.0}  # fmt: skip
    ingest = ingest_step()
    (batch,) = [o[1] for o in ingest.ingest([RawBatch("q", 0, [orjson.dumps(record)], [0])])]
    detect = detect_step(ingest)
    (cell_batch,) = detect.detect_shard(detect.new_table(), [batch])
    (candidate,) = cell_batch[1].candidates.values()
    assert len(candidate.alert.alert_id) == ID_MAX
    assert candidate.alert.alert_id == bounded_id(f"deg-{sub}-{event}")  # stable: idempotent
    assert bounded_id(f"deg-{sub}-{event}") != bounded_id(f"deg-{sub}-{event}x")


def test_a_cell_incident_of_a_cell_with_a_long_id_has_a_bounded_id():
    monitor: CellMonitor[str] = CellMonitor(
        "c" * ID_MAX, CellSettings.from_mapping(SETTINGS.cells.model_dump())
    )
    t0 = NOON.timestamp()
    updates = []
    for k in range(40):
        for i in range(10):
            bad = k >= 20
            changes, _ = monitor.observe(
                t0 + k, f"s{i}", degraded=bad, experience=10.0 if bad else 90.0
            )
            updates += changes
    assert updates, "the outage was not detected"
    assert all(len(u.incident_id) <= ID_MAX for u in updates if u.incident_id)


def test_a_step_that_raises_on_one_record_dead_letters_it_and_keeps_the_rest():
    def fragile(items):
        out = []
        for item in items:
            for m in item.messages() if isinstance(item, RawBatch) else [item]:
                if m.value == b"boom":
                    raise OverflowError("date value out of range")
                out.append(m.value)
        return out

    run = isolating("ingest", "qos", fragile)
    out = run([RawBatch("cx.qos", 3, [b"a", b"boom", b"c"], [10, 11, 12])])
    assert out[0] == b"a" and out[2] == b"c"
    bad = out[1]
    assert isinstance(bad, BadEvent) and bad.reason == "step_error"
    assert bad.detail == "ingest: OverflowError: date value out of range"
    assert (bad.topic, bad.partition, bad.offset) == ("cx.qos", 3, 11)
    assert run([RawBatch("cx.qos", 3, [b"a"], [1])]) == [b"a"]

"""Property-based tests: whatever arrives from outside ends as a valid record, a dead letter with a
reason, or a clear validation error — never a crash."""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cxstream.actions.rules import load_policy
from cxstream.context import ContextStore
from cxstream.customers import read_customers
from cxstream.errors import ConfigError
from cxstream.events import (
    EARLIEST,
    LATEST,
    BadEvent,
    BadReason,
    CustomerContext,
    Outcome,
    QosEvent,
    QosRecord,
    decode_qos,
    invalid_id_positions,
    parse_customer,
    parse_outcome,
    parse_qos,
)
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from tests.fakes import FakeRedis

REASONS = set(get_args(BadReason)) - {"redis_unavailable", "step_error"}  # not from parsers
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
timestamps = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
    st.text(max_size=30),
    st.integers(),
    st.none(),
)
qos_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=200) | st.integers(),
        "event_time": timestamps,
        "subscriber_id": st.text(max_size=200) | st.none(),
        "cell_id": st.text(max_size=20),
        "service": st.sampled_from(["voice", "video", "data", "fax", "", "VOICE"]) | st.integers(),
        "rtt_ms": numbers,
        "jitter_ms": numbers,
        "loss_pct": numbers,
        "throughput_kbps": numbers,
        "rsrp_dbm": numbers,
        "rsrq_db": numbers,
        "sinr_db": numbers,
        "stalls": numbers,
    },
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(result, model):
    if isinstance(result, BadEvent):
        assert result.reason in REASONS
        assert result.detail
        base64.b64decode(result.raw_b64)  # the raw bytes are kept
    else:
        assert isinstance(result, model)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parsers(raw):
    check(parse_qos(raw), QosEvent)
    check(parse_customer(raw), CustomerContext)
    check(parse_outcome(raw), Outcome)


@SETTINGS
@given(json_values)
def test_any_json_never_crashes_the_parsers(value):
    raw = json.dumps(value).encode()  # big integers, NaN and Infinity literals included
    check(parse_qos(raw), QosEvent)
    check(parse_customer(raw), CustomerContext)
    check(parse_outcome(raw), Outcome)


@SETTINGS
@given(qos_like)
def test_qos_like_records_are_valid_or_dead_lettered_and_valid_ones_are_sane(record):
    raw = json.dumps(record).encode()
    result = parse_qos(raw, now=NOW, max_age=timedelta(days=7), max_ahead=timedelta(minutes=5))
    check(result, QosEvent)
    if isinstance(result, QosEvent):
        assert result.event_time.tzinfo is not None
        assert NOW - timedelta(days=7) <= result.event_time <= NOW + timedelta(minutes=5)
        for name in ("rtt_ms", "jitter_ms", "loss_pct"):
            assert math.isfinite(getattr(result, name))


@SETTINGS
@given(
    st.lists(st.binary(max_size=80) | qos_like.map(lambda r: json.dumps(r).encode()), max_size=30)
)
def test_duplicate_and_mixed_batches_keep_every_record(raws):
    class Msg:
        def __init__(self, value, offset):
            self.value, self.topic, self.partition, self.offset = value, "q", 0, offset

    batch = [Msg(r, i) for i, r in enumerate(raws + raws)]  # every record twice: duplicate ids
    pipeline = Pipeline(
        load_settings(), context=ContextStore(FakeRedis()), claims=None, clock=lambda: NOW
    )  # type: ignore[arg-type]
    out = pipeline.ingest(batch)
    valid = sum(len(item[1]) for item in out if isinstance(item, tuple))
    dead = [item for item in out if not isinstance(item, tuple)]
    assert valid + len(dead) == len(batch)  # every record ends valid or dead-lettered
    # the fast validator and the model agree on every record
    from cxstream.events import BadEvent, parse_qos

    slow = [
        parse_qos(m.value, now=NOW, max_age=pipeline._max_age, max_ahead=pipeline._max_ahead)
        for m in batch
    ]
    assert len(dead) == sum(isinstance(r, BadEvent) for r in slow)


@SETTINGS
@given(st.lists(st.lists(st.text(max_size=12), max_size=6), max_size=8))
def test_csv_loader_reports_bad_rows_and_never_crashes(rows):
    header = "subscriber_id,monthly_charge,tenure_months,timezone,consent_sms\n"
    text = header + "\n".join(
        ",".join(f'"{c}"' if "," in c else c.replace("\n", " ") for c in row) for row in rows
    )
    result = read_customers(io.StringIO(text))
    assert len(result.customers) + len(result.rejected) <= len(rows) + 1
    for line, reason in result.rejected:
        assert line >= 1
        assert reason


@pytest.mark.parametrize("load", [load_policy, load_settings], ids=["policy", "settings"])
@SETTINGS
@given(value=json_values)
def test_config_files_are_valid_or_a_config_error(load, value):
    path = _tmp_file(json.dumps(value).encode())
    try:
        load(path)
    except ConfigError as exc:
        assert str(exc)  # noqa: PT017 - either outcome is fine; an error must say why


def _tmp_file(content: bytes):
    import tempfile
    from pathlib import Path

    handle = tempfile.NamedTemporaryFile(suffix=".yaml", delete=False)  # noqa: SIM115
    handle.write(content)
    handle.close()
    return Path(handle.name)


@pytest.mark.parametrize(
    "raw", [b'{"rtt_ms": 1e999}', b"\xff\xfe", b'{"event_time": "99999-01-01"}']
)
def test_known_nasty_inputs(raw):
    check(parse_qos(raw), QosEvent)


def _agree(raw: bytes) -> None:
    """What the hot path's decoder accepts, the model accepts with the same values.

    The decoder may reject more (pydantic also takes a time without seconds, or epoch seconds as
    a string): such an event takes the slow path and is kept (see the batch test above)."""
    try:
        model: QosEvent | None = QosEvent.model_validate_json(raw)
    except ValidationError:
        model = None
    try:
        fast: QosRecord | None = decode_qos(raw)
    except (msgspec.DecodeError, RecursionError):
        fast = None
    # the hot path also checks the ids' characters a batch at a time, and keeps only times
    # within flow.max_event_age_s / max_event_ahead_s (well inside 1970-2199)
    if fast is None or invalid_id_positions([fast]) or not EARLIEST <= fast.event_time < LATEST:
        return
    assert model is not None, (raw, fast)
    for name in QosRecord.__struct_fields__:
        a, b = getattr(fast, name), getattr(model, name)
        if name == "event_time":
            # beyond microseconds msgspec rounds the fraction and pydantic truncates it
            assert abs(a.timestamp() - b.timestamp()) <= 1e-6, raw
            assert a.tzinfo is not None
        else:
            assert a == b, (name, raw, a, b)
            assert type(a) is type(b), (name, raw, a, b)


BASE = {
    "event_id": "e",
    "event_time": "2026-01-01T00:00:00Z",
    "subscriber_id": "s",
    "cell_id": "c",
    "service": "video",
    "rtt_ms": 1.0,
}
time_strings = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    ).map(lambda d: d.isoformat()),
    st.from_regex(
        r"\A\d{4}-\d{2}-\d{2}[T t_]\d{2}:\d{2}(:\d{2}(\.\d{1,12})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?\Z"
    ),
    timestamps,
)


@SETTINGS
@given(qos_like, time_strings)
def test_what_the_fast_decoder_accepts_the_model_accepts_alike(record, when):
    _agree(json.dumps(record).encode())
    _agree(json.dumps({**BASE, **record}).encode())
    _agree(json.dumps({**BASE, "event_time": when}).encode())


@SETTINGS
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_the_fast_decoder_and_the_model_agree_on_anything(raw):
    _agree(raw)


_B = json.dumps(BASE)[1:-1]


@pytest.mark.parametrize(
    "tail",
    [
        '"rtt_ms":1e999',
        '"rtt_ms":NaN',
        '"rtt_ms":Infinity',
        '"rtt_ms":-0.0',
        '"rtt_ms":true',
        '"rtt_ms":"1"',
        '"rtt_ms":01',
        '"rtt_ms":1,"rtt_ms":-1',
        '"rtt_ms":10000000000000000000000',
        '"stalls":1.0',
        '"stalls":1e2',
        '"stalls":true',
        '"stalls":10000000000000000000000',
        '"jitter_ms":null',
        '"service":null',
        '"service":"VIDEO"',
        '"cell_id":""',
        '"event_id":"\\ud800"',
        '"event_id":"a\\u0000b"',
        '"event_id":"' + "\U0001f600" * 128 + '"',
        '"event_id":"' + "\U0001f600" * 129 + '"',
        '"event_time":"2026-06-30T23:59:60Z"',
        '"event_time":"2026-01-01T24:00:00Z"',
        '"event_time":"2026-01-01T00:00:00+24:00"',
        '"event_time":"2026-01-01T00:00:00-00:00"',
        '"event_time":"2026-01-01T00:00:00+0100"',
        '"event_time":"2026-01-01T00:00:00+01"',
        '"event_time":"2026-01-01 00:00:00+01:00"',
        '"event_time":"2026-01-01T00:00Z"',
        '"event_time":"2026-01-01"',
        '"event_time":"2026-01-01T00:00:00"',
        '"event_time":1767225600',
        '"event_time":"1767225600"',
        '"event_time":"2026-01-01T00:00:00.999999999Z"',
    ],
)
def test_the_fast_decoder_and_the_model_agree_on_edge_cases(tail):
    raw = ("{" + _B + "," + tail + "}").encode("utf-8", "surrogatepass")
    _agree(raw)
    # whichever validator decides, the flow keeps the event exactly when the model does
    settings = load_settings()
    wide = settings.flow.model_copy(update={"max_event_age_s": 1e10, "max_event_ahead_s": 1e10})
    pipeline = Pipeline(
        settings.model_copy(update={"flow": wide}),
        context=ContextStore(FakeRedis()),
        claims=None,  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    msg = SimpleNamespace(value=raw, topic="q", partition=0, offset=0)
    kept = sum(len(item[1]) for item in pipeline.ingest([msg]) if isinstance(item, tuple))
    model = parse_qos(raw)
    assert kept == (0 if isinstance(model, BadEvent) else 1), model


def test_the_fast_decoder_reads_simulator_events_as_the_model_does():
    from cxstream.devtools.simulate import Simulator

    sim = Simulator()
    for _ in range(200):
        _, raw = sim.encoded(NOW)
        _agree(raw)
        assert decode_qos(raw).event_time == QosEvent.model_validate_json(raw).event_time


@pytest.mark.parametrize(
    "raw", [b"\xef\xbb\xbf{" + _B.encode() + b"}", b"{" + _B.encode() + b"} x"]
)
def test_the_fast_decoder_and_the_model_agree_on_framing(raw):
    _agree(raw)

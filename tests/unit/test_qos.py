"""The QoS measurement is defined once (cxstream.qos): every schema derived from it agrees."""

from __future__ import annotations

import json
import math
import random

import msgspec
import numpy as np
import pytest

from cxstream.batches import ShardBatch
from cxstream.detectors.degradation import INPUTS
from cxstream.detectors.experience import experience_score
from cxstream.detectors.table import SubscriberTable, experience_scores
from cxstream.devtools.simulate import Simulator
from cxstream.errors import ConfigError
from cxstream.events import BadEvent, QosEvent, QosRecord, decode_qos, parse_qos, qos_types
from cxstream.qos import MEASURES, QOS, SERVICE_CODES, Measure, QosTable

IDENTITY = ["event_id", "event_time", "subscriber_id", "cell_id", "service"]


def event(**measured):
    return {
        "event_id": "e1",
        "event_time": "2026-01-01T00:00:00Z",
        "subscriber_id": "s1",
        "cell_id": "c1",
        "service": "video",
        "rtt_ms": 30.0,
        **measured,
    }


def both(raw: bytes):
    """(accepted by the model, accepted by the fast decoder)."""
    try:
        decode_qos(raw)
        fast = True
    except msgspec.ValidationError:
        fast = False
    return not isinstance(parse_qos(raw), BadEvent), fast


def test_the_model_and_the_decoder_have_the_tables_fields_in_order():
    assert list(QosEvent.model_fields) == [*IDENTITY, *QOS.columns]
    assert list(QosRecord.__struct_fields__) == [*IDENTITY, *QOS.columns]
    assert QOS.columns == tuple(m.name for m in MEASURES)


@pytest.mark.parametrize("measure", MEASURES, ids=lambda m: m.name)
def test_ranges_defaults_and_types_agree_with_the_table(measure: Measure):
    base = event()
    base.pop(measure.name, None)
    # absent: the default, or rejected when required
    raw = json.dumps(base).encode()
    if measure.required:
        assert both(raw) == (False, False)
    else:
        model, record = parse_qos(raw), decode_qos(raw)
        assert getattr(model, measure.name) == measure.default
        assert getattr(record, measure.name) == measure.default
    # the bounds are inclusive, one step beyond is out of range, for both
    step = 1 if measure.kind is int else 0.001
    for value, ok in [
        (measure.ge, True),
        (measure.le, True),
        (measure.ge - step, False),
        (measure.le + step, False),
    ]:
        value = measure.kind(value)
        assert both(json.dumps(event(**{measure.name: value})).encode()) == (ok, ok), value
    # a string is never a number; an int measure refuses a fraction
    assert both(json.dumps(event(**{measure.name: "1"})).encode()) == (False, False)
    if measure.kind is int:
        assert both(json.dumps(event(**{measure.name: 1.5})).encode()) == (False, False)


def test_the_detector_inputs_and_batch_columns_come_from_the_table():
    assert tuple(INPUTS) == QOS.inputs
    assert set(INPUTS) <= set(QOS.columns)
    record = decode_qos(json.dumps(event(rsrq_db=-11.0, stalls=2, sinr_db=12.0)).encode())
    batch = ShardBatch.from_records([record])
    assert batch.measurements.shape == (1, len(QOS.columns))
    row = dict(zip(QOS.columns, batch.measurements[0], strict=True))
    assert row["rsrq_db"] == -11.0
    assert row["stalls"] == 2.0
    assert math.isnan(row["throughput_kbps"])


def test_the_simulator_sends_only_fields_of_the_table():
    sim = Simulator(subscribers=20, cells=4, seed=3)
    from datetime import UTC, datetime

    keys = set()
    for _ in range(200):
        keys |= set(sim.event(datetime(2026, 1, 1, tzinfo=UTC)))
    assert keys <= {*IDENTITY, *QOS.columns}
    # every detector input but the radio generation: the simulated network has no fallbacks
    assert set(QOS.inputs) - {"radio_generation"} <= keys


def test_stalls_lower_the_score_on_the_production_array_path():
    records = [
        decode_qos(json.dumps(event(throughput_kbps=8000.0, **extra)).encode())
        for extra in ({}, {"stalls": 0}, {"stalls": 2})
    ]
    batch = ShardBatch.from_records(records)
    table = SubscriberTable()
    result = table.observe(
        ["a", "b", "c"], batch.t, batch.service, batch.measurements, np.full(3, 100.0)
    )
    none, zero, two = result.experience
    assert none == zero
    assert two == pytest.approx(none - 30.0)
    assert two == pytest.approx(
        experience_score("video", 30.0, 0.0, 0.0, 8000.0, None, None, 2, 100.0)
    )
    # voice has no playback: stalls do not count
    voice = ShardBatch.from_records(
        [decode_qos(json.dumps(event(service="voice", stalls=3)).encode())]
    )
    calm = ShardBatch.from_records([decode_qos(json.dumps(event(service="voice")).encode())])
    assert experience_scores(voice.service, voice.measurements, np.full(1, 50.0)) == (
        pytest.approx(experience_scores(calm.service, calm.measurements, np.full(1, 50.0)))
    )


def test_a_new_field_in_a_table_flows_through_parsing_batching_and_scoring():
    def buffering_penalty(service, ratio):
        return np.where(np.isnan(ratio), 0.0, 50.0 * ratio)

    table = QosTable(
        [*MEASURES, Measure("rebuffer_ratio", float, "1", 0, 1, penalty=buffering_penalty)]
    )
    model, record_type = qos_types(table)
    raw = json.dumps(event(throughput_kbps=8000.0, rebuffer_ratio=0.4)).encode()
    # parsing: both the model and the fast decoder know it, with its range
    assert model.model_validate_json(raw).rebuffer_ratio == 0.4
    record = msgspec.json.decode(raw, type=record_type)
    assert record.rebuffer_ratio == 0.4
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(event(rebuffer_ratio=2.0)).encode(), type=record_type)
    # batching: it has its column
    plain = msgspec.json.decode(
        json.dumps(event(throughput_kbps=8000.0)).encode(), type=record_type
    )
    batch = ShardBatch.from_records([record, plain], table=table)
    assert batch.measurements[0, table.column("rebuffer_ratio")] == 0.4
    assert math.isnan(batch.measurements[1, table.column("rebuffer_ratio")])
    # scoring: its penalty applies where it was reported
    scores = experience_scores(batch.service, batch.measurements, np.full(2, 100.0), table)
    assert scores[0] == pytest.approx(scores[1] - 20.0)


def test_a_table_refuses_a_name_twice():
    with pytest.raises(ConfigError, match="rtt_ms"):
        QosTable([*MEASURES, MEASURES[0]])


def test_service_codes_cover_every_service():
    from cxstream.events import Service

    assert set(SERVICE_CODES) == {s.value for s in Service}
    rng = random.Random(0)
    assert all(SERVICE_CODES[rng.choice(list(Service)).value] in (0, 1, 2) for _ in range(5))

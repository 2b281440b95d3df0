"""The array detectors of a shard against the per-event reference (SubscriberMonitor)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cxstream.detectors.degradation import ExperienceDropDetector, SubscriberMonitor
from cxstream.detectors.experience import experience_score
from cxstream.detectors.table import SERVICE_CODES, SubscriberTable, experience_scores
from cxstream.qos import QOS

NAN = math.nan


def random_event(rng, bad):
    service = rng.choice(["voice", "video", "data"])
    return {
        "service": service,
        "rtt_ms": rng.uniform(5, 300) * (1 + 8 * bad),
        "jitter_ms": rng.uniform(0, 20) + 30 * bad,
        "loss_pct": rng.uniform(0, 2) + 10 * bad,
        "throughput_kbps": None
        if service == "voice" or rng.random() < 0.1
        else rng.uniform(50, 9e4),
        "rsrp_dbm": None if rng.random() < 0.2 else rng.uniform(-130, -60),
        "sinr_db": None if rng.random() < 0.2 else rng.uniform(-10, 30),
        "rsrq_db": None if rng.random() < 0.5 else rng.uniform(-20, -3),
        "stalls": None if rng.random() < 0.7 else rng.randrange(0, 4),
        "radio_generation": None if rng.random() < 0.6 else rng.randrange(2, 6),
        "cqi": None if rng.random() < 0.5 else rng.randrange(0, 16),
        "transfer_active": None if rng.random() < 0.4 else rng.randrange(0, 2),
        "demand_kbps": None if service != "video" or rng.random() < 0.5 else rng.uniform(1e3, 9e3),
    }


def columns(events):
    m = np.array([[NAN if e[k] is None else e[k] for k in QOS.columns] for e in events])
    service = np.array([SERVICE_CODES[e["service"]] for e in events], dtype=np.int8)
    return service, m


def test_vector_experience_equals_the_scalar_one():
    rng = random.Random(4)
    events = [random_event(rng, rng.random() < 0.3) for _ in range(3000)]
    plans = np.array([rng.choice([10.0, 25.0, 100.0, 500.0]) for _ in events])
    service, m = columns(events)
    got = experience_scores(service, m, plans)
    want = [
        experience_score(
            e["service"],
            e["rtt_ms"],
            e["jitter_ms"],
            e["loss_pct"],
            e["throughput_kbps"],
            e["rsrp_dbm"],
            e["sinr_db"],
            e["stalls"],
            p,
            radio_generation=e["radio_generation"],
            rsrq_db=e["rsrq_db"],
            cqi=e["cqi"],
            transfer_active=e["transfer_active"],
            demand_kbps=e["demand_kbps"],
        )
        for e, p in zip(events, plans, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_table_matches_the_per_event_monitors_batch_by_batch(batch):
    rng = random.Random(batch)
    subs = [f"s{i}" for i in range(40)]
    victims = set(subs[:6])
    table = SubscriberTable(sample_interval_s=10.0)
    monitors = {s: SubscriberMonitor(ExperienceDropDetector()) for s in subs}
    last_sample = dict.fromkeys(subs, -math.inf)
    t0 = 1.7e9
    stream = []
    for k in range(4000):
        sid = rng.choice(subs[:10]) if rng.random() < 0.5 else rng.choice(subs)
        t = t0 + k * 0.1
        bad = 1.0 if sid in victims and 1500 < k < 2500 else 0.0
        plan = NAN if rng.random() < 0.1 else 100.0
        stream.append((sid, t, plan, random_event(rng, bad)))
    detections = 0
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        service, m = columns([e for _, _, _, e in chunk])
        result = table.observe(
            [s for s, _, _, _ in chunk],
            np.array([t for _, t, _, _ in chunk]),
            service,
            m,
            np.array([p for _, _, p, _ in chunk]),
        )
        for j, (sid, t, plan, event) in enumerate(chunk):
            mon = monitors[sid]
            if not math.isnan(plan):
                mon.plan_mbps = plan
            score, exp, det = mon.observe(
                event["service"],
                {k: v for k, v in event.items() if k != "service"},
                mon.plan_mbps if mon.plan_mbps is not None else 50.0,
                t,
            )
            if det is not None:
                mon.count_episode(t)
            assert result.score[j] == pytest.approx(score, abs=1e-9)
            assert result.experience[j] == pytest.approx(exp, abs=1e-9)
            assert result.index[j] == pytest.approx(mon.experience_index, abs=1e-9)
            assert result.in_episode[j] == mon.in_episode
            due = t - last_sample[sid] >= 10.0
            if due:
                last_sample[sid] = t
            assert result.sample[j] == due
            if det is None:
                assert j + start not in result.detections and j not in result.detections
            else:
                detections += 1
                d_score, d_exp, why = result.detections[j]
                assert d_exp == pytest.approx(det.experience)
                assert d_score == pytest.approx(det.score)
                assert why == det.why
                assert result.episodes[j] == pytest.approx(mon.episodes)
    assert detections >= 5  # the victims were caught, identically


def test_table_grows_and_pickles():
    import pickle

    table = SubscriberTable(capacity=2)
    service, m = columns([random_event(random.Random(1), 0.0)] * 10)
    table.observe([f"x{i}" for i in range(10)], np.arange(10.0), service, m, np.full(10, 50.0))
    assert len(table) == 10
    copy = pickle.loads(pickle.dumps(table))
    assert copy.index == table.index
    np.testing.assert_array_equal(copy.mean[:10], table.mean[:10])


def test_a_subscriber_seen_in_another_cell_is_noted_as_a_move():
    table = SubscriberTable()
    rng = random.Random(9)
    events = [random_event(rng, 0.0) for _ in range(5)]
    service, m = columns(events)
    subs, cells = ["a", "b", "a", "a", "b"], ["c1", "c1", "c2", "c2", "c1"]
    result = table.observe(subs, np.arange(5.0), service, m, np.full(5, 50.0), cells)
    assert result.came_from == {2: "c1"}  # a moved c1 -> c2 within the batch; b stayed
    result = table.observe(
        ["a", "b"], np.array([6.0, 7.0]), service[:2], m[:2], np.full(2, 50.0), ["c3", "c1"]
    )
    assert result.came_from == {0: "c2"}

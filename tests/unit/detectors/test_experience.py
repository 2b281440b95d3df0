from __future__ import annotations

import pytest

from cxstream.detectors.experience import experience_score, radio_score, voice_mos


def test_voice_mos_matches_a_hand_computed_e_model_case():
    # rtt 100 ms, jitter 10 ms -> one-way delay d = 50 + 20 + 10 = 80 ms: Id = 0.024 * 80 = 1.92
    # loss 1 %: Ie_eff = 95 * 1 / (1 + 4.3) = 17.925; R = 93.2 - 1.92 - 17.925 = 73.355
    r = 73.355
    expected = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    assert voice_mos(100, 10, 1.0) == pytest.approx(expected, abs=1e-3)


def test_voice_delay_beyond_177_ms_is_penalised_more():
    below = voice_mos(300, 0, 0) - voice_mos(320, 0, 0)  # d = 160 -> 170 ms
    above = voice_mos(400, 0, 0) - voice_mos(420, 0, 0)  # d = 210 -> 220 ms
    assert above > below > 0


def test_mos_is_bounded():
    assert voice_mos(0, 0, 0) <= 4.5
    assert voice_mos(59_000, 5_000, 100) == 1.0


def test_radio_bands():
    assert radio_score(None, None) is None
    assert radio_score(-75, 25) == 100
    assert radio_score(-125, -10) == 0
    assert radio_score(-95, None) == pytest.approx(67.5)


@pytest.mark.parametrize("service", ["voice", "video", "data"])
def test_experience_is_within_0_100_and_drops_with_worse_inputs(service):
    good = experience_score(service, 40, 2, 0.1, 20_000, -85, 18, plan_mbps=50)
    bad = experience_score(service, 400, 60, 8, 500, -115, -3, plan_mbps=50)
    assert 0 <= bad < good <= 100
    assert good > 85
    assert bad < 30


def test_stalls_count_against_video():
    assert experience_score("video", 40, 2, 0.1, 6000, stalls=2) < experience_score(
        "video", 40, 2, 0.1, 6000, stalls=0
    )

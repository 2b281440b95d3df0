from __future__ import annotations

import pytest

from cxstream.detectors.experience import CODECS, experience_score, radio_score, voice_mos


def _mos(r: float) -> float:  # ITU-T G.107 Annex B, for 0 < R < 100
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


@pytest.mark.parametrize(
    ("loss", "r"),
    [
        # rtt 100 ms, jitter 10 ms: one-way delay d = 50 + 20 + 10 = 80 ms, Id = 0.024 * 80 = 1.92
        # G.711 with PLC (G.113 App. I: Ie 0, Bpl 25.1): Ie_eff = 95 * Ppl / (Ppl + 25.1)
        (0.0, 93.2 - 1.92),  # Ie_eff 0: R = 91.28, MOS 4.37
        (1.0, 93.2 - 1.92 - 95 * 1 / 26.1),  # Ie_eff 3.640: R = 87.640, MOS 4.28
        (3.0, 93.2 - 1.92 - 95 * 3 / 28.1),  # Ie_eff 10.142: R = 81.138, MOS 4.07
    ],
)
def test_voice_mos_of_g711_with_plc_matches_hand_computed_e_model_cases(loss, r):
    assert voice_mos(100, 10, loss) == pytest.approx(_mos(r), abs=1e-3)
    assert voice_mos(100, 10, loss, CODECS["g711_plc"]) == voice_mos(100, 10, loss)


def test_g711_without_concealment_suffers_loss_far_more():
    # G.113 App. I: Bpl 4.3 -> at 1 % Ie_eff = 95 / 5.3 = 17.925: R = 93.2 - 1.92 - 17.925
    assert voice_mos(100, 10, 1.0, CODECS["g711"]) == pytest.approx(_mos(73.355), abs=1e-3)
    assert voice_mos(100, 10, 1.0, CODECS["g711"]) < voice_mos(100, 10, 1.0) - 0.5


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

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


@pytest.mark.parametrize(
    ("codec", "loss", "rx"),
    [
        # wideband E-model (G.107.1): R = 129 - Id - Ie_eff,WB, MOS from R / 1.29 (Annex A);
        # rtt 100 ms, jitter 10 ms: Id = 1.92 as above
        # AMR-WB 12.65 kbit/s (G.113 App. IV: Ie,WB 13, Bpl 4.3)
        ("amr_wb", 0.0, (129 - 1.92 - 13) / 1.29),  # R 114.08, Rx 88.434, MOS 4.30
        # 1 %: Ie_eff,WB = 13 + (95 - 13) * 1 / 5.3 = 28.472: R 98.608, Rx 76.440, MOS 3.90
        ("amr_wb", 1.0, (129 - 1.92 - 13 - 82 / 5.3) / 1.29),
        # 3 %: 13 + 82 * 3 / 7.3 = 46.699: R 80.381, Rx 62.311, MOS 3.19
        ("amr_wb", 3.0, (129 - 1.92 - 13 - 82 * 3 / 7.3) / 1.29),
        # AMR-WB 23.85 kbit/s (Ie,WB 8, Bpl 4.9), 1 %: 8 + 87 / 5.9 = 22.746
        ("amr_wb_23_85", 1.0, (129 - 1.92 - 8 - 87 / 5.9) / 1.29),
    ],
)
def test_voice_mos_of_amr_wb_matches_hand_computed_wideband_e_model_cases(codec, loss, rx):
    assert voice_mos(100, 10, loss, CODECS[codec]) == pytest.approx(_mos(rx), abs=1e-3)


def test_wideband_scale_is_mapped_before_annex_b():
    # an unimpaired wideband connection (R 129) is Rx 100: MOS 4.5, not clipped far above
    assert voice_mos(0, 0, 0, CODECS["amr_wb_23_85"]) == pytest.approx(
        _mos((129 - 0.24 - 8) / 1.29), abs=1e-3
    )
    # the array scorer applies the same constants
    import numpy as np

    from cxstream.detectors.table import experience_scores
    from cxstream.qos import QOS

    m = np.full((3, len(QOS.columns)), np.nan)
    m[:, QOS.column("rtt_ms")] = 100
    m[:, QOS.column("jitter_ms")] = 10
    m[:, QOS.column("loss_pct")] = [0.0, 1.0, 3.0]
    got = experience_scores(np.zeros(3, dtype=np.int8), m, np.full(3, 50.0), codec=CODECS["amr_wb"])
    want = [
        experience_score("voice", 100, 10, loss, None, codec=CODECS["amr_wb"]) for loss in (0, 1, 3)
    ]
    assert got == pytest.approx(want, abs=1e-9)


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

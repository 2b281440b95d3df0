"""An open, explainable experience score (0-100) for one QoS measurement.

* Voice: the ITU-T G.107 E-model with its default values (``R = Ro - Is - Id - Ie_eff + A`` with
  ``Ro - Is = 93.2`` and ``A = 0``, G.107 7.7) and the delay impairment in the simplified form of
  Cole & Rosenbluth (2001), which fits G.107's ``Id`` for a well echo-cancelled call: one-way delay
  ``d`` = RTT/2 (the network, both directions alike) + twice the jitter (a jitter buffer sized to
  it) + 10 ms (packetisation of a 10 ms frame), ``Id = 0.024 d + 0.11 (d - 177.3)`` above 177.3 ms.
  The loss impairment is G.107's ``Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)`` for
  random loss (``BurstR = 1``), with the codec's ``Ie`` and ``Bpl`` from ITU-T G.113 Appendix I
  (:data:`CODECS`: G.711 with packet-loss concealment, the default, ``Ie = 0``, ``Bpl = 25.1``;
  G.711 without it, ``Bpl = 4.3``). MOS from R is G.107 Annex B; the score maps MOS 1..4.5 onto
  0..100.
* Wideband voice (AMR-WB, the VoLTE/VoNR codec of GSMA IR.92/NG.114, and EVS in its AMR-WB
  interoperable mode, 3GPP TS 26.445): the wideband E-model of ITU-T G.107.1, ``R = 129 - Id -
  Ie_eff,WB`` (``Ro,WB = 129``, ``Is,WB = 0`` and ``A = 0`` by its default values, clause 7.7),
  the same delay impairment, ``Ie_eff,WB = Ie,WB + (95 - Ie,WB) Ppl / (Ppl + Bpl)`` (G.107.1
  eq. 7-15 keeps G.107's 95), ``Ie,WB`` from G.113 Appendix IV Table IV.1 (handset listening)
  and ``Bpl`` from its Table IV.4 (the only packet-loss robustness values it publishes for
  AMR-WB, measured with random loss); MOS from ``R / 1.29`` by G.107's Annex B formula (G.107.1
  Annex A). EVS's own modes have planning values only on the fullband scale (G.107.2, G.113
  Appendix V), which the narrowband and wideband scores here cannot be compared with, so they are
  not offered.
* Video and data: delivered throughput is judged only where the session showed demand
  (:func:`demand_evident`): a rate limited by what the user asked for says nothing about the
  network. It is judged against what was asked for: a stream's rendition bitrate
  (``demand_kbps``; ``VIDEO_TARGET_KBPS`` for HD when unknown), and for a bulk download half the
  plan's rate, at most ``DATA_TARGET_KBPS``. Stalls, latency and loss count always.
* Radio (when present): 3GPP RSRP, SINR, RSRQ and CQI bands; poor radio pulls the score down by up
  to 20 points.

>>> round(voice_mos(rtt_ms=40, jitter_ms=2, loss_pct=0.0), 2)
4.4
>>> voice_mos(rtt_ms=600, jitter_ms=50, loss_pct=10) < 2.5
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "CODECS",
    "DATA_TARGET_KBPS",
    "VIDEO_TARGET_KBPS",
    "Codec",
    "demand_evident",
    "experience_score",
    "radio_score",
    "voice_mos",
]

VIDEO_TARGET_KBPS = 5_000.0  # HD streaming; SD needs about 3 Mbps
DATA_TARGET_KBPS = 25_000.0
"""The download rate beyond which a faster network is not a better experience: half the plan's
rate, but at most this (plans rarely promise their nominal speed, and a file or page of a few
megabytes arrives in about a second at 25 Mbit/s)."""


@dataclass(frozen=True)
class Codec:
    """A voice codec's E-model constants: equipment impairment ``ie`` and packet-loss
    robustness ``bpl`` (ITU-T G.113), on the narrowband (G.107, ``ro`` 93.2) or the wideband
    (G.107.1, ``ro`` 129) transmission rating scale."""

    name: str
    ie: float
    bpl: float
    wideband: bool = False

    @property
    def ro(self) -> float:
        """The rating of an unimpaired connection: 93.2 (G.107 7.7), 129 (G.107.1 7.7)."""
        return 129.0 if self.wideband else 93.2

    @property
    def r_scale(self) -> float:
        """The divisor that maps R onto G.107's scale before Annex B: 1.29 on the wideband
        scale (G.107.1 Annex A), 1 otherwise."""
        return 1.29 if self.wideband else 1.0


CODECS: dict[str, Codec] = {
    # G.113 Appendix I: G.711 has Ie = 0; its Bpl is 25.1 with the packet-loss concealment of
    # G.711 Appendix I, 4.3 without any (random loss)
    "g711_plc": Codec("G.711 with PLC", 0.0, 25.1),
    "g711": Codec("G.711 without PLC", 0.0, 4.3),
    # G.113 Appendix IV: AMR-WB (G.722.2) at 12.65 kbit/s, Ie,WB 13 (Table IV.1), Bpl 4.3
    # (Table IV.4); at 23.85 kbit/s, Ie,WB 8 and Bpl 4.9
    "amr_wb": Codec("AMR-WB 12.65 kbit/s", 13.0, 4.3, wideband=True),
    "amr_wb_23_85": Codec("AMR-WB 23.85 kbit/s", 8.0, 4.9, wideband=True),
    # 3GPP TS 26.445: EVS's AMR-WB interoperable mode carries AMR-WB's bitstream
    "evs_amr_wb_io": Codec("EVS AMR-WB IO 12.65 kbit/s", 13.0, 4.3, wideband=True),
}
"""The codecs whose E-model constants ITU-T G.113 publishes (narrowband and wideband)."""


def _clamp(value: float, low: float = 0.0, high: float = 100.0) -> float:
    return high if value > high else low if value < low else value


def voice_mos(
    rtt_ms: float, jitter_ms: float, loss_pct: float, codec: Codec = CODECS["g711_plc"]
) -> float:
    """Mean opinion score (1..4.5) of a call from the E-model (see the module docstring)."""
    delay = rtt_ms / 2.0 + 2.0 * jitter_ms + 10.0
    id_ = 0.024 * delay + (0.11 * (delay - 177.3) if delay > 177.3 else 0.0)
    ie_eff = codec.ie + (95.0 - codec.ie) * loss_pct / (loss_pct + codec.bpl)
    r = (codec.ro - id_ - ie_eff) / codec.r_scale
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def _band(value: float, points: tuple[tuple[float, float], ...]) -> float:
    """Piecewise-linear map through (input, score) points sorted by input."""
    if value <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in pairwise(points):
        if value <= x1:
            return y0 + (y1 - y0) * (value - x0) / (x1 - x0)
    return points[-1][1]


_RSRP = ((-120.0, 0.0), (-110.0, 25.0), (-100.0, 55.0), (-90.0, 80.0), (-80.0, 100.0))
_SINR = ((-5.0, 0.0), (0.0, 30.0), (13.0, 75.0), (20.0, 100.0))
# RSRQ (TS 36.133 reports -19.5 to -3 dB): below -15 dB a loaded or interfered cell, from -10 dB
# on clean
_RSRQ = ((-20.0, 0.0), (-15.0, 40.0), (-10.0, 80.0), (-6.0, 100.0))
# CQI (TS 36.213 Table 7.2.3-1, TS 38.214): 1-6 only QPSK fits the channel, 7-9 16QAM, 10-15
# 64QAM and up; 0 is "out of range"
_CQI = ((0.0, 0.0), (6.0, 40.0), (9.0, 75.0), (12.0, 100.0))


def radio_score(
    rsrp_dbm: float | None,
    sinr_db: float | None,
    rsrq_db: float | None = None,
    cqi: float | None = None,
) -> float | None:
    """0-100: the mean of the 3GPP RSRP, SINR, RSRQ and CQI bands the probe reported, or
    ``None`` when it reported none."""
    parts = [
        _band(value, bands)
        for value, bands in ((rsrp_dbm, _RSRP), (sinr_db, _SINR), (rsrq_db, _RSRQ), (cqi, _CQI))
        if value is not None
    ]
    return sum(parts) / len(parts) if parts else None


def demand_evident(
    transfer_active: float | None, stalls: float | None, demand_kbps: float | None
) -> bool:
    """Whether a video or data session's delivered rate measures the network: the probe saw an
    active transfer (a bulk download, a stream filling its buffer), or the application asked for
    a known rate (a stream's rendition), or playback stalled (the buffer ran dry: it wanted more
    than it got). Otherwise the rate is what light use needed, and says nothing about the
    network. Poor radio is not taken as demand: a light-use session on a weak channel still
    moves what it needed (a simulated cell edge, judged that way, raised alerts for a browsing
    user's 300 kbit/s), and the radio bands already lower the score.

    >>> demand_evident(None, None, None), demand_evident(1, None, None)
    (False, True)
    """
    return bool(transfer_active or stalls or demand_kbps)


def experience_score(
    service: str,
    rtt_ms: float | None,
    jitter_ms: float,
    loss_pct: float,
    throughput_kbps: float | None,
    rsrp_dbm: float | None = None,
    sinr_db: float | None = None,
    stalls: float | None = None,
    plan_mbps: float = 50.0,
    codec: Codec = CODECS["g711_plc"],
    radio_generation: float | None = None,
    rsrq_db: float | None = None,
    cqi: float | None = None,
    transfer_active: float | None = None,
    demand_kbps: float | None = None,
) -> float:
    """Experience of one measurement, 0 (unusable) to 100 (perfect).

    >>> experience_score("voice", 40, 2, 0.0, None) > 90
    True
    >>> experience_score("data", 30, 2, 0.1, 2_000, plan_mbps=100, transfer_active=1) < 50
    True
    >>> experience_score("data", 30, 2, 0.1, 2_000, plan_mbps=100) > 95  # light use
    True
    """
    rtt_ms = rtt_ms if rtt_ms is not None else 0.0  # not measured: no delay impairment
    if service == "voice":
        score = (voice_mos(rtt_ms, jitter_ms, loss_pct, codec) - 1.0) / 3.5 * 100.0
    else:
        promised = plan_mbps * 1000.0
        if service == "video":
            target = demand_kbps or min(promised, VIDEO_TARGET_KBPS)
        else:
            target = min(0.5 * promised, DATA_TARGET_KBPS)
        judged = demand_evident(transfer_active, stalls, demand_kbps)
        tp = throughput_kbps if throughput_kbps is not None and judged else target
        tp_score = 100.0 * min(1.0, tp / target) ** 0.5 if target > 0 else 100.0
        latency_penalty = max(0.0, (rtt_ms - 80.0) / 10.0)
        loss_penalty = 8.0 * loss_pct
        stall_penalty = 15.0 * stalls if stalls else 0.0
        score = tp_score - latency_penalty - loss_penalty - stall_penalty
        if radio_generation is not None:  # qos.generation_penalty
            score -= 90.0 if radio_generation <= 2 else 65.0 if radio_generation <= 3 else 0.0
    radio = radio_score(rsrp_dbm, sinr_db, rsrq_db, cqi)
    if radio is not None and radio < 60.0:
        score -= (60.0 - radio) / 3.0
    return _clamp(score) if math.isfinite(score) else 0.0

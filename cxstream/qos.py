"""The QoS measurement, defined once.

One row of :data:`MEASURES` per measured field: its name, type, unit, valid range, default and,
where it has one, its part in the experience score. Everything else is derived from it: the
validated record (:class:`~cxstream.events.QosEvent`), the hot path's decoder
(:class:`~cxstream.events.QosRecord`), the columns of a batch's measurement matrix
(:meth:`QosTable.matrix`), the inputs the degradation detector tracks (:attr:`QosTable.inputs`)
and the penalties the array scorer applies (:func:`~cxstream.detectors.table.experience_scores`).
Adding a field is one :class:`Measure` here plus, if it changes the score, its penalty.

Radio ranges follow the 3GPP TS 36.133 / 38.133 reporting ranges.

>>> QOS.columns[:3]
('rtt_ms', 'jitter_ms', 'loss_pct')
>>> QOS.inputs
('rtt_ms', 'jitter_ms', 'loss_pct', 'throughput_kbps', 'sinr_db', 'radio_generation')
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cxstream.errors import ConfigError

__all__ = ["MEASURES", "QOS", "SERVICE_CODES", "Measure", "QosTable", "generation_penalty"]

F64 = NDArray[np.float64]

SERVICE_CODES = {"voice": 0, "video": 1, "data": 2}
"""The service of an event as a small integer in a batch's ``service`` column."""

Penalty = Callable[[NDArray[np.int8], F64], F64]
"""Experience points to subtract, per event, from the service codes and one measurement column
(NaN where the event did not report it)."""


@dataclass(frozen=True, slots=True)
class Measure:
    """One measured field of a QoS event."""

    name: str
    kind: type[float] | type[int]
    unit: str
    ge: float
    le: float
    required: bool = False
    default: float | None = None  # the value when absent (None: "not reported", NaN in a batch)
    detector_input: bool = False  # its usual level is tracked and named when experience drops
    higher_is_worse: bool = True  # a detector input's bad direction: up (delay, loss) or down
    penalty: Penalty | None = None  # its part in the experience score, beyond the core formula
    doc: str = ""


def stall_penalty(service: NDArray[np.int8], stalls: F64) -> F64:
    """15 points per playback stall, for video and data sessions (voice has no playback)."""
    reported = (service != SERVICE_CODES["voice"]) & ~np.isnan(stalls)
    return np.where(reported, 15.0 * np.nan_to_num(stalls), 0.0)


def generation_penalty(service: NDArray[np.int8], generation: F64) -> F64:
    """Video and data sessions on an older radio access than LTE, scored as the throughput
    score would score that access's usual rate: 3G (UMTS/HSPA) gives a user about 3 Mbit/s,
    ``100 * sqrt(3 / 25)`` = 35 for a download against half a 50 Mbit/s plan, so 65 points off
    (below the detectors' "poor" level: a fallback to 3G is a degradation for a 4G/5G
    subscriber); 2G (GPRS/EDGE) at most a few hundred kbit/s, no video and no useful download:
    90 points off. Voice is unaffected (a call falls back to circuit-switched voice of its own
    quality)."""
    data = service != SERVICE_CODES["voice"]
    off = np.where(generation <= 2, 90.0, np.where(generation <= 3, 65.0, 0.0))
    return np.where(data & ~np.isnan(generation), off, 0.0)


MEASURES: tuple[Measure, ...] = (
    Measure("rtt_ms", float, "ms", 0, 60_000, detector_input=True,
            doc="round-trip time (absent: not measured, no delay impairment)"),
    Measure("jitter_ms", float, "ms", 0, 10_000, default=0.0, detector_input=True,
            doc="delay variation"),
    Measure("loss_pct", float, "%", 0, 100, default=0.0, detector_input=True,
            doc="packet loss"),
    Measure("throughput_kbps", float, "kbit/s", 0, 10_000_000, detector_input=True,
            higher_is_worse=False, doc="delivered throughput"),
    Measure("rsrp_dbm", float, "dBm", -156, -31, doc="reference signal received power"),
    Measure("sinr_db", float, "dB", -23, 40, detector_input=True, higher_is_worse=False,
            doc="signal to interference and noise"),
    Measure("rsrq_db", float, "dB", -43, 20, doc="reference signal received quality"),
    Measure("cqi", int, "index", 0, 15, doc="channel quality indicator (3GPP TS 36.213, 38.214)"),
    Measure("stalls", int, "count", 0, 10_000, penalty=stall_penalty,
            doc="playback stalls in the session"),
    Measure("radio_generation", int, "3GPP generation", 2, 5, detector_input=True,
            higher_is_worse=False, penalty=generation_penalty,
            doc="of the serving radio access: 2 GSM/GPRS/EDGE, 3 UMTS/HSPA, 4 LTE, 5 NR"),
    Measure("transfer_active", int, "flag", 0, 1,
            doc="1: the session moved data as fast as the network let it (a bulk download, a "
                "stream filling its buffer); 0 or absent: light or idle use"),
    Measure("demand_kbps", float, "kbit/s", 0, 10_000_000,
            doc="the rate the application asked for (a stream's rendition bitrate)"),
)  # fmt: skip
"""The measured fields of a QoS event, in the order of a batch's measurement columns."""


class QosTable:
    """What a table of :class:`Measure` s implies: column positions, detector inputs, a matrix."""

    def __init__(self, measures: Sequence[Measure]) -> None:
        names = [m.name for m in measures]
        if len(set(names)) != len(names):
            msg = f"QoS measures named twice: {sorted(n for n in names if names.count(n) > 1)}"
            raise ConfigError(msg)
        self.measures = tuple(measures)
        self.columns = tuple(names)
        self.inputs = tuple(m.name for m in measures if m.detector_input)
        # +1 where an input's rise lowers experience, -1 where its fall does
        self.worse = tuple(1.0 if m.higher_is_worse else -1.0 for m in measures if m.detector_input)
        self.penalties = tuple(
            (i, m.penalty) for i, m in enumerate(measures) if m.penalty is not None
        )
        self._position = {name: i for i, name in enumerate(names)}
        self._getter = operator.attrgetter(*names)

    def column(self, name: str) -> int:
        """The position of a measure's column in :meth:`matrix`."""
        return self._position[name]

    def matrix(self, records: Sequence[Any]) -> F64:
        """The records' measurements as an ``n x len(columns)`` float array; None becomes NaN."""
        # one tuple per record, converted in one C call (None becomes NaN): about twice as fast
        # as a column at a time
        values = np.array(list(map(self._getter, records)), dtype=np.float64)
        return values.reshape(len(records), len(self.columns))


QOS = QosTable(MEASURES)
"""The product's QoS measurement."""

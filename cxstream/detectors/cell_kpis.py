"""Cell KPI series: what the whole cell looks like per interval, scored by the series detector.

Every ``interval_s`` of event time (slots aligned to the epoch) a cell's traffic is summed up in
five KPIs, each a series for its own :class:`~cxstream.detectors.series.ContextLikelihoodDetector`
(the detector ``cxstream eval nab`` measures, with its daily and weekly contexts):

=============  ===============================================================  ===========
KPI            per interval                                                     bad when
=============  ===============================================================  ===========
experience     median of the active subscribers' experience index               it falls
loss_pct       median of their last packet loss                                 it rises
throughput     median of their last throughput (data and video samples)         it falls
volume         events the cell carried                                          it falls
active         distinct subscribers seen                                        it falls
=============  ===============================================================  ===========

Medians over subscribers, not means over events, so that one subscriber in trouble (a phone, a
basement) does not move the cell's KPI; a mild shift shared by all of them does, although none
crosses its own degradation threshold. That holds only where a cell usually has several
subscribers in an interval: where it has one or two, the median is theirs, and their own trouble
or their leaving would look like the cell's; :attr:`CellKpis.usual_active` tells, and
:class:`~cxstream.detectors.cells.CellMonitor` judges a cell by its KPIs only where it is at least
``min_affected``, and measures the quality KPIs (experience, loss, throughput) of an interval
only from at least ``min_affected`` subscribers. An interval without any event is still an
interval (volume and active 0): a cell that falls silent is seen, which a share of degraded
events never shows.

A KPI is **anomalous** when the detector's score reaches ``threshold`` on a move in the bad
direction beyond ``persist_z`` robust deviations of its baseline (the median of its last
``baseline`` normal intervals), confirmed by the ``confirm`` intervals that follow (one noisy
interval is not an incident). It then stays anomalous while the KPI remains that far on the bad
side, for at most ``max_anomaly_s``: the detector itself learns a new level within minutes, the
episode must not end with it. It ends when the KPI has been back past half-way from that
limit to its baseline for ``confirm + 1`` intervals in a row: one interval back is no more a
recovery than one out is an incident, and a mild shift of a few subscribers' median hovers
about the limit it opened at, crossing it now and then. After the
longest episode the level is taken as the cell's new normal. Until the detector scores (its
first points), an interval without any event in a cell busy enough that the silence is news by
its baseline alone starts an anomaly of the volume too (:meth:`CellKpis._silence`): a cell that
goes dark in its first minutes is seen.

A slow drift of quality (experience, loss) hides from any detector that adapts: each interval
looks like the last. So those two KPIs also keep a one-sided CUSUM (Page, 1954)
of their deviation from a slow reference (an exponential mean of normal intervals over about
``drift_window`` of them), in units of its exponential standard deviation, with allowance ``drift_k``
and decision level ``drift_h``: a move of ``drift_k + 1`` deviations is found after about
``drift_h`` intervals, a move of ``drift_k`` or less never. An interval far out counts as at
most ``persist_z`` deviations unless the interval before it was beyond the allowance too: one
interval (a quiet night's median of a few subscribers) must not make a drift alone, while a
shift of the whole cell, far out interval after interval, is still found within a few. A KPI
that follows the load through the day (loss at the busy hour) moves like such a drift, so the
CUSUM measures a value against
the worse of that reference and the usual level at its time of day: the mean of its
``context_resolution_s`` slot over the normal intervals of earlier days (blended once a day, the
latest day weighing 0.3, as in the detector's contexts). The first day has no usual level yet:
until a slot has one, an interval in which the cell's load (its volume) lies above its own slow
reference by more than ``drift_k`` deviations adds nothing to the CUSUM, so the first busy hour,
whose quality follows its rising load, is no drift either. A fault that ramps while the load
rises on a cell's first day is then left to the detector's score and to the subscribers' own
alerts.
Times of day and week are those of ``timezone`` (the subscribers' wall clock, an IANA name): the
busy hour stays in its slot when the clocks change.

Memory per cell: five detectors (at most about 59 kB each at the 5-minute context floor, a few kB
for a cell younger than a day), five baselines of ``baseline`` floats, two time-of-day profiles
(12 bytes a slot: 1.2 kB each at the 15-minute default), a few floats more.
"""

from __future__ import annotations

import math
import zoneinfo
from array import array
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cxstream.detectors.series import AlertGate, ContextLikelihoodDetector, ew_moments

__all__ = [
    "BASELINE_READY",
    "KPIS",
    "SILENCE_CHANCE",
    "CellKpis",
    "KpiAnomaly",
    "KpiSettings",
    "median",
]

Direction = Literal["down", "up"]

# quality KPIs, watched for slow drift too (not throughput: its median jumps with the mix of
# plans and services sampled, more than with the cell's quality)
_DRIFTING = ("experience", "loss_pct")

KPIS: dict[str, Direction] = {
    "experience": "down",
    "loss_pct": "up",
    "throughput": "down",
    "volume": "down",
    "active": "down",
}
"""Each KPI, and the direction in which it is bad."""

BASELINE_READY = 10
"""Normal intervals a KPI's baseline needs before it judges (fewer where ``baseline`` is)."""

SILENCE_CHANCE = 1e-4
"""The chance at which a confirmed silence is news without the detector: the one-in-10,000
stretch its threshold (0.5) stands for."""

_MAD_TO_SD = 1.4826  # a normal distribution's standard deviation per median absolute deviation
_DAY = 86_400.0
_PROFILE_ALPHA = 0.3  # weight of the latest day in a time-of-day profile (the detector's contexts')


def _time_of_day_slot(t: float, width: float, slots: int) -> int:
    """The ``width``-second slot of the day that ``t`` falls in (the last of ``slots`` for a time
    a hair before midnight, whose remainder rounds to a whole day)."""
    return min(int(t % _DAY // width), slots - 1)


def _slow_step(mean: float, var: float, n: int, x: float, window: int) -> tuple[float, float]:
    """An exponential mean and variance over about ``window`` points (an exact mean over the
    first ones) after ``x``, the ``n``-th point."""
    return ew_moments(mean, var, x, max(1.0 / n, 1.0 / window))


@dataclass(frozen=True)
class KpiSettings:
    """How cell KPIs are formed and judged (see the module docstring)."""

    interval_s: float = 10.0
    context_resolution_s: float = 900.0
    threshold: float = 0.5
    baseline: int = 30
    persist_z: float = 3.0
    confirm: int = 2
    drift_window: int = 180
    drift_k: float = 1.0
    drift_h: float = 10.0
    max_anomaly_s: float = 3_600.0
    max_gap_intervals: int = 360
    timezone: str = "UTC"


@dataclass(frozen=True)
class KpiAnomaly:
    """One KPI of a cell out of its normal, in the bad direction."""

    kpi: str
    since: float
    value: float
    baseline: float
    score: float

    @property
    def collapse(self) -> bool:
        """Whether a volume KPI fell to less than half its baseline (the cell went quiet)."""
        return self.kpi in ("volume", "active") and self.value < 0.5 * self.baseline

    def why(self) -> dict[str, float | str]:
        """The evidence, for an incident's ``why``."""
        return {
            "value": round(self.value, 3),
            "baseline": round(self.baseline, 3),
            "score": round(self.score, 3),
            "direction": KPIS[self.kpi],
        }


def median(xs: list[float]) -> float:
    """The median, or NaN for no values."""
    if not xs:
        return math.nan
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


@dataclass
class _Kpi:
    name: str
    bad: Direction
    detector: ContextLikelihoodDetector
    gate: AlertGate
    recent: deque[float]
    anomaly: KpiAnomaly | None = None
    # an alert waiting for confirmation: its interval's end, value, baseline and score, and the
    # intervals held back meanwhile
    pending: tuple[float, float, float, float] | None = None
    held: list[float] = field(default_factory=list)
    # frozen at the anomaly's start: how far off the bad side it must stay to persist
    limit: float = 0.0
    # the intervals an anomaly has been back past half-way to its baseline, in a row (it ends after
    # ``confirm + 1``: one interval is no more a recovery than it is an incident)
    back: tuple[float, ...] = ()
    # the slow drift: the reference level, the CUSUM and the interval where it last left 0
    ref: float = math.nan
    ref_var: float = 0.0
    ref_n: int = 0
    cusum: float = 0.0
    bad_before: bool = False  # the last interval's deviation passed the allowance
    drift_since: float = 0.0
    # the time of day: each slot's mean over its normal intervals, blended once a day (None until
    # the first interval), the days each slot was seen, and the slot being summed now
    profile: array[float] | None = None
    profile_days: array[int] | None = None
    slot: int = -1
    slot_sum: float = 0.0
    slot_n: int = 0

    def baseline(self) -> tuple[float, float]:
        """The median of the recent normal intervals, and their robust deviation (at least 5 %
        of the level: a flat count still needs a scale)."""
        values = list(self.recent)
        mid = median(values)
        mad = median([abs(v - mid) for v in values]) * _MAD_TO_SD
        return mid, max(mad, 0.05 * abs(mid), 1e-6)

    def worse(self, value: float, than: float) -> bool:
        return value < than if self.bad == "down" else value > than


@dataclass
class CellKpis:
    """The KPI series of one cell; :meth:`close` is called once per interval with its figures."""

    settings: KpiSettings = field(default_factory=KpiSettings)
    _kpis: list[_Kpi] = field(default_factory=list)
    next_close: float = -math.inf
    # the time zone's UTC offset, and the quarter hour it was looked up for
    _zone_offset: float = 0.0
    _zone_at: int = -1
    # the load (the volume KPI) against its own slow reference, as the drift rule keeps one
    _load_ref: float = 0.0
    _load_var: float = 0.0
    _load_n: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        if not self._kpis:
            self._kpis = [
                _Kpi(
                    name,
                    bad,
                    ContextLikelihoodDetector(min_resolution_s=s.context_resolution_s),
                    # no quiet period: an episode is kept together by the anomaly's own
                    # persistence (and the incident's life cycle), not by the series' half day
                    AlertGate(threshold=s.threshold, hold=0, hold_days=None),
                    deque(maxlen=s.baseline),
                )
                for name, bad in KPIS.items()
            ]

    @property
    def anomalies(self) -> list[KpiAnomaly]:
        """The KPIs anomalous now."""
        return [k.anomaly for k in self._kpis if k.anomaly is not None]

    @property
    def deciding(self) -> bool:
        """Whether a KPI's alert awaits its ``confirm`` intervals: an incident may open within
        ``(confirm + 1) * interval_s`` of its first."""
        return any(k.pending is not None for k in self._kpis)

    @property
    def usual_active(self) -> float:
        """The subscribers the cell usually has in an interval: the median of the ``active``
        KPI over its recent normal intervals (0 before any)."""
        recent = next(k.recent for k in self._kpis if k.name == "active")
        return median(list(recent)) if recent else 0.0

    def due(self, t: float) -> bool:
        """Whether an interval ended at or before ``t``."""
        return t >= self.next_close

    def slots_due(self, t: float) -> list[float]:
        """The end times of the intervals ended by ``t`` (the ones without traffic first, at
        most ``max_gap_intervals`` of them), and the next one's end becomes pending."""
        step = self.settings.interval_s
        if self.next_close == -math.inf:
            self.next_close = (math.floor(t / step) + 1) * step
            return []
        if t < self.next_close:
            return []
        last = math.floor(t / step) * step
        first = max(self.next_close, last - (self.settings.max_gap_intervals - 1) * step)
        n = round((last - first) / step) + 1
        self.next_close = last + step
        return [first + i * step for i in range(n)]

    def close(self, end: float, values: dict[str, float]) -> list[KpiAnomaly]:
        """Score one interval (ending at ``end``) of KPI values (a missing or NaN KPI had no
        samples); returns the KPIs that became anomalous with it."""
        new: list[KpiAnomaly] = []
        local = self._local(end)
        rising = self._load_rising(values.get("volume", math.nan))
        for k in self._kpis:
            value = values.get(k.name, math.nan)
            if math.isfinite(value):
                found = self._close_one(k, end, value, local, rising)
                if found is not None:
                    new.append(found)
        return new

    def _silence(self, volume: float, base: float, limit: float) -> bool:
        """Whether an interval without any event is news by the baseline alone, while the
        series detector cannot score yet (its first ``window_min`` points; after them it judges
        silence too, and learns from its contexts a silence that comes every night, as where a
        capacity cell is switched off to save energy). The cell usually carries ``base`` events
        an interval (the median): were its events a Poisson stream, an empty interval and the
        ``confirm`` empty ones that must follow it would have a chance of
        ``exp(-base * (confirm + 1))``. News where that is at most :data:`SILENCE_CHANCE`, and
        where no event at all also lies ``persist_z`` robust deviations below the baseline (a
        cell whose counts swing that far is left to the detector)."""
        confirmed = self.settings.confirm + 1
        return volume == 0.0 and volume < limit and base * confirmed >= -math.log(SILENCE_CHANCE)

    def _load_rising(self, volume: float) -> bool:
        """Learn this interval's ``volume`` into the load's slow reference; whether it lies above
        the reference by more than the drift rule's allowance (``drift_k`` deviations, at least
        Poisson's, the square root of the reference: it is a count): the load is rising, as it
        does towards the busy hour."""
        if not math.isfinite(volume):
            return False
        s = self.settings
        if self._load_n == 0:
            self._load_ref = volume
        d = volume - self._load_ref
        rising = (
            self._load_n > s.baseline
            and self._load_var > 0.0
            and d > s.drift_k * math.sqrt(max(self._load_var, self._load_ref))
        )
        self._load_n += 1
        self._load_ref, self._load_var = _slow_step(
            self._load_ref, self._load_var, self._load_n, volume, s.drift_window
        )
        return rising

    def _local(self, end: float) -> float:
        """``end`` on the wall clock of ``settings.timezone`` (epoch seconds plus its UTC offset,
        looked up once a quarter hour): the time of day and week the contexts see follow the
        subscribers' day, across a daylight-saving change too."""
        zone = self.settings.timezone
        if zone == "UTC":
            return end
        quarter = int(end // 900)
        if quarter != self._zone_at:
            offset = datetime.fromtimestamp(end, zoneinfo.ZoneInfo(zone)).utcoffset()
            self._zone_offset = offset.total_seconds() if offset is not None else 0.0
            self._zone_at = quarter
        return end + self._zone_offset

    def _close_one(
        self, k: _Kpi, end: float, value: float, local: float, load_rising: bool
    ) -> KpiAnomaly | None:
        s = self.settings
        score, novel = k.detector.update_novel(value, local)  # score before learn
        current = k.anomaly
        if current is not None:
            # back means back past half-way to the baseline: a mild shift hovers about its
            # opening limit, and would close and open as its noise crosses it
            persists = k.worse(value, 0.5 * (current.baseline + k.limit))
            k.back = () if persists else (*k.back, value)
            # still out, or not back for long enough yet
            if end - current.since < s.max_anomaly_s and len(k.back) <= s.confirm:
                k.anomaly = KpiAnomaly(k.name, current.since, value, current.baseline, score)
                return None
            k.anomaly = None
            back, k.back = k.back, ()
            if persists:  # the longest episode is over: this level is the new normal
                k.recent.clear()
            else:  # recovered: the intervals back before this one were normal (this one below)
                k.recent.extend(back[:-1])
        if k.pending is not None:
            if k.worse(value, k.limit):
                k.held.append(value)
                return self._confirmed(k, score)
            k.recent.extend(k.held)  # not confirmed: noise, normal after all
            k.pending, k.held = None, []
        ready = len(k.recent) >= min(BASELINE_READY, s.baseline)
        base, spread = k.baseline() if ready else (value, 0.0)
        limit = base - s.persist_z * spread if k.bad == "down" else base + s.persist_z * spread
        bad = ready and novel and k.worse(value, limit)
        alert = k.gate.decide(score if bad else 0.0, end)
        silent = ready and k.name == "volume" and not k.detector.scoring
        if alert or (silent and self._silence(value, base, limit)):
            k.limit = limit
            k.pending, k.held = (end, value, base, score), [value]
            return self._confirmed(k, score)
        drifted_from = (
            self._drift(k, end, value, local, load_rising) if k.name in _DRIFTING else None
        )
        if drifted_from is not None:
            sd = math.sqrt(k.ref_var)
            k.limit = (
                drifted_from - s.persist_z * sd
                if k.bad == "down"
                else drifted_from + s.persist_z * sd
            )
            k.anomaly = KpiAnomaly(k.name, k.drift_since, value, drifted_from, score)
            k.cusum = 0.0
            return k.anomaly
        k.recent.append(value)
        return None

    def _drift(
        self, k: _Kpi, end: float, value: float, local: float, load_rising: bool
    ) -> float | None:
        """Update the slow reference, the time-of-day profile and the CUSUM with a normal
        interval; at a drift, the level it drifted from (else None). The CUSUM measures the
        value against the worse of the slow reference and the usual level at this time of day
        (once an earlier day has shown it): a KPI that follows the load through the day, such as
        loss at the busy hour, is no drift; a KPI worse than both is."""
        s = self.settings
        if k.ref_n == 0:
            k.ref = value
        k.ref_n += 1
        usual = self._usual(k, local, value)
        if math.isnan(usual):
            expected = k.ref
        else:
            expected = min(k.ref, usual) if k.bad == "down" else max(k.ref, usual)
        drifted = False
        if k.ref_n > s.baseline and k.ref_var > 0.0:  # the deviation is known: standardise
            off = value - expected
            z = (-off if k.bad == "down" else off) / math.sqrt(k.ref_var)
            if load_rising and math.isnan(usual):
                z = 0.0  # no earlier day to compare with: the load's own rise explains it
            if k.cusum == 0.0:
                k.drift_since = end
            if not k.bad_before:  # alone, one interval far out counts as persist_z at most
                z = min(z, s.persist_z)
            k.bad_before = z > s.drift_k
            k.cusum = max(0.0, k.cusum + z - s.drift_k)
            drifted = k.cusum > s.drift_h
        k.ref, k.ref_var = _slow_step(k.ref, k.ref_var, k.ref_n, value, s.drift_window)
        return expected if drifted else None

    def _usual(self, k: _Kpi, end: float, value: float) -> float:
        """Learn ``value`` into its time-of-day slot (``context_resolution_s`` wide, ``end`` on
        the local wall clock); the slot's usual level from earlier days, NaN before one has
        shown it."""
        width = self.settings.context_resolution_s
        slots = max(1, math.ceil(_DAY / width))
        if k.profile is None or k.profile_days is None or len(k.profile) != slots:
            k.profile = array("d", bytes(8 * slots))  # (new, or of another slot width)
            k.profile_days = array("i", bytes(4 * slots))
        profile, days = k.profile, k.profile_days
        now = int(end // width)
        if now != k.slot:
            if k.slot_n:  # the previous slot is over: its mean joins that time of day's profile
                i = _time_of_day_slot(k.slot * width, width, slots)
                mean = k.slot_sum / k.slot_n
                profile[i] = (
                    mean if days[i] == 0 else profile[i] + _PROFILE_ALPHA * (mean - profile[i])
                )
                days[i] += 1
            k.slot, k.slot_sum, k.slot_n = now, 0.0, 0
        k.slot_sum += value
        k.slot_n += 1
        i = _time_of_day_slot(end, width, slots)
        return profile[i] if days[i] else math.nan

    def _confirmed(self, k: _Kpi, score: float) -> KpiAnomaly | None:
        """The pending alert, once ``confirm`` more intervals stayed beyond the limit."""
        if k.pending is None or len(k.held) <= self.settings.confirm:
            return None
        since, first, base, top = k.pending
        k.anomaly = KpiAnomaly(k.name, since, first, base, max(top, score))
        k.pending, k.held = None, []
        return k.anomaly

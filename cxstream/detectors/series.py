"""A univariate online detector for any metric series: contextual prediction + anomaly likelihood.

What the best streaming detectors on the Numenta Anomaly Benchmark share, in a form that runs at
well over 100,000 points per second in pure Python:

1. **Contextual prediction.** Three predictors of the next value: a fast EWMA of recent level, the
   usual value at this time of day, and at this time of the week (context buckets at the series' own
   sampling interval, learned from the first timestamps, never finer than 5 minutes). A point's raw
   surprise is its error against the predictor that explains it *best*, in units of that
   predictor's usual error: a value is only surprising if no context expects it (daily and weekly
   seasonality and level shifts are thereby absorbed).
2. **Anomaly likelihood** (Ahmad et al., 2017). The short-term average of raw surprises is compared
   with their long-run distribution; the Gaussian tail probability of that average says how unusual
   the recent stretch is. The score is ``-log10(tail) / 8`` clipped to [0, 1], so the fixed decision
   threshold 0.5 means "a 1-in-10,000 stretch".
3. **New extremes.** A value beyond the range seen so far by more than 10 % of that range scores 1.
   Until the likelihood has its distribution (``warmup`` points), the score is the two-sided
   Gaussian tail of the value against the last ``window`` points, on the same scale.
4. **Novelty.** A stretch of surprise no larger than the largest one seen recently (``repeat_share``
   of it) is a repeat, not news: it raises no alert (:meth:`ContextLikelihoodDetector.update_novel`).
   "Recently" fades with a half-life of ``repeat_days`` (a week, the longest season the predictors
   know) of the series' own sampling. Bursty series whose bursts recur stop paging for each one.

The three decision settings (threshold, quiet period, repeat rule) were chosen on a small grid by
one rule fixed in advance: at most 0.1 false alerts per series-day on clean synthetic series, then
the best sum of the NAB dev subset and the Microsoft set (docs/evaluation.md, with the
leave-one-group-out figures; ``cxstream eval protocol`` measures any choice).
5. **One alert per episode.** After an alert, further alerts are held back for half a day of the
   series' own sampling (12 hourly points, 144 five-minute points, 720 one-minute points; at least
   10), as an operator wants one page per problem (:class:`AlertGate`).

Memory is bounded: three arrays per context (at most 288 daily and 2,016 weekly buckets at the
5-minute floor), about 56 kB per series in the worst case — meant for per-cell and per-KPI series;
per-subscriber state uses the much smaller :class:`~cxstream.detectors.ExperienceDropDetector`.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any

from river import base
from typing_extensions import override

__all__ = ["AlertGate", "ContextLikelihoodDetector", "SeriesMonitor"]

_DAY = 86_400.0
_WEEK_OFFSET_DAYS = 3  # 1970-01-01 was a Thursday: shift so that 0 = Monday


class _Context:
    """EW mean and mean absolute deviation per bucket, in flat arrays."""

    __slots__ = ("alpha", "dev", "mean", "n")

    def __init__(self, size: int, alpha: float) -> None:
        self.alpha = alpha
        self.mean = array("d", bytes(8 * size))
        self.dev = array("d", bytes(8 * size))
        self.n = array("i", bytes(4 * size))

    def error(self, b: int, value: float, floor: float, spread: float = math.inf) -> float:
        """Error of ``value`` in units of this bucket's usual deviation (inf if unknown). A bucket
        seen once predicts its value with ``spread`` (the series' overall deviation) as its scale
        until it has a deviation of its own."""
        n = self.n[b]
        if n < 2:
            if n == 0 or spread == math.inf:
                return math.inf
            return abs(value - self.mean[b]) / (spread if spread > floor else floor)
        dev = self.dev[b]
        return abs(value - self.mean[b]) / (dev if dev > floor else floor)

    def learn(self, b: int, value: float) -> None:
        n = self.n[b]
        if n == 0:
            self.mean[b] = value
            self.n[b] = 1
            return
        a = self.alpha if self.alpha * (n + 1) > 1.0 else 1.0 / (n + 1)
        d = value - self.mean[b]
        self.mean[b] += a * d
        self.dev[b] += a * ((d if d >= 0 else -d) - self.dev[b])
        self.n[b] = n + 1


class ContextLikelihoodDetector(base.AnomalyDetector):
    """Anomaly score in [0, 1] for a univariate series; see the module docstring.

    ``x`` holds the value under ``feature`` and the event time in epoch seconds under ``"t"``
    (without ``"t"`` only the level predictor and the likelihood are used).

    Parameters
    ----------
    feature
        Key of the value in ``x``.
    fast_alpha
        Smoothing of the level predictor.
    season_alpha
        Smoothing of the daily and weekly predictors.
    average
        Points in the short-term average of raw surprises.
    warmup
        Points before any score above 0 (the likelihood needs a distribution first).
    extreme_margin
        Share of the seen range a new extreme must exceed to score 1.
    repeat_share
        A stretch of surprise below this share of the recent largest one is a repeat.
    repeat_days
        Half-life of "recent" for the largest stretch of surprise, in days of the series'
        sampling (2,016 points when the series has no timestamps).
    window
        Points of the recent window whose two-sided Gaussian tail, on the likelihood's scale, is
        the score until the likelihood's warm-up ends (from the ``window_min``-th point on): a
        short series is not left unwatched for its first ``warmup`` points.
    min_resolution_s
        Coarsest context bucket floor (bounds memory).

    Examples
    --------
    >>> import math
    >>> det = ContextLikelihoodDetector()
    >>> scores = []
    >>> for i in range(3000):
    ...     x = {"value": 10 + math.sin(i / 20) + (30 if i == 2500 else 0), "t": 300.0 * i}
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> max(scores[:2500]) < 0.5 < scores[2500]
    True
    """

    def __init__(
        self,
        feature: str = "value",
        fast_alpha: float = 0.2,
        season_alpha: float = 0.3,
        average: int = 5,
        warmup: int = 300,
        extreme_margin: float = 0.1,
        min_resolution_s: float = 300.0,
        repeat_share: float = 1.0,
        repeat_days: float = 7.0,
        window: int = 200,
        window_min: int = 30,
    ) -> None:
        self.feature = feature
        self.fast_alpha = fast_alpha
        self.season_alpha = season_alpha
        self.average = average
        self.warmup = warmup
        self.extreme_margin = extreme_margin
        self.min_resolution_s = min_resolution_s
        self.repeat_share = repeat_share
        self.repeat_days = repeat_days
        self.window = window
        self.window_min = window_min
        self._win: deque[float] = deque(maxlen=window)
        self._win_shift: float | None = None  # sums are of value - shift (no cancellation)
        self._win_sum = 0.0
        self._win_sq = 0.0
        self._early: list[tuple[float, float]] = []  # points before the contexts exist (<= 11)
        self._record = 0.0  # the largest recent short-term surprise, fading
        self._record_decay = 0.5 ** (
            1.0 / 2016.0
        )  # per point; from the sampling interval once known
        self._n = 0
        self._level = _Context(1, fast_alpha)
        self._daily: _Context | None = None
        self._weekly: _Context | None = None
        self._resolution = 0.0
        self._slots = 0
        self._deltas: list[float] = []
        self._prev_t: float | None = None
        self._last: float | None = None
        self._step = 0.0  # EW mean absolute step: the floor of every predictor's deviation
        self._lo = math.inf
        self._hi = -math.inf
        self._recent: deque[float] = deque(maxlen=average)
        self._recent_sum = 0.0
        self._mean = 0.0
        self._var = 1.0

    # -- internals ------------------------------------------------------------------------------
    def _buckets(self, t: float | None) -> tuple[int, int]:
        if t is None or self._daily is None:
            return -1, -1
        slot = int((t % _DAY) // self._resolution)
        day = int(t // _DAY + _WEEK_OFFSET_DAYS) % 7
        return slot, day * self._slots + slot

    def _surprise(self, value: float, t: float | None) -> float:
        floor = self._step * 0.05 + 1e-9
        raw = self._level.error(0, value, floor)
        daily, weekly = self._buckets(t)
        if daily >= 0 and self._daily is not None and self._weekly is not None:
            spread = self._level.dev[0] if self._level.n[0] >= 2 else math.inf
            raw = min(
                raw,
                self._daily.error(daily, value, floor, spread),
                self._weekly.error(weekly, value, floor, spread),
            )
        return 0.0 if raw == math.inf else min(raw, 20.0)

    def _short(self, raw: float) -> float:
        """The short-term average of surprises, with ``raw`` as the newest."""
        full = len(self._recent) == self.average
        total = self._recent_sum - (self._recent[0] if full else 0.0) + raw
        return total / (self.average if full else len(self._recent) + 1)

    def _score(self, value: float, raw: float) -> float:
        if self._n < self.warmup:
            return self._window_score(value)
        return self._likelihood(value, raw)

    def _likelihood(self, value: float, raw: float) -> float:
        if self._n < self.warmup:
            return 0.0
        if self._extreme(value):
            return 1.0
        z = (self._short(raw) - self._mean) / math.sqrt(self._var + 1e-12)
        tail = 0.5 * math.erfc(z / math.sqrt(2.0))
        return min(1.0, -math.log10(tail) / 8.0) if tail > 0.0 else 1.0

    def _window_score(self, value: float) -> float:
        """The two-sided Gaussian tail of ``value`` against the last ``window`` points, on the
        likelihood's scale (``-log10(tail) / 8``)."""
        n = len(self._win)
        if n < self.window_min or self._win_shift is None:
            return 0.0
        mean = self._win_sum / n
        var = self._win_sq / n - mean * mean
        d = value - self._win_shift - mean
        floor = 1e-9 * (abs(mean + self._win_shift) + 1.0)
        z = abs(d) / math.sqrt(var if var > floor * floor else floor * floor)
        tail = math.erfc(z / math.sqrt(2.0))
        return min(1.0, -math.log10(tail) / 8.0) if tail > 0.0 else 1.0

    def _extreme(self, value: float) -> bool:
        margin = self.extreme_margin * (self._hi - self._lo)
        return value > self._hi + margin or value < self._lo - margin

    def _learn_time(self, t: float) -> None:
        if self._prev_t is not None:
            self._deltas.append(t - self._prev_t)
            if len(self._deltas) >= 10:
                median = sorted(self._deltas)[len(self._deltas) // 2]
                self._resolution = max(self.min_resolution_s, median)
                points = self.repeat_days * _DAY / max(median, 1e-3)
                self._record_decay = 0.5 ** (1.0 / max(points, 1.0))
                self._slots = max(1, math.ceil(_DAY / self._resolution))
                self._daily = _Context(self._slots, self.season_alpha)
                self._weekly = _Context(7 * self._slots, self.season_alpha)
                self._deltas = []
        self._prev_t = t

    def _learn(self, value: float, t: float | None, raw: float) -> None:
        daily, weekly = self._buckets(t)
        self._level.learn(0, value)
        if daily >= 0 and self._daily is not None and self._weekly is not None:
            self._daily.learn(daily, value)
            self._weekly.learn(weekly, value)
        elif t is not None and self._daily is None:
            self._early.append((value, t))
            self._learn_time(t)
            if self._daily is not None:  # the contexts exist now: they learn what came before
                for v, at in self._early:
                    d, w = self._buckets(at)
                    self._daily.learn(d, v)
                    if self._weekly is not None:
                        self._weekly.learn(w, v)
                self._early = []
        if self._last is not None:
            step = value - self._last
            self._step += 0.01 * ((step if step >= 0 else -step) - self._step)
        self._last = value
        if self._n < self.warmup:  # the recent window scores only until the likelihood can
            if self._win_shift is None:
                self._win_shift = value
            x = value - self._win_shift
            if len(self._win) == self.window:
                old = self._win[0]
                self._win_sum -= old
                self._win_sq -= old * old
            self._win.append(x)
            self._win_sum += x
            self._win_sq += x * x
        elif self._win:
            self._win.clear()
        self._lo = value if value < self._lo else self._lo
        self._hi = value if value > self._hi else self._hi
        if len(self._recent) == self.average:
            self._recent_sum -= self._recent[0]
        self._recent.append(raw)
        self._recent_sum += raw
        short = self._recent_sum / len(self._recent)
        if self._n >= self.warmup:
            faded = self._record * self._record_decay
            self._record = short if short > faded else faded
        self._n += 1
        a = 0.002 if self._n > self.warmup else 1.0 / self._n
        d = short - self._mean
        self._mean += a * d
        self._var = (1.0 - a) * (self._var + a * d * d)

    # -- public ---------------------------------------------------------------------------------
    def update(self, value: float, t: float | None = None) -> float:
        """Score ``value`` (at epoch seconds ``t``), then learn it; the fast path for streams."""
        return self.update_novel(value, t)[0]

    def update_novel(self, value: float, t: float | None = None) -> tuple[float, bool]:
        """:meth:`update`, and whether the point is news: a new extreme, or a stretch of surprise
        at least ``repeat_share`` of the largest recent one (see the module docstring)."""
        if not math.isfinite(value):
            return 0.0, False
        raw = self._surprise(value, t)
        score = self._score(value, raw)
        novel = score >= 1.0 or self._short(raw) >= self.repeat_share * self._record
        self._learn(value, t, raw)
        return score, novel

    @override
    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        value = x.get(self.feature)
        if value is None or not math.isfinite(value):
            return 0.0
        t = x.get("t")
        return self._score(float(value), self._surprise(float(value), t))

    @override
    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        value = x.get(self.feature)
        if value is None or not math.isfinite(value):
            return
        t = x.get("t")
        self._learn(float(value), t, self._surprise(float(value), t))


_INTERVAL_SAMPLE = 50  # timestamps whose median gap is the series' sampling interval


@dataclass
class AlertGate:
    """Turn scores into alerts: at ``threshold`` or above, then quiet for a while.

    The quiet period is ``hold_days`` of the series' own sampling (its median interval, from the
    first timestamps given to :meth:`decide`), at least ``min_hold`` points: one page per problem
    per half day, whether a point is a minute or an hour. Without timestamps, or before the
    interval is known, it is ``hold`` points; ``hold_days=None`` always uses ``hold``.

    >>> gate = AlertGate(threshold=0.5, hold=2, hold_days=None)
    >>> [gate.decide(s) for s in (0.9, 0.9, 0.9, 0.9, 0.1)]
    [True, False, False, True, False]
    >>> hourly = AlertGate(hold=5, hold_days=0.5)  # 5 points until 50 gaps are seen, then 12
    >>> alerts = [hourly.decide(0.9, 3600.0 * i) for i in range(90)]
    >>> [i for i, a in enumerate(alerts) if a]
    [0, 6, 12, 18, 24, 30, 36, 42, 48, 54, 67, 80]
    """

    threshold: float = 0.5
    hold: int = 150
    hold_days: float | None = 0.5
    min_hold: int = 10
    _quiet: int = 0
    _prev_t: float | None = None
    _gaps: list[float] | None = None
    _interval_hold: int | None = None

    def _learn_interval(self, t: float) -> None:
        if self._prev_t is not None and t > self._prev_t:
            gaps = self._gaps if self._gaps is not None else []
            gaps.append(t - self._prev_t)
            self._gaps = gaps
            if len(gaps) >= _INTERVAL_SAMPLE and self.hold_days is not None:
                interval = sorted(gaps)[len(gaps) // 2]
                self._interval_hold = max(self.min_hold, round(self.hold_days * _DAY / interval))
                self._gaps = None
        self._prev_t = t

    def decide(self, score: float, t: float | None = None) -> bool:
        """Whether this score (of a point at epoch seconds ``t``) raises an alert."""
        if t is not None and self._interval_hold is None and self.hold_days is not None:
            self._learn_interval(t)
        if self._quiet > 0:
            self._quiet -= 1
            return False
        if score >= self.threshold:
            self._quiet = self._interval_hold if self._interval_hold is not None else self.hold
            return True
        return False


@dataclass
class SeriesMonitor:
    """A detector and its gate: the default configuration for any metric series."""

    detector: ContextLikelihoodDetector
    gate: AlertGate

    @classmethod
    def default(cls) -> SeriesMonitor:
        """The configuration the flow and ``cxstream eval nab`` both use."""
        return cls(ContextLikelihoodDetector(), AlertGate())

    def observe(self, value: float, t: float | None = None) -> tuple[float, bool]:
        """Score, learn, decide: ``(score, alert)``; a repeat raises no alert."""
        score, novel = self.detector.update_novel(value, t)
        return score, self.gate.decide(score if novel else 0.0, t)

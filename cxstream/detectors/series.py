"""A univariate online detector for any metric series: contextual prediction + anomaly likelihood.

What the best streaming detectors on the Numenta Anomaly Benchmark share, in a form that runs at
well over 100,000 points per second in pure Python:

1. **Contextual prediction.** Three predictors of the next value: a fast EWMA of recent level, the
   usual value at this time of day, and at this time of the week (context buckets at the series' own
   sampling interval, learned from the first timestamps that move forward, never finer than 5
   minutes). A point's raw surprise is its error against the predictor that explains it *best*, in
   units of that predictor's usual error: a value is only surprising if no context expects it
   (daily and weekly seasonality and level shifts are thereby absorbed).
2. **Anomaly likelihood** (Ahmad et al., 2017). The short-term average of raw surprises is compared
   with their long-run distribution; the Gaussian tail probability of that average says how unusual
   the recent stretch is. The score is ``-log10(tail) / 8`` clipped to [0, 1], so the fixed decision
   threshold 0.5 means "a 1-in-10,000 stretch".
3. **New extremes.** A value beyond the range seen so far by more than 10 % of that range scores 1.
   Until the likelihood has its distribution (``warmup`` points), the score is the two-sided
   Gaussian tail of the value against the last ``window`` points, on the same scale.
4. **Spikes.** A single point beyond every point of its recent window and far from it (its
   two-sided Gaussian tail against the last ``window`` points at most 1e-6: ``spike`` 0.75 on the
   same scale) is news even where a context expects it (a nightly batch job's burst, which
   operators label as an incident each night), provided it is at least as far out as any point of
   the last quarter day (``spike_days``, fading): a burst that recurs within hours is a repeat. A
   point is held to a tail a hundred times stricter than a stretch, because heavy-tailed series
   break the window's Gaussian. A spike must also lie at least 1 % of the range the series has
   shown from its window's mean (``spike_margin``): a flat or quantised metric that moves by one
   step has an enormous tail against a window with almost no spread, and is still no incident.
   While every value of the series has been a count (a non-negative whole number), the window's
   mean and deviation and the point's distance (here and in the warm-up's score) are taken on
   Anscombe's transform of the counts, ``2 sqrt(x + 3/8)``: a low count is skewed, and against
   the Gaussian tail of a quiet night's window an ordinary daytime count would be a
   one-in-a-million point.
   Spikes are news only while they are rare in the series: fewer than ``spike_rare_count`` (2)
   such points in the last ``spike_rare_days`` (3) days of its sampling (a count fading with that
   half-life), or at a time of day where they recur, a scheduled job's burst: such points came
   in its time-of-day bucket (or a neighbour) on earlier days, yesterday or twice in those days
   (a weight of 0.75 in the same fading count; points less than half a day old do not count).
   A series whose noise throws such points every day (heavy-tailed counts, bursty traffic)
   stops paging for each of them. Nor is a point a spike where the same time last week predicts
   it: within ``_WEEK_PREDICTS`` (2) of the level predictor's usual deviation of that time of
   week's mean. The window only holds the last 200 points, so the first rush hour after a quiet
   weekend lies far beyond it; a week later the time of week expects it.
5. **Seasonal stretches.** The same likelihood over the surprise against the time of day and of
   the week alone (the level predictor left out), averaged over ``seasonal_average`` points: a
   series that goes on at its recent level where the time of day expects otherwise (a daily rise
   that does not come, a night that stays busy) is explained by the level predictor point by
   point, and seen here. Scored from the series' fourth day (each time-of-day bucket seen on the
   three days before), at a tail of ``seasonal_tail`` (1e-6), and subject to its own novelty (a
   stretch no larger than its largest recent one is a repeat).
6. **Novelty.** A stretch of surprise no larger than the largest one seen recently (``repeat_share``
   of it) is a repeat, not news: it raises no alert (:meth:`ContextLikelihoodDetector.update_novel`).
   "Recently" is the last ``repeat_days`` (14) days of the series' own sampling, from one
   maximum per day. Bursty series whose bursts recur stop paging for each one, and on a series
   without anomalies the largest stretch of a day is news only when it is the largest of the
   last two weeks, about one day in fifteen. A stretch that saturates the likelihood is news
   anyway, unless its point lies within the range of the last ``window`` points and the stretch
   is below 80 % of that largest: a burst the series has shown, smaller than its recent largest.
   And a stretch past the threshold but short of the likelihood's saturation (a tail between 1e-4
   and 1e-8) is news only while such stretches are rare in the series, as spikes are: fewer than
   ``stretch_rare_count`` (2) began in the last ``stretch_rare_days`` (3) days (a count fading with
   that half-life). A saturated stretch, a new extreme, a spike or a seasonal stretch still is.

7. **One alert per episode.** After an alert, further alerts are held back for half a day of the
   series' own sampling (12 hourly points, 144 five-minute points, 720 one-minute points; at least
   10), as an operator wants one page per problem (:class:`AlertGate`).

The decision settings (threshold, quiet period, repeat rule, spike rule, its margin and its
rarity, the rarity of stretches, the seasonal stretch's average and tail) were
chosen on small grids fixed by reasoning (docs/evaluation.md, with the leave-one-group-out figures;
``cxstream eval protocol`` measures any choice of the first four).

Memory is bounded: three arrays per context (at most 288 daily and 2,016 weekly buckets at the
5-minute floor), the last ``window`` values, the last 32 spike points and two weeks of daily
maxima, about 59 kB per series in the worst case — meant for per-cell and per-KPI series;
per-subscriber state uses the much smaller :class:`~cxstream.detectors.ExperienceDropDetector`.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from river import base
from typing_extensions import override

from cxstream.csvfile import LARGEST

__all__ = ["AlertGate", "ContextLikelihoodDetector", "SeriesMonitor", "ew_moments"]

_DAY = 86_400.0
_SPIKE_MARGIN = 0.01  # share of the range seen a spike must move (docs/evaluation.md)
_WEEK_OFFSET_DAYS = 3  # 1970-01-01 was a Thursday: shift so that 0 = Monday
_SEASONAL_MATURE = 3  # earlier days on which a time-of-day bucket is seen before it is scored
_SEASONAL_AVERAGE = 12  # points in a seasonal stretch (docs/evaluation.md)
_SEASONAL_TAIL = 1e-6  # a seasonal stretch's tail at the decision threshold
_SPIKE_RARE_DAYS = 3.0  # spikes are news while fewer than _SPIKE_RARE_COUNT came in this many days
_SPIKE_RARE_COUNT = 2.0
_SPIKE_LOG = 32  # the latest spike points kept, with their time-of-day bucket
_SPIKE_RECUR = 0.75  # weight of earlier days' spikes at a time of day where they recur
_SPIKE_EARLIER = 0.5  # days before a spike counts as one of an earlier day
_STRETCH_RARE_DAYS = 3.0  # the same "rare" as for spikes (docs/evaluation.md)
_STRETCH_RARE_COUNT = 2.0
_SATURATED_REPEAT = 0.8  # share of the recent largest stretch a saturated one within range repeats
_WEEK_PREDICTS = 2.0  # usual deviations within which the time of week's mean predicts a spike
_EARLY_MAX = 64  # points kept for the contexts while the sampling interval is not yet known


def _usable(value: float) -> bool:
    """Whether the detector scores and learns ``value``: finite and within +-1e150
    (:data:`~cxstream.csvfile.LARGEST`; a missing point otherwise: scored 0, not learned)."""
    return -LARGEST <= value <= LARGEST


def _whole(value: float) -> bool:
    """Whether ``value`` could be a count: a non-negative whole number."""
    return value >= 0.0 and value == math.floor(value)


def _anscombe(count: float) -> float:
    """Anscombe's transform of a count, ``2 sqrt(x + 3/8)``: Poisson counts have a standard
    deviation close to 1 on it whatever their level."""
    return 2.0 * math.sqrt(count + 0.375)


def _when(t: float | None) -> float | None:
    """An event time the detector can place, or None (no time: only the level is predicted)."""
    return t if t is not None and math.isfinite(t) else None


def _average_with(recent: deque[float], total: float, size: int, newest: float) -> float:
    """The mean of the last ``size`` values once ``newest`` joins ``recent`` (whose sum is
    ``total``, at most ``size`` values)."""
    full = len(recent) == size
    return (total - (recent[0] if full else 0.0) + newest) / (size if full else len(recent) + 1)


def ew_moments(mean: float, var: float, x: float, a: float) -> tuple[float, float]:
    """An exponentially weighted mean and variance after ``x``, with weight ``a``."""
    d = x - mean
    return mean + a * d, (1.0 - a) * (var + a * d * d)


def _fade_per_point(days: float, interval: float) -> float:
    """The per-point factor of a half-life of ``days`` at a sampling ``interval`` (seconds)."""
    points = days * _DAY / max(interval, 1e-3)
    factor: float = 0.5 ** (1.0 / max(points, 1.0))
    return factor


def _distance_to(score: Callable[[float], float], level: float) -> float:
    """The smallest distance (in SDs, to 1e-12) at which ``score``, rising with it, reaches
    ``level``."""
    z, step = 0.0, 64.0
    while step > 1e-12:
        if score(z + step) < level:
            z += step
        step /= 2.0
    return z


def _upper_tail_score(x: float, mean: float, var: float, scale: float) -> float:
    """``-log10`` of the upper Gaussian tail of ``x`` against ``mean`` and ``var``, over
    ``scale``, at most 1."""
    z = (x - mean) / math.sqrt(var + 1e-12)
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    return min(1.0, -math.log10(tail) / scale) if tail > 0.0 else 1.0


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


class _Largest:
    """The largest value of the last ``days`` days (today's and the days before), from one
    maximum per day: a window of at most ``days`` + 1 numbers, that only lets a value go when
    its day leaves the window."""

    __slots__ = ("days", "maxima", "past", "today", "today_max", "value")

    def __init__(self, days: float, value: float = 0.0, today: int = 0) -> None:
        self.days = days
        self.maxima: deque[tuple[int, float]] = deque()  # (day, its largest), the days before
        self.past = 0.0  # the largest of them
        self.today = today
        self.today_max = value
        self.value = value  # the largest of the window, today's included

    def add(self, day: int, x: float) -> None:
        """Learn ``x`` of day ``day`` (days only go forward)."""
        if day == self.today:
            if x > self.today_max:
                self.today_max = x
                if x > self.value:
                    self.value = x
            return
        self.maxima.append((self.today, self.today_max))
        while self.maxima and self.maxima[0][0] < day - self.days:
            self.maxima.popleft()
        self.past = max((m for _, m in self.maxima), default=0.0)
        self.today, self.today_max = day, x
        self.value = x if x > self.past else self.past


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
        Days of the series' sampling over which "recent" runs for the largest stretch of
        surprise (288 points a day when the series has no timestamps): the largest of each day
        is kept, and leaves when its day is more than ``repeat_days`` old.
    window
        Points of the recent window whose two-sided Gaussian tail, on the likelihood's scale, is
        the score until the likelihood's warm-up ends (from the ``window_min``-th point on): a
        short series is not left unwatched for its first ``warmup`` points. After it, the same
        tail scores spikes.
    spike
        Score a single point's tail must reach to count as a spike after the warm-up (0.75: a
        1-in-a-million point); ``None``: no spike rule.
    spike_days
        Half-life of "recent" for the farthest point, in days of the series' sampling: a spike
        no farther out than it is a repeat.
    spike_margin
        Share of the range seen so far (largest minus smallest value) a spike must lie from the
        mean of its window: a one-step blip of a near-flat series is not a spike.
    spike_rare_days, spike_rare_count
        Spikes are news while fewer than ``spike_rare_count`` points passed the spike rule's tail,
        range and margin in the last ``spike_rare_days`` days of the series' sampling (a count
        fading with that half-life), or at a time of day where they recur: such points came in
        the point's time-of-day bucket or a neighbour on earlier days (at least half a day
        before), weighing at least 0.75 in the same fading count (yesterday's, or two within
        those days).
    stretch_rare_days, stretch_rare_count
        A stretch whose likelihood passes the threshold without saturating is news only while
        fewer than ``stretch_rare_count`` such stretches began in the last ``stretch_rare_days``
        days of the series' sampling (a count fading with that half-life).
    seasonal_average
        Points in the short-term average of the seasonal surprise (against the time of day and
        of the week only).
    seasonal_tail
        Tail a stretch of seasonal surprise must reach to score 0.5 (``None``: not scored).
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
        repeat_days: float = 14.0,
        window: int = 200,
        window_min: int = 30,
        spike: float | None = 0.75,
        spike_days: float = 0.25,
        spike_margin: float = _SPIKE_MARGIN,
        spike_rare_days: float = _SPIKE_RARE_DAYS,
        spike_rare_count: float = _SPIKE_RARE_COUNT,
        stretch_rare_days: float = _STRETCH_RARE_DAYS,
        stretch_rare_count: float = _STRETCH_RARE_COUNT,
        seasonal_average: int = _SEASONAL_AVERAGE,
        seasonal_tail: float | None = _SEASONAL_TAIL,
    ) -> None:
        if min(spike_days, repeat_days, spike_rare_days, stretch_rare_days) <= 0:
            msg = (
                "spike_days, repeat_days, spike_rare_days and stretch_rare_days must be above 0, "
                f"not {spike_days}, {repeat_days}, {spike_rare_days} and {stretch_rare_days}"
            )
            raise ValueError(msg)
        if seasonal_tail is not None and not 0.0 < seasonal_tail < 1.0:
            msg = f"seasonal_tail must be above 0 and below 1, not {seasonal_tail}"
            raise ValueError(msg)
        if seasonal_average < 1:
            msg = f"seasonal_average must be at least 1, not {seasonal_average}"
            raise ValueError(msg)
        if not 0.0 <= spike_margin < 1.0:
            msg = f"spike_margin must be at least 0 and below 1, not {spike_margin}"
            raise ValueError(msg)
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
        self.spike = spike
        self.spike_days = spike_days
        self.spike_margin = spike_margin
        self.spike_rare_days = spike_rare_days
        self.spike_rare_count = spike_rare_count
        self.stretch_rare_days = stretch_rare_days
        self.stretch_rare_count = stretch_rare_count
        self.seasonal_average = seasonal_average
        self.seasonal_tail = seasonal_tail
        self._init_seasonal()
        self._init_spike_log()
        self._init_stretches()
        self._far = 0.0  # the farthest recent point from its window, in window SDs, fading
        self._far_decay = 0.5 ** (1.0 / (288.0 * spike_days))  # per point; from the interval
        self._win: deque[float] = deque(maxlen=window)
        self._win_shift: float | None = None  # sums are of value - shift (no cancellation)
        self._win_sum = 0.0
        self._win_sq = 0.0
        self._counts = True  # every value learned so far a count (a non-negative whole number)
        self._count_sum = 0.0  # the window's Anscombe-transformed values, while it holds counts
        self._count_sq = 0.0
        self._early: list[tuple[float, float]] = []  # before the contexts exist (<= _EARLY_MAX)
        self._records = _Largest(repeat_days)  # short-term surprises, largest of each day
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a snapshot, also one taken before the spike rule had its margin, before
        seasonal stretches were scored (they take today's defaults; the seasonal likelihood
        starts learning then) or without the points per day (from the spike count's fade)."""
        self.__dict__.update(state)
        self.__dict__.setdefault("spike_margin", _SPIKE_MARGIN)
        restored_day_points = "_day_points" in state
        if "_spike_log" not in self.__dict__:
            self.spike_rare_days = _SPIKE_RARE_DAYS
            self.spike_rare_count = _SPIKE_RARE_COUNT
            self._init_spike_log()
            # the same sampling as the quarter-day fade of the farthest point
            self._spike_decay = self._far_decay ** (self.spike_days / self.spike_rare_days)
        if not restored_day_points:  # the points per day the spike count fades over
            half_lives = math.log2(1.0 / self._spike_decay)
            self._day_points = 1.0 / (self.spike_rare_days * half_lives)
        if "_stretches" not in self.__dict__:
            self.stretch_rare_days = _STRETCH_RARE_DAYS
            self.stretch_rare_count = _STRETCH_RARE_COUNT
            self._init_stretches()
            self._stretch_decay = self._far_decay ** (self.spike_days / self.stretch_rare_days)
        if "_s_recent" not in self.__dict__:
            self.seasonal_average = _SEASONAL_AVERAGE
            self.seasonal_tail = _SEASONAL_TAIL
            self._init_seasonal()
        if "_records" not in self.__dict__:  # a fading record: it starts today's maximum
            today = int(self._n // self._day_points)
            self._records = _Largest(self.repeat_days, self.__dict__.pop("_record", 0.0), today)
            s_record = self.__dict__.pop("_s_record", 0.0)
            self._s_records = _Largest(self.repeat_days, s_record, today)
        self.__dict__.pop("_record_decay", None)
        if "_counts" not in self.__dict__:  # not known to be counts: scored as before
            self._counts, self._count_sum, self._count_sq = False, 0.0, 0.0

    def _init_spike_log(self) -> None:
        self._spikes = 0.0  # points that passed the spike rule, faded to the last of them
        self._spikes_at = 0  # the point the count was last brought up to date at
        self._spike_decay = 0.5 ** (1.0 / (288.0 * self.spike_rare_days))  # per point
        self._spike_log: deque[tuple[int, int]] = deque(maxlen=_SPIKE_LOG)  # (point, bucket)
        self._day_points = _DAY / 300.0  # points per day; from the sampling interval once known
        # the smallest distance whose tail reaches the spike rule's
        self._spike_z = 0.0 if self.spike is None else _distance_to(self._tail, self.spike)

    def _init_stretches(self) -> None:
        self._stretches = 0.0  # stretches begun past the threshold, faded to the last of them
        self._stretches_at = 0
        self._stretch_decay = 0.5 ** (1.0 / (288.0 * self.stretch_rare_days))  # per point
        self._in_stretch = False

        # the likelihood's threshold (0.5) and saturation (1.0) as distances from its mean, in SDs
        def likelihood(z: float) -> float:
            return _upper_tail_score(z, 0.0, 1.0, 8.0)

        self._stretch_z = (_distance_to(likelihood, 0.5), _distance_to(likelihood, 1.0))

    def _init_seasonal(self) -> None:
        self._s_recent: deque[float] = deque(maxlen=self.seasonal_average)
        self._s_sum = 0.0
        self._s_n = 0
        self._s_mean = 0.0
        self._s_var = 1.0
        self._s_records = _Largest(self.repeat_days)  # seasonal stretches, largest of each day
        self._s_t0: float | None = None  # the first timestamp learned
        self._s_ready = False  # the series has run for _SEASONAL_MATURE days
        # score = -log10(tail) / _s_scale: 0.5 at seasonal_tail
        tail = self.seasonal_tail if self.seasonal_tail is not None else _SEASONAL_TAIL
        self._s_scale = -2.0 * math.log10(tail)

    # -- internals ------------------------------------------------------------------------------
    def _buckets(self, t: float | None) -> tuple[int, int]:
        if t is None or self._daily is None:
            return -1, -1
        slot = int((t % _DAY) // self._resolution)
        if slot >= self._slots:  # a time a hair before midnight, whose remainder rounds to a day
            slot = self._slots - 1
        day = int(t // _DAY + _WEEK_OFFSET_DAYS) % 7
        return slot, day * self._slots + slot

    def _surprise(self, value: float, daily: int, weekly: int) -> tuple[float, float | None]:
        """The raw surprise of ``value`` in the buckets of its time (see :meth:`_buckets`), and
        its surprise against the time of day and week alone (``None`` until the series has run
        for ``_SEASONAL_MATURE`` days and the time-of-day bucket has been seen as many times: on
        three earlier days, as points finer than a bucket fill it several times a day)."""
        floor = self._dev_floor()
        raw = self._level.error(0, value, floor)
        seasonal = None
        if daily >= 0 and self._daily is not None and self._weekly is not None:
            spread = self._level.dev[0] if self._level.n[0] >= 2 else math.inf
            season = min(
                self._daily.error(daily, value, floor, spread),
                self._weekly.error(weekly, value, floor, spread),
            )
            raw = min(raw, season)
            if (
                self._s_ready
                and self._daily.n[daily] >= _SEASONAL_MATURE
                and self.seasonal_tail is not None
            ):
                seasonal = 0.0 if season == math.inf else min(season, 20.0)
        return (0.0 if raw == math.inf else min(raw, 20.0)), seasonal

    def _dev_floor(self) -> float:
        """The least usual deviation a predictor is credited with: 5 % of the series' usual step."""
        return self._step * 0.05 + 1e-9

    def _short(self, raw: float) -> float:
        """The short-term average of surprises, with ``raw`` as the newest."""
        return _average_with(self._recent, self._recent_sum, self.average, raw)

    def _assess(
        self,
        value: float,
        raw: float,
        z: float,
        seasonal: float | None = None,
        daily: int = -1,
        weekly: int = -1,
    ) -> tuple[float, bool]:
        """The score, and whether the point is news (see :meth:`update_novel`)."""
        short = self._short(raw)
        score = self._tail(z) if self._n < self.warmup else self._likelihood(value, short)
        if score >= 1.0:  # saturated: news unless a smaller burst within the recent window's range
            novel = (
                self._n < self.warmup
                or short >= _SATURATED_REPEAT * self._records.value
                or self._extreme(value)
                or self._outside(value)
            )
        else:
            novel = short >= self.repeat_share * self._records.value
        if self.spike is not None and self._n >= self.warmup and z >= self._far:
            point = self._tail(z)
            if (
                point >= self.spike
                and self._outside(value)
                and self._sized(value)
                and self._spike_news(daily)
                and not self._week_predicts(value, weekly)
            ):
                return (point if point > score else score), True
        if seasonal is not None and self._s_n >= self.warmup:
            stretch = self._s_short(seasonal)
            if stretch >= self._s_records.value:  # a repeat is no news, whatever its tail
                s_score = self._s_likelihood(stretch)
                if s_score >= 0.5 and s_score > score:
                    return s_score, True
        if (
            novel
            and 0.5 <= score < 1.0
            and self._n >= self.warmup
            and self._stretches * self._stretch_decay ** (self._n - 1 - self._stretches_at)
            >= self.stretch_rare_count
        ):
            return score, False  # such stretches are no longer rare here
        return score, novel

    def _spiky(self, value: float, z: float) -> bool:
        """Whether the point passes the spike rule's tail, range and margin (not its fade)."""
        return (
            self.spike is not None
            and self._n >= self.warmup
            and self._tail(z) >= self.spike
            and self._outside(value)
            and self._sized(value)
        )

    def _spike_news(self, daily: int) -> bool:
        """Whether a spike in the time-of-day bucket ``daily`` is news: spikes are still rare
        here, or they recur at this time of day: the spikes of earlier days (at least
        ``_SPIKE_EARLIER`` days before) in this bucket or a neighbour weigh ``_SPIKE_RECUR`` in
        the fading count (yesterday's, or two within ``spike_rare_days``). One earlier spike in
        three days at about this time is a coincidence in a series that throws several a day."""
        if (
            self._spikes * self._spike_decay ** (self._n - 1 - self._spikes_at)
            < self.spike_rare_count
        ):
            return True
        if daily < 0 or self._slots < 1:
            return False
        earlier = self._n - _SPIKE_EARLIER * self._day_points
        for shift in (-1, 0, 1):
            bucket = (daily + shift) % self._slots
            weight = sum(
                self._spike_decay ** (self._n - n)
                for n, b in self._spike_log
                if b == bucket and n <= earlier
            )
            if weight >= _SPIKE_RECUR:
                return True
        return False

    def _week_predicts(self, value: float, weekly: int) -> bool:
        """Whether the time of week (bucket ``weekly``, seen at least once) expects ``value``: it
        lies within ``_WEEK_PREDICTS`` of the level predictor's usual deviation of the bucket's
        mean. Monday's first rush hour after a quiet weekend is no spike once a Monday was seen."""
        week = self._weekly
        if weekly < 0 or week is None or week.n[weekly] < 1:
            return False
        floor = self._dev_floor()
        dev = self._level.dev[0]
        return abs(value - week.mean[weekly]) < _WEEK_PREDICTS * (dev if dev > floor else floor)

    def _s_short(self, seasonal: float) -> float:
        """The short-term average of seasonal surprises, with ``seasonal`` as the newest."""
        return _average_with(self._s_recent, self._s_sum, self.seasonal_average, seasonal)

    def _s_likelihood(self, stretch: float) -> float:
        """The seasonal stretch's Gaussian tail against its long-run distribution, on the score's
        scale (0.5 at ``seasonal_tail``)."""
        return _upper_tail_score(stretch, self._s_mean, self._s_var, self._s_scale)

    def _s_learn(self, seasonal: float, day: int) -> None:
        if len(self._s_recent) == self.seasonal_average:
            self._s_sum -= self._s_recent[0]
        self._s_recent.append(seasonal)
        self._s_sum += seasonal
        stretch = self._s_sum / len(self._s_recent)
        self._s_n += 1
        if self._s_n > self.warmup:
            self._s_records.add(day, stretch)
        a = 0.002 if self._s_n > self.warmup else 1.0 / self._s_n
        self._s_mean, self._s_var = ew_moments(self._s_mean, self._s_var, stretch, a)

    def _likelihood(self, value: float, short: float) -> float:
        """The anomaly likelihood of the short-term average of surprises ``short``."""
        if self._n < self.warmup:
            return 0.0
        if self._extreme(value):
            return 1.0
        return _upper_tail_score(short, self._mean, self._var, 8.0)

    def _z(self, value: float) -> float:
        """How far ``value`` is from the mean of the last ``window`` points, in their standard
        deviations (0 until the window holds ``window_min`` points), on the Anscombe scale while
        the series is one of counts."""
        n = len(self._win)
        if n < self.window_min or self._win_shift is None:
            return 0.0
        if self._counts and _whole(value):  # on the counts' Anscombe scale
            mean = self._count_sum / n
            var = self._count_sq / n - mean * mean
            d = _anscombe(value) - mean
            floor = 1e-9 * (mean + 1.0)
        else:
            mean = self._win_sum / n
            var = self._win_sq / n - mean * mean
            d = value - self._win_shift - mean
            floor = 1e-9 * (abs(mean + self._win_shift) + 1.0)
        return abs(d) / math.sqrt(var if var > floor * floor else floor * floor)

    def _recentre(self) -> None:
        """Shift the window's values to its mean and sum them afresh, once per ``window`` points:
        the running sums neither drift nor lose precision when the series' level moves far from
        where it started."""
        if self._win_shift is None or not self._win:
            return
        mean = self._win_sum / len(self._win)
        values = [x - mean for x in self._win]
        self._win_shift += mean
        self._win.clear()
        self._win.extend(values)
        self._win_sum = math.fsum(values)
        self._win_sq = math.fsum(x * x for x in values)
        if self._counts:
            counts = [self._count_of(x) for x in values]
            self._count_sum = math.fsum(counts)
            self._count_sq = math.fsum(c * c for c in counts)

    def _outside(self, value: float) -> bool:
        """Whether ``value`` lies beyond every point of the recent window."""
        if self._win_shift is None or not self._win:
            return False
        x = value - self._win_shift
        return x > max(self._win) or x < min(self._win)

    def _sized(self, value: float) -> bool:
        """Whether ``value`` lies at least ``spike_margin`` of the range seen so far from the mean
        of the recent window (called only once the window holds points)."""
        mean = self._win_sum / len(self._win) + (self._win_shift or 0.0)
        return abs(value - mean) >= self.spike_margin * (self._hi - self._lo)

    @staticmethod
    def _tail(z: float) -> float:
        """The two-sided Gaussian tail of ``z`` on the likelihood's scale (``-log10(tail) / 8``)."""
        tail = math.erfc(z / math.sqrt(2.0))
        return min(1.0, -math.log10(tail) / 8.0) if tail > 0.0 else 1.0

    def _extreme(self, value: float) -> bool:
        margin = self.extreme_margin * (self._hi - self._lo)
        return value > self._hi + margin or value < self._lo - margin

    def _learn_time(self, t: float) -> None:
        # only time that moves forward is an interval: points stamped alike (a batch written with
        # one timestamp) would otherwise make the interval 0 and a "day" endless
        if self._prev_t is not None and t > self._prev_t:
            self._deltas.append(t - self._prev_t)
            if len(self._deltas) >= 10:
                median = sorted(self._deltas)[len(self._deltas) // 2]
                self._resolution = max(self.min_resolution_s, median)
                self._far_decay = _fade_per_point(self.spike_days, median)
                self._spike_decay = _fade_per_point(self.spike_rare_days, median)
                self._day_points = _DAY / max(median, 1e-3)
                self._stretch_decay = _fade_per_point(self.stretch_rare_days, median)
                self._slots = max(1, math.ceil(_DAY / self._resolution))
                self._daily = _Context(self._slots, self.season_alpha)
                self._weekly = _Context(7 * self._slots, self.season_alpha)
                self._deltas = []
        self._prev_t = t

    def _learn(
        self,
        value: float,
        t: float | None,
        raw: float,
        z: float,
        daily: int,
        weekly: int,
        seasonal: float | None = None,
    ) -> None:
        if z >= self._spike_z and self._spiky(value, z):  # before the window and range learn it
            self._spikes = self._spikes * self._spike_decay ** (self._n - self._spikes_at) + 1.0
            self._spikes_at = self._n
            self._spike_log.append((self._n, daily))
        day = int(self._n // self._day_points)  # of the series' sampling, for the repeat records
        if seasonal is not None:
            self._s_learn(seasonal, day)
        elif not self._s_ready and t is not None:
            if self._s_t0 is None:
                self._s_t0 = t
            self._s_ready = t - self._s_t0 >= _SEASONAL_MATURE * _DAY
        self._level.learn(0, value)
        if daily >= 0 and self._daily is not None and self._weekly is not None:
            self._daily.learn(daily, value)
            self._weekly.learn(weekly, value)
        elif t is not None and self._daily is None:
            if len(self._early) >= _EARLY_MAX:  # timestamps that do not move: bounded anyway
                del self._early[0]
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
        faded = self._far * self._far_decay
        self._far = z if z > faded else faded
        if self._win_shift is None:
            self._win_shift = value
        x = value - self._win_shift
        if self._counts:
            self._learn_count(value)
        if len(self._win) == self.window:
            old = self._win[0]
            self._win_sum -= old
            self._win_sq -= old * old
        self._win.append(x)
        self._win_sum += x
        self._win_sq += x * x
        if self._n % self.window == self.window - 1:
            self._recentre()
        lo, hi = self._lo, self._hi
        self._lo = value if value < lo else lo
        self._hi = value if value > hi else hi
        if len(self._recent) == self.average:
            self._recent_sum -= self._recent[0]
        self._recent.append(raw)
        self._recent_sum += raw
        short = self._recent_sum / len(self._recent)
        if self._n >= self.warmup:
            self._records.add(day, short)
            if self._in_stretch or short >= self._mean + self._stretch_z[0] * math.sqrt(
                self._var + 1e-12
            ):
                self._learn_stretch(value, short, lo, hi)
        self._n += 1
        a = 0.002 if self._n > self.warmup else 1.0 / self._n
        self._mean, self._var = ew_moments(self._mean, self._var, short, a)

    def _count_of(self, x: float) -> float:
        """The Anscombe transform of a window entry ``x`` (stored less the window's shift; the
        shift's rounding can leave a count of 0 a hair below it)."""
        return _anscombe(max(x + (self._win_shift or 0.0), 0.0))

    def _learn_count(self, value: float) -> None:
        """Keep the window's Anscombe-transformed sums while the series is one of counts (called
        before ``value`` joins the window)."""
        if not _whole(value):
            self._counts = False
            return
        if len(self._win) == self.window:
            gone = self._count_of(self._win[0])
            self._count_sum -= gone
            self._count_sq -= gone * gone
        c = _anscombe(value)
        self._count_sum += c
        self._count_sq += c * c

    def _learn_stretch(self, value: float, short: float, lo: float, hi: float) -> None:
        """Count a stretch that begins past the likelihood's threshold without saturating it
        (``lo`` and ``hi``: the range before this point, for the new-extreme rule)."""
        z = (short - self._mean) / math.sqrt(self._var + 1e-12)
        margin = self.extreme_margin * (hi - lo)
        high = self._stretch_z[0] <= z < self._stretch_z[1] and lo - margin <= value <= hi + margin
        if high and not self._in_stretch:
            faded = self._stretches * self._stretch_decay ** (self._n - self._stretches_at)
            self._stretches = faded + 1.0
            self._stretches_at = self._n
        self._in_stretch = high

    # -- public ---------------------------------------------------------------------------------
    def update(self, value: float, t: float | None = None) -> float:
        """Score ``value`` (at epoch seconds ``t``), then learn it; the fast path for streams."""
        return self.update_novel(value, t)[0]

    @property
    def scoring(self) -> bool:
        """Whether a point can score above 0 yet: the recent window holds ``window_min`` points
        (before, every score is 0)."""
        return len(self._win) >= self.window_min

    def update_novel(self, value: float, t: float | None = None) -> tuple[float, bool]:
        """:meth:`update`, and whether the point is news: a new extreme, or a stretch of surprise
        at least ``repeat_share`` of the largest recent one (see the module docstring)."""
        if not _usable(value):
            return 0.0, False
        t = _when(t)
        daily, weekly = self._buckets(t)
        raw, seasonal = self._surprise(value, daily, weekly)
        z = self._z(value)
        score, novel = self._assess(value, raw, z, seasonal, daily, weekly)
        self._learn(value, t, raw, z, daily, weekly, seasonal)
        return score, novel

    @override
    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        value = x.get(self.feature)
        if value is None or not _usable(value):
            return 0.0
        v = float(value)
        daily, weekly = self._buckets(_when(x.get("t")))
        raw, seasonal = self._surprise(v, daily, weekly)
        return self._assess(v, raw, self._z(v), seasonal, daily, weekly)[0]

    @override
    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        value = x.get(self.feature)
        if value is None or not _usable(value):
            return
        v = float(value)
        t = _when(x.get("t"))
        daily, weekly = self._buckets(t)
        raw, seasonal = self._surprise(v, daily, weekly)
        self._learn(v, t, raw, self._z(v), daily, weekly, seasonal)


_INTERVAL_SAMPLE = 50  # timestamps whose median gap is the series' sampling interval


@dataclass
class AlertGate:
    """Turn scores into alerts: at ``threshold`` or above, then quiet for a while.

    The quiet period is ``hold_days`` of the series' own sampling (its median interval, from the
    first timestamps given to :meth:`decide`; the median of the gaps seen so far until 50 are),
    at least ``min_hold`` points: one page per problem per half day, whether a point is a minute
    or an hour. Without timestamps, or at the first timestamp, it is ``hold`` points;
    ``hold_days=None`` always uses ``hold``.

    >>> gate = AlertGate(threshold=0.5, hold=2, hold_days=None)
    >>> [gate.decide(s) for s in (0.9, 0.9, 0.9, 0.9, 0.1)]
    [True, False, False, True, False]
    >>> hourly = AlertGate(hold=5, hold_days=0.5)  # 5 points at the first point, then 12
    >>> alerts = [hourly.decide(0.9, 3600.0 * i) for i in range(90)]
    >>> [i for i, a in enumerate(alerts) if a]
    [0, 6, 19, 32, 45, 58, 71, 84]
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
                self._interval_hold = self._hold_for(gaps)
                self._gaps = None
        self._prev_t = t

    def _hold_for(self, gaps: list[float]) -> int:
        """``hold_days`` in points of the median of ``gaps`` (at least ``min_hold``)."""
        interval = sorted(gaps)[len(gaps) // 2]
        return max(self.min_hold, round((self.hold_days or 0.0) * _DAY / interval))

    def _hold_now(self) -> int:
        """The quiet period an alert starts now: in the series' sampling once a gap is seen (a
        fixed ``hold`` of points would be days of an hourly series' silence)."""
        if self._interval_hold is not None:
            return self._interval_hold
        if self._gaps and self.hold_days is not None:
            return self._hold_for(self._gaps)
        return self.hold

    def decide(self, score: float, t: float | None = None) -> bool:
        """Whether this score (of a point at epoch seconds ``t``) raises an alert."""
        if t is not None and self._interval_hold is None and self.hold_days is not None:
            self._learn_interval(t)
        if self._quiet > 0:
            self._quiet -= 1
            return False
        if score >= self.threshold:
            self._quiet = self._hold_now()
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

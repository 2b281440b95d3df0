"""Per-subscriber degradation detection on the experience score.

:class:`ExperienceDropDetector` is a River anomaly detector (``learn_one``/``score_one``, high means
anomalous, score before learn). It compares the experience score with a slow, robust baseline
(mean and variance learned only from normal points) *per group* (the session's service: a call's
E-model score and a stream's throughput score are different scales, so a change in a subscriber's
mix of services must move no baseline), and smooths the deviations, in baseline standard
deviations, over all the subscriber's events, so evidence from every service adds up. It also
knows what "poor" means in absolute terms (on a fast EWMA of the score, the subscriber's
experience index), so a subscriber who is bad from their first event is still caught.

:class:`SubscriberMonitor` is the per-subscriber state the dataflow keeps: the detector, baselines of
the raw inputs (to say *why*), and an open/closed episode so one degradation raises one alert.
Both are plain, picklable Python objects with no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from river import base
from typing_extensions import override

from cxstream.detectors.experience import demand_evident, experience_score
from cxstream.qos import QOS

__all__ = [
    "CLEAR_S",
    "EPISODE_HALF_LIFE_S",
    "INPUTS",
    "Detection",
    "ExperienceDropDetector",
    "SubscriberMonitor",
    "decay_episodes",
    "explain_drop",
]


def _logistic(z: float) -> float:
    if z > 35:
        return 1.0
    if z < -35:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


class ExperienceDropDetector(base.AnomalyDetector):
    """Score how far a series has dropped below its own learned normal, in [0, 1].

    Parameters
    ----------
    feature
        Name of the feature in ``x`` to watch.
    group
        Name of the feature in ``x`` whose value selects the baseline (absent: one baseline).
        Bounded memory needs few distinct values (here, the three services).
    grace_events
        Events before the relative part of the score is trusted; until then only the absolute
        ``poor`` level counts.
    fast_alpha, slow_alpha
        Smoothing of the fast level and of the slow baseline.
    poor
        Level below which the series is bad whatever its history (score 0.5 there).
    threshold
        The score at which a point is anomalous (used by the episode logic of the monitor).
    min_std
        Floor of the baseline's standard deviation: a subscriber whose experience never varies
        must still not alert on one bad session (with the defaults it takes two in a row).

    Examples
    --------
    >>> det = ExperienceDropDetector()
    >>> for _ in range(30):
    ...     det.learn_one({"experience": 90.0})
    >>> det.score_one({"experience": 89.0}) < 0.1
    True

    One bad point is not yet a degradation; a second in a row is:

    >>> det.score_one({"experience": 20.0}) < 0.9
    True
    >>> det.learn_one({"experience": 20.0})
    >>> det.score_one({"experience": 20.0}) > 0.9
    True

    Each service has its own normal: a subscriber whose calls score 70 and whose downloads score
    100 is not degraded when it makes calls only.

    >>> det = ExperienceDropDetector()
    >>> for _ in range(30):
    ...     det.learn_one({"experience": 100.0, "service": "data"})
    ...     det.learn_one({"experience": 70.0, "service": "voice"})
    >>> det.score_one({"experience": 70.0, "service": "voice"}) < 0.1
    True
    """

    def __init__(
        self,
        feature: str = "experience",
        group: str = "service",
        grace_events: int = 8,
        fast_alpha: float = 0.3,
        slow_alpha: float = 0.05,
        poor: float = 45.0,
        threshold: float = 0.9,
        min_std: float = 6.0,
    ) -> None:
        self.feature = feature
        self.group = group
        self.grace_events = grace_events
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.poor = poor
        self.threshold = threshold
        self.min_std = min_std
        self._n = 0
        self._fast = math.nan
        self._z = 0.0  # the smoothed deviation below the baselines, in standard deviations
        self._baselines: dict[Any, tuple[int, float, float]] = {}  # group -> (n, mean, var)

    def _candidate_fast(self, value: float) -> float:
        if self._n == 0:
            return value
        return self.fast_alpha * value + (1.0 - self.fast_alpha) * self._fast

    def _candidate_z(self, value: float, n: int, mean: float, var: float) -> float:
        d = (mean - value) / max(math.sqrt(var), self.min_std) if n else 0.0
        return self.fast_alpha * d + (1.0 - self.fast_alpha) * self._z

    def _score(self, value: float, group: Any) -> float:
        absolute = _logistic((self.poor - self._candidate_fast(value)) / 4.0)
        n, mean, var = self._baselines.get(group, (0, math.nan, 25.0))
        if n < self.grace_events:
            return absolute
        relative = _logistic(2.0 * (self._candidate_z(value, n, mean, var) - 3.0))
        return max(absolute, relative)

    @override
    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        value = x.get(self.feature)
        if value is None or not math.isfinite(value):
            return 0.0
        return self._score(float(value), x.get(self.group))

    @override
    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        value = x.get(self.feature)
        if value is None or not math.isfinite(value):
            return
        value = float(value)
        group = x.get(self.group)
        n, mean, var = self._baselines.get(group, (0, math.nan, 25.0))
        # Points that already look suspicious (score >= 0.5) barely move the baseline, and every
        # update is clipped at 3 standard deviations, so one outlier cannot inflate the variance
        # and hide the next one.
        slow = self._slow_weight(n, self._score(value, group))
        self._z = self._candidate_z(value, n, mean, var)
        self._fast = self._candidate_fast(value)
        if n == 0:
            mean = value
        else:
            alpha = slow
            if n < self.grace_events:
                alpha = max(alpha, 1.0 / (n + 1))
            limit = 3.0 * max(math.sqrt(var), self.min_std)
            delta = min(max(value - mean, -limit), limit)
            mean += alpha * delta
            var = (1.0 - alpha) * (var + alpha * delta * delta)
        self._baselines[group] = (n + 1, mean, var)
        self._n += 1

    def _slow_weight(self, n: int, score: float) -> float:
        """``slow_alpha``, a twentieth of it for a point that already looks suspicious (score 0.5
        or more, once its group has ``grace_events`` points)."""
        return self.slow_alpha * (0.05 if n >= self.grace_events and score >= 0.5 else 1.0)

    def input_weight(self, score: float, group: Any = None) -> float:
        """The weight with which the usual levels of the raw inputs behind a point learn it (a
        point of ``group`` that scored ``score``, before it is learned): the baseline's
        ``slow_alpha``, a twentieth of it where the baseline would find the point suspicious,
        and at least ``1 / (n + 1)`` over the first points, an exact mean. So an input's usual
        level is what it was while the experience was usual, not the first minutes of a slow
        decline or of a fall to 3G that the experience score only catches a few points later.
        """
        n = self._baselines.get(group, (0, math.nan, 25.0))[0]
        return max(self._slow_weight(n, score), 1.0 / (self._n + 1))

    def baseline_of(self, group: Any = None) -> float:
        """The learned normal level of a group (NaN before its first point)."""
        return self._baselines.get(group, (0, math.nan, 25.0))[1]

    @property
    def baseline(self) -> float:
        """The learned normal level of the group without a value in ``x`` (NaN before its
        first point)."""
        return self.baseline_of(None)

    @property
    def level(self) -> float:
        """The current (fast, smoothed) level (NaN before the first point)."""
        return self._fast


@dataclass(frozen=True)
class Detection:
    """A new degradation episode for one subscriber, with the evidence."""

    score: float
    experience: float
    baseline_experience: float
    why: dict[str, Any]


INPUTS = QOS.inputs
"""The measures whose usual level each subscriber's monitor tracks (see :mod:`cxstream.qos`)."""

RATE = "throughput_kbps"
"""The input tracked only from sessions whose rate measures the network
(:func:`~cxstream.detectors.experience.demand_evident`): a light-use session's rate is what the
app needed, so its usual level would mix a browsing user's kbit/s with a download's Mbit/s, and
every download would look like a move."""


def tracked_inputs(measurements: dict[str, float | None]) -> dict[str, float | None]:
    """The detector inputs of one event, the rate only where it measures the network."""
    tracked = {name: measurements.get(name) for name in INPUTS}
    if not demand_evident(
        measurements.get("transfer_active"),
        measurements.get("stalls"),
        measurements.get("demand_kbps"),
    ):
        tracked[RATE] = None
    return tracked


CLEAR_S = 60.0
"""Seconds of event time a subscriber's experience must have been back before their episode
ends: a dip again within them is the same problem (one alarm, not one raised and cleared per
dip), and a minute is the span over which a cell's demarcation counts its degraded subscribers
(``cells.window_s``)."""


@dataclass
class SubscriberMonitor:
    """Everything the flow remembers about one subscriber (about 780 bytes pickled, with a
    baseline for each of three services)."""

    detector: ExperienceDropDetector
    reset_below: float = 0.5
    clear_s: float = CLEAR_S
    inputs: dict[str, float] = field(default_factory=dict)
    in_episode: bool = False
    last_experience: float = math.nan
    last_sample_t: float = -math.inf  # when the experience index was last recorded for history
    plan_mbps: float | None = None  # the last known plan, for when the context is unavailable
    episodes: float = 0.0  # degradation episodes, decayed with a 7-day half-life (churn feature)
    episodes_t: float = 0.0  # event time of the last decay
    generation: float = math.nan  # the last radio generation reported
    last_bad_t: float = -math.inf  # event time of the episode's last event not yet recovered
    fallen: bool = False  # fell to 2G/3G since the last alert, and not back on 4G/5G

    def recent_episodes(self, t: float) -> float:
        """Degradation episodes up to event time ``t``, each weighing half after a half-life."""
        return decay_episodes(self.episodes, self.episodes_t, t)

    def count_episode(self, t: float) -> None:
        """Add one episode at event time ``t``."""
        self.episodes = self.recent_episodes(t) + 1.0
        self.episodes_t = max(t, self.episodes_t)

    @property
    def experience_index(self) -> float:
        """The subscriber's rolling experience index, 0-100 (smoothed over recent events)."""
        return self.detector.level

    def observe(
        self,
        service: str,
        measurements: dict[str, float | None],
        plan_mbps: float,
        t: float | None = None,
    ) -> tuple[float, float, Detection | None]:
        """Score one event (at event time ``t``, epoch seconds), learn it, and return ``(score,
        experience, new_detection_or_None)``.

        A detection is returned once when the score first crosses the detector's threshold; the
        episode closes at the first event whose score is below ``reset_below`` times the
        threshold and that comes ``clear_s`` or more after the episode's last event that was not
        (at once without ``t``): a subscriber whose experience dips again within seconds is in
        the same episode, not in a new one with an alarm raised and cleared each time.
        """
        exp = experience_score(
            service,
            measurements.get("rtt_ms"),
            measurements["jitter_ms"] or 0.0,
            measurements["loss_pct"] or 0.0,
            measurements.get("throughput_kbps"),
            measurements.get("rsrp_dbm"),
            measurements.get("sinr_db"),
            measurements.get("stalls"),
            plan_mbps,
            radio_generation=measurements.get("radio_generation"),
            rsrq_db=measurements.get("rsrq_db"),
            cqi=measurements.get("cqi"),
            transfer_active=measurements.get("transfer_active"),
            demand_kbps=measurements.get("demand_kbps"),
        )
        x: dict[base.typing.FeatureName, Any] = {"experience": exp, "service": service}
        tracked = tracked_inputs(measurements)
        det = self.detector
        score = det.score_one(x)
        detection = None
        generation = measurements.get("radio_generation")
        # a fall to an older radio access than 4G during an episode is news: a new alert, once
        # the score is there (often a few events after the fall), unless 4G or 5G came back first
        if generation is not None:
            fell = generation < self.generation and generation <= 3
            self.fallen = (self.fallen or fell) and generation <= 3
            self.generation = generation
        bad = score >= self.reset_below * det.threshold
        if score >= det.threshold and (not self.in_episode or self.fallen):
            self.fallen = False
            self.in_episode = True
            baseline = det.baseline_of(service)
            why = explain_drop(exp, baseline, self.inputs, tracked)
            detection = Detection(score, exp, baseline, why)
        elif self.in_episode and not bad and (t is None or t - self.last_bad_t >= self.clear_s):
            self.in_episode = False
        if self.in_episode and bad and t is not None:
            self.last_bad_t = max(self.last_bad_t, t)
        weight = det.input_weight(score, service)
        det.learn_one(x)
        if not self.in_episode:
            for name, value in tracked.items():
                if value is not None:
                    old = self.inputs.get(name)
                    self.inputs[name] = value if old is None else old + weight * (value - old)
        self.last_experience = exp
        return score, exp, detection


EPISODE_HALF_LIFE_S = 7 * 86_400.0
"""Degradation episodes count half after a week (the churn model's ``degradations_7d``)."""


def decay_episodes(count: float, since: float, t: float) -> float:
    """An episode count kept since event time ``since``, decayed to event time ``t``."""
    return float(count * 0.5 ** (max(t - since, 0.0) / EPISODE_HALF_LIFE_S))


def explain_drop(
    exp: float,
    base_exp: float,
    inputs: dict[str, float],
    measurements: dict[str, float | None],
) -> dict[str, Any]:
    """The inputs that moved the way that lowers experience (delay and loss up, rate and signal
    down), from their usual level to now, largest relative move first: one that improved is no
    reason for a drop.

    >>> why = explain_drop(40.0, 90.0, {"rtt_ms": 40.0, "sinr_db": 15.0},
    ...                    {"rtt_ms": 400.0, "sinr_db": 18.0})
    >>> why["inputs"]
    [{'input': 'rtt_ms', 'from': 40.0, 'to': 400.0}]
    """
    moved = []
    for name, worse in zip(INPUTS, QOS.worse, strict=True):
        now = measurements.get(name)
        usual = inputs.get(name)
        if now is None or usual is None:
            continue
        change = worse * (now - usual) / max(abs(usual), 1e-3)
        shown = round(usual, 2), round(now, 2)
        if change > 0 and shown[0] != shown[1]:  # no "4.0 -> 4.0"
            moved.append((change, {"input": name, "from": shown[0], "to": shown[1]}))
    moved.sort(key=lambda item: item[0], reverse=True)
    return {
        "experience": {
            "from": round(base_exp, 1) if math.isfinite(base_exp) else None,
            "to": round(exp, 1),
        },
        "inputs": [entry for _, entry in moved[:3]],
    }

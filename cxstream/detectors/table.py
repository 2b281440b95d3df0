"""The per-subscriber detectors of one shard as arrays: one call scores and learns a whole batch.

:class:`SubscriberTable` keeps exactly the state of a
:class:`~cxstream.detectors.degradation.SubscriberMonitor` per subscriber (the detector's count,
fast level and smoothed deviation, a baseline mean and variance per service, the episode flag,
the inputs' usual levels, the last known plan, the history-sample time, the decayed episode
count, the last cell), one row per subscriber in numpy
arrays, and applies the same arithmetic to a batch at once. A subscriber that appears several
times in a batch is processed in rounds (its first events, then its second ...), so the order
of its events is kept. ``tests/unit/detectors/test_table.py`` checks it against the per-event
monitor on random streams.

Memory: 186 bytes of arrays per subscriber (a baseline per service, the usual levels of the
inputs, the cell of its last event so that a move is seen ...) plus its id in the index (about
100 bytes in a dict), and one entry per cell seen; docs/performance.md gives the measured total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cxstream.detectors.degradation import (
    CLEAR_S,
    INPUTS,
    RATE,
    decay_episodes,
    explain_drop,
)
from cxstream.detectors.experience import (
    _CQI,
    _RSRP,
    _RSRQ,
    _SINR,
    CODECS,
    DATA_TARGET_KBPS,
    VIDEO_TARGET_KBPS,
    Codec,
)
from cxstream.qos import QOS, SERVICE_CODES, QosTable

__all__ = ["SERVICE_CODES", "BatchResult", "SubscriberTable", "experience_scores"]

F64 = NDArray[np.float64]

_RADIO_BANDS = {
    name: (np.array([p[0] for p in bands]), np.array([p[1] for p in bands]))
    for name, bands in (("rsrp_dbm", _RSRP), ("sinr_db", _SINR), ("rsrq_db", _RSRQ), ("cqi", _CQI))
}


def _demand_shown(measurements: F64, table: QosTable = QOS) -> NDArray[np.bool_]:
    """:func:`~cxstream.detectors.experience.demand_evident` for the rows of a measurement
    matrix (NaN, not reported, is no demand)."""
    with np.errstate(invalid="ignore"):
        columns = [table.column(n) for n in ("transfer_active", "stalls", "demand_kbps")]
        return np.asarray((measurements[:, columns] > 0).any(axis=1))


def experience_scores(
    service: NDArray[np.int8],
    measurements: F64,
    plan_mbps: F64,
    table: QosTable = QOS,
    codec: Codec = CODECS["g711_plc"],
) -> F64:
    """:func:`~cxstream.detectors.experience.experience_score` for arrays.

    ``measurements`` has one column per measure of ``table`` (NaN = not reported); each measure's
    penalty, if it has one, is subtracted from the core score.
    """
    col = table.column
    rtt = np.nan_to_num(measurements[:, col("rtt_ms")])  # not measured: no delay impairment
    jitter = measurements[:, col("jitter_ms")]
    loss = measurements[:, col("loss_pct")]
    throughput = measurements[:, col("throughput_kbps")]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # voice: the E-model (experience.voice_mos)
        delay = rtt / 2.0 + 2.0 * jitter + 10.0
        id_ = 0.024 * delay + np.where(delay > 177.3, 0.11 * (delay - 177.3), 0.0)
        ie = codec.ie + (95.0 - codec.ie) * loss / (loss + codec.bpl)
        r = (codec.ro - id_ - ie) / codec.r_scale
        mos = np.where(
            r <= 0,
            1.0,
            np.where(r >= 100, 4.5, 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)),
        )
        voice = (mos - 1.0) / 3.5 * 100.0
        # video / data: throughput against what was asked for, where demand shows
        # (experience.demand_evident)
        promised = plan_mbps * 1000.0
        demand = measurements[:, col("demand_kbps")]
        asked = demand > 0
        target = np.where(
            service == 1,
            np.where(asked, demand, np.minimum(promised, VIDEO_TARGET_KBPS)),
            np.minimum(0.5 * promised, DATA_TARGET_KBPS),
        )
        judged = _demand_shown(measurements, table)
        tp = np.where(np.isnan(throughput) | ~judged, target, throughput)
        tp_score = np.where(target > 0, 100.0 * np.minimum(1.0, tp / target) ** 0.5, 100.0)
        latency_penalty = np.maximum(0.0, (rtt - 80.0) / 10.0)
        other = tp_score - latency_penalty - 8.0 * loss
        score = np.where(service == 0, voice, other)
        for j, penalty in table.penalties:
            score = score - penalty(service, measurements[:, j])
        # radio: mean of the RSRP, SINR, RSRQ and CQI bands that are present
        parts = np.zeros(len(score))
        count = np.zeros(len(score))
        for name, (xs, ys) in _RADIO_BANDS.items():
            values = measurements[:, col(name)]
            present = ~np.isnan(values)
            parts += np.where(present, np.interp(values, xs, ys), 0.0)
            count += present
        radio = np.where(count > 0, parts / np.maximum(count, 1.0), np.nan)
        score = np.where(radio < 60.0, score - (60.0 - radio) / 3.0, score)
        score = np.where(np.isfinite(score), np.clip(score, 0.0, 100.0), 0.0)
    return np.asarray(score, dtype=np.float64)


def _logistic(z: F64) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))), dtype=np.float64)


@dataclass(frozen=True)
class BatchResult:
    """Per event of the batch (in input order)."""

    score: F64
    experience: F64
    index: F64  # the subscriber's experience index after the event
    in_episode: NDArray[np.bool_]
    sample: NDArray[np.bool_]  # record the index in the subscriber's history
    detections: dict[int, tuple[float, float, dict[str, Any]]]  # position -> (score, exp, why)
    episodes: F64  # decayed episode count after the event
    closed: list[int] = field(default_factory=list)  # positions whose event ended an episode
    # position -> the cell of the subscriber's previous event, where it differs from this
    # event's (a move; only when the cells were given)
    came_from: dict[int, str] = field(default_factory=dict)


_GENERATION = QOS.column("radio_generation")
_GN_CAP = 1_000_000  # events counted per service (int32; only compared with grace_events)


class SubscriberTable:
    """Detector state for many subscribers, as arrays (see the module docstring)."""

    _FIELDS = (
        "n",
        "fast",
        "z",
        "gn",
        "mean",
        "var",
        "in_ep",
        "plan",
        "last_sample_t",
        "episodes",
        "episodes_t",
        "generation",
        "last_cell",
        "last_bad_t",
        "fallen",
    )

    def __init__(
        self,
        *,
        grace_events: int = 8,
        fast_alpha: float = 0.3,
        slow_alpha: float = 0.05,
        poor: float = 45.0,
        threshold: float = 0.9,
        min_std: float = 6.0,
        reset_below: float = 0.5,
        clear_s: float = CLEAR_S,
        sample_interval_s: float = 300.0,
        capacity: int = 1024,
        voice_codec: str = "g711_plc",
    ) -> None:
        self.grace_events = grace_events
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.poor = poor
        self.threshold = threshold
        self.min_std = min_std
        self.reset_below = reset_below
        self.clear_s = clear_s
        self.sample_interval_s = sample_interval_s
        self.voice_codec = CODECS[voice_codec]
        self.index: dict[str, int] = {}
        # subscriber -> the alarms of its open episode: (alert id, cell, raised at, X.733
        # probable cause), kept by the caller (steps.detect) so that the episode's end clears them
        self.open_alarms: dict[str, list[tuple[str, str, float, str]]] = {}
        self.cell_codes: dict[str, int] = {}  # the cells seen, as small integers
        self.cell_names: list[str] = []
        self.size = 0
        self.erased_seen = 0  # how many erasures this table has applied (steps.detect.Erasures)
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = {f: getattr(self, f, None) for f in (*self._FIELDS, "inputs")}
        services = len(SERVICE_CODES)
        self.n = np.zeros(capacity, dtype=np.int64)
        self.fast = np.full(capacity, np.nan)
        self.z = np.zeros(capacity)  # smoothed deviation below the baselines, in std devs
        # one baseline per subscriber and service (events, mean, variance)
        self.gn = np.zeros((capacity, services), dtype=np.int32)
        self.mean = np.full((capacity, services), np.nan)
        self.var = np.full((capacity, services), 25.0)
        self.in_ep = np.zeros(capacity, dtype=bool)
        self.plan = np.full(capacity, np.nan)
        self.last_sample_t = np.full(capacity, -np.inf)
        self.episodes = np.zeros(capacity)
        self.episodes_t = np.zeros(capacity)
        self.generation = np.full(capacity, np.nan)  # the last radio generation reported
        self.last_cell = np.full(capacity, -1, dtype=np.int32)  # its code in cell_names
        self.last_bad_t = np.full(capacity, -np.inf)  # the episode's last event not recovered
        self.fallen = np.zeros(capacity, dtype=bool)  # fell to 2G/3G since its last alert
        self.inputs = np.full((capacity, len(INPUTS)), np.nan)
        for name, values in old.items():
            if values is not None:
                getattr(self, name)[: len(values)] = values

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a snapshot, also one taken before the table kept radio generations or a
        voice codec (none known yet; G.711 with concealment), cells, a baseline per service or
        the usual level of every input of :data:`~cxstream.qos.QOS`."""
        self.__dict__.update(state)
        if "generation" not in state:
            self.generation = np.full(len(self.n), np.nan)
        if "voice_codec" not in state:
            self.voice_codec = CODECS["g711_plc"]
        if self.mean.ndim == 1:  # one baseline for all services: each service starts from it
            services = len(SERVICE_CODES)
            std = np.maximum(np.sqrt(self.var), self.min_std)
            with np.errstate(invalid="ignore"):
                self.z = np.where(self.n > 0, np.nan_to_num((self.mean - self.fast) / std), 0.0)
            self.gn = np.repeat(np.minimum(self.n, _GN_CAP)[:, None], services, axis=1).astype(
                np.int32
            )
            self.mean = np.repeat(self.mean[:, None], services, axis=1)
            self.var = np.repeat(self.var[:, None], services, axis=1)
        if "open_alarms" not in state:
            self.open_alarms = {}
        if "last_cell" not in state:
            self.last_cell = np.full(len(self.n), -1, dtype=np.int32)
            self.cell_codes, self.cell_names = {}, []
        if "last_bad_t" not in state:  # an open episode then closes at its next recovered event
            self.last_bad_t = np.full(len(self.n), -np.inf)
            self.clear_s = CLEAR_S
        if "fallen" not in state:
            self.fallen = np.zeros(len(self.n), dtype=bool)
        missing = len(INPUTS) - self.inputs.shape[1]
        if missing > 0:  # inputs are added at the end (the radio generation): unknown until seen
            self.inputs = np.hstack([self.inputs, np.full((len(self.inputs), missing), np.nan)])

    def __len__(self) -> int:
        return self.size

    def rows(self, subscribers: Sequence[str]) -> NDArray[np.intp]:
        """Row of each subscriber, adding new ones."""
        index = self.index
        out = np.empty(len(subscribers), dtype=np.intp)
        for i, sid in enumerate(subscribers):
            row = index.get(sid)
            if row is None:
                row = index[sid] = self.size
                self.size += 1
            out[i] = row
        if self.size > self.n.shape[0]:
            self._alloc(max(self.size, 2 * self.n.shape[0]))
        return out

    def forget(self, subscribers: Sequence[str]) -> int:
        """Drop these subscribers' state (an erased customer); returns how many were held. The
        last row moves into each freed one, so the arrays stay dense."""
        dropped = 0
        for sid in subscribers:
            self.open_alarms.pop(sid, None)
            row = self.index.pop(sid, None)
            if row is None:
                continue
            dropped += 1
            last = self.size - 1
            if row != last:
                moved = next(s for s, r in self.index.items() if r == last)
                for name in (*self._FIELDS, "inputs"):
                    values = getattr(self, name)
                    values[row] = values[last]
                self.index[moved] = row
            self.size = last
            self.n[last] = self.gn[last] = 0
            self.fast[last] = self.mean[last] = self.plan[last] = np.nan
            self.z[last] = 0.0
            self.var[last] = 25.0
            self.in_ep[last] = False
            self.last_sample_t[last] = -np.inf
            self.episodes[last] = self.episodes_t[last] = 0.0
            self.last_cell[last] = -1
            self.last_bad_t[last] = -np.inf
            self.fallen[last] = False
            self.inputs[last] = np.nan
        return dropped

    def observe(
        self,
        subscribers: Sequence[str],
        t: F64,
        service: NDArray[np.int8],
        measurements: F64,  # one column per measure of cxstream.qos.QOS (NaN = absent)
        plan_mbps: F64,  # from the customer's context; NaN = unknown
        cells: Sequence[str] | None = None,
    ) -> BatchResult:
        """Score, then learn, every event of the batch in order; with ``cells``, note each
        subscriber that moved from one cell to another (:attr:`BatchResult.came_from`)."""
        n_events = len(subscribers)
        rows = self.rows(subscribers)
        score = np.empty(n_events)
        exp = np.empty(n_events)
        level = np.empty(n_events)
        in_episode = np.empty(n_events, dtype=bool)
        sample = np.empty(n_events, dtype=bool)
        episodes = np.empty(n_events)
        detections: dict[int, tuple[float, float, dict[str, Any]]] = {}
        # rounds: a subscriber's k-th event of the batch is in round k
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.r_[True, sorted_rows[1:] != sorted_rows[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(n_events), 0))
        occurrence = np.empty(n_events, dtype=np.intp)
        occurrence[order] = np.arange(n_events) - group_start
        # The plan each event is judged against: its customer's, else the last one known for the
        # subscriber (earlier in this batch, else before it), else 50 Mbps. It does not depend on
        # the detector state, so the experience of the whole batch is computed at once.
        plan = self._plans(rows, order, sorted_rows, group_start, plan_mbps)
        m = measurements
        exp_all = experience_scores(service, m, plan, codec=self.voice_codec)
        codes = self._cell_codes(cells) if cells is not None else None
        came_from: dict[int, str] = {}
        closed: list[int] = []
        for k in range(int(occurrence.max()) + 1 if n_events else 0):
            pos = np.flatnonzero(occurrence == k)
            self._round(
                pos, rows[pos], service[pos], t, exp_all, measurements,
                score, exp, level, in_episode, sample, episodes, detections, closed,
            )  # fmt: skip
            if codes is not None:
                r, now = rows[pos], codes[pos]
                before = self.last_cell[r]
                for j in np.flatnonzero((before >= 0) & (before != now)).tolist():
                    came_from[int(pos[j])] = self.cell_names[before[j]]
                self.last_cell[r] = now
        return BatchResult(
            score, exp, level, in_episode, sample, detections, episodes, sorted(closed), came_from
        )

    def _cell_codes(self, cells: Sequence[str]) -> NDArray[np.int64]:
        codes, names = self.cell_codes, self.cell_names
        for cell in dict.fromkeys(cells):  # a batch's distinct cells: few, and mostly known
            if cell not in codes:
                codes[cell] = len(names)
                names.append(cell)
        return np.fromiter(map(codes.__getitem__, cells), np.int64, len(cells))

    def _plans(
        self,
        rows: NDArray[np.intp],
        order: NDArray[np.intp],
        sorted_rows: NDArray[np.intp],
        group_start: NDArray[np.intp],
        known: F64,
    ) -> F64:
        """Forward-fill known plans per subscriber in event order; store each one's last."""
        n = len(rows)
        known_sorted = known[order]
        ar = np.arange(n)
        last_known = np.maximum.accumulate(np.where(np.isnan(known_sorted), -1, ar))
        has = last_known >= group_start  # a known plan earlier in the batch, same subscriber
        stored = self.plan[sorted_rows]
        filled = np.where(has, known_sorted[np.maximum(last_known, 0)], stored)
        ends = np.r_[sorted_rows[1:] != sorted_rows[:-1], True]
        self.plan[sorted_rows[ends]] = filled[ends]
        plan = np.empty(n)
        plan[order] = np.where(np.isnan(filled), 50.0, filled)
        return plan

    def _round(
        self,
        pos: NDArray[np.intp],
        r: NDArray[np.intp],
        g: NDArray[np.int8],
        t_all: F64,
        exp_all: F64,
        m_all: F64,
        score_out: F64,
        exp_out: F64,
        level_out: F64,
        ep_out: NDArray[np.bool_],
        sample_out: NDArray[np.bool_],
        episodes_out: F64,
        detections: dict[int, tuple[float, float, dict[str, Any]]],
        closed: list[int],
    ) -> None:
        m = m_all[pos]
        t = t_all[pos]
        exp = exp_all[pos]
        # score (ExperienceDropDetector._score)
        n = self.n[r]
        first = n == 0
        fast_prev = self.fast[r]
        cand = np.where(first, exp, self.fast_alpha * exp + (1.0 - self.fast_alpha) * fast_prev)
        absolute = _logistic((self.poor - cand) / 4.0)
        gn = self.gn[r, g]
        mean = self.mean[r, g]
        var = self.var[r, g]
        std = np.maximum(np.sqrt(var), self.min_std)
        with np.errstate(invalid="ignore"):
            d = np.where(gn > 0, (mean - exp) / std, 0.0)
        z = self.fast_alpha * d + (1.0 - self.fast_alpha) * self.z[r]
        relative = _logistic(2.0 * (z - 3.0))
        trusted = gn >= self.grace_events
        score = np.where(trusted, np.maximum(absolute, relative), absolute)
        # episodes (SubscriberMonitor.observe)
        was = self.in_ep[r]
        # a fall to an older radio access than 4G during an episode is news: a new alert, once
        # the score is there, unless 4G or 5G came back first
        generation = m[:, _GENERATION]
        previous = self.generation[r]
        known = ~np.isnan(generation)
        with np.errstate(invalid="ignore"):
            fell = (generation < previous) & (generation <= 3.0)
            fallen = np.where(known, (self.fallen[r] | fell) & (generation <= 3.0), self.fallen[r])
        self.generation[r] = np.where(known, generation, previous)
        new = (score >= self.threshold) & (~was | fallen)
        self.fallen[r] = fallen & ~new
        bad = score >= self.reset_below * self.threshold
        last_bad = self.last_bad_t[r]
        close = was & ~bad & (t - last_bad >= self.clear_s)
        now_in = (was | new) & ~close
        self.last_bad_t[r] = np.where(now_in & bad, np.maximum(last_bad, t), last_bad)
        values = _tracked(m)
        for j in np.flatnonzero(new):
            row = r[j]
            inputs = {
                name: float(self.inputs[row, c])
                for c, name in enumerate(INPUTS)
                if not math.isnan(self.inputs[row, c])
            }
            measured = {name: _opt(values[j, c]) for c, name in enumerate(INPUTS)}
            why = explain_drop(float(exp[j]), float(mean[j]), inputs, measured)
            detections[int(pos[j])] = (float(score[j]), float(exp[j]), why)
            decayed = decay_episodes(self.episodes[row], self.episodes_t[row], float(t[j]))
            self.episodes[row] = decayed + 1.0
            self.episodes_t[row] = max(float(t[j]), self.episodes_t[row])
        self.in_ep[r] = now_in
        closed.extend(pos[close].tolist())
        # learn (ExperienceDropDetector.learn_one)
        suspicious = trusted & (score >= 0.5)
        slow = self.slow_alpha * np.where(suspicious, 0.05, 1.0)
        alpha = np.where(gn < self.grace_events, np.maximum(slow, 1.0 / (gn + 1)), slow)
        limit = 3.0 * std
        with np.errstate(invalid="ignore"):
            delta = np.clip(exp - mean, -limit, limit)
        fresh = gn == 0
        self.mean[r, g] = np.where(fresh, exp, mean + alpha * delta)
        self.var[r, g] = np.where(fresh, var, (1.0 - alpha) * (var + alpha * delta * delta))
        self.gn[r, g] = np.minimum(gn + 1, _GN_CAP)
        self.z[r] = z
        self.fast[r] = cand
        self.n[r] = n + 1
        # the inputs' usual levels, outside episodes (ExperienceDropDetector.input_weight)
        weight = np.maximum(slow, 1.0 / (n + 1.0))[:, None]
        old = self.inputs[r]
        update = ~now_in[:, None] & ~np.isnan(values)
        with np.errstate(invalid="ignore"):
            moved = np.where(np.isnan(old), values, old + weight * (values - old))
        self.inputs[r] = np.where(update, moved, old)
        # history samples
        due = t - self.last_sample_t[r] >= self.sample_interval_s
        self.last_sample_t[r] = np.where(due, t, self.last_sample_t[r])
        score_out[pos] = score
        exp_out[pos] = exp
        level_out[pos] = cand
        ep_out[pos] = now_in
        sample_out[pos] = due
        episodes_out[pos] = self.episodes[r]


_INPUT_COLUMNS = np.array([QOS.column(name) for name in INPUTS])
_RATE = INPUTS.index(RATE)


def _tracked(m: F64) -> F64:
    """The detector inputs of a batch's rows (:func:`~cxstream.detectors.degradation.
    tracked_inputs`): the rate NaN where no demand shows."""
    values = m[:, _INPUT_COLUMNS]
    values[~_demand_shown(m), _RATE] = np.nan
    return values


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)

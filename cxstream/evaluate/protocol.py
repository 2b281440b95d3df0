"""How much of the series detector's NAB score comes from choosing its settings on the files it is
scored on: leave-one-group-out and cross-benchmark figures for its decision settings.

The detector's score does not depend on the alert threshold and the hold after an alert, so every
file is scored once per repeat and spike rule and each setting on the grid only re-decides. Then:

* **in sample**: each group scored with the setting that is best on that group itself (what a
  choice made on the test data would report);
* **leave one group out**: for each group of a data set, the setting that is best on the *other*
  groups of that data set (pooled), reported on the held-out group;
* **across benchmarks**: the setting that is best on one data set, reported on each other one;
* **fixed**: the shipped setting (``SeriesMonitor.default``), everywhere.

"Best" is the highest NAB standard score, pooled over the files it is chosen on. The grid is small
and spaced by reasoning (likelihood tails of 1e-3, 1e-4 and 1e-5; quiet for a quarter of a day to
two days of the series' own sampling after an alert; no repeat rule, or 80 % / 100 % of the largest
surprise of the last day / week, or 100 % of the last two weeks'; no spike rule, or single points
with tails of 1e-6 / 1e-8 beyond the farthest point of the last quarter / half day), so that the
figures measure the choice, not a search.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cxstream.detectors.series import AlertGate, ContextLikelihoodDetector, SeriesMonitor
from cxstream.evaluate.nab import (
    PROFILES,
    FileScore,
    _epoch,
    check_windows,
    file_windows,
    normalised,
    read_labels,
    read_nab_file,
    score_file,
)

__all__ = ["GRID", "ProtocolReport", "Setting", "run_protocol"]


Rule = tuple[float, float, float | None, float]
# what a detector's scores depend on: repeat share and days, spike tail score and days


@dataclass(frozen=True)
class Setting:
    """The series detector's decision settings: alert threshold, quiet days after an alert, and
    what counts as a repeat (``repeat_share`` of the largest surprise of the last
    ``repeat_days``; 0: nothing is a repeat), and the spike rule (a point's tail score at least
    ``spike``, beyond the farthest point of the last ``spike_days``; ``None``: no spike rule)."""

    threshold: float
    hold_days: float
    repeat_share: float = 0.8
    repeat_days: float = 7.0
    spike: float | None = 0.75
    spike_days: float = 0.25

    @property
    def name(self) -> str:
        """``threshold/hold days/repeat/spike``, as tables show it."""
        repeat = f"{self.repeat_share:g}x{self.repeat_days:g}d" if self.repeat_share else "off"
        spike = f"{self.spike:g}>{self.spike_days:g}d" if self.spike is not None else "off"
        return f"{self.threshold:g}/{self.hold_days:g}d/{repeat}/{spike}"

    @property
    def rule(self) -> Rule:
        """What the detector's scores depend on (the rest only re-decides)."""
        return (self.repeat_share, self.repeat_days, self.spike, self.spike_days)


GRID: tuple[Setting, ...] = tuple(
    Setting(threshold, days, share, span, spike, spike_days)
    for threshold in (0.375, 0.5, 0.625)
    for days in (0.25, 0.5, 1.0, 2.0)
    for share, span in ((0.0, 7.0), (0.8, 1.0), (0.8, 7.0), (1.0, 7.0), (1.0, 14.0))
    for spike, spike_days in ((None, 0.25), (0.75, 0.25), (1.0, 0.25), (0.75, 0.5))
)
"""Thresholds: -log10 tail / 8 of 1e-3, 1e-4, 1e-5; holds: a quarter of a day to two days of
the series' own sampling; repeats: none, or below 80 % or 100 % of the largest surprise of the
last day or week, or below the largest of the last two weeks; spikes: none, or a point's tail of
1e-6 or 1e-8 beyond the farthest point of the last quarter or half day."""


@dataclass
class _Scored:
    group: str  # "<data set>/<group>"
    timestamps: list[datetime]
    epochs: list[float]
    scores: dict[Rule, tuple[list[float], list[bool]]]  # by repeat and spike rule
    windows: list[tuple[datetime, datetime]]


@dataclass
class ProtocolReport:
    """What :func:`run_protocol` measured (standard profile, normalised 0-100)."""

    points: int = 0
    seconds: float = 0.0
    fixed: Setting = field(default_factory=lambda: Setting(0.5, 0.5))
    # group -> setting name -> score
    by_setting: dict[str, dict[str, float]] = field(default_factory=dict)
    # group -> {"in_sample", "held_out", "fixed", "chosen", "chosen_in_sample"}
    logo: dict[str, dict[str, float | str]] = field(default_factory=dict)
    # "A -> B" -> {"chosen": setting, "score": score on B, "in_sample": best on B}
    across: dict[str, dict[str, float | str]] = field(default_factory=dict)

    def as_json(self) -> str:
        """The report as one JSON object."""
        return json.dumps(
            {
                "points": self.points,
                "fixed": self.fixed.name,
                "by_setting": self.by_setting,
                "leave_one_group_out": self.logo,
                "across_benchmarks": self.across,
            }
        )


def _decide(f: _Scored, setting: Setting) -> list[int]:
    gate = AlertGate(threshold=setting.threshold, hold_days=setting.hold_days)
    scores, novel = f.scores[setting.rule]
    return [
        1 if gate.decide(s if n else 0.0, t) else 0
        for s, n, t in zip(scores, novel, f.epochs, strict=True)
    ]


def _pooled(files: Sequence[_Scored], setting: Setting) -> float:
    profile = PROFILES["standard"]
    scored: list[FileScore] = [
        score_file(f.timestamps, _decide(f, setting), f.windows, profile) for f in files
    ]
    return normalised(scored, profile)


def _best(files: Sequence[_Scored], grid: Sequence[Setting]) -> tuple[Setting, float]:
    results = [(s, _pooled(files, s)) for s in grid]
    return max(results, key=lambda r: r[1])


def _load(
    data_dir: Path,
    detector: Callable[[Setting], ContextLikelihoodDetector],
    rules: Sequence[Setting],
    report: ProtocolReport,
) -> list[_Scored]:
    labels = read_labels(data_dir / "labels" / "combined_windows.json")
    out = []
    for path in sorted((data_dir / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        data = read_nab_file(path, name)
        windows = file_windows(labels, name)
        where = f"{data_dir}/labels/combined_windows.json, {name}"
        check_windows(set(data.timestamps), windows, where)
        epochs = [_epoch(t) for t in data.timestamps]
        scores: dict[Rule, tuple[list[float], list[bool]]] = {}
        for rule in rules:
            det = detector(rule)
            start = time.perf_counter()
            pairs = [det.update_novel(v, t) for v, t in zip(data.values, epochs, strict=True)]
            report.seconds += time.perf_counter() - start
            report.points += len(pairs)
            scores[rule.rule] = ([p[0] for p in pairs], [p[1] for p in pairs])
        group = f"{data_dir.name}/{path.parent.name}"
        out.append(_Scored(group, data.timestamps, epochs, scores, windows))
    return out


def run_protocol(
    data_dirs: Sequence[Path],
    *,
    grid: Sequence[Setting] = GRID,
    detector: Callable[[Setting], ContextLikelihoodDetector] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ProtocolReport:
    """Score every file of every data set once, then measure the choice of decision settings
    (see the module doc). Each data set is a NAB tree with ``labels/combined_windows.json``."""
    default = SeriesMonitor.default()
    report = ProtocolReport(
        fixed=Setting(
            default.gate.threshold,
            default.gate.hold_days or 0.0,
            default.detector.repeat_share,
            default.detector.repeat_days,
            default.detector.spike,
            default.detector.spike_days,
        )
    )
    make = detector or (
        lambda s: ContextLikelihoodDetector(
            repeat_share=s.repeat_share,
            repeat_days=s.repeat_days,
            spike=s.spike,
            spike_days=s.spike_days,
        )
    )
    grid = list(grid) if report.fixed in grid else [*grid, report.fixed]
    rules = list({s.rule: s for s in grid}.values())
    sets: dict[str, list[_Scored]] = {}
    for data_dir in data_dirs:
        if on_stage is not None:
            on_stage(f"scoring {data_dir}")
        sets[data_dir.name] = _load(data_dir, make, rules, report)
    groups: dict[str, list[_Scored]] = {}
    for files in sets.values():
        for f in files:
            groups.setdefault(f.group, []).append(f)
    for group, files in groups.items():
        report.by_setting[group] = {s.name: round(_pooled(files, s), 2) for s in grid}
    for set_name, files in sets.items():
        names = sorted({f.group for f in files})
        for group in names:
            own = groups[group]
            best_own, in_sample = _best(own, grid)
            entry: dict[str, float | str] = {
                "in_sample": round(in_sample, 2),
                "chosen_in_sample": best_own.name,
                "fixed": round(_pooled(own, report.fixed), 2),
            }
            others = [f for f in files if f.group != group]
            if others:
                chosen, _ = _best(others, grid)
                entry["chosen"] = chosen.name
                entry["held_out"] = round(_pooled(own, chosen), 2)
            report.logo[group] = entry
        chosen, _ = _best(files, grid)
        for other_name, other in sets.items():
            if other_name == set_name:
                continue
            _, best_there = _best(other, grid)
            report.across[f"{set_name} -> {other_name}"] = {
                "chosen": chosen.name,
                "score": round(_pooled(other, chosen), 2),
                "in_sample": round(best_there, 2),
            }
    return report

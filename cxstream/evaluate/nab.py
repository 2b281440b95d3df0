"""The Numenta Anomaly Benchmark score, written from the published method.

Lavin & Ahmad (2015), "Evaluating Real-time Anomaly Detection Algorithms — the Numenta Anomaly
Benchmark", and NAB's ``sweeper.py``/``config/profiles.json``:

* The first 15 % of a file (at most 750 rows) is probationary: not scored.
* Each labelled window is worth ``tp_weight * sigma(position) / sigma(-1)`` for its **earliest**
  detection, where ``sigma(y) = 2 / (1 + e^(5y)) - 1`` and ``position = -(right - i + 1) / width`` runs
  from -1 at the window's left edge to about 0 at its right edge; a window with no detection costs
  ``-fn_weight``.
* A detection outside every window costs ``fp_weight * sigma(y)``: ``-fp_weight`` if no window came
  before it, otherwise ``y = |right_of_previous_window - i| / (width_of_previous_window - 1)``, so an
  alert just after a window costs less (``sigma`` is -1 beyond ``y = 3``).
* The normalised score is ``100 * (S - S_null) / (S_perfect - S_null)`` summed over files, where the
  null detector never fires (every window missed) and the perfect one scores ``tp_weight`` per window.
  Every labelled window counts, also one wholly inside the probationary period: no detector can
  detect it, so it is a miss for all (the null detector included) and a hit for the perfect one, as
  in NAB's normalisation (perfect = ``tp_weight`` times the number of windows in the labels file).
  NAB's own files have no such window; the Microsoft set in ``../shared/data`` has 15 of its 123.

Detections here are the detector's own binary decisions (``alert`` = 1), so no threshold is swept.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cxstream.csvfile import MISSING_TOKENS
from cxstream.detectors.series import SeriesMonitor
from cxstream.errors import DataError
from cxstream.events import key_written_twice

__all__ = [
    "PROFILES",
    "FileScore",
    "NabReport",
    "Profile",
    "check_windows",
    "file_windows",
    "normalised",
    "probation_length",
    "read_labels",
    "run_nab",
    "score_file",
]


@dataclass(frozen=True)
class Profile:
    """A NAB application profile (cost matrix)."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile(1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile(1.0, 0.11, 2.0),
}


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid: about +1 well before a window's end, -1 well after it.

    >>> round(scaled_sigmoid(-1.0), 4), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.9866, 0.0, -1.0)
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_length(rows: int, fraction: float = 0.15) -> int:
    """Rows at the start of a file that are not scored: 15 %, at most 750.

    >>> probation_length(4032), probation_length(22695)
    (604, 750)
    """
    return int(min(math.floor(fraction * rows), fraction * 5000))


@dataclass
class FileScore:
    """The NAB outcome of one file under one profile."""

    score: float
    null: float  # what a detector that never fires scores on this file
    windows: int
    tp: int = 0
    fp: int = 0
    fn: int = 0
    detections: list[tuple[int, float]] = field(default_factory=list)


def score_file(
    timestamps: Sequence[datetime],
    alerts: Sequence[int],
    windows: Sequence[tuple[datetime, datetime]],
    profile: Profile,
) -> FileScore:
    """Score one file's binary ``alerts`` against its labelled ``windows``.

    >>> from datetime import datetime, timedelta
    >>> ts = [datetime(2026, 1, 1) + timedelta(minutes=i) for i in range(1000)]
    >>> win = [(ts[500], ts[549])]
    >>> alerts = [0] * 1000
    >>> score_file(ts, alerts, win, PROFILES["standard"]).score  # missed window
    -1.0
    >>> alerts[500] = 1  # detected at the left edge: a full true positive
    >>> round(score_file(ts, alerts, win, PROFILES["standard"]).score, 4)
    1.0
    """
    index = {t: i for i, t in enumerate(timestamps)}
    check_windows(index, windows)
    bounds = sorted((index[start], index[end]) for start, end in windows)
    probation = probation_length(len(timestamps))

    # Each window's best (earliest) detection. Every labelled window counts: one wholly inside
    # the probationary period cannot be detected, so it is missed by every detector (the null
    # one too), and the perfect detector is credited with it, as NAB's normalisation does
    # (perfect = tp_weight x every window in the labels).
    best: dict[tuple[int, int], float] = {}
    fp_total = 0.0
    null = -profile.fn_weight * len(bounds)
    result = FileScore(score=0.0, null=null, windows=len(bounds))
    prev: tuple[int, int] | None = None
    w_iter = iter(bounds)
    current = next(w_iter, None)
    for i, alert in enumerate(alerts):
        while current is not None and i > current[1]:
            prev = current
            current = next(w_iter, None)
        if not alert or i < probation:
            continue
        if current is not None and current[0] <= i <= current[1]:
            left, right = current
            width = float(right - left + 1)
            value = scaled_sigmoid(-(right - i + 1) / width) * profile.tp_weight / _MAX_TP
            if current not in best:
                best[current] = value
                result.tp += 1
                result.detections.append((i, value))
            continue
        if prev is None:
            value = -1.0 * profile.fp_weight
        else:
            width_prev = float(prev[1] - prev[0] + 1)
            value = scaled_sigmoid(abs(prev[1] - i) / (width_prev - 1.0)) * profile.fp_weight
        fp_total += value
        result.fp += 1
        result.detections.append((i, value))
    missed = [w for w in bounds if w not in best]
    result.fn = len(missed)
    result.score = sum(best.values()) + fp_total - profile.fn_weight * len(missed)
    return result


def normalised(scores: Sequence[FileScore], profile: Profile) -> float:
    """NAB's normalised score over several files: null detector 0, perfect detector 100."""
    raw = sum(s.score for s in scores)
    null = sum(s.null for s in scores)
    perfect = profile.tp_weight * sum(s.windows for s in scores)
    if perfect == null:
        return 0.0
    return 100.0 * (raw - null) / (perfect - null)


# -- running the benchmark ---------------------------------------------------------------------


@dataclass
class NabFile:
    """One benchmark file: its name (``group/file.csv``), timestamps and values."""

    name: str
    timestamps: list[datetime]
    values: list[float]


def read_nab_file(path: Path, name: str) -> NabFile:
    """Read a ``timestamp,value`` CSV (naive timestamps are taken as UTC, others converted to
    it; a blank, ``NA`` or ``?`` value is a missing point, NaN: the detector scores it 0 and learns
    nothing from it)."""
    timestamps: list[datetime] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            msg = f"{path}: expected the header 'timestamp,value', got {header}"
            raise DataError(msg)
        for line, row in enumerate(reader, start=2):
            try:
                timestamps.append(_naive_utc(datetime.fromisoformat(row[0].strip())))
                cell = row[1].strip()
                values.append(math.nan if cell.lower() in MISSING_TOKENS else float(cell))
            except (ValueError, IndexError) as exc:
                msg = f"{path}:{line}: {exc}"
                raise DataError(msg) from exc
    return NabFile(name, timestamps, values)


Labels = dict[str, list[tuple[datetime, datetime]]]
"""Each file's (``group/file.csv``) labelled windows, as :func:`read_labels` reads them."""


def read_labels(path: Path) -> Labels:
    """NAB's ``combined_windows.json``: an object of file name -> ``[start, end]`` pairs of
    timestamps. :class:`DataError`, naming the file and the entry, when it is not JSON, not of
    that shape, or names a file twice (which of its two lists holds would be a guess).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "combined_windows.json"
    ...     _ = p.write_text('{"g/a.csv": [["2026-01-01 00:00:00", "2026-01-01 01:00:00"]]}')
    ...     read_labels(p)
    {'g/a.csv': [(datetime.datetime(2026, 1, 1, 0, 0), datetime.datetime(2026, 1, 1, 1, 0))]}
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        msg = f"{path}: not a labels file: {exc}"
        raise DataError(msg) from exc
    twice = key_written_twice(text)
    if twice is not None:
        msg = f"{path}: {twice!r} is named twice"
        raise DataError(msg)
    if not isinstance(raw, dict):
        msg = f"{path}: expected an object of file name -> windows, got {type(raw).__name__}"
        raise DataError(msg)
    labels: Labels = {}
    for name, windows in raw.items():
        try:
            labels[name] = [
                (_naive_utc(datetime.fromisoformat(a)), _naive_utc(datetime.fromisoformat(b)))
                for a, b in windows
            ]
        except (TypeError, ValueError) as exc:
            msg = f"{path}: {name}: expected [start, end] pairs of timestamps ({exc})"
            raise DataError(msg) from exc
        for start, end in labels[name]:
            if end < start:
                msg = f"{path}: {name}: window {start} .. {end} ends before it starts"
                raise DataError(msg)
    return labels


def file_windows(labels: Labels, name: str) -> list[tuple[datetime, datetime]]:
    """The labelled windows of one file (``group/file.csv``); none when it is not labelled."""
    return labels.get(name, [])


def _naive_utc(t: datetime) -> datetime:
    """``t`` in UTC without its zone (a naive time is UTC already): a file written with zones
    (``...Z``, ``+02:00``) matches labels written without, and the other way round."""
    return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


def check_windows(
    known: Container[datetime], windows: Sequence[tuple[datetime, datetime]], where: str = ""
) -> None:
    """Raise :class:`DataError` (naming ``where``, if given) when a window's start or end is not
    one of the file's timestamps ``known`` (a set of them, or a mapping keyed by them): NAB's
    scorer only enters a window at its exact start."""
    for start, end in windows:
        if start not in known or end not in known:
            msg = f"window {start} .. {end} does not match timestamps in the file"
            raise DataError(f"{where}: {msg}" if where else msg)


def _epoch(t: datetime) -> float:
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


@dataclass
class NabReport:
    """What ``cxstream eval nab`` measured."""

    files: int = 0
    points: int = 0
    detector_seconds: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    per_file: list[dict[str, object]] = field(default_factory=list)

    @property
    def points_per_s(self) -> float:
        """Detector throughput (score + learn + decide), excluding file I/O."""
        return self.points / self.detector_seconds if self.detector_seconds else 0.0


def run_nab(
    data_dir: Path,
    out_dir: Path | None = None,
    *,
    monitor_factory: Callable[[], SeriesMonitor] = SeriesMonitor.default,
    on_file: Callable[[str], None] | None = None,
) -> NabReport:
    """Run the detector over every ``data/<group>/<file>.csv`` and score it if labels exist."""
    files = sorted((data_dir / "data").glob("*/*.csv"))
    if not files:
        msg = f"no {data_dir}/data/<group>/<file>.csv files found"
        raise FileNotFoundError(msg)
    labels_path = data_dir / "labels" / "combined_windows.json"
    windows = read_labels(labels_path) if labels_path.exists() else None
    report = NabReport()
    by_profile: dict[str, list[tuple[str, FileScore]]] = {p: [] for p in PROFILES}
    for path in files:
        name = f"{path.parent.name}/{path.name}"
        if on_file is not None:
            on_file(name)
        data = read_nab_file(path, name)
        bounds = file_windows(windows, name) if windows is not None else []
        check_windows(set(data.timestamps), bounds, f"{labels_path}, {name}")
        monitor = monitor_factory()
        observe = monitor.observe
        epochs = [_epoch(t) for t in data.timestamps]
        scores: list[float] = []
        alerts: list[int] = []
        start = time.perf_counter()
        for value, t in zip(data.values, epochs, strict=True):
            score, alert = observe(value, t)
            scores.append(score)
            alerts.append(1 if alert else 0)
        report.detector_seconds += time.perf_counter() - start
        report.files += 1
        report.points += len(data.values)
        if out_dir is not None:
            _write_results(out_dir / path.parent.name / path.name, data, scores, alerts)
        if windows is not None:
            entry: dict[str, object] = {"file": name, "alerts": sum(alerts)}
            for pname, profile in PROFILES.items():
                fs = score_file(data.timestamps, alerts, bounds, profile)
                by_profile[pname].append((name, fs))
                if pname == "standard":
                    entry.update(
                        raw_score=round(fs.score, 4),
                        tp=fs.tp,
                        fp=fs.fp,
                        fn=fs.fn,
                        windows=fs.windows,
                    )
            report.per_file.append(entry)
    for pname, profile in PROFILES.items():
        scored = by_profile[pname]
        if not scored:
            continue
        report.scores[pname] = round(normalised([fs for _, fs in scored], profile), 2)
        for group in sorted({n.split("/")[0] for n, _ in scored}):
            in_group = [fs for n, fs in scored if n.startswith(group + "/")]
            report.groups.setdefault(group, {})[pname] = round(normalised(in_group, profile), 2)
    return report


def _write_results(path: Path, data: NabFile, scores: list[float], alerts: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "value", "anomaly_score", "alert"])
        for t, v, s, a in zip(data.timestamps, data.values, scores, alerts, strict=True):
            writer.writerow([t.strftime("%Y-%m-%d %H:%M:%S"), repr(v), f"{s:.6f}", a])

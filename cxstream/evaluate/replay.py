"""``cxstream replay``: real drive and static traces through the flow's own steps.

Each trace (:mod:`cxstream.traces`) is one device. Its rows become QoS events, validated by the
same decoder and model as the flow's input (what does not validate is dead-lettered with the
model's reason), then go, in event-time order and in polls of ``batch`` events, through the
flow's detection and cell demarcation with a fresh state per trace: a trace's result depends on
that trace only, never on the others replayed with it. Offline and deterministic: the flow's
clock is the trace's own time.

With ``--to-kafka`` (:func:`produce_traces`) the events go to the QoS topic instead, moved to
the present so that a running flow (the demo) takes them as live traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
from confluent_kafka import Producer

from cxstream.actions.store import MemoryClaimStore
from cxstream.batches import ShardBatch
from cxstream.clients import produce_waiting
from cxstream.detectors.cells import CellMonitor
from cxstream.events import BadEvent, QosEvent, QosRecord, decode_qos, parse_qos
from cxstream.pipeline import Candidate, Pipeline
from cxstream.settings import Settings
from cxstream.traces import Trace, read_trace, trace_files

__all__ = ["ReplayReport", "TraceResult", "produce_traces", "replay_traces"]

_ROW_SPAN_CAP_S = 10.0  # a row stands for the time to the next one, at most this long


@dataclass
class TraceResult:
    """What one trace did: the keys of ``--json``'s ``per_trace``."""

    file: str
    rows: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    degraded_minutes: int = 0
    rat_minutes: dict[str, float] = field(default_factory=dict)
    alert_times: list[str] = field(default_factory=list)
    alert_why: list[dict[str, Any]] = field(default_factory=list)  # each alert's why, in order
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by reason

    def summary(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "alerts": self.alerts,
            "degraded_minutes": self.degraded_minutes,
            "rat_minutes": self.rat_minutes,
            "alert_times": self.alert_times,
            "alert_why": self.alert_why,
        }


@dataclass
class ReplayReport:
    """Every trace's result, and their totals."""

    traces: list[TraceResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures ``--json`` prints."""
        total = {
            key: sum(getattr(t, key) for t in self.traces)
            for key in ("rows", "events", "dead_letters", "alerts", "degraded_minutes")
        }
        return {
            "traces": len(self.traces),
            **total,
            "per_trace": [t.summary() for t in self.traces],
        }


def _validated(trace: Trace, result: TraceResult) -> list[QosRecord | QosEvent]:
    """The trace's events as the flow's records (decoder first, the model for the refused)."""
    records: list[QosRecord | QosEvent] = []
    for k, event in enumerate(trace.events):
        raw = orjson.dumps(event)
        try:
            records.append(decode_qos(raw))
            continue
        except (msgspec.DecodeError, ValueError):
            pass
        parsed = parse_qos(raw, topic="replay", offset=k)
        if isinstance(parsed, BadEvent):
            trace.dead_letters.append(parsed)
        else:
            records.append(parsed)
    for bad in trace.dead_letters:
        result.reasons[bad.reason] = result.reasons.get(bad.reason, 0) + 1
    return records


def _rat_minutes(trace: Trace, times: list[float]) -> dict[str, float]:
    spans: dict[str, float] = {}
    for k, mode in enumerate(trace.modes):
        if mode is None or k >= len(times):
            continue
        span = min(times[k + 1] - times[k], _ROW_SPAN_CAP_S) if k + 1 < len(times) else 1.0
        spans[mode] = spans.get(mode, 0.0) + max(span, 0.0)
    return {mode: round(s / 60.0, 1) for mode, s in sorted(spans.items())}


def _replay_one(trace: Trace, settings: Settings, batch: int) -> TraceResult:
    result = TraceResult(trace.name, rows=trace.rows)
    result.rat_minutes = _rat_minutes(
        trace, [datetime.fromisoformat(e["event_time"]).timestamp() for e in trace.events]
    )
    records = _validated(trace, result)
    records.sort(key=lambda r: r.event_time)  # stable: a second's rows keep their file order
    result.events = len(records)
    result.dead_letters = len(trace.dead_letters)
    if not records:
        return result
    now: datetime = records[0].event_time

    def clock() -> datetime:
        return now

    pipeline = Pipeline(
        settings,
        context=None,  # type: ignore[arg-type]  # no customer: the trace is an unknown device
        claims=MemoryClaimStore(),
        clock=clock,
    )
    table = pipeline.new_table()
    cells: dict[str, CellMonitor[Candidate]] = {}
    alerts: list[Candidate] = []
    degraded: set[int] = set()
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        now = chunk[-1].event_time
        shard = ShardBatch.from_records(chunk, customers=[None] * len(chunk))
        cell_batches = [b for _, b in pipeline.detect_shard(table, [shard])]
        for b in cell_batches:
            degraded.update(int(t // 60) for t in b.t[b.degraded].tolist())
        alerts.extend(
            c for c in pipeline.demarcate_shard(cells, cell_batches) if isinstance(c, Candidate)
        )
    for cell in cells.values():
        alerts.extend(c for c in pipeline.release_held(cell) if isinstance(c, Candidate))
    alerts.sort(key=lambda c: c.alert.event_time)
    result.alerts = len(alerts)
    result.alert_times = [c.alert.event_time.isoformat() for c in alerts]
    result.alert_why = [c.alert.why for c in alerts]
    result.degraded_minutes = len(degraded)
    return result


def replay_traces(
    paths: Sequence[Path],
    settings: Settings,
    *,
    timezone: str = "UTC",
    batch: int = 500,
    on_trace: Callable[[Path], None] | None = None,
) -> ReplayReport:
    """Replay every ``.csv`` under ``paths`` (files or folders), one trace at a time."""
    report = ReplayReport()
    began = time.perf_counter()
    for path, trace in _traces(paths, timezone):
        if on_trace is not None:
            on_trace(path)
        report.traces.append(_replay_one(trace, settings, batch))
    report.seconds = time.perf_counter() - began
    return report


def _traces(paths: Sequence[Path], timezone: str) -> Iterator[tuple[Path, Trace]]:
    """Each ``.csv`` under ``paths``, read, named by its path below the folder common to all."""
    files = trace_files(paths)
    root = _common_root(files)
    for path in files:
        name = str(path.relative_to(root)) if root is not None else path.name
        # utf-8-sig: a trace saved again by a spreadsheet starts with a byte-order mark
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
            yield path, read_trace(fh, name=name, timezone=timezone)


def _common_root(files: Sequence[Path]) -> Path | None:
    """The deepest folder holding every file (the trace names are relative to it: the folders
    under it say the service)."""
    if not files:
        return None
    parents = [p.resolve().parent for p in files]
    root = parents[0]
    while not all(root == p or root in p.parents for p in parents):
        root = root.parent
    return root if len(files) > 1 else _service_root(files[0].resolve())


def _service_root(path: Path) -> Path:
    """For a single file, the folder three levels up (``Service/Mode/Session/file.csv`` in the
    UCC layout), or its filesystem root."""
    parents = list(path.parents)
    return parents[min(3, len(parents) - 1)]


def produce_traces(
    paths: Sequence[Path],
    producer: Producer,
    topic: str,
    *,
    speed: float = 1.0,
    timezone: str = "UTC",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Produce the traces' events to ``topic``, all traces starting together, moved to the
    present: at ``speed`` 1 in real time, each event's time its production time; at ``speed``
    X > 1 (or 0, as fast as possible) X times faster, event times keeping the traces' own
    spacing and ending by the time the last is produced (never ahead of the wall clock).
    Returns (events produced, rows dead-lettered by the mapping)."""
    timed: list[tuple[float, bytes, bytes]] = []  # (offset from the trace's start, key, value)
    dead = 0
    longest = 0.0
    for _, trace in _traces(paths, timezone):
        dead += len(trace.dead_letters)
        if not trace.events:
            continue
        times = [datetime.fromisoformat(e["event_time"]) for e in trace.events]
        t0 = min(times)
        for event, at in zip(trace.events, times, strict=True):
            offset = (at - t0).total_seconds()
            longest = max(longest, offset)
            timed.append((offset, event["subscriber_id"].encode(), orjson.dumps(event)))
    timed.sort(key=lambda item: item[0])
    wall0 = time.monotonic()
    start = datetime.now(UTC)
    lag = longest * (1.0 - 1.0 / speed) if speed > 0 else longest
    produced = 0
    for offset, key, value in timed:
        if speed > 0:
            ahead = offset / speed - (time.monotonic() - wall0)
            if ahead > 0.005:
                producer.poll(0)
                time.sleep(ahead)
        event = orjson.loads(value)
        event["event_time"] = (start + timedelta(seconds=offset - lag)).isoformat()
        produce_waiting(producer, topic, orjson.dumps(event), key)
        produced += 1
        if produced % 1000 == 0:
            producer.poll(0)
            if on_progress is not None:
                on_progress(produced)
    producer.flush()
    return produced, dead

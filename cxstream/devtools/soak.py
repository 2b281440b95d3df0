"""``cxstream soak``: the demo for a long time, watching the lag and every process's memory.

It runs :func:`cxstream.devtools.demo.run_demo` as ``cxstream demo`` does and samples, every few seconds,
the lag (events produced and not yet processed or dead-lettered, also in seconds of input at the
current rate) and the resident memory of each process: the demo itself, the dataflow, the
embedded broker and the embedded Redis (read from ``/proc``: Linux only). At the end it prints
the counts, the largest lag, how long the lag stayed above ``--lag-limit`` seconds of input at
the longest, and per process the peak RSS, the RSS every ``--checkpoint`` seconds and its growth
per checkpoint after the first (memory that keeps growing after the warm-up is a leak).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxstream.devtools.flowprocess import DemoSummary, Flow

__all__ = ["SoakWatch", "process_memory_kb"]

_EMBEDDED = {"redis-server": "redis"}  # command name -> process; the broker is matched by prefix


def process_memory_kb(pid: int) -> tuple[int, int] | None:
    """``(current, peak)`` resident memory of ``pid`` in kB, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(values["VmRSS"].split()[0]), int(values["VmHWM"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def _children(parent: int) -> dict[str, int]:
    """The embedded services started by ``parent``: ``{"broker": pid, "redis": pid}``."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid != parent:
            continue
        if name.startswith("tansu"):
            found["broker"] = int(entry.name)
        elif name in _EMBEDDED:
            found[_EMBEDDED[name]] = int(entry.name)
    return found


@dataclass
class _Memory:
    pid: int
    peak_kb: int = 0
    at: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS kB)


class SoakWatch:
    """The demo's observer: lag and memory over a long run (see the module's docstring)."""

    def __init__(
        self,
        sample_s: float = 5.0,
        checkpoint_s: float = 600.0,
        lag_limit_s: float = 10.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.sample_s = sample_s
        self.checkpoint_s = checkpoint_s
        self.lag_limit_s = lag_limit_s
        self._clock = clock
        self._t0: float | None = None
        self._next = 0.0
        self._produced: deque[tuple[float, int]] = deque()
        self.memory: dict[str, _Memory] = {}
        self.max_lag_events = 0
        self.max_lag_s = 0.0
        self.longest_over_s = 0.0
        self._over_since: float | None = None
        self.elapsed_s = 0.0

    def __call__(self, flow: Flow, produced: int, summary: DemoSummary) -> None:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        self.elapsed_s = now - self._t0
        self._lag(now, produced, summary)
        if now >= self._next:
            self._next = now + self.sample_s
            self._sample_memory(flow)

    def _lag(self, now: float, produced: int, summary: DemoSummary) -> None:
        lag = max(0, produced - summary.events_processed - summary.dead_letters)
        self._produced.append((now, produced))
        while len(self._produced) > 2 and now - self._produced[1][0] >= 10.0:
            self._produced.popleft()
        t_first, p_first = self._produced[0]
        rate = (produced - p_first) / (now - t_first) if now > t_first else 0.0
        lag_s = lag / rate if rate > 0 else 0.0
        self.max_lag_events = max(self.max_lag_events, lag)
        self.max_lag_s = max(self.max_lag_s, lag_s)
        if lag_s > self.lag_limit_s:
            if self._over_since is None:
                self._over_since = now
            self.longest_over_s = max(self.longest_over_s, now - self._over_since)
        else:
            self._over_since = None

    def _sample_memory(self, flow: Flow) -> None:
        pids = {"demo": os.getpid(), "flow": flow.proc.pid, **_children(os.getpid())}
        for name, pid in pids.items():
            usage = process_memory_kb(pid)
            if usage is None:
                continue
            mem = self.memory.setdefault(name, _Memory(pid))
            mem.peak_kb = max(mem.peak_kb, usage[1])
            mem.at.append((self.elapsed_s, usage[0]))

    def report(self, summary: DemoSummary) -> dict[str, Any]:
        """The figures, as ``cxstream soak --json`` prints them."""
        processes: dict[str, Any] = {}
        for name, mem in self.memory.items():
            marks = self._checkpoints(mem)
            after_first = [rss for t, rss in marks if t >= self.checkpoint_s]
            growth = None
            if len(after_first) >= 2:
                growth = (after_first[-1] - after_first[0]) / 1024 / (len(after_first) - 1) + 0.0
            processes[name] = {
                "peak_rss_mb": round(mem.peak_kb / 1024, 1),
                "rss_mb_at_s": {str(round(t)): round(rss / 1024, 1) for t, rss in marks},
                "growth_mb_per_checkpoint_after_first": (
                    None if growth is None else round(growth, 1)
                ),
            }
        return {
            "duration_s": round(self.elapsed_s),
            "events_produced": summary.events_produced,
            "events_processed": summary.events_processed,
            "dead_letters": summary.dead_letters,
            "drained": summary.drained,
            "max_lag_events": self.max_lag_events,
            "max_lag_s": round(self.max_lag_s, 2),
            f"longest_lag_over_{self.lag_limit_s:g}s_s": round(self.longest_over_s, 1),
            "checkpoint_s": self.checkpoint_s,
            "processes": processes,
        }

    def _checkpoints(self, mem: _Memory) -> list[tuple[float, int]]:
        """The sample nearest each whole checkpoint, and the last sample."""
        if not mem.at:
            return []
        marks: list[tuple[float, int]] = []
        mark = self.checkpoint_s
        for t, rss in mem.at:
            if t >= mark:
                marks.append((t, rss))
                mark += self.checkpoint_s
        if mem.at[-1] not in marks:
            marks.append(mem.at[-1])
        return marks


def report_lines(report: dict[str, Any]) -> list[str]:
    """The human form of :meth:`SoakWatch.report`."""
    limit = next(k for k in report if k.startswith("longest_lag_over_"))
    lines = [
        f"soak: {report['duration_s']} s",
        f"  events produced {report['events_produced']}, processed "
        f"{report['events_processed']}, dead letters {report['dead_letters']}, "
        f"drained {report['drained']}",
        f"  largest lag {report['max_lag_events']} events ({report['max_lag_s']} s of input); "
        f"longest stretch over the lag limit ({limit.split('_')[3]}): {report[limit]} s",
        f"  memory (RSS, MB; every {report['checkpoint_s']:.0f} s):",
    ]
    for name, p in report["processes"].items():
        marks = ", ".join(f"{t} s: {mb}" for t, mb in p["rss_mb_at_s"].items())
        growth = p["growth_mb_per_checkpoint_after_first"]
        lines.append(
            f"    {name:<7} peak {p['peak_rss_mb']:>7}  [{marks}]  growth after the first "
            f"checkpoint: {'n/a' if growth is None else f'{growth} MB per checkpoint'}"
        )
    return lines

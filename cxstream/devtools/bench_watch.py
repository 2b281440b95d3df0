"""Watching the benchmark's flows while they run: progress per process, the steady rate, the
drain at the end, and the paced producer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from confluent_kafka import Producer

from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.probes import encode_paced, send_paced
from cxstream.errors import ServiceError

__all__ = [
    "Run",
    "drain",
    "drained",
    "ended",
    "paced",
    "read_counters",
    "steady_rates",
    "watch",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``."""

_LAST_SEEN: dict[tuple[int, tuple[str, ...] | None], dict[str, float]] = {}


def read_counters(
    flows: Sequence[FlowProcess], only: tuple[str, ...] | None = None
) -> dict[str, float]:
    """The flows' counters summed (just the ``only`` samples, if given); a flow whose metrics
    endpoint is slow to answer (its process busy, or paused by a profiler) counts with what it
    reported last."""
    total: dict[str, float] = {}
    for flow in flows:
        seen = (flow.proc.pid, only)
        try:
            counters = _LAST_SEEN[seen] = flow.counters(only)
        except httpx.HTTPError as exc:
            log.warning("metrics of the dataflow process %d not read: %s", flow.proc.pid, exc)
            counters = _LAST_SEEN.get(seen, {})
        for key, value in counters.items():
            total[key] = total.get(key, 0.0) + value
    return total


def ended_each(flows: Sequence[FlowProcess]) -> tuple[int, ...]:
    """Events each process has processed or dead-lettered."""
    ended = []
    for flow in flows:
        c = read_counters([flow], only=("cxstream_events_total",))
        ended.append(
            int(
                c.get("cxstream_events_total{outcome=processed}", 0)
                + c.get("cxstream_events_total{outcome=dead_letter}", 0)
            )
        )
    return tuple(ended)


def ended(flows: Sequence[FlowProcess]) -> int:
    return sum(ended_each(flows))


@dataclass(frozen=True)
class Run:
    """When the flow started and finished, and its rates."""

    first: float
    last: float
    done: int
    rate: float  # while every process had events left
    busy_rate: float | None = None  # from the first event ended to the last
    finish_skew_s: float | None = None


def _slope(samples: Sequence[tuple[float, int]]) -> float | None:
    """Events per second between the first and the last of ``(time, ended)`` samples."""
    if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
    return None


def steady_rates(
    samples: Sequence[tuple[float, Sequence[int]]],
) -> tuple[float | None, float | None, float | None]:
    """``(steady, busy, skew)`` from progress samples ``(time, events ended per process)``.

    *busy*: the rate between the first and the last sample at which some events had ended and
    some had not. *steady*: the same, over the samples at which every process had events left
    (none had yet ended all it would end), the rate the cluster sustains on an endless stream.
    With one process the two are the same. *skew*: seconds between the samples at which the
    first and the last process had ended all theirs. None where too few samples fall in a
    window.
    """
    if not samples:
        return None, None, None
    finals = samples[-1][1]
    totals = [(t, sum(ns)) for t, ns in samples]
    expected = totals[-1][1]
    busy = _slope([(t, n) for t, n in totals if 0 < n < expected])
    # the index of the first sample at which each process had ended all it would end
    done_at = [
        next(k for k, (_, ns) in enumerate(samples) if ns[i] == final)
        for i, final in enumerate(finals)
    ]
    first = next((k for k, (_, ns) in enumerate(samples) if all(ns)), None)
    steady = _slope(totals[first : min(done_at)]) if first is not None else None
    skew = samples[max(done_at)][0] - samples[min(done_at)][0] if all(finals) else None
    return (steady if steady is not None else busy), busy, skew


def watch(
    flows: Sequence[FlowProcess],
    expected: int,
    say: Progress,
    timeout_s: float = 1_800,
    poll_s: float = 0.5,
) -> Run:
    """Poll the flows' counters until every event ended.

    The rates are measured between samples taken while the flow was busy (see
    :func:`steady_rates`), so start-up and the final poll interval do not blur them; polling is
    kept slow because every scrape costs the flow CPU.
    """
    samples: list[tuple[float, tuple[int, ...]]] = []
    start = time.monotonic()
    done = 0
    while done < expected:
        if time.monotonic() - start > timeout_s:
            msg = f"the flow ended {done} of {expected} events within {timeout_s:.0f}s"
            raise ServiceError(msg)
        for flow in flows:
            if flow.proc.poll() is not None:
                msg = (
                    f"a dataflow process exited with {flow.proc.returncode} (log: {flow.log_path})"
                )
                raise ServiceError(msg)
        time.sleep(poll_s)
        now = time.monotonic()
        each = ended_each(flows)
        done = sum(each)
        samples.append((now, each))
        say("running", done, expected)
    started = next((t - poll_s for t, ns in samples if sum(ns) > 0), start)
    finished = samples[-1][0] if samples else start
    steady, busy, skew = steady_rates(samples)
    if steady is None:  # too short to sample mid-run: whole-run average (an underestimate)
        steady = done / max(finished - started, 1e-9)
    return Run(started, finished, done, steady, busy, skew)


_DRAINED = (
    "cxstream_events_total",
    "cxstream_cell_events_total",
    "cxstream_kafka_out_records_total",
    "cxstream_kafka_out_queued",
)


def drained(counters: dict[str, float]) -> bool:
    """Whether a cluster's metrics (summed over its processes: events cross between them on
    their way to the cells) say that every event processed reached the cells' demarcation, and
    that every output produced was acknowledged by the broker."""
    processed = counters.get("cxstream_events_total{outcome=processed}", 0.0)
    return (
        counters.get("cxstream_cell_events_total", 0.0) >= processed
        and counters.get("cxstream_kafka_out_queued", 0.0) == 0.0
    )


def drain(
    flows: Sequence[FlowProcess], timeout_s: float = 30.0, poll_s: float = 0.1, quiet: int = 5
) -> None:
    """Wait until the flows' last outputs are out (see :func:`drained`) before they are stopped:
    every event has been counted at the poll when :func:`_watch` returns, but what the cells
    emit for the last of them may still be on its way, and a stopped flow does not send it.
    Drained, with no output record added, ``quiet`` polls in a row: between the cells and the
    producer (across processes, in a cluster) outputs are in none of the counts."""
    deadline = time.monotonic() + timeout_s
    streak, last = 0, -1.0
    counters: dict[str, float] = {}
    while streak < quiet:
        if time.monotonic() > deadline:
            log.warning(
                "the flows' last outputs were not out within %.0f s: %s",
                timeout_s,
                {k: v for k, v in counters.items() if "{" not in k or "processed" in k},
            )
            return
        time.sleep(poll_s)
        counters = read_counters(flows, only=_DRAINED)
        records = counters.get("cxstream_kafka_out_records_total", 0.0)
        streak = streak + 1 if drained(counters) and records == last else 0
        last = records


def paced(
    producer: Producer,
    topic: str,
    records: list[dict[str, Any]],
    rate: float,
    flows: Sequence[FlowProcess],
    say: Progress,
) -> Run:
    """Produce at ``rate`` events/s with event time = send time; then wait for the flow.

    The records are serialised beforehand around a fixed-width time placeholder, and sent in
    1 ms ticks: the load generator shares this machine's cores with the flow and the broker,
    so it must cost as little as it can (a JSON encoding and a sleep per event did not).
    """
    encoded = encode_paced(records)
    start = time.monotonic()
    send_paced(
        producer, topic, encoded, rate, lambda: say("running (paced)", ended(flows), len(encoded))
    )
    run = watch(flows, len(encoded), say)
    return Run(start, run.last, run.done, run.done / max(run.last - start, 1e-9))

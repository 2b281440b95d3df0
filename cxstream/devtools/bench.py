"""``cxstream bench``: the full production dataflow against the limit of this machine, same run.

1. Start the embedded broker and Redis (or use the configured ones), create fresh topics, load the
   simulator's customer profiles, plan incidents (so that alerts, incidents and actions happen).
2. Generate N simulator events. At saturation (no ``--rate``) they are all produced before the
   flow starts, then the **ceiling** is measured: a plain confluent-kafka consumer that only
   parses them (orjson), one core.
3. Run the production dataflow (``cxstream run``: parse, validate, enrich from Redis, experience
   score, per-subscriber and per-cell detection, churn scoring, policy, actions to Kafka and to a
   local webhook receiver) as W processes of a Bytewax cluster (each pinned to a core of its own
   when a core is left for the services, unless ``--no-pin``), until every event is processed
   or dead-lettered. Throughput is the steady rate: between the first and the last progress
   sample (counters polled every 0.5 s, per process) taken while every process still had events
   to read. A backlog runs out on one process before the other; the rest of the run, one
   process busy and one idle, is not a rate the cluster sustains on an endless stream, and is
   reported apart (``busy_events_per_s``, ``finish_skew_s``). ``cpu_cores`` is the CPU time
   the flow processes used over the run.
   With ``--rate`` the events are produced paced, with their event time set when they are sent,
   and the ceiling is measured afterwards on the same topic.
4. Latency is event time to action: each action on the actions topic carries the event time of
   the event that caused it, and Kafka stamps the moment the flow produced it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import yaml

from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.rules import DEFAULT_POLICY, QuietHours, load_policy
from cxstream.clients import context_client, ensure_topics, produce_waiting
from cxstream.context import ContextStore
from cxstream.devtools.bench_watch import drain, paced, read_counters, watch
from cxstream.devtools.flowprocess import FlowProcess, stop_all
from cxstream.devtools.probes import (
    FLOOR_SECONDS,
    action_time,
    generator_producer,
    measure_ceiling,
    measure_latency_floor,
    read_latencies,
    summary_time,
)
from cxstream.devtools.services import embedded_services, free_port, free_ports
from cxstream.devtools.simulate import Simulator, plan_incidents
from cxstream.devtools.state_probe import probe_state
from cxstream.events import Channel, ConsentStatus, utcnow
from cxstream.settings import Settings, TopicSettings

if TYPE_CHECKING:
    pass

__all__ = ["BenchOptions", "BenchReport", "measure_ceiling", "probe_state", "run_bench"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``."""


@dataclass(frozen=True)
class BenchOptions:
    """What to run."""

    events: int = 200_000
    subscribers: int = 10_000
    cells: int = 500
    workers: int = 1
    rate: float | None = None  # events/s to pace the producer at; None = saturate
    seed: int = 7
    pin: bool = True  # each dataflow process on a core of its own (taskset)
    # cells.hold_s during the run: individual outreach deliberately waits this long for a cell
    # incident that would explain it; 0 (the default) measures the system, not that wait
    hold_s: float = 0.0


@dataclass(frozen=True)
class BenchReport:
    """Measured figures (the JSON keys of ``cxstream bench --json``)."""

    events: int
    seconds: float
    events_per_s: float  # while every process had events left
    ceiling_events_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    pipeline_p50_ms: float | None
    pipeline_p99_ms: float | None
    pipeline_samples: int
    workers: int
    peak_rss_mb: float
    cpu_s: float  # CPU time the dataflow processes used while running
    actions: int
    alerts: int
    dead_letters: int
    rate: float | None
    floor_p50_ms: float | None = None  # paced runs: a plain consumer at the same rate
    floor_p99_ms: float | None = None
    hold_s: float = 0.0
    busy_events_per_s: float | None = None  # from the first event to the last one
    finish_skew_s: float | None = None  # first process done -> last process done

    @property
    def ratio(self) -> float:
        """Throughput as a share of the parse-only ceiling."""
        return self.events_per_s / self.ceiling_events_per_s if self.ceiling_events_per_s else 0.0

    def summary(self) -> dict[str, Any]:
        """One JSON-ready dict."""
        return {
            "events": self.events,
            "seconds": round(self.seconds, 2),
            "events_per_s": round(self.events_per_s),
            "ceiling_events_per_s": round(self.ceiling_events_per_s),
            "ratio": round(self.ratio, 3),
            "latency_p50_ms": _round(self.latency_p50_ms),
            "latency_p99_ms": _round(self.latency_p99_ms),
            "pipeline_p50_ms": _round(self.pipeline_p50_ms),
            "pipeline_p99_ms": _round(self.pipeline_p99_ms),
            "pipeline_samples": self.pipeline_samples,
            "workers": self.workers,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "cpu_cores": round(self.cpu_s / self.seconds, 2) if self.seconds > 0 else None,
            "actions": self.actions,
            "alerts": self.alerts,
            "dead_letters": self.dead_letters,
            "rate": self.rate,
            "floor_p50_ms": _round(self.floor_p50_ms),
            "floor_p99_ms": _round(self.floor_p99_ms),
            "hold_s": self.hold_s,
            "busy_events_per_s": _round0(self.busy_events_per_s),
            "finish_skew_s": _round(self.finish_skew_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _round0(value: float | None) -> int | None:
    return round(value) if value is not None else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (``VmHWM``), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _generate(sim: Simulator, start: datetime, n: int, rate: float) -> Iterator[dict[str, Any]]:
    # the busy hour at every hour: the event-time span (and so every event-time window of the
    # flow) must not depend on the time of day the bench runs
    times = sim.timeline(start, rate, diurnal=False)
    for _ in range(n):
        yield sim.event(next(times))


def run_bench(
    settings: Settings, options: BenchOptions, *, progress: Progress | None = None
) -> BenchReport:
    """Run the benchmark; see the module docstring."""
    say = progress or (lambda stage, done, total: None)
    cores = _plan_cores(options)
    saved_affinity = os.sched_getaffinity(0)
    if cores.rest:  # the broker, Redis and the load generator keep off the flows' cores
        os.sched_setaffinity(0, cores.rest)
    try:
        return _run_bench(settings, options, say, cores)
    finally:
        os.sched_setaffinity(0, saved_affinity)


class _Cores(NamedTuple):
    flows: list[int | None]  # the core of each dataflow process (None: not pinned)
    rest: set[int]  # everything else (empty: not separated)
    ceiling: int | None  # the one core of the ceiling consumer (None: not pinned)


def _plan_cores(options: BenchOptions, cores: Sequence[int] | None = None) -> _Cores:
    """With ``pin``, and a core left over for the broker, Redis and the benchmark itself (which
    inherit its affinity): one core per dataflow process, the services on the rest. Without a
    core to spare (as many processes as cores) nothing is pinned: pinning would only make the
    broker take its share out of one process's core, and that process would fall behind the
    others (measured: two pinned processes on two cores finished their partitions 4 s apart in
    a 30 s run, unpinned 1 s). The ceiling consumer always gets one core (it measures one)."""
    cores = sorted(os.sched_getaffinity(0)) if cores is None else sorted(cores)
    if not options.pin or shutil.which("taskset") is None:
        return _Cores([None] * options.workers, set(), None)
    if options.workers >= len(cores):
        return _Cores([None] * options.workers, set(), cores[0])
    flows = cores[: options.workers]
    return _Cores(list(flows), set(cores) - set(flows), cores[0])


def _run_bench(
    settings: Settings, options: BenchOptions, say: Progress, cores: _Cores
) -> BenchReport:
    suffix = uuid.uuid4().hex[:8]
    names = [n for n in TopicSettings.model_fields if n != "partitions"]
    topics = settings.kafka.topics.model_copy(
        update={
            **{n: f"bench-{n}-{suffix}" for n in names},
            # several partitions per process: they are the unit of parallelism, and one
            # consumer per partition keeps fetches flowing
            "partitions": max(settings.kafka.topics.partitions, 4, 2 * options.workers),
        }
    )
    with ExitStack() as stack:
        live = stack.enter_context(embedded_services(settings)).settings
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cxbench-")))
        live = live.model_copy(
            update={
                "kafka": live.kafka.model_copy(update={"topics": topics}),
                "redis": live.redis.model_copy(update={"key_prefix": f"bench{suffix}"}),
                "dashboard": live.dashboard.model_copy(update={"enabled": False}),
            }
        )
        ensure_topics(live)
        sim = Simulator(options.subscribers, options.cells, seed=options.seed, run_id=suffix)
        granted = {c: ConsentStatus.GRANTED for c in Channel}
        store = ContextStore(context_client(live), prefix=live.redis.key_prefix)
        profiles = [p.model_copy(update={"consent": granted}) for p in sim.profiles()]
        for i in range(0, len(profiles), 1000):
            store.put_many(profiles[i : i + 1000])
            say("loading profiles", i, len(profiles))

        # event time: 20,000 events per second (or the paced rate), like a busy hour
        evt_rate = options.rate or 20_000.0
        span = options.events / evt_rate
        start = utcnow() - (timedelta(seconds=span + 5) if options.rate is None else timedelta())
        sim.add_incidents(plan_incidents(sim, start, span, sim.rng))
        records: list[dict[str, Any]] = []
        for i, record in enumerate(_generate(sim, start, options.events, evt_rate)):
            records.append(record)
            if i % 20_000 == 0:
                say("generating events", i, options.events)

        producer = generator_producer(live)
        qos = topics.qos
        ceiling = 0.0
        if options.rate is None:
            for i, record in enumerate(records):
                produce_waiting(
                    producer, qos, orjson.dumps(record), record["subscriber_id"].encode()
                )
                if i % 20_000 == 0:
                    say("producing", i, options.events)
            producer.flush(60)
            say("measuring the ceiling", 0, 1)
            ceiling = measure_ceiling(live, qos, options.events, cpu=cores.ceiling)

        # The configured policy, minus quiet hours: a contact deferred to the morning would make
        # the event-to-action latency a measure of the clock, not of the system. The same goes
        # for the demarcation hold (--hold-s, 0 unless asked for).
        policy = load_policy(live.policy.file) if live.policy.file is not None else DEFAULT_POLICY
        policy_file = tmp / "policy.yaml"
        policy_file.write_text(
            yaml.safe_dump(
                policy.model_copy(
                    update={"quiet_hours": QuietHours(start=dtime(0), end=dtime(0))}
                ).model_dump(mode="json")
            )
        )
        live = live.model_copy(
            update={
                "policy": live.policy.model_copy(update={"file": str(policy_file)}),
                "cells": live.cells.model_copy(update={"hold_s": options.hold_s}),
            }
        )
        secret = "whsec_" + os.urandom(24).hex()
        receiver = stack.enter_context(WebhookReceiver(secret))
        live = live.model_copy(
            update={"webhook": live.webhook.model_copy(update={"url": receiver.url})}
        )
        flows = _start_flows(live, tmp, secret, cores.flows)
        stack.callback(stop_all, flows)
        for flow in flows:
            flow.wait_ready(120)
        say("running", 0, options.events)
        cpu_before = sum(_cpu_s(flow.proc.pid) for flow in flows)
        if options.rate is not None:
            run = paced(producer, qos, records, options.rate, flows, say)
        else:
            run = watch(flows, options.events, say)
        rss = sum(_peak_rss_mb(flow.proc.pid) for flow in flows)
        cpu = sum(_cpu_s(flow.proc.pid) for flow in flows) - cpu_before
        say("draining", 0, 1)
        drain(flows)
        counters = read_counters(flows)
        stop_all(flows)
        floor: list[float] = []
        if options.rate is not None:
            say("measuring the ceiling", 0, 1)
            ceiling = measure_ceiling(live, qos, options.events, cpu=cores.ceiling)
            say("measuring the latency floor", 0, 1)
            floor_topic = f"bench-floor-{suffix}"
            ensure_topics(live, [floor_topic])
            sample = records[: max(1, int(options.rate * FLOOR_SECONDS))]
            floor = measure_latency_floor(live, floor_topic, sample, options.rate, cores.ceiling)
        latencies = read_latencies(live, topics.actions, action_time)
        pipeline_latencies = read_latencies(live, topics.cells, summary_time)
    seconds = max(run.last - run.first, 1e-9)
    return BenchReport(
        events=run.done,
        seconds=seconds,
        events_per_s=run.rate,
        busy_events_per_s=run.busy_rate,
        finish_skew_s=run.finish_skew_s,
        ceiling_events_per_s=ceiling,
        latency_p50_ms=_percentile(latencies, 0.5),
        latency_p99_ms=_percentile(latencies, 0.99),
        pipeline_p50_ms=_percentile(pipeline_latencies, 0.5),
        pipeline_p99_ms=_percentile(pipeline_latencies, 0.99),
        pipeline_samples=len(pipeline_latencies),
        workers=options.workers,
        peak_rss_mb=rss,
        cpu_s=cpu,
        actions=len(latencies),
        alerts=int(counters.get("cxstream_alerts_total", 0)),
        dead_letters=int(counters.get("cxstream_events_total{outcome=dead_letter}", 0)),
        rate=options.rate,
        floor_p50_ms=_percentile(floor, 0.5),
        floor_p99_ms=_percentile(floor, 0.99),
        hold_s=options.hold_s,
    )


def _start_flows(
    settings: Settings, tmp: Path, secret: str, cores: list[int | None]
) -> list[FlowProcess]:
    workers = len(cores)

    def cpus(i: int) -> set[int] | None:
        core = cores[i]
        return None if core is None else {core}

    if workers == 1:
        return [FlowProcess(settings, _mkdir(tmp / "p0"), secret, cpus=cpus(0))]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(workers))
    base = free_ports(workers)
    return [
        FlowProcess(
            settings,
            _mkdir(tmp / f"p{i}"),
            secret,
            cluster=(i, addresses),
            metrics_base=base,
            cpus=cpus(i),
        )
        for i in range(workers)
    ]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

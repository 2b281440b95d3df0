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
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson
import yaml
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.rules import DEFAULT_POLICY, QuietHours, load_policy
from cxstream.clients import context_client, ensure_topics, produce_waiting
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess, stop_all
from cxstream.devtools.services import embedded_services, free_port
from cxstream.devtools.simulate import Simulator, plan_incidents
from cxstream.errors import ServiceError
from cxstream.events import Channel, ConsentStatus, QosRecord, Service, utcnow
from cxstream.settings import Settings, TopicSettings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["BenchOptions", "BenchReport", "measure_ceiling", "run_bench"]

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


def _consumer_config(settings: Settings) -> dict[str, str]:
    """A plain consumer configured as the dataflow's are, in a throw-away group."""
    return {
        **settings.kafka.client_config(),
        **settings.kafka.consumer_config,
        "group.id": f"cx-bench-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": "false",
    }


def _assign_all(consumer: Consumer, topic: str) -> int:
    """Assign every partition of ``topic`` from its beginning (no group join); their number."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return len(partitions)


# The load generator stands in for the probes' mediation layer, which batches. Each produce
# request costs the embedded broker, on the core it shares with Redis and the generator, about
# the same whatever its size: at 20,000 events/s, 5 ms batches kept that core saturated and the
# broker fell behind by seconds. The wait is inside the measured latency (events are stamped
# when handed to the producer).
GENERATOR_LINGER_MS = 20


def _producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka.producer_settings(), "linger.ms": str(GENERATOR_LINGER_MS)})


def _consumer(settings: Settings, topic: str) -> tuple[Consumer, int]:
    consumer = Consumer({**_consumer_config(settings), "enable.partition.eof": "true"})
    return consumer, _assign_all(consumer, topic)


def _read_all(
    settings: Settings,
    topic: str,
    on_message: Callable[[Message], None],
    enough: Callable[[], bool],
    timeout_s: float,
) -> None:
    """Feed every message of ``topic`` to ``on_message`` until each partition's end (or enough)."""
    consumer, n_partitions = _consumer(settings, topic)
    at_end: set[int | None] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not (len(at_end) == n_partitions and enough()):
            for msg in consumer.consume(10_000, 0.5):
                error = msg.error()
                if error is None:
                    on_message(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
    finally:
        consumer.close()


def measure_ceiling(
    settings: Settings, topic: str, expected: int, timeout_s: float = 120, cpu: int | None = None
) -> float:
    """Events/s of a plain consumer that reads and parses ``expected`` events; with ``cpu``, it
    and its librdkafka threads share that one core, as one pinned dataflow process does."""
    if cpu is not None:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})  # this thread, and the threads it starts
        try:
            return measure_ceiling(settings, topic, expected, timeout_s)
        finally:
            os.sched_setaffinity(0, saved)
    loads = orjson.loads
    seen = 0
    start: float | None = None

    def parse(msg: Message) -> None:
        nonlocal seen, start
        if start is None:
            start = time.perf_counter()
        try:  # noqa: SIM105 - suppress() would add a call per message to the ceiling loop
            loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            pass
        seen += 1

    _read_all(settings, topic, parse, lambda: seen >= expected, timeout_s)
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return seen / elapsed if elapsed > 0 else 0.0


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


def _latencies(
    settings: Settings, topic: str, event_time_s: Callable[[dict[str, Any]], float]
) -> list[float]:
    """Milliseconds from each record's event time (``event_time_s`` of the decoded record) to
    when the flow produced it (the Kafka timestamp)."""
    out: list[float] = []

    def latency(msg: Message) -> None:
        record = orjson.loads(msg.value() or b"{}")
        out.append(msg.timestamp()[1] - event_time_s(record) * 1000.0)

    _read_all(settings, topic, latency, lambda: True, 30)
    return out


def _action_time(action: dict[str, Any]) -> float:
    """An action's event time: that of the event that caused it."""
    return datetime.fromisoformat(action["event_time"]).timestamp()


def _summary_time(stats: dict[str, Any]) -> float:
    """A cell summary's event time: the newest event it covers (its cell's clock), so its
    latency is the hot path's own delay (parse, enrich, detect, demarcate, Kafka out)."""
    return float(stats["at"])


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

        producer = _producer(live)
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
            run = _paced(producer, qos, records, options.rate, flows, say)
        else:
            run = _watch(flows, options.events, say)
        rss = sum(_peak_rss_mb(flow.proc.pid) for flow in flows)
        cpu = sum(_cpu_s(flow.proc.pid) for flow in flows) - cpu_before
        say("draining", 0, 1)
        _drain(flows)
        counters = _counters(flows)
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
        latencies = _latencies(live, topics.actions, _action_time)
        pipeline_latencies = _latencies(live, topics.cells, _summary_time)
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
    return [
        FlowProcess(settings, _mkdir(tmp / f"p{i}"), secret, cluster=(i, addresses), cpus=cpus(i))
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


_LAST_SEEN: dict[tuple[int, tuple[str, ...] | None], dict[str, float]] = {}


def _counters(
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


def _ended_each(flows: Sequence[FlowProcess]) -> tuple[int, ...]:
    """Events each process has processed or dead-lettered."""
    ended = []
    for flow in flows:
        c = _counters([flow], only=("cxstream_events_total",))
        ended.append(
            int(
                c.get("cxstream_events_total{outcome=processed}", 0)
                + c.get("cxstream_events_total{outcome=dead_letter}", 0)
            )
        )
    return tuple(ended)


def _ended(flows: Sequence[FlowProcess]) -> int:
    return sum(_ended_each(flows))


@dataclass(frozen=True)
class _Run:
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


def _watch(
    flows: Sequence[FlowProcess],
    expected: int,
    say: Progress,
    timeout_s: float = 1_800,
    poll_s: float = 0.5,
) -> _Run:
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
        each = _ended_each(flows)
        done = sum(each)
        samples.append((now, each))
        say("running", done, expected)
    started = next((t - poll_s for t, ns in samples if sum(ns) > 0), start)
    finished = samples[-1][0] if samples else start
    steady, busy, skew = steady_rates(samples)
    if steady is None:  # too short to sample mid-run: whole-run average (an underestimate)
        steady = done / max(finished - started, 1e-9)
    return _Run(started, finished, done, steady, busy, skew)


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


def _drain(
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
        counters = _counters(flows, only=_DRAINED)
        records = counters.get("cxstream_kafka_out_records_total", 0.0)
        streak = streak + 1 if drained(counters) and records == last else 0
        last = records


_PLACEHOLDER = "1970-01-01T00:00:00.000000+00:00"
FLOOR_SECONDS = 10.0  # how long the latency floor is measured at the paced rate


def _paced(
    producer: Producer,
    topic: str,
    records: list[dict[str, Any]],
    rate: float,
    flows: Sequence[FlowProcess],
    say: Progress,
) -> _Run:
    """Produce at ``rate`` events/s with event time = send time; then wait for the flow.

    The records are serialised beforehand around a fixed-width time placeholder, and sent in
    1 ms ticks: the load generator shares this machine's cores with the flow and the broker,
    so it must cost as little as it can (a JSON encoding and a sleep per event did not).
    """
    encoded = _encode_paced(records)
    start = time.monotonic()
    _send_paced(
        producer, topic, encoded, rate, lambda: say("running (paced)", _ended(flows), len(encoded))
    )
    run = _watch(flows, len(encoded), say)
    return _Run(start, run.last, run.done, run.done / max(run.last - start, 1e-9))


_Encoded = list[tuple[bytes, bytes, bytes]]


def _encode_paced(records: list[dict[str, Any]]) -> _Encoded:
    """Each record as key, and its JSON cut around the event time (filled in when sent)."""
    marker = _PLACEHOLDER.encode()
    encoded = []
    for record in records:
        value = orjson.dumps({**record, "event_time": _PLACEHOLDER})
        cut = value.index(marker)
        encoded.append((record["subscriber_id"].encode(), value[:cut], value[cut + len(marker) :]))
    return encoded


def _send_paced(
    producer: Producer, topic: str, encoded: _Encoded, rate: float, tick: Callable[[], None]
) -> None:
    """Send at ``rate`` events/s in 1 ms ticks, each event stamped with its send time;
    ``tick`` is called about once a second."""
    start = time.monotonic()
    next_check = start
    sent = 0
    total = len(encoded)
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - start) * rate) + 1)
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f+00:00").encode()
        while sent < due:
            key, head, tail = encoded[sent]
            produce_waiting(producer, topic, head + stamp + tail, key)
            sent += 1
        producer.poll(0)
        if now >= next_check:
            next_check = now + 1.0
            tick()
        time.sleep(0.001)
    producer.flush(60)


def measure_latency_floor(
    settings: Settings,
    topic: str,
    records: list[dict[str, Any]],
    rate: float,
    cpu: int | None = None,
    timeout_s: float = 120,
) -> list[float]:
    """The broker's share of the latency at ``rate``: milliseconds from each event's time to
    its arrival, parsed, at a plain consumer (in a process of its own, on ``cpu`` if given,
    configured as the dataflow's consumers are), while this process sends ``records`` to the
    empty ``topic`` at ``rate``, as the paced benchmark does."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    consumer = ctx.Process(
        target=_floor_consumer,
        args=(_consumer_config(settings), topic, len(records), cpu, timeout_s, sender),
    )
    consumer.start()
    try:
        if not receiver.poll(60):
            msg = "the latency-floor consumer did not start"
            raise RuntimeError(msg)
        receiver.recv()  # assigned and polling
        _send_paced(_producer(settings), topic, _encode_paced(records), rate, lambda: None)
        latencies: list[float] = receiver.recv() if receiver.poll(timeout_s) else []
    finally:
        consumer.join(10)
        if consumer.is_alive():
            consumer.kill()
    return latencies


def _floor_consumer(
    config: dict[str, Any],
    topic: str,
    expected: int,
    cpu: int | None,
    timeout_s: float,
    out: Connection,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    consumer = Consumer(config)
    _assign_all(consumer, topic)
    consumer.consume(1, 0.1)
    out.send("ready")
    loads, parse_time = orjson.loads, datetime.fromisoformat
    latencies: list[float] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(latencies) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.001):  # returns what has arrived
                if msg.error() is None:
                    arrived = time.time()
                    event_time = parse_time(loads(msg.value() or b"{}")["event_time"])
                    latencies.append((arrived - event_time.timestamp()) * 1000.0)
    finally:
        consumer.close()
        out.send(latencies)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def probe_state(
    settings: Settings,
    subscribers: int,
    cells: int,
    *,
    progress: Progress | None = None,
    batch: int = 10_000,
) -> dict[str, Any]:
    """Build the dataflow's state for ``subscribers`` active subscribers in ``cells`` cells
    (each subscriber seen twice, inside the cells' window) and measure the memory it takes:
    the growth of this process's resident set, and the size of its snapshot (pickled)."""
    import gc
    import pickle

    import numpy as np

    from cxstream.actions.store import MemoryClaimStore
    from cxstream.batches import ShardBatch
    from cxstream.detectors.cells import CellMonitor
    from cxstream.pipeline import Candidate, Pipeline

    say = progress or (lambda stage, done, total: None)
    pipeline = Pipeline(settings, context=None, claims=MemoryClaimStore())  # type: ignore[arg-type]
    gc.collect()
    before = _rss_mb()
    table = pipeline.new_table()
    monitors: dict[str, CellMonitor[Candidate]] = {}
    rng = np.random.default_rng(1)
    t0 = time.time() - 30.0
    for rnd in range(2):
        for start in range(0, subscribers, batch):
            n = min(batch, subscribers - start)
            ids = [f"sub-{i:08d}" for i in range(start, start + n)]
            records = [
                QosRecord(
                    subscriber_id=sid,
                    cell_id=f"cell-{(start + j) % cells:06d}",
                    event_id=f"e{rnd}-{start + j}",
                    event_time=datetime.fromtimestamp(t0 + rnd * 10 + j * 1e-4).astimezone(),
                    service=Service.DATA,
                    rtt_ms=float(rng.uniform(20, 60)),
                    throughput_kbps=float(rng.uniform(5e3, 5e4)),
                    rsrp_dbm=-90.0,
                    sinr_db=15.0,
                )
                for j, sid in enumerate(ids)
            ]
            shard = ShardBatch.from_records(records)
            cell_batches = [b for _, b in pipeline.detect_shard(table, [shard])]
            pipeline.demarcate_shard(monitors, cell_batches)
            say(f"building state (pass {rnd + 1}/2)", start + n, subscribers)
    gc.collect()
    after = _rss_mb()
    table_bytes = len(pickle.dumps(table, protocol=5))
    cells_bytes = len(pickle.dumps(monitors, protocol=5))
    state_mb = after - before
    return {
        "subscribers": subscribers,
        "cells": cells,
        "state_mb": round(state_mb, 1),
        "bytes_per_subscriber": round(state_mb * 1024 * 1024 / subscribers),
        "snapshot_mb": round((table_bytes + cells_bytes) / 1e6, 1),
        "detector_snapshot_mb": round(table_bytes / 1e6, 1),
        "cells_snapshot_mb": round(cells_bytes / 1e6, 1),
    }

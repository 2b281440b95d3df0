"""``cxstream demo``: the whole system on embedded defaults, with a summary at the end.

1. Start what is not configured: a Tansu broker and a redis-server on free loopback ports.
2. Create the topics, load simulated customer profiles into Redis, start the example webhook
   receiver (it verifies signatures and counts deliveries, standing in for a marketing system).
3. Start the production dataflow (``cxstream run``) as a child process, exactly as in production.
4. Stream realistic QoS events at ``--rate`` with injected incidents, and a few customer updates.
5. At the end (``--duration`` or Ctrl-C): wait until every produced event is processed or
   dead-lettered, let deliveries settle, stop the flow, print the summary.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from cxstream.actions.receiver import WebhookReceiver
from cxstream.clients import context_client, ensure_topics
from cxstream.context import ContextStore
from cxstream.devtools.producer import produce_events
from cxstream.devtools.services import EmbeddedBroker, embedded_services, free_port
from cxstream.devtools.simulate import Simulator, plan_incidents
from cxstream.errors import ServiceError
from cxstream.events import Channel, ConsentStatus, utcnow
from cxstream.health import FlowHealth, LagWatch
from cxstream.settings import Settings

__all__ = [
    "DemoOptions",
    "DemoSummary",
    "Flow",
    "FlowProcess",
    "Generations",
    "run_demo",
    "scrape_counters",
    "stop_all",
]

log = logging.getLogger(__name__)

# The simulated probes export their measurements a quarter of a second at a time, as network
# collectors do, instead of one small batch every few milliseconds. The embedded broker (Tansu's
# memory engine) keeps every batch for ever and lists all of a partition's batches on every fetch
# that returns data, so its cost per fetch grows with the number of batches stored: see
# docs/operations.md, "The embedded broker".
STREAM_PRODUCER = {"linger.ms": "250", "batch.num.messages": "100000"}


@dataclass(frozen=True)
class DemoOptions:
    """What ``cxstream demo`` was asked for."""

    duration_s: float | None = None
    rate: float = 1000.0
    subscribers: int = 1000
    cells: int = 50
    bad_ratio: float = 0.002
    seed: int = 7
    truth_path: Path | None = None
    drain_timeout_s: float = 120.0
    broker_rotation_s: float = 600.0  # replace the embedded broker this often (0: never)
    lag_alert_s: float = 60.0  # the demo's own watch on the flow (see cxstream/health.py)
    lag_alert_events: int = 1000


@dataclass
class DemoSummary:
    """The figures printed at the end (``--json`` keys)."""

    events_produced: int = 0
    events_processed: int = 0
    dead_letters: int = 0
    alerts: int = 0
    actions: int = 0
    webhook_deliveries: int = 0
    drained: bool = True  # every produced event was processed or dead-lettered in time
    # not in the JSON line: details for the human summary
    max_lag: int = field(default=0, repr=False, metadata={"json": False})
    incidents_opened: int = field(default=0, repr=False, metadata={"json": False})
    decisions: dict[tuple[str, str], int] = field(
        default_factory=dict, repr=False, metadata={"json": False}
    )


def scrape_counters(
    url: str,
    timeout_s: float = 2.0,
    client: httpx.Client | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, float]:
    """Sum each ``cxstream_*`` counter and gauge sample by name and labels, e.g.
    ``{'cxstream_events_total{outcome=processed}': 12.0, 'cxstream_alerts_total': 3.0}``.
    Plain names hold the sum over all label sets.

    Pass a ``client`` to scrape repeatedly: a bare ``httpx.get`` builds a client, and with it
    an SSL context from the CA bundle, on every call (measured: most of a benchmark's own CPU).
    ``only`` (sample names) parses just those samples' lines: the exposition parser is slow,
    and a benchmark polling twice a second needs one counter of a long page.
    """
    get = client.get if client is not None else httpx.get
    text = get(url, timeout=timeout_s).text
    if only is not None:
        # the samples, and the type lines (without them a gauge would read as "unknown")
        starts = tuple(f"{name}{sep}" for name in only for sep in "{ ") + tuple(
            f"# TYPE {name} " for name in only
        )
        text = "\n".join(line for line in text.splitlines() if line.startswith(starts))
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("cxstream"):
            continue
        for sample in family.samples:
            if not (sample.name.endswith("_total") or family.type == "gauge"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _flow_config(settings: Settings, path: Path) -> None:
    """Write the resolved settings for the child process (secrets go through its env)."""
    data = settings.model_dump(mode="json", exclude={"webhook": {"secret"}})
    data["redis"]["url"] = None  # passed via env: it may hold a password
    data["redis"]["context_url"] = None
    data["kafka"].pop("sasl_password", None)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


class FlowProcess:
    """The dataflow child process and its metrics endpoint."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        secret: str,
        dashboard_port: int | None = None,
        *,
        cluster: tuple[int, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = free_port()
        process_id = cluster[0] if cluster is not None else 0
        self.hold_s = settings.cells.hold_s
        config = workdir / "cxstream.yaml"
        _flow_config(settings, config)
        self.dashboard_port = free_port() if dashboard_port is None else dashboard_port
        env = {
            **os.environ,
            "CXSTREAM_WEBHOOK__SECRET": secret,
            # `run` serves metrics on flow.metrics_port + process id
            "CXSTREAM_FLOW__METRICS_PORT": str(self.port - process_id),
            "CXSTREAM_DASHBOARD__PORT": str(self.dashboard_port),
            "CXSTREAM_DASHBOARD__AUTH": "false",  # a local, throw-away demo
        }
        if settings.redis.url is not None:
            env["CXSTREAM_REDIS__URL"] = settings.redis.url.get_secret_value()
        if settings.redis.context_url is not None:
            env["CXSTREAM_REDIS__CONTEXT_URL"] = settings.redis.context_url.get_secret_value()
        self.log_path = workdir / "flow.log"
        self._log = self.log_path.open("wb")
        # Own session: Ctrl-C in the terminal reaches the demo, which then drains the flow.
        command = [sys.executable, "-m", "cxstream", "run", "--config", str(config)]
        if cluster is not None:
            command += ["-i", str(cluster[0]), "-a", cluster[1]]
        if cpus is not None:  # pin the process and every thread it starts (benchmarks)
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self._http = httpx.Client()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}/"

    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]:
        return scrape_counters(self.metrics_url, client=self._http, only=only)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                msg = f"the dataflow exited with code {self.proc.returncode}:\n{tail}"
                raise ServiceError(msg)
            try:
                self.counters()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        msg = f"the dataflow did not serve metrics within {timeout_s:.0f}s (log: {self.log_path})"
        raise ServiceError(msg)

    def interrupt(self) -> None:
        """Ask the process to stop (SIGINT) without waiting; see :func:`stop_all`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        self.interrupt()  # nothing if it has exited; then the wait returns at once
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            log.warning(
                "the dataflow process %d did not stop within 20 s of SIGINT; killed (log: %s)",
                self.proc.pid,
                self.log_path,
            )
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        self._http.close()


def stop_all(flows: Sequence[FlowProcess]) -> None:
    """Stop the processes of one cluster together: all are interrupted before any is waited
    for. Stopped one after another, the first to exit left its peer's worker spinning a core
    (its connection gone) until it was killed 20 s later."""
    for flow in flows:
        flow.interrupt()
    for flow in flows:
        flow.stop()


class Flow(Protocol):
    """What the demo reads of its dataflow: a :class:`FlowProcess` or :class:`Generations`."""

    @property
    def proc(self) -> subprocess.Popen[bytes]: ...
    @property
    def log_path(self) -> Path: ...
    @property
    def hold_s(self) -> float: ...
    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]: ...


def _summary(flow: Flow, produced: int, receiver: WebhookReceiver) -> DemoSummary:
    c = flow.counters()
    return DemoSummary(
        events_produced=produced,
        events_processed=int(c.get("cxstream_events_total{outcome=processed}", 0)),
        dead_letters=int(c.get("cxstream_events_total{outcome=dead_letter}", 0)),
        alerts=int(c.get("cxstream_alerts_total", 0)),
        actions=int(
            sum(
                v
                for k, v in c.items()
                if k.startswith("cxstream_decisions_total{")
                and ("result=sent" in k or "result=released" in k)
            )
        ),
        webhook_deliveries=receiver.deliveries,
        incidents_opened=int(c.get("cxstream_cell_incidents_total{state=open}", 0)),
        decisions=_decisions(c),
    )


def _decisions(counters: dict[str, float]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for key, value in counters.items():
        if key.startswith("cxstream_decisions_total{") and value:
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(","))
            out[(labels["kind"], labels["result"])] = int(value)
    return out


def _drain(
    flow: Flow,
    produced: int,
    receiver: WebhookReceiver,
    timeout_s: float,
    last: DemoSummary | None = None,
) -> DemoSummary:
    """Wait until every produced event ended somewhere and deliveries stopped changing; the
    summary's ``drained`` says whether the events did within ``timeout_s``. A flow that does
    not answer its metrics endpoint counts as making no progress."""
    deadline = time.monotonic() + timeout_s
    summary = dataclasses.replace(last or DemoSummary(), events_produced=produced)
    while True:
        with contextlib.suppress(httpx.HTTPError):
            summary = _summary(flow, produced, receiver)
        if summary.events_processed + summary.dead_letters >= produced:
            break
        if time.monotonic() >= deadline or flow.proc.poll() is not None:
            summary.drained = False
            return summary
        time.sleep(0.25)
    settle = min(deadline, time.monotonic() + 10.0 + flow.hold_s)
    while time.monotonic() < settle:
        try:
            c = flow.counters()
            summary = _summary(flow, produced, receiver)
        except httpx.HTTPError:
            break  # the events are all accounted for; deliveries are the flow's to report
        if c.get("cxstream_held_alerts", 0) > 0:  # demarcation still deciding some alerts
            time.sleep(0.25)
            continue
        delivered = c.get("cxstream_webhook_deliveries_total{outcome=delivered}", 0)
        failed = c.get("cxstream_webhook_deliveries_total{outcome=failed}", 0)
        if delivered + failed >= summary.actions:
            break
        time.sleep(0.25)
    return summary


def run_demo(
    settings: Settings,
    options: DemoOptions,
    *,
    say: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    observe: Callable[[Flow, int, DemoSummary], None] | None = None,
) -> DemoSummary:
    """Run the demo; returns the summary (also when interrupted with Ctrl-C).

    ``observe(flow, produced, summary)`` is called about twice a second while events stream
    (``cxstream soak`` samples the processes there)."""
    stop = stop or threading.Event()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with (
        embedded_services(settings) as services,
        tempfile.TemporaryDirectory(prefix="cxdemo-") as tmp,
    ):
        live = services.settings
        ensure_topics(live)
        sim = Simulator(
            options.subscribers,
            options.cells,
            seed=options.seed,
            bad_ratio=options.bad_ratio,
            run_id=f"demo{int(time.time())}",
        )
        store = ContextStore(context_client(live), prefix=live.redis.key_prefix)
        profiles = list(sim.profiles())
        for i in range(0, len(profiles), 1000):
            store.put_many(profiles[i : i + 1000])
        say(f"loaded {len(profiles)} customer profiles into Redis")

        with WebhookReceiver(secret) as receiver:
            live = live.model_copy(
                update={"webhook": live.webhook.model_copy(update={"url": receiver.url})}
            )
            rotation = options.broker_rotation_s if services.broker is not None else 0.0
            flow = Generations(live, Path(tmp), secret, services.broker, rotation, say)
            try:
                say(f"dataflow running; metrics at {flow.metrics_url}")
                say(f"dashboard: {flow.dashboard_url}")
                say(f"webhook receiver (stands in for marketing) at {receiver.url}")
                watch = LagWatch(options.lag_alert_s, options.lag_alert_events)
                tick = _Report(say, progress, watch, observe)
                produced = _stream(live, sim, options, flow, receiver, tick, stop)
                say("draining: waiting until every event is processed or dead-lettered ...")
                summary = _drain(flow, produced, receiver, options.drain_timeout_s, tick.last)
                summary.max_lag = int(watch.max_lag)
                if not summary.drained:
                    waiting = produced - summary.events_processed - summary.dead_letters
                    say(
                        f"drain timed out after {options.drain_timeout_s:.0f} s: {waiting} "
                        f"events were neither processed nor dead-lettered (flow log: "
                        f"{flow.log_path})"
                    )
                return summary
            finally:
                flow.stop()


class Generations:
    """The demo's dataflow process, and the embedded broker replaced every ``rotation_s``.

    The embedded broker (Tansu's memory engine) keeps every record for ever and has no
    retention, so a demo that runs for hours would grow without bound. With ``rotation_s``,
    the demo pauses its stream, waits until everything produced is processed and delivered,
    lets a recovery snapshot be taken, stops the flow, starts an empty broker on the same
    port, and starts the flow again from the snapshot: every subscriber's baseline, the cells,
    incidents and held alerts go on; the inputs start at the new topics' beginnings
    (``flow.inputs_from_start``). It offers the parts of
    :class:`FlowProcess` the demo reads; counters are totals over every generation.
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        secret: str,
        broker: EmbeddedBroker | None,
        rotation_s: float,
        say: Callable[[str], None],
    ) -> None:
        self.rotation_s = rotation_s if broker is not None else 0.0
        if self.rotation_s:
            flow = settings.flow.model_copy(update={"recovery_dir": str(workdir / "recovery")})
            settings = settings.model_copy(update={"flow": flow})
        self.settings = settings
        self._workdir = workdir
        self._secret = secret
        self._broker = broker
        self._say = say
        self._base: dict[str, float] = {}
        self._dashboard_port: int | None = None
        self.generation = 0
        self.current = self._start()

    def _start(self) -> FlowProcess:
        self.generation += 1
        workdir = self._workdir / f"flow-{self.generation}"
        workdir.mkdir()
        flow = FlowProcess(self.settings, workdir, self._secret, self._dashboard_port)
        self._dashboard_port = flow.dashboard_port
        try:
            flow.wait_ready()
        except ServiceError:
            flow.stop()
            raise
        return flow

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.current.proc

    @property
    def log_path(self) -> Path:
        return self.current.log_path

    @property
    def hold_s(self) -> float:
        return self.current.hold_s

    @property
    def metrics_url(self) -> str:
        return self.current.metrics_url

    @property
    def dashboard_url(self) -> str:
        return self.current.dashboard_url

    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]:
        """The current process's counters plus the earlier generations' totals."""
        now = self.current.counters(only)
        for key, value in self._base.items():
            if key in now or only is None:
                now[key] = now.get(key, 0.0) + value
        return now

    def stop(self) -> None:
        self.current.stop()

    def rotate(self, produced: int, receiver: WebhookReceiver, timeout_s: float = 60.0) -> bool:
        """Replace the broker (see the class's docstring) once everything produced is done;
        False, and nothing replaced, if it is not done within ``timeout_s``."""
        assert self._broker is not None  # noqa: S101 - rotation_s is 0 without a broker
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                s = _summary(self, produced, receiver)
                c = self.current.counters()
            except httpx.HTTPError:
                s, c = DemoSummary(), {}
            settled = (
                s.events_processed + s.dead_letters >= produced
                and c.get("cxstream_kafka_out_queued", 1) == 0
                and c.get("cxstream_webhook_deliveries_total{outcome=delivered}", 0)
                + c.get("cxstream_webhook_deliveries_total{outcome=failed}", 0)
                >= s.actions
            )
            if settled:
                break
            if time.monotonic() >= deadline:
                self._say("the embedded broker is not replaced now: the flow has work in hand")
                return False
            time.sleep(0.25)
        # two epochs with nothing new: the last recovery snapshot holds everything
        time.sleep(2 * self.settings.flow.snapshot_interval_s + 0.5)
        final = self.current.counters()
        self.current.stop()
        for key, value in final.items():
            if key.split("{", 1)[0].endswith("_total"):
                self._base[key] = self._base.get(key, 0.0) + value
        self._broker.restart()
        ensure_topics(self.settings)
        if not self.settings.flow.inputs_from_start:
            flow = self.settings.flow.model_copy(update={"inputs_from_start": True})
            self.settings = self.settings.model_copy(update={"flow": flow})
        self.current = self._start()
        self._say(
            f"embedded broker replaced with an empty one (generation {self.generation}); "
            "the flow resumed from its snapshot"
        )
        return True


class _Report:
    """What the demo does with each progress tick: the status line, the watch on the flow
    (a warning when it falls behind, see :mod:`cxstream.health`), and the observer."""

    def __init__(
        self,
        say: Callable[[str], None],
        progress: Callable[[str], None] | None,
        watch: LagWatch,
        observe: Callable[[Flow, int, DemoSummary], None] | None,
    ) -> None:
        self.say, self.progress, self.watch, self.observe = say, progress, watch, observe
        self.last = DemoSummary()

    def __call__(self, flow: Flow, receiver: WebhookReceiver, produced: int) -> None:
        try:
            s = self.last = _summary(flow, produced, receiver)
        except httpx.HTTPError:  # a flow that does not answer is not seen to make progress
            s = dataclasses.replace(self.last, events_produced=produced)
        lag = produced - s.events_processed - s.dead_letters
        before = self.watch.state
        state = self.watch.update(time.monotonic(), lag, s.events_processed + s.dead_letters)
        if state is not before:
            if state is FlowHealth.OK:
                self.say(f"the flow keeps up again ({lag} events waiting)")
            else:
                self.say(
                    f"warning: the flow is {state.value}: {lag} events wait "
                    f"(over {self.watch.after_s:.0f} s: "
                    + (
                        "none was processed)"
                        if state is FlowHealth.STALLED
                        else "the backlog grew while events arrived)"
                    )
                    + f"; flow log: {flow.log_path}"
                )
        if self.observe is not None:
            self.observe(flow, produced, s)
        if self.progress is not None:
            flag = "" if state is FlowHealth.OK else f" | {state.value.upper()}"
            self.progress(
                f"produced {s.events_produced:>8} | processed {s.events_processed:>8} | "
                f"dead letters {s.dead_letters:>5} | alerts {s.alerts:>4} | actions {s.actions:>4} | "
                f"webhooks {s.webhook_deliveries:>4}{flag}"
            )


def _stream(
    settings: Settings,
    sim: Simulator,
    options: DemoOptions,
    flow: Generations,
    receiver: WebhookReceiver,
    tick: _Report,
    stop: threading.Event,
) -> int:
    """Stream until ``duration_s`` (else until ``stop``), planning new incidents every cycle
    and replacing the embedded broker every ``flow.rotation_s``; returns the events produced."""
    span = options.duration_s or 120.0
    say = tick.say

    def plan(cycle_start: datetime) -> None:
        incidents = plan_incidents(sim, cycle_start, span, sim.rng)
        sim.add_incidents(incidents)
        for inc in incidents:
            where = f" for {inc.subscriber_id}" if inc.subscriber_id else ""
            offset = (inc.start - cycle_start).total_seconds()
            length = (inc.end - inc.start).total_seconds()
            say(
                f"incident planned: {inc.kind} in {inc.cell_id}{where} at +{offset:.0f}s for {length:.0f}s"
            )
        if options.truth_path is not None:
            with options.truth_path.open("ab") as truth:
                truth.writelines(inc.to_json() + b"\n" for inc in incidents)

    def producer() -> Producer:
        return Producer({**settings.kafka.producer_settings(), **STREAM_PRODUCER})

    now = time.monotonic()
    end = now + options.duration_s if options.duration_s is not None else None
    next_plan = now + span
    next_rotation = now + flow.rotation_s if flow.rotation_s else None
    plan(utcnow())
    out = producer()
    _publish_customer_updates(out, settings, sim)
    produced = 0

    def report(n: int) -> None:
        tick(flow, receiver, produced + n)

    while not stop.is_set():
        now = time.monotonic()
        if end is not None and now >= end:
            break
        if next_rotation is not None and now >= next_rotation:
            if flow.rotate(produced, receiver):
                out = producer()
            next_rotation = time.monotonic() + flow.rotation_s
        elif now >= next_plan:
            plan(utcnow())
            next_plan = now + span
        marks = [m for m in (end, next_plan, next_rotation) if m is not None]
        segment = max(0.5, min(marks) - time.monotonic())
        produced += produce_events(
            out,
            settings.kafka.topics.qos,
            sim,
            rate=options.rate,
            duration_s=segment,
            start=utcnow(),
            stop=stop,
            on_progress=report,
        )
    return produced


def _publish_customer_updates(producer: Producer, settings: Settings, sim: Simulator) -> None:
    """Send a few profile changes through the customers topic (the flow writes them to Redis):
    one customer in a hundred opts in to push notifications."""
    for customer in list(sim.profiles())[: max(1, len(sim.subscriber_ids) // 100)]:
        consent = {**customer.consent, Channel.PUSH: ConsentStatus.GRANTED}
        updated = customer.model_copy(update={"consent": consent, "consent_updated": utcnow()})
        producer.produce(
            settings.kafka.topics.customers,
            key=customer.subscriber_id.encode(),
            value=updated.model_dump_json().encode(),
        )
    producer.flush(10)


def _public(summary: DemoSummary) -> dict[str, Any]:
    return {
        f.name: getattr(summary, f.name) for f in fields(summary) if f.metadata.get("json", True)
    }


def summary_json(summary: DemoSummary) -> str:
    """The one-line JSON form of the summary (exactly the documented keys)."""
    return orjson.dumps(_public(summary)).decode()


def summary_lines(summary: DemoSummary) -> list[str]:
    """The human form of the summary, with what the policy decided and why."""
    data: dict[str, Any] = _public(summary)
    width = max(len(k) for k in data)
    lines = [f"  {k.replace('_', ' '):<{width}}  {v}" for k, v in data.items()]
    if summary.incidents_opened:
        lines.append(f"  cell incidents opened: {summary.incidents_opened}")
    if summary.decisions:
        lines.append("  contact decisions:")
        for (kind, result), n in sorted(summary.decisions.items()):
            lines.append(f"    {kind:<18} {result:<40} {n}")
    return lines

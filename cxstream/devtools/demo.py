"""``cxstream demo``: the whole system on embedded defaults, with a summary at the end.

1. Start what is not configured: a Tansu broker and a redis-server on free loopback ports.
2. Create the topics, load simulated customer profiles into Redis, start the example webhook
   receiver (it verifies signatures and counts deliveries, standing in for a marketing system).
3. Start the production dataflow (``cxstream run``) as a child process, exactly as in production.
4. Stream realistic QoS events at ``--rate`` (the busiest hour's; never below half of it at
   quieter hours) with injected incidents, and a few customer updates;
   a stand-in CRM reports which customers left or stayed (:class:`_Crm`), so the churn model learns.
5. At the end (``--duration`` or Ctrl-C): wait until every produced event is processed or
   dead-lettered, let deliveries settle, stop the flow, print the summary.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from cxstream.actions.receiver import WebhookReceiver
from cxstream.clients import context_client, ensure_topics
from cxstream.context import ContextStore
from cxstream.detectors.cell_kpis import BASELINE_READY
from cxstream.detectors.series import ContextLikelihoodDetector
from cxstream.devtools.flowprocess import DemoSummary, Flow, summarize
from cxstream.devtools.generations import Generations, has_figure
from cxstream.devtools.producer import produce_backlog, produce_events
from cxstream.devtools.services import embedded_services
from cxstream.devtools.simulate import (
    PLAN_CELLS,
    Incident,
    Simulator,
    churn_probability,
    plan_incidents,
)
from cxstream.events import Channel, ConsentStatus, CustomerContext, utcnow
from cxstream.health import FlowHealth, LagWatch
from cxstream.settings import KpiSettingsModel, Settings

__all__ = ["Catches", "DemoOptions", "run_demo", "summary_json", "summary_lines"]

ROTATION_RETRY_S = 30.0  # after a broker replacement put off because the flow had work in hand
CRM_FIRST_S = 20.0  # the CRM's first report: the flow's start-up pass has scored every profile
CRM_EVERY_S = 10.0  # then a report this often
CRM_SHARE = 0.02  # of the customers per report

log = logging.getLogger(__name__)

CAUGHT_SLACK = timedelta(seconds=120)  # an incident opened this long after the planned one ended
# still counts: demarcation's window (60 s) and the KPI series' confirmation come first
CAUGHT_EVERY_S = 5.0  # the dashboard's overview is read this often while incidents wait
WARMUP_SLACK_S = 60.0  # an incident only the KPI series can see starts this long after their
# warm-up: the flow starts a few seconds after the first events, intervals align to their grid

# The simulated probes export their measurements a quarter of a second at a time, as network
# collectors do, instead of one small batch every few milliseconds. The embedded broker (Tansu's
# memory engine) keeps every batch for ever and lists all of a partition's batches on every fetch
# that returns data, so its cost per fetch grows with the number of batches stored: see
# docs/operations.md, "The embedded demo".
STREAM_PRODUCER = {"linger.ms": "250", "batch.num.messages": "100000"}

# The demo's load follows the time of day, lifted so that it never falls below half the busiest
# hour's (59 % at 4 a.m., where the simulator's own curve falls to 18 %): at a night's 18 % a
# subscriber sends an event every five or six seconds, too few for the incidents of a demo's
# first minute to be seen, and a newcomer's first run at night showed nothing happening.
LOAD_FLOOR = 0.5


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
    capture_dir: Path | None = None  # write what the run emitted here (see _capture)


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
            summary = summarize(flow, produced, receiver)
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
            summary = summarize(flow, produced, receiver)
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
        live = _demo_churn(services.settings)
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

        with WebhookReceiver(secret, keep_requests=options.capture_dir is not None) as receiver:
            live = live.model_copy(
                update={"webhook": live.webhook.model_copy(update={"url": receiver.url})}
            )
            rotation = options.broker_rotation_s if services.broker is not None else 0.0
            capture = None if options.capture_dir is None else _Capture(options.capture_dir)
            before = None if capture is None else capture.topics
            flow = Generations(live, Path(tmp), secret, services.broker, rotation, say, before)
            try:
                say(f"dataflow running; metrics at {flow.metrics_url}")
                say(f"dashboard: {flow.dashboard_url}")
                say(f"webhook receiver (stands in for marketing) at {receiver.url}")
                watch = LagWatch(options.lag_alert_s, options.lag_alert_events)
                catches = Catches(say, kpi_warmup(live.cells.kpis))
                tick = _Report(say, progress, watch, observe, catches)
                crm = _Crm(sim, profiles, live, random.Random(options.seed))
                produced = _stream(live, sim, options, flow, receiver, tick, stop, crm)
                catches.stopped_at = utcnow()
                say("draining: waiting until every event is processed or dead-lettered ...")
                summary = _drain(flow, produced, receiver, options.drain_timeout_s, tick.last)
                catches.look(flow.dashboard_url, now=True)
                summary.caught = catches.lines()
                summary.max_lag = int(watch.max_lag)
                summary.crm_outcomes = crm.sent
                summary.crm_left = crm.left
                if capture is not None:
                    capture.finish(live, receiver, secret)
                    say(f"captured the run's outputs in {options.capture_dir}")
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


DEMO_SCORE_BASE_EVERY_S = 120.0
"""How often the demo's flow scores every profile, unless configured: the demo's CRM reports on
every customer within minutes, not hours, and a care agent opening a customer's page should see
the score of the model that learned from them, and its trend, not the untrained model's 50 %
of the start-up pass for the first hour (a pass over the demo's 1,000 profiles is one batch)."""


def _demo_churn(settings: Settings) -> Settings:
    """``settings`` with the base scored every :data:`DEMO_SCORE_BASE_EVERY_S` where the
    configuration (file or ``CXSTREAM_CHURN__SCORE_BASE_EVERY_S``) does not say."""
    if "score_base_every_s" in settings.churn.model_fields_set:
        return settings
    churn = settings.churn.model_copy(update={"score_base_every_s": DEMO_SCORE_BASE_EVERY_S})
    return settings.model_copy(update={"churn": churn})


class _Report:
    """What the demo does with each progress tick: the status line, the watch on the flow
    (a warning when it falls behind, see :mod:`cxstream.health`), and the observer."""

    def __init__(
        self,
        say: Callable[[str], None],
        progress: Callable[[str], None] | None,
        watch: LagWatch,
        observe: Callable[[Flow, int, DemoSummary], None] | None,
        catches: Catches,
    ) -> None:
        self.say, self.progress, self.watch, self.observe = say, progress, watch, observe
        self.catches = catches
        self.last = DemoSummary()

    def __call__(self, flow: Flow, receiver: WebhookReceiver, produced: int) -> None:
        try:
            s = self.last = summarize(flow, produced, receiver)
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
        self.catches.look(flow.dashboard_url)
        if self.observe is not None:
            self.observe(flow, produced, s)
        if self.progress is not None:
            flag = "" if state is FlowHealth.OK else f" | {state.value.upper()}"
            self.progress(
                f"produced {s.events_produced:>8} | processed {s.events_processed:>8} | "
                f"dead letters {s.dead_letters:>5} | alerts {s.alerts:>4} | actions {s.actions:>4} | "
                f"webhooks {s.webhook_deliveries:>4}{flag}"
            )


CAPTURED_TOPICS = {
    "alerts.jsonl": "alerts",
    "service-problems.jsonl": "service_problems",
    "alarm-updates.jsonl": "alarm_updates",
    "decisions.jsonl": "decisions",
}


class _Capture:
    """What the run emitted, written to ``out`` one JSON document per line: the records on the
    alerts (TMF642 Alarms), service-problems (TMF656), alarm-updates (TMF642 events) and
    decisions topics, read before each broker replacement drops them and at the end, and every
    accepted webhook request (its Standard Webhooks headers and the CloudEvent body), with the
    run's throw-away signing secret in ``webhook-secret.txt`` so the signatures can be
    verified. Files of an earlier run in ``out`` are replaced."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        for name in CAPTURED_TOPICS:
            (out / name).write_bytes(b"")

    def topics(self, settings: Settings) -> None:
        """Append what the topics hold now."""
        from cxstream.clients import read_topic

        topics = settings.kafka.topics
        for name, attr in CAPTURED_TOPICS.items():
            values = read_topic(settings, getattr(topics, attr))
            with (self.out / name).open("ab") as f:
                f.writelines(v + b"\n" for v in values if v is not None)

    def finish(self, settings: Settings, receiver: WebhookReceiver, secret: str) -> None:
        self.topics(settings)
        requests = receiver.kept_requests()
        (self.out / "webhooks.jsonl").write_bytes(
            b"".join(orjson.dumps(r) + b"\n" for r in requests)
        )
        (self.out / "webhook-secret.txt").write_text(secret + "\n")


class Catches:
    """Which planned incidents the system caught, read from the dashboard's overview (what the
    NOC sees) while the demo runs: for a cell's incident, an incident opened in that cell from
    its start to :data:`CAUGHT_SLACK` after its end; for the lone subscriber, their own
    degradation alert (not one an incident explains) in that time. Each catch is said once,
    with its delay; :meth:`lines` ends the summary with every planned incident.

    ``warmup_s``: by kind, the traffic a cell's KPI series needs before it can see such an
    incident (:func:`kpi_warmup`); one planned earlier than that cannot be seen, and
    :meth:`seeable` moves it later or leaves it out.
    """

    def __init__(self, say: Callable[[str], None], warmup_s: dict[str, float]) -> None:
        self._say = say
        self.warmup_s = warmup_s
        self.started = utcnow()
        self.planned: list[Incident] = []
        self.caught: dict[int, tuple[float, str]] = {}  # planned index -> delay (s), how
        self.stopped_at: datetime | None = None  # when the stream stopped (None: it goes on)
        self._next_look = 0.0
        self._overview: dict[str, Any] = {}
        self._http = httpx.Client(timeout=2.0)

    def add(self, incidents: list[Incident]) -> None:
        self.planned.extend(incidents)

    def seeable(self, inc: Incident, cycle_end: datetime) -> Incident | None:
        """``inc`` where the cells' KPI series can see it: a mild shift or a silent cell planned
        in their warm-up (its kind's, and :data:`WARMUP_SLACK_S`) cannot be seen, and its level
        would be learned as the cell's normal. Such an incident is moved to the warm-up's end
        (its length kept) if that is before ``cycle_end``, else left out (None)."""
        warmup = self.warmup_s.get(inc.kind)
        if warmup is None:
            return inc
        ready = self.started + timedelta(seconds=warmup + WARMUP_SLACK_S)
        if inc.start >= ready:
            return inc
        if ready >= cycle_end:
            return None
        return dataclasses.replace(inc, start=ready, end=ready + (inc.end - inc.start))

    def look(self, dashboard_url: str, *, now: bool = False) -> None:
        """Read the overview (at most every :data:`CAUGHT_EVERY_S`, unless ``now``) and say the
        new catches."""
        at = time.monotonic()
        waiting = [i for i in range(len(self.planned)) if i not in self.caught]
        if not waiting or (at < self._next_look and not now):
            return
        self._next_look = at + CAUGHT_EVERY_S
        try:
            overview = self._http.get(f"{dashboard_url}api/overview").json()
        except (httpx.HTTPError, ValueError):
            return  # a flow being replaced, or busy: the next look
        self.match(overview, waiting)

    def match(self, overview: dict[str, Any], waiting: list[int]) -> None:
        self._overview = overview
        for i in waiting:
            found = _caught(self.planned[i], overview)
            if found is None:
                continue
            at, how = found
            inc = self.planned[i]
            delay = max(0.0, (at - inc.start).total_seconds())
            self.caught[i] = (delay, how)
            self._say(f"caught: {_named(inc)}, {delay:.0f} s after it began ({how})")

    def lines(self) -> list[str]:
        """The summary's lines: each planned incident, caught (after how long, how) or not."""
        if not self.planned:
            return []
        out = [f"  planned incidents caught: {len(self.caught)} of {len(self.planned)}"]
        width = max(len(_named(inc)) for inc in self.planned)
        shift = self.warmup_s.get("kpi_shift", 0.0)  # the KPI series' warm-up
        end = self.stopped_at or utcnow()
        for i, inc in enumerate(self.planned):
            if i in self.caught:
                delay, how = self.caught[i]
                out.append(f"    {_named(inc):<{width}}  after {delay:.0f} s ({how})")
                continue
            why = "not caught"
            if inc.start >= end:
                why += ": it had not begun when the stream stopped"
            elif end < inc.end:
                why += f" (the stream stopped {(end - inc.start).total_seconds():.0f} s after it began)"
            elif _open_before(inc, self._overview):
                why += (
                    ": an incident the cell had before it began was still open (no new one opens)"
                )
            elif inc.kind == "gradual" and inc.start < self.started + timedelta(seconds=shift):
                why += (
                    f": it began in the cells' first {shift:.0f} s of traffic, whose KPI "
                    "series take a slow decline then as the cell's normal"
                )
            out.append(f"    {_named(inc):<{width}}  {why}")
        return out


def kpi_warmup(kpis: KpiSettingsModel) -> dict[str, float]:
    """The traffic, in seconds, a cell's KPI series needs before it can see a mild shift (the
    series detector's first ``window_min`` points, and a baseline) or a silent cell (a baseline
    of ``min(BASELINE_READY, baseline)`` intervals, whose empty intervals that alone makes
    news)."""
    baseline = min(BASELINE_READY, kpis.baseline)
    scoring = ContextLikelihoodDetector().window_min
    return {
        "kpi_shift": max(baseline, scoring) * kpis.interval_s,
        "silent_outage": baseline * kpis.interval_s,
    }


def _latest_cells(planned: Sequence[Incident], n: int) -> list[str]:
    """Up to ``n`` cells of earlier incidents, the latest to end first: the next plan picks
    among the others while it can. A cell whose incident may still be open would hide a new one
    (no new incident opens), and one whose level changed in its KPI warm-up has learned it as
    normal; the cells least recently used have neither.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> planned = [Incident("cell_outage", c, t, t + timedelta(seconds=s)) for c, s in
    ...            [("a", 60), ("b", 90), ("a", 30)]]
    >>> _latest_cells(planned, 1), _latest_cells(planned, 5), _latest_cells(planned, 0)
    (['b'], ['b', 'a'], [])
    """
    ends: dict[str, datetime] = {}
    for inc in planned:
        ends[inc.cell_id] = max(inc.end, ends.get(inc.cell_id, inc.end))
    return sorted(ends, key=ends.__getitem__, reverse=True)[: max(0, n)]


def _named(inc: Incident) -> str:
    who = f" for {inc.subscriber_id}" if inc.subscriber_id else ""
    return f"{inc.kind} in {inc.cell_id}{who}"


def _caught(inc: Incident, overview: dict[str, Any]) -> tuple[datetime, str] | None:
    """When and how the overview shows ``inc`` caught (the earliest sign), if it does."""
    hits: list[tuple[datetime, str]] = []
    if inc.subscriber_id is None:
        for row in overview.get("incidents", []):
            at = _time(row.get("since"))
            if row.get("cell_id") == inc.cell_id and at is not None:
                hits.append((at, f"cell incident, cause {row.get('cause')}"))
    else:
        for row in overview.get("customers", []):
            at = _time(row.get("last_alert"))
            own = row.get("subscriber_id") == inc.subscriber_id and not row.get("explained_by")
            if own and at is not None:
                hits.append((at, "the subscriber's own alert"))
    hits = [(at, how) for at, how in hits if inc.start <= at <= inc.end + CAUGHT_SLACK]
    return min(hits) if hits else None


def _open_before(inc: Incident, overview: dict[str, Any]) -> bool:
    """Whether the cell had an incident opened before ``inc`` began and still open then (a cell
    picked again while its earlier incident lasted: no new one opens)."""
    for row in overview.get("incidents", []):
        since, changed = _time(row.get("since")), _time(row.get("changed"))
        if row.get("cell_id") != inc.cell_id or since is None or since >= inc.start:
            continue
        if row.get("state") != "cleared" or (changed is not None and changed >= inc.start):
            return True
    return False


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


class _Crm:
    """Stands in for the operator's CRM: ``CRM_FIRST_S`` after the start and then every
    ``CRM_EVERY_S``, it reports for ``CRM_SHARE`` of the customers (in a shuffled order, each
    once a round) whether they left or stayed, drawn from the simulated world's
    :func:`~cxstream.devtools.simulate.churn_probability` (``hurt``: an incident had reached
    them). A new round starts once the flow's scheduled pass has scored everybody again
    (``churn.score_base_every_s``), so each outcome has a snapshot to be learned from.

    A customer who left leaves the simulated network (no traffic of theirs from then on) and
    the CRM's reports; a new customer takes their place, their profile sent on the customers
    topic as a CRM would (:meth:`Simulator.replace`), and is reported on from the next round.
    A customer whose own planned incident is not over yet is reported on after it."""

    def __init__(
        self,
        sim: Simulator,
        profiles: list[CustomerContext],
        settings: Settings,
        rng: random.Random,
    ) -> None:
        self._sim, self._rng = sim, rng
        self._topic = settings.kafka.topics.outcomes
        self._round_s = settings.churn.score_base_every_s
        self._customers = settings.kafka.topics.customers
        self._profiles = {p.subscriber_id: p for p in profiles}
        self._per_report = max(1, round(len(self._profiles) * CRM_SHARE))
        self._order: list[str] = []
        self._round_at = self.next_at = time.monotonic() + CRM_FIRST_S
        self.sent = 0
        self.left = 0  # customers who left the network (each replaced by a newcomer)

    def report(self, producer: Producer, now: float) -> None:
        """Send the next report's outcomes (none between rounds)."""
        self.next_at = now + CRM_EVERY_S
        if not self._order and now >= self._round_at:
            self._order = list(self._profiles)
            self._rng.shuffle(self._order)
            self._round_at = now + self._round_s
        batch, self._order = self._order[: self._per_report], self._order[self._per_report :]
        if not batch:
            return
        at = utcnow()
        for sid in batch:
            hurt = self._sim.hurt(sid, at)
            left = self._rng.random() < churn_probability(self._profiles[sid], hurt=hurt)
            newcomer = self._sim.replace(sid, at) if left else None
            if left and newcomer is None:  # their own incident is under way: see it through
                self._order.append(sid)
                continue
            kind = "churned" if left else "retained"
            value = orjson.dumps({"subscriber_id": sid, "kind": kind, "time": at.isoformat()})
            producer.produce(self._topic, key=sid.encode(), value=value)
            self.sent += 1
            if newcomer is not None:
                del self._profiles[sid]
                self._profiles[newcomer.subscriber_id] = newcomer
                producer.produce(
                    self._customers,
                    key=newcomer.subscriber_id.encode(),
                    value=newcomer.model_dump_json().encode(),
                )
                self.left += 1


def _stream(
    settings: Settings,
    sim: Simulator,
    options: DemoOptions,
    flow: Generations,
    receiver: WebhookReceiver,
    tick: _Report,
    stop: threading.Event,
    crm: _Crm,
) -> int:
    """Stream until ``duration_s`` (else until ``stop``), planning new incidents every cycle,
    sending the CRM's reports and replacing the embedded broker every ``flow.rotation_s``;
    returns the events produced."""
    span = options.duration_s or 120.0
    say = tick.say

    def plan(cycle_start: datetime) -> None:
        incidents = []
        cycle_end = cycle_start + timedelta(seconds=span)
        avoid = _latest_cells(tick.catches.planned, len(sim.cell_ids) - PLAN_CELLS)
        for inc in plan_incidents(sim, cycle_start, span, sim.rng, avoid=avoid):
            seen = tick.catches.seeable(inc, cycle_end)
            if seen is None:
                warmup = tick.catches.warmup_s[inc.kind]
                say(
                    f"incident left out: {_named(inc)} (the cells' KPI series see one after "
                    f"their first {warmup:.0f} s of traffic)"
                )
            else:
                incidents.append(seen)
        sim.add_incidents(incidents)
        tick.catches.add(incidents)
        for inc in incidents:
            offset = (inc.start - cycle_start).total_seconds()
            length = (inc.end - inc.start).total_seconds()
            say(f"incident planned: {_named(inc)} at +{offset:.0f}s for {length:.0f}s")
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
            paused = utcnow()
            if flow.rotate(produced, receiver):
                out = producer()
                next_rotation = time.monotonic() + flow.rotation_s
            else:  # try again soon: the broker must not grow for a whole period more
                next_rotation = time.monotonic() + min(ROTATION_RETRY_S, flow.rotation_s)
            # the network did not stop while the demo waited for its flow and replaced its
            # broker: its events of that while come now, as collectors send what they buffered
            # (a stream with a hole in it would read as every cell of a shard going dark)
            resumed = utcnow()
            backlog = produce_backlog(
                out,
                settings.kafka.topics.qos,
                sim,
                rate=options.rate,
                floor=LOAD_FLOOR,
                since=paused,
                until=resumed,
            )
            produced += backlog
            tick.watch.restart()  # a backlog handed over at once: judged by its catching up
            say(
                f"the stream's {backlog:,} events of those "
                f"{(resumed - paused).total_seconds():.0f} s sent after, at their own times: "
                "a backlog for the flow to catch up"
            )
        elif now >= next_plan:
            plan(utcnow())
            next_plan = now + span
        if now >= crm.next_at:
            crm.report(out, now)
        marks = [m for m in (end, next_plan, next_rotation, crm.next_at) if m is not None]
        segment = max(0.5, min(marks) - time.monotonic())
        produced += produce_events(
            out,
            settings.kafka.topics.qos,
            sim,
            rate=options.rate,
            floor=LOAD_FLOOR,
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
        causes = ", ".join(f"{c} {n}" for c, n in sorted(summary.incidents_opened.items()))
        total = sum(summary.incidents_opened.values())
        lines.append(f"  cell incidents opened: {total} ({causes})")
    lines += summary.caught
    if summary.crm_outcomes:
        learned = summary.churn.get("learned", 0)
        auc = summary.churn.get("roc_auc")
        lines.append(
            f"  churn model: {learned:.0f} of the CRM's {summary.crm_outcomes} outcomes learned, "
            f"revision {summary.churn.get('revision', 0):.0f}, rolling ROC AUC "
            + (f"{auc:.2f}" if has_figure(auc) else "not measured yet (too few outcomes)")
        )
        if summary.crm_left:
            lines.append(
                f"  customers who left the network: {summary.crm_left}, each replaced by a "
                "newcomer (their profile sent on the customers topic)"
            )
    if summary.decisions:
        lines.append("  contact decisions:")
        for (kind, result), n in sorted(summary.decisions.items()):
            lines.append(f"    {kind:<18} {result:<40} {n}")
    return lines

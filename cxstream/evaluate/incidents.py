"""``cxstream eval incidents``: detection and demarcation measured on the simulator's labelled scenarios.

Each scenario is a seeded simulated network (subscribers in cells, diurnal noise) with one incident of
each kind (:func:`~cxstream.devtools.simulate.plan_incidents`: one subscriber degrading, a cell
outage, a flapping cell, a gradual degradation over 30 minutes, a mild shift of a whole cell that
only its KPIs show, a cell gone silent). Delivery goes wrong as it does in a network: a probe in
the outage's cell has a clock two minutes fast, and probes in five quiet cells upload two minutes
of measurements ten minutes late (a backlog). The events, keyed by subscriber over four partitions, go through the
same pipeline code as the dataflow — parse (with its watermarks), detect per subscriber,
demarcate per cell, decide — and the output is compared with the ground truth:

* **cell incidents**: an opened incident matches a true cell-level incident in the same cell if it
  opens between the incident's start and one window after its end (recall also per kind);
* **individual degradations**: an individual alert that no cell incident explained matches a true
  single-subscriber incident for the same subscriber in the same time span;
* **delay**: event time from the true start to the first matching detection;
* **open share**: the share of a true cell incident's span during which an incident was open in
  its cell (from its opening to its resolution): the delay costs some, and so does an incident
  that closes while the trouble goes on;
* **outreach**: individual actions emitted for alerts a cell incident explained (must be 0);
* **silent cells**: the share whose outage names the neighbour their subscribers went to, the
  share of the subscribers seen in a silent cell in the window before it went dark that its
  outage names as affected, and how many it names who were not the cell's (must be 0).
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from cxstream import metrics
from cxstream.actions.store import MemoryClaimStore
from cxstream.batches import RawBatch
from cxstream.detectors.cells import CellMonitor
from cxstream.devtools.simulate import Incident, Simulator, plan_incidents
from cxstream.events import CellIncident
from cxstream.pipeline import Candidate, Pipeline
from cxstream.settings import Settings, load_settings

__all__ = ["IncidentReport", "run_incidents"]


@dataclass
class IncidentReport:
    """Precision, recall and delay of cell incidents and individual degradations."""

    scenarios: int = 0
    events: int = 0
    seconds: float = 0.0
    cell_truth: int = 0
    cell_found: int = 0
    cell_opened: int = 0
    cell_correct: int = 0
    individual_truth: int = 0
    individual_found: int = 0
    individual_alerts: int = 0
    individual_correct: int = 0
    explained_alerts: int = 0
    outreach_for_explained: int = 0
    dead_letters: int = 0
    late_events: int = 0
    cell_delays_s: list[float] = field(default_factory=list)
    individual_delays_s: list[float] = field(default_factory=list)
    by_kind: dict[str, tuple[int, int, list[float]]] = field(default_factory=dict)
    silent_found: int = 0  # silent cells whose outage was seen
    silent_neighbour_named: int = 0  # ... and whose why names the cell its subscribers went to
    silent_subscribers: int = 0  # subscribers seen in a seen silent cell in its last window
    silent_subscribers_named: int = 0  # ... that its outage names as affected
    silent_named_elsewhere: int = 0  # subscribers an outage names who were not the cell's
    cell_days: float = 0.0  # cells x days of event time watched
    # per true cell incident, by kind: the share of its span an incident was open in its cell
    open_share: dict[str, list[float]] = field(default_factory=dict)

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return round(num / den, 4) if den else 1.0

    def summary(self) -> dict[str, Any]:
        """The figures ``--json`` prints."""

        def median(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 2) if xs else None

        def mean(xs: list[float]) -> float | None:
            return round(statistics.fmean(xs), 3) if xs else None

        false = self.cell_opened - self.cell_correct
        return {
            "scenarios": self.scenarios,
            "events": self.events,
            "cell_precision": self._ratio(self.cell_correct, self.cell_opened),
            "cell_recall": self._ratio(self.cell_found, self.cell_truth),
            "cell_median_delay_s": median(self.cell_delays_s),
            "individual_precision": self._ratio(self.individual_correct, self.individual_alerts),
            "individual_recall": self._ratio(self.individual_found, self.individual_truth),
            "individual_median_delay_s": median(self.individual_delays_s),
            "explained_alerts": self.explained_alerts,
            "outreach_for_explained": self.outreach_for_explained,
            "events_per_s": round(self.events / self.seconds) if self.seconds else 0,
            "dead_letters": self.dead_letters,
            "late_events": self.late_events,
            "silent_neighbour_named": self._ratio(self.silent_neighbour_named, self.silent_found),
            "silent_subscribers_named": self._ratio(
                self.silent_subscribers_named, self.silent_subscribers
            ),
            "silent_named_elsewhere": self.silent_named_elsewhere,
            "cell_false": false,
            "cell_false_per_cell_day": round(false / self.cell_days, 3) if self.cell_days else 0.0,
            "cell_open_share": mean([x for xs in self.open_share.values() for x in xs]),
            "cell_by_kind": {
                kind: {
                    "incidents": truth,
                    "recall": self._ratio(found, truth),
                    "median_delay_s": median(delays),
                    "open_share": mean(self.open_share.get(kind, [])),
                }
                for kind, (truth, found, delays) in sorted(self.by_kind.items())
            },
        }


def _run_scenario(
    settings: Settings,
    seed: int,
    subscribers: int,
    cells: int,
    duration_s: float,
    rate: float,
    report: IncidentReport,
    *,
    clean: bool = False,
) -> None:
    sim = Simulator(subscribers, cells, seed=seed, run_id=f"eval{seed}")
    # a scenario's incidents come as the evening load rises; clean traffic starts at midnight
    start = datetime(2026, 3, 2, 0 if clean else 17, tzinfo=UTC) + timedelta(days=seed)
    truth = [] if clean else plan_incidents(sim, start, duration_s, sim.rng)
    sim.add_incidents(truth)
    report.cell_days += cells * duration_s / 86_400
    profiles = {p.subscriber_id: p for p in sim.profiles()}
    now = start

    def clock() -> datetime:
        return now

    pipeline = Pipeline(
        settings,
        context=None,  # type: ignore[arg-type]  # enrichment is done here from the profiles
        claims=MemoryClaimStore(),
        clock=clock,
    )
    # the flow's own hot path: parsing with its watermarks, columnar batches, array detectors,
    # shard-wise demarcation
    table = pipeline.new_table()
    cell_monitors: dict[str, CellMonitor[Candidate]] = {}
    opened: list[CellIncident] = []
    spans: dict[str, tuple[str, datetime, datetime | None]] = {}  # incident -> cell, open, end
    named: dict[str, set[str]] = {}  # incident -> everyone its updates named as affected
    released: list[Candidate] = []
    end = start + timedelta(seconds=duration_s)
    late = _LateDelivery(sim, truth, start, duration_s)
    skewed = _skewed_probe(sim, truth)
    polled: list[tuple[datetime, int, bytes]] = []  # arrival time, partition, value
    # the subscribers seen in each silent cell in the window before it goes dark
    window = timedelta(seconds=settings.cells.window_s)
    dark = {i.cell_id: i for i in truth if i.kind == "silent_outage"}
    in_dark: dict[str, set[str]] = {cell: set() for cell in dark}

    def run(polled: list[tuple[datetime, int, bytes]]) -> None:
        nonlocal now
        now = max(t for t, _, _ in polled)
        by_partition: dict[int, list[bytes | None]] = {}
        for _, partition, raw in polled:
            by_partition.setdefault(partition, []).append(raw)
        polls = [RawBatch("qos", p, vs, list(range(len(vs)))) for p, vs in by_partition.items()]
        bad, batch = pipeline.ingest_step.parse(polls)
        report.dead_letters += len(bad)
        if batch is None:
            return
        batch.set_context([profiles.get(s) for s in batch.subscribers], [False] * len(batch))
        # partitions' polls overlap in event time: cells see them merged in time order, as in
        # the flow (Detect.record_cell_batches)
        cell_batches = [b.sorted_by_time() for _, b in pipeline.detect_shard(table, [batch])]
        for item in pipeline.demarcate_shard(cell_monitors, cell_batches):
            if isinstance(item, CellIncident):
                if item.state == "open":
                    opened.append(item)
                    spans[item.incident_id] = (item.cell_id, item.opened_at, None)
                elif item.state == "resolved" and item.incident_id in spans:
                    cell, at, _ = spans[item.incident_id]
                    spans[item.incident_id] = (cell, at, item.updated_at)
                named.setdefault(item.incident_id, set()).update(
                    a.subscriber_id for a in item.affected
                )
            elif isinstance(item, Candidate):
                released.append(item)

    late_before = metrics.LATE_EVENTS.labels(settings.flow.late_events)._value.get()
    for t in sim.timeline(start, rate):
        if t >= end:
            break
        record = sim.event(t)
        going_dark = dark.get(record["cell_id"])
        if going_dark is not None and going_dark.start - window <= t < going_dark.start:
            in_dark[going_dark.cell_id].add(record["subscriber_id"])
        if record["subscriber_id"] == skewed:  # a probe whose clock runs ahead
            record["event_time"] = (t + _SKEW).isoformat()
        item = (zlib.crc32(record["subscriber_id"].encode()) % _PARTITIONS, orjson.dumps(record))
        report.events += 1
        if late.holds(record, t):
            late.held.append(item)
        else:
            polled.append((t, *item))
        if t >= late.release_at and late.held:  # the backlog arrives at last
            polled.extend((t, *held) for held in late.held)
            late.held = []
        if len(polled) >= 500:
            run(polled)
            polled = []
    polled.extend((end, *held) for held in late.held)  # a backlog still due arrives at the end
    if polled:
        run(polled)
    report.late_events += round(
        metrics.LATE_EVENTS.labels(settings.flow.late_events)._value.get() - late_before
    )
    for cell in cell_monitors.values():
        released.extend(c for c in pipeline.release_held(cell) if isinstance(c, Candidate))
    decisions = pipeline.decide_batch(released)
    report.outreach_for_explained += sum(
        1
        for d in decisions
        if d.action is not None and d.signal.signal == "degradation" and d.signal.explained_by
    )
    _score(report, truth, opened, released, settings.cells.window_s)
    _score_open(report, truth, spans.values(), end)
    _score_dark(report, sim, dark.values(), in_dark, opened, named, window)


_PARTITIONS = 4
_SKEW = timedelta(minutes=2)  # within the wall clock's allowance, beyond a cell's (60 s)
_LATE_BY = timedelta(minutes=10)  # beyond the allowed lateness (5 minutes)


def _skewed_probe(sim: Simulator, truth: Sequence[Incident]) -> str | None:
    """A subscriber of the outage's cell whose probe's clock runs ahead: were the cell's clock to
    follow it, the outage's held alerts would be released before its incident opens."""
    cells = {i.cell_id for i in truth if i.kind == "cell_outage"}
    victims = {i.subscriber_id for i in truth}
    mates = [s for s in sim.subscriber_ids if sim.home_cell[s] in cells and s not in victims]
    return sim.rng.choice(mates) if mates else None


class _LateDelivery:
    """Probes in up to five quiet cells, one each, that lost their connection for two minutes at
    40 % of the scenario and upload what they measured ten minutes late."""

    def __init__(
        self, sim: Simulator, truth: Sequence[Incident], start: datetime, span_s: float
    ) -> None:
        busy = {i.cell_id for i in truth} | {i.moved_to for i in truth if i.moved_to}
        calm: dict[str, str] = {}  # cell -> its first subscriber
        for s in sim.subscriber_ids:
            if sim.home_cell[s] not in busy:
                calm.setdefault(sim.home_cell[s], s)
        self.probes = set(sim.rng.sample(sorted(calm.values()), k=min(5, len(calm))))
        self.start = start + timedelta(seconds=0.4 * span_s)
        self.end = self.start + timedelta(minutes=2)
        self.release_at = self.end + _LATE_BY
        self.held: list[tuple[int, bytes]] = []  # partition (by subscriber, as Kafka keys), value

    def holds(self, record: dict[str, object], t: datetime) -> bool:
        return record["subscriber_id"] in self.probes and self.start <= t < self.end


def _score_dark(
    report: IncidentReport,
    sim: Simulator,
    dark: Iterable[Incident],
    in_dark: dict[str, set[str]],
    opened: list[CellIncident],
    named_by: dict[str, set[str]],
    slack: timedelta,
) -> None:
    """For each seen silent cell: whether its outage names the neighbour its subscribers went
    to, and whom it names as affected (in any of its updates: an incident that opened for
    another cause may become the outage): its subscribers of the window before it went dark,
    and nobody who was not the cell's."""
    for i in dark:
        seen = [o for o in opened
                if o.cell_id == i.cell_id and i.start <= o.opened_at <= i.end + slack]  # fmt: skip
        if not seen:
            continue  # not seen: its recall counts that
        if i.moved_to is not None:
            report.silent_found += 1
            report.silent_neighbour_named += any(
                i.moved_to in o.why.get("moved_to", {}) for o in seen
            )
        named = set().union(*(named_by[o.incident_id] for o in seen))
        report.silent_subscribers += len(in_dark[i.cell_id])
        report.silent_subscribers_named += len(named & in_dark[i.cell_id])
        report.silent_named_elsewhere += sum(1 for s in named if sim.home_cell[s] != i.cell_id)


def _score_open(
    report: IncidentReport,
    truth: Sequence[Incident],
    spans: Iterable[tuple[str, datetime, datetime | None]],
    end: datetime,
) -> None:
    """For each true cell incident, the share of its span an incident was open in its cell (one
    still open at the end counts to the end)."""
    by_cell: dict[str, list[tuple[datetime, datetime]]] = {}
    for cell, opened_at, resolved_at in spans:
        by_cell.setdefault(cell, []).append((opened_at, resolved_at or end))
    for inc in truth:
        if inc.subscriber_id is not None:
            continue
        stop = min(inc.end, end)
        span = (stop - inc.start).total_seconds()
        if span <= 0:
            continue
        covered, reached = 0.0, inc.start
        for a, b in sorted(by_cell.get(inc.cell_id, [])):  # the union, clipped to the span
            a, b = max(a, reached), min(b, stop)
            if b > a:
                covered += (b - a).total_seconds()
                reached = b
        report.open_share.setdefault(inc.kind, []).append(covered / span)


def _match(
    predicted: Sequence[tuple[str | None, datetime]],
    truths: Sequence[tuple[str | None, datetime, datetime]],
    slack: timedelta,
) -> tuple[int, int, list[float]]:
    """How many predictions are right, how many truths are found, and each found one's delay.

    A prediction ``(key, at)`` matches a truth ``(key, start, end)`` with the same key if
    ``start <= at <= end + slack``.
    """

    def hits(key: str | None, start: datetime, end: datetime) -> list[datetime]:
        return [at for k, at in predicted if k == key and start <= at <= end + slack]

    correct = sum(
        1 for k, at in predicted if any(k == tk and s <= at <= e + slack for tk, s, e in truths)
    )
    delays = [(min(h) - s).total_seconds() for k, s, e in truths if (h := hits(k, s, e))]
    return correct, len(delays), delays


def _score(
    report: IncidentReport,
    truth: list[Incident],
    opened: list[CellIncident],
    released: list[Candidate],
    window_s: float,
) -> None:
    slack = timedelta(seconds=window_s)
    cell_truth = [(i.cell_id, i.start, i.end) for i in truth if i.subscriber_id is None]
    lone_truth = [(i.subscriber_id, i.start, i.end) for i in truth if i.subscriber_id is not None]
    predicted = [(i.cell_id, i.opened_at) for i in opened]
    correct, found, delays = _match(predicted, cell_truth, slack)
    for kind in {i.kind for i in truth if i.subscriber_id is None}:
        of_kind = [(i.cell_id, i.start, i.end) for i in truth if i.kind == kind]
        _, k_found, k_delays = _match(predicted, of_kind, slack)
        n, f, d = report.by_kind.get(kind, (0, 0, []))
        report.by_kind[kind] = (n + len(of_kind), f + k_found, d + k_delays)
    report.cell_truth += len(cell_truth)
    report.cell_opened += len(opened)
    report.cell_correct += correct
    report.cell_found += found
    report.cell_delays_s += delays
    individual = [c.alert for c in released if c.alert.explained_by is None]
    report.explained_alerts += len(released) - len(individual)
    correct, found, delays = _match(
        [(a.subscriber_id, a.event_time) for a in individual], lone_truth, slack
    )
    report.individual_truth += len(lone_truth)
    report.individual_alerts += len(individual)
    report.individual_correct += correct
    report.individual_found += found
    report.individual_delays_s += delays


def run_incidents(
    *,
    scenarios: int = 10,
    subscribers: int = 300,
    cells: int = 15,
    duration_s: float = 2700.0,
    rate: float = 100.0,
    seed: int = 1,
    settings: Settings | None = None,
    on_scenario: Callable[[int], None] | None = None,
    clean: bool = False,
) -> IncidentReport:
    """Run ``scenarios`` seeded scenarios and score them against their ground truth. With
    ``clean``, the scenarios hold no incident and start at midnight: every cell incident opened
    is a false one (``cell_false_per_cell_day`` in the summary)."""
    settings = settings or load_settings()
    report = IncidentReport()
    began = time.perf_counter()
    for k in range(scenarios):
        if on_scenario is not None:
            on_scenario(k)
        _run_scenario(settings, seed + k, subscribers, cells, duration_s, rate, report, clean=clean)
        report.scenarios += 1
    report.seconds = time.perf_counter() - began
    return report

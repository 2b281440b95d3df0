"""``cxstream eval incidents``: detection and demarcation measured on the simulator's labelled scenarios.

Each scenario is a seeded simulated network (subscribers in cells, diurnal noise) with one incident of
each kind (:func:`~cxstream.devtools.simulate.plan_incidents`: one subscriber degrading, a cell
outage, a flapping cell, a gradual degradation over 30 minutes, a mild shift of a whole cell that
only its KPIs show, a cell gone silent). The events go through the same pipeline code as the
dataflow — parse, detect per subscriber, demarcate per cell, decide — and the output is compared
with the ground truth:

* **cell incidents**: an opened incident matches a true cell-level incident in the same cell if it
  opens between the incident's start and one window after its end (recall also per kind);
* **individual degradations**: an individual alert that no cell incident explained matches a true
  single-subscriber incident for the same subscriber in the same time span;
* **delay**: event time from the true start to the first matching detection;
* **outreach**: individual actions emitted for alerts a cell incident explained (must be 0).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cxstream.actions.store import MemoryClaimStore
from cxstream.batches import ShardBatch
from cxstream.detectors.cells import CellMonitor
from cxstream.devtools.simulate import Incident, Simulator, plan_incidents
from cxstream.events import CellIncident, QosRecord, decode_qos
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
    cell_delays_s: list[float] = field(default_factory=list)
    individual_delays_s: list[float] = field(default_factory=list)
    by_kind: dict[str, tuple[int, int, list[float]]] = field(default_factory=dict)

    @staticmethod
    def _ratio(num: int, den: int) -> float:
        return round(num / den, 4) if den else 1.0

    def summary(self) -> dict[str, Any]:
        """The figures ``--json`` prints."""

        def median(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 2) if xs else None

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
            "cell_by_kind": {
                kind: {
                    "incidents": truth,
                    "recall": self._ratio(found, truth),
                    "median_delay_s": median(delays),
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
) -> None:
    sim = Simulator(subscribers, cells, seed=seed, run_id=f"eval{seed}")
    start = datetime(2026, 3, 2, 17, tzinfo=UTC) + timedelta(days=seed)
    truth = plan_incidents(sim, start, duration_s, sim.rng)
    sim.add_incidents(truth)
    profiles = {p.subscriber_id: p for p in sim.profiles()}
    pipeline = Pipeline(
        settings,
        context=None,  # type: ignore[arg-type]  # enrichment is done here from the profiles
        claims=MemoryClaimStore(),
        clock=lambda: start,
    )
    # the flow's own hot path: columnar batches, array detectors, shard-wise demarcation
    table = pipeline.new_table()
    cell_monitors: dict[str, CellMonitor[Candidate]] = {}
    opened: list[CellIncident] = []
    released: list[Candidate] = []
    end = start + timedelta(seconds=duration_s)
    records: list[QosRecord] = []

    def run(records: list[QosRecord]) -> None:
        customers = [profiles.get(r.subscriber_id) for r in records]
        batch = ShardBatch.from_records(records, customers=customers)
        cell_batches = [b for _, b in pipeline.detect_shard(table, [batch])]
        for item in pipeline.demarcate_shard(cell_monitors, cell_batches):
            if isinstance(item, CellIncident):
                if item.state == "open":
                    opened.append(item)
            elif isinstance(item, Candidate):
                released.append(item)

    for t in sim.timeline(start, rate):
        if t >= end:
            break
        _, raw = sim.encoded(t)
        records.append(decode_qos(raw))
        report.events += 1
        if len(records) == 500:
            run(records)
            records = []
    if records:
        run(records)
    for cell in cell_monitors.values():
        released.extend(c for c in pipeline.release_held(cell) if isinstance(c, Candidate))
    decisions = pipeline.decide_batch(released)
    report.outreach_for_explained += sum(
        1
        for d in decisions
        if d.action is not None and d.signal.signal == "degradation" and d.signal.explained_by
    )
    _score(report, truth, opened, released, settings.cells.window_s)


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
) -> IncidentReport:
    """Run ``scenarios`` seeded scenarios and score them against their ground truth."""
    settings = settings or load_settings()
    report = IncidentReport()
    began = time.perf_counter()
    for k in range(scenarios):
        if on_scenario is not None:
            on_scenario(k)
        _run_scenario(settings, seed + k, subscribers, cells, duration_s, rate, report)
        report.scenarios += 1
    report.seconds = time.perf_counter() - began
    return report

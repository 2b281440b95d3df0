"""Demarcate: is it one customer or the whole cell? Each cell's monitor sees its subscribers'
events in event-time order; incident changes, released alerts (explained by an incident or
not) and periodic cell stats come out."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from cxstream import metrics
from cxstream.batches import CellBatch
from cxstream.detectors.cells import CellMonitor, CellSettings, IncidentUpdate, Released
from cxstream.events import AffectedSubscriber, AlarmCommand, CellIncident, ValueTier
from cxstream.settings import Settings
from cxstream.steps.common import Candidate, CellOutput

__all__ = ["Demarcate"]

log = logging.getLogger(__name__)


class Demarcate:
    """The cells' demarcation state is the caller's (one dict of monitors per shard of cells)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cell_settings = CellSettings.from_mapping(settings.cells.model_dump())

    def new_cell_monitor(self, cell_id: str) -> CellMonitor[Candidate]:
        """Fresh demarcation state for one cell."""
        return CellMonitor(cell_id, self._cell_settings)

    def demarcate_shard(
        self, monitors: dict[str, CellMonitor[Candidate]], batches: Sequence[CellBatch]
    ) -> list[CellOutput]:
        """Feed a shard's events to their cells, in order; incident changes, released alerts
        and periodic cell stats come out."""
        out: list[CellOutput] = []
        held = 0
        metrics.CELL_EVENTS.inc(sum(map(len, batches)))
        t_all = np.concatenate([b.t for b in batches]) if batches else np.empty(0)
        if len(t_all) and monitors:
            self._feed_gap(monitors, float(t_all.min()))
        for b in batches:
            for t_moved, left, arrived, sid in b.departures:
                gone = monitors.get(left)
                if gone is not None:
                    gone.departed(t_moved, arrived, sid)
            for clear in b.clears:
                raised_here = monitors.get(clear.cell_id)
                if raised_here is None:  # its raise is not held here: it went out already
                    out.append(clear)
                else:
                    raised_here.clear(clear.cleared_at, clear.subscriber_id, clear)
            candidates = b.candidates
            # lists: indexing one costs less than a numpy scalar, and the monitors keep floats
            t, subs, tiers = b.t.tolist(), b.subscribers, b.tiers
            degraded, exp = b.degraded.tolist(), b.experience.tolist()
            loss, tput = b.loss.tolist(), b.throughput.tolist()
            for i, cell_id in enumerate(b.cells):
                monitor = monitors.get(cell_id)
                if monitor is None:
                    monitor = monitors[cell_id] = self.new_cell_monitor(cell_id)
                candidate = candidates.get(i) if candidates else None
                if candidate is None and monitor.observe_quiet(
                    t[i], subs[i], degraded[i], exp[i], tiers[i], loss[i], tput[i]
                ):
                    continue
                if candidate is not None:
                    held += 1
                updates, released = monitor.observe(
                    t[i],
                    subs[i],
                    degraded=degraded[i],
                    experience=exp[i],
                    tier=tiers[i],
                    loss=loss[i],
                    throughput=tput[i],
                    alert=candidate,
                )
                if updates:
                    out.extend(self._incident(u) for u in updates)
                if released:
                    held -= len(released)
                    out.extend(self._explain(r) for r in released)
                stats = monitor.take_stats()
                if stats is not None:
                    out.append(stats)
        if held:
            metrics.HELD_ALERTS.inc(held)
        if len(t_all):
            # the shard's clock: the median event time of the poll, so that a few events far
            # ahead (a probe's skewed clock) move no cell
            out.extend(self._tick(monitors, float(np.median(t_all))))
        return out

    def _feed_gap(self, monitors: dict[str, CellMonitor[Candidate]], first: float) -> None:
        """Where the shard carried no event for more than a KPI interval before this poll's
        first (``first``), and at least two of its cells had traffic in the interval before,
        the feed stopped, not its cells: every cell notes the gap
        (:meth:`~cxstream.detectors.cells.CellMonitor.feed_gap`), so that none opens an outage
        for it as the feed comes back. A cell alone in its shard cannot tell its own silence
        from the feed's: its outage opens as its traffic comes back."""
        step = self.settings.cells.kpis.interval_s
        seen = [m.last_seen for m in monitors.values()]
        last = max(seen)
        if not math.isfinite(last) or first - last <= step:
            return
        if sum(1 for t in seen if t >= last - step) < 2:
            return
        log.warning(
            "no event in a shard of %d cells for %.0f s of event time: the feed stopped, not "
            "the cells; their traffic volume is not judged over the gap",
            len(monitors),
            first - last,
        )
        metrics.FEED_GAPS.inc()
        for monitor in monitors.values():
            monitor.feed_gap(last, first)

    def _tick(self, monitors: dict[str, CellMonitor[Candidate]], now: float) -> list[CellOutput]:
        """Move the cells without recent events of their own along the shard's event-time clock
        ``now`` (their silent KPI intervals close: an outage that stops a cell's traffic is
        seen)."""
        out: list[CellOutput] = []
        lag = now - self.settings.cells.kpis.interval_s
        for monitor in monitors.values():
            if monitor.clearing:  # after this poll's releases: the raises go out first
                out.extend(monitor.take_clears())
            if monitor.clock >= lag:
                continue
            updates, released = monitor.tick(now)
            out.extend(self._incident(u) for u in updates)
            if released:
                metrics.HELD_ALERTS.dec(len(released))
                out.extend(self._explain(r) for r in released)
            stats = monitor.take_stats()
            if stats is not None:
                out.append(stats)
        return out

    def apply_commands(
        self, monitors: dict[str, CellMonitor[Candidate]], commands: Sequence[AlarmCommand]
    ) -> list[CellOutput]:
        """Operators' commands on this shard's cells: a ``resolve`` of the incident open in its
        cell closes it (the resolved update names the operator); one for an incident that is
        not open (closed already, or unknown) changes nothing. Every command is counted by verb
        and result."""
        out: list[CellOutput] = []
        for command in commands:
            monitor = monitors.get(command.cell_id)
            update = None
            if command.verb == "resolve" and monitor is not None:
                update = monitor.resolve(command.incident_id, command.user)
            if update is not None:
                out.append(self._incident(update))
            result = "applied" if update is not None or command.verb == "ack" else "not_open"
            metrics.OPERATOR_COMMANDS.labels(command.verb, result).inc()
        return out

    def release_held(self, monitor: CellMonitor[Candidate]) -> list[CellOutput]:
        """Release every held alert of a cell (its traffic stopped, or end of input)."""
        released = monitor.flush()
        if released:
            metrics.HELD_ALERTS.dec(len(released))
        return [*(self._explain(r) for r in released), *monitor.take_clears(force=True)]

    @staticmethod
    def _explain(released: Released[Candidate]) -> Candidate:
        candidate = released.item
        if released.explained_by is None:
            return candidate
        alert = candidate.alert.model_copy(update={"explained_by": released.explained_by})
        return Candidate(alert, candidate.customer)

    def _incident(self, update: IncidentUpdate) -> CellIncident:
        metrics.CELL_INCIDENTS.labels(update.state, update.cause).inc()
        severity: Literal["minor", "major", "critical"] = (
            "critical"
            if update.share >= 0.6 or update.cause == "outage"
            else "major"
            if update.share >= 0.4
            else "minor"
        )
        if update.state == "open":
            metrics.ALERTS.labels("cell_incident", severity).inc()
        return CellIncident(
            incident_id=update.incident_id,
            cell_id=update.cell_id,
            state=update.state,
            severity=severity,
            opened_at=datetime.fromtimestamp(update.opened_at, UTC),
            updated_at=datetime.fromtimestamp(update.at, UTC),
            affected=[
                AffectedSubscriber(subscriber_id=sid, value_tier=ValueTier(tier) if tier else None)
                for sid, tier in sorted(update.affected.items())
            ],
            new_affected=list(update.new_affected),
            active_subscribers=update.active,
            share=update.share,
            experience=update.experience,
            cause=update.cause,
            resolved_by=update.resolved_by,
            why={
                "cause": update.cause,
                "degraded_share": update.share,
                "affected": len(update.affected),
                "active": update.active,
                "cell_experience": update.experience,
                "anomalous_kpis": {k.kpi: k.why() for k in update.kpis},
                **({"moved_to": update.moved_to} if update.moved_to else {}),
            },
        )

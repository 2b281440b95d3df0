"""Demarcation: is it one customer, or the whole cell?

A :class:`CellMonitor` (one per cell, keyed by cell in the flow) sees every event of its cell with
the subscriber's current state (degraded or not). On an event-time clock driven by that traffic it
evaluates, once per ``step_s`` slot of event time (slots aligned to the epoch), how many of the
subscribers active in the last ``window_s`` are degraded. When at least ``min_affected`` of them
and at least ``open_share`` of the active ones are, a **cell incident** opens; it is *updated* as
the set of affected subscribers changes (at most every ``update_s``) and *resolved* once the
degraded share stayed below ``resolve_share`` for a whole window, so a flapping cell stays one
incident.

The cell's KPIs per interval (median experience, loss and throughput of its subscribers, its
traffic volume and active subscribers; :mod:`cxstream.detectors.cell_kpis`) are series for the
series detector ``cxstream eval nab`` measures. A KPI anomalous in the bad direction opens an
incident too, even when no subscriber crosses its own threshold, in a cell that usually has at
least ``min_affected`` subscribers in an interval (with fewer, the KPIs are one or two
subscribers' own; :attr:`~cxstream.detectors.cell_kpis.CellKpis.usual_active`; an interval with
fewer has no quality KPIs, only its volume and active count): cause ``kpi_anomaly``, or
``outage`` when the cell's volume collapsed (it went silent; :meth:`CellMonitor.tick` closes its
intervals from the shard's clock when none of its own events come). An incident stays open while
a KPI is still anomalous. Each incident says its ``cause`` and the KPIs behind it; an
``outage`` also says where the cell's subscribers went (:meth:`CellMonitor.departed`: the cells
where subscribers last seen in it turned up since, a surge on its neighbours), and names as
affected the subscribers it left in the dark: those seen in it in the ``window_s`` before it
went dark (its last event before the silence; a short silence's outage is confirmed as its
traffic comes back), less those seen elsewhere before it did (a silent cell keeps them until its
traffic comes back, for at most :data:`DEPARTURES_MAX_AGE_S`; the departures it remembers are
its last :data:`DEPARTURES_KEPT`, so in a cell with more handovers than that in the minute before
the silence, a subscriber who had left just before may be named too).

Individual degradation alerts are **held** for ``hold_s`` before release: if an incident opens in the
meantime (or is already open), they come out *explained* by it, and the policy sends no individual
outreach for them. While a KPI's alert awaits its confirmation (:attr:`CellKpis.deciding
<cxstream.detectors.cell_kpis.CellKpis.deciding>`), they wait up to ``(kpis.confirm + 1) *
kpis.interval_s`` (30 s) instead, the time the incident it may open takes; while the cell has
``min_affected - 1`` degraded subscribers, so that one more would meet the incident's count (and
no operator's resolve holds it closed), up to ``window_s``: a decline that reaches a cell's
subscribers one after another opens its incident after the first of them have alerted. A
``hold_s`` of 0 holds nothing, and waits for neither.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from cxstream.detectors.cell_kpis import CellKpis, KpiAnomaly, KpiSettings, median
from cxstream.events import bounded_id

__all__ = ["CellMonitor", "CellSettings", "CellStats", "IncidentUpdate", "Released"]

T = TypeVar("T")

IncidentState = Literal["open", "updated", "resolved"]
IncidentCause = Literal["degraded_share", "kpi_anomaly", "outage"]

DEPARTURES_KEPT = 64
"""Subscribers seen leaving a cell that its monitor remembers (evidence for an outage)."""
DEPARTURES_MAX_AGE_S = 600.0
"""How long a departure is remembered, and how long a silent cell keeps the subscribers of its
last window, in event time: a silent cell's outage is confirmed within about a minute of the
silence, and no subscriber id is kept longer than it can serve."""


@dataclass(frozen=True)
class CellSettings:
    """Demarcation thresholds (see the module docstring)."""

    window_s: float = 60.0
    step_s: float = 1.0
    min_affected: int = 3
    open_share: float = 0.3
    resolve_share: float = 0.1
    hold_s: float = 10.0
    update_s: float = 10.0
    stats_s: float = 5.0
    max_ahead_s: float = 60.0
    kpis: KpiSettings = field(default_factory=KpiSettings)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> CellSettings:
        """From plain values (the configuration's ``cells`` section, ``kpis`` nested)."""
        values = dict(values)
        kpis = KpiSettings(**values.pop("kpis", {}))
        return cls(**values, kpis=kpis)


@dataclass(frozen=True)
class IncidentUpdate:
    """A change in a cell incident's life cycle."""

    incident_id: str
    cell_id: str
    state: IncidentState
    opened_at: float
    at: float
    affected: dict[str, str | None]  # subscriber id -> value tier
    new_affected: tuple[str, ...]  # caught in it since the previous update (all, when it opens)
    active: int
    share: float
    experience: float
    cause: IncidentCause = "degraded_share"
    kpis: tuple[KpiAnomaly, ...] = ()
    moved_to: dict[str, int] = field(default_factory=dict)  # cell -> subscribers (outage)
    resolved_by: str | None = None  # the operator who resolved it (None: the cell recovered)


@dataclass(frozen=True)
class CellStats:
    """A periodic summary of one cell (for dashboards)."""

    cell_id: str
    at: float
    active: int
    degraded: int
    experience: float | None  # the active subscribers' mean experience; None with none active
    anomalous_kpis: tuple[str, ...]
    incident_id: str | None


@dataclass(frozen=True)
class Released(Generic[T]):
    """A held individual alert, released; ``explained_by`` is the incident that covers it."""

    item: T
    subscriber_id: str
    explained_by: str | None


def _next_slot(t: float, step: float) -> float:
    """The start of the next ``step``-long slot of event time after ``t`` (slots start at
    multiples of ``step`` since the epoch, the same on every worker and every replay)."""
    return (math.floor(t / step) + 1) * step


def _cause(kpis: tuple[KpiAnomaly, ...], otherwise: IncidentCause) -> IncidentCause:
    """``outage`` when a volume KPI collapsed (the cell went quiet), else ``otherwise``."""
    return "outage" if any(k.collapse for k in kpis) else otherwise


_Sub = tuple[float, bool, float, str | None, float, float]
"""A subscriber's last event in a cell: time, degraded, experience index, value tier, loss (%),
throughput (kbit/s, NaN if not measured) (a plain tuple: one is stored per event, so it must be
cheap)."""


@dataclass
class CellMonitor(Generic[T]):
    """The demarcation state of one cell (bounded by its active subscribers; for ten minutes of a
    silence, by those of its last ``window_s`` of traffic)."""

    cell_id: str
    settings: CellSettings = field(default_factory=CellSettings)
    kpis: CellKpis = field(init=False)
    clock: float = float("-inf")
    _subs: dict[str, _Sub] = field(default_factory=dict)
    _held: list[tuple[float, str, T]] = field(default_factory=list)
    _next_eval: float = float("-inf")
    _incident: IncidentUpdate | None = None
    _last_seen: float = float("-inf")  # the latest event time of the cell's own traffic
    # the last gap in it longer than a KPI interval: its last event before, its first after
    _dark_from: float = float("-inf")
    _back_at: float = float("-inf")
    _quiet_since: float | None = None
    _last_update: float = float("-inf")
    _volume: int = 0
    _next_stats: float = float("-inf")
    _stats: CellStats | None = None
    # clears of subscribers' degradation alarms, each waiting while an alert of that subscriber
    # is held here (so that an alarm's clear never precedes its raise): (time, subscriber, item)
    _clears: list[tuple[float, str, Any]] = field(default_factory=list)
    # (event time, cell, subscriber) of the last DEPARTURES_KEPT subscribers seen leaving
    _departures: deque[tuple[float, str, str]] = field(
        default_factory=lambda: deque(maxlen=DEPARTURES_KEPT)
    )
    # after an operator resolved the incident, none opens again before this event time
    _reopen_after: float = float("-inf")
    # the last span of event time in which the cell's whole shard carried no event (the feed
    # stopped, not the cell): the KPI intervals it touches have no volume to judge
    _unseen: tuple[float, float] = (float("-inf"), float("-inf"))

    def __post_init__(self) -> None:
        self.kpis = CellKpis(self.settings.kpis)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a snapshot, also one taken before the cell had KPI series (its settings
        take today's defaults for what they lacked, its subscribers' last events no loss or
        throughput)."""
        state = {k: v for k, v in state.items() if k not in ("series", "_kpi_score")}
        self.__dict__.update(state)
        if "_departures" not in state:
            self._departures = deque(maxlen=DEPARTURES_KEPT)
        if "_clears" not in state:
            self._clears = []
        known = {f: getattr(self.settings, f) for f in CellSettings.__dataclass_fields__
                 if hasattr(self.settings, f)}  # fmt: skip
        self.settings = CellSettings(**known)
        if "kpis" not in state:
            self.kpis = CellKpis(self.settings.kpis)
            self._volume = 0
            self._subs = {sid: (*sub[:4], 0.0, math.nan) for sid, sub in self._subs.items()}
        if "_last_seen" not in state:
            self._last_seen = max((sub[0] for sub in self._subs.values()), default=self.clock)
            self._dark_from = self._back_at = float("-inf")

    def resolve(self, incident_id: str, user: str) -> IncidentUpdate | None:
        """An operator resolved the open incident ``incident_id``: it closes now (its update,
        ``resolved`` and ``resolved_by`` the operator), and no incident opens again in this cell
        for ``window_s`` of event time (if the cell is still degraded then, a new one opens).
        None if that incident is not the one open here (closed already, or another)."""
        current = self._incident
        if current is None or current.incident_id != incident_id:
            return None
        resolved = dataclasses.replace(
            self._update(
                current.incident_id, "resolved", current.opened_at, current.affected,
                current.active, current.share, current.experience, (), current.cause, (),
            ),
            resolved_by=user,
        )  # fmt: skip
        self._incident = None
        self._quiet_since = None
        self._reopen_after = self.clock + self.settings.window_s
        return resolved

    @property
    def last_seen(self) -> float:
        """The event time of the cell's latest own event."""
        return self._last_seen

    def feed_gap(self, start: float, end: float) -> None:
        """Note that the cell's whole shard carried no event from ``start`` to ``end`` (event
        time): the feed stopped (a collector restarted, a producer paused), not the cell. The
        KPI intervals that span touches close without volume or active subscribers: an
        interval the feed left empty or half-empty tells nothing of the cell's traffic, and
        judged, every busy cell would open an outage as the feed came back."""
        self._unseen = (start, end)

    @property
    def held_count(self) -> int:
        """How many individual alerts wait for release."""
        return len(self._held)

    @property
    def holding(self) -> bool:
        """Whether individual alerts are waiting for release."""
        return bool(self._held)

    @property
    def incident(self) -> IncidentUpdate | None:
        """The open incident, if any."""
        return self._incident

    @property
    def judged_by_kpis(self) -> bool:
        """Whether the cell's KPIs can open an incident: only where they are a crowd's. With
        fewer subscribers than ``min_affected`` in an interval, the median is one subscriber's
        own trouble, and their leaving is not the cell going dark (their own alerts speak for
        them)."""
        return self.kpis.usual_active >= self.settings.min_affected

    def observe(
        self,
        t: float,
        subscriber_id: str,
        *,
        degraded: bool,
        experience: float,
        tier: str | None = None,
        loss: float = 0.0,
        throughput: float = math.nan,
        alert: T | None = None,
    ) -> tuple[list[IncidentUpdate], list[Released[T]]]:
        """Take one event (epoch seconds ``t``); returns incident changes and released alerts.

        The cell's clock follows its events, except one more than ``max_ahead_s`` ahead of it
        (the shard's clock moves it along :meth:`tick` when the whole stream is there); a late
        event never replaces its subscriber's newer one."""
        if t > self.clock:
            if t - self.clock <= self.settings.max_ahead_s or not self._subs:
                self.clock = t
            else:  # too far ahead: taken at the cell's time, it moves nothing
                t = self.clock
        if t > self._last_seen:
            if t - self._last_seen > self.settings.kpis.interval_s:
                self._dark_from, self._back_at = self._last_seen, t
            self._last_seen = t
        if self.kpis.due(self.clock):  # the intervals this event ends, without it
            self._close_kpis()
        sub = self._subs.get(subscriber_id)
        if sub is None or sub[0] <= t:
            self._subs[subscriber_id] = (t, degraded, experience, tier, loss, throughput)
        self._volume += 1
        if alert is not None:
            self._held.append((t, subscriber_id, alert))
        return self._advance()

    def observe_quiet(
        self,
        t: float,
        subscriber_id: str,
        degraded: bool,
        experience: float,
        tier: str | None,
        loss: float,
        throughput: float,
    ) -> bool:
        """:meth:`observe` for the common case, cheaply: an event without an alert, while no
        evaluation is due and nothing is held. Returns False, having done nothing, otherwise."""
        if t >= self._next_eval or self._held or t < self.clock:
            return False
        self.clock = self._last_seen = t
        self._subs[subscriber_id] = (t, degraded, experience, tier, loss, throughput)
        self._volume += 1
        return True

    def tick(self, now: float) -> tuple[list[IncidentUpdate], list[Released[T]]]:
        """Move a cell without events of its own along the shard's clock ``now``, one KPI
        interval behind it (the grace for its late events): its silent intervals close."""
        target = now - self.settings.kpis.interval_s
        if target <= self.clock:
            return [], []
        self.clock = target
        if self.kpis.due(target):
            self._close_kpis()
        return self._advance()

    def clear(self, t: float, subscriber_id: str, item: Any) -> None:
        """Queue the clear of a subscriber's alarm (see :meth:`take_clears`)."""
        self._clears.append((t, subscriber_id, item))

    @property
    def clearing(self) -> bool:
        """Whether clears wait to go out."""
        return bool(self._clears)

    def take_clears(self, force: bool = False) -> list[Any]:
        """The queued clears whose subscriber has no alert held here any more (all of them with
        ``force``), in the order they came."""
        if not self._clears:
            return []
        held = set() if force else {sid for _, sid, _ in self._held}
        out = [item for _, sid, item in self._clears if sid not in held]
        self._clears = [c for c in self._clears if c[1] in held]
        return out

    def departed(self, t: float, cell_id: str, subscriber_id: str) -> None:
        """Note that a subscriber last seen here turned up in ``cell_id`` at event time ``t``."""
        self._departures.append((t, cell_id, subscriber_id))

    def moved_to(self, since: float) -> dict[str, int]:
        """Where subscribers of this cell went since event time ``since``: cell -> how many,
        most first."""
        seen: dict[str, set[str]] = {}
        for t, cell, sid in self._departures:
            if t >= since:
                seen.setdefault(cell, set()).add(sid)
        return dict(sorted(((c, len(s)) for c, s in seen.items()), key=lambda kv: -kv[1]))

    def take_stats(self) -> CellStats | None:
        """The latest summary, once per ``stats_s`` of event time (None in between)."""
        stats, self._stats = self._stats, None
        return stats

    def flush(self) -> list[Released[T]]:
        """Release every held alert now (end of stream)."""
        return self._release(force=True)

    def _advance(self) -> tuple[list[IncidentUpdate], list[Released[T]]]:
        departures = self._departures
        while departures and departures[0][0] < self.clock - DEPARTURES_MAX_AGE_S:
            departures.popleft()
        updates: list[IncidentUpdate] = []
        if self.clock >= self._next_eval:
            nxt = _next_slot(self.clock, self.settings.step_s)
            self._next_eval = min(nxt, self.kpis.next_close)
            update = self._evaluate()
            if update is not None:
                updates.append(update)
        return updates, self._release()

    def _close_kpis(self) -> None:
        """Close the KPI intervals that ended: the traffic since the last close belongs to the
        first of them, the others were silent."""
        ends = self.kpis.slots_due(self.clock)
        step = self.settings.kpis.interval_s
        unseen_from, unseen_to = self._unseen
        for k, end in enumerate(ends):
            blind = end > unseen_from and end - step < unseen_to  # the feed's gap touches it
            if k == 0:
                seen = [sub for sub in self._subs.values() if end - step <= sub[0] < end]
                values = (
                    {} if blind else {"volume": float(self._volume), "active": float(len(seen))}
                )
                # with fewer subscribers than min_affected, an interval's median is one
                # subscriber's own trouble, not the cell's quality: that interval has none
                if len(seen) >= self.settings.min_affected:
                    tput = [sub[5] for sub in seen if sub[5] == sub[5]]  # not NaN
                    values["experience"] = median([sub[2] for sub in seen])
                    values["loss_pct"] = median([sub[4] for sub in seen])
                    values["throughput"] = median(tput)
            else:
                values = {} if blind else {"volume": 0.0, "active": 0.0}
            self.kpis.close(end, values)
        if ends:
            self._volume = 0
        self._next_eval = min(self._next_eval, self.kpis.next_close)

    def _dark_since(self) -> float | None:
        """The cell's last event before its traffic stopped: its last event while it is silent
        (none for a KPI interval), or, within a KPI interval of its traffic coming back, its
        last before the gap (a short silence's outage is confirmed as the traffic comes back:
        the intervals it left empty close on the first event after it); None otherwise."""
        step = self.settings.kpis.interval_s
        if self.clock - self._last_seen > step:
            return self._last_seen
        if self._last_seen - self._back_at <= step:
            return self._dark_from
        return None

    def _in_the_dark(self) -> dict[str, str | None]:
        """The subscribers a silent cell left in the dark (subscriber -> value tier): seen here
        in the ``window_s`` before its last event before the silence (or since), less those
        seen elsewhere after their last event here and before that one. Nobody where the cell
        did not go silent (its volume only fell below half its baseline: who is still served
        is not known from it)."""
        last = self._dark_since()
        if last is None:
            return {}
        left = {sid: t for t, _, sid in self._departures if t <= last}
        since = last - self.settings.window_s
        return {
            sid: sub[3]
            for sid, sub in self._subs.items()
            if sub[0] >= since and left.get(sid, -math.inf) <= sub[0]
        }

    def _evaluate(self) -> IncidentUpdate | None:
        s = self.settings
        horizon = self.clock - s.window_s
        # while the cell is silent (up to DEPARTURES_MAX_AGE_S), the subscribers of its last
        # window are kept (an outage names them); only those of the window up to its clock
        # count as active
        keep = horizon
        dark = self._dark_since()
        if dark is not None and self.clock - dark <= DEPARTURES_MAX_AGE_S:
            keep = min(horizon, dark - s.window_s)
        for sid in [sid for sid, sub in self._subs.items() if sub[0] < keep]:
            del self._subs[sid]
        subs = self._subs
        if keep < horizon:
            subs = {sid: sub for sid, sub in subs.items() if sub[0] >= horizon}
        active = len(subs)
        affected = {sid: sub[3] for sid, sub in subs.items() if sub[1]}
        share = len(affected) / active if active else 0.0
        experience = sum(sub[2] for sub in subs.values()) / active if active else 0.0
        kpis = tuple(self.kpis.anomalies)
        if kpis and not self.judged_by_kpis:
            kpis = ()
        if self.clock >= self._next_stats:
            self._next_stats = _next_slot(self.clock, s.stats_s)
            self._stats = CellStats(
                self.cell_id,
                self.clock,
                active,
                len(affected),
                round(experience, 1) if active else None,
                tuple(k.kpi for k in kpis),
                self._incident.incident_id if self._incident is not None else None,
            )
        current = self._incident
        if current is None:
            shared = len(affected) >= s.min_affected and share >= s.open_share
            if (shared or kpis) and self.clock >= self._reopen_after:
                self._quiet_since = None
                self._last_update = self.clock
                cause = _cause(kpis, "degraded_share" if shared else "kpi_anomaly")
                if cause == "outage":
                    affected = {**self._in_the_dark(), **affected}
                # named by the evaluation slot, not by the event that happened to cross it, so
                # that a replay, whose partitions interleave differently, mostly names it alike
                slot = _next_slot(self.clock, s.step_s) - s.step_s
                self._incident = self._update(
                    bounded_id(f"inc-{self.cell_id}-{round(slot * 1000)}"),
                    "open",
                    self.clock,
                    affected,
                    active,
                    share,
                    experience,
                    tuple(affected),
                    cause,
                    kpis,
                )
                return self._incident
            return None
        if share < s.resolve_share and not kpis:
            if self._quiet_since is None:
                self._quiet_since = self.clock
            elif self.clock - self._quiet_since >= s.window_s:
                resolved = self._update(
                    current.incident_id,
                    "resolved",
                    current.opened_at,
                    current.affected,
                    active,
                    share,
                    experience,
                    (),
                    current.cause,
                    (),
                )
                self._incident = None
                return resolved
            return None
        self._quiet_since = None
        cause = _cause(kpis, current.cause)
        if cause == "outage" and current.cause != "outage":
            affected = {**self._in_the_dark(), **affected}
        grown = {**current.affected, **affected}  # everyone caught in it stays listed
        new_kpis = {k.kpi for k in kpis} - {k.kpi for k in current.kpis}
        if (
            len(grown) != len(current.affected) or new_kpis
        ) and self.clock - self._last_update >= s.update_s:
            self._last_update = self.clock
            new = tuple(sid for sid in grown if sid not in current.affected)
            self._incident = self._update(
                current.incident_id,
                "updated",
                current.opened_at,
                grown,
                active,
                share,
                experience,
                new,
                cause,
                kpis or current.kpis,
            )
            return self._incident
        return None

    def _update(
        self,
        incident_id: str,
        state: IncidentState,
        opened_at: float,
        affected: dict[str, str | None],
        active: int,
        share: float,
        experience: float,
        new_affected: tuple[str, ...],
        cause: IncidentCause,
        kpis: tuple[KpiAnomaly, ...],
    ) -> IncidentUpdate:
        return IncidentUpdate(
            incident_id=incident_id,
            cell_id=self.cell_id,
            state=state,
            opened_at=opened_at,
            at=self.clock,
            affected=dict(affected),
            new_affected=new_affected,
            active=active,
            share=round(share, 3),
            experience=round(experience, 1),
            cause=cause,
            kpis=kpis,
            moved_to=self.moved_to(opened_at - self.settings.window_s) if cause == "outage" else {},
        )

    def _degraded_now(self) -> int:
        """Subscribers degraded at their last event in the cell within ``window_s``."""
        horizon = self.clock - self.settings.window_s
        return sum(1 for sub in self._subs.values() if sub[1] and sub[0] >= horizon)

    @property
    def hold_wait_s(self) -> float:
        """How long held alerts wait now (see the module docstring): ``hold_s``, or longer
        while an incident that would explain them may be about to open."""
        s = self.settings
        wait = s.hold_s
        if s.hold_s > 0:  # 0: no holding at all
            # an alert may wait for the KPI incident that would explain it
            if self.kpis.deciding and self.judged_by_kpis:
                wait = max(wait, (s.kpis.confirm + 1) * s.kpis.interval_s)
            # or for the incident that one more degraded subscriber would open (none can while
            # an operator's resolve holds the cell closed)
            forming = self._incident is None and self.clock >= self._reopen_after
            if forming and self._degraded_now() >= s.min_affected - 1:
                wait = max(wait, s.window_s)
        return wait

    def _release(self, force: bool = False) -> list[Released[T]]:
        if not self._held:
            return []
        due = self.clock - self.hold_wait_s
        incident = self._incident
        out: list[Released[T]] = []
        keep: list[tuple[float, str, T]] = []
        for held_at, sid, item in self._held:
            sub = self._subs.get(sid)
            explained = incident is not None and (
                sid in incident.affected or (sub is not None and sub[1])
            )
            if explained or force or held_at <= due:
                out.append(
                    Released(item, sid, incident.incident_id if explained and incident else None)
                )
            else:
                keep.append((held_at, sid, item))
        self._held = keep
        return out

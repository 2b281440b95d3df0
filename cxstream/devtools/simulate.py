"""A realistic QoS event stream with injected incidents of known kinds, and matching customers.

``N`` subscribers live in ``M`` cells (each cell has its own radio quality and load). Traffic follows a
diurnal curve (quiet at 4 a.m., busiest in the evening) that modulates both the event rate and
congestion. Each event is one service session (voice, video, data) with service-specific QoS noise.
A session's rate is what the cell gives the user (its capacity share, whatever the plan) or what
the application asked for, whichever is less: a stream asks for its rendition's rate (and stalls
when the cell cannot give it), a bulk download takes what it can (``transfer_active``), and light
use moves what the app needed.
Incidents of six kinds are injected, and written as ground truth:

* ``cell_outage`` — every subscriber in a cell degrades for a while;
* ``subscriber_degradation`` — one subscriber degrades (a device or home-coverage problem);
* ``flapping`` — a cell goes bad and good again every ``period_s``;
* ``gradual`` — a cell degrades slowly, reaching its full severity after ``ramp_s``;
* ``kpi_shift`` — a whole cell gets mildly worse (every subscriber a little, none much);
* ``silent_outage`` — a cell goes dark: its subscribers are served by the neighbour ``moved_to``
  (weaker signal), and the cell itself reports nothing.

A small share of records can be deliberately malformed (``bad_ratio``) so dead-lettering is exercised.
Customers also leave or stay: :func:`churn_probability` is the simulated world's answer, which the
demo's stand-in CRM draws outcomes from (the churn model is never told it).
Everything is seeded and pure: the Kafka producing lives in :mod:`cxstream.devtools.producer`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from cxstream.errors import ConfigError
from cxstream.events import Channel, ConsentStatus, CustomerContext, ValueTier, utcnow

__all__ = [
    "PLAN_CELLS",
    "Incident",
    "Simulator",
    "churn_probability",
    "diurnal_factor",
    "load_factor",
    "plan_incidents",
    "utcnow",
]

IncidentKind = Literal[
    "cell_outage", "subscriber_degradation", "flapping", "gradual", "kpi_shift", "silent_outage"
]

_ZONES = (
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
)
_LANGS = ("en", "de", "fr", "es")
_SERVICES = ("voice", "video", "data")
_SERVICE_WEIGHTS = (0.3, 0.3, 0.4)
_RENDITIONS_KBPS = (3_000.0, 5_000.0, 8_000.0)  # SD, HD, full-HD renditions of a stream
_BULK_SHARE = 0.4  # data sessions that are bulk downloads; the rest is light use
_PLANS_MBPS = (25.0, 50.0, 100.0, 300.0)  # the speeds customers subscribe to


@dataclass(frozen=True)
class Incident:
    """One injected incident: the ground truth the detectors are measured against."""

    kind: IncidentKind
    cell_id: str
    start: datetime
    end: datetime
    subscriber_id: str | None = None
    period_s: float = 0.0
    severity: float = 1.0
    ramp_s: float = 0.0
    moved_to: str | None = None

    def impairment(self, t: datetime) -> float:
        """How strongly the incident acts at ``t`` (0 = not at all, 1 = fully)."""
        if not self.start <= t < self.end or self.kind == "silent_outage":
            return 0.0
        if self.kind == "flapping" and self.period_s > 0:
            phase = ((t - self.start).total_seconds() % self.period_s) / self.period_s
            return self.severity if phase < 0.5 else 0.0
        if self.ramp_s > 0:
            return self.severity * min(1.0, (t - self.start).total_seconds() / self.ramp_s)
        return self.severity

    def to_json(self) -> bytes:
        """One JSON line of ground truth."""
        record = asdict(self)
        record["start"] = self.start.isoformat()
        record["end"] = self.end.isoformat()
        return orjson.dumps(record)


# Relative traffic by local hour: a typical mobile-network day (night trough about 4 a.m.,
# morning ramp, flat working day, evening peak at 8 p.m.).
_HOURLY_LOAD = (
    0.45, 0.33, 0.25, 0.20, 0.18, 0.20, 0.30, 0.45, 0.60, 0.70, 0.75, 0.78,
    0.80, 0.80, 0.78, 0.78, 0.80, 0.85, 0.90, 0.95, 1.00, 0.95, 0.80, 0.60,
)  # fmt: skip


def diurnal_factor(t: datetime) -> float:
    """Relative load at ``t`` (UTC hour used as local hour), interpolated between hours:
    0.18 at 4 a.m., 1.0 at 8 p.m.

    >>> from datetime import UTC
    >>> diurnal_factor(datetime(2026, 1, 1, 20, tzinfo=UTC))
    1.0
    >>> diurnal_factor(datetime(2026, 1, 1, 4, tzinfo=UTC)) < 0.2
    True
    """
    hour = t.hour + t.minute / 60.0 + t.second / 3600.0
    low = int(hour) % 24
    frac = hour - int(hour)
    return _HOURLY_LOAD[low] + (_HOURLY_LOAD[(low + 1) % 24] - _HOURLY_LOAD[low]) * frac


def load_factor(t: datetime, floor: float = 0.0) -> float:
    """The share of the busiest hour's event rate at ``t``: the day's curve
    (:func:`diurnal_factor`) lifted so that it never falls below ``floor``, the curve's shape
    kept (``floor + (1 - floor) x curve``).

    >>> from datetime import UTC
    >>> round(load_factor(datetime(2026, 1, 1, 4, tzinfo=UTC), floor=0.5), 2)
    0.59
    >>> load_factor(datetime(2026, 1, 1, 20, tzinfo=UTC), floor=0.5)
    1.0
    """
    if not 0.0 <= floor <= 1.0:
        msg = f"floor must be between 0 and 1, not {floor}"
        raise ValueError(msg)
    return floor + (1.0 - floor) * diurnal_factor(t)


def churn_probability(profile: CustomerContext, *, hurt: bool) -> float:
    """The simulated world's chance that a customer leaves in an outcome period.

    Shaped like the public telecom churn tables: the contract and the time as a customer weigh
    most (a month-to-month customer in their first months leaves most often, a two-year one
    rarely), then the bill and an open ticket; and a customer the network hurt (``hurt``) is
    about four times as likely to leave. Overall about 15 % of an undisturbed base.

    >>> new = CustomerContext(subscriber_id="a", contract="month_to_month", tenure_months=2,
    ...                       monthly_charge=95.0)
    >>> loyal = new.model_copy(update={"contract": "two_year", "tenure_months": 60})
    >>> round(churn_probability(new, hurt=False), 2), round(churn_probability(loyal, hurt=False), 3)
    (0.52, 0.017)
    >>> round(churn_probability(new, hurt=True), 2)
    0.81
    """
    z = -1.5 - 0.035 * profile.tenure_months + 0.015 * (profile.monthly_charge - 65.0)
    z += {"month_to_month": 1.2, "one_year": 0.0, "two_year": -0.9}[profile.contract]
    z += 0.8 if profile.open_tickets else 0.0
    z += 1.4 if hurt else 0.0
    return 1.0 / (1.0 + math.exp(-z))


CELL_INCIDENTS = 5
"""The most incidents a plan puts in cells of their own (outage, flapping, gradual, shift,
silence)."""
PLAN_CELLS = CELL_INCIDENTS + 2
"""The cells a plan needs: its cell incidents', the lone subscriber's, and a neighbour for the
silent cell's subscribers."""


def plan_incidents(
    sim: Simulator,
    start: datetime,
    span_s: float,
    rng: random.Random,
    *,
    avoid: Collection[str] = (),
) -> list[Incident]:
    """One incident of each kind inside ``[start, start + span_s)``, each in its own cell (as many
    kinds as there are cells to spare), placed so detectors have a baseline first: a subscriber
    degrades at 25 %, a cell goes down at 35 %, another flaps from 45 %, a fourth degrades
    gradually from 20 % (over 30 minutes, or 60 % of a shorter span), a fifth gets mildly worse
    from 30 %, a sixth goes silent from 40 %. Severities are random: from a partial degradation
    (0.4) to an outage (1.0); the mild shift is 0.08 to 0.12.

    ``avoid``: cells (and their subscribers, for the lone victim) not to pick while enough others
    remain, such as cells whose earlier incident may still be open."""

    def at(fraction: float) -> datetime:
        return start + timedelta(seconds=span_s * fraction)

    def severity() -> float:
        return round(rng.uniform(0.4, 1.0), 2)  # from a partial degradation to an outage

    spare = len(sim.cell_ids) - 2  # the lone victim's cell, and a neighbour for the silent one
    wanted = max(1, min(CELL_INCIDENTS, spare))
    avoided = set(avoid)
    rested = [c for c in sim.cell_ids if c not in avoided] if avoided else sim.cell_ids
    pool = rested if len(rested) >= wanted + PLAN_CELLS - CELL_INCIDENTS else sim.cell_ids
    cells = rng.sample(pool, k=wanted)
    others = [c for c in sim.cell_ids if c not in cells]
    # The lone victim lives elsewhere, so the truth is unambiguous (one customer vs. a cell).
    elsewhere = [s for s in sim.subscriber_ids if sim.home_cell[s] not in cells]
    if avoided:
        elsewhere = [s for s in elsewhere if sim.home_cell[s] not in avoided] or elsewhere
    victim = rng.choice(elsewhere or sim.subscriber_ids)
    incidents = [
        Incident(
            "subscriber_degradation",
            sim.home_cell[victim],
            at(0.25),
            at(0.6),
            victim,
            severity=severity(),
        ),
        Incident("cell_outage", cells[0], at(0.35), at(0.8), severity=severity()),
    ]
    if len(cells) > 1:
        period = max(4.0, min(30.0, span_s / 12.0))  # seconds to a minute: it flaps
        incidents.append(
            Incident("flapping", cells[1], at(0.45), at(0.9), period_s=period, severity=severity())
        )
    if len(cells) > 2:
        ramp = min(1800.0, 0.6 * span_s)
        incidents.append(
            Incident("gradual", cells[2], at(0.2), at(0.95), severity=severity(), ramp_s=ramp)
        )
    if len(cells) > 3:
        mild = round(rng.uniform(0.08, 0.12), 3)
        incidents.append(Incident("kpi_shift", cells[3], at(0.3), at(0.7), severity=mild))
    if len(cells) > 4:
        neighbour = rng.choice([c for c in others if c != sim.home_cell[victim]] or others)
        incidents.append(Incident("silent_outage", cells[4], at(0.4), at(0.75), moved_to=neighbour))
    return incidents


class Simulator:
    """Generate events and customer profiles for ``subscribers`` spread over ``cells``.

    >>> from datetime import UTC
    >>> sim = Simulator(subscribers=10, cells=2, seed=1)
    >>> event = sim.event(datetime(2026, 1, 1, 12, tzinfo=UTC))
    >>> sorted(event)[:4]
    ['cell_id', 'event_id', 'event_time', 'jitter_ms']
    """

    def __init__(
        self,
        subscribers: int = 1000,
        cells: int = 50,
        *,
        seed: int = 7,
        bad_ratio: float = 0.0,
        run_id: str = "sim",
    ) -> None:
        if subscribers < 1 or cells < 1:
            msg = "subscribers and cells must be at least 1"
            raise ConfigError(msg)
        self.rng = random.Random(seed)
        self.bad_ratio = bad_ratio
        self.run_id = run_id
        self.seq = 0
        self.subscriber_ids = [f"sub-{i:07d}" for i in range(subscribers)]
        self.cell_ids = [f"cell-{i:04d}" for i in range(cells)]
        self.home_cell = {s: self.rng.choice(self.cell_ids) for s in self.subscriber_ids}
        # Per-cell radio quality (some cells are at the edge of coverage) and per-subscriber device.
        self.cell_rsrp = {c: self.rng.gauss(-88.0, 5.0) for c in self.cell_ids}
        self.cell_sinr = {c: self.rng.gauss(16.0, 3.0) for c in self.cell_ids}
        self.plan_mbps = {s: self.rng.choice(_PLANS_MBPS) for s in self.subscriber_ids}
        self._profile_seed = self.rng.random()
        self._first = list(self.subscriber_ids)  # the base the simulation started with
        self._joined = subscribers  # numbers the customers who join later
        self.incidents: list[Incident] = []
        self._by_cell: dict[str, list[Incident]] = {}
        self._by_sub: dict[str, list[Incident]] = {}
        self._silent: dict[str, list[Incident]] = {}

    def add_incidents(self, incidents: list[Incident]) -> None:
        """Inject incidents (they act on events generated from now on)."""
        self.incidents.extend(incidents)
        for inc in incidents:
            if inc.subscriber_id is not None:
                self._by_sub.setdefault(inc.subscriber_id, []).append(inc)
            elif inc.kind == "silent_outage":
                self._silent.setdefault(inc.cell_id, []).append(inc)
            else:
                self._by_cell.setdefault(inc.cell_id, []).append(inc)

    def hurt(self, subscriber: str, t: datetime, severity: float = 0.3) -> bool:
        """Whether an incident of at least ``severity`` had reached ``subscriber`` by ``t``: their
        own, or one of their home cell (a dark cell's too: its subscribers were pushed to a
        weaker neighbour)."""
        cell = self.home_cell[subscriber]
        return any(
            inc.start <= t and inc.severity >= severity
            for incidents in (
                self._by_sub.get(subscriber, ()),
                self._by_cell.get(cell, ()),
                self._silent.get(cell, ()),
            )
            for inc in incidents
        )

    def _impairment(self, sub: str, cell: str, t: datetime) -> float:
        level = 0.0
        for inc in self._by_sub.get(sub, ()):
            level = max(level, inc.impairment(t))
        for inc in self._by_cell.get(cell, ()):
            level = max(level, inc.impairment(t))
        return level

    def event(self, t: datetime, subscriber_id: str | None = None) -> dict[str, Any]:
        """One QoS measurement at event time ``t`` as a JSON-ready dict."""
        rng = self.rng
        sub = subscriber_id or rng.choice(self.subscriber_ids)
        cell = self.home_cell[sub]
        far = 0.0  # dB lost when served by a neighbour, further away
        for dark in self._silent.get(cell, ()):
            if dark.moved_to is not None and dark.start <= t < dark.end:
                cell, far = dark.moved_to, 8.0
        service = rng.choices(_SERVICES, _SERVICE_WEIGHTS)[0]
        load = diurnal_factor(t)
        bad = self._impairment(sub, cell, t)
        rtt = rng.lognormvariate(math.log(35.0 + 15.0 * load), 0.25) * (1.0 + 6.0 * bad)
        jitter = abs(rng.gauss(2.0 + 2.0 * load, 1.5)) + 30.0 * bad
        loss = abs(rng.gauss(0.1, 0.15)) * (0.5 + load) + 8.0 * bad
        rsrp = min(-44.0, max(-140.0, rng.gauss(self.cell_rsrp[cell], 4.0) - 12.0 * bad - far))
        sinr = min(35.0, max(-20.0, rng.gauss(self.cell_sinr[cell], 3.0) - 15.0 * bad))
        self.seq += 1
        record: dict[str, Any] = {
            "event_id": f"{self.run_id}-{self.seq}",
            "event_time": t.isoformat(),
            "subscriber_id": sub,
            "cell_id": cell,
            "service": service,
            "rtt_ms": round(min(rtt, 59_000.0), 2),
            "jitter_ms": round(min(jitter, 9_000.0), 2),
            "loss_pct": round(min(loss, 100.0), 3),
            "rsrp_dbm": round(rsrp, 1),
            "rsrq_db": round(min(-3.0, max(-20.0, rng.gauss(-10.0, 2.0) - 5.0 * bad)), 1),
            "sinr_db": round(sinr, 1),
        }
        if service != "voice":
            # what the cell gives this user now, whatever the plan: a share of its capacity
            # that shrinks at busy hours and with the incident
            capacity = (
                rng.lognormvariate(math.log(40_000.0), 0.4)
                * (1.0 - 0.3 * load)
                * (1.0 - 0.92 * bad)
            )
            if service == "video":  # a stream asks for its rendition's rate
                demand = rng.choice(_RENDITIONS_KBPS)
                record["demand_kbps"] = demand
                tput = min(demand * rng.uniform(1.0, 1.3), capacity)  # a little over to refill
                if capacity < demand and rng.random() < 1.0 - capacity / demand:
                    record["stalls"] = 1
            elif rng.random() < _BULK_SHARE:  # a download takes what it can, up to the plan
                record["transfer_active"] = 1
                tput = min(self.plan_mbps[sub] * 1000.0, capacity)
            else:  # light use: the rate is what the app needed
                tput = min(rng.lognormvariate(math.log(1_500.0), 0.8), capacity)
            record["throughput_kbps"] = round(max(tput, 10.0), 1)
        return record

    def malformed(self, t: datetime) -> bytes:
        """One deliberately bad record, of a random kind (not JSON, missing field, ...)."""
        good = self.event(t)
        kind = self.rng.randrange(4)
        if kind == 0:
            return b"\x00not json at all{" + str(self.seq).encode()
        if kind == 1:
            del good["subscriber_id"]
        elif kind == 2:
            good["rtt_ms"] = "fast"
        else:
            good["loss_pct"] = 250.0
        return orjson.dumps(good)

    def encoded(self, t: datetime) -> tuple[bytes | None, bytes]:
        """``(key, value)`` for Kafka: a good event, or a malformed one at ``bad_ratio``."""
        if self.bad_ratio and self.rng.random() < self.bad_ratio:
            return None, self.malformed(t)
        record = self.event(t)
        return record["subscriber_id"].encode(), orjson.dumps(record)

    def timeline(
        self, start: datetime, rate: float, *, diurnal: bool = True, floor: float = 0.0
    ) -> Iterator[datetime]:
        """Event times from ``start``: ``rate`` events per second at the busiest hour, fewer at
        quieter hours (:func:`load_factor` with ``floor``), or ``rate`` at every hour with
        ``diurnal=False``."""
        t = start
        while True:
            yield t
            busy = load_factor(t, floor) if diurnal else 1.0
            t += timedelta(seconds=self.rng.expovariate(rate * busy))

    def replace(self, subscriber_id: str, t: datetime) -> CustomerContext | None:
        """``subscriber_id`` leaves the network: no event is theirs from now on, and a new
        customer (a new id and account, no tenure yet) takes their place in their home cell, so
        the base and each cell keep their size (the demo's churn is hours of a real base in
        minutes: cells left to lose their leavers would empty out, and look like faults).
        Returns the newcomer's profile; None, leaving everything as it was, for an unknown
        subscriber or one whose own incident is not over at ``t`` (it must be seen through).

        >>> from datetime import UTC
        >>> sim = Simulator(subscribers=3, cells=2, seed=1)
        >>> new = sim.replace("sub-0000001", datetime(2026, 1, 1, tzinfo=UTC))
        >>> new.subscriber_id, new.tenure_months, sim.subscriber_ids
        ('sub-0000003', 0, ['sub-0000000', 'sub-0000003', 'sub-0000002'])
        """
        try:
            at = self.subscriber_ids.index(subscriber_id)
        except ValueError:
            return None
        if any(inc.end > t for inc in self._by_sub.get(subscriber_id, ())):
            return None
        self.subscriber_ids[at] = new = f"sub-{self._joined:07d}"
        self._joined += 1
        self.home_cell[new] = self.home_cell[subscriber_id]
        self.plan_mbps[new] = self.rng.choice(_PLANS_MBPS)
        # an account of its own, numbered beyond the first base's (at most one per customer)
        profile = self._profile(self.rng, new, f"acct-{self._joined + len(self._first):07d}")
        return profile.model_copy(update={"tenure_months": 0})

    def profiles(self) -> Iterator[CustomerContext]:
        """A customer profile for every subscriber the simulation started with (seeded;
        households share accounts); :meth:`replace` gives those who join later."""
        rng = random.Random(self._profile_seed)
        account = 0
        for i, sub in enumerate(self._first):
            if i == 0 or rng.random() > 0.3:
                account += 1
            yield self._profile(rng, sub, f"acct-{account:07d}")

    def _profile(self, rng: random.Random, sub: str, account: str) -> CustomerContext:
        charge = round(rng.uniform(15.0, 120.0), 2)
        tier = (
            ValueTier.PLATINUM
            if charge >= 100
            else ValueTier.GOLD
            if charge >= 70
            else ValueTier.SILVER
            if charge >= 35
            else ValueTier.BRONZE
        )
        consent = {
            Channel.SMS: _consent(rng, 0.85),
            Channel.EMAIL: _consent(rng, 0.7),
            Channel.PUSH: _consent(rng, 0.5),
            Channel.VOICE_CALL: _consent(rng, 0.3),
        }
        return CustomerContext(
            subscriber_id=sub,
            account_id=account,
            plan=f"mobile-{int(self.plan_mbps[sub])}",
            plan_mbps=self.plan_mbps[sub],
            monthly_charge=charge,
            tenure_months=rng.randrange(0, 73),
            contract=rng.choices(("month_to_month", "one_year", "two_year"), (0.55, 0.21, 0.24))[0],
            value_tier=tier,
            consent=consent,
            preferred_channel=rng.choice((Channel.SMS, Channel.SMS, Channel.EMAIL, Channel.PUSH)),
            timezone=rng.choice(_ZONES),
            language=rng.choice(_LANGS),
            open_tickets=1 if rng.random() < 0.04 else 0,
        )


def _consent(rng: random.Random, p_granted: float) -> ConsentStatus:
    roll = rng.random()
    if roll < p_granted:
        return ConsentStatus.GRANTED
    return ConsentStatus.REVOKED if roll < p_granted + 0.05 else ConsentStatus.DENIED

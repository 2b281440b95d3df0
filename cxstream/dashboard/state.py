"""What the dashboard knows, built from the alerts, decisions, cells and deliveries topics, and
the tombstones of the customers topic (an erased customer is dropped and ignored from then on).

Everything is bounded: the most recent incidents, degradations, customers and actions are kept,
and the decisions and outcomes of the subscribers contacted most recently (the last few each, and
a fixed number in all), so memory does not grow with traffic or with the size of the base. All
methods are thread-safe: the Kafka feed writes from its thread, the web app reads from its own.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

__all__ = ["DashboardState"]

_TIER_VALUE = {"platinum": 4, "gold": 3, "silver": 2, "bronze": 1, None: 0}


def _trim(store: OrderedDict[str, Any], limit: int) -> None:
    while len(store) > limit:
        store.popitem(last=False)


_DIGEST = re.compile(r"[0-9a-f]{32}")
_UNKEYED = b"cxstream dashboard erasures"  # where no secret is configured: still no plain ids


class _Erased:
    """The customers erased (tombstones read), most recent last, at most ``limit``: kept, and
    saved in Redis with the rest of the state, as keyed digests of their ids (HMAC-SHA256, 128
    bits), never the ids themselves, so that the saved state names nobody who was erased.

    ``keys``: new erasures are digested with the first; every key is matched, so a key being
    retired still recognises what it digested, and a customer it recognises is filed again
    under the first (once the retired key is dropped, those seen during the rotation are
    still known).

    >>> erased = _Erased([b"k"])
    >>> erased.add("s1")
    >>> "s1" in erased, "s2" in erased, "s1" in "".join(erased.dump())
    (True, False, False)
    >>> rotated, after = _Erased([b"new", b"k"]), _Erased([b"new"])
    >>> rotated.load(erased.dump())
    >>> "s1" in rotated
    True
    >>> after.load(rotated.dump())  # the retired key dropped
    >>> "s1" in after
    True
    """

    def __init__(self, keys: Sequence[bytes] = (), limit: int = 100_000) -> None:
        self._keys = list(keys) or [_UNKEYED]
        self._limit = limit
        self._digests: OrderedDict[str, None] = OrderedDict()

    @staticmethod
    def _digest(key: bytes, sid: str) -> str:
        return hmac.new(key, sid.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]

    def add(self, sid: str) -> None:
        digest = self._digest(self._keys[0], sid)
        self._digests.pop(digest, None)
        self._digests[digest] = None
        _trim(self._digests, self._limit)

    def discard(self, sid: str) -> None:
        for key in self._keys:
            self._digests.pop(self._digest(key, sid), None)

    def __contains__(self, sid: object) -> bool:
        if not self._digests or not isinstance(sid, str):
            return False
        for n, key in enumerate(self._keys):
            digest = self._digest(key, sid)
            if digest in self._digests:
                if n:  # a retired key's: filed under the current one (as if erased now)
                    del self._digests[digest]
                    self._digests[self._digest(self._keys[0], sid)] = None
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._digests)

    def dump(self) -> list[str]:
        return list(self._digests)

    def load(self, value: object) -> None:
        """Take what :meth:`dump` gave; an entry that is not a digest is an id saved in the
        clear (by a version that kept them so) and is digested now."""
        self._digests = OrderedDict()
        for entry in value if isinstance(value, list) else []:
            if isinstance(entry, str) and _DIGEST.fullmatch(entry):
                self._digests[entry] = None
            elif isinstance(entry, str):
                self.add(entry)
        _trim(self._digests, self._limit)


class _Histories:
    """Per-subscriber records, newest first: at most ``per`` for one subscriber, ``total`` in all
    and ``subscribers`` subscribers, those updated least recently dropped first (so a busy base
    cannot make the state, and the copy saved in Redis, grow to ``per`` records for every
    subscriber)."""

    def __init__(self, per: int, total: int, subscribers: int) -> None:
        self.per = per
        self.total = total
        self.subscribers = subscribers
        self.count = 0
        self.by_sub: dict[str, deque[dict[str, Any]]] = {}

    def add(self, sid: str, record: dict[str, Any]) -> None:
        q = self.by_sub.pop(sid, None)  # re-inserted last: the most recently updated
        if q is None:
            q = deque(maxlen=self.per)
        self.by_sub[sid] = q
        if len(q) < self.per:
            self.count += 1
        q.appendleft(record)
        while self.count > self.total or len(self.by_sub) > self.subscribers:
            self.pop(next(iter(self.by_sub)))

    def pop(self, sid: str) -> None:
        q = self.by_sub.pop(sid, None)
        if q is not None:
            self.count -= len(q)

    def get(self, sid: str) -> list[dict[str, Any]]:
        return list(self.by_sub.get(sid, ()))

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        return {k: list(v) for k, v in self.by_sub.items()}

    def load(self, value: object) -> None:
        """Take what :meth:`dump` gave, oldest subscribers first, within the bounds."""
        self.by_sub = {}
        self.count = 0
        if not isinstance(value, dict):
            return
        for sid, records in value.items():
            if isinstance(records, list):
                for record in reversed(records[: self.per]):
                    if isinstance(record, dict):
                        self.add(str(sid), record)


class DashboardState:
    """Bounded, thread-safe state for the dashboard."""

    def __init__(
        self,
        *,
        max_items: int = 5_000,
        per_subscriber: int = 50,
        max_history: int = 20_000,
        erasure_keys: Sequence[bytes] = (),
    ) -> None:
        self._lock = threading.Lock()
        self.version = 0
        self.max_items = max_items
        self.per_subscriber = per_subscriber
        self.incidents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.acks: dict[str, dict[str, str]] = {}
        self.cells: dict[str, dict[str, Any]] = {}
        self.degradations: deque[dict[str, Any]] = deque(maxlen=max_items)
        self.endpoint_alarms: deque[dict[str, Any]] = deque(maxlen=20)  # webhooks disabled
        self.customers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.actions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # contact decisions and outcomes per subscriber (each: max_history records in all, for at
        # most max_items subscribers)
        self.decisions = _Histories(per_subscriber, max_history, max_items)
        self.outcomes = _Histories(per_subscriber, max_history, max_items)
        self._early_status: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.erased = _Erased(erasure_keys)  # the tombstones read, as digests of the ids

    def _changed(self) -> None:
        self.version += 1

    # -- persistence -----------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Everything the dashboard knows, as JSON-ready data (see :meth:`load`)."""
        with self._lock:
            return {
                "format": 1,
                "incidents": list(self.incidents.values()),
                "acks": self.acks,
                "cells": list(self.cells.values()),
                "degradations": list(self.degradations),
                "endpoint_alarms": list(self.endpoint_alarms),
                "customers": list(self.customers.values()),
                "actions": list(self.actions.values()),
                "decisions": self.decisions.dump(),
                "outcomes": self.outcomes.dump(),
                "early_status": self._early_status,
                "erased": self.erased.dump(),
            }

    def load(self, data: dict[str, Any]) -> None:
        """Take what :meth:`dump` gave (read back from Redis): data only, checked for shape; a
        snapshot of another format is ignored."""
        if not isinstance(data, dict) or data.get("format") != 1:
            return
        n = self.max_items

        def records(name: str) -> list[dict[str, Any]]:
            value = data.get(name)
            return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []

        with self._lock:
            self.incidents = OrderedDict(
                (a["id"], a) for a in records("incidents")[-500:]
                if isinstance(a.get("id"), str) and isinstance(a.get("alarmedObject"), dict)
            )  # fmt: skip
            acks = data.get("acks")
            self.acks = (
                {str(k): v for k, v in acks.items() if isinstance(v, dict)}
                if isinstance(acks, dict)
                else {}
            )
            self.cells = {
                c["cell_id"]: c for c in records("cells") if isinstance(c.get("cell_id"), str)
            }
            self.degradations = deque(records("degradations")[:n], maxlen=n)
            self.endpoint_alarms = deque(records("endpoint_alarms")[:20], maxlen=20)
            self.customers = OrderedDict(
                (c["subscriber_id"], c) for c in records("customers")[-n:]
                if isinstance(c.get("subscriber_id"), str)
            )  # fmt: skip
            self.actions = OrderedDict(
                (a["action_id"], a) for a in records("actions")[-n:]
                if isinstance(a.get("action_id"), str) and isinstance(a.get("subscriber_id"), str)
            )  # fmt: skip
            self.decisions.load(data.get("decisions"))
            self.outcomes.load(data.get("outcomes"))
            early = data.get("early_status")
            self._early_status = OrderedDict(
                (str(k), v) for k, v in (early.items() if isinstance(early, dict) else [])
                if isinstance(v, dict)
            )  # fmt: skip
            self.erased.load(data.get("erased"))
            self._changed()

    def dumps(self) -> bytes:
        """:meth:`dump` as JSON bytes."""
        return orjson.dumps(self.dump())

    # -- erasure ---------------------------------------------------------------------------------
    def forget(self, subscriber_id: str) -> None:
        """An erased customer (a tombstone on the customers topic): drop everything about them,
        and ignore records about them read from now on."""
        sid = subscriber_id
        with self._lock:
            self.erased.add(sid)
            self.customers.pop(sid, None)
            self.decisions.pop(sid)
            self.outcomes.pop(sid)
            for store in (self.actions, self._early_status):
                for key in [k for k, v in store.items() if v.get("subscriber_id") == sid]:
                    del store[key]
            kept = [a for a in self.degradations if a.get("subscriber_id") != sid]
            self.degradations = deque(kept, maxlen=self.max_items)
            for alarm in self.incidents.values():
                _scrub(alarm, self.erased)
            self._changed()

    def restore(self, subscriber_id: str) -> None:
        """The customer was created again after an erasure: records about them count again."""
        with self._lock:
            self.erased.discard(subscriber_id)

    def _is_erased(self, record: dict[str, Any]) -> bool:
        return bool(self.erased) and record.get("subscriber_id") in self.erased

    # -- feeding ---------------------------------------------------------------------------------
    def on_alert(self, record: dict[str, Any]) -> None:
        """A TMF642 alarm: a cell incident, or an individual degradation (its alarmed object a
        subscriber's service, cxstream's own record in ``x-cxstream``)."""
        with self._lock:
            own = record.get("x-cxstream")
            if isinstance(own, dict) and own.get("kind") == "degradation_cleared":
                sid = own.get("subscriber_id")
                entry = self.customers.get(sid) if isinstance(sid, str) else None
                if entry is not None and entry.get("alert_id") == own.get("alert_id"):
                    entry["cleared_at"] = record.get("alarmClearedTime")
                    self._changed()
                return
            if isinstance(own, dict) and own.get("kind") == "webhook_disabled":
                self.endpoint_alarms.appendleft(record)
                self._changed()
                return
            if isinstance(own, dict) and own.get("kind") == "degradation":
                if not self._is_erased(own):
                    self._on_degradation(own)
                    self._changed()
                return
            if record.get("@type") == "Alarm":
                if self.erased:
                    _scrub(record, self.erased)
                self._on_alarm(record)
            elif self._is_erased(record):
                return
            elif record.get("kind") == "degradation":
                self._on_degradation(record)
            self._changed()

    def on_alarm_update(self, record: dict[str, Any]) -> None:
        """A TMF642 alarm event from the alarm-updates topic: its ``alarm`` is the alarm's id and
        the ``Alarm_Update`` fields that changed (an acknowledgement, a clear)."""
        alarm = (record.get("event") or {}).get("alarm")
        if not isinstance(alarm, dict) or not isinstance(alarm.get("id"), str):
            return
        with self._lock:
            self._on_alarm(alarm)
            self._changed()

    def _on_alarm(self, alarm: dict[str, Any]) -> None:
        incident_id = alarm["id"]
        ack = alarm.get("ackState")
        if ack == "acknowledged":
            self.acks[incident_id] = {
                "by": alarm.get("ackUserId", "?"),
                "at": alarm.get("alarmChangedTime", ""),
            }
        current = self.incidents.pop(incident_id, None)
        if alarm.get("x-cxstream") is None and current is not None:  # an operator's update
            current.update(
                {
                    k: v
                    for k, v in alarm.items()
                    if k in ("state", "ackState", "ackUserId", "clearUserId", "alarmClearedTime")
                }
            )
            self.incidents[incident_id] = current
        elif alarm.get("x-cxstream") is not None or "alarmedObject" in alarm:
            self.incidents[incident_id] = alarm
        # else: an update of an alarm not seen (yet): only its acknowledgement is kept
        _trim(self.incidents, 500)

    def _on_degradation(self, alert: dict[str, Any]) -> None:
        self.degradations.appendleft(alert)
        sid = alert.get("subscriber_id")
        if sid:
            entry = self.customers.pop(sid, {"subscriber_id": sid})
            entry.update(
                {
                    "value_tier": alert.get("value_tier"),
                    "experience_index": alert.get("experience_index"),
                    "experience": alert.get("experience"),
                    "cell_id": alert.get("cell_id"),
                    "why": alert.get("why"),
                    "explained_by": alert.get("explained_by"),
                    "last_alert": alert.get("event_time"),
                    "alert_id": alert.get("alert_id"),
                    "cleared_at": None,
                }
            )
            self.customers[sid] = entry
            _trim(self.customers, self.max_items)

    def on_decision(self, record: dict[str, Any]) -> None:
        """A contact decision (or a joined outcome) from the decisions topic."""
        joined = record.get("joined_outcome")
        if joined is not None:
            if isinstance(joined, dict):
                self._on_outcome(joined)
            return
        with self._lock:
            if self._is_erased(record):
                return
            sid = record.get("subscriber_id")
            if sid:
                self.decisions.add(sid, record)
                entry = self.customers.get(sid)
                if entry is not None:
                    entry["policy"] = f"{record['result']} ({record.get('kind')})"
                if record.get("action_id") and record["result"] in ("sent", "deferred"):
                    action = {
                        "action_id": record["action_id"],
                        "subscriber_id": sid,
                        "kind": record.get("kind"),
                        "decided_at": record.get("decided_at"),
                        # sent actions are in delivery until a status arrives
                        "status": "deferred" if record["result"] == "deferred" else "delivering",
                        "send_at": record.get("send_at"),
                    }
                    early = self._early_status.pop(record["action_id"], None)
                    if early is not None:
                        _apply_status(action, early)
                    self.actions[record["action_id"]] = action
                    _trim(self.actions, self.max_items)
            self._changed()

    def _on_outcome(self, joined: dict[str, Any]) -> None:
        """An outcome (churned, retained, offer_accepted, complaint) joined to its customer."""
        sid = joined.get("subscriber_id")
        if not isinstance(sid, str):
            return
        with self._lock:
            if sid in self.erased:
                return
            self.outcomes.add(
                sid,
                {
                    "outcome": joined.get("outcome"),
                    "time": joined.get("time"),
                    "group": joined.get("group"),
                },
            )
            self._changed()

    def on_delivery(self, record: dict[str, Any]) -> None:
        """A webhook delivery status."""
        with self._lock:
            if self._is_erased(record):
                return
            action = self.actions.get(record.get("action_id", ""))
            if action is not None:
                _apply_status(action, record)
            else:  # the decision has not been read yet (another topic): keep it for then
                self._early_status[record.get("action_id", "")] = record
                _trim(self._early_status, self.max_items)
            self._changed()

    def on_cell(self, record: dict[str, Any]) -> None:
        """A periodic cell summary."""
        with self._lock:
            self.cells[record["cell_id"]] = record
            self._changed()

    def acknowledge(self, incident_id: str, user: str, at: str) -> dict[str, Any] | None:
        """Record an acknowledgement; returns the incident (None if unknown)."""
        with self._lock:
            incident = self.incidents.get(incident_id)
            if incident is None:
                return None
            self.acks[incident_id] = {"by": user, "at": at}
            self._changed()
            return dict(incident)

    # -- reading ---------------------------------------------------------------------------------
    def incident_rows(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent incidents, newest first, as the page and the API list them (with
        ``affected_ids``, the affected subscribers)."""
        with self._lock:
            return self._incident_rows(limit)

    def incident_row(self, incident_id: str) -> dict[str, Any] | None:
        """One incident as :meth:`incident_rows` lists it, with ``affected_tiers`` (each
        affected subscriber's value tier); None if the dashboard does not hold it."""
        with self._lock:
            alarm = self.incidents.get(incident_id)
            if alarm is None:
                return None
            return {**self._incident_row(alarm), "affected_tiers": _tier_of(alarm)}

    def _incident_rows(self, limit: int) -> list[dict[str, Any]]:
        incidents = []
        for alarm in reversed(self.incidents.values()):
            incidents.append(self._incident_row(alarm))
            if len(incidents) >= limit:
                break
        return incidents

    def _incident_row(self, alarm: dict[str, Any]) -> dict[str, Any]:
        extra = alarm.get("x-cxstream", {})
        affected = alarm.get("affectedService", [])
        return {
            "id": alarm["id"],
            "cell_id": alarm["alarmedObject"]["id"],
            "state": alarm["state"],
            "severity": alarm["perceivedSeverity"],
            "since": alarm.get("alarmRaisedTime"),
            "changed": alarm.get("alarmChangedTime"),
            "affected": len(affected),
            "affected_ids": [a.get("id") for a in affected if a.get("id")],
            "tiers": _count_tiers(_tiers(alarm)),
            "cause": extra.get("cause"),
            # an outage: where its subscribers turned up since
            "moved_to": _moved_to(extra),
            # the cell's own measures out of their normal (what a KPI anomaly saw)
            "kpis": _kpis(extra),
            "resolved_by": alarm.get("clearUserId"),
            "share": extra.get("share"),
            # the cell's active subscribers at its last update (the affected are among them)
            "active": _count(extra.get("active_subscribers")),
            "ack": self.acks.get(alarm["id"]),
        }

    def overview(self, *, limit: int = 200) -> dict[str, Any]:
        """Everything the main page shows, compact."""
        with self._lock:
            incidents = self._incident_rows(50)
            # those still degraded (by tier, then the worst experience), then those whose
            # degradation has cleared, the latest first: a long run must not fill the list
            # with valuable customers hurt hours ago while someone is hurt now
            degraded: list[dict[str, Any]] = []
            recovered: list[dict[str, Any]] = []
            for c in reversed(self.customers.values()):  # the latest alert first
                (recovered if c.get("cleared_at") else degraded).append(c)
            degraded.sort(
                key=lambda c: (
                    -_TIER_VALUE.get(c.get("value_tier"), 0),
                    c.get("experience_index") or 100,
                )
            )
            customers = (degraded + recovered)[:limit]
            actions = list(reversed(self.actions.values()))[:limit]
            cells = sorted(self.cells.values(), key=lambda c: c["cell_id"])
            return {
                "version": self.version,
                "incidents": incidents,
                "cells": [
                    {
                        "id": c["cell_id"],
                        "x": c["experience"],
                        "a": c["active"],
                        "d": c["degraded"],
                        "i": c["incident_id"],
                    }
                    for c in cells
                ],
                "customers": customers,
                "actions": actions,
                # the action webhook endpoints disabled (410 Gone), newest first
                "webhook_disabled": [
                    {
                        "endpoint": a["alarmedObject"]["id"],
                        "since": a.get("alarmRaisedTime"),
                        "problem": a.get("specificProblem"),
                    }
                    for a in self.endpoint_alarms
                ],
            }

    def customer(
        self, subscriber_id: str, seen_in: Sequence[tuple[float, str | None]] = ()
    ) -> dict[str, Any]:
        """What the dashboard saw about one subscriber. ``seen_in``: where their recent
        experience samples were taken (``(epoch, cell)``, from their history), so the cell
        incidents they were in are listed too where the incident did not name them (a KPI
        anomaly names nobody; an outage only those it left in the dark)."""
        present: dict[str, list[float]] = {}
        for t, where in seen_in:
            if where:
                present.setdefault(where, []).append(t)
        with self._lock:
            alerts = [a for a in self.degradations if a.get("subscriber_id") == subscriber_id][:50]
            incident_ids = {a.get("explained_by") for a in alerts if a.get("explained_by")}
            incidents = []
            for alarm in self.incidents.values():
                ids = {x.get("id") for x in alarm.get("affectedService", [])}
                cell = alarm.get("alarmedObject", {}).get("id")
                if subscriber_id in ids:
                    how = "affected"
                elif alarm["id"] in incident_ids:
                    how = "explained"
                elif _open_at_any(alarm, present.get(cell) if isinstance(cell, str) else None):
                    how = "in_cell"
                else:
                    continue
                incidents.append(
                    {
                        "id": alarm["id"],
                        "cell_id": cell,
                        "state": alarm["state"],
                        "since": alarm.get("alarmRaisedTime"),
                        "cause": alarm.get("x-cxstream", {}).get("cause"),
                        "how": how,
                    }
                )
            return {
                "outcomes": self.outcomes.get(subscriber_id),
                "summary": self.customers.get(subscriber_id),
                "alerts": alerts,
                "incidents": incidents,
                "decisions": self.decisions.get(subscriber_id),
                "actions": [
                    a for a in self.actions.values() if a["subscriber_id"] == subscriber_id
                ],
            }

    def search(self, query: str, limit: int = 50) -> list[str]:
        """Subscriber ids the dashboard knows that contain ``query``."""
        with self._lock:
            q = query.strip().lower()
            known = list(self.customers) + [
                s for s in self.decisions.by_sub if s not in self.customers
            ]
            return [s for s in known if q in s.lower()][:limit]


def _open_at_any(alarm: dict[str, Any], times: list[float] | None) -> bool:
    """Whether ``alarm`` was open (from its raising to its clearing, or now) at any of
    ``times`` (epochs)."""
    if not times:
        return False
    since = _epoch(alarm.get("alarmRaisedTime"))
    if since is None:
        return False
    until = _epoch(alarm.get("alarmClearedTime")) or math.inf
    return any(since <= t <= until for t in times)


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None


def _moved_to(extra: dict[str, Any]) -> dict[str, int]:
    """An outage's ``why.moved_to`` (cell -> subscribers), or nothing where it has none."""
    why = extra.get("why")
    moved = why.get("moved_to") if isinstance(why, dict) else None
    if not isinstance(moved, dict):
        return {}
    return {str(c): n for c, n in moved.items() if isinstance(n, int)}


def _kpis(extra: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The incident's ``why.anomalous_kpis``: each KPI out of its normal, with its value and
    baseline; nothing where it has none."""
    why = extra.get("why")
    kpis = why.get("anomalous_kpis") if isinstance(why, dict) else None
    if not isinstance(kpis, dict):
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, kpi in kpis.items():
        if not isinstance(kpi, dict):
            continue
        value, baseline = kpi.get("value"), kpi.get("baseline")
        if isinstance(value, int | float) and isinstance(baseline, int | float):
            out[str(name)] = {"value": value, "baseline": baseline}
    return out


def _scrub(alarm: dict[str, Any], erased: _Erased) -> None:
    """Replace erased customers' ids in an alarm: its affected services, the subscribers new
    in its update and its tiers by subscriber (the counts stay)."""
    for entry in alarm.get("affectedService", []):
        if isinstance(entry, dict) and entry.get("id") in erased:
            entry["id"] = "(erased)"
    own = alarm.get("x-cxstream")
    if not isinstance(own, dict):
        return
    new = own.get("new_affected")
    if isinstance(new, list):
        own["new_affected"] = ["(erased)" if sid in erased else sid for sid in new]
    tiers = own.get("affected_tiers")
    if isinstance(tiers, dict):
        # numbered on from those erased before, so that none overwrites another
        taken = sum(1 for key in tiers if isinstance(key, str) and key.startswith("(erased "))
        for n, sid in enumerate([sid for sid in tiers if sid in erased], start=taken):
            tiers[f"(erased {n})"] = tiers.pop(sid)


def _tier_of(alarm: dict[str, Any]) -> dict[str, str | None]:
    """Each affected subscriber's value tier (subscriber -> tier) in a cell incident's alarm."""
    tiers = alarm.get("x-cxstream", {}).get("affected_tiers")
    if isinstance(tiers, dict):
        return {str(sid): tier for sid, tier in tiers.items()}
    return {a["id"]: a.get("valueTier") for a in alarm.get("affectedService", []) if a.get("id")}


def _tiers(alarm: dict[str, Any]) -> list[str | None]:
    """The value tier of each affected subscriber of a cell incident's alarm."""
    tiers = alarm.get("x-cxstream", {}).get("affected_tiers")
    if isinstance(tiers, dict):
        return list(tiers.values())
    return [a.get("valueTier") for a in alarm.get("affectedService", [])]


def _apply_status(action: dict[str, Any], record: dict[str, Any]) -> None:
    action["status"] = record.get("status")
    action["attempts"] = record.get("attempts")
    action["error"] = record.get("error")


def _count(value: Any) -> int | None:
    """A count carried by an alarm, or None where it carries none (or not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _count_tiers(tiers: list[str | None]) -> dict[str, int]:
    """Affected customers per value tier, highest tier first (JSON keeps the order)."""
    counts: dict[str, int] = {}
    for t in tiers:
        tier = t or "unknown"
        counts[tier] = counts.get(tier, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -_TIER_VALUE.get(kv[0], 0)))

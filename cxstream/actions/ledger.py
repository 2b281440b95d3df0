"""Contact state: cooldowns, frequency caps, the hourly budget, deferred actions, the experiment.

:meth:`ContactLedger.try_contact` checks and records one contact atomically — the cooldown per
(customer, reason), every cap (per customer and channel, per household), and the global budget per
hour — so that concurrent workers cannot both take the last slot. In Redis it is one Lua script,
pipelined per batch; :class:`MemoryLedger` is the same logic in a dict, and the tests run both
against the same cases.

The cooldown key holds the action id and the end of the cooldown (in the caller's clock; the key's
TTL only collects garbage): a replay of the *same* action (after a restart) answers ``replay`` and
may be emitted again (receivers deduplicate on the id), a *different* action inside the cooldown
answers ``cooldown``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis

from cxstream.events import Action

__all__ = [
    "CapCheck",
    "Contact",
    "ContactLedger",
    "DeferredQueue",
    "ExperimentLedger",
    "MemoryLedger",
    "RedisLedger",
]


@dataclass(frozen=True)
class CapCheck:
    """One cap to check: the key it counts under, its maximum and window, and a name."""

    key: str
    max: int
    window_s: float
    name: str


@dataclass(frozen=True)
class Contact:
    """A contact to claim: cooldown key and TTL, caps, budget key and size (0 = none)."""

    action_id: str
    cooldown_key: str
    cooldown_s: float
    caps: tuple[CapCheck, ...] = ()
    budget_key: str | None = None
    budget: int = 0


class ContactLedger(Protocol):
    """Where contacts are claimed; answers ``ok``, ``replay``, ``cooldown``, ``budget`` or a cap name."""

    def try_contact(self, contacts: Sequence[Contact], now: float) -> list[str]:
        """Claim each contact in order (atomically each); the result per contact."""


_SCRIPT = """
local now = tonumber(ARGV[1])
local holder = redis.call('GET', KEYS[1])
if holder then
  local sep = string.find(holder, ' ', 1, true)
  local until_ms = tonumber(string.sub(holder, sep + 1))
  if until_ms > now then
    if string.sub(holder, 1, sep - 1) == ARGV[2] then return 'replay' end
    return 'cooldown'
  end
end
local ncaps = tonumber(ARGV[6])
for i = 1, ncaps do
  local key = KEYS[2 + i]
  local max = tonumber(ARGV[5 + 2 * i])
  local win = tonumber(ARGV[6 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
  if redis.call('ZCARD', key) >= max then return ARGV[6 + 2 * ncaps + i] end
end
local budget = tonumber(ARGV[4])
if budget > 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= budget then return 'budget' end
end
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])), 'PX', ARGV[3] + 60000)
if budget > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
for i = 1, ncaps do
  local key = KEYS[2 + i]
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[6 + 2 * i])))
end
return 'ok'
"""


class RedisLedger:
    """:class:`ContactLedger` on Redis: one Lua script per contact, one round trip per batch."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_SCRIPT)

    def try_contact(self, contacts: Sequence[Contact], now: float) -> list[str]:
        if not contacts:
            return []
        pipe = self._client.pipeline(transaction=False)
        now_ms = now * 1000.0
        for c in contacts:
            keys = [c.cooldown_key, c.budget_key or f"{c.cooldown_key}:nobudget"]
            keys += [cap.key for cap in c.caps]
            args: list[float | str | int] = [
                now_ms,
                c.action_id,
                int(c.cooldown_s * 1000),
                c.budget,
                7200,
                len(c.caps),
            ]
            for cap in c.caps:
                args += [cap.max, cap.window_s * 1000.0]
            args += [cap.name for cap in c.caps]
            self._script(keys=keys, args=args, client=pipe)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in pipe.execute()]


@dataclass
class MemoryLedger:
    """:class:`ContactLedger` in memory (tests, single-process tools)."""

    holders: dict[str, tuple[str, float]] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def try_contact(self, contacts: Sequence[Contact], now: float) -> list[str]:
        return [self._one(c, now) for c in contacts]

    def _one(self, c: Contact, now: float) -> str:
        held = self.holders.get(c.cooldown_key)
        if held is not None and held[1] > now:
            return "replay" if held[0] == c.action_id else "cooldown"
        for cap in c.caps:
            stamps = [t for t in self.series.get(cap.key, []) if t > now - cap.window_s]
            self.series[cap.key] = stamps
            if len(stamps) >= cap.max:
                return cap.name
        if (
            c.budget > 0
            and c.budget_key is not None
            and self.counters.get(c.budget_key, 0) >= c.budget
        ):
            return "budget"
        self.holders[c.cooldown_key] = (c.action_id, now + c.cooldown_s)
        if c.budget > 0 and c.budget_key is not None:
            self.counters[c.budget_key] = self.counters.get(c.budget_key, 0) + 1
        for cap in c.caps:
            self.series.setdefault(cap.key, []).append(now)
        return "ok"


class DeferredQueue:
    """Actions deferred by quiet hours, due at a time (Redis sorted set, or a list in memory)."""

    def __init__(self, client: redis.Redis | None = None, *, key: str = "cx:deferred") -> None:
        self._client = client
        self._key = key
        self._memory: list[tuple[float, bytes]] = []

    @property
    def redis_key(self) -> str | None:
        """The sorted set the actions wait in (None: they wait in memory)."""
        return None if self._client is None else self._key

    def forget(self, subscriber_ids: Sequence[str]) -> None:
        """Drop the deferred actions of erased customers kept in memory (the Redis set is
        :func:`cxstream.erasure.erase_customer`'s)."""
        gone = set(subscriber_ids)
        self._memory = [
            (due, p)
            for due, p in self._memory
            if Action.model_validate_json(p).subscriber_id not in gone
        ]

    def push(self, due: float, action: Action) -> None:
        """Keep ``action`` until ``due`` (epoch seconds)."""
        payload = action.model_dump_json().encode()
        if self._client is None:
            self._memory.append((due, payload))
        else:
            self._client.zadd(self._key, {payload: due})

    def pop_due(self, now: float, limit: int = 1000) -> list[Action]:
        """Remove and return the actions due by ``now``."""
        if self._client is None:
            due = sorted(item for item in self._memory if item[0] <= now)[:limit]
            for item in due:
                self._memory.remove(item)
            return [Action.model_validate_json(p) for _, p in due]
        popped: list[Action] = []
        for raw in self._client.zrangebyscore(self._key, "-inf", now, start=0, num=limit):
            member = raw if isinstance(raw, bytes | str) else str(raw)
            if self._client.zrem(self._key, member):  # only the worker that removed it emits it
                popped.append(Action.model_validate_json(member))
        return popped

    def cancel(self, alert_ids: Sequence[str]) -> list[Action]:
        """Remove and return the deferred actions raised by any of ``alert_ids`` (the area
        notices of incidents an operator resolved); the set is scanned, not indexed (it holds
        the actions waiting for quiet hours to end: thousands at most)."""
        wanted = set(alert_ids)
        if not wanted:
            return []
        if self._client is None:
            mine = [(d, p) for d, p in self._memory
                    if Action.model_validate_json(p).alert_id in wanted]  # fmt: skip
            for item in mine:
                self._memory.remove(item)
            return [Action.model_validate_json(p) for _, p in mine]
        cancelled: list[Action] = []
        for raw, _ in self._client.zscan_iter(self._key, count=1000):
            member = raw if isinstance(raw, bytes | str) else str(raw)
            try:
                action = Action.model_validate_json(member)
            except ValueError:
                continue  # left for pop_due, which reports it like any other
            if action.alert_id in wanted and self._client.zrem(self._key, member):
                cancelled.append(action)
        return cancelled

    def __len__(self) -> int:
        return len(self._memory) if self._client is None else int(self._client.zcard(self._key))


@dataclass
class ExperimentLedger:
    """Which group each contacted-or-held-out customer is in, and outcomes joined back to it.

    With a Redis client the assignments and counts survive restarts (hash ``<prefix>:exp:<id>``,
    counters ``<prefix>:expc:<group>:<what>``); without one they live in memory.
    """

    client: redis.Redis | None = None
    prefix: str = "cx"
    ttl_s: int = 180 * 86_400
    clock: Callable[[], float] = time.time
    _groups: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def assign(self, subscriber_id: str, group: str, action: Action | None) -> None:
        """Record the customer's group (the first assignment stands)."""
        if self.client is None:
            if subscriber_id not in self._groups:
                self._groups[subscriber_id] = group
                self._bump(f"{group}:subjects")
            return
        key = f"{self.prefix}:exp:{subscriber_id}"
        if self.client.hsetnx(key, "group", group):
            self.client.incr(f"{self.prefix}:expc:{group}:subjects")
        if action is not None:
            self.client.hset(key, mapping={"action_id": action.action_id, "kind": action.kind})
        self.client.expire(key, self.ttl_s)

    def outcome(self, subscriber_id: str, kind: str) -> str | None:
        """Join an outcome to the customer's group; returns the group, or None if unassigned."""
        if self.client is None:
            group = self._groups.get(subscriber_id)
            if group is not None:
                self._bump(f"{group}:{kind}")
            return group
        raw = self.client.hget(f"{self.prefix}:exp:{subscriber_id}", "group")
        if raw is None:
            return None
        group = raw.decode() if isinstance(raw, bytes) else str(raw)
        self.client.incr(f"{self.prefix}:expc:{group}:{kind}")
        return group

    def _bump(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def counts(self) -> dict[str, int]:
        """``{"treated:subjects": n, "control:churned": m, ...}``."""
        if self.client is None:
            return dict(self._counts)
        out = {}
        for key in self.client.scan_iter(f"{self.prefix}:expc:*"):
            name = (key.decode() if isinstance(key, bytes) else key).split(":expc:", 1)[1]
            out[name] = int(self.client.get(key) or 0)
        return out

    def report(self) -> dict[str, dict[str, float]]:
        """Per group: subjects and the rate of each outcome; plus the uplift (control - treated)."""
        counts = self.counts()
        groups = {"treated": {}, "control": {}}  # type: dict[str, dict[str, float]]
        for name, n in counts.items():
            group, what = name.split(":", 1)
            groups.setdefault(group, {})[what] = float(n)
        report: dict[str, dict[str, float]] = {}
        kinds = {w for g in groups.values() for w in g if w != "subjects"}
        for group, values in groups.items():
            subjects = values.get("subjects", 0.0)
            report[group] = {"subjects": subjects}
            for kind in kinds:
                report[group][kind] = (
                    round(values.get(kind, 0.0) / subjects, 4) if subjects else 0.0
                )
        report["uplift"] = {
            kind: round(report["control"].get(kind, 0.0) - report["treated"].get(kind, 0.0), 4)
            for kind in kinds
        }
        return report

"""Customer context in Redis, read in batches through a small TTL cache.

Profiles are stored as JSON under ``<prefix>:customer:<subscriber_id>``. :meth:`ContextStore.get_many`
answers a whole batch of subscriber ids with at most one ``MGET`` for the ids not in the cache — never
one round trip per event. When Redis cannot be reached, the last cached profile (even expired) is used,
or none, and the answer is marked *stale* so the policy does not contact anyone on unknown consent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from cxstream import metrics
from cxstream.erasure import action_index_key
from cxstream.errors import ServiceError
from cxstream.events import CustomerContext, CustomerUpdate
from cxstream.privacy import pseudonym
from cxstream.redis_guard import RedisPending

__all__ = ["ContextStore", "HistorySample", "Lookup", "MergePending"]

HistorySample = tuple[str, float, float] | tuple[str, float, float, str]
"""``(subscriber, epoch, experience index)``, or with the cell the sample was taken in."""

# KEYS[1] the profile; ARGV: the patch (JSON, only the fields the update carries), its time,
# its consent time, the key's TTL in seconds (0: none), the subscriber id. Each field's time is
# kept in the profile's "_v" (ignored by readers); a field older than the stored one is skipped.
_MERGE_LUA = """
local current = redis.call('GET', KEYS[1])
local doc = {}
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then doc = decoded end
end
local v = doc['_v']
if type(v) ~= 'table' then v = {} end
local patch = cjson.decode(ARGV[1])
local ts = tonumber(ARGV[2])
local consent_ts = tonumber(ARGV[3])
for field, value in pairs(patch) do
  if field == 'consent' then
    local consent = doc['consent']
    if type(consent) ~= 'table' then consent = {} end
    local cv = v['consent']
    if type(cv) ~= 'table' then cv = {} end
    for channel, status in pairs(value) do
      if (tonumber(cv[channel]) or -1) <= consent_ts then
        consent[channel] = status
        cv[channel] = consent_ts
      end
    end
    doc['consent'] = consent
    v['consent'] = cv
  elseif field == 'consent_updated' then
    if (tonumber(v[field]) or -1) <= consent_ts then
      doc[field] = value
      v[field] = consent_ts
    end
  elseif (tonumber(v[field]) or -1) <= ts then
    doc[field] = value
    v[field] = ts
  end
end
doc['subscriber_id'] = ARGV[5]
doc['_v'] = v
local out = cjson.encode(doc)
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('SET', KEYS[1], out, 'EX', ttl)
else
  redis.call('SET', KEYS[1], out)
end
return out
"""

log = logging.getLogger(__name__)

_UNREAD = object()  # a profile whose Redis (or cluster node) did not answer


@dataclass(frozen=True, slots=True)
class Lookup:
    """A customer's context (``None`` if unknown) and whether it may be out of date."""

    customer: CustomerContext | None
    stale: bool = False


def _by_node(client: RedisCluster, keys: list[str]) -> list[tuple[Any, list[int]]]:
    """The cluster nodes holding ``keys``, each with the indices of its keys (by the client's
    slot map; none without one)."""
    by_node: dict[str, tuple[Any, list[int]]] = {}
    try:
        for i, key in enumerate(keys):
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            by_node.setdefault(node.name, (node, []))[1].append(i)
    except (redis.RedisError, RedisClusterException):  # no slot map to split by
        return []
    return list(by_node.values())


class MergePending(RedisPending[CustomerUpdate]):
    """Some customer updates of a merge were applied and ``pending`` were not: their Redis
    Cluster node did not answer (applying them all again is safe: a merge never lets an older
    update override a newer one)."""

    not_done = "customer updates not applied"


class ContextStore:
    """Batched, cached access to customer context.

    Parameters
    ----------
    client
        A ``redis.Redis``, or a ``RedisCluster``: lookups are then split by hash slot (one
        pipelined ``MGET`` per slot), and one that fails is asked again node by node, so a node
        that does not answer leaves only its own profiles stale; writes are pipelined either way.
    ttl_s
        How long a cached answer (including "absent") is trusted at most: each entry expires at
        random between ``1 - jitter`` and 1 times ``ttl_s``, so profiles fetched together (all
        of them, when a process starts) are not all fetched again in the same instant.
    max_entries
        Cache bound; the oldest entries are evicted first.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "cx",
        ttl_s: float = 30.0,
        max_entries: int = 200_000,
        customer_ttl_s: int = 0,
        jitter: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._mget = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._jitter = jitter
        self._random = (rng or random.Random()).random
        self._max = max_entries
        self._customer_ttl_s = customer_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Lookup]] = {}  # id -> (expires, fresh lookup)
        self._merge: Any = None  # the merge script, registered at first use
        self._last_error_log = 0.0

    def ping(self) -> None:
        """Fail with a clear :class:`~cxstream.errors.ServiceError` if Redis cannot be reached."""
        try:
            self._client.ping()
        except redis.RedisError as exc:
            msg = f"cannot reach Redis: {exc}"
            raise ServiceError(msg) from exc

    def key(self, subscriber_id: str) -> str:
        """The Redis key of one profile."""
        return f"{self._prefix}:customer:{subscriber_id}"

    def get_many(self, subscriber_ids: Iterable[str]) -> dict[str, Lookup]:
        """Context for every id, with one ``MGET`` for those not freshly cached."""
        now = self._clock()
        out: dict[str, Lookup] = {}
        missing: list[str] = []
        hits = 0
        for sid in subscriber_ids:
            if sid in out:
                continue
            cached = self._cache.get(sid)
            if cached is not None and cached[0] > now:
                out[sid] = cached[1]
                hits += 1
            else:
                out[sid] = Lookup(None)  # placeholder, replaced below
                missing.append(sid)
        if hits:
            metrics.ENRICHMENT.labels("hit").inc(hits)
        if missing:
            self._fetch(missing, out, now)
        return out

    def _fetch(self, missing: list[str], out: dict[str, Lookup], now: float) -> None:
        keys = [self.key(sid) for sid in missing]
        try:
            raws: list[Any] = self._mget(keys)
        except redis.RedisError as exc:
            self._log_outage(exc)
            client = self._client
            raws = (
                self._read_by_node(client, keys)
                if isinstance(client, RedisCluster)
                else [_UNREAD] * len(keys)
            )
        unread = 0
        absent = 0
        for sid, raw in zip(missing, raws, strict=True):
            if raw is _UNREAD:  # Redis (or this profile's cluster node) did not answer
                cached = self._cache.get(sid)
                out[sid] = Lookup(cached[1].customer if cached else None, stale=True)
                unread += 1
                continue
            customer = None
            if raw is not None:
                try:
                    customer = CustomerContext.model_validate_json(raw)
                except ValidationError:
                    log.warning(
                        "stored profile of %s does not validate; treated as absent",
                        pseudonym(sid),
                    )
            if customer is None:
                absent += 1
            out[sid] = Lookup(customer)
            self._remember(sid, self._expiry(now), customer)
        if unread:
            metrics.ENRICHMENT.labels("stale").inc(unread)
        if len(missing) > unread + absent:
            metrics.ENRICHMENT.labels("miss").inc(len(missing) - unread - absent)
        if absent:
            metrics.ENRICHMENT.labels("absent").inc(absent)

    def _read_by_node(self, client: RedisCluster, keys: list[str]) -> list[Any]:
        """A Redis Cluster lookup that failed, asked again node by node: the keys of the nodes
        that answer are read, the others are :data:`_UNREAD` (a node that hangs fails at once
        once its breaker is open), so one node down leaves only its own profiles stale."""
        out: list[Any] = [_UNREAD] * len(keys)
        for _, idx in _by_node(client, keys):
            try:
                values = client.mget_nonatomic([keys[i] for i in idx])
            except redis.RedisError:
                continue
            for i, value in zip(idx, values, strict=True):
                out[i] = value
        return out

    def _expiry(self, now: float) -> float:
        return now + self._ttl_s * (1.0 - self._jitter * self._random())

    def _remember(self, sid: str, expires: float, customer: CustomerContext | None) -> None:
        cache = self._cache
        cache.pop(sid, None)
        cache[sid] = (expires, Lookup(customer))
        while len(cache) > self._max:
            del cache[next(iter(cache))]

    def _log_outage(self, exc: Exception) -> None:
        now = self._clock()
        if now - self._last_error_log > 10.0:
            self._last_error_log = now
            log.warning("Redis unreachable, using cached/default context: %s", exc)

    def scan_profiles(self, count: int = 500) -> Iterator[list[tuple[str, CustomerContext]]]:
        """Every stored profile, in chunks of about ``count`` (``SCAN``, so Redis is never
        blocked, then one ``MGET`` per chunk); profiles that do not validate are skipped."""
        pattern = f"{self._prefix}:customer:*"
        strip = len(pattern) - 1
        keys: list[Any] = []
        for key in self._client.scan_iter(match=pattern, count=count):
            keys.append(key)
            if len(keys) >= count:
                yield self._profiles(keys, strip)
                keys = []
        if keys:
            yield self._profiles(keys, strip)

    def _profiles(self, keys: list[Any], strip: int) -> list[tuple[str, CustomerContext]]:
        out = []
        for key, raw in zip(keys, self._mget(keys), strict=True):
            if raw is None:  # deleted since the scan saw it
                continue
            try:
                customer = CustomerContext.model_validate_json(raw)
            except ValidationError:
                continue
            name = key.decode() if isinstance(key, bytes) else str(key)
            out.append((name[strip:], customer))
        return out

    def history_key(self, subscriber_id: str) -> str:
        """The Redis key of one subscriber's experience history."""
        return f"{self._prefix}:history:{subscriber_id}"

    def recent_history_key(self, subscriber_id: str) -> str:
        """The Redis key of one subscriber's recent, fine-grained experience history."""
        return f"{self._prefix}:history:recent:{subscriber_id}"

    def append_history(
        self,
        samples: Sequence[HistorySample],
        *,
        keep: int,
        recent_keep: int = 0,
        slot_s: float = 300.0,
        recent_s: float = 300.0,
    ) -> None:
        """Append ``(subscriber, epoch, experience index[, cell])`` samples. With
        ``recent_keep``, each goes to the recent list (its last ``recent_keep`` kept) as
        ``epoch:index:cell``, and the first of each ``slot_s`` slot (the sample within
        ``recent_s`` after the slot began) to the long list (its last ``keep`` kept) as
        ``epoch:index``: where the subscriber was is kept only as long as the recent list (data
        minimisation; 4 kB more a subscriber, where every sample's cell would be 10). Without
        ``recent_keep``, every sample goes to the long list, without its cell. A Redis outage
        loses samples (logged, rate-limited), never the event."""
        pipe = self._client.pipeline(transaction=False)
        for sid, t, value, *cell in samples:
            text = f"{t:.0f}:{value:.1f}"
            if recent_keep:
                recent = self.recent_history_key(sid)
                pipe.rpush(recent, f"{text}:{cell[0]}" if cell and cell[0] else text)
                pipe.ltrim(recent, -recent_keep, -1)
                if t // slot_s == (t - recent_s) // slot_s:
                    continue  # not the first sample of its slot
            key = self.history_key(sid)
            pipe.rpush(key, text)
            pipe.ltrim(key, -keep, -1)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._log_outage(exc)

    def audit(self, event_ids: Sequence[str], key: str, ttl_s: int) -> None:
        """Add processed events (``<subscriber>/<event id>``, so that erasing a customer can find
        theirs) to the reconciliation set ``key`` (one round trip)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(key, *event_ids)
        pipe.expire(key, ttl_s)
        pipe.execute()

    def consent_changes(self, subscriber_id: str) -> dict[str, str]:
        """When each channel's consent was last set (ISO 8601, UTC), from the per-field times
        the merge keeps in the profile; empty when unknown."""
        raw = self._mget([self.key(subscriber_id)])[0]
        try:
            doc = orjson.loads(raw) if raw is not None else {}
        except orjson.JSONDecodeError:
            return {}
        times = (doc.get("_v") or {}).get("consent") if isinstance(doc, dict) else None
        if not isinstance(times, dict):
            return {}
        return {
            str(channel): datetime.fromtimestamp(float(t), UTC).isoformat()
            for channel, t in times.items()
            if isinstance(t, int | float) and 0 <= t < 1e11
        }

    def history(self, subscriber_id: str) -> list[tuple[float, float]]:
        """A subscriber's recorded ``(epoch, experience index)`` samples, oldest first: the long
        list's (one per slot) up to where the recent list's (one a minute) begin."""
        return [(t, value) for t, value, _ in self.samples(subscriber_id)]

    def samples(self, subscriber_id: str) -> list[tuple[float, float, str | None]]:
        """:meth:`history` with the cell each sample was taken in (None where not recorded: the
        long list's). An entry that does not parse is skipped."""

        def parse(key: str) -> list[tuple[float, float, str | None]]:
            out = []
            for raw in self._client.lrange(key, 0, -1):
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                t, _, rest = text.partition(":")
                value, _, cell = rest.partition(":")
                try:
                    out.append((float(t), float(value), cell or None))
                except ValueError:
                    continue
            return out

        coarse = parse(self.history_key(subscriber_id))
        recent = parse(self.recent_history_key(subscriber_id))
        if not recent:
            return coarse
        return [s for s in coarse if s[0] < recent[0][0]] + recent

    def merge_many(self, updates: Sequence[CustomerUpdate], *, now: datetime | None = None) -> None:
        """Apply customer updates atomically in Redis (one script call each, pipelined).

        Only the fields an update carries change; each field keeps the time of the update that
        last set it (the update's ``updated_at``, else ``now``), and an older update never
        overrides a newer one. Consent goes channel by channel, each with its own time (the
        update's ``consent_updated``, else its time). Raises ``redis.RedisError`` if Redis fails;
        on a Redis Cluster whose nodes answer in part, :class:`MergePending` with the updates
        whose node did not answer, the others applied.
        """
        if not updates:
            return
        default_ts = (now or datetime.now(UTC)).timestamp()
        client = self._client
        try:
            merged = list(zip(updates, self._merge_pipelined(updates, default_ts), strict=True))
        except redis.RedisError as exc:
            if not isinstance(client, RedisCluster):
                raise
            merged, pending = self._merge_by_node(client, updates, default_ts)
            self._remember_merged(merged)
            if pending:
                raise MergePending(pending, exc) from exc
            return
        self._remember_merged(merged)

    def _merge_pipelined(
        self, updates: Sequence[CustomerUpdate], default_ts: float, client: Any = None
    ) -> list[Any]:
        if self._merge is None:
            self._merge = self._client.register_script(_MERGE_LUA)
        pipe = (client or self._client).pipeline(transaction=False)
        ttl = str(self._customer_ttl_s or 0)
        for update in updates:
            c = update.customer
            patch = c.model_dump(mode="json", include=set(update.fields))
            ts = c.updated_at.timestamp() if c.updated_at is not None else default_ts
            consent_ts = c.consent_updated.timestamp() if c.consent_updated is not None else ts
            self._merge(
                keys=[self.key(c.subscriber_id)],
                args=[orjson.dumps(patch), repr(ts), repr(consent_ts), ttl, c.subscriber_id],
                client=pipe,
            )
        merged: list[Any] = pipe.execute()
        return merged

    def _merge_by_node(
        self, client: RedisCluster, updates: Sequence[CustomerUpdate], default_ts: float
    ) -> tuple[list[tuple[CustomerUpdate, Any]], list[CustomerUpdate]]:
        """A Redis Cluster merge that failed, done again node by node: the updates of the nodes
        that answer are applied (a consent withdrawn must not wait for another node, while
        lookups on its own node are answered), the others are returned as pending."""
        keys = [self.key(u.customer.subscriber_id) for u in updates]
        groups = _by_node(client, keys)
        merged: list[tuple[CustomerUpdate, Any]] = []
        failed: list[int] = [] if groups else list(range(len(updates)))
        for node, idx in groups:
            group = [updates[i] for i in idx]
            try:
                # the node's own client: a cluster pipeline would first ask every node whether
                # it has the script, the silent one too
                own = client.get_redis_connection(node)
                applied = self._merge_pipelined(group, default_ts, own)
            except (redis.RedisError, RedisClusterException):
                failed += idx
                continue
            merged.extend(zip(group, applied, strict=True))
        return merged, [updates[i] for i in sorted(failed)]

    def _remember_merged(self, merged: list[tuple[CustomerUpdate, Any]]) -> None:
        now_m = self._clock()
        for update, raw in merged:
            sid = update.customer.subscriber_id
            try:
                customer = CustomerContext.model_validate_json(raw)
            except ValidationError:
                log.warning("merged profile of %s does not validate", pseudonym(sid))
                self._cache.pop(sid, None)
                continue
            self._remember(sid, self._expiry(now_m), customer)

    def index_actions(self, actions: Sequence[tuple[str, str]], ttl_s: int) -> None:
        """Record ``(subscriber, action id)`` pairs in each customer's action index, which erasure
        follows to the delivery ledger (:mod:`cxstream.erasure`). Raises ``redis.RedisError``."""
        if not actions:
            return
        pipe = self._client.pipeline(transaction=False)
        for sid, action_id in actions:
            key = action_index_key(self._prefix, sid)
            pipe.sadd(key, action_id)
            pipe.expire(key, ttl_s)
        pipe.execute()

    def mark_resolved(self, incident_ids: Sequence[str], ttl_s: int) -> None:
        """Record that these cell incidents are over (what a deferred area notice is re-checked
        against at release). Raises ``redis.RedisError``."""
        if not incident_ids:
            return
        pipe = self._client.pipeline(transaction=False)
        for incident_id in incident_ids:
            pipe.set(f"{self._prefix}:resolved:{incident_id}", "1", ex=ttl_s)
        pipe.execute()

    def resolved(self, incident_ids: Sequence[str]) -> list[bool]:
        """Whether each incident was recorded as over. Raises ``redis.RedisError``."""
        if not incident_ids:
            return []
        raws = self._mget([f"{self._prefix}:resolved:{i}" for i in incident_ids])
        return [raw is not None for raw in raws]

    def forget(self, subscriber_ids: Iterable[str]) -> None:
        """Drop these customers from the local cache: the next lookup reads Redis."""
        for sid in subscriber_ids:
            self._cache.pop(sid, None)

    def put_many(self, customers: Sequence[CustomerContext]) -> None:
        """Write profiles (one pipeline) and refresh the local cache."""
        if not customers:
            return
        pipe = self._client.pipeline(transaction=False)
        ttl = self._customer_ttl_s or None
        for customer in customers:
            pipe.set(self.key(customer.subscriber_id), customer.model_dump_json(), ex=ttl)
        pipe.execute()
        now = self._clock()
        for customer in customers:
            self._remember(customer.subscriber_id, self._expiry(now), customer)

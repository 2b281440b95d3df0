"""Erase one customer (GDPR art. 17): everything cxstream keeps about them in Redis.

What names a customer in Redis, under the key prefix ``<p>``:

* keys of their own: ``<p>:customer:<id>`` (profile), ``<p>:history:<id>`` and
  ``<p>:history:recent:<id>`` (experience history),
  ``<p>:churn:snap:<id>`` (the churn snapshot awaiting its label), ``<p>:churn:learned:<id>``
  (the snapshot of their last learned outcome), ``<p>:exp:<id>`` (experiment
  group), ``<p>:cooldown:<id>:*`` (contact cooldowns), ``<p>:cap:<id>:*`` (frequency caps) and
  ``<p>:actions:<id>`` (the ids of the actions decided for them);
* the delivery ledger of each of those actions: ``<p>:delivered:<action>`` and
  ``<p>:sending:<action>``;
* members of shared keys: their actions in their household's caps
  (``<p>:household_cap:<account>:*``), their deferred actions (``<p>:deferred``), their
  deliveries waiting for a later round (fields of ``<p>:webhook-rounds:*``), and the
  processing audit's entries (``<subscriber>/<event>`` members of ``flow.audit_key``).

Counters that name nobody (the experiment's group totals, the hourly budget) are kept.
:func:`erase_customer` removes all of the above and says what it removed; running it again finds
nothing left. Records already on Kafka topics age out with the topics' retention; the customers
topic gets a tombstone (``cxstream erase`` publishes it), so a compacted customers topic drops the
profile, and the flow and the dashboard drop the customer from their memory when they read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from cxstream.redis_guard import RedisPending

if TYPE_CHECKING:
    from cxstream.settings import Settings

__all__ = [
    "Eraser",
    "ErasurePending",
    "ErasureReport",
    "action_index_key",
    "deferred_key",
    "erase_customer",
]

_SCAN = 1_000


@dataclass(frozen=True)
class ErasureReport:
    """What :func:`erase_customer` removed."""

    customer: str
    redis_keys_deleted: int
    audit_entries_deleted: int
    members_removed: int  # actions in shared keys (household caps, the deferred queue)


class ErasurePending(RedisPending[str]):
    """Some customers of an erasure were erased from Redis and ``pending`` were not: Redis (or
    their Redis Cluster node, or that of a key they share) did not answer (erasing a customer
    again is safe: it finds nothing left)."""

    not_done = "customers not erased from Redis"


def deferred_key(prefix: str) -> str:
    """The Redis sorted set of the actions deferred by quiet hours."""
    return f"{prefix}:deferred"


def action_index_key(prefix: str, subscriber_id: str) -> str:
    """The Redis set of the action ids decided for one customer (what erasure follows)."""
    return f"{prefix}:actions:{subscriber_id}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Eraser:
    """Erase customers from the two Redis roles: ``state`` (contact state, ledger, churn
    snapshots, experiment, deferred actions) and ``context`` (profiles, histories, the action
    index, the processing audit), the same server unless ``redis.context_url`` splits them."""

    def __init__(
        self,
        state: Any,
        context: Any,
        *,
        prefix: str,
        audit_key: str | None = None,
        deferred_key: str | None = None,
    ) -> None:
        self._state = state
        self._context = context
        self._prefix = prefix
        self._audit_key = audit_key
        self._deferred_key = deferred_key

    @classmethod
    def for_settings(cls, settings: Settings, *, state: Any = None, context: Any = None) -> Eraser:
        """The eraser of a deployment: its key prefix, audit set and deferred queue, on the given
        clients (the configured ones when not given)."""
        from cxstream.clients import context_client, redis_client

        prefix = settings.redis.key_prefix
        return cls(
            state if state is not None else redis_client(settings),
            context if context is not None else context_client(settings),
            prefix=prefix,
            audit_key=settings.flow.audit_key,
            deferred_key=deferred_key(prefix),
        )

    def erase(self, subscriber_id: str) -> ErasureReport:
        """See :func:`erase_customer`."""
        return erase_customer(
            self._state,
            subscriber_id,
            prefix=self._prefix,
            context=self._context,
            audit_key=self._audit_key,
            deferred_key=self._deferred_key,
        )


def erase_customer(
    client: Any,
    subscriber_id: str,
    *,
    prefix: str,
    context: Any = None,
    audit_key: str | None = None,
    deferred_key: str | None = None,
) -> ErasureReport:
    """Remove every Redis key and entry that names ``subscriber_id`` (see the module doc).

    ``client`` holds the contact state, ``context`` (default: the same) the customer context.
    ``subscriber_id`` must be an identifier (:func:`cxstream.events.is_id`): it has none of the
    characters Redis patterns give a meaning to. Raises ``redis.RedisError`` if Redis fails.
    """
    sid = subscriber_id
    ctx = context if context is not None else client
    profile = ctx.get(f"{prefix}:customer:{sid}")
    account: str | None = None
    if profile is not None:
        try:
            account = orjson.loads(profile).get("account_id")
        except (orjson.JSONDecodeError, AttributeError):
            account = None
    action_ids = sorted(_text(a) for a in ctx.smembers(action_index_key(prefix, sid)))
    context_keys = [
        f"{prefix}:customer:{sid}",
        f"{prefix}:history:{sid}",
        f"{prefix}:history:recent:{sid}",
        action_index_key(prefix, sid),
    ]
    state_keys = [
        f"{prefix}:churn:snap:{sid}",
        f"{prefix}:churn:learned:{sid}",
        f"{prefix}:exp:{sid}",
    ]
    for pattern in (f"{prefix}:cooldown:{sid}:*", f"{prefix}:cap:{sid}:*"):
        state_keys += [_text(k) for k in client.scan_iter(match=pattern, count=_SCAN)]
    for action_id in action_ids:
        state_keys += [f"{prefix}:delivered:{action_id}", f"{prefix}:sending:{action_id}"]
    deleted = 0
    # one key at a time: on a cluster the keys live in different slots
    for key in context_keys:
        deleted += int(ctx.delete(key))
    for key in state_keys:
        deleted += int(client.delete(key))
    removed = 0
    if account and action_ids:
        for key in client.scan_iter(match=f"{prefix}:household_cap:{account}:*", count=_SCAN):
            removed += int(client.zrem(key, *action_ids))
    if action_ids:
        for key in client.scan_iter(match=f"{prefix}:webhook-rounds:*", count=_SCAN):
            removed += int(client.hdel(key, *action_ids))
    if deferred_key is not None:
        mine = []
        for member, _ in client.zscan_iter(deferred_key, count=_SCAN):
            try:
                if orjson.loads(member).get("subscriber_id") == sid:
                    mine.append(member)
            except (orjson.JSONDecodeError, AttributeError):
                continue
        if mine:
            removed += int(client.zrem(deferred_key, *mine))
    audited = 0
    if audit_key is not None:
        entries = list(ctx.sscan_iter(audit_key, match=f"{sid}/*", count=_SCAN))
        for start in range(0, len(entries), _SCAN):
            audited += int(ctx.srem(audit_key, *entries[start : start + _SCAN]))
    return ErasureReport(sid, deleted, audited, removed)

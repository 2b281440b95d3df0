"""Where webhook deliveries waiting for a later round are kept, so a retry schedule of hours
survives a restart even without Bytewax recovery, and a new process picks them up.

Each delivery partition of the flow owns one Redis hash, ``{prefix}:webhook-rounds:{partition}``:
field = action id, value = the action (JSON), its next round and when it is due (epoch seconds).
An entry is written when a round fails and the next is scheduled, and removed when the action is
delivered or dead-lettered. On start the partition re-queues what its hash holds (the delivery
ledger skips anything that did get through, so nothing is sent twice). Entries are data only:
each is validated as an :class:`~cxstream.events.Action`; one that is not is logged and dropped.

A hash whose partition no longer exists (``webhook.partitions`` lowered) is adopted: on start
each partition moves into its own hash the entries that fall to it (``crc32(action id)`` modulo
the partitions; :meth:`RedisRetryStore.adopt`), so no partition takes one twice and none is left
behind.

Redis errors never stop a delivery: they are logged, and the flow's own recovery snapshot still
carries the waiting rounds.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Protocol

import orjson
import pydantic
import redis

from cxstream.events import Action

__all__ = ["MemoryRetryStore", "RedisRetryStore", "RetryStore", "owner", "retry_key"]

log = logging.getLogger(__name__)

Waiting = tuple[Action, int, float]  # the action, its next round, when it is due (epoch s)


def retry_key(prefix: str, partition: str) -> str:
    """The Redis hash of one delivery partition's waiting rounds."""
    return f"{prefix}:webhook-rounds:{partition}"


def owner(action_id: str, partitions: int) -> int:
    """The partition (an index below ``partitions``) that adopts an orphaned entry: the same
    answer in every process."""
    return zlib.crc32(action_id.encode()) % partitions


class RetryStore(Protocol):
    """The waiting rounds of one delivery partition."""

    def put(self, action: Action, round_: int, due: float) -> None: ...

    def remove(self, action_id: str) -> None: ...

    def load(self) -> list[Waiting]: ...


def _encode(action: Action, round_: int, due: float) -> bytes:
    return orjson.dumps({"action": action.model_dump(mode="json"), "round": round_, "due": due})


def _decode(raw: bytes | str) -> Waiting:
    item = orjson.loads(raw)
    round_, due = item["round"], item["due"]
    if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 0:
        msg = f"bad round {round_!r}"
        raise ValueError(msg)
    if not isinstance(due, int | float) or isinstance(due, bool):
        msg = f"bad due time {due!r}"
        raise ValueError(msg)
    return Action.model_validate(item["action"]), round_, float(due)


class RedisRetryStore:
    """:class:`RetryStore` on one Redis hash (see the module doc)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key

    def put(self, action: Action, round_: int, due: float) -> None:
        try:
            self._client.hset(self.key, action.action_id, _encode(action, round_, due))
        except redis.RedisError as exc:
            log.warning("could not keep the next delivery round in Redis: %s", exc)

    def remove(self, action_id: str) -> None:
        try:
            self._client.hdel(self.key, action_id)
        except redis.RedisError as exc:
            log.warning("could not remove a finished delivery's round from Redis: %s", exc)

    def load(self) -> list[Waiting]:
        try:
            entries = self._client.hgetall(self.key)
        except redis.RedisError as exc:
            log.warning("could not read the waiting delivery rounds from Redis: %s", exc)
            return []
        waiting: list[Waiting] = []
        for field, raw in entries.items():
            try:
                waiting.append(_decode(raw))
            except (
                orjson.JSONDecodeError,
                KeyError,
                TypeError,
                ValueError,
                pydantic.ValidationError,
            ):
                log.error("dropping an unreadable waiting delivery %r in %s", field, self.key)
                self.remove(field.decode() if isinstance(field, bytes) else str(field))
        return waiting

    def adopt(self, prefix: str, partition: str, partitions: Sequence[str]) -> int:
        """Move into this store (``partition``'s) its share of the entries kept under a
        partition that is not in ``partitions`` (the delivery partitions now) any more; the
        number moved. Each entry goes to ``partitions[owner(action_id, len(partitions))]``."""
        if partition not in partitions:
            return 0
        me = partitions.index(partition)
        live = {retry_key(prefix, p) for p in partitions}
        moved = 0
        try:
            for raw_key in self._client.scan_iter(match=retry_key(prefix, "*"), count=1_000):
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                if key in live:
                    continue
                for field, raw in self._client.hgetall(key).items():
                    action_id = field.decode() if isinstance(field, bytes) else str(field)
                    if owner(action_id, len(partitions)) != me:
                        continue
                    self._client.hsetnx(self.key, action_id, raw)
                    self._client.hdel(key, action_id)
                    moved += 1
        except redis.RedisError as exc:
            log.warning("could not adopt the waiting rounds of removed partitions: %s", exc)
        if moved:
            log.info("adopted %d waiting deliveries of removed partitions into %s", moved, self.key)
        return moved


class MemoryRetryStore:
    """:class:`RetryStore` in memory (tests; a process that must not touch Redis)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def put(self, action: Action, round_: int, due: float) -> None:
        self.entries[action.action_id] = _encode(action, round_, due)

    def remove(self, action_id: str) -> None:
        self.entries.pop(action_id, None)

    def load(self) -> list[Waiting]:
        return [_decode(raw) for raw in self.entries.values()]

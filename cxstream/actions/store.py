"""Claims in Redis: the delivered-action ledger of the webhook sink, one round trip per batch.

A *claim* is ``SET key value NX GET EX ttl``: it succeeds (returns ``None``) when nobody holds the key,
and otherwise returns the value already there. Cooldowns, caps and budgets live in
:mod:`cxstream.actions.ledger`, which checks them atomically in one Lua script per contact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import redis

__all__ = ["ClaimStore", "MemoryClaimStore", "RedisClaimStore"]


class ClaimStore(Protocol):
    """Where cooldowns and delivery marks are kept."""

    def claim_many(self, claims: Sequence[tuple[str, str]], ttl_s: int) -> list[str | None]:
        """Claim each ``(key, value)``; ``None`` where claimed now, else the current holder."""

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key is held."""


class RedisClaimStore:
    """:class:`ClaimStore` on Redis (pipelined, non-transactional)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def claim_many(self, claims: Sequence[tuple[str, str]], ttl_s: int) -> list[str | None]:
        if not claims:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key, value in claims:
            pipe.set(key, value, nx=True, get=True, ex=ttl_s)
        return [None if old is None else _text(old) for old in pipe.execute()]

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [bool(n) for n in pipe.execute()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MemoryClaimStore:
    """:class:`ClaimStore` in a dict, with expiry; for tests and single-process tools."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> str | None:
        held = self._held.get(key)
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def claim_many(self, claims: Sequence[tuple[str, str]], ttl_s: int) -> list[str | None]:
        out: list[str | None] = []
        for key, value in claims:
            current = self._live(key)
            if current is None:
                self._held[key] = (value, self._clock() + ttl_s)
            out.append(current)
        return out

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return [self._live(key) is not None for key in keys]

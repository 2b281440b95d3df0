"""Where Bytewax puts a state key, and shard keys that spread evenly over the workers.

Bytewax 0.21 sends the items of a keyed step to worker ``h % workers``, where ``h`` is Rust's
``DefaultHasher`` (SipHash-1-3, zero keys) over the key's UTF-8 bytes and a 0xFF terminator.
With a few dozen keys that is uneven: the default 16 shards named ``"0"`` to ``"15"`` go 10 and
6 to two workers (one process demarcates 5/8 of the events) and 2, 4, 4 and 6 to four. On two
processes the effect on throughput is within a small machine's run-to-run noise
(docs/performance.md); with four workers one of them would get three times the cell shards of another.

:func:`shard_keys` names shard ``i`` so that it lands on worker ``i % workers`` for every
cluster size that divides :data:`SPREAD` (1 to 8, 10, 12, 14, 15, 16, 20, 24 ... workers). The
names do not depend on the cluster size, so a cluster scaled in or out finds each shard's
snapshot under the same name. ``tests/unit/flows/test_routing.py`` checks the prediction against
Bytewax itself; if a later Bytewax hashed differently, only the balance would suffer, never the
results.
"""

from __future__ import annotations

from functools import cache

__all__ = ["SPREAD", "shard_keys", "worker_of"]

# lcm(1..8, 16): the cluster sizes that shard_keys spreads exactly
SPREAD = 1680
# above this many shards, hashing alone spreads them well enough, and the search (about 10 ms a
# shard) would slow the start-up: shard i is then named str(i)
MAX_BALANCED = 64

_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def _siphash13(data: bytes) -> int:
    """SipHash-1-3 with a zero key, as Rust's ``DefaultHasher``."""
    v0 = 0x736F6D6570736575
    v1 = 0x646F72616E646F6D
    v2 = 0x6C7967656E657261
    v3 = 0x7465646279746573

    def rounds(v0: int, v1: int, v2: int, v3: int, n: int) -> tuple[int, int, int, int]:
        for _ in range(n):
            v0 = (v0 + v1) & _M
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 1)
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 1)
    v0 ^= last
    v2 ^= 0xFF
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The index of the worker that Bytewax 0.21 gives a state key in a cluster of ``workers``."""
    return _siphash13(key.encode() + b"\xff") % workers


@cache
def shard_keys(shards: int) -> tuple[str, ...]:
    """The state key of each shard: ``"i"``, or ``"i.j"`` with the smallest ``j`` that puts it on
    worker ``i % workers`` (see the module docstring). Deterministic: every process of a cluster
    computes the same names."""
    if shards > MAX_BALANCED:
        return tuple(str(i) for i in range(shards))
    keys = []
    for i in range(shards):
        key, j = str(i), 0
        while worker_of(key, SPREAD) != i % SPREAD:
            j += 1
            key = f"{i}.{j}"
        keys.append(key)
    return tuple(keys)

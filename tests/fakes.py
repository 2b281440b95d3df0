"""Small in-memory stand-ins for unit tests (no sockets)."""

from __future__ import annotations

import redis


class FakeRedis:
    """The few Redis calls ContextStore makes: mget, pipeline().set/rpush/ltrim/sadd/execute,
    ping; can go down."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.down = False
        self.mget_calls = 0
        self.lists: dict[str, list[bytes]] = {}
        self.sets: dict[str, set[bytes]] = {}

    def _check(self):
        if self.down:
            raise redis.ConnectionError("Connection refused")

    def ping(self):
        self._check()
        return True

    def mget(self, keys):
        self._check()
        self.mget_calls += 1
        return [self.data.get(k) for k in keys]

    def pipeline(self, transaction=False):
        return _Pipe(self)

    def lrange(self, key, start, end):
        self._check()
        items = self.lists.get(key, [])
        return items[start:] if end == -1 else items[start : end + 1]


class _Pipe:
    def __init__(self, owner):
        self.owner = owner
        self.ops = []

    def set(self, key, value, ex=None):
        self.ops.append(("set", key, value))

    def rpush(self, key, value):
        self.ops.append(("rpush", key, value))

    def ltrim(self, key, start, end):
        self.ops.append(("ltrim", key, start))

    def sadd(self, key, value):
        self.ops.append(("sadd", key, value))

    def expire(self, key, seconds):
        self.ops.append(("expire", key, seconds))

    def execute(self):
        self.owner._check()
        for op, key, value in self.ops:
            if op == "set":
                self.owner.data[key] = value.encode() if isinstance(value, str) else value
            elif op == "rpush":
                self.owner.lists.setdefault(key, []).append(value.encode())
            elif op == "sadd":
                self.owner.sets.setdefault(key, set()).add(value.encode())
            elif op == "expire":
                pass
            else:  # ltrim(key, -keep, -1)
                self.owner.lists[key] = self.owner.lists.get(key, [])[value:]
        return [True] * len(self.ops)

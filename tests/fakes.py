"""Small in-memory stand-ins for unit tests (no sockets)."""

from __future__ import annotations

import redis


class FakeRedis:
    """The few Redis calls ContextStore makes: mget, pipeline().set/execute, ping; can go down."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.down = False
        self.mget_calls = 0

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


class _Pipe:
    def __init__(self, owner):
        self.owner = owner
        self.ops = []

    def set(self, key, value, ex=None):
        self.ops.append((key, value))

    def execute(self):
        self.owner._check()
        for key, value in self.ops:
            self.owner.data[key] = value.encode() if isinstance(value, str) else value
        return [True] * len(self.ops)

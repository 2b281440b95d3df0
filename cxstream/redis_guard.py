"""Fail Redis calls at once while the server does not answer, instead of waiting on each.

A Redis server that is stopped refuses connections at once, but one that hangs (frozen, overloaded,
behind a network partition that drops packets) lets every call wait its socket timeout, and
redis-py's default retries wait that ten times over: about 26 s a call with the default 2 s
timeout. The flow makes several calls a batch, so it would stand still for as long as Redis
hangs, although it is built to go on without Redis (cached context marked stale, outreach held back and decided
again later).

:class:`RedisBreaker` is shared by every connection to one server in a process. After a timeout,
or a connection that could not be made, calls fail at once (``redis.ConnectionError``, which
every caller already handles as Redis being down) for a second; then one call, in one thread, tries
the server again; each failed try doubles the wait, up to 8 s. So while Redis hangs the flow loses
at most one socket timeout in every 8 s, and a server that is back is noticed within 8 s. Any
reply, an error reply too, closes the breaker. A connection reset on an idle pooled connection
(a restarted server) does not open it: redis-py reconnects once, and only if that fails is the
server taken as down.

A Redis Cluster client (:class:`GuardedCluster`, :func:`guarded_cluster_options`) has a breaker
per node, keyed by the node's own address, and retries a command twice instead of redis-py's ten
times (each of which would wait a socket timeout on a frozen node again).

>>> t = [0.0]
>>> b = RedisBreaker(clock=lambda: t[0])
>>> b.failed(); b.open
True
>>> t[0] = 1.0; b.check()  # a second later: this call tries the server again
>>> b.failed(); b.wait_s  # it timed out too: the next try in 2 s
2.0
>>> b.answered(); b.open
False
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from cxstream.breaker import CircuitBreaker
from cxstream.errors import ServiceError
from cxstream.metrics import REDIS_UNANSWERED

__all__ = [
    "CLUSTER_RETRIES",
    "GuardedCluster",
    "RedisBreaker",
    "RedisClusterUnanswered",
    "RedisPending",
    "RedisUnanswered",
    "guarded_cluster_options",
    "guarded_connection_options",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FIRST_WAIT_S = 1.0
MAX_WAIT_S = 8.0


class RedisUnanswered(ServiceError, redis.ConnectionError):
    """Raised at once, without a network call, while the server is taken as down (a
    ``redis.ConnectionError``, so callers handle it as any outage)."""


class RedisPending(ServiceError, redis.ConnectionError, Generic[_T]):
    """Part of a batch was done and ``pending`` was not: Redis, or the Redis Cluster node of
    those items, did not answer. A ``redis.ConnectionError``, so a caller that does not look at
    ``pending`` takes the whole batch as failed (doing it all again must then be safe).
    ``not_done`` says what was not done, for the message."""

    not_done = "items not done"

    def __init__(self, pending: list[_T], cause: Exception) -> None:
        super().__init__(f"{len(pending)} {self.not_done}: {cause}")
        self.pending = pending


class RedisClusterUnanswered(ServiceError, redis.ConnectionError):
    """A Redis Cluster command failed at the cluster's level (no node could be reached, a slot no
    node serves): redis-py raises those as ``RedisClusterException``, which is not a
    ``redis.RedisError``; this one is, so callers handle it as any outage."""


class RedisBreaker(CircuitBreaker):
    """Whether calls to one Redis server may go out now (see the module's docstring): a
    :class:`~cxstream.breaker.CircuitBreaker` that opens at the first failure, whose trial is a
    thread's (its connect and its command both go out), logged and counted in
    ``cxstream_redis_unanswered``."""

    def __init__(
        self,
        first_wait_s: float = FIRST_WAIT_S,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        super().__init__(
            1,
            first_wait_s,
            clock,
            max_reset_s=max_wait_s,
            trial_per_thread=True,
            on_open=self._opened,
            on_close=self._closed,
        )
        self.name = name

    def check(self) -> None:
        """Return if a call may go out now; else raise :class:`RedisUnanswered`."""
        if not self.allow():
            msg = (
                f"{self.name} did not answer; calls fail at once, "
                f"next try in {self.retry_in():.1f} s"
            )
            raise RedisUnanswered(msg)

    def failed(self) -> None:
        """A call timed out, or no connection could be made: take the server as down."""
        self.record(False)

    def answered(self) -> None:
        """The server replied: calls go out again."""
        self.record(True)

    def _opened(self, _failures: int) -> None:
        REDIS_UNANSWERED.inc()
        log.warning(
            "%s does not answer: its calls fail at once, tried again after %.0f s, "
            "then at most every %.0f s",
            self.name,
            self.reset_s,
            self.max_reset_s,
        )

    def _closed(self) -> None:
        REDIS_UNANSWERED.dec()
        log.info("%s answers again", self.name)


class _Guarded:
    """Mixed into a redis-py connection class: every connect and command asks the breaker."""

    breaker: RedisBreaker

    def _guard(self) -> RedisBreaker:
        return self.breaker

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        self._guard().check()
        try:
            super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except RedisUnanswered:
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            self._guard().failed()
            raise

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._guard().check()
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except redis.TimeoutError:
            self._guard().failed()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.TimeoutError:
            self._guard().failed()
            raise
        except redis.ResponseError:
            self._guard().answered()
            raise
        self._guard().answered()
        return response


class _GuardedNode(_Guarded):
    """A connection guarded by the breaker of the server it connects to (its own host and
    port): a Redis Cluster client makes one connection pool per node from one connection
    class, and a node that hangs must not take the others down with it."""

    scheme: str
    host: str
    port: int

    def _guard(self) -> RedisBreaker:
        breaker: RedisBreaker | None = self.__dict__.get("_node_breaker")
        if breaker is None:
            breaker = self.__dict__["_node_breaker"] = _breaker(
                f"{self.scheme}://{self.host}:{self.port}"
            )
        return breaker


_BASES: dict[str, type[Connection]] = {
    "redis": Connection,
    "rediss": SSLConnection,
    "unix": UnixDomainSocketConnection,  # type: ignore[dict-item]
}
_breakers: dict[str, RedisBreaker] = {}
_breakers_lock = threading.Lock()


def guarded_connection_options(url: str) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url(url, ...)``: a connection class guarded by
    the breaker of the server ``url`` names (shared in this process; a new client starts it
    closed), and one retry without backoff (a reconnect after an idle connection was reset),
    instead of redis-py's ten."""
    scheme, _, rest = url.partition("://")
    base = _BASES.get(scheme.lower(), Connection)
    server = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0] or rest
    breaker = _breaker(f"{scheme}://{server}")
    breaker.answered()
    guarded = type(f"Guarded{base.__name__}", (_Guarded, base), {"breaker": breaker})
    return {"connection_class": guarded, "retry": Retry(NoBackoff(), 1)}


CLUSTER_RETRIES = 2
"""A Redis Cluster client's retries of a command, each after a topology refresh (enough for a
slot that moved, or a replica promoted, to be found), instead of redis-py's ten with backoff."""


def guarded_cluster_options(url: str) -> dict[str, Any]:
    """Keyword arguments for ``RedisCluster.from_url(url, ...)``: every node's connections
    guarded by that node's breaker, and :data:`CLUSTER_RETRIES` retries without backoff. Without
    them one frozen node held a lookup of keys spread over the cluster for more than five
    minutes: each of redis-py's retries waited a socket timeout on it again."""
    scheme = url.partition("://")[0].lower()
    base = _BASES.get(scheme, Connection)
    guarded = type(f"GuardedNode{base.__name__}", (_GuardedNode, base), {"scheme": scheme})
    return {"connection_class": guarded, "retry": Retry(NoBackoff(), CLUSTER_RETRIES)}


class GuardedCluster(RedisCluster):
    """A Redis Cluster client whose cluster-level failures are :class:`RedisClusterUnanswered`
    (a ``redis.ConnectionError``), its pipelines' too: with every node down, redis-py raised
    ``RedisClusterUnreachableError``, which no ``except redis.RedisError`` catches. Build it with
    :func:`guarded_cluster_options`."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisClusterException as exc:
            raise RedisClusterUnanswered(str(exc)) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        execute = pipe.execute

        def translated(*args: Any, **kwargs: Any) -> Any:
            try:
                return execute(*args, **kwargs)
            except RedisClusterException as exc:
                raise RedisClusterUnanswered(str(exc)) from exc

        pipe.execute = translated
        return pipe


def _breaker(where: str) -> RedisBreaker:
    """The breaker of the server at ``where`` (scheme://host:port), shared in this process."""
    with _breakers_lock:
        breaker = _breakers.get(where)
        if breaker is None:
            breaker = _breakers[where] = RedisBreaker(name=f"Redis at {where}")
        return breaker

"""A Redis that hangs: its calls fail at once after the first timeout, and go out again once it
answers; a Redis restarted under an idle pooled connection is reconnected without an error."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from cxstream.clients import redis_client
from cxstream.devtools.services import EmbeddedRedis
from cxstream.redis_guard import RedisBreaker, RedisUnanswered
from cxstream.settings import Settings

pytestmark = pytest.mark.integration


def client_of(server: EmbeddedRedis, timeout_s: float = 0.3) -> redis.Redis:
    s = Settings()
    r = s.redis.model_copy(update={"url": SecretStr(server.url), "socket_timeout_s": timeout_s})
    return redis_client(s.model_copy(update={"redis": r}))


@pytest.fixture
def server():
    srv = EmbeddedRedis().start()
    yield srv
    os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop()


def test_a_frozen_redis_fails_each_call_at_once_after_the_first_and_is_used_again_when_back(
    server,
):
    client, other = client_of(server), client_of(server)  # e.g. the context's and the state's
    client.set("k", "v")
    down = REGISTRY.get_sample_value("cxstream_redis_unanswered")
    os.kill(server.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    with pytest.raises(redis.RedisError):
        client.get("k")  # waits its socket timeout once
    assert REGISTRY.get_sample_value("cxstream_redis_unanswered") == down + 1  # for the SREs
    for _ in range(50):  # then the calls fail without touching the network
        with pytest.raises(RedisUnanswered):
            client.get("k")
    with pytest.raises(RedisUnanswered):  # clients of one server share what is known of it
        other.mget(["k"])
    os.kill(server.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while True:  # tried again after a second, then at most every 8 s
        try:
            assert client.get("k") == b"v"
            break
        except redis.RedisError:
            assert time.monotonic() < deadline, "the Redis that is back was never tried again"
            time.sleep(0.2)
    assert client.get("k") == b"v"
    assert REGISTRY.get_sample_value("cxstream_redis_unanswered") == down
    with client.pipeline() as pipe:
        assert pipe.get("k").set("k2", "w").execute() == [b"v", True]


def test_a_restarted_redis_is_reconnected_without_an_error(server):
    # an idle pooled connection was reset by the restart: one reconnect, the server is not taken
    # as down
    client = client_of(server)
    client.set("k", "v")
    server.halt()
    server.start()  # the same port
    assert client.get("k") is None  # answered: the data went with the server, no error
    assert client.set("k", "w")


def test_one_thread_tries_the_server_again_while_the_others_fail_at_once():
    import threading

    t = [0.0]
    breaker = RedisBreaker(first_wait_s=1.0, max_wait_s=8.0, clock=lambda: t[0])
    breaker.failed()
    with pytest.raises(RedisUnanswered):
        breaker.check()
    t[0] = 1.0
    breaker.check()  # this thread tries it
    breaker.check()  # and its connect and command both go out
    refused = []

    def other():
        try:
            breaker.check()
        except RedisUnanswered:
            refused.append(True)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert refused == [True]
    waits = []
    for _ in range(5):  # each failed try doubles the wait, up to 8 s
        breaker.failed()
        waits.append(breaker.wait_s)
        t[0] += breaker.wait_s
        breaker.check()
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]
    breaker.answered()
    assert not breaker.open and breaker.wait_s == 1.0

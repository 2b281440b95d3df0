"""The demo's producer: after its broker was replaced, the events of that while are sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from cxstream.devtools.producer import produce_backlog
from cxstream.devtools.simulate import Simulator


class _Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **_: object) -> None:
        self.sent.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_a_backlog_fills_the_span_it_was_away_at_the_paced_rate_and_no_more():
    since = datetime(2026, 5, 4, 18, tzinfo=UTC)  # the busy hour: the full rate
    until = since + timedelta(seconds=30)
    out = _Producer()
    n = produce_backlog(out, "cx.qos", Simulator(200, 10, seed=3), rate=100.0, since=since, until=until)  # fmt: skip
    times = [datetime.fromisoformat(orjson.loads(v)["event_time"]) for v in out.sent]
    assert n == len(times) and 2_500 < n < 3_500  # 100 a second for 30 s
    assert times == sorted(times) and since <= times[0] and times[-1] < until
    # no second of the span left without events: the cells see no hole in the stream
    assert {int((t - since).total_seconds()) for t in times} == set(range(30))

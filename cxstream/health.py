"""Whether a flow keeps up with its input: ``ok``, ``lagging`` or ``stalled``.

A flow that reads a backlog has a large lag that shrinks; a flow that cannot keep up has a lag that
grows while input keeps arriving; a stalled flow processes nothing while events wait. Only the
last two are worth waking someone for. :class:`LagWatch` tells them apart from two running
figures, the lag (events waiting) and the count of events done (processed or dead-lettered),
sampled now and then; ``cxstream run`` and ``cxstream demo`` feed it, log each change of state,
and export it as the ``cxstream_flow_health`` metric and on the dashboard.

>>> watch = LagWatch(after_s=60, min_lag=100)
>>> [watch.update(t, lag=500 + 10 * t, done=1000 * t).value for t in (0, 30, 60, 90)]
['ok', 'ok', 'lagging', 'lagging']
>>> watch.update(120, lag=0, done=121_000).value  # caught up
'ok'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import REGISTRY

__all__ = [
    "HEARTBEAT",
    "FlowHealth",
    "HealthMonitor",
    "Heartbeat",
    "LagWatch",
    "PartitionWatch",
    "registry_progress",
]

log = logging.getLogger(__name__)


class FlowHealth(StrEnum):
    """How a flow is doing with its input."""

    OK = "ok"
    LAGGING = "lagging"  # the lag grew over the whole window while input arrived
    STALLED = "stalled"  # nothing done over the window: events waited, or the worker never woke


class LagWatch:
    """Judges a flow from samples of its lag and of the events it has done.

    ``after_s``: how long the lag must grow (or nothing be done) before the state changes;
    ``min_lag``: a lag below this many events is never a problem (a poll's worth of jitter).
    Memory is bounded by the samples in one window.
    """

    def __init__(self, after_s: float = 60.0, min_lag: float = 1000.0) -> None:
        self.after_s = after_s
        self.min_lag = min_lag
        self.state = FlowHealth.OK
        self.max_lag = 0.0
        self._samples: deque[tuple[float, float, float]] = deque()

    def restart(self) -> None:
        """Judge from here on only (the largest lag seen is kept): a new flow has started, and
        the backlog it was handed (a broker replaced, a restart) is its first window's to show
        as caught up, or growing."""
        self._samples.clear()

    def update(
        self, now: float, lag: float, done: float, awake_at: float | None = None
    ) -> FlowHealth:
        """Add a sample (seconds, events waiting, events done so far, and when the dataflow's
        worker last woke up, if known); return the state.

        A worker that has not woken up for a whole window, with nothing done, is stalled whatever
        the lag says: the lag is reported by the Kafka consumer as it polls, so a blocked worker's
        stands still at what it was when it stopped, often below ``min_lag``."""
        lag = max(lag, 0.0)
        self.max_lag = max(self.max_lag, lag)
        self._samples.append((now, lag, done))
        # keep exactly one sample at or before the window's start: the reference
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.after_s:
            self._samples.popleft()
        ref_t, ref_lag, ref_done = self._samples[0]
        if now - ref_t < self.after_s:
            return self.state  # not a whole window seen yet
        if awake_at is not None and now - awake_at >= self.after_s and done <= ref_done:
            self.state = FlowHealth.STALLED
        elif lag < self.min_lag:
            self.state = FlowHealth.OK
        elif done <= ref_done:
            self.state = FlowHealth.STALLED
        elif self._grew(now) and done + lag > ref_done + ref_lag:  # input arriving
            self.state = FlowHealth.LAGGING
        else:
            self.state = FlowHealth.OK
        return self.state

    def _grew(self, now: float) -> bool:
        """Whether the lag grew over the window, beyond its jitter.

        The lag of a flow that keeps up jumps between polls (a poll's or a producer's burst of
        events waits, then is done at once), so a later sample above an earlier one says nothing.
        It grew when even the smallest lag of the window's last quarter is above the largest of
        its first quarter and at least ``min_lag``; or, slower, when no sample of the whole window
        fell below ``min_lag`` (a lag that only jitters goes back below it) and the last quarter's
        mean is above the first's."""
        quarter = self.after_s / 4
        start = self._samples[0][0]
        early = [lag for t, lag, _ in self._samples if t <= start + quarter]
        late = [lag for t, lag, _ in self._samples if t >= now - quarter]
        if min(late) < self.min_lag:
            return False
        if min(late) > max(early):
            return True
        held = all(lag >= self.min_lag for _, lag, _ in self._samples)
        return held and sum(late) / len(late) > sum(early) / len(early)


class Heartbeat:
    """When the dataflow's worker last woke up: a source it polls at least every second, busy or
    idle, calls :meth:`beat` (``last`` is None in a process whose worker has not, e.g. a worker
    of a cluster that does not run that source)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last: float | None = None

    def beat(self) -> None:
        self.last = self._clock()


HEARTBEAT = Heartbeat()


def registry_progress() -> tuple[float, float]:
    """This process's input lag (``bytewax_kafka_consumer_lag``, summed over its partitions) and
    the events it has done (``cxstream_events_total``: processed and dead-lettered)."""
    lag = done = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "bytewax_kafka_consumer_lag":
                lag += sample.value
            elif sample.name == "cxstream_events_total":
                done += sample.value
    return lag, done


class _Every(threading.Thread):
    """A daemon thread that calls :meth:`tick` every ``interval_s`` until :meth:`stop`."""

    def __init__(self, name: str, interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self._interval_s = interval_s
        self._halt = threading.Event()

    def tick(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self._halt.wait(self._interval_s):
            self.tick()

    def stop(self) -> None:
        self._halt.set()


class HealthMonitor(_Every):
    """Samples ``read()`` every ``interval_s``, keeps a :class:`LagWatch`, logs each change of
    state, and calls ``on_state`` with it (for example, to update a gauge)."""

    def __init__(
        self,
        watch: LagWatch,
        read: Callable[[], tuple[float, float]] = registry_progress,
        on_state: Callable[[FlowHealth], None] | None = None,
        interval_s: float = 5.0,
        awake_at: Callable[[], float | None] = lambda: HEARTBEAT.last,
    ) -> None:
        super().__init__("cxstream-health", interval_s)
        self.watch = watch
        self._read = read
        self._awake_at = awake_at
        self._on_state = on_state

    def tick(self) -> None:
        before = self.watch.state
        lag, done = self._read()
        state = self.watch.update(time.monotonic(), lag, done, self._awake_at())
        if self._on_state is not None:
            self._on_state(state)
        if state is not before:
            say = log.info if state is FlowHealth.OK else log.warning
            say(
                "the flow is %s: %.0f events wait in its input (over the last %.0f s: %s)",
                state.value,
                lag,
                self.watch.after_s,
                _WHY[state],
            )


_WHY = {
    FlowHealth.OK: "keeping up again",
    FlowHealth.LAGGING: "the lag grew while events arrived; it processes less than arrives",
    FlowHealth.STALLED: "no event was processed while events waited, or its worker is blocked",
}


class PartitionWatch(_Every):
    """Every ``interval_s``, compares each input topic's partitions on the broker (``count``)
    with those the flow read at its start (``read``): partitions added since are not read
    until every process of the flow restarts (Bytewax lists a source's partitions once). Calls
    ``on_unread(topic, n)`` for every topic, and logs a warning when ``n`` grows. A broker that
    cannot be asked is skipped until the next check (the lag and silence figures tell of it).

    >>> watch = PartitionWatch(lambda: {"cx.qos": 8}, lambda topic: 12)
    >>> watch.check()
    {'cx.qos': 4}
    """

    def __init__(
        self,
        read: Callable[[], dict[str, int]],
        count: Callable[[str], int],
        on_unread: Callable[[str, int], None] | None = None,
        interval_s: float = 60.0,
    ) -> None:
        super().__init__("cxstream-partitions", interval_s)
        self._read = read
        self._count = count
        self._on_unread = on_unread
        self._said: dict[str, int] = {}

    def check(self) -> dict[str, int]:
        """The partitions of each input topic that the flow does not read."""
        unread: dict[str, int] = {}
        for topic, read in self._read().items():
            try:
                on_broker = self._count(topic)
            except Exception as exc:  # any client error (a topic gone too): asked again later
                log.debug("partitions of %s not counted: %s", topic, exc)
                continue
            unread[topic] = n = max(0, on_broker - read)
            if n > self._said.get(topic, 0):
                log.warning(
                    "Kafka topic %s has %d partitions and this flow reads %d, those it had at "
                    "its start: restart every process of the flow to read the %d new ones "
                    "(their records wait on the broker)",
                    topic,
                    on_broker,
                    read,
                    n,
                )
            self._said[topic] = n
            if self._on_unread is not None:
                self._on_unread(topic, n)
        return unread

    def tick(self) -> None:
        self.check()

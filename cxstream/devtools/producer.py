"""Produce simulated events to Kafka, paced to a rate or as fast as possible."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from confluent_kafka import Producer

from cxstream.clients import produce_waiting
from cxstream.devtools.simulate import Simulator
from cxstream.events import utcnow

__all__ = ["produce_backlog", "produce_events"]


def produce_events(
    producer: Producer,
    topic: str,
    sim: Simulator,
    *,
    rate: float,
    events: int | None = None,
    duration_s: float | None = None,
    start: datetime | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
    floor: float = 0.0,
) -> int:
    """Produce until ``events`` are sent, ``duration_s`` of event time passed, or ``stop`` is set.

    With ``rate > 0`` production is paced to the wall clock and event times are "now"; with
    ``rate <= 0`` events are produced as fast as possible with event times one millisecond apart
    from ``start`` (a compressed clock). A paced rate is the busiest hour's, and the day's curve
    lowers it at quieter hours, never below ``floor`` of it
    (:func:`~cxstream.devtools.simulate.load_factor`). Returns the number of records produced
    (all flushed).
    """
    paced = rate > 0
    begin = start or utcnow()
    timeline = sim.timeline(begin, rate, floor=floor) if paced else sim.timeline(begin, 1000.0)
    end = begin + timedelta(seconds=duration_s) if duration_s is not None else None
    wall0 = time.monotonic()
    produced = 0
    last_report = wall0
    for t in timeline:
        if events is not None and produced >= events:
            break
        if end is not None and t >= end:
            break
        if stop is not None and stop.is_set():
            break
        if paced:
            ahead = (t - begin).total_seconds() - (time.monotonic() - wall0)
            if ahead > 0.005:
                producer.poll(0)
                time.sleep(ahead)
        key, value = sim.encoded(t)
        produce_waiting(producer, topic, value, key)
        produced += 1
        if produced % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if on_progress is not None and now - last_report >= 0.5:
                last_report = now
                on_progress(produced)
    producer.flush(30)
    if on_progress is not None:
        on_progress(produced)
    return produced


def produce_backlog(
    producer: Producer,
    topic: str,
    sim: Simulator,
    *,
    rate: float,
    since: datetime,
    until: datetime,
    floor: float = 0.0,
) -> int:
    """Produce, as fast as the producer takes them, the events of ``[since, until)`` at the
    times a paced run would have given them (``rate`` and ``floor`` as in
    :func:`produce_events`): what probes measured while their broker was away, sent once it is
    back, as network collectors buffer and resend. Returns the number produced (all flushed).
    """
    produced = 0
    for t in sim.timeline(since, rate, floor=floor):
        if t >= until:
            break
        key, value = sim.encoded(t)
        produce_waiting(producer, topic, value, key)
        produced += 1
        if produced % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return produced

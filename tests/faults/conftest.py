"""Fault-suite helpers: a flow child process on the session broker, and counters from its metrics."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Producer

from cxstream.context import ContextStore
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Channel, ConsentStatus, utcnow
from cxstream.settings import Settings
from tests.integration.kafka_helpers import read_topic

SECRET = "whsec_" + base64.b64encode(b"fault-suite-secret-00000").decode()


def daytime_policy(tmp_path: Path) -> Path:
    """The shipped policy without quiet hours and hold-out, so results do not depend on the clock."""
    text = Path("config/policy.yaml").read_text()
    assert 'quiet_hours: {start: "21:00:00", end: "08:00:00"}' in text
    assert "holdout: {share: 0.05" in text
    text = text.replace(
        'quiet_hours: {start: "21:00:00", end: "08:00:00"}',
        'quiet_hours: {start: "00:00:00", end: "00:00:00"}',
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace("holdout: {share: 0.05", "holdout: {share: 0.0"))
    return path


def outage_stream(
    settings: Settings, seed: int, events: int, *, outage_s: tuple[float, float]
) -> tuple[Simulator, ContextStore, list[tuple[bytes | None, bytes]]]:
    """400 subscribers in 8 cells, every one consenting to every channel (profiles written to
    the test's Redis), and ``events`` encoded events from a minute ago on, 500 per second of
    event time, with cell-0003 out from ``outage_s[0]`` to ``outage_s[1]`` seconds in."""
    sim = Simulator(400, 8, seed=seed)
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    store = ContextStore(client, prefix=settings.redis.key_prefix)
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    store.put_many(
        [p.model_copy(update={"consent": granted, "timezone": "UTC"}) for p in sim.profiles()]
    )
    start = utcnow() - timedelta(seconds=60)
    began, ended_s = (start + timedelta(seconds=s) for s in outage_s)
    sim.add_incidents([Incident("cell_outage", "cell-0003", began, ended_s)])
    times = sim.timeline(start, 500, diurnal=False)
    return sim, store, [sim.encoded(next(times)) for _ in range(events)]


def stream_in_real_time(
    settings: Settings,
    sim: Simulator,
    start: datetime,
    rate: float,
    run_s: float,
    before_each: Callable[[float, int], None],
) -> int:
    """Produce the simulator's events to the QoS topic as they happen, ``rate`` a second of event
    time from ``start``, for ``run_s`` seconds of wall time; ``before_each(elapsed_s, sent)`` runs
    before each event (to inject a fault at a moment). Returns how many were sent."""
    producer = Producer(settings.kafka.client_config())
    t0 = time.monotonic()
    sent = 0
    for t in sim.timeline(start, rate, diurnal=False):
        ahead = (t - start).total_seconds() - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
        elapsed = time.monotonic() - t0
        if elapsed >= run_s:
            break
        before_each(elapsed, sent)
        key, value = sim.encoded(t)
        producer.produce(settings.kafka.topics.qos, value=value, key=key)
        sent += 1
        if sent % 200 == 0:
            producer.poll(0)
    producer.flush(30)
    return sent


def freeze_then_thaw(
    pid: int, at_s: float, for_s: float, read: Callable[[], dict[str, float]]
) -> tuple[Callable[[float, int], None], dict[str, tuple[dict[str, float], int]]]:
    """A ``before_each`` for :func:`stream_in_real_time` that freezes process ``pid`` (SIGSTOP:
    it keeps its connections and answers nothing) ``at_s`` seconds in and thaws it ``for_s``
    later, and the marks it leaves: ``frozen`` and ``back``, each ``read()`` (the flow's
    counters) and the events sent at that moment."""
    marks: dict[str, tuple[dict[str, float], int]] = {}

    def before_each(elapsed: float, sent: int) -> None:
        if "frozen" not in marks and elapsed >= at_s:
            marks["frozen"] = (read(), sent)
            os.kill(pid, signal.SIGSTOP)
        if "frozen" in marks and "back" not in marks and elapsed >= at_s + for_s:
            marks["back"] = (read(), sent)
            os.kill(pid, signal.SIGCONT)

    return before_each, marks


def actions_on_topic(settings: Settings) -> dict[str, dict]:
    """The actions on the actions topic, by id."""
    records = read_topic(settings, settings.kafka.topics.actions)
    return {a["action_id"]: a for a in map(orjson.loads, records)}


def parked_actions(settings: Settings) -> dict[str, str]:
    """The actions in the actions dead-letter topic: id -> the error each was parked with."""
    records = read_topic(settings, settings.kafka.topics.actions_dead_letters)
    return {d["action"]["action_id"]: d["error"] or "" for d in map(orjson.loads, records)}


def wait_until(predicate, timeout_s: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


def ended(counters: dict[str, float]) -> float:
    return counters.get("cxstream_events_total{outcome=processed}", 0.0) + counters.get(
        "cxstream_events_total{outcome=dead_letter}", 0.0
    )

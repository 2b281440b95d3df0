"""Plain-consumer probes of the broker, for the benchmark: the ceiling (how fast a consumer that
only parses the events reads them), the latency floor (the broker's own share of the latency at
a paced rate), the paced load generator, and latencies read back from a topic."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from cxstream.clients import produce_waiting
from cxstream.errors import ServiceError
from cxstream.events import utcnow
from cxstream.settings import Settings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "FLOOR_SECONDS",
    "GENERATOR_LINGER_MS",
    "Encoded",
    "action_time",
    "consumer_config",
    "encode_paced",
    "generator_producer",
    "measure_ceiling",
    "measure_latency_floor",
    "read_all",
    "read_latencies",
    "send_paced",
    "summary_time",
]


def consumer_config(settings: Settings) -> dict[str, str]:
    """A plain consumer configured as the dataflow's are, in a throw-away group."""
    return {
        **settings.kafka.client_config(),
        **settings.kafka.consumer_config,
        "group.id": f"cx-bench-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": "false",
    }


def assign_all(consumer: Consumer, topic: str) -> int:
    """Assign every partition of ``topic`` from its beginning (no group join); their number."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return len(partitions)


# The load generator stands in for the probes' mediation layer, which batches. Each produce
# request costs the embedded broker, on the core it shares with Redis and the generator, about
# the same whatever its size: at 20,000 events/s, 5 ms batches kept that core saturated and the
# broker fell behind by seconds. The wait is inside the measured latency (events are stamped
# when handed to the producer).
GENERATOR_LINGER_MS = 20


def generator_producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka.producer_settings(), "linger.ms": str(GENERATOR_LINGER_MS)})


def plain_consumer(settings: Settings, topic: str) -> tuple[Consumer, int]:
    consumer = Consumer({**consumer_config(settings), "enable.partition.eof": "true"})
    return consumer, assign_all(consumer, topic)


def read_all(
    settings: Settings,
    topic: str,
    on_message: Callable[[Message], None],
    enough: Callable[[], bool],
    timeout_s: float,
) -> None:
    """Feed every message of ``topic`` to ``on_message`` until each partition's end (or enough)."""
    consumer, n_partitions = plain_consumer(settings, topic)
    at_end: set[int | None] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not (len(at_end) == n_partitions and enough()):
            for msg in consumer.consume(10_000, 0.5):
                error = msg.error()
                if error is None:
                    on_message(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
    finally:
        consumer.close()


def measure_ceiling(
    settings: Settings, topic: str, expected: int, timeout_s: float = 120, cpu: int | None = None
) -> float:
    """Events/s of a plain consumer that reads and parses ``expected`` events; with ``cpu``, it
    and its librdkafka threads share that one core, as one pinned dataflow process does."""
    if cpu is not None:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})  # this thread, and the threads it starts
        try:
            return measure_ceiling(settings, topic, expected, timeout_s)
        finally:
            os.sched_setaffinity(0, saved)
    loads = orjson.loads
    seen = 0
    start: float | None = None

    def parse(msg: Message) -> None:
        nonlocal seen, start
        if start is None:
            start = time.perf_counter()
        try:  # noqa: SIM105 - suppress() would add a call per message to the ceiling loop
            loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            pass
        seen += 1

    read_all(settings, topic, parse, lambda: seen >= expected, timeout_s)
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return seen / elapsed if elapsed > 0 else 0.0


def read_latencies(
    settings: Settings, topic: str, event_time_s: Callable[[dict[str, Any]], float]
) -> list[float]:
    """Milliseconds from each record's event time (``event_time_s`` of the decoded record) to
    when the flow produced it (the Kafka timestamp)."""
    out: list[float] = []

    def latency(msg: Message) -> None:
        record = orjson.loads(msg.value() or b"{}")
        out.append(msg.timestamp()[1] - event_time_s(record) * 1000.0)

    read_all(settings, topic, latency, lambda: True, 30)
    return out


def action_time(action: dict[str, Any]) -> float:
    """An action's event time: that of the event that caused it."""
    return datetime.fromisoformat(action["event_time"]).timestamp()


def summary_time(stats: dict[str, Any]) -> float:
    """A cell summary's event time: the newest event it covers (its cell's clock), so its
    latency is the hot path's own delay (parse, enrich, detect, demarcate, Kafka out)."""
    return float(stats["at"])


_PLACEHOLDER = "1970-01-01T00:00:00.000000+00:00"
FLOOR_SECONDS = 10.0  # how long the latency floor is measured at the paced rate


Encoded = list[tuple[bytes, bytes, bytes]]


def encode_paced(records: list[dict[str, Any]]) -> Encoded:
    """Each record as key, and its JSON cut around the event time (filled in when sent)."""
    marker = _PLACEHOLDER.encode()
    encoded = []
    for record in records:
        value = orjson.dumps({**record, "event_time": _PLACEHOLDER})
        cut = value.index(marker)
        encoded.append((record["subscriber_id"].encode(), value[:cut], value[cut + len(marker) :]))
    return encoded


def send_paced(
    producer: Producer, topic: str, encoded: Encoded, rate: float, tick: Callable[[], None]
) -> None:
    """Send at ``rate`` events/s in 1 ms ticks, each event stamped with its send time;
    ``tick`` is called about once a second."""
    start = time.monotonic()
    next_check = start
    sent = 0
    total = len(encoded)
    while sent < total:
        now = time.monotonic()
        due = min(total, int((now - start) * rate) + 1)
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f+00:00").encode()
        while sent < due:
            key, head, tail = encoded[sent]
            produce_waiting(producer, topic, head + stamp + tail, key)
            sent += 1
        producer.poll(0)
        if now >= next_check:
            next_check = now + 1.0
            tick()
        time.sleep(0.001)
    producer.flush(60)


def measure_latency_floor(
    settings: Settings,
    topic: str,
    records: list[dict[str, Any]],
    rate: float,
    cpu: int | None = None,
    timeout_s: float = 120,
) -> list[float]:
    """The broker's share of the latency at ``rate``: milliseconds from each event's time to
    its arrival, parsed, at a plain consumer (in a process of its own, on ``cpu`` if given,
    configured as the dataflow's consumers are), while this process sends ``records`` to the
    empty ``topic`` at ``rate``, as the paced benchmark does."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    consumer = ctx.Process(
        target=_floor_consumer,
        args=(consumer_config(settings), topic, len(records), cpu, timeout_s, sender),
    )
    consumer.start()
    try:
        if not receiver.poll(60):
            msg = "the latency-floor consumer did not start"
            raise ServiceError(msg)
        receiver.recv()  # assigned and polling
        send_paced(generator_producer(settings), topic, encode_paced(records), rate, lambda: None)
        latencies: list[float] = receiver.recv() if receiver.poll(timeout_s) else []
    finally:
        consumer.join(10)
        if consumer.is_alive():
            consumer.kill()
    return latencies


def _floor_consumer(
    config: dict[str, Any],
    topic: str,
    expected: int,
    cpu: int | None,
    timeout_s: float,
    out: Connection,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    consumer = Consumer(config)
    assign_all(consumer, topic)
    consumer.consume(1, 0.1)
    out.send("ready")
    loads, parse_time = orjson.loads, datetime.fromisoformat
    latencies: list[float] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(latencies) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.001):  # returns what has arrived
                if msg.error() is None:
                    arrived = time.time()
                    event_time = parse_time(loads(msg.value() or b"{}")["event_time"])
                    latencies.append((arrived - event_time.timestamp()) * 1000.0)
    finally:
        consumer.close()
        out.send(latencies)

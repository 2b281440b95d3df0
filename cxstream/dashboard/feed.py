"""Feed the dashboard state from Kafka (partitions assigned, no consumer-group join)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from cxstream.dashboard.state import DashboardState
from cxstream.settings import Settings

__all__ = ["KafkaFeed"]

log = logging.getLogger(__name__)


class KafkaFeed:
    """A background thread consuming the topics the dashboard shows."""

    def __init__(
        self,
        settings: Settings,
        state: DashboardState,
        *,
        pseudonyms: Callable[[str], str] | None = None,
    ) -> None:
        topics = settings.kafka.topics
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            topics.alerts: state.on_alert,
            topics.alarm_updates: state.on_alarm_update,
            topics.decisions: state.on_decision,
            topics.cells: state.on_cell,
            topics.deliveries: state.on_delivery,
        }
        self._customers = topics.customers  # read for its tombstones (erased customers)
        self._state = state
        self._pseudonyms = pseudonyms  # the customers topic carries real ids; outputs do not
        self._config = {
            **settings.kafka.client_config(),
            "group.id": "cxstream-dashboard",  # not joined: partitions are assigned
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": "100",
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def start(self) -> KafkaFeed:
        """Start consuming from the beginning of each topic."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(5)

    def _customer_record(self, key: bytes | None, value: bytes | None) -> None:
        """A tombstone erases the customer it is keyed by; a later profile creates them again."""
        if key is None:
            return
        sid = key.decode("utf-8", "replace")
        if self._pseudonyms is not None:
            sid = self._pseudonyms(sid)
        if value is None:
            self._state.forget(sid)
        elif sid in self._state.erased:
            self._state.restore(sid)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            parts = []
            for topic in [*self._handlers, self._customers]:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            consumer.assign(parts)
            while not self._stop.is_set():
                for msg in consumer.consume(500, timeout=0.2):
                    value, name = msg.value(), msg.topic()
                    if msg.error() or name is None:
                        continue
                    if name == self._customers:
                        self._customer_record(msg.key(), value)
                        continue
                    if value is None:
                        continue
                    try:
                        self._handlers[name](orjson.loads(value))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        log.warning("dashboard skipped a record on %s: %s", msg.topic(), exc)
        except KafkaException as exc:
            log.error("dashboard feed stopped: %s", exc)
        finally:
            consumer.close()

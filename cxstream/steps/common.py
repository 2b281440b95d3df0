"""What the steps share: the records between them, dead-letter bookkeeping, and a rate-limited
log line for Redis trouble."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from cxstream import metrics
from cxstream.batches import AlarmClear
from cxstream.detectors.cells import CellStats
from cxstream.events import Alert, BadEvent, CellIncident, CustomerContext, RecordKind

__all__ = [
    "Candidate",
    "CellOutput",
    "RedisTrouble",
    "SourceMessage",
    "count_dead_letters",
    "isolating",
    "parse_batch",
    "severity_of",
    "source_error",
]

log = logging.getLogger(__name__)

_R = TypeVar("_R")


class SourceMessage(Protocol):
    """What a Kafka source hands over (Bytewax's ``KafkaSourceMessage`` has these)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def partition(self) -> int | None: ...
    @property
    def offset(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """An alert and the context the policy needs to act on it."""

    alert: Alert
    customer: CustomerContext | None


CellOutput = Candidate | CellIncident | CellStats | AlarmClear
"""What demarcation emits: released individual alerts (maybe explained) and incident changes."""


def source_error(msg: Any, kind: RecordKind) -> BadEvent | None:
    """A dead letter for an error item from the Kafka source (it has ``err`` and ``msg``)."""
    inner = getattr(msg, "msg", None)
    if inner is None or not hasattr(msg, "err"):
        return None
    return BadEvent.of(
        "kafka_error",
        str(msg.err),
        inner.value,
        topic=inner.topic,
        partition=inner.partition,
        offset=inner.offset,
        kind=kind,
    )


def parse_batch(
    messages: Sequence[Any], parse: Callable[..., _R | BadEvent], kind: RecordKind
) -> list[_R | BadEvent]:
    """Validate a batch of side-input messages; consumer errors and bad records become dead
    letters of ``kind`` (counted here)."""
    out: list[_R | BadEvent] = []
    for msg in messages:
        error = source_error(msg, kind)
        out.append(
            error
            if error is not None
            else parse(msg.value, topic=msg.topic, partition=msg.partition, offset=msg.offset)
        )
    count_dead_letters(item for item in out if isinstance(item, BadEvent))
    return out


def isolating(
    step: str, kind: RecordKind, run: Callable[[list[Any]], list[_R]]
) -> Callable[[list[Any]], list[_R | BadEvent]]:
    """``run`` over a batch of source items, with a per-record fallback.

    Should ``run`` raise on a batch, it is run again one message at a time; a message on which it
    still raises becomes a ``step_error`` dead letter naming the step and the exception, with the
    message's bytes. So no record, however malformed, stops the stream or crash-loops a restart.
    ``run`` must be safe to run again on the messages of a batch it failed on (the parse and
    ingest steps keep no state).
    """

    def isolated(items: list[Any]) -> list[_R | BadEvent]:
        try:
            return list(run(items))
        except Exception:
            log.exception("step %s failed on a batch; running it one message at a time", step)
        out: list[_R | BadEvent] = []
        for item in items:
            for message in item.messages() if hasattr(item, "messages") else [item]:
                try:
                    out.extend(run([message]))
                except Exception as exc:
                    log.exception("step %s failed on one message: dead-lettered", step)
                    bad = BadEvent.of(
                        "step_error",
                        f"{step}: {type(exc).__name__}: {exc}",
                        getattr(message, "value", None),
                        topic=getattr(message, "topic", None),
                        partition=getattr(message, "partition", None),
                        offset=getattr(message, "offset", None),
                        kind=kind,
                    )
                    count_dead_letters([bad])
                    out.append(bad)
        return out

    return isolated


_SEVERITY: tuple[tuple[float, Literal["minor", "major", "critical"]], ...] = (
    (0.99, "critical"),
    (0.95, "major"),
    (0.0, "minor"),
)


def severity_of(score: float) -> Literal["minor", "major", "critical"]:
    """Map a detector score to an alert severity."""
    return next(name for bound, name in _SEVERITY if score >= bound)


def count_dead_letters(bad: Iterable[BadEvent]) -> None:
    """Count dead letters by kind and reason (QoS ones also as events that ended)."""
    for item in bad:
        metrics.DEAD_LETTERS.labels(item.kind, item.reason).inc()
        if item.kind == "qos":
            metrics.EVENTS.labels("dead_letter").inc()


class RedisTrouble:
    """Logs a Redis failure at most every ``every_s`` seconds: the per-message effects (stale
    context, suppressed outreach) are counted in metrics; the log says why, now and then."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every_s
        self._clock = clock
        self._last = -math.inf

    def __call__(self, what: str, exc: Exception) -> None:
        now = self._clock()
        if now - self._last > self._every:
            self._last = now
            log.warning(
                "Redis unavailable for the %s (outreach suppressed meanwhile): %s", what, exc
            )

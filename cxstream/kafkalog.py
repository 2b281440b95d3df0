"""librdkafka's own log lines, through Python logging and rate-limited.

Every Kafka client cxstream builds is configured with :data:`KAFKA_LOGGER` (``logger`` in its
settings, see :meth:`cxstream.settings.KafkaSettings.client_config`), so librdkafka's lines reach
the process's logging set-up (logger ``cxstream.kafka``) instead of stderr. An unreachable broker
makes librdkafka report every failed connection attempt, several a second; :class:`RateLimit`
lets the first few lines of each kind through per window and then one line that says how many
were suppressed.

>>> limit = RateLimit(per_window=2, window_s=60.0, clock=lambda: 0.0)
>>> def line(fac):
...     return logging.LogRecord("k", logging.ERROR, "", 0, "%s [%s] %s", (fac, "c#1", "x"), None)
>>> [limit.filter(line("FAIL")) for _ in range(4)]
[True, True, False, False]
>>> limit.filter(line("ERROR"))  # another kind of line has a budget of its own
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["KAFKA_LOGGER", "RateLimit"]


class RateLimit(logging.Filter):
    """At most ``per_window`` records of each kind (level and librdkafka facility) per
    ``window_s`` seconds; the first record let through after a suppression says how many were
    dropped."""

    def __init__(
        self,
        per_window: int = 3,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> (window start, records let through in it, records suppressed since last shown)
        self._seen: dict[tuple[int, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        kind = (record.levelno, str(args[0]) if args else str(record.msg)[:40])
        now = self._clock()
        with self._lock:
            start, shown, dropped = self._seen.get(kind, (now, 0, 0))
            if now - start >= self._window_s:
                start, shown = now, 0
            if shown >= self._per_window:
                self._seen[kind] = (start, shown, dropped + 1)
                return False
            self._seen[kind] = (start, shown + 1, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} similar lines suppressed)"
        return True


KAFKA_LOGGER = logging.getLogger("cxstream.kafka")
KAFKA_LOGGER.addFilter(RateLimit())

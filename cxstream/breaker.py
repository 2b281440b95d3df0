"""A circuit breaker: stop calling a service that keeps failing, and try it again now and then.

One mechanism for the two services the flow calls on every batch and must not wait on when they
fail: the marketing webhook (:mod:`cxstream.actions.webhook`) and Redis
(:mod:`cxstream.redis_guard`).

>>> t = [0.0]
>>> cb = CircuitBreaker(failures=2, reset_s=10, clock=lambda: t[0])
>>> cb.record(False); cb.record(False); cb.allow()
False
>>> t[0] = 11; cb.allow(), cb.allow()  # half-open: one trial call
(True, False)
>>> cb.record(True); cb.allow()
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Stop calling a service after ``failures`` failures in a row; try it again after
    ``reset_s``, and after each trial that fails wait twice as long, up to ``max_reset_s``
    (None: always ``reset_s``). Any success closes it.

    While it is open, exactly one trial goes out at a time: one call (``allow`` is True once),
    or with ``trial_per_thread`` every call of the thread that took the trial (a Redis call is a
    connect and a command) until it reports. A trial that never reports (its caller returned on
    another path) expires after four times the longest wait, so the service is tried again.
    Thread-safe; ``on_open`` and ``on_close`` are called (under its lock) when it opens and
    closes.
    """

    def __init__(
        self,
        failures: int = 5,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_reset_s: float | None = None,
        trial_per_thread: bool = False,
        on_open: Callable[[int], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.max_reset_s = reset_s if max_reset_s is None else max_reset_s
        self.wait_s = reset_s  # the current wait before the next trial
        self._clock = clock
        self._per_thread = trial_per_thread
        self._on_open = on_open
        self._on_close = on_close
        self._lock = threading.Lock()
        self._count = 0
        self._retry_at: float | None = None  # None: closed, calls go out
        self._trial: int | None = None  # the thread holding the trial
        self._trial_until = 0.0

    @property
    def open(self) -> bool:
        """Whether calls are currently refused."""
        return self._retry_at is not None

    def retry_in(self) -> float:
        """Seconds until the next trial may go out (0 when closed or due)."""
        at = self._retry_at
        return 0.0 if at is None else max(at - self._clock(), 0.0)

    def allow(self) -> bool:
        """Whether a call may be made now."""
        if self._retry_at is None:
            return True
        with self._lock:
            if self._retry_at is None:
                return True
            me, now = threading.get_ident(), self._clock()
            if self._per_thread and self._trial == me:
                return True
            if now >= self._retry_at and (self._trial is None or now >= self._trial_until):
                self._trial, self._trial_until = me, now + 4 * self.max_reset_s
                return True
            return False

    def record(self, success: bool) -> None:
        """Report the result of a call."""
        if success and self._retry_at is None and self._count == 0:
            return  # closed and nothing to forget: no lock on the common path
        with self._lock:
            trial, self._trial = self._trial, None
            if success:
                self._count = 0
                if self._retry_at is not None:
                    self._retry_at, self.wait_s = None, self.reset_s
                    if self._on_close is not None:
                        self._on_close()
                return
            self._count += 1
            if self._count < self.failures:
                return
            if self._retry_at is None:
                self.wait_s = self.reset_s
                if self._on_open is not None:
                    self._on_open(self._count)
            elif trial == threading.get_ident():  # its trial failed: wait longer
                self.wait_s = min(self.wait_s * 2, self.max_reset_s)
            self._retry_at = max(self._retry_at or 0.0, self._clock() + self.wait_s)

"""The circuit breaker shared by the webhook sender and the Redis guard (cxstream/breaker.py)."""

from __future__ import annotations

from cxstream.actions.webhook import CircuitBreaker as WebhookBreaker
from cxstream.breaker import CircuitBreaker


def test_a_trial_that_never_reports_expires_and_the_service_is_tried_again():
    # the webhook sender takes the half-open trial, then returns on a path that reports nothing
    # (its delivery-ledger mark refused, or Redis down): the endpoint must not stay shut forever
    t = [0.0]
    cb = WebhookBreaker(failures=1, reset_s=10, clock=lambda: t[0])
    cb.record(False)
    t[0] = 11.0
    assert cb.allow()  # the trial, never reported
    t[0] = 50.0
    assert not cb.allow()
    t[0] = 51.0  # four times the wait after the trial began
    assert cb.allow()


def test_failed_trials_wait_longer_up_to_the_longest_wait_and_a_success_resets():
    t = [0.0]
    cb = CircuitBreaker(failures=2, reset_s=1.0, clock=lambda: t[0], max_reset_s=4.0)
    cb.record(False)
    assert not cb.open  # one failure of two
    cb.record(False)
    waits = []
    for _ in range(4):
        t[0] += cb.retry_in()
        assert cb.allow()
        cb.record(False)
        waits.append(cb.wait_s)
    assert waits == [2.0, 4.0, 4.0, 4.0]
    cb.record(True)
    assert not cb.open and cb.wait_s == 1.0 and cb.allow()
    # a webhook's breaker waits the same every time
    hook = WebhookBreaker(failures=1, reset_s=10, clock=lambda: t[0])
    hook.record(False)
    t[0] += 10
    assert hook.allow()
    hook.record(False)
    assert hook.wait_s == 10 and hook.retry_in() == 10

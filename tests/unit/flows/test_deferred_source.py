"""The deferred-actions input asks Redis at its own pace but wakes often (epochs close on time)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bytewax.inputs import SimplePollingSource

from cxstream.flows.connect import DeferredSource


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_wakes_every_wake_s_but_asks_for_releases_every_interval():
    clock, calls = Clock(), []
    released = [[], ["a1"]]

    def release():
        calls.append(clock.now)
        return released.pop(0)

    source = DeferredSource(release, 0.5, wake_s=0.02, clock=clock)
    with pytest.raises(SimplePollingSource.Retry) as nothing_due:
        source.next_item()  # asks at once, nothing due
    assert nothing_due.value.timeout == timedelta(seconds=0.02)
    clock.now += 0.2
    with pytest.raises(SimplePollingSource.Retry):
        source.next_item()  # woken, but not time to ask yet
    assert calls == [100.0]
    clock.now += 0.3
    assert source.next_item() == ["a1"]
    assert calls == [100.0, 100.5]


def test_never_sleeps_longer_than_its_poll_interval():
    source = DeferredSource(list, 0.005, wake_s=0.02, clock=Clock())
    with pytest.raises(SimplePollingSource.Retry) as retry:
        source.next_item()
    assert retry.value.timeout == timedelta(seconds=0.005)

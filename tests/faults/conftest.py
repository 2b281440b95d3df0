"""Fault-suite helpers: a flow child process on the session broker, and counters from its metrics."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

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

"""A flow process started with SIGINT ignored (a background job of a script) still stops on it,
SIGTERM stops it the same way, and the stop a signal asked for is not taken for a crash."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from bytewax.errors import BytewaxRuntimeError

from cxstream.flows.run import _Stop

_CHILD = """
import sys, time
if sys.argv[1] == "restore":
    from cxstream.flows.run import _interruptible
    _interruptible()
try:  # "ready" inside it: the parent's signal may come as soon as the line is out
    print("ready", flush=True)
    time.sleep(30)
except KeyboardInterrupt:
    sys.exit(7)
"""


def _start(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode],
        stdout=subprocess.PIPE,
        text=True,
        # what a non-interactive shell does to a command started with `&`
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize(("mode", "stops"), [("restore", True), ("inherit", False)])
def test_sigint_stops_a_process_that_inherited_it_ignored_only_once_restored(mode, stops):
    proc = _start(mode)
    try:
        proc.send_signal(signal.SIGINT)
        if stops:
            assert proc.wait(10) == 7  # KeyboardInterrupt: what Bytewax turns into a shutdown
        else:
            time.sleep(0.5)
            assert proc.poll() is None  # the premise: without it, SIGINT does nothing
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize(("mode", "code"), [("restore", 7), ("inherit", -signal.SIGTERM)])
def test_sigterm_stops_the_flow_as_ctrl_c_does(mode, code):
    # Kubernetes, docker stop and systemd send SIGTERM: a shutdown, not the process cut short
    proc = _start(mode)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == code
    finally:
        proc.kill()
        proc.wait(5)


def test_the_stop_a_signal_asked_for_is_told_from_a_crash():
    stopped = BytewaxRuntimeError("(src/run.rs:134:60): signal received")
    stop = _Stop()
    assert not stop.asked_for(stopped)  # no signal came: a crash, raised as it is
    with pytest.raises(KeyboardInterrupt):  # what Bytewax's run loop turns into its shutdown
        stop(signal.SIGTERM, None)
    assert stop.by == "SIGTERM"
    assert stop.asked_for(stopped) and stop.asked_for(KeyboardInterrupt())
    assert not stop.asked_for(BytewaxRuntimeError("(src/worker.rs:1:1): error calling step"))
    stop(signal.SIGINT, None)  # a second signal while stopping does not break the stop
    assert stop.by == "SIGTERM"

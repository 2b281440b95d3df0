from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from cxstream.devtools.flowprocess import FlowProcess, stop_all

# A stand-in for one process of a cluster: on SIGINT it notes when, then takes a while to exit
# (as a dataflow does while it drains).
_CHILD = """
import signal, sys, time
def stop(*_):
    with open(sys.argv[1], "w") as f:
        f.write(repr(time.time()))
    time.sleep(0.5)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _process(tmp_path: Path, name: str) -> FlowProcess:
    flow = FlowProcess.__new__(FlowProcess)  # the process handling only, no dataflow
    flow.log_path = tmp_path / f"{name}.log"
    flow._log = flow.log_path.open("wb")
    flow._http = httpx.Client()
    flow.proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / f"{name}.signalled")],
        stdout=subprocess.PIPE,
    )
    assert flow.proc.stdout is not None
    assert flow.proc.stdout.readline().strip() == b"ready"
    return flow


def test_a_cluster_is_interrupted_as_a_whole_before_any_process_is_waited_for(
    tmp_path: Path,
) -> None:
    flows = [_process(tmp_path, "p0"), _process(tmp_path, "p1")]
    started = time.monotonic()
    stop_all(flows)
    elapsed = time.monotonic() - started
    assert all(flow.proc.returncode == 0 for flow in flows)
    signalled = [float((tmp_path / f"p{i}.signalled").read_text()) for i in range(2)]
    # one after the other, the second would be signalled only once the first had exited (0.5 s)
    assert abs(signalled[1] - signalled[0]) < 0.25
    assert elapsed < 1.0

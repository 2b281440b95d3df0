"""Each cxstream process keeps numpy's BLAS to one thread unless the environment says otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, numpy, threadpoolctl
from cxstream.cli.app import one_blas_thread
one_blas_thread()
print(json.dumps([p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]))
"""


def blas_threads(**env: str) -> list[int]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, check=True
    )
    return json.loads(out.stdout)


def test_numpy_blas_runs_one_thread_unless_the_environment_sets_it():
    assert blas_threads() and set(blas_threads()) == {1}
    assert set(blas_threads(OPENBLAS_NUM_THREADS="2")) == {2}

"""Shard keys that Bytewax spreads evenly: the placement predicted here is checked against
Bytewax's own routing, in a real multi-worker run."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSource, cluster_main

from cxstream.flows.routing import MAX_BALANCED, SPREAD, shard_keys, worker_of


class _WhereAmI(StatefulBatchLogic[str, None, None]):
    """Records the worker thread (``timely:work-N``) that each key's items reached."""

    def __init__(self, seen: dict[str, int], lock: threading.Lock) -> None:
        self._seen = seen
        self._lock = lock

    def on_batch(self, values: list[str]) -> tuple[list[None], bool]:
        comm = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
        with self._lock:
            for key in values:
                self._seen[key] = int(comm.rsplit("-", 1)[1])
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


def _bytewax_placement(keys: list[str], workers: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    lock = threading.Lock()
    flow = Dataflow("placement")
    keyed = op.input("in", flow, TestingSource([(k, k) for k in keys]))
    out: Any = op.stateful_batch("where", keyed, lambda _resume: _WhereAmI(seen, lock))
    op.inspect("done", out)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("workers", [2, 3, 4])
def test_prediction_matches_bytewax(workers: int) -> None:
    keys = [
        *shard_keys(16),
        *(str(i) for i in range(16)),
        "cell-0042",
        "a-much-longer-key-0123456789",
    ]
    placement = _bytewax_placement(keys, workers)
    assert placement == {k: worker_of(k, workers) for k in keys}


def test_plain_names_are_uneven_and_shard_keys_are_not() -> None:
    # the reason for the module: "0".."15" go 10/6 to two workers
    assert sorted(Counter(worker_of(str(i), 2) for i in range(16)).values()) == [6, 10]
    keys = shard_keys(16)
    for workers in [1, 2, 3, 4, 5, 6, 7, 8, 16]:
        assert SPREAD % workers == 0
        assert [worker_of(k, workers) for k in keys] == [i % workers for i in range(16)]


def test_shard_keys_are_distinct_and_start_with_the_shard() -> None:
    keys = shard_keys(MAX_BALANCED)
    assert len(set(keys)) == MAX_BALANCED
    assert all(k.split(".")[0] == str(i) for i, k in enumerate(keys))
    assert shard_keys(MAX_BALANCED + 1) == tuple(str(i) for i in range(MAX_BALANCED + 1))

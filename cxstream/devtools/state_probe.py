"""``cxstream bench --state-probe``: the memory the dataflow's state takes for N subscribers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cxstream.events import QosRecord, Service
from cxstream.settings import Settings

__all__ = ["probe_state"]

Progress = Callable[[str, int, int], None]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def probe_state(
    settings: Settings,
    subscribers: int,
    cells: int,
    *,
    progress: Progress | None = None,
    batch: int = 10_000,
) -> dict[str, Any]:
    """Build the dataflow's state for ``subscribers`` active subscribers in ``cells`` cells
    (each subscriber seen twice, inside the cells' window) and measure the memory it takes:
    the growth of this process's resident set, and the size of its snapshot (pickled)."""
    import gc
    import pickle

    import numpy as np

    from cxstream.actions.store import MemoryClaimStore
    from cxstream.batches import ShardBatch
    from cxstream.detectors.cells import CellMonitor
    from cxstream.pipeline import Candidate, Pipeline

    say = progress or (lambda stage, done, total: None)
    pipeline = Pipeline(settings, context=None, claims=MemoryClaimStore())  # type: ignore[arg-type]
    gc.collect()
    before = _rss_mb()
    table = pipeline.new_table()
    monitors: dict[str, CellMonitor[Candidate]] = {}
    rng = np.random.default_rng(1)
    t0 = time.time() - 30.0
    for rnd in range(2):
        for start in range(0, subscribers, batch):
            n = min(batch, subscribers - start)
            ids = [f"sub-{i:08d}" for i in range(start, start + n)]
            records = [
                QosRecord(
                    subscriber_id=sid,
                    cell_id=f"cell-{(start + j) % cells:06d}",
                    event_id=f"e{rnd}-{start + j}",
                    event_time=datetime.fromtimestamp(t0 + rnd * 10 + j * 1e-4).astimezone(),
                    service=Service.DATA,
                    rtt_ms=float(rng.uniform(20, 60)),
                    throughput_kbps=float(rng.uniform(5e3, 5e4)),
                    rsrp_dbm=-90.0,
                    sinr_db=15.0,
                )
                for j, sid in enumerate(ids)
            ]
            shard = ShardBatch.from_records(records)
            cell_batches = [b for _, b in pipeline.detect_shard(table, [shard])]
            pipeline.demarcate_shard(monitors, cell_batches)
            say(f"building state (pass {rnd + 1}/2)", start + n, subscribers)
    gc.collect()
    after = _rss_mb()
    table_bytes = len(pickle.dumps(table, protocol=5))
    cells_bytes = len(pickle.dumps(monitors, protocol=5))
    state_mb = after - before
    return {
        "subscribers": subscribers,
        "cells": cells,
        "state_mb": round(state_mb, 1),
        "bytes_per_subscriber": round(state_mb * 1024 * 1024 / subscribers),
        "snapshot_mb": round((table_bytes + cells_bytes) / 1e6, 1),
        "detector_snapshot_mb": round(table_bytes / 1e6, 1),
        "cells_snapshot_mb": round(cells_bytes / 1e6, 1),
    }

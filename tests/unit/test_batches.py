from __future__ import annotations

import pickle

import numpy as np

from cxstream.batches import CellBatch


def _batch(t: list[float], first: int, candidates: dict[int, str]) -> CellBatch:
    n = len(t)
    ids = [f"s{first + i}" for i in range(n)]
    return CellBatch(
        t=np.array(t),
        subscribers=ids,
        cells=["c1"] * n,
        event_ids=[f"e{first + i}" for i in range(n)],
        degraded=np.array([i % 2 == 0 for i in range(n)]),
        experience=np.arange(first, first + n, dtype=float),
        loss=np.zeros(n),
        throughput=np.full(n, np.nan),
        tiers=["gold"] * n,
        sample=np.array([i == 0 for i in range(n)]),
        candidates=candidates,
    )


def test_merged_batches_come_out_in_event_time_order_with_their_alerts():
    a = _batch([1.0, 3.0, 5.0], 0, {1: "alert of s1"})
    b = _batch([2.0, 4.0], 10, {0: "alert of s10"})
    merged = CellBatch.concat([a, b]).sorted_by_time()
    assert merged.t.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert merged.subscribers == ["s0", "s10", "s1", "s11", "s2"]
    assert merged.experience.tolist() == [0.0, 10.0, 1.0, 11.0, 2.0]
    assert merged.degraded.tolist() == [True, True, False, False, True]
    assert merged.event_ids == ["e0", "e10", "e1", "e11", "e2"]
    assert merged.sample.tolist() == [True, True, False, False, False]
    # each alert stays with its event
    assert merged.candidates == {2: "alert of s1", 1: "alert of s10"}


def test_ties_keep_their_order_and_sorted_input_is_returned_as_is():
    a = _batch([1.0, 2.0, 2.0], 0, {})
    assert a.sorted_by_time() is a
    b = CellBatch.concat([_batch([2.0], 0, {}), _batch([2.0, 1.0], 5, {})]).sorted_by_time()
    assert b.subscribers == ["s6", "s0", "s5"]


def test_columns_left_behind_for_demarcation_stay_empty_when_merged():
    a = _batch([3.0, 1.0], 0, {}).for_demarcation()
    b = _batch([2.0], 5, {}).for_demarcation()
    merged = CellBatch.concat([a, b]).sorted_by_time()
    assert merged.event_ids == [] and len(merged.sample) == 0
    assert merged.subscribers == ["s1", "s5", "s0"]
    # an empty batch in the merge does not empty the others' columns
    empty = _batch([], 9, {})
    assert CellBatch.concat([_batch([1.0], 0, {}), empty]).event_ids == ["e0"]


def test_a_batch_that_crosses_to_another_process_arrives_whole():
    a = _batch([1.0, 2.0], 0, {1: "alert"})
    b = pickle.loads(pickle.dumps(a))
    assert b.t.tolist() == a.t.tolist() and b.subscribers == a.subscribers
    assert b.degraded.tolist() == a.degraded.tolist() and b.candidates == a.candidates

"""The scheduled churn pass: every stored profile is scored in chunks, snapshots taken at a
signal are kept, and an outcome of a customer who never had trouble is learned."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
import redis

from cxstream.churn_state import RedisChurnState
from cxstream.context import ContextStore
from cxstream.events import CustomerContext, Outcome, OutcomeKind, ValueTier
from cxstream.settings import Settings
from cxstream.steps.churn_risk import SCHEDULED, BaseScoring, ChurnRisk
from cxstream.steps.common import RedisTrouble
from tests.unit.steps.test_steps import signal

pytestmark = pytest.mark.integration

NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def setup(redis_conn: redis.Redis, n: int, chunk: int = 7):
    settings = Settings(churn={"score_base_chunk": chunk, "score_base_every_s": 600.0})
    store = ContextStore(redis_conn, prefix="t")
    store.put_many(
        [
            CustomerContext(
                subscriber_id=f"s{i}", value_tier=ValueTier.GOLD, tenure_months=i, monthly_charge=50
            )
            for i in range(n)
        ]
    )
    churn = ChurnRisk(settings, RedisChurnState(redis_conn, prefix="t"), trouble=RedisTrouble())
    clock = Clock()
    return churn, BaseScoring(churn, store.scan_profiles, lambda: NOON, clock=clock), clock


def run_pass(scoring: BaseScoring) -> dict:
    for _ in range(1000):
        summary = scoring.step()
        if summary is not None:
            return summary
    raise AssertionError("the pass never ended")


def test_every_profile_is_scored_in_chunks_and_again_on_schedule(redis_conn):
    churn, scoring, clock = setup(redis_conn, 30)
    summary = run_pass(scoring)["churn_base_scored"]
    assert summary["customers"] == 30
    snaps = churn.state.get_snapshots([f"s{i}" for i in range(30)])
    assert all(s is not None and s["source_id"] == SCHEDULED for s in snaps)
    assert snaps[3]["features"]["tenure_months"] == 3
    assert snaps[3]["features"]["signal"] == SCHEDULED
    assert scoring.step() is None  # the next pass waits for its time
    clock.t = 599.0
    assert scoring.step() is None
    clock.t = 600.0
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 30
    # each pass adds the customer's score to their trend (the latest ones, oldest first)
    trend = churn.state.get_snapshots(["s3"])[0]["trend"]
    assert len(trend) == 2 and trend[-1][1] == round(snaps[3]["risk"], 4)


def test_a_snapshot_taken_at_a_signal_is_kept_and_outcomes_of_untroubled_customers_are_learned(
    redis_conn,
):
    churn, scoring, _ = setup(redis_conn, 10)
    (customer,) = [c for _, c in ContextStore(redis_conn, prefix="t").get_many(["s4"]).items()]
    churn.score([signal(customer.customer)], NOON)  # s4 degraded: its snapshot has the signal
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 9
    (kept,) = churn.state.get_snapshots(["s4"])
    assert kept["source_id"] == "deg-s4"
    # s7 never had any trouble: its churn is learned from the scheduled snapshot
    learner, (record,) = churn.learn_outcomes(
        None, [Outcome(subscriber_id="s7", kind=OutcomeKind.CHURNED, time=NOON)]
    )
    assert record["churn_outcome"]["result"] == "learned"
    assert learner.model.n_learned == 1


def test_the_pass_does_not_score_again_a_customer_who_left(redis_conn):
    churn, scoring, clock = setup(redis_conn, 6)
    run_pass(scoring)
    churn.learn_outcomes(
        None,
        [
            Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON),
            Outcome(subscriber_id="s2", kind=OutcomeKind.RETAINED, time=NOON),
        ],
    )
    clock.t = 600.0
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 5  # all but the one who left
    left, stayed = churn.state.get_snapshots(["s1", "s2"])
    assert left is None  # so the dashboard says they left, with no score at risk
    assert stayed is not None and stayed["source_id"] == SCHEDULED
    # were they still seen degrading, the signal scores them again, and the pass keeps it
    (customer,) = ContextStore(redis_conn, prefix="t").get_many(["s1"]).values()
    churn.score([signal(customer.customer)], NOON)
    clock.t = 1200.0
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 5
    assert churn.state.get_snapshots(["s1"])[0]["source_id"] == "deg-s1"


def test_a_redis_failure_ends_the_pass_and_it_is_retried(redis_conn):
    _, scoring, clock = setup(redis_conn, 5)

    def broken(count):
        raise redis.ConnectionError("down")
        yield  # pragma: no cover

    scoring._profiles = broken
    assert scoring.step() is None
    clock.t = BaseScoring.RETRY_S - 1
    assert scoring.step() is None and scoring._scan is None
    scoring._profiles = ContextStore(redis_conn, prefix="t").scan_profiles
    clock.t = BaseScoring.RETRY_S
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 5


def test_snapshots_and_learned_outcomes_that_are_not_json_objects_read_as_missing(redis_conn):
    churn, scoring, _ = setup(redis_conn, 4)
    redis_conn.set("t:churn:snap:s1", b"\xff not json")
    redis_conn.set("t:churn:snap:s2", b"[1, 2]")
    redis_conn.set("t:churn:learned:s3", b'"a string"')
    assert churn.state.get_snapshots(["s1", "s2"]) == [None, None]
    outcomes = [
        Outcome(subscriber_id=s, kind=OutcomeKind.CHURNED, time=NOON) for s in ("s1", "s2", "s3")
    ]
    _, records = churn.learn_outcomes(None, outcomes)
    assert [r["churn_outcome"]["result"] for r in records] == ["no_snapshot"] * 3
    # a learned outcome whose count is not a number: the same outcome is not learned again
    churn.score([signal(churn_customer("s3"))], NOON)
    key = f"churned@{NOON.isoformat()}"
    redis_conn.set("t:churn:learned:s3", orjson.dumps({"outcome": key, "n_learned": "9"}))
    _, (record,) = churn.learn_outcomes(None, outcomes[2:])
    assert record["churn_outcome"]["result"] == "duplicate"
    # a revision number that is not one: the learner counts from its own
    redis_conn.set("t:churn:revision", b"not a number")
    churn.score([signal(churn_customer("s0"))], NOON)
    learner, (record,) = churn.learn_outcomes(
        None, [outcomes[0].model_copy(update={"subscriber_id": "s0"})]
    )
    assert record["churn_outcome"]["result"] == "learned" and learner.revision == 1
    assert churn.state.revision() == 1
    # the pass reads them too: s3 keeps the snapshot of its signal, s0 left (its churn was
    # learned), s1 and s2 are scored
    assert run_pass(scoring)["churn_base_scored"]["customers"] == 2


def churn_customer(sid: str) -> CustomerContext:
    return CustomerContext(subscriber_id=sid, value_tier=ValueTier.GOLD, tenure_months=3)

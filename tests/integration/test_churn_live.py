"""Churn risk on real parts: delayed outcomes learned from Redis snapshots, a restart that
restores the model, the explanation in the delivered webhook."""

from __future__ import annotations

import base64
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis

from cxstream.actions.receiver import WebhookReceiver
from cxstream.churn_state import RedisChurnState
from cxstream.context import ContextStore
from cxstream.detectors.churn import ChurnModel, Schema
from cxstream.devtools.flowprocess import FlowProcess, checkpoint_key
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Channel, ConsentStatus, utcnow
from tests.integration.kafka_helpers import produce, read_topic
from tests.integration.test_pipeline_live import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "whsec_" + base64.b64encode(b"churn-integration-secret").decode()


def seed_model(settings, state, secret=SECRET):
    """Revision 7 of a model that learned that short month-to-month customers leave (signed
    with the key the flow derives from ``secret``)."""
    c = settings.churn
    model = ChurnModel(Schema(tuple(c.numeric), tuple(c.categorical)))
    rng = random.Random(1)
    for _ in range(1500):
        contract = rng.choice(["month_to_month", "one_year", "two_year"])
        tenure = rng.randint(0, 72)
        row = {"tenure_months": tenure, "contract": contract, "signal": "degradation"}
        risky = contract == "month_to_month" and tenure < 12
        model.learn_one(row, rng.random() < (0.9 if risky else 0.05))
    state.save_checkpoint(7, model.to_bytes({"revision": 7.0}, key=checkpoint_key(secret)))


def committed_epoch(recovery: Path) -> int:
    """The last epoch whose snapshots Bytewax has committed in every recovery partition (what a
    restart resumes from), -1 before the first."""
    epochs = []
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(part) as db:
            (epoch,) = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()
        epochs.append(-1 if epoch is None else epoch)
    return min(epochs, default=-1)


def daytime_policy(tmp_path):
    policy = tmp_path / "policy.yaml"
    text = Path("config/policy.yaml").read_text()
    for old, new in (
        (
            'quiet_hours: {start: "21:00:00", end: "08:00:00"}',
            'quiet_hours: {start: "00:00:00", end: "00:00:00"}',
        ),
        ("holdout: {share: 0.05", "holdout: {share: 0.0"),
    ):
        assert old in text
        text = text.replace(old, new)
    policy.write_text(text)
    return policy


def churn_records(settings):
    out = []
    for value in read_topic(settings, settings.kafka.topics.decisions):
        record = orjson.loads(value)
        if "churn_outcome" in record:
            out.append(record["churn_outcome"])
    return out


def test_outcomes_learn_from_snapshots_restart_restores_and_payload_explains(
    live_settings, tmp_path
):
    settings = live_settings
    topics = settings.kafka.topics
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    state = RedisChurnState(client, prefix=settings.redis.key_prefix)
    seed_model(settings, state)

    sim = Simulator(40, 3, seed=31)
    victims = sim.subscriber_ids[4], sim.subscriber_ids[9]
    calm = sim.subscriber_ids[20]  # never degraded
    start = utcnow() - timedelta(seconds=40)
    sim.add_incidents(
        [
            Incident(
                "subscriber_degradation",
                sim.home_cell[v],
                start + timedelta(seconds=20),
                start + timedelta(seconds=40),
                v,
            )
            for v in victims
        ]
    )
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    profiles = []
    for p in sim.profiles():
        update = {"consent": granted, "open_tickets": 0}
        if p.subscriber_id in victims:
            update |= {"contract": "month_to_month", "tenure_months": 3, "monthly_charge": 90.0}
        profiles.append(p.model_copy(update=update))
    ContextStore(client, prefix=settings.redis.key_prefix).put_many(profiles)
    times = sim.timeline(start, 100, diurnal=False)
    produce(settings, topics.qos, [sim.encoded(next(times)) for _ in range(4000)])

    policy = daytime_policy(tmp_path)
    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={
                "webhook": settings.webhook.model_copy(update={"url": receiver.url}),
                "policy": settings.policy.model_copy(update={"file": str(policy)}),
                "churn": settings.churn.model_copy(update={"refresh_s": 0.5}),
                # a restart resumes where it stopped (Bytewax recovery), as in production
                "flow": settings.flow.model_copy(
                    update={"recovery_dir": str(tmp_path / "recovery"), "snapshot_interval_s": 1.0}
                ),
            }
        )
        (tmp_path / "first").mkdir()
        flow = FlowProcess(live, tmp_path / "first", SECRET)
        try:
            flow.wait_ready()
            wait_for(lambda: receiver.deliveries >= 2, 90, "both victims' actions to be delivered")
            wait_for(
                lambda: all(state.get_snapshots([v])[0] is not None for v in victims),
                10,
                "the victims' feature snapshots",
            )
            # weeks later: one victim churns; an outcome for a customer never scored
            outcome_time = utcnow().isoformat()
            produce(
                settings,
                topics.outcomes,
                [
                    (
                        victims[0].encode(),
                        orjson.dumps(
                            {"subscriber_id": victims[0], "kind": "churned", "time": outcome_time}
                        ),
                    ),
                    (
                        b"nobody",
                        orjson.dumps(
                            {"subscriber_id": "nobody", "kind": "churned", "time": outcome_time}
                        ),
                    ),
                ],
            )
            wait_for(lambda: len(churn_records(live)) >= 2, 60, "the outcomes to be learned")
            # a customer who never had any trouble was scored by the scheduled pass: their
            # outcome is learned too (the model learns from the whole base)
            wait_for(lambda: state.get_snapshots([calm])[0] is not None, 30, "the scheduled pass")
            produce(
                settings,
                topics.outcomes,
                [
                    (
                        calm.encode(),
                        orjson.dumps(
                            {"subscriber_id": calm, "kind": "retained", "time": outcome_time}
                        ),
                    )
                ],
            )
            wait_for(lambda: len(churn_records(live)) >= 3, 60, "the calm customer's outcome")
            # stopped once a snapshot taken after the third outcome is committed: epochs close
            # every second, and later on a busy machine (the one open now, and the one before,
            # whose snapshots may still await their commit, can hold the learning)
            recovery = tmp_path / "recovery"
            settled = committed_epoch(recovery) + 3
            wait_for(lambda: committed_epoch(recovery) >= settled, 60, "a committed snapshot")
        finally:
            flow.stop()

        delivered = {e["data"]["receiver"][0]["id"]: e["data"] for e in receiver.delivered.values()}
        for v in victims:
            message = delivered[v]
            assert message["subject"] == "retention offer"
            characteristic = {c["name"]: c["value"] for c in message["characteristic"]}
            churn = characteristic["explanation"]["churn"]
            assert churn["risk"] >= live.churn.escalate_risk
            assert churn["model_revision"] == 7
            features = {f["feature"]: f for f in churn["top_features"]}
            assert features["contract"]["value"] == "month_to_month"
            assert features["contract"]["contribution"] > 0

    first_run = churn_records(live)
    records = {r["subscriber_id"]: r for r in first_run}
    assert records[victims[0]]["result"] == "learned"
    assert records[victims[0]]["revision"] == 8
    assert records["nobody"]["result"] == "no_snapshot"
    assert (records[calm]["result"], records[calm]["revision"]) == ("learned", 9)
    assert state.revision() == 9
    assert state.get_snapshots([victims[0]]) == [None]  # learned once, then forgotten
    assert state.get_snapshots([victims[1]])[0] is not None  # still waiting for its outcome

    # restart: the learner resumes from revision 9, not from a blank model
    (tmp_path / "second").mkdir()
    flow = FlowProcess(live, tmp_path / "second", SECRET)
    try:
        flow.wait_ready()
        produce(
            settings,
            topics.outcomes,
            [
                (
                    victims[1].encode(),
                    orjson.dumps(
                        {
                            "subscriber_id": victims[1],
                            "kind": "retained",
                            "time": utcnow().isoformat(),
                        }
                    ),
                )
            ],
        )
        wait_for(
            lambda: any(r["subscriber_id"] == victims[1] for r in churn_records(live)),
            60,
            "the second outcome after the restart",
        )
        counters = flow.counters()
    finally:
        flow.stop()
    # the second run's records: the decisions topic has several partitions, so they may come
    # before the first run's in the read order
    unseen = list(first_run)
    after = []
    for record in churn_records(live):
        if record in unseen:
            unseen.remove(record)
        else:
            after.append(record)
    assert unseen == []
    second = next(r for r in after if r["subscriber_id"] == victims[1])
    assert second["result"] == "learned"
    # revisions only grow, so the scorers reload, also where the learner resumed from before 9
    assert second["revision"] >= 10 and state.revision() == second["revision"]
    assert counters["cxstream_churn_model_revision{role=learner}"] == second["revision"]
    # outcomes of the first run may be replayed (those after the last committed epoch, or all of
    # them where the learner came from the checkpoint): one the resumed learner had not learned
    # is learned again from the snapshot it was learned from (the scheduled pass has scored the
    # customer again since); one it holds is a duplicate; none is learned from another snapshot
    replayed = [r for r in after if r["subscriber_id"] != victims[1]]
    assert all(
        (r["subscriber_id"], r["outcome"])
        in {(f["subscriber_id"], f["outcome"]) for f in first_run}
        for r in replayed
    )
    relearned = [r for r in replayed if r["result"] == "learned"]
    assert all(r["scored_at"] == records[r["subscriber_id"]]["scored_at"] for r in relearned)
    assert all(
        r["result"] in ("learned", "duplicate") or r["subscriber_id"] == "nobody" for r in replayed
    )
    assert counters["cxstream_churn_outcomes_total{result=learned}"] == 1 + len(relearned)
    model, stored = ChurnModel.from_bytes(state.load_checkpoint(), key=checkpoint_key(SECRET))
    assert model.n_learned == 1500 + 3
    assert model.trees is not None  # the trees came back with the checkpoint
    assert stored["outcomes"] == 3.0  # Bytewax recovery brought back the quality window too

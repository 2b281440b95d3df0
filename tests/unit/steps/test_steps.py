"""Each step on its own: built from its own dependencies, driven with small batches."""

from __future__ import annotations

import copy
import logging
import math
from datetime import UTC, datetime, timedelta

import orjson
import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from cxstream.actions.ledger import DeferredQueue, ExperimentLedger, MemoryLedger
from cxstream.actions.policy import ContactPolicy, SignalIn
from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.batches import RawBatch
from cxstream.churn_state import MemoryChurnState
from cxstream.context import ContextStore
from cxstream.detectors.churn import ChurnModel
from cxstream.events import (
    Alert,
    CellIncident,
    Channel,
    ConsentStatus,
    CustomerContext,
    Outcome,
    OutcomeKind,
    ValueTier,
)
from cxstream.settings import Settings
from cxstream.steps import (
    Candidate,
    ChurnRisk,
    Decide,
    Demarcate,
    Detect,
    Ingest,
    Outcomes,
    RedisTrouble,
)
from tests.fakes import FakeRedis

NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)
SETTINGS = Settings()
KEYS = tuple(str(i) for i in range(SETTINGS.flow.shards))
NO_HOLDOUT = DEFAULT_POLICY.model_copy(
    update={"holdout": DEFAULT_POLICY.holdout.model_copy(update={"share": 0.0})}
)


def customer(sub: str, **consent: str) -> CustomerContext:
    return CustomerContext(
        subscriber_id=sub,
        timezone="UTC",
        value_tier=ValueTier.GOLD,
        monthly_charge=90,
        tenure_months=2,
        consent={Channel(k): ConsentStatus(v) for k, v in consent.items()},
    )


def event(sub: str, seconds: float, **qos: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{sub}-{seconds}",
            "event_time": (NOON + timedelta(seconds=seconds)).isoformat(),
            "subscriber_id": sub,
            "cell_id": "cell-1",
            "service": "voice",
            "rtt_ms": qos.get("rtt_ms", 40.0),
            "jitter_ms": 2.0,
            "loss_pct": qos.get("loss_pct", 0.1),
        }
    )


def ingest_step(context: ContextStore | None = None) -> Ingest:
    store = context if context is not None else ContextStore(FakeRedis())
    return Ingest(SETTINGS, store, clock=lambda: NOON, shard_keys=KEYS)


def test_ingest_dead_letters_what_does_not_validate_and_enriches_the_rest():
    store = ContextStore(FakeRedis())
    store.put_many([customer("s1", sms="granted")])
    values = [event("s1", 0), b"{not json", event("s2", -30 * 86_400)]
    bad, batch = ingest_step(store).parse([RawBatch("cx.qos", 0, values, [0, 1, 2])])
    assert sorted(b.reason for b in bad) == ["not_json", "stale"]
    assert {b.offset for b in bad} == {1, 2}
    assert batch is not None and batch.subscribers == ["s1"]
    assert batch.customers[0] is not None and batch.customers[0].value_tier == ValueTier.GOLD


def degrading_subscriber():
    """The cell batches the detectors emit while one subscriber's voice calls go bad."""
    ingest = ingest_step()
    detect = Detect(
        SETTINGS,
        ingest.context,
        clock=lambda: NOON,
        shard_keys=KEYS,
        trouble=RedisTrouble(),
    )
    table = detect.new_table()
    good = [event("s1", i) for i in range(60)]
    bad = [event("s1", 60 + i, rtt_ms=900.0, loss_pct=25.0) for i in range(20)]
    out = []
    for values in (good, bad):
        _, batch = ingest.parse([RawBatch("cx.qos", 0, values, list(range(len(values))))])
        out.extend(cell_batch for _, cell_batch in detect.detect_shard(table, [batch]))
    return out


def test_detect_raises_one_alert_when_a_subscriber_degrades():
    candidates = [c for b in degrading_subscriber() for c in b.candidates.values()]
    assert len(candidates) == 1
    assert candidates[0].alert.subscriber_id == "s1"
    assert candidates[0].alert.experience < 60


def test_demarcate_releases_a_lone_alert_unexplained_after_the_hold():
    demarcate = Demarcate(SETTINGS)
    monitors: dict = {}
    out = demarcate.demarcate_shard(monitors, [b.for_demarcation() for b in degrading_subscriber()])
    # the bad calls go on for 20 s of event time, longer than cells.hold_s (10 s)
    (released,) = [o for o in out if isinstance(o, Candidate)]
    assert released.alert.subscriber_id == "s1"
    assert released.alert.explained_by is None  # one subscriber is not a cell incident
    assert demarcate.release_held(monitors["cell-1"]) == []


def churn_step() -> ChurnRisk:
    return ChurnRisk(SETTINGS, MemoryChurnState(), trouble=RedisTrouble())


def signal(c: CustomerContext) -> SignalIn:
    return SignalIn("degradation", c.subscriber_id, c, 0.97, f"deg-{c.subscriber_id}", NOON)


def test_churn_risk_scores_explains_and_keeps_a_snapshot_for_the_outcome():
    churn = churn_step()
    (scored,) = churn.score([signal(customer("s1"))], NOON)
    assert scored.risk == 0.5  # a fresh model is unsure of everybody
    assert scored.signal == "degradation"  # so it does not escalate
    assert scored.details["churn"]["model_revision"] == 0
    (snapshot,) = churn.state.get_snapshots(["s1"])
    assert snapshot is not None and snapshot["source_id"] == "deg-s1"


def test_churn_outcomes_are_learned_once_from_the_snapshot():
    churn = churn_step()
    churn.score([signal(customer("s1"))], NOON)
    churned = Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON)
    learner, (record,) = churn.learn_outcomes(None, [churned])
    assert record["churn_outcome"]["result"] == "learned"
    assert learner.revision == 1
    _, (again,) = churn.learn_outcomes(learner, [churned])
    assert again["churn_outcome"]["result"] == "duplicate"  # already in the model
    later = Outcome(subscriber_id="s1", kind=OutcomeKind.RETAINED, time=NOON + timedelta(days=1))
    assert churn.learn_outcomes(learner, [later])[1][0]["churn_outcome"]["result"] == "no_snapshot"
    took = Outcome(subscriber_id="s1", kind=OutcomeKind.OFFER_ACCEPTED, time=NOON)
    assert churn.learn_outcomes(learner, [took])[1][0]["churn_outcome"]["result"] == "not_a_label"


def test_the_roc_auc_gauge_is_not_a_figure_until_the_window_can_measure_it():
    # a fresh model's first outcomes, all scored 0.5, give an AUC of 0.5: the gauge read that
    # for as long as no more came (hours, for a CRM reporting daily), and the "model poor"
    # alert fired on it
    from cxstream import metrics

    churn = churn_step()
    subs = [f"s{n}" for n in range(70)]
    churn.score([signal(customer(s)) for s in subs], NOON)
    kinds = (OutcomeKind.CHURNED, OutcomeKind.RETAINED)
    outcomes = [Outcome(subscriber_id=s, kind=kinds[n % 2], time=NOON) for n, s in enumerate(subs)]
    learner, _ = churn.learn_outcomes(None, outcomes[:5])
    assert learner.quality.report()["outcomes"] == 5
    assert math.isnan(metrics.CHURN_ROC_AUC._value.get())
    churn.learn_outcomes(learner, outcomes[5:])  # 35 of each kind
    assert metrics.CHURN_ROC_AUC._value.get() == learner.quality.report()["roc_auc"]


def test_a_batch_of_outcomes_is_learned_in_order_with_one_checkpoint():
    churn = churn_step()
    saved: list[int] = []
    save = churn.state.save_checkpoint

    def counting(revision: int, data: bytes) -> None:
        saved.append(revision)
        save(revision, data)

    churn.state.save_checkpoint = counting  # type: ignore[method-assign]
    churn.score([signal(customer(s)) for s in ("s1", "s2", "s3")], NOON)
    batch = [
        Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON),
        Outcome(subscriber_id="s2", kind=OutcomeKind.OFFER_ACCEPTED, time=NOON),
        Outcome(subscriber_id="s1", kind=OutcomeKind.RETAINED, time=NOON),  # its snapshot is used
        Outcome(subscriber_id="s9", kind=OutcomeKind.CHURNED, time=NOON),  # never scored
        Outcome(subscriber_id="s3", kind=OutcomeKind.RETAINED, time=NOON),
    ]
    learner, records = churn.learn_outcomes(None, batch)
    results = [r["churn_outcome"]["result"] for r in records]
    assert results == ["learned", "not_a_label", "no_snapshot", "no_snapshot", "learned"]
    assert learner.model.n_learned == 2 and saved == [1]  # one checkpoint holds both
    assert [r["churn_outcome"].get("revision") for r in records] == [1, None, None, None, 1]
    assert churn.state.get_snapshots(["s1", "s2", "s3"]) == [
        None,
        churn.state.snapshots["s2"],
        None,
    ]
    assert churn.state.learned["s1"]["revision"] == 1
    # a batch with nothing to learn writes no checkpoint
    _, records = churn.learn_outcomes(learner, batch[:2])
    assert [r["churn_outcome"]["result"] for r in records] == ["duplicate", "not_a_label"]
    assert saved == [1]


def test_an_outcome_replayed_to_an_older_learner_is_learned_again_from_the_same_snapshot():
    """A restart resumes the learner from a recovery snapshot and replays the outcomes after it:
    those are learned again, from the features they were learned from, though the customer has
    been scored again since; the same outcome seen by a learner that holds it is a duplicate."""
    churn = churn_step()
    churn.score([signal(customer("s1")), signal(customer("s2"))], NOON)
    (first,) = churn.state.get_snapshots(["s1"])
    resumed, _ = churn.learn_outcomes(None, [])  # the recovery snapshot: nothing learned yet
    resumed = copy.deepcopy(resumed)
    outcome = Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON)
    learner, _ = churn.learn_outcomes(None, [outcome])
    rescored = customer("s1").model_copy(update={"tenure_months": 60})
    churn.score([signal(rescored)], NOON + timedelta(hours=1))  # scored again after it
    assert churn.state.get_snapshots(["s1"])[0]["features"] != first["features"]

    other = Outcome(subscriber_id="s2", kind=OutcomeKind.RETAINED, time=NOON)
    resumed, records = churn.learn_outcomes(resumed, [outcome, other])
    assert [r["churn_outcome"]["result"] for r in records] == ["learned", "learned"]
    assert resumed.model.n_learned == 2
    assert resumed.revision == 2 and churn.state.revision() == 2  # revisions only grow
    assert churn.state.learned["s1"]["features"] == first["features"]
    replayed = records[0]["churn_outcome"]
    assert (replayed["scored_at"], replayed["risk_at_scoring"]) == (
        first["scored_at"],
        first["risk"],
    )
    assert learner.model.n_learned == 1
    _, records = churn.learn_outcomes(resumed, [outcome, outcome])
    assert [r["churn_outcome"]["result"] for r in records] == ["duplicate", "duplicate"]


def test_churn_scorers_refuse_a_checkpoint_the_key_does_not_authenticate(caplog):
    keyed = SETTINGS.model_copy(
        update={"churn": SETTINGS.churn.model_copy(update={"checkpoint_key": SecretStr("k" * 32)})}
    )
    state = MemoryChurnState()
    churn = ChurnRisk(keyed, state, trouble=RedisTrouble())
    churn.score([signal(customer("s1"))], NOON)
    churn.learn_outcomes(None, [Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON)])
    churn._checked = -math.inf  # past churn.refresh_s
    assert churn.scorer().n_learned == 1  # its own checkpoint, authenticated, is loaded
    # someone with write access to Redis stores a model of their own, unsigned or with another key
    forged = ChurnModel(churn.schema)
    for _ in range(3):
        forged.learn_one({"tenure_months": 1}, True)
    for data in (forged.to_bytes({"revision": 9.0}), forged.to_bytes(key=b"x" * 32)):
        state.save_checkpoint(state.revision() + 1, data)
        churn._checked = -math.inf
        with caplog.at_level(logging.ERROR):
            assert churn.scorer().n_learned == 1  # kept the model it had
        assert "not authenticated" in caplog.text
        caplog.clear()
    # and a learner starting now starts fresh rather than from the forged model
    assert churn.new_learner().model.n_learned == 0


def decide_step() -> Decide:
    experiment = ExperimentLedger()
    policy = ContactPolicy(
        PolicySource(None, default=NO_HOLDOUT), MemoryLedger(), experiment=experiment
    )
    return Decide(
        ContextStore(FakeRedis()),
        policy,
        DeferredQueue(),
        churn_step(),
        clock=lambda: NOON,
        trouble=RedisTrouble(),
    )


def candidate(c: CustomerContext) -> Candidate:
    alert = Alert(
        alert_id=f"deg-{c.subscriber_id}-1",
        kind="degradation",
        severity="critical",
        subscriber_id=c.subscriber_id,
        cell_id="cell-1",
        score=0.999,
        experience=20.0,
        event_time=NOON,
        detected_at=NOON,
        value_tier=c.value_tier,
    )
    return Candidate(alert, c)


def test_decide_records_why_and_never_assumes_consent():
    decide = decide_step()
    unknown, revoked = customer("s1"), customer("s2", sms="revoked", email="revoked")
    decisions = decide.decide_batch([candidate(unknown), candidate(revoked)])
    assert [d.result for d in decisions] == ["suppressed:no_consent"] * 2
    assert decide.release_deferred() == []


def test_decide_sends_to_a_customer_who_consented():
    (decision,) = decide_step().decide_batch([candidate(customer("s3", sms="granted"))])
    assert decision.result == "sent"
    assert decision.action is not None and decision.action.subscriber_id == "s3"


def test_a_deferred_action_is_decided_afresh_at_release():
    decide = decide_step()
    (sent,) = decide.decide_batch([candidate(customer("s4", sms="granted"))])
    action = sent.action
    assert action is not None
    # deferred by quiet hours, then the customer revokes, opens a ticket, or is unknown
    cases = {
        "s4": customer("s4", sms="granted"),
        "s5": customer("s5", sms="revoked"),
        "s6": customer("s6", sms="granted").model_copy(update={"open_tickets": 1}),
    }
    decide.context.put_many(list(cases.values()))
    for sid in [*cases, "s7"]:
        decide.deferred.push(NOON.timestamp() - 1, action.model_copy(update={"subscriber_id": sid}))
    results = {d.signal.subscriber_id: d for d in decide.release_deferred()}
    assert results["s4"].result == "released" and results["s4"].action.subscriber_id == "s4"
    assert results["s5"].result == "suppressed:no_consent" and results["s5"].action is None
    assert results["s6"].result == "suppressed:ticket_open"
    assert results["s7"].result == "suppressed:unknown_customer"
    assert decide.release_deferred() == []


def test_a_release_waits_when_the_context_cannot_be_read():
    decide = decide_step()
    (sent,) = decide.decide_batch([candidate(customer("s8", sms="granted"))])

    def down(keys):
        raise redis.ConnectionError("down")

    decide.context._mget = down
    decide.deferred.push(NOON.timestamp() - 1, sent.action)
    (waiting,) = decide.release_deferred()
    assert waiting.result == "deferred" and waiting.action is not None
    assert len(decide.deferred) == 1  # back in the queue, a minute later


def incident(state: str, new_affected: list[str]) -> CellIncident:
    return CellIncident(
        incident_id="inc-cell-9-1",
        cell_id="cell-9",
        state=state,
        severity="major",
        opened_at=NOON,
        updated_at=NOON,
        affected=[],
        new_affected=new_affected,
        active_subscribers=10,
        share=0.5,
        experience=20.0,
    )


def test_a_deferred_area_notice_is_suppressed_at_release_when_its_incident_is_over():
    decide = decide_step()
    decide.context.put_many([customer("s12", sms="granted", email="granted")])
    (notice,) = decide.decide_batch([incident("open", ["s12"])])
    assert notice.action is not None and notice.signal.signal == "cell_incident"
    decide.deferred.push(NOON.timestamp() - 1, notice.action)
    assert decide.decide_batch([incident("resolved", [])]) == []
    (released,) = decide.release_deferred()
    assert released.result == "suppressed:incident_resolved"
    assert released.action is None


def test_a_deferred_area_notice_of_an_ongoing_incident_is_released():
    decide = decide_step()
    decide.context.put_many([customer("s13", sms="granted", email="granted")])
    (notice,) = decide.decide_batch([incident("open", ["s13"])])
    decide.deferred.push(NOON.timestamp() - 1, notice.action)
    (released,) = decide.release_deferred()
    assert released.result == "released"


def stale_candidate(c: CustomerContext) -> Candidate:
    """An alert raised while Redis could not be read: its context is the last known, or none."""
    found = candidate(c)
    return Candidate(found.alert.model_copy(update={"context_stale": True}), None)


def test_outreach_held_back_for_unreadable_context_is_decided_again_when_it_returns():
    decide = decide_step()
    now = [NOON]
    decide.clock = lambda: now[0]
    granted, revoked = customer("s9", sms="granted"), customer("s10", sms="revoked")
    decide.context.put_many([granted, revoked])
    first = decide.decide_batch([stale_candidate(granted), stale_candidate(revoked)])
    assert [d.result for d in first] == ["suppressed:stale_context"] * 2
    assert decide.waiting == 2

    def down(keys):
        raise redis.ConnectionError("down")

    readable = decide.context._mget
    decide.context._mget = down
    decide.context.forget(["s9", "s10"])  # the cache no longer vouches for them
    now[0] = NOON + timedelta(seconds=30)
    assert decide.release_deferred() == []  # still unreadable: they keep waiting
    assert decide.waiting == 2
    decide.context._mget = readable
    again = {d.signal.subscriber_id: d for d in decide.release_deferred()}
    assert again["s9"].result == "sent" and again["s9"].action.subscriber_id == "s9"
    assert again["s10"].result == "suppressed:no_consent"  # decided on the consent now known
    assert decide.waiting == 0
    assert decide.release_deferred() == []


def test_held_back_outreach_is_not_decided_again_after_the_window():
    decide = decide_step()
    now = [NOON]
    decide.clock = lambda: now[0]
    late = customer("s11", sms="granted")
    decide.context.put_many([late])
    decide.decide_batch([stale_candidate(late)])
    now[0] = NOON + timedelta(seconds=decide.redecide_window_s + 1)
    assert decide.release_deferred() == []
    assert decide.waiting == 0


def test_outcomes_join_the_customers_group_or_say_it_has_none():
    experiment = ExperimentLedger()
    experiment.assign("s1", "control", None)
    outcomes = Outcomes(experiment, trouble=RedisTrouble())
    joined = outcomes.record_outcomes(
        [
            Outcome(subscriber_id="s1", kind=OutcomeKind.CHURNED, time=NOON),
            Outcome(subscriber_id="s9", kind=OutcomeKind.RETAINED, time=NOON),
        ]
    )
    assert [r["group"] for r in joined] == ["control", None]
    assert [r["time"] for r in joined] == [NOON.isoformat()] * 2  # when the CRM says it happened


def test_redis_trouble_is_logged_now_and_then(caplog):
    now = [0.0]
    trouble = RedisTrouble(every_s=10.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 5.0, 11.0):
        now[0] = t
        trouble("contact state", ConnectionError("down"))
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 2


def _cell_traffic(start: float, cells: list[str], seconds: int, rng) -> list:
    """One batch per second of event time: every cell carries about five events a second,
    from twenty subscribers in good health."""
    import numpy as np

    from cxstream.batches import CellBatch

    out = []
    for s in range(seconds):
        t, subs, where = [], [], []
        for cell in cells:
            for _ in range(rng.randint(3, 7)):
                t.append(start + s + rng.random())
                subs.append(f"{cell}-s{rng.randrange(20)}")
                where.append(cell)
        n = len(t)
        out.append(
            CellBatch(
                t=np.array(t),
                subscribers=subs,
                cells=where,
                event_ids=[f"e{start + s}-{i}" for i in range(n)],
                degraded=np.zeros(n, dtype=bool),
                experience=np.array([95.0 + rng.gauss(0, 1) for _ in range(n)]),
                loss=np.full(n, 0.1),
                throughput=np.full(n, 20_000.0),
                tiers=[None] * n,
                sample=np.zeros(n, dtype=bool),
                candidates={},
            )
        )
    return out


def _incidents(out) -> list[CellIncident]:
    return [o for o in out if isinstance(o, CellIncident)]


def test_a_stop_of_the_whole_feed_opens_no_outage_in_its_cells(caplog):
    """Forty seconds without any event in the shard: the feed stopped (a collector restarted),
    not its cells, and none of them opens an outage as the traffic comes back."""
    import random

    rng = random.Random(3)
    cells = ["cell-a", "cell-b", "cell-c"]
    demarcate, monitors = Demarcate(SETTINGS), {}
    t0 = NOON.timestamp()
    out = []
    for b in _cell_traffic(t0, cells, 600, rng):  # ten minutes: the KPI series are warm
        out += demarcate.demarcate_shard(monitors, [b])
    assert _incidents(out) == []
    gaps = REGISTRY.get_sample_value("cxstream_feed_gaps_total") or 0.0
    with caplog.at_level(logging.WARNING, logger="cxstream.steps.demarcate"):
        for b in _cell_traffic(t0 + 640, cells, 120, rng):  # after 40 s with no event at all
            out += demarcate.demarcate_shard(monitors, [b])
    assert _incidents(out) == []
    assert "no event in a shard of 3 cells for 40 s" in caplog.text
    assert REGISTRY.get_sample_value("cxstream_feed_gaps_total") == gaps + 1


def test_a_cell_silent_while_the_rest_of_its_shard_goes_on_is_still_an_outage():
    import random

    rng = random.Random(3)
    cells = ["cell-a", "cell-b", "cell-c"]
    demarcate, monitors = Demarcate(SETTINGS), {}
    t0 = NOON.timestamp()
    out = []
    for b in _cell_traffic(t0, cells, 600, rng):
        out += demarcate.demarcate_shard(monitors, [b])
    for b in _cell_traffic(t0 + 600, cells[1:], 120, rng):  # cell-a falls silent
        out += demarcate.demarcate_shard(monitors, [b])
    (opened,) = [i for i in _incidents(out) if i.state == "open"]
    assert (opened.cell_id, opened.cause) == ("cell-a", "outage")

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cxstream.actions.policy import ContactPolicy
from cxstream.actions.store import MemoryClaimStore
from cxstream.events import Alert, Channel, ConsentStatus, CustomerContext
from cxstream.settings import PolicySettings

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def alert(sub="s1", score=0.97, stale=False, n=1):
    return Alert(
        alert_id=f"deg-{sub}-{n}",
        kind="degradation",
        severity="major",
        subscriber_id=sub,
        cell_id="c1",
        score=score,
        experience=30.0,
        event_time=NOW,
        detected_at=NOW,
        context_stale=stale,
    )


def customer(sub="s1", preferred=Channel.SMS, **consent):
    return CustomerContext(
        subscriber_id=sub,
        preferred_channel=preferred,
        consent={Channel(k): ConsentStatus(v) for k, v in consent.items()},
    )


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def policy(clock):
    return ContactPolicy(PolicySettings(min_score=0.9, cooldown_s=3600), MemoryClaimStore(clock))


def decide(policy, *pairs):
    return [(d.outcome, d.action) for d in policy.decide_many(list(pairs), NOW)]


def test_consenting_customer_gets_one_action_on_the_preferred_channel(policy):
    [(outcome, action)] = decide(policy, (alert(), customer(sms="granted")))
    assert outcome == "emitted"
    assert action.channel is Channel.SMS
    assert action.action_id == "deg-s1-1:proactive_apology"
    assert action.kind == "proactive_apology"


def test_falls_back_to_another_granted_channel(policy):
    [(outcome, action)] = decide(policy, (alert(), customer(sms="revoked", email="granted")))
    assert (outcome, action.channel) == ("emitted", Channel.EMAIL)


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ((alert(score=0.5), customer(sms="granted")), "below_threshold"),
        ((alert(), None), "unknown_customer"),
        ((alert(stale=True), customer(sms="granted")), "stale_context"),
        ((alert(), customer(sms="denied", email="revoked")), "no_consent"),
        ((alert(), customer()), "no_consent"),
    ],
)
def test_suppressions_say_why(policy, pair, expected):
    [(outcome, action)] = decide(policy, pair)
    assert (outcome, action) == (expected, None)


def test_cooldown_per_customer_and_reason_expires(policy, clock):
    c = customer(sms="granted")
    assert decide(policy, (alert(n=1), c))[0][0] == "emitted"
    assert decide(policy, (alert(n=2), c))[0][0] == "cooldown"
    assert decide(policy, (alert(sub="s2", n=2), customer("s2", sms="granted")))[0][0] == "emitted"
    clock.t += 3601
    assert decide(policy, (alert(n=3), c))[0][0] == "emitted"


def test_a_replayed_alert_is_emitted_again_with_the_same_idempotency_key(policy):
    c = customer(sms="granted")
    first = decide(policy, (alert(n=1), c))[0]
    replay = decide(policy, (alert(n=1), c))[0]
    assert first[0] == replay[0] == "emitted"
    assert first[1].action_id == replay[1].action_id


def test_a_batch_with_duplicates_inside_cooldown(policy):
    c = customer(sms="granted")
    outcomes = [o for o, _ in decide(policy, (alert(n=1), c), (alert(n=2), c))]
    assert outcomes == ["emitted", "cooldown"]

"""Every contact rule of the policy, with an in-memory ledger (the Redis one is tested against the
same cases in tests/integration/test_ledger_redis.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cxstream.actions.ledger import ExperimentLedger, MemoryLedger
from cxstream.actions.policy import ContactPolicy, SignalIn
from cxstream.actions.rules import DEFAULT_POLICY, Cap, PolicyConfig, PolicySource, QuietHours
from cxstream.actions.tmf import communication_message
from cxstream.events import Channel, ConsentStatus, CustomerContext, ValueTier

NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)  # 12:00 UTC: daytime in London and Berlin
# The default policy without its hold-out, so that no test customer falls into the control group
# by chance; the hold-out has its own test.
POLICY = DEFAULT_POLICY.model_copy(
    update={"holdout": DEFAULT_POLICY.holdout.model_copy(update={"share": 0.0})}
)


def customer(
    sub="s1",
    *,
    tz="Europe/London",
    tier=ValueTier.SILVER,
    tickets=0,
    account=None,
    preferred=Channel.SMS,
    **consent,
):
    consent = consent or {"sms": "granted"}
    return CustomerContext(
        subscriber_id=sub,
        timezone=tz,
        value_tier=tier,
        open_tickets=tickets,
        account_id=account,
        preferred_channel=preferred,
        monthly_charge=60,
        tenure_months=24,
        consent={Channel(k): ConsentStatus(v) for k, v in consent.items()},
    )


def degradation(c, *, n=1, score=0.97, explained=None, stale=False):
    return SignalIn(
        "degradation",
        c.subscriber_id if c else "s?",
        c,
        score,
        f"deg-{n}",
        NOON,
        stale=stale,
        explained_by=explained,
    )


def make_policy(config: PolicyConfig = POLICY, experiment=None):
    ledger = MemoryLedger()
    return ContactPolicy(PolicySource(None, default=config), ledger, experiment=experiment), ledger


def results(policy, *signals, now=NOON):
    return [d.result for d in policy.decide_many(list(signals), now)]


def test_sent_on_the_preferred_channel_with_rule_and_value():
    policy, _ = make_policy()
    [d] = policy.decide_many([degradation(customer())], NOON)
    assert d.result == "sent"
    assert d.rule == "degradation-apology"
    assert d.action.channel is Channel.SMS
    assert d.action.action_id == "deg-1:proactive_apology"
    assert d.action.customer_value == pytest.approx(60 + 0.5 * 24 + 5 * 1)


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        (degradation(None), "suppressed:unknown_customer"),
        (degradation(customer(), stale=True), "suppressed:stale_context"),
        (degradation(customer(), explained="inc-1"), "suppressed:explained_by_incident"),
        (degradation(customer(), score=0.5), "suppressed:no_rule"),
        (degradation(customer(tickets=1)), "suppressed:ticket_open"),
        (degradation(customer(sms="denied", email="revoked")), "suppressed:no_consent"),
    ],
)
def test_each_suppression_names_its_rule(signal, expected):
    policy, _ = make_policy()
    assert results(policy, signal) == [expected]


def test_consent_falls_back_to_another_granted_channel():
    policy, _ = make_policy()
    [d] = policy.decide_many([degradation(customer(sms="revoked", push="granted"))], NOON)
    assert d.action.channel is Channel.PUSH


def test_open_ticket_rule_is_exempt_from_ticket_suppression_and_forces_its_channel():
    policy, _ = make_policy()
    gold = customer(tier=ValueTier.GOLD, tickets=2, sms="granted", voice_call="granted")
    [d] = policy.decide_many([degradation(gold)], NOON)
    assert (d.result, d.rule, d.action.channel) == (
        "sent",
        "open-ticket-callback",
        Channel.VOICE_CALL,
    )


def test_highest_priority_rule_wins_and_offers_are_chosen_by_expected_value():
    policy, _ = make_policy()
    gold = customer(tier=ValueTier.GOLD)
    [d] = policy.decide_many([degradation(gold, score=0.99)], NOON)
    assert d.rule == "valuable-degradation-credit"
    # value = 60 + 12 + 5 = 77: credit-10 -> 0.95 * 77 - 10 = 63.15 beats credit-5 -> 64.3? no:
    # credit-5: 0.9 * 77 - 5 = 64.3, credit-10: 63.15 -> credit-5 has the best expected value
    assert d.action.offer["id"] == "credit-5"
    assert d.action.offer["expected_value"] == pytest.approx(64.3)


def test_retention_offer_needs_an_eligible_offer():
    policy, _ = make_policy()
    c = customer().model_copy(update={"contract": "two_year", "tenure_months": 3})
    signal = SignalIn("churn_risk", "s1", c, 0.8, "risk-1", NOON, risk=0.8)
    assert results(policy, signal) == ["suppressed:no_eligible_offer"]
    c2 = c.model_copy(update={"contract": "month_to_month"})
    [d] = policy.decide_many(
        [SignalIn("churn_risk", "s1", c2, 0.8, "risk-2", NOON, risk=0.8)], NOON
    )
    assert (d.result, d.action.offer["id"]) == ("sent", "retention-discount-20")


def test_cooldown_per_customer_and_reason_and_replay_is_idempotent():
    policy, _ = make_policy()
    c = customer()
    assert results(policy, degradation(c, n=1)) == ["sent"]
    assert results(policy, degradation(c, n=1)) == ["sent"]  # the same action replayed: same id
    assert results(policy, degradation(c, n=2)) == ["suppressed:cooldown"]
    assert results(policy, degradation(c, n=3), now=NOON + timedelta(hours=6, seconds=1)) == [
        "sent"
    ]


def test_frequency_caps_per_channel_and_window():
    config = POLICY.model_copy(
        update={"cooldown_h": 0.01, "caps": [Cap(channel=Channel.SMS, max=2, window_h=24)]}
    )
    policy, _ = make_policy(config)
    c = customer()
    out = [results(policy, degradation(c, n=i), now=NOON + timedelta(hours=i))[0] for i in range(3)]
    assert out == ["sent", "sent", "suppressed:cap:sms:24h"]
    assert results(policy, degradation(c, n=9), now=NOON + timedelta(hours=25)) == ["sent"]


def test_household_cap_spans_the_members_of_an_account():
    config = POLICY.model_copy(update={"household_caps": [Cap(channel="any", max=2, window_h=24)]})
    policy, _ = make_policy(config)
    family = [customer(f"m{i}", account="acct-1") for i in range(4)]
    outcomes = results(policy, *[degradation(m, n=i) for i, m in enumerate(family)])
    assert outcomes == [
        "sent",
        "sent",
        "suppressed:household_cap:any:24h",
        "suppressed:household_cap:any:24h",
    ]


def test_global_budget_per_hour_keeps_the_highest_priority():
    config = POLICY.model_copy(update={"global_budget_per_hour": 1})
    policy, _ = make_policy(config)
    low = degradation(customer("a"), n=1)
    high = degradation(customer("b", tier=ValueTier.GOLD), n=2, score=0.99)  # priority 70
    decisions = policy.decide_many([low, high], NOON)
    assert [d.result for d in decisions] == ["suppressed:budget", "sent"]
    assert results(policy, degradation(customer("c"), n=3), now=NOON + timedelta(hours=1)) == [
        "sent"
    ]


def test_area_notice_from_a_cell_incident_is_one_per_customer_per_incident():
    policy, _ = make_policy()
    c = customer()
    notice = SignalIn("cell_incident", "s1", c, 1.0, "inc-7", NOON)
    [d] = policy.decide_many([notice], NOON)
    assert (d.result, d.kind, d.action.action_id) == ("sent", "area_notice", "inc-7:s1:area_notice")
    other = SignalIn("cell_incident", "s1", c, 1.0, "inc-8", NOON)
    assert results(policy, other) == ["suppressed:cooldown"]


class TestQuietHours:
    @pytest.mark.parametrize(
        ("now", "zone", "wake"),
        [
            # 22:30 in London (BST, UTC+1) -> 08:00 local = 07:00 UTC next day
            (
                datetime(2026, 7, 1, 21, 30, tzinfo=UTC),
                "Europe/London",
                datetime(2026, 7, 2, 7, tzinfo=UTC),
            ),
            # 03:00 in New York (EDT, UTC-4) -> 08:00 local the same day = 12:00 UTC
            (
                datetime(2026, 7, 1, 7, 0, tzinfo=UTC),
                "America/New_York",
                datetime(2026, 7, 1, 12, tzinfo=UTC),
            ),
            # 12:00 UTC is 17:30 in Kolkata: allowed
            (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Asia/Kolkata", None),
            # Europe springs forward on 2026-03-29: 23:00 on the 28th (CET) -> 08:00 CEST = 06:00 UTC
            (
                datetime(2026, 3, 28, 22, 0, tzinfo=UTC),
                "Europe/Berlin",
                datetime(2026, 3, 29, 6, tzinfo=UTC),
            ),
            # ... and falls back on 2026-10-25: 23:00 on the 24th (CEST) -> 08:00 CET = 07:00 UTC
            (
                datetime(2026, 10, 24, 21, 0, tzinfo=UTC),
                "Europe/Berlin",
                datetime(2026, 10, 25, 7, tzinfo=UTC),
            ),
            # US spring-forward night, 2026-03-08: 01:30 EST -> 08:00 EDT = 12:00 UTC
            (
                datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
                "America/New_York",
                datetime(2026, 3, 8, 12, tzinfo=UTC),
            ),
        ],
    )
    def test_next_allowed_time_in_the_customers_zone(self, now, zone, wake):
        assert QuietHours().next_allowed(now, zone) == wake

    def test_quiet_hours_defer_not_drop(self):
        policy, _ = make_policy()
        night = datetime(2026, 7, 1, 22, 30, tzinfo=UTC)  # 23:30 in London
        [d] = policy.decide_many([degradation(customer())], night)
        assert d.result == "deferred"
        assert d.action.send_at == datetime(2026, 7, 2, 7, tzinfo=UTC)

    def test_quiet_window_inside_one_day(self):
        q = QuietHours.model_validate({"start": "12:00:00", "end": "14:00:00"})
        assert q.next_allowed(datetime(2026, 7, 1, 13, tzinfo=UTC), "UTC") == datetime(
            2026, 7, 1, 14, tzinfo=UTC
        )
        assert q.next_allowed(datetime(2026, 7, 1, 15, tzinfo=UTC), "UTC") is None


def test_holdout_customers_are_never_contacted_and_take_up_is_reported_per_group():
    config = DEFAULT_POLICY.model_copy(
        update={"holdout": DEFAULT_POLICY.holdout.model_copy(update={"share": 0.3})}
    )
    experiment = ExperimentLedger()
    policy, _ = make_policy(config, experiment)
    people = [customer(f"c{i}") for i in range(400)]
    decisions = policy.decide_many([degradation(c, n=i) for i, c in enumerate(people)], NOON)
    control = [d for d in decisions if d.result == "suppressed:holdout"]
    treated = [d for d in decisions if d.result == "sent"]
    assert 80 < len(control) < 160  # about 30 %
    assert all(d.action is None for d in control)
    assert len(control) + len(treated) == 400
    # stable assignment: the same customers are held out again
    again = policy.decide_many([degradation(c, n=1000 + i) for i, c in enumerate(people)], NOON)
    assert {d.signal.subscriber_id for d in again if d.result == "suppressed:holdout"} == {
        d.signal.subscriber_id for d in control
    }
    for d in treated[:20]:
        experiment.outcome(d.signal.subscriber_id, "offer_accepted")
    for d in treated[:10] + control[:20]:
        experiment.outcome(d.signal.subscriber_id, "churned")
    report = experiment.report()
    assert report["treated"]["subjects"] == len(treated)
    assert report["control"]["subjects"] == len(control)
    assert report["treated"]["offer_accepted"] == pytest.approx(20 / len(treated), abs=1e-4)
    assert report["control"]["offer_accepted"] == 0.0
    assert report["uplift"]["churned"] == pytest.approx(
        20 / len(control) - 10 / len(treated), abs=1e-3
    )


def test_policy_file_hot_reload_and_a_bad_file_keeps_the_old_policy(tmp_path, caplog):
    import os

    from cxstream import metrics

    path = tmp_path / "policy.yaml"
    path.write_text(Path("config/policy.yaml").read_text())
    source = PolicySource(path, check_s=0.0)
    assert source.policy.cooldown_h == 6.0

    path.write_text(path.read_text().replace("cooldown_h: 6.0", "cooldown_h: 2.0"))
    os.utime(path, (1, 1))
    applied = metrics.POLICY_RELOADS.labels("applied")._value.get()
    assert source.policy.cooldown_h == 2.0
    assert metrics.POLICY_RELOADS.labels("applied")._value.get() == applied + 1

    broken = path.read_text().replace("action: area_notice", "action: carrier_pigeon")
    path.write_text(broken)
    os.utime(path, (2, 2))
    rejected = metrics.POLICY_RELOADS.labels("rejected")._value.get()
    assert source.policy.cooldown_h == 2.0  # the old policy stays in force
    assert metrics.POLICY_RELOADS.labels("rejected")._value.get() == rejected + 1
    assert "rules[0] 'cell-incident-area-notice'.action" in caplog.text


def test_policy_errors_name_the_rule_and_field(tmp_path):
    from cxstream.actions.rules import load_policy
    from cxstream.errors import ConfigError

    path = tmp_path / "p.yaml"
    path.write_text(
        "rules:\n  - name: a\n    when: {signal: degradation}\n    action: area_notice\n"
        "  - name: gold\n    when: {signal: degradation, min_tier: diamond}\n"
        "    action: service_credit\n    prioriti: 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    text = str(info.value)
    assert "rules[1] 'gold'.when.min_tier" in text
    assert "rules[1] 'gold'.prioriti" in text
    dup = tmp_path / "d.yaml"
    dup.write_text(
        "rules:\n  - {name: a, when: {signal: degradation}, action: area_notice}\n"
        "  - {name: a, when: {signal: degradation}, action: area_notice}\n"
    )
    with pytest.raises(ConfigError, match="used twice"):
        load_policy(dup)
    twice = tmp_path / "t.yaml"  # one rule, its action written twice: neither is guessed
    twice.write_text(
        "rules:\n  - name: a\n    when: {signal: degradation}\n    action: area_notice\n"
        "    action: service_credit\n"
    )
    with pytest.raises(
        ConfigError, match=r"(?s)'action' a second time \(first at line 4\).*line 5"
    ):
        load_policy(twice)
    norwegian = tmp_path / "n.yaml"  # `no:` is a language here, not YAML 1.1's false
    norwegian.write_text(
        "rules:\n  - {name: a, when: {signal: cell_incident}, action: area_notice}\n"
        "messages:\n  area_notice:\n    no: Det er en feil i nettet der du bor.\n"
    )
    assert load_policy(norwegian).messages["area_notice"]["no"].startswith("Det er en feil")


def test_the_shipped_policy_file_is_the_built_in_default():
    from cxstream.actions.rules import load_policy

    assert load_policy("config/policy.yaml") == DEFAULT_POLICY


def test_every_action_carries_its_message_in_the_customers_language():
    config = POLICY.model_copy(
        update={
            "messages": PolicyConfig.model_validate(
                {
                    "rules": [r.model_dump() for r in POLICY.rules],
                    "messages": {"proactive_apology": {"fr": "Désolés pour {cell} !"}},
                }
            ).messages
        }
    )
    policy, _ = make_policy(config)
    english = customer("s1")
    french = customer("s2").model_copy(update={"language": "fr"})
    german = customer("s3").model_copy(update={"language": "de"})  # no German text: English
    signals = [
        SignalIn(
            "degradation",
            c.subscriber_id,
            c,
            0.97,
            f"deg-{c.subscriber_id}",
            NOON,
            details={"cell_id": "cell-7"},
        )
        for c in (english, french, german)
    ]
    actions = [d.action for d in policy.decide_many(signals, NOON)]
    texts = [a.content for a in actions]
    assert texts[0].startswith("We noticed your connection")
    assert texts[1] == "Désolés pour cell-7 !"
    assert texts[2] == texts[0]
    # each says the language its text is in, and the customer's own where the two differ
    assert [(a.language, a.customer_language) for a in actions] == [
        ("en", "en"),
        ("fr", "fr"),
        ("en", "de"),
    ]
    sent = {c["name"]: c["value"] for c in communication_message(actions[2])["characteristic"]}
    assert (sent["language"], sent["customerLanguage"]) == ("en", "de")


@pytest.mark.parametrize("template", ["{customer.name}", "{offer[0]}", "{subscriber_id}", "{"])
def test_a_message_template_may_name_only_the_cell_and_the_offer(template):
    with pytest.raises(ValueError, match=r"messages\.area_notice\.en"):
        PolicyConfig.model_validate(
            {
                "rules": [r.model_dump() for r in POLICY.rules],
                "messages": {"area_notice": {"en": template}},
            }
        )

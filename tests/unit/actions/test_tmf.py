"""TMF642 alarms carry the mandatory fields, with X.733's event type as TMF642 spells it."""

from __future__ import annotations

from datetime import UTC, datetime

from cxstream.actions.tmf import alarm_from_incident, service_problem_from_incident
from cxstream.events import AffectedSubscriber, CellIncident

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_cell_incident_alarm_has_every_mandatory_tmf642_field():
    incident = CellIncident(
        incident_id="inc-c1-1",
        cell_id="c1",
        state="open",
        severity="major",
        opened_at=T,
        updated_at=T,
        affected=[AffectedSubscriber(subscriber_id="s1", value_tier="gold")],
        active_subscribers=10,
        share=0.4,
        experience=30.0,
    )
    alarm = alarm_from_incident(incident, 0.3)
    mandatory = (
        "alarmType",
        "perceivedSeverity",
        "probableCause",
        "alarmedObject",
        "sourceSystemId",
        "state",
        "alarmRaisedTime",
    )
    assert all(alarm.get(name) for name in mandatory)
    assert alarm["alarmType"] == "qualityOfServiceAlarm"  # X.733 event type, lower camel case
    assert (alarm["state"], alarm["perceivedSeverity"]) == ("raised", "major")


def test_a_silent_cell_is_a_loss_of_signal_and_a_kpi_incident_names_its_kpi():
    why = {
        "anomalous_kpis": {
            "volume": {"value": 0.0, "baseline": 52.0, "score": 1.0, "direction": "down"},
            "active": {"value": 0.0, "baseline": 18.0, "score": 1.0, "direction": "down"},
        }
    }
    outage = CellIncident(
        incident_id="inc-c1-2",
        cell_id="c1",
        cause="outage",
        state="open",
        severity="critical",
        opened_at=T,
        updated_at=T,
        affected=[],
        active_subscribers=0,
        share=0.0,
        experience=0.0,
        why=why,
    )
    alarm = alarm_from_incident(outage, 0.3)
    assert (alarm["alarmType"], alarm["probableCause"]) == ("communicationsAlarm", "lossOfSignal")
    assert alarm["crossedThresholdInformation"]["indicatorName"] == "volume"
    assert alarm["crossedThresholdInformation"]["direction"] == "down"
    assert "collapsed" in alarm["specificProblem"]
    # cleared, it says how the cell is now beside how many it caught, not one mixed with the
    # other ("3 of 20 degraded; mean experience 97" for a cell where none is degraded)
    hurt = [AffectedSubscriber(subscriber_id=f"s{i}", value_tier="gold") for i in range(3)]
    over = outage.model_copy(
        update={"state": "resolved", "affected": hurt, "active_subscribers": 20, "experience": 97.0}
    )
    assert alarm_from_incident(over, 0.3)["specificProblem"] == (
        "cleared: 0 of 20 active subscribers degraded now, mean experience 97/100; 3 were affected"
    )
    assert service_problem_from_incident(over)["description"].startswith("cleared: 0 of 20")
    # open, the same: 28 of the 28 active degraded now, and 29 caught (one has left the cell)
    moved = [AffectedSubscriber(subscriber_id=f"s{i}", value_tier="gold") for i in range(29)]
    busy = outage.model_copy(
        update={"cause": "degraded_share", "why": {}, "affected": moved, "share": 1.0,
                "active_subscribers": 28, "experience": 38.0}
    )  # fmt: skip
    assert alarm_from_incident(busy, 0.3)["specificProblem"] == (
        "28 of 28 active subscribers degraded; mean experience 38/100; 29 affected so far"
    )
    just = busy.model_copy(update={"affected": moved[:14], "share": 0.5})
    assert alarm_from_incident(just, 0.3)["specificProblem"] == (
        "14 of 28 active subscribers degraded; mean experience 38/100"
    )
    mild = outage.model_copy(update={"cause": "kpi_anomaly", "severity": "minor"})
    alarm = alarm_from_incident(mild, 0.3)
    assert (alarm["alarmType"], alarm["probableCause"]) == (
        "qualityOfServiceAlarm",
        "performanceDegraded",
    )


def test_a_communication_message_has_content_and_tmf681_priority():
    from cxstream.actions.tmf import communication_message
    from cxstream.events import Action

    action = Action(
        action_id="a1",
        kind="area_notice",
        subscriber_id="s1",
        channel="sms",
        reason="cell_incident",
        alert_id="inc-1",
        event_time=T,
        created_at=T,
        priority=60,
        content="There is a network problem in your area.",
    )
    message = communication_message(action)
    assert message["content"] == "There is a network problem in your area."
    assert message["priority"] == "3"  # TMF681: smaller is more urgent; the policy's 60 -> 3
    policy_priority = {c["name"]: c["value"] for c in message["characteristic"]}["priority"]
    assert policy_priority == 60

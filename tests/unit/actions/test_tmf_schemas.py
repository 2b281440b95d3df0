"""Every payload kind cxstream emits validates against the TM Forum documents vendored in
``tests/standards`` (TMF642 Alarm, TMF656 ServiceProblem, TMF681 CommunicationMessage), and the
validators catch what the standards forbid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from starlette.testclient import TestClient

from cxstream.actions.tmf import (
    alarm_from_alert,
    alarm_from_incident,
    cleared_alarm,
    communication_message,
    endpoint_alarm,
    service_problem_from_incident,
)
from cxstream.batches import AlarmClear
from cxstream.dashboard.app import create_app
from cxstream.dashboard.state import DashboardState
from cxstream.events import AffectedSubscriber, Alert, CellIncident, Channel
from tests.standards import (
    alarm_errors,
    alarm_event_errors,
    errors,
    message_errors,
    problem_errors,
)
from tests.unit.actions.test_webhook import action as webhook_action
from tests.unit.test_dashboard_app import command

T = datetime(2026, 1, 1, tzinfo=UTC)
KPIS = {"volume": {"value": 0.0, "baseline": 52.0, "score": 1.0, "direction": "down"}}


def incident(cause, state):
    return CellIncident(
        incident_id=f"inc-c1-{cause}",
        cell_id="c1",
        cause=cause,
        state=state,
        severity="critical" if cause == "outage" else "major",
        opened_at=T,
        updated_at=T + timedelta(minutes=3),
        affected=[AffectedSubscriber(subscriber_id=f"s{i}", value_tier="gold") for i in range(3)],
        active_subscribers=10,
        share=0.3,
        experience=41.0,
        why={} if cause == "degraded_share" else {"anomalous_kpis": KPIS},
    )


def alert(explained_by=None):
    return Alert(
        alert_id="deg-s1-e9",
        kind="degradation",
        severity="major",
        subscriber_id="s1",
        cell_id="c1",
        score=0.99,
        experience=41.0,
        event_time=T,
        detected_at=T,
        explained_by=explained_by,
        why={
            "inputs": [{"input": "rtt_ms", "from": 40.0, "to": 400.0}],
            "experience": {"from": 88},
        },
    )


CASES = [
    (c, s)
    for c in ("degraded_share", "kpi_anomaly", "outage")
    for s in ("open", "updated", "resolved")
]


@pytest.mark.parametrize(("cause", "state"), CASES)
def test_cell_incident_alarms_and_service_problems_validate(cause, state):
    inc = incident(cause, state)
    assert alarm_errors(alarm_from_incident(inc, 0.25)) == []
    assert problem_errors(service_problem_from_incident(inc)) == []


@pytest.mark.parametrize("explained_by", [None, "inc-c1-degraded_share"])
def test_individual_degradation_alarms_raised_and_cleared_validate(explained_by):
    assert alarm_errors(alarm_from_alert(alert(explained_by))) == []
    clear = AlarmClear("deg-s1-e9", "s1", "c1", T.timestamp(), T.timestamp() + 300,
                       "responseTimeExcessive")  # fmt: skip
    assert alarm_errors(cleared_alarm(clear)) == []


def test_the_disabled_endpoint_alarm_validates():
    assert (
        alarm_errors(endpoint_alarm("https://crm.example/hooks", "answered HTTP 410 Gone", T)) == []
    )


@pytest.mark.parametrize("deferred", [False, True])
def test_communication_messages_validate(deferred):
    action = webhook_action().model_copy(
        update={
            "channel": Channel.EMAIL,
            "send_at": T + timedelta(hours=9) if deferred else None,
            "offer": {"id": "data-boost-5gb", "price": 0},
            "details": {"churn": {"probability": 0.4}},
            "content": "We are sorry about the interruption.",
            "language": "en",
            "customer_language": "de",
        }
    )
    message = communication_message(action)
    assert message_errors(message) == []
    assert ("scheduledSendTime" in message) is deferred


def test_dashboard_acknowledge_and_clear_events_validate():
    state = DashboardState()
    state.on_alert(alarm_from_incident(incident("degraded_share", "open"), 0.25))
    published = []
    app = create_app(state, context=None, publish=lambda t, k, v: published.append(v),
                     updates_topic="cx.alarm-updates", token=None)  # fmt: skip
    client = TestClient(app)
    assert command(client, "/api/incidents/inc-c1-degraded_share/ack", {"user": "alice"}).is_success
    assert command(
        client, "/api/incidents/inc-c1-degraded_share/resolve", {"user": "bob"}
    ).is_success
    events = [orjson.loads(v) for v in published]
    assert [e["eventType"] for e in events] == [
        "AlarmAttributeValueChangeEvent",
        "AlarmStateChangeEvent",
    ]
    assert [alarm_event_errors(e) for e in events] == [[], []]


def test_the_validators_catch_what_the_standards_forbid():
    raised = alarm_from_alert(alert())
    missing = {k: v for k, v in raised.items() if k != "probableCause"}
    assert any("probableCause" in e for e in alarm_errors(missing))
    assert alarm_errors({**raised, "alarmRaisedTime": "yesterday"})  # not an RFC 3339 date-time
    assert alarm_errors({**raised, "isRootCause": "no"})  # a boolean in TMF642
    problem = service_problem_from_incident(incident("outage", "open"))
    assert problem_errors({**problem, "status": "Submitted"})  # not a TMF656 v4 state
    assert problem_errors({**problem, "priority": "3"})  # an integer 1..10 in TMF656
    bad_alert = {**problem, "firstAlert": {"id": "x", "@referredType": "Alarm"}}  # no role
    assert any("role" in e for e in problem_errors(bad_alert))
    message = communication_message(webhook_action())
    assert any(
        "content" in e for e in message_errors({k: v for k, v in message.items() if k != "content"})
    )
    assert message_errors({**message, "state": "sent"})  # not a TMF681 state
    assert errors("TMF642", "Alarm_Update", {"ackState": 1})
    assert alarm_event_errors({"eventType": "AlarmCreated", "event": {}})

"""Operators' commands from the dashboard reach the flow: parsed from the alarm-updates topic,
applied by the cell's demarcation, and the area notices still waiting are cancelled."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.testclient import TestClient

from cxstream import metrics
from cxstream.actions.ledger import DeferredQueue
from cxstream.actions.store import MemoryClaimStore
from cxstream.actions.tmf import alarm_from_incident, service_problem_from_incident
from cxstream.context import ContextStore
from cxstream.dashboard.app import create_app
from cxstream.dashboard.state import DashboardState
from cxstream.events import (
    Action,
    AlarmCommand,
    BadEvent,
    CellIncident,
    parse_alarm_command,
)
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from cxstream.steps.common import RedisTrouble
from cxstream.steps.decide import Decide
from tests.fakes import FakeRedis
from tests.standards import alarm_errors, problem_errors
from tests.unit.test_dashboard_app import command

T = datetime(2026, 1, 1, 12, tzinfo=UTC)


def incident(state="open", resolved_by=None, iid="inc-c7-1"):
    return CellIncident(
        incident_id=iid, cell_id="c7", state=state, severity="major", opened_at=T,
        updated_at=T, affected=[], active_subscribers=10, share=0.5, experience=30.0,
        resolved_by=resolved_by,
    )  # fmt: skip


def dashboard_events():
    """What the dashboard publishes when alice acknowledges and bob resolves an incident."""
    state = DashboardState()
    state.on_alert(alarm_from_incident(incident(), 0.3))
    published = []
    app = create_app(state, context=None, publish=lambda t, k, v: published.append(v),
                     updates_topic="cx.alarm-updates", token=None)  # fmt: skip
    client = TestClient(app)
    assert command(client, "/api/incidents/inc-c7-1/ack", {"user": "alice"}).is_success
    assert command(client, "/api/incidents/inc-c7-1/resolve", {"user": "bob"}).is_success
    return published


def test_the_dashboards_commands_parse_as_commands_with_their_user_and_cell():
    ack, resolve = (parse_alarm_command(v) for v in dashboard_events())
    assert (ack.verb, ack.user, ack.cell_id, ack.incident_id) == ("ack", "alice", "c7", "inc-c7-1")
    assert (resolve.verb, resolve.user, resolve.cell_id) == ("resolve", "bob", "c7")


def test_a_malformed_command_is_a_dead_letter_of_kind_command():
    for raw in (b"nope", b"{}", orjson.dumps({"eventType": "AlarmStateChangeEvent",
                "event": {"alarm": {"id": "inc-1", "alarmedObject": {"id": "c1"},
                                    "alarmChangedTime": T.isoformat()}}})):  # fmt: skip
        bad = parse_alarm_command(raw)
        assert isinstance(bad, BadEvent) and bad.kind == "command"
    ack = dashboard_events()[0]
    state = b'"ackState":"acknowledged"'
    assert state in ack
    twice = ack.replace(state, state + b',"ackState":"unacknowledged"')  # which one holds?
    bad = parse_alarm_command(twice)
    assert isinstance(bad, BadEvent) and bad.detail.startswith("event.alarm.ackState: key written")


def test_a_resolve_closes_the_open_incident_in_its_shard_and_names_the_operator():
    settings = load_settings()
    pipeline = Pipeline(settings, context=ContextStore(FakeRedis()), claims=MemoryClaimStore())
    monitor = pipeline.new_cell_monitor("c7")
    t = 0
    while monitor.incident is None and t < 600:  # every subscriber of the cell degraded
        t += 1
        for k in range(40):
            monitor.observe(1e9 + t + k * 0.01, f"s{k}", degraded=True, experience=10.0)
    iid = monitor.incident.incident_id
    before = metrics.OPERATOR_COMMANDS.labels("resolve", "not_open")._value.get()
    command = AlarmCommand(incident_id=iid, cell_id="c7", verb="resolve", user="bob", at=T)
    [(key, routed)] = pipeline.route_commands([command])
    assert key in pipeline.shard_keys and routed == command
    [closed] = pipeline.apply_commands({"c7": monitor}, [command])
    assert (closed.state, closed.resolved_by, closed.incident_id) == ("resolved", "bob", iid)
    assert pipeline.apply_commands({"c7": monitor}, [command]) == []  # closed already
    assert metrics.OPERATOR_COMMANDS.labels("resolve", "not_open")._value.get() == before + 1
    alarm, problem = alarm_from_incident(closed, 0.3), service_problem_from_incident(closed)
    assert (alarm["state"], alarm["clearUserId"]) == ("cleared", "bob")
    assert problem["statusChangeReason"] == "resolved by bob"
    assert alarm_errors(alarm) == [] and problem_errors(problem) == []


def notice(sid, iid):
    return Action(
        action_id=f"{iid}:{sid}:area_notice", kind="area_notice", subscriber_id=sid,
        channel="sms", reason="cell_incident", alert_id=iid, event_time=T, created_at=T,
        send_at=T, rule="area-notice",
    )  # fmt: skip


def test_the_area_notices_waiting_for_a_resolved_incident_are_cancelled_with_the_reason():
    deferred = DeferredQueue()
    for sid in ("s1", "s2"):
        deferred.push(T.timestamp() + 3600, notice(sid, "inc-c7-1"))
    deferred.push(T.timestamp() + 3600, notice("s3", "inc-c9-1"))
    decide = Decide(None, None, deferred, None, clock=lambda: T, trouble=RedisTrouble())  # type: ignore[arg-type]
    decisions = decide.decide_batch([incident("resolved", resolved_by="bob")])
    assert sorted((d.signal.subscriber_id, d.result) for d in decisions) == [
        ("s1", "suppressed:incident_resolved"),
        ("s2", "suppressed:incident_resolved"),
    ]
    assert all(d.signal.details["resolved_by"] == "bob" for d in decisions)
    assert [a.subscriber_id for a in deferred.pop_due(T.timestamp() + 7200)] == ["s3"]
    # a resolve by the network (no operator) cancels nothing now: release checks it later
    deferred.push(T.timestamp() + 3600, notice("s4", "inc-c9-1"))
    assert decide.decide_batch([incident("resolved", iid="inc-c9-1")]) == []

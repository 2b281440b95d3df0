"""The dashboard app without a browser or sockets: auth, API shapes, acknowledgements."""

from __future__ import annotations

from starlette.testclient import TestClient

from cxstream.dashboard.app import _Health, create_app
from cxstream.dashboard.state import DashboardState

ALARM = {
    "@type": "Alarm",
    "id": "inc-c1-1",
    "alarmedObject": {"id": "c1", "@referredType": "Cell"},
    "state": "raised",
    "perceivedSeverity": "major",
    "alarmRaisedTime": "2026-01-01T00:00:00+00:00",
    "alarmChangedTime": "2026-01-01T00:00:00+00:00",
    "affectedService": [
        {"id": "s2", "valueTier": "bronze"},
        {"id": "s1", "valueTier": "gold"},
        {"id": "s3", "valueTier": "platinum"},
        {"id": "s4", "valueTier": "bronze"},
    ],
    "x-cxstream": {"share": 0.5},
}


def make(token=None):
    state = DashboardState()
    state.on_alert(dict(ALARM))
    state.on_alert(
        {
            "kind": "degradation",
            "subscriber_id": "s1",
            "value_tier": "gold",
            "cell_id": "c1",
            "experience_index": 20.0,
            "explained_by": "inc-c1-1",
            "why": {"inputs": []},
        }
    )
    state.on_decision(
        {
            "subscriber_id": "s1",
            "signal": "cell_incident",
            "kind": "area_notice",
            "result": "sent",
            "rule": "r",
            "action_id": "a1",
            "decided_at": "2026-01-01T00:00:01+00:00",
        }
    )
    state.on_delivery({"action_id": "a1", "status": "delivered", "attempts": 1})
    published = []
    app = create_app(
        state,
        context=None,
        publish=lambda t, k, v: published.append((t, k, v)),
        updates_topic="cx.alarm-updates",
        token=token,
    )
    return TestClient(app), published


def test_unauthenticated_requests_are_refused_when_auth_is_on():
    client, _ = make(token="s3cret")
    for path in ("/", "/api/overview", "/api/customers?q=s", "/static/app.js"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/incidents/inc-c1-1/ack").status_code == 401
    assert client.get("/api/overview", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/?token=s3crét").status_code == 401  # non-ASCII: refused, not a 500
    latin = {"authorization": "Bearer ünï".encode("latin-1")}
    assert client.get("/api/overview", headers=latin).status_code == 401
    assert (
        client.get("/api/overview", headers={"authorization": "Bearer s3cret"}).status_code == 200
    )
    # the URL printed at start sets a cookie once, then the page works without the token in the URL
    login = client.get("/?token=s3cret", follow_redirects=False)
    assert login.status_code == 303
    assert "cx_token" in login.headers["set-cookie"]
    assert "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/api/overview").status_code == 200


def test_overview_shapes_and_value_at_risk():
    client, _ = make()
    data = client.get("/api/overview").json()
    [incident] = data["incidents"]
    assert (incident["cell_id"], incident["affected"], incident["value_at_risk"]) == ("c1", 4, 9)
    assert list(incident["tiers"].items()) == [("platinum", 1), ("gold", 1), ("bronze", 2)]
    assert data["customers"][0]["subscriber_id"] == "s1"
    assert data["actions"][0]["status"] == "delivered"
    assert set(data["health"]) >= {"events_per_s", "lag", "dead_letters", "webhook_failed", "state"}


def test_events_per_second_is_a_rolling_rate_not_a_flicker():
    now = [0.0]
    done = [0.0]
    health = _Health(window_s=10.0, clock=lambda: now[0])
    health._rate({"processed": 0.0})
    rates = []
    for step in range(1, 41):  # polls every 0.25 s; 1,000 events arrive once a second
        now[0] = step * 0.25
        if step % 4 == 0:
            done[0] += 1000
        rates.append(health._rate({"processed": done[0]}))
    assert all(850 <= r <= 1100 for r in rates[-20:]), rates[-20:]  # never 0 between batches


def test_acknowledgement_is_recorded_and_published_as_a_tmf642_update():
    client, published = make()
    res = client.post("/api/incidents/inc-c1-1/ack", json={"user": "alice"})
    assert res.status_code == 200
    [(topic, key, value)] = published
    assert (topic, key) == ("cx.alarm-updates", b"c1")  # not the full alarms' topic
    import orjson

    event = orjson.loads(value)
    assert event["eventType"] == "AlarmAttributeValueChangeEvent"
    alarm = event["event"]["alarm"]  # the alarm's id and the Alarm_Update fields that changed
    assert (alarm["id"], alarm["ackState"], alarm["ackUserId"]) == (
        "inc-c1-1",
        "acknowledged",
        "alice",
    )
    assert alarm["ackSystemId"] == "cxstream-dashboard"  # a system, not a timestamp
    assert "clearUserId" not in alarm
    assert client.get("/api/overview").json()["incidents"][0]["ack"]["by"] == "alice"
    assert client.post("/api/incidents/inc-c1-1/resolve", json={"user": "bob"}).status_code == 200
    cleared_event = orjson.loads(published[-1][2])
    assert cleared_event["eventType"] == "AlarmStateChangeEvent"
    cleared = cleared_event["event"]["alarm"]
    assert (cleared["state"], cleared["clearUserId"], cleared["clearSystemId"]) == (
        "cleared",
        "bob",
        "cxstream-dashboard",
    )
    assert cleared["alarmClearedTime"] == cleared["alarmChangedTime"]
    assert "ackUserId" not in cleared  # the resolver did not acknowledge it
    assert client.get("/api/overview").json()["incidents"][0]["state"] == "cleared"
    assert client.post("/api/incidents/nope/ack", json={}).status_code == 404
    assert client.post("/api/incidents/inc-c1-1/explode", json={}).status_code == 404


def test_customer_page_and_search():
    client, _ = make()
    assert client.get("/api/customers?q=s1").json()["results"] == ["s1"]
    page = client.get("/api/customers/s1").json()
    assert page["incidents"][0]["id"] == "inc-c1-1"
    assert page["decisions"][0]["result"] == "sent"
    assert client.get("/api/customers/ghost").status_code == 404


def test_the_page_never_shows_secrets():
    client, _ = make()
    html = client.get("/").text + client.get("/static/app.js").text
    assert "whsec_" not in html and "token" not in html.lower().replace("cx_token", "")


def test_a_disabled_webhook_endpoint_is_shown_and_is_not_an_incident():
    from datetime import UTC, datetime

    from cxstream.actions.tmf import endpoint_alarm

    state = DashboardState()
    state.on_alert(dict(ALARM))
    state.on_alert(
        endpoint_alarm(
            "https://crm.example/hooks", "answered HTTP 410 Gone", datetime(2026, 1, 1, tzinfo=UTC)
        )
    )
    app = create_app(state, context=None, publish=None, updates_topic="u", token=None)
    overview = TestClient(app).get("/api/overview").json()
    assert [i["id"] for i in overview["incidents"]] == ["inc-c1-1"]
    [gone] = overview["webhook_disabled"]
    assert gone["endpoint"] == "https://crm.example/hooks"
    assert "410" in gone["problem"]

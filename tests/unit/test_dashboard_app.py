"""The dashboard app without a browser or sockets: auth, API shapes, acknowledgements."""

from __future__ import annotations

from starlette.testclient import TestClient

from cxstream.dashboard.app import _Health, _updates, create_app
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


def command(client, path, body=None):
    """POST a command as the page does: with the anti-forgery cookie echoed in the header."""
    if "cx_csrf" not in client.cookies:
        client.get("/api/me")
    headers = {"x-csrf-token": client.cookies.get("cx_csrf", "")}
    return client.post(path, json=body if body is not None else {}, headers=headers)


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
    for path in (
        "/",
        "/api/overview",
        "/api/customers?q=s",
        "/api/customers/s1",
        "/api/incidents",
        "/api/incidents/inc-c1-1",
        "/api/openapi.json",
        "/api/events",
        "/static/app.js",
    ):
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
    assert (incident["cell_id"], incident["affected"]) == ("c1", 4)
    assert incident["value_at_risk"] is None  # no churn scores nor values without a risk view
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


def test_a_command_kafka_did_not_take_is_refused_and_not_recorded():
    from cxstream.errors import ServiceError

    state = DashboardState()
    state.on_alert(dict(ALARM))

    def publish(topic, key, value):
        raise ServiceError("Kafka did not confirm it within 10 s (no answer)")

    app = create_app(state, context=None, publish=publish, updates_topic="u", token=None)
    client = TestClient(app)
    for verb in ("ack", "resolve"):
        res = command(client, f"/api/incidents/inc-c1-1/{verb}", {"user": "alice"})
        assert res.status_code == 503
        assert "Kafka did not confirm" in res.json()["error"]
    [incident] = client.get("/api/overview").json()["incidents"]
    assert incident["state"] == "raised"  # the page does not show what the flow never heard
    assert not incident.get("acknowledged_by") and state.acks == {}


def test_an_input_broker_silent_for_ten_seconds_or_more_is_in_the_health_line(monkeypatch):
    from cxstream.flows import source

    silence = source.InputSilence()
    monkeypatch.setitem(source._SILENCES, -1, silence)
    health = _Health()
    silence.seconds = 9.6  # a blip: fetches are answered every half second
    assert health.read()["kafka_silent_s"] is None
    silence.seconds = 37.6
    assert health.read()["kafka_silent_s"] == 38


def test_the_first_read_has_no_rate_rather_than_zero():
    now = [0.0]
    health = _Health(window_s=10.0, clock=lambda: now[0])
    assert health._rate({"processed": 5_000.0}) is None  # nothing to compare with yet
    now[0] = 1.0
    assert health._rate({"processed": 5_600.0}) == 600.0


def test_the_health_line_is_pushed_while_nothing_else_changes():
    # A stalled flow (or one whose Redis is down) emits nothing, so the state's version stands
    # still: the page must still learn that the flow stalled and the lag grew.
    import asyncio

    state = DashboardState()
    readings = iter(
        [
            {"state": "ok", "lag": 0.0},  # in the first overview
            {"state": "ok", "lag": 0.0},  # unchanged: a keep-alive
            {"state": "stalled", "lag": 5_000.0},  # pushed alone
            {"state": "stalled", "lag": 9_000.0},  # pushed alone
            {"state": "ok", "lag": 0.0},  # in the overview, once the state changes again
        ]
    )

    class Health:
        def read(self):
            return next(readings)

    health = Health()

    def overview():
        return {"version": state.version, "health": health.read()}

    async def collect(ticks):
        out = []

        async def disconnected():
            if len(out) == 4:
                state.on_cell({"cell_id": "c1", "experience": 80.0})  # the flow is back
            return len(out) >= ticks

        async for chunk in _updates(state, overview, health, 0.0, disconnected):
            out.append(chunk)
        return out

    chunks = asyncio.run(collect(5))
    kinds = [c.split(b"\n", 1)[0] for c in chunks]
    assert kinds == [
        b"event: overview",
        b": keep-alive",
        b"event: health",
        b"event: health",
        b"event: overview",
    ], kinds
    import orjson

    pushed = [orjson.loads(c.split(b"data: ", 1)[1]) for c in chunks if c.startswith(b"event: h")]
    assert [p["health"]["lag"] for p in pushed] == [5_000.0, 9_000.0]
    assert pushed[0]["health"]["state"] == "stalled"


def test_acknowledgement_is_recorded_and_published_as_a_tmf642_update():
    client, published = make()
    res = command(client, "/api/incidents/inc-c1-1/ack", {"user": "alice"})
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
    assert command(client, "/api/incidents/inc-c1-1/resolve", {"user": "bob"}).status_code == 200
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
    assert command(client, "/api/incidents/nope/ack").status_code == 404
    assert command(client, "/api/incidents/inc-c1-1/explode").status_code == 404


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
    page = html.lower().replace("cx_token", "").replace("x-csrf-token", "")
    assert "whsec_" not in html and "token" not in page


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


def risk_view():
    """A risk view of four customers with profiles and churn scores, and their context store."""
    from cxstream.actions.rules import ValueModel
    from cxstream.churn_state import MemoryChurnState
    from cxstream.context import ContextStore
    from cxstream.dashboard.risk import RiskView
    from cxstream.events import CustomerContext
    from tests.fakes import FakeRedis

    context = ContextStore(FakeRedis())
    charges = {"s1": 80.0, "s2": 20.0, "s3": 100.0, "s4": 40.0}
    context.put_many(
        [CustomerContext(subscriber_id=s, monthly_charge=c, open_tickets=1 if s == "s1" else 0)
         for s, c in charges.items()]
    )  # fmt: skip
    churn = MemoryChurnState()
    risks = {"s1": 0.5, "s2": 0.9, "s3": 0.1, "s4": 0.25}
    reasons = [{"feature": "contract=month_to_month", "contribution": 0.8}]
    churn.save_snapshots(
        [(s, {"risk": r, "scored_at": "2026-01-01T00:00:00+00:00", "top_features": reasons,
               "trend": [["2025-12-31T00:00:00+00:00", 0.3], ["2026-01-01T00:00:00+00:00", r]]})
         for s, r in risks.items()]
    )  # fmt: skip
    model = ValueModel(weights={}, currency="USD", revenue_months=12)
    risk = RiskView(context, churn, lambda: model)
    return risk, context


def risk_client():
    """The app with a risk view: four affected customers with profiles and churn scores."""
    risk, context = risk_view()
    state = DashboardState()
    state.on_alert(dict(ALARM))
    for sid in ("s1", "s2"):
        state.on_alert({"kind": "degradation", "subscriber_id": sid, "cell_id": "c1",
                        "value_tier": "gold", "experience_index": 30.0})  # fmt: skip
    state.on_decision(
        {
            "joined_outcome": {
                "subscriber_id": "s1",
                "outcome": "offer_accepted",
                "time": "2026-01-02T10:00:00+00:00",
            }
        }
    )
    state.on_decision({"subscriber_id": "s1", "signal": "churn_risk", "kind": "retention_offer",
                       "result": "sent", "rule": "r", "action_id": "a9",
                       "decided_at": "2026-01-01T00:00:01+00:00"})  # fmt: skip
    app = create_app(state, context=context, publish=None, updates_topic="u", token=None,
                     risk=risk)  # fmt: skip
    client = TestClient(app)
    client.app_context = context  # the tests write profiles through it
    client.dashboard_state = state
    return client


def test_value_at_risk_is_money_and_at_risk_customers_rank_by_expected_loss():
    client = risk_client()
    data = client.get("/api/overview").json()
    # 12 months of revenue x churn probability: s1 480, s2 216, s3 120, s4 120
    assert data["incidents"][0]["value_at_risk"] == {"amount": 936.0, "currency": "USD"}
    assert data["currency"] == "USD"
    ranked = [(c["subscriber_id"], c["expected_loss"]["amount"]) for c in data["customers"]]
    assert ranked == [("s1", 480.0), ("s2", 216.0)]  # not by tier: by what each may cost
    assert data["customers"][0]["churn_probability"] == 0.5
    assert data["customers"][0]["reasons"][0]["feature"] == "contract=month_to_month"
    [incident] = client.get("/api/incidents").json()["incidents"]
    assert incident["value_at_risk"] == {"amount": 936.0, "currency": "USD"}
    assert [a["subscriber_id"] for a in incident["affected"]] == ["s1", "s2", "s3", "s4"]
    assert incident["affected"][1]["churn_probability"] == 0.9
    assert incident["affected"][1]["value"] == {"amount": 240.0, "currency": "USD"}


def test_one_incident_unfolds_to_its_customers_with_their_tier_highest_expected_loss_first():
    client = risk_client()
    incident = client.get("/api/incidents/inc-c1-1").json()
    assert incident["id"] == "inc-c1-1" and incident["cell_id"] == "c1"
    assert incident["value_at_risk"] == {"amount": 936.0, "currency": "USD"}
    assert [(a["subscriber_id"], a["value_tier"], a["expected_loss"]["amount"])
            for a in incident["affected"]] == [
        ("s1", "gold", 480.0), ("s2", "bronze", 216.0), ("s3", "platinum", 120.0),
        ("s4", "bronze", 120.0),
    ]  # fmt: skip
    missing = client.get("/api/incidents/inc-c9-9")
    assert missing.status_code == 404 and "inc-c9-9" in missing.json()["error"]
    assert "/api/incidents/{incident_id}" in client.get("/api/openapi.json").json()["paths"]


def test_customers_still_degraded_come_before_those_recovered():
    # over a long run the list filled with valuable customers hurt hours ago, and a bronze
    # customer degraded now fell below its 200 rows
    state = DashboardState()
    for sid, tier in (("s1", "platinum"), ("s2", "gold"), ("s3", "bronze")):
        state.on_alert({"kind": "degradation", "subscriber_id": sid, "cell_id": "c1",
                        "value_tier": tier, "experience_index": 30.0, "alert_id": f"al-{sid}"})  # fmt: skip
    for sid in ("s1", "s2"):  # their degradations cleared, s2's last
        state.on_alert({"x-cxstream": {"kind": "degradation_cleared", "subscriber_id": sid,
                        "alert_id": f"al-{sid}"}, "alarmClearedTime": "2026-01-01T00:05:00Z"})  # fmt: skip
    assert [c["subscriber_id"] for c in state.overview(limit=1)["customers"]] == ["s3"]
    assert [c["subscriber_id"] for c in state.overview()["customers"]] == ["s3", "s2", "s1"]
    # by expected loss (s1 480, s2 216, s3 120), the degraded first: s3 is hurt now
    risk, _ = risk_view()
    app = create_app(state, context=None, publish=None, updates_topic="u", token=None, risk=risk)
    ranked = TestClient(app).get("/api/overview").json()["customers"]
    assert [c["subscriber_id"] for c in ranked] == ["s3", "s1", "s2"]
    assert ranked[1]["cleared_at"] == "2026-01-01T00:05:00Z"


def test_a_customer_whose_outcome_was_learned_keeps_their_last_score_until_scored_again():
    # the snapshot moves to the learned record with the outcome: the page said "Not scored
    # yet" and the list showed no risk for a scored customer until the next scheduled pass
    from cxstream.actions.rules import ValueModel
    from cxstream.churn_state import MemoryChurnState
    from cxstream.dashboard.risk import RiskView

    churn = MemoryChurnState()
    scored = {"risk": 0.3, "scored_at": "2026-01-01T00:00:00+00:00", "features": {"x": 1.0}}
    churn.save_snapshots([("stays", scored), ("leaves", scored), ("new", scored)])
    churn.mark_learned(
        [
            ("stays", {**scored, "outcome": "retained@2026-01-02T00:00:00+00:00"}),
            ("leaves", {**scored, "outcome": "churned@2026-01-02T00:00:00+00:00"}),
        ]
    )
    churn.save_snapshots([("new", {**scored, "risk": 0.6})])
    model = ValueModel(weights={}, currency="USD", revenue_months=12)
    per = RiskView(None, churn, lambda: model).customers(["stays", "leaves", "new", "never"])
    assert per["stays"]["churn_probability"] == 0.3  # still their latest score
    assert per["stays"]["scored_at"] == "2026-01-01T00:00:00+00:00"
    assert per["leaves"]["churn_probability"] is None  # gone: nothing more at risk
    assert per["new"]["churn_probability"] == 0.6
    assert per["never"]["churn_probability"] is None


def test_an_outage_row_says_where_the_cells_subscribers_went_and_whom_it_left_in_the_dark():
    from datetime import UTC, datetime

    from cxstream.actions.tmf import alarm_from_incident
    from cxstream.events import AffectedSubscriber, CellIncident

    t = datetime(2026, 1, 1, tzinfo=UTC)
    dark = [AffectedSubscriber(subscriber_id="s1", value_tier="gold"),
            AffectedSubscriber(subscriber_id="s2", value_tier="bronze")]  # fmt: skip
    outage = CellIncident(incident_id="inc-c9-1", cell_id="c9", state="open", severity="critical",
                          opened_at=t, updated_at=t, affected=dark, active_subscribers=0,
                          share=0.0, experience=100.0, cause="outage",
                          why={"cause": "outage", "moved_to": {"c8": 5, "c7": 2}})  # fmt: skip
    state = DashboardState()
    state.on_alert(alarm_from_incident(outage, 0.3))
    state.on_alert(dict(ALARM))
    rows = {r["id"]: r for r in state.overview()["incidents"]}
    assert rows["inc-c9-1"]["moved_to"] == {"c8": 5, "c7": 2}
    assert rows["inc-c9-1"]["cause"] == "outage" and rows["inc-c9-1"]["affected"] == 2
    assert rows["inc-c9-1"]["affected_ids"] == ["s1", "s2"]
    assert rows["inc-c9-1"]["tiers"] == {"gold": 1, "bronze": 1}
    # a care agent opening one of them reads that their cell went dark
    causes = {i["id"]: i["cause"] for i in state.customer("s1")["incidents"]}
    assert causes == {"inc-c9-1": "outage", "inc-c1-1": None}  # (that alarm says no cause)
    assert rows["inc-c1-1"]["moved_to"] == {}


def test_a_kpi_anomaly_row_says_which_measures_of_the_cell_left_their_normal():
    from datetime import UTC, datetime

    from cxstream.actions.tmf import alarm_from_incident
    from cxstream.events import CellIncident

    t = datetime(2026, 1, 1, tzinfo=UTC)
    shift = {"experience": {"value": 84.2, "baseline": 97.1, "score": 0.99, "direction": "down"},
             "loss_pct": {"value": 2.5, "baseline": 0.3, "score": 0.98, "direction": "up"}}  # fmt: skip
    incident = CellIncident(incident_id="inc-c4-1", cell_id="c4", state="open", severity="minor",
                            opened_at=t, updated_at=t, affected=[], active_subscribers=20,
                            share=0.0, experience=84.2, cause="kpi_anomaly",
                            why={"cause": "kpi_anomaly", "anomalous_kpis": shift})  # fmt: skip
    state = DashboardState()
    state.on_alert(alarm_from_incident(incident, 0.3))
    broken = dict(ALARM, id="inc-c5-1")
    broken["x-cxstream"] = {"why": {"anomalous_kpis": {"experience": {"value": "high"}, "x": 3}}}
    state.on_alert(broken)
    rows = {r["id"]: r for r in state.overview()["incidents"]}
    assert rows["inc-c4-1"]["affected"] == 0  # none degraded alone: the cell's measures say it
    assert rows["inc-c4-1"]["active"] == 20 and rows["inc-c5-1"]["active"] is None
    assert rows["inc-c4-1"]["kpis"] == {
        "experience": {"value": 84.2, "baseline": 97.1},
        "loss_pct": {"value": 2.5, "baseline": 0.3},
    }
    assert rows["inc-c5-1"]["kpis"] == {}  # a malformed why shows nothing, and breaks nothing
    assert state.incident_row("inc-c4-1")["kpis"] == rows["inc-c4-1"]["kpis"]


def test_the_customer_api_tells_the_whole_story_with_the_documented_keys():
    from cxstream.dashboard.openapi import OPENAPI

    client = risk_client()
    story = client.get("/api/customers/s1").json()
    required = OPENAPI["components"]["schemas"]["Customer"]["required"]
    assert set(required) <= set(story)
    assert story["churn"]["probability"] == 0.5
    assert story["churn"]["explanation"][0]["feature"] == "contract=month_to_month"
    assert story["churn"]["scored_at"] == "2026-01-01T00:00:00+00:00"
    assert [p for _, p in story["churn"]["trend"]] == [0.3, 0.5]  # rising
    assert story["profile"]["monthly_charge"] == 80.0
    assert story["consent"]["channels"] == {}  # unknown means no
    # when each channel's consent changed, from the merge's per-field times
    import orjson

    store = client.app_context  # a profile as the merge script leaves it: per-field times in _v
    profile = {"subscriber_id": "s9", "consent": {"sms": "granted"}, "monthly_charge": 20.0,
               "_v": {"consent": {"sms": 1772359200.0}}}  # fmt: skip
    store._client.data[store.key("s9")] = orjson.dumps(profile)
    two = client.get("/api/customers/s9").json()["consent"]
    assert two["channels"] == {"sms": "granted"}
    assert two["changed_at"] == {"sms": "2026-03-01T10:00:00+00:00"}
    assert [(o["outcome"], o["time"]) for o in story["outcomes"]] == [
        ("offer_accepted", "2026-01-02T10:00:00+00:00")  # a care agent reads when it happened
    ]
    assert [(o["kind"], o["accepted"]) for o in story["offers"]] == [("retention_offer", True)]
    assert story["tickets"] == {"open": 1}
    # a customer the dashboard never showed, known only from Redis: found, and opened
    assert client.get("/api/customers?q=s3").json()["results"] == ["s3"]
    assert client.get("/api/customers?q=s77").json()["results"] == []  # no such profile
    never_seen = client.get("/api/customers/s3").json()
    assert never_seen["churn"]["probability"] == 0.1 and never_seen["alerts"] == []
    served = client.get("/api/openapi.json").json()
    assert served["openapi"].startswith("3.1") and "/api/incidents" in served["paths"]


def test_a_customer_page_lists_the_cell_incidents_they_were_in_though_none_named_them():
    from datetime import UTC, datetime

    client = risk_client()
    kpi = {**ALARM, "id": "inc-c7-1", "alarmedObject": {"id": "c7", "@referredType": "Cell"},
           "affectedService": [], "x-cxstream": {"cause": "kpi_anomaly"}, "state": "cleared",
           "alarmClearedTime": "2026-01-01T00:10:00+00:00"}  # fmt: skip
    at = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    client.app_context.append_history(
        [("s3", at - 120, 90.0, "c7"), ("s3", at + 300, 80.0, "c7"),  # before it, then in it
         ("s4", at + 300, 90.0, "c8"),  # elsewhere while it lasted
         ("s2", at + 1200, 90.0, "c7")],  # in the cell after it cleared
        keep=10, recent_keep=10, slot_s=60.0, recent_s=60.0,
    )  # fmt: skip
    client.dashboard_state.on_alert(kpi)  # a KPI anomaly names nobody

    def incidents(sid):
        page = client.get(f"/api/customers/{sid}").json()
        return {i["id"]: i["how"] for i in page["incidents"]}

    assert incidents("s3") == {"inc-c1-1": "affected", "inc-c7-1": "in_cell"}
    assert incidents("s4") == {"inc-c1-1": "affected"}
    assert incidents("s2") == {"inc-c1-1": "affected"}


def people_client(tmp_path, **kw):
    """The app with a users file (olga operator, carl care, vera viewer) and no shared token."""
    from cxstream.dashboard.auth import Sessions, Users

    users_file = tmp_path / "users.yaml"
    for name, role in (("olga", "operator"), ("carl", "care"), ("vera", "viewer")):
        Users.save(users_file, name, role, f"{name}-password")
    state = DashboardState()
    state.on_alert(dict(ALARM))
    state.on_decision({"subscriber_id": "s1", "signal": "degradation", "kind": "k",
                       "result": "sent", "rule": "r", "action_id": "a1"})  # fmt: skip
    published = []
    app = create_app(state, context=None, publish=lambda t, k, v: published.append(v),
                     updates_topic="u", token=None, users=Users.load(users_file),
                     sessions=Sessions(b"k" * 32), **kw)  # fmt: skip
    return TestClient(app), published


def sign_in(client, name):
    res = client.post("/login", json={"user": name, "password": f"{name}-password"})
    assert res.status_code == 200, res.text
    return res


def test_people_sign_in_with_roles_and_commands_need_the_anti_forgery_header(tmp_path):
    import orjson

    client, published = people_client(tmp_path)
    assert client.get("/api/overview").status_code == 401  # nobody signed in
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/login").status_code == 200  # the sign-in page itself is public
    assert client.post("/login", json={"user": "olga", "password": "nope"}).status_code == 401
    assert client.post("/login", json={"user": "ghost", "password": "x"}).status_code == 401
    res = sign_in(client, "vera")
    cookie = res.headers.get_list("set-cookie")
    session = next(c for c in cookie if c.startswith("cx_session="))
    assert "httponly" in session.lower() and "samesite=strict" in session.lower()
    assert client.get("/api/me").json() == {"user": "vera", "role": "viewer", "via": "session"}
    assert client.get("/api/incidents").status_code == 200
    assert client.get("/api/customers/s1").status_code == 403  # a viewer: no customer pages
    assert command(client, "/api/incidents/inc-c1-1/ack").status_code == 403
    assert command(client, "/api/logout").status_code == 200  # anyone may sign out
    assert "cx_session" not in client.cookies

    client.cookies.clear()
    sign_in(client, "carl")
    assert client.get("/api/customers/s1").status_code == 200  # care: customer pages
    assert command(client, "/api/incidents/inc-c1-1/resolve").status_code == 403  # no commands

    client.cookies.clear()
    sign_in(client, "olga")
    no_header = client.post("/api/incidents/inc-c1-1/ack", json={"user": "mallory"})
    assert no_header.status_code == 403  # a forged cross-site POST carries no header
    wrong = client.post("/api/incidents/inc-c1-1/ack", json={}, headers={"x-csrf-token": "guessed"})
    assert wrong.status_code == 403
    assert published == []
    ok = command(client, "/api/incidents/inc-c1-1/ack", {"user": "mallory"})
    assert ok.status_code == 200
    [event] = [orjson.loads(v) for v in published]
    assert event["event"]["alarm"]["ackUserId"] == "olga"  # who signed in, not what was typed
    # a tampered session cookie is nobody
    value = client.cookies.get("cx_session")
    assert client.get("/api/me").status_code == 200
    client.cookies.clear()
    client.cookies.set("cx_session", value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1])
    assert client.get("/api/me").status_code == 401


def test_a_trusted_proxy_names_the_person_and_the_bearer_token_needs_no_cookie(tmp_path):
    client, _ = people_client(
        tmp_path, proxy_user_header="X-Forwarded-User", proxy_role_header="X-Forwarded-Role"
    )
    headers = {"x-forwarded-user": "pia", "x-forwarded-role": "care"}
    assert client.get("/api/me", headers=headers).json()["user"] == "pia"
    assert client.get("/api/customers/s1", headers=headers).status_code == 200
    unknown_role = {"x-forwarded-user": "pia", "x-forwarded-role": "admin"}
    assert client.get("/api/me", headers=unknown_role).json()["role"] == "viewer"
    state = DashboardState()
    state.on_alert(dict(ALARM))
    app = create_app(state, context=None, publish=lambda t, k, v: None, updates_topic="u",
                     token="t0ken")  # fmt: skip
    api = TestClient(app)
    bearer = {"authorization": "Bearer t0ken"}
    assert api.post("/api/incidents/inc-c1-1/ack", json={"user": "crm"}, headers=bearer).is_success
    # the cookie the printed URL sets is ambient: a command through it needs the header too
    api.get("/?token=t0ken", follow_redirects=False)
    assert api.post("/api/incidents/inc-c1-1/resolve", json={}).status_code == 403
    assert command(api, "/api/incidents/inc-c1-1/resolve").status_code == 200


def test_the_dashboard_state_survives_a_round_trip_through_json_and_ignores_junk():
    import orjson

    original = DashboardState()
    original.on_alert(dict(ALARM))
    original.acknowledge("inc-c1-1", "alice", "t")
    original.on_decision({"subscriber_id": "s1", "signal": "x", "kind": "k", "result": "sent",
                          "rule": "r", "action_id": "a1"})  # fmt: skip
    original.on_decision({"joined_outcome": {"subscriber_id": "s1", "outcome": "churned"}})
    copy = DashboardState()
    copy.load(orjson.loads(original.dumps()))
    assert copy.overview()["incidents"] == original.overview()["incidents"]
    assert copy.customer("s1") == original.customer("s1")
    for junk in ({"format": 2}, {"format": 1, "incidents": "x", "customers": [1, None]}, []):
        fresh = DashboardState()
        fresh.load(junk)  # type: ignore[arg-type]
        assert fresh.overview()["incidents"] == []


def test_decision_history_is_bounded_in_all_and_keeps_the_recently_contacted():
    import orjson

    state = DashboardState(per_subscriber=5, max_history=40)

    def decide(sid: str, n: int) -> None:
        state.on_decision({"subscriber_id": sid, "signal": "degradation", "kind": "k",
                           "result": "suppressed:cooldown", "rule": "r", "n": n})  # fmt: skip

    for k in range(10):  # 10 subscribers x 6 decisions: 50 kept at 5 each, more than 40
        for n in range(6):
            decide(f"s{k}", n)
    assert [d["n"] for d in state.customer("s9")["decisions"]] == [5, 4, 3, 2, 1]
    assert sorted(state.search("s")) == [f"s{k}" for k in range(2, 10)]  # s0, s1 least recent
    decide("s2", 6)  # s2 is contacted again: no longer the least recent
    decide("s10", 0)
    assert sorted(state.search("s")) == ["s10", "s2", "s4", "s5", "s6", "s7", "s8", "s9"]
    kept = sum(len(state.customer(sid)["decisions"]) for sid in state.search("s"))
    assert kept == 36  # 7 x 5 + 1: within 40
    copy = DashboardState(per_subscriber=5, max_history=40)
    copy.load(orjson.loads(state.dumps()))
    assert copy.customer("s00") == state.customer("s00")
    decide("s99", 101)
    copy.on_decision(state.customer("s99")["decisions"][0])
    assert copy.search("s") == state.search("s")  # the same subscribers dropped after a reload

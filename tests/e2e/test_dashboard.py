"""The NOC dashboard in a real headless Chromium, on the real system (Tansu broker, Redis, flow)."""

from __future__ import annotations

import base64
import os
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis

from cxstream.actions.receiver import WebhookReceiver
from cxstream.churn_state import RedisChurnState
from cxstream.context import ContextStore
from cxstream.dashboard.auth import Users
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import utcnow
from tests.integration.kafka_helpers import produce, read_topic
from tests.integration.test_churn_live import seed_model

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

SECRET = "whsec_" + base64.b64encode(b"dashboard-e2e-secret-0000").decode()
# `make screenshots` points this at docs/screenshots for the README; tests write to tmp_path
SHOTS_ENV = "SCREENSHOTS_DIR"  # not CXSTREAM_*: the tests clear those
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def sign_in(page, name: str) -> None:
    """Sign in on the dashboard's own page (the users file's password is ``<name>-password``)."""
    page.wait_for_url("**/login", timeout=10_000)
    page.fill("#user", name)
    page.fill("#password", f"{name}-password")
    page.click("#login button")
    page.wait_for_url(lambda url: not url.endswith("/login"), timeout=10_000)


def _fits(page, section: str) -> bool:
    """Whether a section's table is wholly visible: no horizontal scrolling needed."""
    return page.evaluate(
        f"(() => {{ const s = document.querySelector('section.{section}');"
        " return s.scrollWidth <= s.clientWidth; })()"
    )


def test_cell_outage_appears_live_and_the_acknowledgement_reaches_the_alarm_updates_topic(
    live_settings, tmp_path, browser
):
    settings = live_settings
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    sim = Simulator(200, 12, seed=31)
    cell = "cell-0003"
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    ContextStore(client, prefix=settings.redis.key_prefix).put_many(list(sim.profiles()))
    # a churn model that learned (short month-to-month customers leave): every profile is
    # scored with its reasons when the flow starts
    seed_model(settings, RedisChurnState(client, prefix=settings.redis.key_prefix), SECRET)

    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={
                "webhook": settings.webhook.model_copy(update={"url": receiver.url}),
                "history": settings.history.model_copy(update={"interval_s": 5.0}),
            }
        )
        users = tmp_path / "users.yaml"  # olga runs the NOC; carl is a care agent
        Users.save(users, "olga", "operator", "olga-password")
        Users.save(users, "carl", "care", "carl-password")
        flow = FlowProcess(live, tmp_path, SECRET, dashboard_users=users)
        try:
            flow.wait_ready()
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            deadline = time.monotonic() + 30
            while True:  # the dashboard starts with the flow
                try:
                    page.goto(flow.dashboard_url)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            sign_in(page, "olga")
            page.evaluate("window.__loadedOnce = true")
            for empty in ("#no-incidents", "#no-customers", "#no-actions"):
                assert page.locator(empty).is_visible(), f"{empty}: an empty table says so"

            # now the network: 60 s of traffic in which one cell fails from 20 s to 50 s
            start = utcnow() - timedelta(seconds=60)
            sim.add_incidents(
                [
                    Incident(
                        "cell_outage",
                        cell,
                        start + timedelta(seconds=20),
                        start + timedelta(seconds=50),
                    )
                ]
            )
            # 200 events/s of event time whatever the hour (the simulator's timeline thins out at
            # night, which would stretch the traffic past the incident's resolution)
            produce(
                settings,
                settings.kafka.topics.qos,
                [sim.encoded(start + timedelta(seconds=i / 200)) for i in range(12_000)],
            )

            row = page.locator("#incidents tbody tr", has_text=cell).first
            row.wait_for(timeout=60_000)
            assert page.evaluate("window.__loadedOnce") is True  # it arrived without a reload
            incident_id = row.get_attribute("data-incident")
            # the cell grid follows the cells' summaries (every cells.stats_s), which may come
            # a moment after the incident itself
            page.locator("#cells .cell.incident").first.wait_for(timeout=15_000)
            page.wait_for_timeout(1500)  # let the cell grid and the action log fill in
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            for section in ("incidents", "customers", "actions"):
                assert _fits(page, section), f"the {section} table is cut off at 1400x1000"
            for empty in ("#no-incidents", "#no-customers", "#no-actions"):
                assert not page.locator(empty).is_visible(), f"{empty} shown beside its rows"
            assert "events/s" in page.locator("#health").inner_text()

            # value at risk in money: the affected customers' churn probability x revenue
            at_risk = row.locator("td.var").inner_text()
            assert "€" in at_risk or "EUR" in at_risk, at_risk

            # which customers: the count unfolds to the customers themselves, each a link to
            # their page, and stays unfolded while live updates redraw the table
            row.locator("td.affected summary").click()
            row.locator("td.affected .ids a").first.wait_for(timeout=5_000)
            shown_ids = row.locator("td.affected .ids a").all_inner_texts()
            assert set(shown_ids) <= {s for s in sim.subscriber_ids if sim.home_cell[s] == cell}
            first = row.locator("td.affected .ids tr").first.locator("td").all_inner_texts()
            assert first[1] in ("platinum", "gold", "silver", "bronze") and "%" in first[2], first
            # a live update redraws the table, as each new overview does
            page.evaluate("fetch('/api/overview').then((r) => r.json()).then(render)")
            unfolded = page.locator("#incidents tbody tr", has_text=cell).first
            assert unfolded.locator("td.affected details[open] .ids a").count() >= len(shown_ids)

            # a cell gone dark is drawn down, not coloured by the last minute it served (its
            # summary still holds that minute's subscribers for a while): rendered and read in
            # one step, before a live update redraws it
            looks = page.evaluate(
                """fetch('/api/overview').then((r) => r.json()).then((d) => {
                  const id = d.incidents[0].id, cell = d.incidents[0].cell_id;
                  d.incidents[0].cause = 'outage';
                  d.cells.forEach((c) => { if (c.id === cell) c.i = id; });
                  render(d);
                  const down = [...document.querySelectorAll('#cells .cell.down')];
                  const said = [];  // a cell gone dark, then one whose traffic fell by half
                  for (const value of [0, 30]) {
                    d.incidents[0].kpis = {volume: {value, baseline: 90}};
                    render(d);
                    said.push(document.querySelector('#incidents tbody td.affected').innerText);
                  }
                  // a KPI anomaly nobody degraded in alone: of how many the cell speaks
                  Object.assign(d.incidents[0], {cause: 'kpi_anomaly', affected: 0, active: 22});
                  render(d);
                  said.push(document.querySelector('#incidents tbody td.affected').innerText);
                  d.incidents[0].state = 'cleared';
                  render(d);
                  return [down.map((e) => e.title), document.querySelectorAll('#cells .cell.down').length, said];
                })"""
            )
            assert looks[:2] == [[f"{cell}: down: an outage"], 0], looks
            dark, halved, shifted = looks[2]
            assert shifted.startswith("0 of 22 customers degraded traffic 30 (normal 90)"), shifted
            assert "cell silent" in dark and "traffic collapsed" not in dark, dark
            assert "traffic collapsed traffic 30 (normal 90)" in halved, halved
            assert "cell silent" not in halved and "no traffic" not in halved, halved
            page.evaluate("fetch('/api/overview').then((r) => r.json()).then(render)")

            row.locator(".ack-btn[data-verb=ack]").click()
            page.locator("#incidents tbody tr", has_text=cell).locator(
                ".ack", has_text="olga"
            ).wait_for(timeout=10_000)
            # the operator resolves it: the flow closes it and says who did (the cleared alarm
            # it writes names the operator), and no area notice for it is sent after that
            row = page.locator("#incidents tbody tr", has_text=cell).first
            row.locator(".resolve-btn").click()
            resolved_at = utcnow()
            row.locator(".resolved-by", has_text="olga").wait_for(timeout=30_000)
            page.wait_for_timeout(3000)  # what the flow would still send comes out here

            # a care agent signs in and opens a customer the dashboard never showed (another,
            # quiet cell): churn risk with its reasons, and the experience of the last minutes
            shown = set(page.locator("#customers tbody a").all_inner_texts())
            quiet = next(
                s for s in sim.subscriber_ids if sim.home_cell[s] != cell and s not in shown
            )
            care = browser.new_page(viewport={"width": 1400, "height": 1000})
            care.goto(flow.dashboard_url)
            sign_in(care, "carl")
            care.locator("#incidents tbody tr").first.wait_for(timeout=10_000)
            assert care.locator(".resolve-btn").count() == 0  # care agents do not resolve
            care.fill("#q", quiet)
            care.click("#search button")
            care.locator("#customer h2", has_text="Churn risk").wait_for(timeout=10_000)
            care.locator("#customer ul.reasons li").first.wait_for(timeout=10_000)
            assert "%" in care.locator("#customer section.churn b").first.inner_text()
            care.locator("#customer svg.spark polyline").wait_for(timeout=10_000)
            assert care.locator("#customer p.empty", has_text="No contact decided.").is_visible()
            care.screenshot(path=str(shots / "care.png"), full_page=True)
            care.close()

            customer = page.locator("#customers tbody a").first
            customer.click()
            page.locator("#customer h2", has_text="Customer").wait_for(timeout=10_000)
            assert page.locator("#customer", has_text="value tier").is_visible()
            hist = page.evaluate(
                'fetch(location.pathname.replace(/\\/$/, "") + "/api/customers/" + location.hash.split("/").pop()).then(r => r.json()).then(j => j.history)'
            )
            assert page.locator("#customer svg.spark polyline").count() == 1, (
                hist
            )  # experience over time
            page.screenshot(path=str(shots / "customer.png"), full_page=True)
        finally:
            flow.stop()

    events = [orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.alarm_updates)]
    changes = [e["event"]["alarm"] for e in events]
    assert [(a["id"], a.get("ackUserId"), a.get("clearUserId")) for a in changes] == [
        (incident_id, "olga", None),
        (incident_id, None, "olga"),  # the audit trail: who did what, when
    ]
    alerts = [orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.alerts)]
    cleared = [a for a in alerts if a["id"] == incident_id and a["state"] == "cleared"]
    assert [a.get("clearUserId") for a in cleared] == ["olga"]  # closed by the flow, once
    decisions = [orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.decisions)]
    late = [
        d
        for d in decisions
        if d.get("source_id") == incident_id
        and d["result"] == "sent"
        and d["decided_at"] > resolved_at.isoformat()
    ]
    assert late == []  # no area notice for it after the resolve
    local = [u for u in requests if not u.startswith(flow.dashboard_url.rstrip("/"))]
    assert local == []  # every asset is served by the application itself: no CDN

"""The CLI as a user runs it: demo, simulate, load-customers."""

from __future__ import annotations

import contextlib
import csv as csv_module
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook

from cxstream.devtools.demo import LOAD_FLOOR
from cxstream.devtools.simulate import load_factor
from cxstream.events import utcnow
from tests.integration.kafka_helpers import read_topic
from tests.shared_data import TELCO
from tests.standards import alarm_errors, alarm_event_errors, message_errors, problem_errors

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def cxstream(*args, env=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "cxstream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.slow
def test_demo_runs_the_whole_loop_on_embedded_services(tmp_path):
    truth = tmp_path / "truth.jsonl"
    captured = tmp_path / "captured"
    # 400 events/s whatever the hour: the demo's load follows the time of day (0.59 of the
    # busiest hour's at 4 a.m.), and this short run needs the same load at any hour
    rate = 400 / load_factor(utcnow(), LOAD_FLOOR)
    # 25 s of demo: episodes end 5 s after recovery (a minute by default) so that alarms clear
    config = tmp_path / "c.yaml"
    config.write_text("detector:\n  clear_s: 5\n")
    result = cxstream(
        "demo",
        "--config",
        str(config),
        "--duration",
        "25",
        "--rate",
        f"{rate:.0f}",
        "--subscribers",
        "300",
        "--cells",
        "12",
        "--json",
        "--truth",
        str(truth),
        "--capture",
        str(captured),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {
        "events_produced",
        "events_processed",
        "dead_letters",
        "alerts",
        "actions",
        "webhook_deliveries",
        "drained",
    }
    assert summary["drained"] is True
    expected = 25 * 400
    assert summary["events_produced"] > 0.5 * expected
    assert summary["events_produced"] == summary["events_processed"] + summary["dead_letters"]
    assert summary["dead_letters"] > 0  # the demo injects a few malformed records
    assert summary["alerts"] > 0
    assert summary["webhook_deliveries"] > 0
    assert summary["webhook_deliveries"] == summary["actions"]
    kinds = {json.loads(line)["kind"] for line in truth.read_text().splitlines()}
    assert kinds == {"cell_outage", "subscriber_degradation", "flapping", "gradual"}
    assert "incident planned: cell_outage" in result.stderr
    # the KPI series cannot see a mild shift or a silent cell in their first minutes: a run
    # this short plans none
    for kind in ("kpi_shift", "silent_outage"):
        assert f"incident left out: {kind} in cell-" in result.stderr
    # the summary names every planned incident, caught or not, as the dashboard showed it
    caught = re.search(r"planned incidents caught: (\d+) of 4\n((?:    .+\n){4})", result.stdout)
    assert caught is not None, result.stdout
    assert all(f"    {kind} in cell-" in caught[2] for kind in kinds)
    assert len(re.findall(r"after \d+ s \(", caught[2])) == int(caught[1])
    # the stand-in CRM reported outcomes 20 s in, and the churn model learned them
    learned = re.search(r"churn model: (\d+) of the CRM's (\d+) outcomes learned", result.stdout)
    assert learned is not None and int(learned[2]) > 0 and int(learned[1]) > 0
    check_captured_payloads(captured, summary)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_captured_payloads(captured: Path, summary: dict) -> None:
    """Every payload kind the demo emitted passes the standards' own validators: the vendored
    TMF642/TMF656/TMF681 schemas, the Standard Webhooks library and the CloudEvents SDK."""
    alerts = jsonl(captured / "alerts.jsonl")
    assert len(alerts) >= summary["alerts"] > 0  # raised ones, then their updates and clears
    assert {a["alarmedObjectType"] for a in alerts} >= {"Cell", "Service"}
    assert {a["state"] for a in alerts} >= {"raised", "cleared"}
    assert {a["id"]: alarm_errors(a) for a in alerts if alarm_errors(a)} == {}
    problems = jsonl(captured / "service-problems.jsonl")
    assert problems
    assert {p["id"]: problem_errors(p) for p in problems if problem_errors(p)} == {}
    updates = jsonl(captured / "alarm-updates.jsonl")  # dashboard commands; none in a bare run
    assert [alarm_event_errors(u) for u in updates if alarm_event_errors(u)] == []
    secret = (captured / "webhook-secret.txt").read_text().strip()
    requests = jsonl(captured / "webhooks.jsonl")
    assert len(requests) == summary["webhook_deliveries"]
    for request in requests:
        headers, body = request["headers"], request["body"].encode()
        Webhook(secret).verify(body, headers)  # raises on a bad signature
        event = from_http(headers, body)
        assert event["id"] == headers["webhook-id"]
        assert message_errors(event.data) == [], event.data


def qos_config(live_settings, tmp_path: Path) -> Path:
    """A config file naming the test broker and its QoS topic."""
    config = tmp_path / "c.yaml"
    kafka = {
        "brokers": live_settings.kafka.brokers,
        "topics": {"qos": live_settings.kafka.topics.qos},
    }
    config.write_text(json.dumps({"kafka": kafka}))
    return config


def test_simulate_writes_events_truth_and_profiles(live_settings, tmp_path):
    config = qos_config(live_settings, tmp_path)
    truth, profiles = tmp_path / "truth.jsonl", tmp_path / "profiles.csv"
    result = cxstream(
        "simulate",
        "--config",
        str(config),
        "--events",
        "3000",
        "--rate",
        "0",
        "--subscribers",
        "50",
        "--cells",
        "5",
        "--truth",
        str(truth),
        "--profiles",
        str(profiles),
    )
    assert result.returncode == 0, result.stderr
    assert "produced 3000 events" in result.stdout
    values = read_topic(live_settings, live_settings.kafka.topics.qos)
    assert len(values) == 3000
    assert {orjson.loads(v)["service"] for v in values} == {"voice", "video", "data"}
    # five cells: room for a lone subscriber's cell and three cell-level incidents
    kinds = [orjson.loads(line)["kind"] for line in truth.read_text().splitlines()]
    assert sorted(kinds) == ["cell_outage", "flapping", "gradual", "subscriber_degradation"]
    assert len(profiles.read_text().splitlines()) == 51


def test_simulate_without_a_broker_is_a_usage_error():
    result = cxstream("simulate", "--events", "10")
    assert result.returncode == 2
    assert "kafka.brokers is not set" in result.stderr


@pytest.mark.shared_data
def test_load_customers_with_the_telco_mapping(redis_server, redis_conn):
    env = {"CXSTREAM_REDIS__URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    result = cxstream(
        "load-customers", str(TELCO), "--mapping", "config/mappings/telco_ibm.yaml", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "loaded 7043 customer profiles into Redis; rejected 0 rows" in result.stdout
    stored = orjson.loads(redis_conn.get("cx:customer:7590-VHVEG"))
    assert stored["contract"] == "month_to_month"
    assert stored["value_tier"] == "bronze"


def test_load_customers_reports_rejected_rows(redis_server, redis_conn, tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("subscriber_id,tenure_months\ns1,12\ns2,-1\ns3,lots\n")
    rejects = tmp_path / "rejects.csv"
    env = {"CXSTREAM_REDIS__URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    result = cxstream("load-customers", str(csv), "--rejects", str(rejects), env=env)
    assert result.returncode == 0
    assert "loaded 1 customer profiles into Redis; rejected 2 rows" in result.stdout
    assert "line 3: column 'tenure_months'" in result.stderr
    written = list(csv_module.reader(rejects.open(newline="")))
    assert [row[0] for row in written] == ["line", "3", "4"]
    assert all("column 'tenure_months'" in reason for _, reason in written[1:])
    assert redis.Redis.from_url(redis_server.url).exists("cx:customer:s1")


def test_load_customers_reads_a_windows_export_and_refuses_a_workbook(
    redis_server, redis_conn, tmp_path
):
    env = {"CXSTREAM_REDIS__URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    export = tmp_path / "export.csv"  # a European spreadsheet's CSV: ';', decimal comma, cp1252
    ascii_rows = "".join(f"a{i};basic;10,5\n" for i in range(5000))  # past the first 64 kB ...
    text = "subscriber_id;plan;monthly_charge\n" + ascii_rows + "s1;Fibra óptica;29,85\n"
    export.write_bytes(text.encode("cp1252"))  # ... the first accented letter
    assert len(ascii_rows) > 65_536
    result = cxstream("load-customers", str(export), env=env)
    assert result.returncode == 0, result.stderr
    assert "loaded 5001 customer profiles into Redis; rejected 0 rows" in result.stdout
    stored = orjson.loads(redis_conn.get("cx:customer:s1"))
    assert (stored["plan"], stored["monthly_charge"]) == ("Fibra óptica", 29.85)
    book = tmp_path / "customers.xlsx"
    book.write_bytes(b"PK\x03\x04" + bytes(200))
    result = cxstream("load-customers", str(book), env=env)
    assert result.returncode == 1
    assert (
        "customers.xlsx is not a text table (a spreadsheet workbook?): save it as CSV"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_load_customers_merges_and_never_overrides_a_newer_revoke(
    redis_server, redis_conn, tmp_path
):
    """A file exported before the customer revoked SMS consent does not grant it again, and the
    fields the file lacks keep their stored values."""
    from cxstream.context import ContextStore
    from cxstream.events import CustomerContext, CustomerUpdate

    store = ContextStore(redis_conn, prefix="cx", max_entries=0)
    revoke = CustomerContext.model_validate(
        {
            "subscriber_id": "s9",
            "timezone": "America/New_York",
            "consent": {"sms": "revoked"},
            "consent_updated": "2026-06-02T00:00:00Z",
        }
    )
    store.merge_many(
        [CustomerUpdate(revoke, frozenset({"timezone", "consent", "consent_updated"}), b"")]
    )
    csv = tmp_path / "c.csv"
    csv.write_text(
        "subscriber_id,monthly_charge,consent_sms,consent_email,updated_at\n"
        "s9,80,granted,granted,2026-06-01T00:00:00Z\n"
    )
    env = {"CXSTREAM_REDIS__URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    result = cxstream("load-customers", str(csv), env=env)
    assert result.returncode == 0, result.stderr
    stored = orjson.loads(redis_conn.get("cx:customer:s9"))
    assert stored["consent"]["sms"] == "revoked"  # the newer revoke stands
    assert stored["consent"]["email"] == "granted"  # a channel nobody set since
    assert stored["monthly_charge"] == 80
    assert stored["timezone"] == "America/New_York"  # not in the file: kept


def test_load_customers_with_redis_down_is_a_clear_error(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("subscriber_id\ns1\n")
    env = {"CXSTREAM_REDIS__URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    result = cxstream("load-customers", str(csv), env=env)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr


@pytest.mark.slow
def test_the_embedded_broker_is_replaced_and_nothing_is_lost(tmp_path):
    # The embedded broker has no retention: the demo replaces it with an empty one every
    # --broker-rotation seconds, and the flow resumes from its snapshot on the new topics.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxstream",
            "demo",
            "--duration",
            "40",
            "--rate",
            "400",
            "--subscribers",
            "200",
            "--cells",
            "8",
            "--broker-rotation",
            "12",
            "--json",
            "--capture",
            str(tmp_path / "captured"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["drained"] is True
    assert summary["events_produced"] == summary["events_processed"] + summary["dead_letters"]
    assert result.stderr.count("embedded broker replaced with an empty one") >= 2
    # a healthy flow settles before each replacement (the pending work counts every generation)
    assert "not replaced now" not in result.stderr, result.stderr[-3000:]
    # the capture holds every generation's records, not only the last broker's: the decision of
    # every webhook the receiver took (all run long), and the alarm of every degradation decided
    captured = tmp_path / "captured"
    decisions = jsonl(captured / "decisions.jsonl")
    delivered = {r["headers"]["webhook-id"] for r in jsonl(captured / "webhooks.jsonl")}
    assert delivered and delivered <= {d.get("action_id") for d in decisions}
    alarms = {a["id"] for a in jsonl(captured / "alerts.jsonl")}
    degraded = {d["source_id"] for d in decisions if d.get("signal") == "degradation"}
    assert degraded and degraded <= alarms


@pytest.mark.slow
def test_a_stalled_flow_is_reported_and_the_demo_fails(tmp_path):
    # The flow is frozen (SIGSTOP) while events stream: the demo warns that it stalled, the
    # drain times out, the summary says drained: false, and the exit code is 1.
    env = {**os.environ, "CXSTREAM_FLOW__LAG_ALERT_S": "5", "CXSTREAM_FLOW__LAG_ALERT_EVENTS": "50"}
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cxstream",
            "demo",
            "--duration",
            "20",
            "--rate",
            "400",
            "--subscribers",
            "200",
            "--cells",
            "8",
            "--drain-timeout",
            "5",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        flow = _wait_for_child(demo.pid, "cxstream run", timeout_s=60)
        time.sleep(8)  # let it process for a while first
        os.kill(flow, signal.SIGSTOP)
        guard = threading.Timer(240, demo.kill)  # a demo that never ends fails the test
        guard.start()
        lines = []
        assert demo.stderr is not None and demo.stdout is not None
        for line in demo.stderr:
            lines.append(line)
            if "drain timed out" in line:  # thawed, it stops at once when the demo stops it
                os.kill(flow, signal.SIGCONT)
        err = "".join(lines)
        out = demo.stdout.read()
        demo.wait(60)
        guard.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(flow, signal.SIGCONT)
        demo.kill()
    assert demo.returncode == 1, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["drained"] is False
    assert summary["events_processed"] + summary["dead_letters"] < summary["events_produced"]
    assert "warning: the flow is stalled" in err
    assert "drain timed out after 5 s" in err


def _wait_for_child(parent: int, command: str, timeout_s: float) -> int:
    """The pid of ``parent``'s child process whose command line contains ``command``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (proc / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if ppid == parent and command in cmdline:
                    return int(proc.name)
        time.sleep(0.2)
    msg = f"no child {command!r} of {parent} within {timeout_s} s"
    raise AssertionError(msg)


def test_demo_without_redis_server_says_how_to_install_it(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()  # a PATH with no redis-server on it
    result = cxstream(
        "demo", "--duration", "5", env={"PATH": str(bindir), "HOME": str(Path.home())}
    )
    assert result.returncode == 1
    assert "redis-server was not found on PATH" in result.stderr
    assert "apt-get install redis-server" in result.stderr


@pytest.mark.slow
def test_bench_paced_reports_every_figure_it_promises():
    # Runs the real benchmark small: what is checked is that it measures and reports, not how
    # fast this machine is (benchmarks are commands, not timed tests).
    result = cxstream("bench", "--events", "4000", "--rate", "2000", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "events",
        "seconds",
        "events_per_s",
        "ceiling_events_per_s",
        "ratio",
        "latency_p50_ms",
        "latency_p99_ms",
        "workers",
        "peak_rss_mb",
        "floor_p50_ms",
        "floor_p99_ms",
        "hold_s",
        "busy_events_per_s",
        "finish_skew_s",
    ):
        assert key in report, key
    assert report["events"] == 4000  # every event processed or dead-lettered
    assert report["rate"] == 2000 and report["hold_s"] == 0 and report["workers"] == 1
    assert report["ceiling_events_per_s"] > 0 and report["peak_rss_mb"] > 0
    assert report["pipeline_samples"] > 0 and report["floor_p99_ms"] >= report["floor_p50_ms"]
    assert "event time -> plain consumer at the same rate" in result.stdout


def test_replay_to_kafka_moves_the_traces_to_the_present(live_settings, tmp_path):
    config = qos_config(live_settings, tmp_path)
    folder = tmp_path / "Download" / "Driving"
    folder.mkdir(parents=True)
    header = "Timestamp,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,State,PINGAVG\n"
    rows = [f"2020.02.14_12.{m:02d}.00,13,LTE,-98,-11,4.0,10,9000,D,-\n" for m in range(30)]
    (folder / "B_a.csv").write_text(header + "".join(rows) + "-,13,LTE,-98,-11,4,10,1,D,-\n")
    before = utcnow()
    result = cxstream(
        "replay", str(tmp_path), "--to-kafka", "--speed", "0", "--config", str(config), "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"events": 30, "dead_letters": 1}
    values = [orjson.loads(v) for v in read_topic(live_settings, live_settings.kafka.topics.qos)]
    assert len(values) == 30
    times = sorted(datetime.fromisoformat(v["event_time"]) for v in values)
    # the trace's 29 minutes kept, ending by the time it was produced (never in the future)
    assert times[-1] - times[0] == timedelta(minutes=29)
    assert before - timedelta(minutes=30) <= times[0] and times[-1] <= utcnow()


@pytest.mark.slow
def test_ctrl_c_on_the_demo_drains_before_the_embedded_services_stop():
    """A terminal's Ctrl-C reaches the whole process group: the embedded broker and Redis must
    outlive it until the demo has drained the flow through them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxstream", "demo", "--rate", "400", "--subscribers", "300",
         "--cells", "12", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )  # fmt: skip
    try:
        _wait_for_child(proc.pid, "cxstream run", timeout_s=60)
        time.sleep(5)  # events flow through the broker, the flow and Redis
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["drained"] is True
    assert summary["events_produced"] > 0
    assert summary["events_produced"] == summary["events_processed"] + summary["dead_letters"]


@pytest.mark.slow
def test_a_plain_kill_of_the_demo_drains_and_leaves_no_process_behind():
    """SIGTERM to the demo alone (kill, docker stop, a closed terminal's SIGHUP alike): it drains
    and stops the broker, Redis and the flow, which run in sessions of their own and would
    otherwise outlive it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxstream", "demo", "--rate", "400", "--subscribers", "300",
         "--cells", "12", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        children = [
            _wait_for_child(proc.pid, command, timeout_s=60)
            for command in ("redis-server", "tansu", "cxstream run")
        ]
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: draining" in err.decode()
    assert json.loads(out.strip().splitlines()[-1])["drained"] is True
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

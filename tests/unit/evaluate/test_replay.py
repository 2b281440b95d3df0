"""``cxstream replay`` on the real UCC traces: every row accounted for, sustained fallbacks to
3G/2G alerted inside the stretch with the fall as their why, static 5G traces quiet."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from cxstream.cli import main
from cxstream.traces import generation_of, trace_files
from tests.shared_data import UCC_TRACES

SUSTAINED = timedelta(minutes=3)


def fallback_stretches(path):
    """Stretches of at least three minutes on 2G/3G while downloading or streaming (any state
    but idle), as (start, end) times."""
    stretches, start, last = [], None, None
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            at = datetime.strptime(row["Timestamp"], "%Y.%m.%d_%H.%M.%S").replace(tzinfo=UTC)
            old = (generation_of(row["NetworkMode"]) or 5) <= 3
            if old and start is None:
                start = at
            elif not old and start is not None:
                stretches.append((start, last))
                start = None
            last = at
    if start is not None:
        stretches.append((start, last))
    return [(s, e) for s, e in stretches if e - s >= SUSTAINED]


@pytest.mark.shared_data
def test_replay_of_the_ucc_traces():
    result = CliRunner().invoke(main, ["replay", str(UCC_TRACES), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output.strip().splitlines()[-1])
    files = trace_files([UCC_TRACES])
    assert s["traces"] == len(files) == len(s["per_trace"])
    assert s["events"] + s["dead_letters"] == s["rows"]
    by_file = {t["file"]: t for t in s["per_trace"]}
    fallbacks = static = 0
    for path in files:
        t = by_file[str(path.relative_to(UCC_TRACES))]
        assert t["events"] + t["dead_letters"] == t["rows"]
        alerts = [datetime.fromisoformat(a) for a in t["alert_times"]]
        fell = [
            any(i["input"] == "radio_generation" and i["to"] <= 3 for i in why["inputs"])
            for why in t["alert_why"]
        ]
        for start, end in fallback_stretches(path):
            fallbacks += 1
            assert any(start <= a <= end for a in alerts), (t["file"], start, end, alerts)
            # and its why says so: the radio generation fell
            inside = [f for a, f in zip(alerts, fell, strict=True) if start <= a <= end]
            assert any(inside), (t["file"], start, end, t["alert_why"])
        if "Static" in path.parts and set(t["rat_minutes"]) == {"5G"}:
            static += 1
            hours = sum(t["rat_minutes"].values()) / 60
            assert len(alerts) <= hours, (t["file"], alerts)  # at most one an hour
    assert fallbacks >= 2 and static >= 2  # the shared traces hold both kinds (or more traces)


@pytest.mark.shared_data
def test_a_trace_saved_with_a_byte_order_mark_reads_as_the_original(tmp_path):
    original = next(p for p in trace_files([UCC_TRACES]) if "Static" in p.parts)
    (tmp_path / "Download").mkdir()
    marked = tmp_path / "Download" / original.name
    marked.write_bytes(b"\xef\xbb\xbf" + original.read_bytes())
    copy = tmp_path / "plain" / "Download" / original.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(original.read_bytes())
    summaries = []
    for path in (marked, copy):
        result = CliRunner().invoke(main, ["replay", str(path), "--json"])
        assert result.exit_code == 0, result.output
        summaries.append(json.loads(result.output.strip().splitlines()[-1]))
    assert summaries[0]["dead_letters"] == summaries[1]["dead_letters"]
    assert summaries[0]["events"] == summaries[1]["events"] > 0


def _write_trace(path, phases, ping=None):
    """A G-NetTrack export, one row a second: phases of (seconds, NetworkMode, DL kbit/s); with
    ``ping``, each row's ``PINGAVG,PINGLOSS`` from its second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime(2020, 1, 10, 10, 0, 0, tzinfo=UTC)
    header = "Timestamp,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,State,RAWCELLID"
    lines = [header + (",PINGAVG,PINGLOSS" if ping else "")]
    second = 0
    for seconds, mode, kbps in phases:
        modern = mode in ("LTE", "5G")
        radio = "-90,-11,12,11" if modern else "-85,-9,-,-"
        for _ in range(seconds):
            stamp = at.strftime("%Y.%m.%d_%H.%M.%S")
            line = f"{stamp},11,{mode},{radio},{kbps},D,{10807307 if modern else 19747337}"
            lines.append(line + ("," + ping(second) if ping else ""))
            at += timedelta(seconds=1)
            second += 1
    path.write_text("\n".join(lines) + "\n")


def _alerts(path):
    result = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert result.exit_code == 0, result.output
    [trace] = json.loads(result.output.strip().splitlines()[-1])["per_trace"]
    return [datetime.fromisoformat(a) for a in trace["alert_times"]]


@pytest.mark.parametrize("gap_s", [1, 5, 30])
def test_each_fall_to_3g_is_alerted_also_when_4g_came_back_only_for_seconds(tmp_path, gap_s):
    path = tmp_path / "Download" / "Driving" / "B.csv"
    _write_trace(path, [(180, "LTE", 40_000), (200, "HSPA+", 3_000), (gap_s, "LTE", 40_000),
                        (200, "HSPA+", 3_000), (60, "LTE", 40_000)])  # fmt: skip
    assert fallback_stretches(path) and len(fallback_stretches(path)) == 2
    alerts = _alerts(path)
    for start, end in fallback_stretches(path):
        assert any(start <= a <= end for a in alerts), (start, end, alerts)


def test_a_download_dipping_every_few_seconds_is_one_alert_not_one_per_dip(tmp_path):
    path = tmp_path / "Download" / "Driving" / "B.csv"
    _write_trace(path, [(180, "LTE", 40_000)] + [(12, "LTE", 800), (8, "LTE", 40_000)] * 4)
    assert len(_alerts(path)) == 1


@pytest.mark.parametrize("lost", ["20.0", "100.0"])
def test_a_ping_test_losing_packets_beside_a_healthy_download_raises_no_alert(tmp_path, lost):
    # a static 5G download at 200 Mbit/s, a 5-ping test every 12 s; one test loses 1 or 5
    path = tmp_path / "Download" / "Static" / "B.csv"
    _write_trace(
        path,
        [(900, "5G", 200_000)],
        ping=lambda s: "-,-" if s % 12 else ("-," + lost if s == 600 else "67,0.0"),
    )
    assert _alerts(path) == []

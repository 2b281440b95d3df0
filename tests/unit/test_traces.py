"""G-NetTrack Pro traces as QoS events: every row an event or a dead letter with its reason."""

from __future__ import annotations

import io

from cxstream.traces import read_trace

HEADER = (
    "Timestamp,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,State,PINGAVG,PINGSTDEV,PINGLOSS\n"
)


def rows(*lines: str) -> io.StringIO:
    return io.StringIO(HEADER + "".join(line + "\n" for line in lines))


def test_a_download_row_maps_its_radio_ping_and_session_rate():
    lines = [f"2020.02.14_12.58.{s:02d},13,5G,-98,-11,4.0,10,{1000 * s},D,-,-,-" for s in range(12)]
    lines.append("2020.02.14_12.58.12,13,LTE,-100,-12,6.0,9,12000,D,41.5,3.2,0.0")
    trace = read_trace(rows(*lines), name="Download/Driving/B_2020.02.14_12.58.17.csv")
    assert trace.subscriber_id == "trace-B_2020.02.14_12.58.17" and trace.service == "data"
    assert len(trace.events) == 13 and trace.dead_letters == []
    first, last = trace.events[0], trace.events[-1]
    assert first["event_time"] == "2020-02-14T12:58:00+00:00"
    assert "throughput_kbps" not in first  # a download's first seconds are TCP's slow start
    # the mean of the last 10 s (rows 3..12: 3,000 .. 11,000 and 12,000 kbit/s)
    assert last["throughput_kbps"] == (sum(range(3, 12)) * 1000 + 12000) / 10
    assert (last["rtt_ms"], last["jitter_ms"]) == (41.5, 3.2)
    assert "loss_pct" not in last  # the download's rate carries its loss, not the ping's 5 packets
    assert (last["rsrp_dbm"], last["sinr_db"], last["radio_generation"]) == (-100.0, 6.0, 4)
    assert last["cqi"] == 9 and isinstance(last["cqi"], int)
    assert last["cell_id"] == "13"


def test_radio_measures_of_older_accesses_and_video_rates_are_not_used():
    trace = read_trace(
        rows("2019.12.02_09.42.40,7,HSPA+,-65,-,-,-,199,V,-,-,-"),
        name="Amazon_Prime/Driving/Season3/B.csv",
    )
    [event] = trace.events
    assert trace.service == "video"
    assert event["radio_generation"] == 3
    assert not {"rsrp_dbm", "sinr_db", "cqi", "throughput_kbps", "rtt_ms"} & set(event)


def test_rows_that_cannot_be_events_are_dead_lettered_with_their_reason():
    trace = read_trace(
        rows(
            "2020.02.14_12.58.17,13,5G,-98,-11,4.0,10,39,D,-,-,-",
            "-,13,5G,-98,-11,4.0,10,39,D,-,-,-",
            "2020.02.14_12.58.18,-,5G,-98,-11,4.0,10,39,D,-,-,-",
            "2020.02.14_12.58.19,13,5G,strong,-11,4.0,10,39,D,-,-,-",
            "yesterday,13,5G,-98,-11,4.0,10,39,D,-,-,-",
            '2020.02.14_12.58.20,13,5G,-98,-11,"4.0\x00,10,39,D,-,-,-',
        ),
        name="x/B.csv",
    )
    assert trace.rows == 6
    assert len(trace.events) + len(trace.dead_letters) == 6
    reasons = sorted(b.reason for b in trace.dead_letters)
    assert reasons[:2] == ["bad_type", "bad_type"] and reasons.count("missing_field") == 2
    assert all(b.offset is not None and b.raw_b64 for b in trace.dead_letters)


def test_a_cell_is_the_operators_cell_not_its_number_within_a_site():
    header = "Timestamp,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,State,RAWCELLID,LACHEX\n"
    lines = [
        "2019.12.16_07.22.43,11,5G,-90,-11,9.0,10,900,D,10807307,9CBA",  # eNodeB A4E8, cell 11
        "2019.12.16_07.22.44,11,LTE,-92,-11,8.0,10,900,D,10807307,9CBA",  # its LTE anchor
        "2019.12.16_07.22.45,11,5G,-91,-11,9.0,10,900,D,11119115,9CBA",  # eNodeB A9AA, cell 11
        "2019.12.16_07.22.46,21001,HSPA+,-80,-9,-,-,900,D,19747337,75AA",  # RNC 0x12D, cell 21001
        "2019.12.16_07.22.47,22695,GPRS,-85,-,-,-,90,D,22695,3FE",
        "2019.12.16_07.22.48,22695,GPRS,-85,-,-,-,90,D,22695,3FF",  # same number, another area
        "2019.12.16_07.22.49,0,HSPA+,-85,-,-,-,90,D,0,0",  # no identity: the number as written
        "2019.12.16_07.22.50,-,HSPA+,-85,-,-,-,90,D,-,-",  # no cell at all
    ]
    trace = read_trace(io.StringIO(header + "\n".join(lines)), name="Download/Driving/B.csv")
    assert [e["cell_id"] for e in trace.events] == [
        "eci-10807307",
        "eci-10807307",
        "eci-11119115",
        "uci-19747337",
        "lac-3FE-ci-22695",
        "lac-3FF-ci-22695",
        "0",
    ]
    [lost] = trace.dead_letters
    assert lost.reason == "missing_field" and lost.offset == 8


def test_a_measure_android_reports_unavailable_is_missing_and_the_row_kept():
    trace = read_trace(
        rows(
            "2020.02.14_12.58.17,13,LTE,-98,2147483647,4.0,2147483647,39,D,-,-,-",
            "2020.02.14_12.58.18,13,LTE,2147483647,-11,2147483647,9,39,D,41,2147483647,0",
        ),
        name="Download/Static/B.csv",
    )
    assert trace.dead_letters == []
    first, second = trace.events
    assert first["rsrp_dbm"] == -98.0 and "rsrq_db" not in first and "cqi" not in first
    assert "rsrp_dbm" not in second and "sinr_db" not in second and second["cqi"] == 9
    assert second["rtt_ms"] == 41.0 and "jitter_ms" not in second


def test_a_ping_loss_is_kept_where_no_download_rate_is_measured():
    trace = read_trace(
        rows(
            "2020.02.14_12.58.00,13,5G,-98,-11,4.0,10,20000,D,41.5,3.2,20.0",  # the first second
            "2020.02.14_12.58.01,13,5G,-98,-11,4.0,10,0,I,45.0,2.0,40.0",  # idle
        ),
        name="Download/Static/B.csv",
    )
    assert [e["loss_pct"] for e in trace.events] == [20.0, 40.0]

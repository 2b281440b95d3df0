"""Real drive and static traces as QoS events: G-NetTrack Pro CSV exports.

G-NetTrack Pro (an Android network monitor) logs a row about every second: time, position, serving
cell, radio access technology and radio measures, application throughput, and, in download runs,
ping results. :func:`read_trace` turns each row into one QoS event, or a dead letter with the
reason. The mapping (docs/integration.md#replaying-drive-traces has the table):

* ``subscriber_id``: the trace (``trace-`` and the file name without ``.csv``), one device;
* ``event_time``: ``Timestamp`` (``YYYY.MM.DD_HH.MM.SS``, the phone's local time, read in
  ``timezone``); rows of the same second keep their order by their event ids;
* ``cell_id``: the serving cell's identity in the operator's network (:func:`cell_of`):
  ``CellID`` is only the cell's number within its base station (LTE) or radio network
  controller (UMTS), so one ``CellID`` names many cells along a drive; ``RAWCELLID`` holds the
  whole identity; ``radio_generation`` from ``NetworkMode`` (GPRS/EDGE 2, UMTS/HSPA 3, LTE 4,
  5G/NR 5);
* ``service``: from the trace's folders: ``video`` under a folder named after a streaming service
  (Netflix, Amazon_Prime, YouTube, ...), ``data`` otherwise (file downloads);
* ``throughput_kbps``: for a **download** row in state ``D`` (downloading), the mean
  ``DL_bitrate`` of the download's last ``THROUGHPUT_WINDOW_S`` seconds: a bulk download takes what
  the radio gives, so its rate measures the network, and a user sees the rate of the last seconds,
  not of one (a second's rate drops to 0 between TCP bursts); such a row has
  ``transfer_active`` 1. A video player fetches in bursts and
  idles once its buffer is full, so a video row's rate measures the player, not the network: it is
  not used (its radio and radio access are);
* ``rtt_ms``, ``jitter_ms``, ``loss_pct``: ``PINGAVG``, ``PINGSTDEV``, ``PINGLOSS`` where a ping
  ran (about one row in twelve of download runs), else absent; except that a row with the
  download's rate has no ``loss_pct``: the ping test is a few ICMP packets sent beside the
  download (its loss comes in steps of 20 %: five), so one lost reads as 20 % loss, while the
  download's own loss is already in its rate (TCP turns loss into a slower rate), which is what
  the row is judged by;
* ``rsrp_dbm``, ``rsrq_db``, ``sinr_db``: ``RSRP``, ``RSRQ``, ``SNR`` on LTE and 5G rows only
  (on 2G/3G rows these columns hold other measures, such as RSCP);
* ``-`` is a missing value everywhere, and so is Android's "unavailable" (``2147483647``,
  ``CellInfo.UNAVAILABLE``), which a phone reports for a measure its modem does not give (CQI
  on many phones): the row keeps its other measures.

>>> import io
>>> text = ("Timestamp,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,DL_bitrate,State,PINGAVG,PINGSTDEV,PINGLOSS\\n"
...         "2020.02.14_12.58.17,13,5G,-98,-11,4.0,10,39,D,-,-,-\\n"
...         "2020.02.14_12.58.18,-,HSPA+,-93,-,-,-,3082,D,41,3,0\\n")
>>> trace = read_trace(io.StringIO(text), name="Download/Driving/B_x.csv")
>>> [e["radio_generation"] for e in trace.events], [b.reason for b in trace.dead_letters]
([5], ['missing_field'])
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson

from cxstream.events import BadEvent, BadReason, bounded_id

__all__ = [
    "GENERATIONS",
    "STREAMING_FOLDERS",
    "Trace",
    "cell_of",
    "generation_of",
    "read_trace",
    "trace_files",
]

GENERATIONS: dict[str, int] = {
    "GPRS": 2,
    "EDGE": 2,
    "GSM": 2,
    "UMTS": 3,
    "HSPA": 3,
    "HSPA+": 3,
    "HSDPA": 3,
    "HSUPA": 3,
    "LTE": 4,
    "LTE-A": 4,
    "5G": 5,
    "NR": 5,
}
"""3GPP generation of each ``NetworkMode`` value G-NetTrack writes."""

_FAMILIES = (  # prefixes of other spellings (LTE-A, LTE CA, NR NSA, HSPA+ DC, WCDMA, ...) and
    # of Android's other network types (TD_SCDMA, EVDO_A, EHRPD: 3G; 1xRTT, CDMA, IDEN: 2G)
    ("5G", 5), ("NR", 5), ("LTE", 4), ("4G", 4), ("HSPA", 3), ("HSDPA", 3), ("HSUPA", 3),
    ("UMTS", 3), ("WCDMA", 3), ("TD-SCDMA", 3), ("TD_SCDMA", 3), ("EVDO", 3), ("EHRPD", 3),
    ("3G", 3), ("EDGE", 2), ("GPRS", 2), ("GSM", 2), ("1XRTT", 2), ("CDMA", 2), ("IDEN", 2),
    ("2G", 2),
)  # fmt: skip


def generation_of(mode: str) -> int | None:
    """The 3GPP generation of a ``NetworkMode`` value, None when it names no known access.

    >>> [generation_of(m) for m in ("HSPA+", "LTE CA", "nr nsa", "EDGE", "WiFi", "IWLAN")]
    [3, 4, 5, 2, None, None]
    >>> [generation_of(m) for m in ("TD_SCDMA", "EVDO_A", "eHRPD", "1xRTT", "CDMA")]
    [3, 3, 3, 2, 2]
    """
    mode = mode.strip().upper()
    known = GENERATIONS.get(mode)
    if known is not None:
        return known
    return next((g for prefix, g in _FAMILIES if mode.startswith(prefix)), None)


STREAMING_FOLDERS = frozenset({"netflix", "amazon_prime", "youtube", "disney", "video"})
"""Folder names (lower case) that make a trace a video session."""

THROUGHPUT_WINDOW_S = 10.0
"""Seconds of a download whose mean rate is a row's throughput."""

_TIME_FORMAT = "%Y.%m.%d_%H.%M.%S"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_:@+#=.-]")


@dataclass
class Trace:
    """One trace file: its events (JSON-ready dicts, in file order) and its dead letters."""

    name: str
    subscriber_id: str
    service: str
    rows: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[BadEvent] = field(default_factory=list)
    modes: list[str | None] = field(default_factory=list)  # NetworkMode of each event


def trace_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.csv`` files under ``paths`` (files or folders), sorted."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*.csv") if p.is_file())
        else:
            found.add(path.resolve())
    return sorted(found)


def _value(row: dict[str, str | None], column: str) -> str | None:
    raw = row.get(column)
    if raw is None:
        return None
    raw = raw.strip()
    return None if raw in ("", "-") else raw


_UNAVAILABLE = frozenset({2**31 - 1, -(2**31), 2**63 - 1})
"""What Android reports for a measure the modem does not give (``CellInfo.UNAVAILABLE``,
``Integer.MIN_VALUE``, ``CellInfo.UNAVAILABLE_LONG``): not measured."""


def _number(row: dict[str, str | None], column: str) -> float | None:
    raw = _value(row, column)
    if raw is None:
        return None
    value = float(raw)  # ValueError: the caller dead-letters the row
    if value in _UNAVAILABLE:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        msg = f"{column} is not a finite number"
        raise ValueError(msg)
    return value


_NO_IDENTITY = frozenset({0, 0xFFFF, 0xFFFFFFF}) | _UNAVAILABLE
"""``RAWCELLID`` values that identify no cell: 0, the all-ones 16- and 28-bit identities, and
Android's "unavailable" values."""


def cell_of(row: dict[str, str | None], generation: int | None) -> str | None:
    """The serving cell's identity in the operator's network, None when the row names no cell.

    ``CellID`` is the cell's number within its site: on LTE the last 8 bits of the E-UTRAN cell
    identity (``11`` is the 11th cell of whichever eNodeB serves), on UMTS the last 16 bits of
    the UTRAN cell id (below its radio network controller's id). ``RAWCELLID`` is the whole
    identity, unique in the operator's network: 28 bits on LTE (the eNodeB and its cell) and on
    UMTS (the controller and its cell), so it is the cell where it is given. 5G rows carry what
    G-NetTrack reports for them, the LTE anchor cell of non-standalone 5G, so a 5G and an LTE
    row of one anchor are one cell. A GSM cell identity (16 bits) is unique only within its
    location area (``LACHEX``). Without a usable ``RAWCELLID`` (the column absent, ``-``, or a
    value meaning "unavailable") ``CellID`` is the cell, as written.

    >>> row = {"CellID": "11", "RAWCELLID": "10807307", "LACHEX": "9CBA"}
    >>> cell_of(row, 5), cell_of(row, 4), cell_of({**row, "RAWCELLID": "11119115"}, 5)
    ('eci-10807307', 'eci-10807307', 'eci-11119115')
    >>> cell_of({"CellID": "21001", "RAWCELLID": "19747337"}, 3)
    'uci-19747337'
    >>> cell_of({"CellID": "22695", "RAWCELLID": "22695", "LACHEX": "3FE"}, 2)
    'lac-3FE-ci-22695'
    >>> cell_of({"CellID": "13", "RAWCELLID": "-"}, 4), cell_of({"CellID": "13"}, 4)
    ('13', '13')
    >>> cell_of({"CellID": "0", "RAWCELLID": "0"}, 3), cell_of({"CellID": "-"}, 3)
    ('0', None)
    >>> cell_of({"CellID": "7", "RAWCELLID": "\u00b2"}, 4), cell_of({"CellID": "7", "RAWCELLID": "12x"}, 4)
    ('7', '7')
    """
    cell = _value(row, "CellID")
    raw = _value(row, "RAWCELLID")
    identity = None  # ASCII digits only: '²' is a digit to isdigit(), not to int()
    if raw is not None and raw.isascii() and raw.isdigit() and len(raw) <= 12:
        identity = int(raw)
    if identity is None or identity in _NO_IDENTITY or generation is None:
        return cell
    if generation >= 4:
        return f"eci-{identity}"
    if generation == 3:
        return f"uci-{identity}"
    area = _value(row, "LACHEX")
    if area is None or cell is None:
        return cell
    return f"lac-{area}-ci-{cell}"


def _service(name: str) -> str:
    folders = {part.lower() for part in PurePath(name).parts[:-1]}
    return "video" if folders & STREAMING_FOLDERS else "data"


class _Rate:
    """The mean download rate over the last :data:`THROUGHPUT_WINDOW_S` seconds, once the
    download has run that long (its first seconds are TCP's slow start, not the network)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()
        self.since: float | None = None

    def stop(self) -> None:
        """The download paused: the next one starts afresh."""
        self.samples.clear()
        self.since = None

    def add(self, t: float, kbps: float) -> float | None:
        if self.since is None:
            self.since = t
        self.samples.append((t, kbps))
        while self.samples[0][0] <= t - THROUGHPUT_WINDOW_S:
            self.samples.popleft()
        if t - self.since < THROUGHPUT_WINDOW_S - 1.0:
            return None
        return sum(v for _, v in self.samples) / len(self.samples)


def _event(
    row: dict[str, str | None], k: int, trace: Trace, zone: ZoneInfo, rate: _Rate
) -> tuple[dict[str, Any], str | None]:
    """One row as a QoS event and its NetworkMode; raises KeyError (a column missing) or
    ValueError (a value that does not parse)."""
    stamp = _value(row, "Timestamp")
    if stamp is None:
        column = "Timestamp"
        raise KeyError(column)
    at = datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=zone)
    mode = _value(row, "NetworkMode")
    generation = generation_of(mode) if mode is not None else None
    cell = cell_of(row, generation)
    if cell is None:
        column = "CellID"
        raise KeyError(column)
    modern = generation is not None and generation >= 4
    event: dict[str, Any] = {
        "event_id": bounded_id(f"{trace.subscriber_id}-{k}"),
        "event_time": at.isoformat(),
        "subscriber_id": trace.subscriber_id,
        "cell_id": bounded_id(_ID_UNSAFE.sub("_", cell)),
        "service": trace.service,
        "rtt_ms": _number(row, "PINGAVG"),
        "jitter_ms": _number(row, "PINGSTDEV"),
        "loss_pct": _number(row, "PINGLOSS"),
        "radio_generation": generation,
    }
    if modern:
        event["rsrp_dbm"] = _number(row, "RSRP")
        event["rsrq_db"] = _number(row, "RSRQ")
        event["sinr_db"] = _number(row, "SNR")
        cqi = _number(row, "CQI")
        event["cqi"] = int(cqi) if cqi is not None and cqi.is_integer() else cqi
    if trace.service == "data" and _value(row, "State") == "D":
        kbps = _number(row, "DL_bitrate")
        mean = rate.add(at.timestamp(), kbps) if kbps is not None else None
        if mean is not None:
            event["throughput_kbps"] = round(mean, 1)
            event["transfer_active"] = 1  # a bulk download: its rate measures the network
            event.pop("loss_pct", None)  # ... and carries its loss (see the module docstring)
    else:
        rate.stop()
    return {k: v for k, v in event.items() if v is not None}, mode


def _rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str | None] | str]:
    """The reader's rows; a line it cannot read becomes the reason (a string) instead."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"unreadable CSV line: {exc}"
            continue
        yield row


def read_trace(
    source: IO[str], *, name: str, timezone: str = "UTC", topic: str = "replay"
) -> Trace:
    """Every row of one G-NetTrack CSV export as an event or a dead letter (the reason, and the
    row's text; ``offset`` is the row number from 1)."""
    zone = ZoneInfo(timezone)
    stem = PurePath(name).stem
    trace = Trace(name, bounded_id("trace-" + _ID_UNSAFE.sub("_", stem)), _service(name))
    reader = csv.DictReader(line.replace("\0", "") for line in source)
    rate = _Rate()
    for k, row in enumerate(_rows(reader), start=1):
        trace.rows += 1
        reason: BadReason
        if isinstance(row, str):  # a line the CSV reader could not split
            raw = row.encode()
            trace.dead_letters.append(BadEvent.of("not_json", row, raw, topic=topic, offset=k))
            continue
        try:
            event, mode = _event(row, k, trace, zone, rate)
        except KeyError as exc:
            reason, detail = "missing_field", f"{exc.args[0]} is missing"
        except ValueError as exc:
            reason, detail = "bad_type", str(exc)[:200]
        else:
            trace.events.append(event)
            trace.modes.append(mode)
            continue
        raw = orjson.dumps({c: v for c, v in row.items() if c is not None})
        trace.dead_letters.append(BadEvent.of(reason, detail, raw, topic=topic, offset=k))
    return trace

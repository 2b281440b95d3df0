"""Validation against the TM Forum OpenAPI documents vendored in ``tests/standards/tmf``.

Each document is an excerpt of TM Forum's published swagger (source, commit and licence in
``tests/standards/README.md``): the definitions cxstream's payloads claim, with the validation
keywords as published. ``errors(api, definition, payload)`` lists what a JSON-Schema (draft 4,
the dialect of swagger 2.0) validator with format checking finds wrong.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

TMF = Path(__file__).parent / "tmf"
DOCUMENTS = {
    "TMF642": "TMF642-Alarm-v4.0.0.json",
    "TMF656": "TMF656-ServiceProblem-v4.0.0.json",
    "TMF681": "TMF681-Communication-v4.0.0.json",
}


@cache
def document(api: str) -> dict[str, Any]:
    doc = json.loads((TMF / DOCUMENTS[api]).read_text())
    if api == "TMF642":
        # The one reading that departs from the letter of the swagger (see the README): its
        # ``Alarm.id`` is typed integer, while every reference to an alarm in the same document
        # (AlarmRef, the ack/clear/group tasks) and TMF656's ResourceAlarmRef carry the id as a
        # string, and alarm owners' ids are not numbers. Read as a string, like those.
        doc = copy.deepcopy(doc)
        doc["definitions"]["Alarm"]["properties"]["id"] = {"type": "string"}
    return doc


@cache
def validator(api: str, definition: str) -> Draft4Validator:
    doc = document(api)
    if definition not in doc["definitions"]:
        raise KeyError(f"{definition} is not among {api}'s vendored definitions")
    schema = {"definitions": doc["definitions"], "$ref": f"#/definitions/{definition}"}
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def errors(api: str, definition: str, payload: Any) -> list[str]:
    """Every violation, as ``path: message``; empty when the payload validates."""
    found = validator(api, definition).iter_errors(payload)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def alarm_errors(record: dict[str, Any]) -> list[str]:
    """A record on the alerts topic: a TMF642 ``Alarm`` that carries every field
    ``Alarm_Create`` makes mandatory (the seven X.733 ones)."""
    return errors("TMF642", "Alarm", record) + errors("TMF642", "Alarm_Create", record)


def problem_errors(record: dict[str, Any]) -> list[str]:
    """A record on the service-problems topic: a TMF656 ``ServiceProblem`` with
    ``ServiceProblem_Create``'s mandatory fields."""
    return errors("TMF656", "ServiceProblem", record) + errors(
        "TMF656", "ServiceProblem_Create", record
    )


def message_errors(record: dict[str, Any]) -> list[str]:
    """A webhook's data: a TMF681 ``CommunicationMessage`` with ``CommunicationMessage_Create``'s
    mandatory fields."""
    return errors("TMF681", "CommunicationMessage", record) + errors(
        "TMF681", "CommunicationMessage_Create", record
    )


def alarm_event_errors(record: dict[str, Any]) -> list[str]:
    """A record on the alarm-updates topic: a TMF642 event (state or attribute change) whose
    ``event.alarm`` is an ``Alarm_Update`` naming the alarm by id."""
    kind = record.get("eventType")
    if kind not in ("AlarmStateChangeEvent", "AlarmAttributeValueChangeEvent"):
        return [f"eventType: {kind!r} is not a TMF642 alarm change event"]
    found = errors("TMF642", kind, record)
    update = (record.get("event") or {}).get("alarm")
    if not isinstance(update, dict) or not update.get("id"):
        return [*found, "event/alarm: no alarm with an id"]
    return found + errors("TMF642", "Alarm_Update", update)

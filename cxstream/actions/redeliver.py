"""Choose dead-lettered actions to deliver again (``cxstream redeliver``).

A record of the actions dead-letter topic is ``{"action": ..., "error": ..., "endpoint": ...,
"failed_at": ...}`` (:class:`~cxstream.flows.sinks.WebhookSink`). :func:`select` reads such
records, skips the ones that do not parse (counted), keeps the last record of each action and
the ones the filters name: action ids, a range of ``failed_at`` times, a text in the error.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> a = Action(action_id="a1", kind="proactive_apology", subscriber_id="s1", channel="sms",
...            reason="degradation", alert_id="x", event_time=t, created_at=t)
>>> record = orjson.dumps({"action": a.model_dump(mode="json"), "error": "HTTP 503",
...                        "failed_at": "2026-01-01T00:00:05+00:00"})
>>> chosen = select([record, b"not json"], reason="503")
>>> [d.action.action_id for d in chosen.letters], chosen.invalid
(['a1'], 1)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from pydantic import ValidationError

from cxstream.events import Action

__all__ = ["DeadLetter", "Selection", "select"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered action and why it failed."""

    action: Action
    error: str
    failed_at: datetime | None


@dataclass
class Selection:
    """The dead letters chosen, and how many records did not parse."""

    letters: list[DeadLetter] = field(default_factory=list)
    invalid: int = 0
    read: int = 0


def select(
    records: Iterable[bytes | None],
    *,
    ids: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    reason: str | None = None,
) -> Selection:
    """The dead letters among ``records`` that match every filter given (see the module doc)."""
    wanted = set(ids)
    latest: dict[str, DeadLetter] = {}
    out = Selection()
    for value in records:
        out.read += 1
        try:
            record = orjson.loads(value or b"")
            action = Action.model_validate(record["action"])
            error = str(record.get("error") or "")
            stamp = record.get("failed_at")
            failed_at = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError):
            out.invalid += 1
            continue
        latest.pop(action.action_id, None)  # the last record of an action is its state
        latest[action.action_id] = DeadLetter(action, error, failed_at)
    for letter in latest.values():
        if wanted and letter.action.action_id not in wanted:
            continue
        if reason is not None and reason.lower() not in letter.error.lower():
            continue
        if since is not None and (letter.failed_at is None or letter.failed_at < since):
            continue
        if until is not None and (letter.failed_at is None or letter.failed_at > until):
            continue
        out.letters.append(letter)
    return out

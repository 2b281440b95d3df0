"""Payload shapes after TM Forum Open APIs, so OSS/BSS systems can take them as they are.

* Cell incidents on the alerts topic follow **TMF642 Alarm Management** (``Alarm``: alarmType,
  perceivedSeverity, probableCause, alarmedObject, state raised/updated/cleared,
  crossedThresholdInformation).
* Outreach in webhooks follows **TMF681 Communication Management** (``CommunicationMessage``:
  messageType, receiver, sender, characteristic, scheduledSendTime).

Only the fields we can fill honestly are set; cxstream's own details travel as characteristics.
"""

from __future__ import annotations

from typing import Any

from cxstream.events import Action, CellIncident

__all__ = ["alarm_from_incident", "communication_message"]

_ALARM_STATE = {"open": "raised", "updated": "updated", "resolved": "cleared"}
_MESSAGE_TYPE = {"sms": "SMS", "email": "Email", "push": "PushNotification", "voice_call": "Voice"}


def alarm_from_incident(incident: CellIncident, open_share: float) -> dict[str, Any]:
    """A TMF642 ``Alarm`` for a cell incident.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> inc = CellIncident(incident_id="inc-c1-1", cell_id="c1", state="resolved", severity="major",
    ...                    opened_at=t, updated_at=t, affected=[], active_subscribers=10, share=0.0,
    ...                    experience=90.0)
    >>> a = alarm_from_incident(inc, 0.3)
    >>> a["state"], a["perceivedSeverity"], a["alarmedObject"]["id"]
    ('cleared', 'cleared', 'c1')
    """
    cleared = incident.state == "resolved"
    alarm: dict[str, Any] = {
        "@type": "Alarm",
        "id": incident.incident_id,
        "alarmType": "qualityOfServiceAlarm",  # ITU-T X.733 event type, as TMF642 spells it
        "perceivedSeverity": "cleared" if cleared else incident.severity,
        "probableCause": "performanceDegraded",
        "specificProblem": (
            f"{len(incident.affected)} of {incident.active_subscribers} active subscribers "
            f"degraded; mean experience {incident.experience:.0f}/100"
        ),
        "alarmedObjectType": "Cell",
        "alarmedObject": {"id": incident.cell_id, "@referredType": "Cell"},
        "state": _ALARM_STATE[incident.state],
        "alarmRaisedTime": incident.opened_at.isoformat(),
        "alarmChangedTime": incident.updated_at.isoformat(),
        "sourceSystemId": "cxstream",
        "crossedThresholdInformation": {
            "thresholdId": "cells.open_share",
            "indicatorName": "degradedSubscriberShare",
            "observedValue": str(incident.share),
            "thresholdValue": str(open_share),
            "direction": "up",
        },
        "affectedService": [
            {"id": a.subscriber_id, "@referredType": "Subscriber", "valueTier": a.value_tier}
            for a in incident.affected
        ],
        "comment": [
            {"comment": "", "systemId": "cxstream", "time": incident.updated_at.isoformat()}
        ],
        "x-cxstream": incident.model_dump(mode="json", exclude={"affected"}),
    }
    if cleared:
        alarm["alarmClearedTime"] = incident.updated_at.isoformat()
    return alarm


def communication_message(action: Action) -> dict[str, Any]:
    """A TMF681 ``CommunicationMessage`` for one outreach action."""
    characteristic = [
        {"name": "actionKind", "value": action.kind},
        {"name": "reason", "value": action.reason},
        {"name": "sourceId", "value": action.alert_id},
        {"name": "rule", "value": action.rule},
        {"name": "priority", "value": action.priority},
        {"name": "valueTier", "value": action.value_tier.value if action.value_tier else None},
        {"name": "customerValue", "value": action.customer_value},
    ]
    if action.offer is not None:
        characteristic.append({"name": "offer", "value": action.offer})
    if action.details:
        characteristic.append({"name": "explanation", "value": action.details})
    message: dict[str, Any] = {
        "@type": "CommunicationMessage",
        "id": action.action_id,
        "messageType": _MESSAGE_TYPE[action.channel.value],
        "subject": action.kind.replace("_", " "),
        "priority": str(action.priority),
        "state": "initial",
        "sender": {"id": "cxstream", "@type": "Sender"},
        "receiver": [{"id": action.subscriber_id, "@type": "Receiver"}],
        "characteristic": characteristic,
        "language": action.language,
    }
    if action.send_at is not None:
        message["scheduledSendTime"] = action.send_at.isoformat()
    return message

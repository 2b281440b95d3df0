"""Payload shapes after TM Forum Open APIs, so OSS/BSS systems can take them as they are.

* Cell incidents on the alerts topic follow **TMF642 Alarm Management** (``Alarm``: alarmType,
  perceivedSeverity, probableCause, alarmedObject, state raised/updated/cleared,
  crossedThresholdInformation: the degraded share, or the KPI that left its normal).
* So do individual degradations (:func:`alarm_from_alert`): the alarmed object is the
  subscriber's service, the probable cause follows the measure that moved most.
* Outreach in webhooks follows **TMF681 Communication Management** (``CommunicationMessage``:
  messageType, content, priority, receiver, sender, characteristic, scheduledSendTime).

Only the fields we can fill honestly are set; cxstream's own details travel as characteristics.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from cxstream.batches import AlarmClear
from cxstream.events import Action, Alert, CellIncident

__all__ = [
    "alarm_from_alert",
    "alarm_from_incident",
    "cleared_alarm",
    "communication_message",
    "endpoint_alarm",
    "probable_cause",
    "service_problem_from_incident",
    "tmf_priority",
]

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
    outage = incident.cause == "outage"
    alarm: dict[str, Any] = {
        "@type": "Alarm",
        "id": incident.incident_id,
        # ITU-T X.733 event types and probable causes, as TMF642 spells them: a cell gone
        # silent is a communications alarm (loss of signal), a degraded one a QoS alarm
        "alarmType": "communicationsAlarm" if outage else "qualityOfServiceAlarm",
        "perceivedSeverity": "cleared" if cleared else incident.severity,
        "probableCause": "lossOfSignal" if outage else "performanceDegraded",
        "specificProblem": _specific_problem(incident),
        "alarmedObjectType": "Cell",
        "alarmedObject": {"id": incident.cell_id, "@referredType": "Cell"},
        "state": _ALARM_STATE[incident.state],
        "alarmRaisedTime": incident.opened_at.isoformat(),
        "alarmChangedTime": incident.updated_at.isoformat(),
        "sourceSystemId": "cxstream",
        "crossedThresholdInformation": _crossed(incident, open_share),
        # the affected subscribers' services (a subscriber's service is known by the subscriber
        # id, as on the individual alarms); their value tiers are cxstream's, in x-cxstream
        "affectedService": [
            {"id": a.subscriber_id, "@referredType": "Service"} for a in incident.affected
        ],
        "comment": [
            {"comment": "", "systemId": "cxstream", "time": incident.updated_at.isoformat()}
        ],
        "x-cxstream": {
            **incident.model_dump(mode="json", exclude={"affected"}),
            "affected_tiers": {a.subscriber_id: a.value_tier for a in incident.affected},
        },
    }
    if cleared:
        alarm["alarmClearedTime"] = incident.updated_at.isoformat()
        if incident.resolved_by is not None:  # an operator's clear, from the dashboard
            alarm["clearUserId"] = incident.resolved_by
            alarm["clearSystemId"] = "cxstream-dashboard"
    return alarm


# TMF656 v4 ServiceProblemStateType: a problem the system raised itself is acknowledged at once
_PROBLEM_STATUS = {"open": "acknowledged", "updated": "inProgress", "resolved": "resolved"}
_PROBLEM_PRIORITY = {"critical": 1, "major": 3, "minor": 5}  # TMF656: 1 (highest) to 10
_PROBLEM_REASON = {
    "degraded_share": "a share of the cell's subscribers degraded together",
    "kpi_anomaly": "a cell KPI left its own seasonal normal",
    "outage": "the cell's traffic collapsed (it went silent)",
}


def service_problem_from_incident(incident: CellIncident) -> dict[str, Any]:
    """A TMF656 ``ServiceProblem`` for a cell incident: the problem in the service layer that
    the cell's TMF642 alarm (the same id, ``underlyingAlarm``) explains, with how many services
    it touches and how badly, and the cell as its root-cause resource; ``status`` acknowledged
    when it opens, inProgress while it changes, resolved with ``resolutionDate`` when it clears.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> inc = CellIncident(incident_id="inc-c1-1", cell_id="c1", state="open", severity="major",
    ...                    opened_at=t, updated_at=t, affected=[], active_subscribers=10,
    ...                    share=0.4, experience=51.0, cause="kpi_anomaly")
    >>> p = service_problem_from_incident(inc)
    >>> p["status"], p["priority"], p["impactImportanceFactor"], p["rootCauseResource"][0]["id"]
    ('acknowledged', 3, '40', 'c1')
    """
    changed = incident.updated_at.isoformat()
    cell = {"id": incident.cell_id, "name": incident.cell_id, "@referredType": "Cell"}
    alarm = {"id": incident.incident_id, "@referredType": "Alarm"}
    problem: dict[str, Any] = {
        "@type": "ServiceProblem",
        "id": incident.incident_id,
        "category": "system.originated",
        "description": _specific_problem(incident),
        "reason": _PROBLEM_REASON[incident.cause],
        "priority": _PROBLEM_PRIORITY[incident.severity],
        "originatorParty": {"id": "cxstream", "role": "originator", "@referredType": "System"},
        "originatingSystem": "cxstream",
        "status": _PROBLEM_STATUS[incident.state],
        "statusChangeDate": changed,
        "creationDate": incident.opened_at.isoformat(),
        "lastUpdate": changed,
        "affectedNumberOfServices": len(incident.affected),
        # TMF656: the overall importance of the impact, 0 (none) to 100 (worst): the share of
        # the cell's active subscribers caught in it
        "impactImportanceFactor": str(round(100 * incident.share)),
        "affectedResource": [cell],
        "rootCauseResource": [cell],
        "firstAlert": {**alarm, "role": "cellAlarm"},
        "underlyingAlarm": [alarm],
        # cxstream's own details, as TMF656 characteristics
        "characteristic": [
            {"name": "cause", "value": incident.cause, "valueType": "string"},
            {
                "name": "activeSubscribers",
                "value": incident.active_subscribers,
                "valueType": "integer",
            },
            {"name": "cellExperience", "value": incident.experience, "valueType": "number"},
        ],
    }
    if incident.state == "resolved":
        problem["resolutionDate"] = changed
        problem["statusChangeReason"] = (
            f"resolved by {incident.resolved_by}"
            if incident.resolved_by is not None
            else "the cell's subscribers recovered"
        )
    return problem


# ITU-T X.733 probable causes, as TMF642 spells them, by the measure that moved most
_CAUSE_BY_INPUT = {
    "rtt_ms": "responseTimeExcessive",
    "jitter_ms": "performanceDegraded",
    "loss_pct": "performanceDegraded",
    "throughput_kbps": "performanceDegraded",
    "sinr_db": "degradedSignal",
    "radio_generation": "degradedSignal",  # a fall to 2G/3G: the newer access's signal was lost
}


def inputs_text(why: dict[str, Any]) -> str:
    """The inputs of a why as people read them.

    >>> inputs_text({"inputs": [{"input": "rtt_ms", "from": 40.0, "to": 400.0}]})
    'rtt_ms 40.0 -> 400.0'
    """
    inputs = why.get("inputs") or []
    return ", ".join(f"{i['input']} {i['from']} -> {i['to']}" for i in inputs if "input" in i)


def probable_cause(why: dict[str, Any]) -> str:
    """The X.733 probable cause of a degradation, after the measure that moved most (the first
    of ``why["inputs"]``).

    >>> probable_cause({"inputs": [{"input": "sinr_db"}]}), probable_cause({})
    ('degradedSignal', 'performanceDegraded')
    """
    inputs = why.get("inputs") or []
    first = inputs[0].get("input") if inputs and isinstance(inputs[0], dict) else None
    return _CAUSE_BY_INPUT.get(str(first), "performanceDegraded")


def alarm_from_alert(alert: Alert) -> dict[str, Any]:
    """A TMF642 ``Alarm`` (state ``raised``) for one subscriber's degradation.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> alert = Alert(alert_id="deg-s1-e9", kind="degradation", severity="major",
    ...               subscriber_id="s1", cell_id="c1", score=0.99, experience=41.0,
    ...               event_time=t, detected_at=t,
    ...               why={"inputs": [{"input": "rtt_ms", "from": 40.0, "to": 400.0}]})
    >>> a = alarm_from_alert(alert)
    >>> a["alarmType"], a["probableCause"], a["alarmedObject"]["id"], a["state"]
    ('qualityOfServiceAlarm', 'responseTimeExcessive', 's1', 'raised')
    """
    experience = alert.why.get("experience") or {}
    moved = inputs_text(alert.why)
    problem = f"experience {experience.get('from')} -> {alert.experience:.0f}/100"
    alarm: dict[str, Any] = {
        "@type": "Alarm",
        "id": alert.alert_id,
        "alarmType": "qualityOfServiceAlarm",
        "perceivedSeverity": alert.severity,
        "probableCause": probable_cause(alert.why),
        "specificProblem": f"{problem}; {moved}" if moved else problem,
        "alarmedObjectType": "Service",
        "alarmedObject": {"id": alert.subscriber_id or alert.cell_id, "@referredType": "Service"},
        "state": "raised",
        "alarmRaisedTime": alert.event_time.isoformat(),
        "alarmReportingTime": alert.detected_at.isoformat(),
        "sourceSystemId": "cxstream",
        "isRootCause": alert.explained_by is None,
        "x-cxstream": alert.model_dump(mode="json"),
    }
    if alert.explained_by is not None:  # the cell incident's alarm is the root cause
        alarm["parentAlarm"] = [{"id": alert.explained_by, "@referredType": "Alarm"}]
    return alarm


def cleared_alarm(clear: AlarmClear) -> dict[str, Any]:
    """The TMF642 ``Alarm`` of a subscriber's degradation in state ``cleared``: the episode it
    was raised for ended (the subscriber's experience is back above its reset level).

    >>> c = AlarmClear("deg-s1-e9", "s1", "c1", 1_767_225_600.0, 1_767_225_900.0,
    ...                "responseTimeExcessive")
    >>> a = cleared_alarm(c)
    >>> a["state"], a["perceivedSeverity"], a["probableCause"], a["alarmClearedTime"]
    ('cleared', 'cleared', 'responseTimeExcessive', '2026-01-01T00:05:00+00:00')
    """
    raised = datetime.fromtimestamp(clear.raised_at, UTC).isoformat()
    cleared = datetime.fromtimestamp(clear.cleared_at, UTC).isoformat()
    return {
        "@type": "Alarm",
        "id": clear.alert_id,
        "alarmType": "qualityOfServiceAlarm",
        "perceivedSeverity": "cleared",
        "probableCause": clear.probable_cause,
        "specificProblem": "the subscriber's experience is back to its usual level",
        "alarmedObjectType": "Service",
        "alarmedObject": {"id": clear.subscriber_id, "@referredType": "Service"},
        "state": "cleared",
        "alarmRaisedTime": raised,
        "alarmChangedTime": cleared,
        "alarmClearedTime": cleared,
        "sourceSystemId": "cxstream",
        "x-cxstream": {
            "kind": "degradation_cleared",
            "alert_id": clear.alert_id,
            "subscriber_id": clear.subscriber_id,
            "cell_id": clear.cell_id,
        },
    }


def endpoint_alarm(url: str, reason: str, at: datetime) -> dict[str, Any]:
    """A TMF642 ``Alarm`` for the action webhook endpoint that cxstream disabled (it answered
    ``410 Gone``): a communications alarm on the endpoint, for the NOC and the CRM's owners.

    >>> from datetime import UTC, datetime
    >>> a = endpoint_alarm("https://crm.example/hooks", "answered HTTP 410 Gone",
    ...                    datetime(2026, 1, 1, tzinfo=UTC))
    >>> a["alarmType"], a["probableCause"], a["alarmedObject"]["id"]
    ('communicationsAlarm', 'remoteNodeTransmissionError', 'https://crm.example/hooks')
    """
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return {
        "@type": "Alarm",
        "id": f"webhook-disabled-{digest}-{int(at.timestamp())}",
        "alarmType": "communicationsAlarm",
        "perceivedSeverity": "major",
        "probableCause": "remoteNodeTransmissionError",
        "specificProblem": f"action webhook endpoint disabled: {reason}; actions are "
        "dead-lettered until it is enabled again",
        "alarmedObjectType": "Endpoint",
        "alarmedObject": {"id": url, "@referredType": "Endpoint"},
        "state": "raised",
        "alarmRaisedTime": at.isoformat(),
        "alarmReportingTime": at.isoformat(),
        "sourceSystemId": "cxstream",
        "isRootCause": True,
        "x-cxstream": {"kind": "webhook_disabled", "endpoint": url, "reason": reason},
    }


def _specific_problem(incident: CellIncident) -> str:
    # the figures of now beside those it caught, not mixed ("29 of 28 active subscribers
    # degraded" where one affected had left the cell)
    now = round(incident.share * incident.active_subscribers)
    if incident.state == "resolved":
        return (
            f"cleared: {now} of {incident.active_subscribers} active subscribers degraded now, "
            f"mean experience {incident.experience:.0f}/100; {len(incident.affected)} were "
            "affected"
        )
    kpis = incident.why.get("anomalous_kpis") or {}
    if incident.cause == "degraded_share" or not kpis:
        caught = len(incident.affected)
        return (
            f"{now} of {incident.active_subscribers} active subscribers degraded; mean "
            f"experience {incident.experience:.0f}/100"
            + (f"; {caught} affected so far" if caught != now else "")
        )
    moved = ", ".join(f"{k} {v['value']} (normal {v['baseline']})" for k, v in kpis.items())
    what = "cell traffic collapsed" if incident.cause == "outage" else "cell KPIs out of normal"
    return f"{what}: {moved}"


def _crossed(incident: CellIncident, open_share: float) -> dict[str, Any]:
    """TMF642 ``crossedThresholdInformation``: the degraded share against ``cells.open_share``,
    or the first anomalous KPI against its baseline (the ``threshold`` reference names the
    setting or the KPI series; the crossing description carries the threshold's value)."""
    kpis = incident.why.get("anomalous_kpis") or {}
    if incident.cause == "degraded_share" or not kpis:
        return {
            "threshold": {"id": "cells.open_share", "@referredType": "Threshold"},
            "indicatorName": "degradedSubscriberShare",
            "observedValue": str(incident.share),
            "thresholdCrossingDescription": f"degraded share {incident.share} above {open_share}",
            "direction": "up",
        }
    name, kpi = next(iter(kpis.items()))
    return {
        "threshold": {"id": f"cells.kpis.{name}", "@referredType": "Threshold"},
        "indicatorName": name,
        "observedValue": str(kpi["value"]),
        "thresholdCrossingDescription": f"{name} {kpi['value']} left its normal {kpi['baseline']}",
        "direction": kpi["direction"],
    }


def tmf_priority(policy_priority: int) -> str:
    """TMF681 ``priority`` (a smaller number is more urgent, 1..5) from the policy's rule priority
    (a larger number wins, 0..1000): 90 and above is 1, 70-89 is 2, 50-69 is 3, 30-49 is 4, below
    30 is 5.

    >>> [tmf_priority(p) for p in (95, 80, 60, 40, 10)]
    ['1', '2', '3', '4', '5']
    """
    for level, floor in enumerate((90, 70, 50, 30), start=1):
        if policy_priority >= floor:
            return str(level)
    return "5"


def communication_message(action: Action) -> dict[str, Any]:
    """A TMF681 ``CommunicationMessage`` for one outreach action: ``content`` is the policy's
    message for the action kind in the customer's language, ``priority`` in TMF681's meaning
    (:func:`tmf_priority`; the policy's own priority is the ``priority`` characteristic)."""
    characteristic = [
        {"name": "actionKind", "value": action.kind},
        {"name": "reason", "value": action.reason},
        {"name": "sourceId", "value": action.alert_id},
        {"name": "rule", "value": action.rule},
        {"name": "priority", "value": action.priority},
        {"name": "valueTier", "value": action.value_tier.value if action.value_tier else None},
        {"name": "customerValue", "value": action.customer_value},
        # the language of ``content``: not a CommunicationMessage field in TMF681, so a
        # characteristic like the other additions
        {"name": "language", "value": action.language},
    ]
    if action.customer_language is not None:  # where content is not in it, a sender can translate
        characteristic.append({"name": "customerLanguage", "value": action.customer_language})
    if action.offer is not None:
        characteristic.append({"name": "offer", "value": action.offer})
    if action.details:
        characteristic.append({"name": "explanation", "value": action.details})
    message: dict[str, Any] = {
        "@type": "CommunicationMessage",
        "id": action.action_id,
        "messageType": _MESSAGE_TYPE[action.channel.value],
        "subject": action.kind.replace("_", " "),
        "content": action.content or action.kind.replace("_", " "),
        "priority": tmf_priority(action.priority),
        "state": "initial",
        "sender": {"id": "cxstream", "@type": "Sender"},
        "receiver": [{"id": action.subscriber_id, "@type": "Receiver"}],
        "characteristic": characteristic,
    }
    if action.send_at is not None:
        message["scheduledSendTime"] = action.send_at.isoformat()
    return message

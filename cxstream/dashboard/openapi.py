"""The OpenAPI 3.1 description of the dashboard's JSON API, served at ``/api/openapi.json`` for
CRM, IVR and care tools. Every ``/api`` path needs credentials (401 without)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_MONEY = {
    "type": ["object", "null"],
    "required": ["amount", "currency"],
    "properties": {
        "amount": {"type": "number", "description": "to the cent"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217"},
    },
}
_REASON = {
    "type": "object",
    "description": "one feature's signed contribution to the churn score (logit)",
    "properties": {"feature": {"type": "string"}, "contribution": {"type": "number"}},
}
_AFFECTED = {
    "type": "object",
    "required": ["subscriber_id", "churn_probability", "value", "expected_loss"],
    "properties": {
        "subscriber_id": {"type": "string"},
        "value_tier": {"type": ["string", "null"], "description": "in GET /api/incidents/{id}"},
        "churn_probability": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "scored_at": {"type": ["string", "null"], "format": "date-time"},
        "reasons": {"type": "array", "items": _REASON},
        "value": {**_MONEY, "description": "monthly charge x value_model.revenue_months"},
        "expected_loss": {**_MONEY, "description": "churn probability x value"},
    },
}
_INCIDENT = {
    "type": "object",
    "required": ["id", "cell_id", "state", "severity", "value_at_risk", "affected"],
    "properties": {
        "id": {"type": "string"},
        "cell_id": {"type": "string"},
        "state": {"type": "string", "enum": ["raised", "updated", "cleared"]},
        "severity": {"type": "string"},
        "cause": {"type": ["string", "null"]},
        "since": {"type": ["string", "null"], "format": "date-time"},
        "changed": {"type": ["string", "null"], "format": "date-time"},
        "resolved_by": {"type": ["string", "null"]},
        "active": {
            "type": ["integer", "null"],
            "description": "the cell's active subscribers at the incident's last update",
        },
        "kpis": {
            "type": "object",
            "description": "the cell's KPIs out of their normal (experience, loss_pct, "
            "throughput, volume, active), each with its value and baseline",
            "additionalProperties": {
                "type": "object",
                "properties": {"value": {"type": "number"}, "baseline": {"type": "number"}},
            },
        },
        "value_at_risk": {**_MONEY, "description": "the affected customers' expected losses"},
        "affected": {"type": "array", "items": _AFFECTED},
    },
}
_CUSTOMER = {
    "type": "object",
    "required": [
        "profile",
        "consent",
        "churn",
        "experience",
        "alerts",
        "incidents",
        "contacts",
        "offers",
        "outcomes",
    ],
    "properties": {
        "profile": {"type": ["object", "null"], "description": "the customer context in Redis"},
        "consent": {
            "type": ["object", "null"],
            "properties": {
                "channels": {"type": "object", "additionalProperties": {"type": "string"}},
                "changed_at": {
                    "type": "object",
                    "description": "per channel, when its consent was last set",
                    "additionalProperties": {"type": "string", "format": "date-time"},
                },
                "updated_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "churn": {
            "type": ["object", "null"],
            "required": ["probability", "explanation", "scored_at"],
            "properties": {
                "probability": {"type": "number", "minimum": 0, "maximum": 1},
                "explanation": {"type": "array", "items": _REASON},
                "scored_at": {"type": ["string", "null"], "format": "date-time"},
                "trend": {
                    "type": "array",
                    "description": "the latest scores, [scored_at, probability], oldest first",
                    "items": {"type": "array"},
                },
                "value": _MONEY,
                "expected_loss": _MONEY,
            },
        },
        "experience": {
            "type": "object",
            "properties": {
                "index": {"type": ["number", "null"]},
                "history": {
                    "type": "array",
                    "description": "[epoch seconds, experience index 0-100], oldest first",
                    "items": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
        "alerts": {"type": "array", "items": {"type": "object"}},
        "incidents": {
            "type": "array",
            "description": "the cell incidents that reached the customer (id, cell_id, state, "
            "since, cause: degraded_share, kpi_anomaly or outage; how: affected where the "
            "incident names them, explained where it explains a degradation of theirs, in_cell "
            "where an experience sample of theirs was taken in the cell while it was open)",
            "items": {"type": "object"},
        },
        "contacts": {
            "type": "array",
            "description": "every contact decision (sent, deferred, suppressed) with its reason",
            "items": {"type": "object"},
        },
        "offers": {"type": "array", "items": {"type": "object"}},
        "outcomes": {"type": "array", "items": {"type": "object"}},
        "tickets": {"type": "object"},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_UNAUTHORIZED = _json(_ERROR, "no or wrong credentials")

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cxstream dashboard API",
        "version": "1",
        "description": "Incidents with their value at risk, and each customer's whole story.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Money": _MONEY, "Incident": _INCIDENT, "Customer": _CUSTOMER},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/incidents": {
            "get": {
                "summary": "Cell incidents, their value at risk and affected customers",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["incidents"],
                            "properties": {
                                "incidents": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Incident"},
                                }
                            },
                        },
                        "the incidents the dashboard holds, newest first",
                    ),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/incidents/{incident_id}": {
            "get": {
                "summary": "One cell incident, its value at risk and affected customers",
                "parameters": [
                    {
                        "name": "incident_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(
                        {"$ref": "#/components/schemas/Incident"},
                        "the incident; each affected customer with their value tier, highest "
                        "expected loss first",
                    ),
                    "401": _UNAUTHORIZED,
                    "404": _json(_ERROR, "the dashboard holds no incident of that id"),
                },
            }
        },
        "/api/customers/{subscriber_id}": {
            "get": {
                "summary": "A customer's whole story",
                "parameters": [
                    {
                        "name": "subscriber_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Customer"}, "the customer"),
                    "401": _UNAUTHORIZED,
                    "404": _json(_ERROR, "no profile and nothing seen about this id"),
                },
            }
        },
        "/api/customers": {
            "get": {
                "summary": "Search subscriber ids",
                "parameters": [
                    {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "results": {"type": "array", "items": {"type": "string"}}
                            },
                        },
                        "matching ids",
                    ),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/incidents/{incident_id}/{verb}": {
            "post": {
                "summary": "Acknowledge (ack) or resolve an incident; the flow applies it",
                "parameters": [
                    {
                        "name": "incident_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "verb",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["ack", "resolve"]},
                    },
                ],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"user": {"type": "string"}}}
                        }
                    }
                },
                "responses": {
                    "200": _json({"type": "object"}, "recorded and published"),
                    "401": _UNAUTHORIZED,
                    "404": _json(_ERROR, "unknown incident or verb"),
                    "503": _json(_ERROR, "Kafka did not confirm it within 10 s: not recorded"),
                },
            }
        },
        "/api/overview": {
            "get": {
                "summary": "Everything the main page shows",
                "responses": {"200": _json({"type": "object"}, "ok"), "401": _UNAUTHORIZED},
            }
        },
    },
}

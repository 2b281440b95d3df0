"""The NOC dashboard: a Starlette app fed from the Kafka topics, live over server-sent events."""

from __future__ import annotations

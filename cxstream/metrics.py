"""Prometheus metrics, declared once, on the default registry.

Bytewax serves this registry at ``/metrics`` on its dataflow API port when
``BYTEWAX_DATAFLOW_API_ENABLED=1`` (``flow.metrics_port`` in the settings), beside its own
``bytewax_kafka_consumer_lag``. No subscriber or cell id is ever a label: every label comes from a
closed set, and the known combinations are initialised so they are exported at 0 from the start.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from cxstream.events import BadReason

__all__ = [
    "ALERTS",
    "CELL_INCIDENTS",
    "CUSTOMER_UPDATES",
    "DEAD_LETTERS",
    "DECISIONS",
    "ENRICHMENT",
    "EVENTS",
    "EVENT_TO_ACTION",
    "EXPERIMENT_OUTCOMES",
    "EXPERIMENT_RATE",
    "EXPERIMENT_SUBJECTS",
    "EXPERIMENT_UPLIFT",
    "HELD_ALERTS",
    "POLICY_RELOADS",
    "WEBHOOK_DELIVERIES",
]

_NS = "cxstream"

EVENTS = Counter(
    "events",
    "QoS events by how they ended: processed or dead-lettered.",
    ["outcome"],
    namespace=_NS,
)
DEAD_LETTERS = Counter(
    "dead_letters",
    "Records sent to a dead-letter topic, by kind and reason.",
    ["kind", "reason"],
    namespace=_NS,
)
ENRICHMENT = Counter(
    "enrichment_lookups",
    "Customer-context lookups: cache hit, fetched from Redis (miss), absent in Redis, or stale "
    "(Redis unreachable, defaults used).",
    ["result"],
    namespace=_NS,
)
ALERTS = Counter(
    "alerts", "Alerts raised, by kind and severity.", ["kind", "severity"], namespace=_NS
)
CELL_INCIDENTS = Counter(
    "cell_incidents", "Cell-incident life-cycle changes, by state.", ["state"], namespace=_NS
)
POLICY_RELOADS = Counter(
    "policy_reloads",
    "Policy file changes, applied or rejected (the old policy kept).",
    ["outcome"],
    namespace=_NS,
)
DECISIONS = Counter(
    "decisions",
    "Contact decisions by action kind and result: sent, deferred (quiet hours) or suppressed by "
    "which rule.",
    ["kind", "result"],
    namespace=_NS,
)
EXPERIMENT_SUBJECTS = Gauge(
    "experiment_subjects",
    "Customers assigned to the treated or the hold-out control group.",
    ["group"],
    namespace=_NS,
)
EXPERIMENT_OUTCOMES = Gauge(
    "experiment_outcomes",
    "Outcomes joined back to the group of the customer.",
    ["group", "outcome"],
    namespace=_NS,
)
EXPERIMENT_RATE = Gauge(
    "experiment_outcome_rate",
    "Outcomes per customer of the group (take-up, churn, complaints).",
    ["group", "outcome"],
    namespace=_NS,
)
EXPERIMENT_UPLIFT = Gauge(
    "experiment_uplift",
    "Control rate minus treated rate of an outcome (positive churn uplift: fewer churned).",
    ["outcome"],
    namespace=_NS,
)
HELD_ALERTS = Gauge(
    "held_alerts",
    "Individual degradation alerts held while the cell demarcation decides whether a cell "
    "incident explains them.",
    namespace=_NS,
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries",
    "Webhook delivery attempts that ended, by outcome.",
    ["outcome"],
    namespace=_NS,
)
CUSTOMER_UPDATES = Counter(
    "customer_updates",
    "Customer-context updates applied from the customers topic.",
    ["outcome"],
    namespace=_NS,
)
EVENT_TO_ACTION = Histogram(
    "event_to_action",
    "Delay from a QoS event's event time to the action it caused.",
    unit="seconds",
    namespace=_NS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

for _outcome in ("processed", "dead_letter"):
    EVENTS.labels(_outcome)
for _reason in get_args(BadReason):
    for _kind in ("qos", "customer", "outcome"):
        DEAD_LETTERS.labels(_kind, _reason)
for _result in ("hit", "miss", "absent", "stale"):
    ENRICHMENT.labels(_result)
for _outcome in ("applied", "rejected"):
    POLICY_RELOADS.labels(_outcome)
for _state in ("open", "updated", "resolved"):
    CELL_INCIDENTS.labels(_state)
for _outcome in ("delivered", "retried", "failed", "dead_lettered"):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _outcome in ("applied", "dead_letter"):
    CUSTOMER_UPDATES.labels(_outcome)

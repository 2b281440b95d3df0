"""Prometheus metrics, declared once, on the default registry.

``cxstream run`` serves this registry at ``/metrics`` on ``flow.metrics_host``:``flow.metrics_port``
(:func:`cxstream.flows.run.serve_metrics`); Bytewax's Kafka connector adds its own
``bytewax_kafka_consumer_lag`` to it. No subscriber or cell id is ever a label: every label comes from a
closed set, and the known combinations are initialised so they are exported at 0 from the start.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Enum, Gauge, Histogram

from cxstream.events import BadReason

__all__ = [
    "ALERTS",
    "CELL_EVENTS",
    "CELL_INCIDENTS",
    "CHURN_BASE_SCORED",
    "CHURN_DRIFTS",
    "CHURN_LOG_LOSS",
    "CHURN_MODEL_EVENTS",
    "CHURN_OUTCOMES",
    "CHURN_REVISION",
    "CHURN_ROC_AUC",
    "CHURN_SCORES",
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
    "FEED_GAPS",
    "FLOW_HEALTH",
    "HELD_ALERTS",
    "KAFKA_DELIVERY_ERRORS",
    "KAFKA_INPUT_SILENT",
    "KAFKA_INPUT_UNREAD",
    "KAFKA_OUT_QUEUED",
    "KAFKA_OUT_RECORDS",
    "POLICY_RELOADS",
    "REDIS_UNANSWERED",
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
LATE_EVENTS = Counter(
    "late_events",
    "QoS events later than flow.allowed_lateness_s behind their partition's watermark, by what "
    "was done with them (processed with a late flag, or dead-lettered).",
    ["handling"],
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
    "cell_incidents",
    "Cell-incident life-cycle changes, by state and by what opened the incident.",
    ["state", "cause"],
    namespace=_NS,
)
OPERATOR_COMMANDS = Counter(
    "operator_commands",
    "Operators' commands read from the alarm-updates topic, by verb (ack, resolve) and result "
    "(applied; not_open: the incident was not open in its cell any more).",
    ["verb", "result"],
    namespace=_NS,
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
DECISIONS_WAITING = Gauge(
    "decisions_waiting",
    "Signals suppressed only because Redis could not be read, waiting to be decided again.",
    namespace=_NS,
)
REDIS_UNANSWERED = Gauge(
    "redis_unanswered",
    "Redis servers this process takes as down because a call timed out or no connection could "
    "be made: their calls fail at once until one answers (cxstream/redis_guard.py).",
    namespace=_NS,
)
DECISIONS_EXPIRED = Counter(
    "decisions_expired",
    "Signals that waited for Redis longer than policy.redecide_window_s and were not decided "
    "again.",
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
FLOW_HEALTH = Enum(
    "flow_health",
    "Whether this process keeps up with its input: lagging (the input lag grew over "
    "flow.lag_alert_s while events arrived) or stalled (events waited and none was processed "
    "over flow.lag_alert_s); see cxstream/health.py.",
    states=["ok", "lagging", "stalled"],
    namespace=_NS,
)
HELD_ALERTS = Gauge(
    "held_alerts",
    "Individual degradation alerts held while the cell demarcation decides whether a cell "
    "incident explains them.",
    namespace=_NS,
)
CELL_EVENTS = Counter(
    "cell_events",
    "Events fed to the cells' demarcation: behind events_total{outcome=processed} by what is "
    "on its way between the two steps (the cells' input lag, in events).",
    namespace=_NS,
)
FEED_GAPS = Counter(
    "feed_gaps",
    "Spans of more than a KPI interval in which a whole shard of cells carried no event (the "
    "feed stopped, not the cells: their traffic volume is not judged over it).",
    namespace=_NS,
)
KAFKA_OUT_RECORDS = Counter(
    "kafka_out_records",
    "Output records handed to the Kafka producer (alerts, decisions, actions, cell summaries, "
    "dead letters).",
    namespace=_NS,
)
KAFKA_OUT_QUEUED = Gauge(
    "kafka_out_queued",
    "Output records handed to the Kafka producer and not yet acknowledged by the broker.",
    namespace=_NS,
)
KAFKA_INPUT_SILENT = Gauge(
    "kafka_input_silent_seconds",
    "Seconds since the broker leading one of this process's input partitions last answered its "
    "consumer (the longest over them): under a second while the brokers answer.",
    namespace=_NS,
)
KAFKA_INPUT_UNREAD = Gauge(
    "kafka_input_partitions_unread",
    "Partitions of an input topic this process does not read, by topic: added on the broker "
    "after the flow started (a restart of every process of the flow reads them).",
    ["topic"],
    namespace=_NS,
)
KAFKA_DELIVERY_ERRORS = Counter(
    "kafka_delivery_errors",
    "Output records the broker did not accept after the producer's own retries, by topic.",
    ["topic"],
    namespace=_NS,
)
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries",
    "Webhook delivery attempts that ended, by outcome.",
    ["outcome"],
    namespace=_NS,
)
WEBHOOK_ENDPOINT_DISABLED = Gauge(
    "webhook_endpoint_disabled",
    "1 when the action webhook endpoint answered 410 Gone and is disabled (actions are "
    "dead-lettered until its ledger key is deleted).",
    namespace=_NS,
)
WEBHOOK_RETRIES_WAITING = Gauge(
    "webhook_retries_waiting",
    "Actions waiting for their next delivery round (webhook.retry_schedule_s).",
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

CHURN_SCORES = Counter(
    "churn_scores",
    "Customers scored for churn risk, by whether the score escalated a degradation to churn_risk.",
    ["escalated"],
    namespace=_NS,
)
CHURN_OUTCOMES = Counter(
    "churn_outcomes",
    "Outcomes seen by the churn model: learned (from the stored feature snapshot), duplicate "
    "(already in the model), no_snapshot (never scored, or the snapshot expired), not_a_label "
    "(complaint, offer accepted).",
    ["result"],
    namespace=_NS,
)
CHURN_ROC_AUC = Gauge(
    "churn_roc_auc",
    "Rolling prequential ROC AUC of the churn model over the last churn.quality_window outcomes.",
    namespace=_NS,
)
CHURN_LOG_LOSS = Gauge(
    "churn_log_loss",
    "Rolling prequential log loss of the churn model over the last churn.quality_window outcomes.",
    namespace=_NS,
)
CHURN_DRIFTS = Counter(
    "churn_drifts",
    "Changes in the churn model's loss flagged by ADWIN (the model's quality moved).",
    namespace=_NS,
)
CHURN_MODEL_EVENTS = Counter(
    "churn_model_events",
    "The churn model's refits and drift responses: refit (new trees installed), drift (the "
    "posteriors widened after a drift), challenger (post-drift trees on trial), "
    "challenger_promoted, challenger_dropped, refit_failed.",
    ["event"],
    namespace=_NS,
)
CHURN_BASE_SCORED = Counter(
    "churn_base_scored",
    "Customers scored by the scheduled pass over every stored profile (churn.score_base_every_s).",
    namespace=_NS,
)
CHURN_REVISION = Gauge(
    "churn_model_revision",
    "Revision of the churn model in use by this process (scorers) or last written (learner).",
    ["role"],
    namespace=_NS,
)

for _outcome in ("processed", "dead_letter"):
    EVENTS.labels(_outcome)
for _escalated in ("true", "false"):
    CHURN_SCORES.labels(_escalated)
for _result in ("learned", "duplicate", "no_snapshot", "not_a_label"):
    CHURN_OUTCOMES.labels(_result)
for _event in (
    "refit",
    "drift",
    "challenger",
    "challenger_promoted",
    "challenger_dropped",
    "refit_failed",
):
    CHURN_MODEL_EVENTS.labels(_event)
for _role in ("scorer", "learner"):
    CHURN_REVISION.labels(_role)
for _reason in get_args(BadReason):
    for _kind in ("qos", "customer", "outcome"):
        DEAD_LETTERS.labels(_kind, _reason)
for _result in ("hit", "miss", "absent", "stale"):
    ENRICHMENT.labels(_result)
for _outcome in ("applied", "rejected"):
    POLICY_RELOADS.labels(_outcome)
for _state in ("open", "updated", "resolved"):
    for _cause in ("degraded_share", "kpi_anomaly", "outage"):
        CELL_INCIDENTS.labels(_state, _cause)
for _handling in ("process", "dead_letter"):
    LATE_EVENTS.labels(_handling)
for _outcome in ("delivered", "retried", "scheduled", "failed", "unknown", "dead_lettered"):
    WEBHOOK_DELIVERIES.labels(_outcome)
for _outcome in ("applied", "dead_letter"):
    CUSTOMER_UPDATES.labels(_outcome)

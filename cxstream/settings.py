"""Settings: one validated, frozen tree built once at start-up.

Precedence, highest first: values passed to :func:`load_settings`, environment variables
(``CXSTREAM_KAFKA__BROKERS='["host:9092"]'``, ``CXSTREAM_WEBHOOK__SECRET=...``), the YAML file given
with ``--config``, then the defaults written in the models below. Every model forbids unknown keys, so
a typo such as ``kafka: {brokerz: ...}`` is an error naming ``kafka.brokerz``.

>>> s = load_settings(overrides={"kafka": {"brokers": ["k1:9092"]}})
>>> s.kafka.brokers, s.kafka.topics.qos
(['k1:9092'], 'cx.qos')
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from cxstream import yamlfile
from cxstream.actions.signing import secret_key
from cxstream.errors import ConfigError, SignatureError
from cxstream.events import known_time_zone
from cxstream.kafkalog import KAFKA_LOGGER
from cxstream.privacy import SubscriberPseudonyms

__all__ = [
    "CellSettingsModel",
    "DashboardSettings",
    "DetectorSettings",
    "FlowSettings",
    "HistorySettings",
    "KafkaSettings",
    "PolicySettings",
    "RedisSettings",
    "Settings",
    "TopicSettings",
    "WebhookSettings",
    "load_settings",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _librdkafka_text(value: Any) -> Any:
    """A librdkafka property as the text it reads: a YAML or JSON ``false`` as ``"false"``,
    ``10`` as ``"10"`` (so that ``linger.ms: 10`` need not be quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1e6 from JSON: librdkafka reads "1000000", not "1000000.0"
    if isinstance(value, int | float):
        return str(value)
    return value


def _host_list(value: Any) -> Any:
    """``"k1:9092,k2:9092"`` (Kafka's own way of writing its bootstrap servers) as a list."""
    if isinstance(value, str):
        return [host.strip() for host in value.split(",") if host.strip()]
    return value


KafkaProperties = dict[str, Annotated[str, BeforeValidator(_librdkafka_text)]]
"""librdkafka properties: names to their text (booleans and numbers accepted as written)."""


class TopicSettings(BaseModel):
    """Kafka topic names."""

    model_config = _STRICT

    qos: str = "cx.qos"
    customers: str = "cx.customers"
    outcomes: str = "cx.outcomes"
    alerts: str = "cx.alerts"
    actions: str = "cx.actions"
    dead_letters: str = "cx.dead-letters"
    actions_dead_letters: str = "cx.actions.dead-letters"
    decisions: str = "cx.decisions"
    cells: str = "cx.cells"
    deliveries: str = "cx.deliveries"
    service_problems: str = "cx.service-problems"
    alarm_updates: str = "cx.alarm-updates"
    partitions: Annotated[int, Field(ge=1, le=1024)] = 2

    def all(self) -> list[str]:
        """Every topic the system reads or writes."""
        return [
            self.qos,
            self.customers,
            self.outcomes,
            self.alerts,
            self.actions,
            self.dead_letters,
            self.actions_dead_letters,
            self.decisions,
            self.cells,
            self.deliveries,
            self.service_problems,
            self.alarm_updates,
        ]


class KafkaSettings(BaseModel):
    """Where the broker is and how to talk to it. ``brokers: null`` means "embedded" in the demo."""

    model_config = _STRICT

    brokers: Annotated[list[str] | None, BeforeValidator(_host_list)] = None
    topics: TopicSettings = TopicSettings()
    consumer_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    # output partitions of the flow's Kafka producer (spread over the workers; each waits for
    # the broker once per epoch, not per batch)
    sink_partitions: Annotated[int, Field(ge=1, le=1_024)] = 2
    # librdkafka settings measured to matter here (docs/configuration.md explains each).
    consumer_config: KafkaProperties = Field(
        default_factory=lambda: {
            "queued.min.messages": "1000000",
            # not 0: with 0 a partition whose local queue is full re-checks it without pause,
            # and a backlog larger than the queue spins the fetch threads (measured: 3x slower);
            # not 1: a full queue (seconds of work) was re-checked 850 times a second
            "fetch.queue.backoff.ms": "20",
            "fetch.wait.max.ms": "10",
            # 4 MB prefetched per partition, not librdkafka's 64 MB: a backlog read ahead into a
            # large queue keeps faulting in fresh memory (3,000,000 events: one worker
            # 206,000-221,000 events/s against 202,000, two processes 362,000-370,000 against
            # 319,000-322,000, peak RSS 348 against 934 MB)
            "queued.max.messages.kbytes": "4096",
        }
    )
    # Merged over consumer_config for the low-volume inputs (customers, outcomes): an idle
    # consumer asks the broker again every fetch.wait.max.ms, and each request wakes the broker
    # and the fetch thread, which take the core from the hot path for a moment.
    side_consumer_config: KafkaProperties = Field(
        default_factory=lambda: {"fetch.wait.max.ms": "250"}
    )
    # lz4: the broker stores and serves the batches as they come, compressed; the embedded one
    # spent 0.08 instead of 0.58 us of its CPU per event serving a 1,000,000-event backlog
    producer_config: KafkaProperties = Field(
        default_factory=lambda: {
            "linger.ms": "5",
            "enable.idempotence": "false",
            "compression.type": "lz4",
        }
    )
    # Passed to every client: security.protocol, sasl.*, ssl.* ... (values may come from env).
    extra_config: KafkaProperties = Field(default_factory=dict)
    sasl_password: SecretStr | None = None

    @field_validator("brokers")
    @classmethod
    def _at_least_one(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            msg = "must list at least one host:port, or be null for the embedded broker"
            raise ValueError(msg)
        return value

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings shared by consumers, producers and the admin client; their
        log lines go to the rate-limited ``cxstream.kafka`` logger (:mod:`cxstream.kafkalog`)."""
        if self.brokers is None:
            msg = "kafka.brokers is not set (null means an embedded broker, started by `demo`)"
            raise ConfigError(msg)
        conf: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.brokers),
            "logger": KAFKA_LOGGER,
            **self.extra_config,
        }
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf

    def producer_settings(self) -> dict[str, Any]:
        """Everything a producer is configured with: the shared settings and ``producer_config``."""
        return {**self.client_config(), **self.producer_config}


class RedisSettings(BaseModel):
    """Customer context, cooldowns and idempotency keys live in Redis."""

    model_config = _STRICT

    url: SecretStr | None = None  # may embed a password: redis://:pw@host:6379/0 or rediss://...
    key_prefix: str = "cx"
    customer_ttl_s: Annotated[int, Field(ge=0)] = 90 * 86_400  # 0 = no expiry
    cache_ttl_s: Annotated[float, Field(ge=0, le=3_600)] = 30.0
    cache_max_entries: Annotated[int, Field(ge=0, le=50_000_000)] = 200_000
    socket_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # The customer context (profiles, experience history, processing audit) on a Redis of its
    # own, e.g. a Redis Cluster that grows with the customer base (null = url). The rest
    # (claims, cooldowns, budgets, deferred actions, churn model) needs multi-key atomic
    # scripts and stays on url: one Redis, or a primary with replicas.
    context_url: SecretStr | None = None
    context_cluster: bool = False  # context_url (else url) is a Redis Cluster


MIN_WEBHOOK_KEY_BYTES = 24
"""The shortest webhook signing key accepted (Standard Webhooks secrets are 24 to 64 bytes)."""


class WebhookSettings(BaseModel):
    """Where signed actions are POSTed for marketing/CRM systems. ``url: null`` disables it."""

    model_config = _STRICT

    url: str | None = None
    # Standard Webhooks secret ("whsec_" + base64); from env CXSTREAM_WEBHOOK__SECRET in production.
    secret: SecretStr | None = None
    # During a secret rotation, the secret being retired: every message is signed with both, so a
    # receiver still on it keeps verifying (CXSTREAM_WEBHOOK__PREVIOUS_SECRET); null otherwise.
    previous_secret: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.2
    # After a round of max_attempts fails for a reason that may pass (timeout, connection error,
    # 5xx, 429, circuit open), the next round is due after the next of these delays (seconds;
    # Retry-After when longer); after the last, the action is dead-lettered. [] = one round.
    retry_schedule_s: Annotated[
        list[Annotated[float, Field(ge=0, le=7 * 86_400)]], Field(max_length=30)
    ] = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    breaker_failures: Annotated[int, Field(ge=1, le=1_000)] = 5
    breaker_reset_s: Annotated[float, Field(gt=0, le=3_600)] = 30.0
    partitions: Annotated[int, Field(ge=1, le=1_024)] = 2  # recoverable delivery partitions
    # A POST in flight when the process died: true = send it again with the same webhook-id
    # (receivers dedupe on it; at least once); false = dead-letter it as "outcome unknown" (no
    # receiver ever sees an action twice; at most once).
    resend_unknown: bool = True
    # How long a delivery waits for the delivery ledger (Redis) before it is dead-lettered.
    ledger_wait_s: Annotated[float, Field(ge=0, le=86_400)] = 600.0
    # Plain http:// for the URL (a receiver on the same host, a test); otherwise https:// only.
    allow_http: bool = False

    @field_validator("secret", "previous_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:  # whsec_ optional, padding optional: as the Standard Webhooks libraries read it
            key = secret_key(value.get_secret_value())
        except SignatureError:
            msg = (
                "must be the base64 of the key, usually written whsec_<base64> (Standard Webhooks)"
            )
            raise ValueError(msg) from None
        if len(key) < MIN_WEBHOOK_KEY_BYTES:
            msg = f"the key is {len(key)} bytes; at least {MIN_WEBHOOK_KEY_BYTES} are needed"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _secure_url(self) -> WebhookSettings:
        url = self.url
        if url is None:
            return self
        if not url.startswith(("https://", "http://")):
            msg = "url must start with https:// (or http:// with allow_http: true)"
            raise ValueError(msg)
        if url.startswith("http://") and not self.allow_http:
            msg = (
                "url is plain http://: signed actions carry customer data; use https://, or set "
                "webhook.allow_http: true for a receiver on the same host"
            )
            raise ValueError(msg)
        return self


class DetectorSettings(BaseModel):
    """Per-subscriber degradation detector."""

    model_config = _STRICT

    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.9
    grace_events: Annotated[int, Field(ge=1, le=10_000)] = 8
    fast_alpha: Annotated[float, Field(gt=0, le=1)] = 0.3
    slow_alpha: Annotated[float, Field(gt=0, le=1)] = 0.05
    poor_experience: Annotated[float, Field(ge=0, le=100)] = 45.0
    # seconds a subscriber's experience must have been back before their episode (and its
    # alarm) ends; a dip again within them is the same episode
    clear_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    # the voice codec whose E-model constants (ITU-T G.113 Appendix I and IV) score calls
    voice_codec: Literal["g711_plc", "g711", "amr_wb", "amr_wb_23_85", "evs_amr_wb_io"] = "g711_plc"


class KpiSettingsModel(BaseModel):
    """Cell KPI series (see :mod:`cxstream.detectors.cell_kpis`)."""

    model_config = _STRICT

    interval_s: Annotated[float, Field(gt=0, le=3_600)] = 10.0
    context_resolution_s: Annotated[float, Field(ge=60, le=86_400)] = 900.0
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    baseline: Annotated[int, Field(ge=5, le=10_000)] = 30
    persist_z: Annotated[float, Field(ge=0, le=100)] = 3.0
    confirm: Annotated[int, Field(ge=0, le=100)] = 2
    drift_window: Annotated[int, Field(ge=2, le=1_000_000)] = 180
    drift_k: Annotated[float, Field(ge=0, le=100)] = 1.0
    drift_h: Annotated[float, Field(gt=0, le=10_000)] = 10.0
    max_anomaly_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3_600.0
    max_gap_intervals: Annotated[int, Field(ge=1, le=100_000)] = 360
    # the subscribers' wall clock, whose time of day and week the KPI contexts follow (IANA name)
    timezone: Annotated[str, Field(max_length=64)] = "UTC"

    _known_zone = field_validator("timezone")(known_time_zone)


class CellSettingsModel(BaseModel):
    """Demarcation of cell incidents (see :mod:`cxstream.detectors.cells`)."""

    model_config = _STRICT

    window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    step_s: Annotated[float, Field(gt=0, le=3_600)] = 1.0
    min_affected: Annotated[int, Field(ge=1, le=100_000)] = 3
    open_share: Annotated[float, Field(gt=0, le=1)] = 0.3
    resolve_share: Annotated[float, Field(ge=0, lt=1)] = 0.1
    hold_s: Annotated[float, Field(ge=0, le=3_600)] = 10.0
    update_s: Annotated[float, Field(ge=0, le=3_600)] = 10.0
    stats_s: Annotated[float, Field(gt=0, le=3_600)] = 5.0
    max_ahead_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    kpis: KpiSettingsModel = Field(default_factory=KpiSettingsModel)


class PolicySettings(BaseModel):
    """Where the contact policy comes from, and how long delivered action ids are remembered."""

    model_config = _STRICT

    file: str | None = None  # config/policy.yaml; null = the built-in default policy
    reload_check_s: Annotated[float, Field(gt=0, le=3_600)] = 2.0
    idempotency_ttl_s: Annotated[int, Field(ge=1)] = 7 * 86_400
    deferred_poll_s: Annotated[float, Field(gt=0, le=3_600)] = 0.5
    # A signal suppressed only because Redis could not be read is decided again when it can,
    # if within this long of its first decision (0: never decided again).
    redecide_window_s: Annotated[float, Field(ge=0, le=86_400)] = 900.0


class ChurnSettings(BaseModel):
    """Online churn risk: features, when a degradation escalates to a churn-risk signal, delayed
    labels and model checkpoints (see cxstream.detectors.churn)."""

    model_config = _STRICT

    enabled: bool = True
    # Columns the model reads from the customer's context and recent experience; a name not in
    # the context (and not one of the experience features) is simply always missing.
    numeric: list[str] = Field(
        default_factory=lambda: [
            "tenure_months",
            "monthly_charge",
            "household_size",
            "open_tickets",
            "experience_index",
            "degradations_7d",
        ]
    )
    categorical: list[str] = Field(
        default_factory=lambda: ["contract", "plan", "payment_method", "value_tier", "signal"]
    )
    prior_variance: Annotated[float, Field(gt=0, le=100)] = 1.0
    max_categories: Annotated[int, Field(ge=2, le=10_000)] = 64
    # Gradient-boosted trees beside the logistic model (blended by an online stacker), refit in
    # the background from the last tree_window labelled rows (memory: tree_window x columns).
    trees: bool = True
    tree_window: Annotated[int, Field(ge=100, le=1_000_000)] = 5_000
    # Every customer with a profile is scored this often (a pass over Redis in chunks, starting
    # at start-up); 0 scores only the customers a signal concerns.
    score_base_every_s: Annotated[float, Field(ge=0)] = 3_600.0
    score_base_chunk: Annotated[int, Field(ge=1, le=100_000)] = 500
    # A degradation of a customer whose churn risk reaches this becomes a churn_risk signal
    # (the policy's retention rule decides what to do with it); 1.0 never escalates.
    escalate_risk: Annotated[float, Field(ge=0, le=1)] = 0.6
    explain_top: Annotated[int, Field(ge=0, le=50)] = 5
    snapshot_ttl_s: Annotated[int, Field(ge=60)] = 90 * 86_400  # how late an outcome may come
    refresh_s: Annotated[float, Field(gt=0, le=3_600)] = 5.0  # scorers reload a newer model
    quality_window: Annotated[int, Field(ge=10, le=1_000_000)] = 1_000  # rolling AUC/log loss
    # HMAC key authenticating the model checkpoints kept in Redis (env CXSTREAM_CHURN__CHECKPOINT_KEY):
    # a checkpoint it does not authenticate is refused. Without one, checkpoints are data-only
    # but unauthenticated, and the flow says so at start.
    checkpoint_key: SecretStr | None = None

    @model_validator(mode="after")
    def _distinct(self) -> ChurnSettings:
        both = set(self.numeric) & set(self.categorical)
        if both:
            msg = f"columns listed as both numeric and categorical: {sorted(both)}"
            raise ValueError(msg)
        return self


class DashboardSettings(BaseModel):
    """The NOC dashboard served by ``cxstream run`` (and so by the demo)."""

    model_config = _STRICT

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8080
    # Access control: on by default. With no token configured, `run` generates one and prints the
    # URL that carries it; the demo turns auth off (it is a local, throw-away system).
    auth: bool = True
    token: SecretStr | None = None  # from env CXSTREAM_DASHBOARD__TOKEN
    update_s: Annotated[float, Field(gt=0, le=60)] = 1.0  # live update interval (SSE)
    # People with roles (viewer, care, operator): a users file of salted password hashes
    # (`cxstream dashboard-user`), and/or a trusted reverse proxy's identity headers
    users_file: str | None = None
    proxy_user_header: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    proxy_role_header: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    session_secret: SecretStr | None = None  # signs session cookies; null = random per start
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    # what the dashboard knows is saved in Redis this often (with the topics' offsets), so a
    # restart resumes without re-reading the topics; 0 = never (a restart re-reads them)
    save_s: Annotated[float, Field(ge=0, le=3_600)] = 5.0


class HistorySettings(BaseModel):
    """Per-subscriber experience history in Redis (for the customer page), in two resolutions:
    one sample per ``recent_interval_s`` for the last ``recent_keep`` samples (6 hours at one a
    minute), and one per ``interval_s`` slot for ``keep`` (two days at 5 minutes). About 24 bytes
    a sample: about 23 kB per active subscriber with the defaults."""

    model_config = _STRICT

    enabled: bool = True
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    keep: Annotated[int, Field(ge=1, le=100_000)] = 576
    recent_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    recent_keep: Annotated[int, Field(ge=1, le=100_000)] = 360


class PrivacySettings(BaseModel):
    """Subscriber ids in logs are replaced by keyed-hash pseudonyms."""

    model_config = _STRICT

    log_key: SecretStr | None = (
        None  # from env CXSTREAM_PRIVACY__LOG_KEY; None = random per process
    )
    # Replace subscriber ids by keyed-hash pseudonyms at every input (QoS events, customer
    # updates and tombstones, outcomes, load-customers), so that no output carries MSISDNs.
    pseudonymise_subscribers: bool = False
    subscriber_key: SecretStr | None = None  # from env CXSTREAM_PRIVACY__SUBSCRIBER_KEY

    @model_validator(mode="after")
    def _key_when_pseudonymising(self) -> PrivacySettings:
        if self.pseudonymise_subscribers:
            key = self.subscriber_key
            if key is None or len(key.get_secret_value()) < 16:
                msg = (
                    "privacy.subscriber_key (CXSTREAM_PRIVACY__SUBSCRIBER_KEY) of at least 16 "
                    "characters is required with privacy.pseudonymise_subscribers: true"
                )
                raise ConfigError(msg)
        return self

    def pseudonyms(self) -> SubscriberPseudonyms | None:
        """The pseudonymiser the inputs apply (None: ids are kept as they are)."""
        if not self.pseudonymise_subscribers or self.subscriber_key is None:
            return None
        return SubscriberPseudonyms(self.subscriber_key.get_secret_value().encode())


class FlowSettings(BaseModel):
    """Dataflow behaviour."""

    model_config = _STRICT

    # stale: older than this behind the newest event time of the same input partition
    max_event_age_s: Annotated[float, Field(gt=0)] = 7 * 86_400
    # future: ahead of the wall clock by more than this
    max_event_ahead_s: Annotated[float, Field(gt=0)] = 300
    # late: behind the partition's newest event time by more than this; processed with a late
    # flag (never moving any clock back), or dead-lettered
    allowed_lateness_s: Annotated[float, Field(ge=0)] = 300
    late_events: Literal["process", "dead_letter"] = "process"
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 3030
    # The address /metrics listens on: this host only by default; 0.0.0.0 where a Prometheus in
    # another container or pod scrapes it (docker-compose.yml, deploy/k8s set it).
    metrics_host: str = "127.0.0.1"
    # Process i of a cluster serves metrics on metrics_port + i, so that processes sharing a
    # host do not collide; false where every process has its own address (Kubernetes pods).
    metrics_port_per_process: bool = True
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    # falling behind: the input lag grew for this long while events arrived (lagging), or
    # events waited and none was processed for this long, or the worker did not wake up for
    # this long (stalled); a lag under lag_alert_events is never reported. Logged, on the
    # dashboard, cxstream_flow_health.
    lag_alert_s: Annotated[float, Field(ge=5, le=86_400)] = 60.0
    lag_alert_events: Annotated[int, Field(ge=0)] = 1000
    # state keys: subscribers and cells are grouped into this many shards (per whole cluster);
    # one call updates a batch of a shard. Keep it a few times the number of workers and a
    # multiple of it (up to 64 shards are named to spread evenly: cxstream/flows/routing.py).
    shards: Annotated[int, Field(ge=1, le=65_536)] = 16
    # "partition": the subscribers' detectors run in the Kafka source, one state per partition
    # (producers must key QoS events by subscriber id), so in a cluster no event or subscriber
    # state crosses between processes; "subscriber": detectors are a keyed step over shards of
    # subscriber ids (any input keying, at the cost of shipping events between processes)
    state_by: Literal["partition", "subscriber"] = "partition"
    # after a poll that was not full, every input waits this long before the next (batches build
    # up at low rates instead of costing a core in tiny polls). Keep it short: it adds to latency,
    # and at each epoch boundary no input goes on until every input has passed it, so the
    # longest pause of any input is a stall of the whole flow once per epoch.
    poll_linger_s: Annotated[float, Field(ge=0, le=1)] = 0.02
    # young-generation threshold of Python's cyclic GC in the dataflow process (0 = Python's
    # default 700); see cxstream/flows/run.py
    gc_threshold: Annotated[int, Field(ge=0, le=10_000_000)] = 50_000
    # in a cluster: how long a worker may keep the GIL before another thread of its process gets
    # it (Python's sys.setswitchinterval, 0.005 by default); see cxstream/flows/run.py
    gil_switch_interval_s: Annotated[float, Field(gt=0, le=1)] = 0.05
    # Bytewax recovery: snapshots of all state (Kafka offsets, detectors, cells, pending webhook
    # deliveries) every epoch; a restarted dataflow resumes from the last one. None = off.
    recovery_dir: str | None = None
    recovery_partitions: Annotated[int, Field(ge=1, le=1_024)] = 1
    snapshot_interval_s: Annotated[float, Field(gt=0, le=3_600)] = 2.0
    # resume the snapshot's state but read every input, and the dashboard every topic it shows,
    # from its start: the topics are new ones of the same names (set by the demo when it
    # replaces its embedded broker; with Kafka, an offset beyond a partition's end is reset by
    # auto.offset.reset instead)
    inputs_from_start: bool = False
    # Reconciliation: the id of every processed event is added to this Redis set (off by default;
    # about 60 bytes an event) so that "every event accounted for" can be checked after a crash.
    audit_key: str | None = None
    audit_ttl_s: Annotated[int, Field(ge=1)] = 86_400


ENV_PREFIX = "CXSTREAM_"  # CXSTREAM_<SECTION>__<KEY> overrides the file


class Settings(BaseSettings):
    """Everything cxstream needs to run; see ``config/cxstream.yaml`` for a documented example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    webhook: WebhookSettings = WebhookSettings()
    detector: DetectorSettings = DetectorSettings()
    cells: CellSettingsModel = CellSettingsModel()
    policy: PolicySettings = PolicySettings()
    flow: FlowSettings = FlowSettings()
    history: HistorySettings = HistorySettings()
    privacy: PrivacySettings = PrivacySettings()
    dashboard: DashboardSettings = DashboardSettings()
    churn: ChurnSettings = ChurnSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit overrides, then the environment, then the YAML file being loaded
        # (see load_settings), then the defaults declared here.
        path = _CONFIG_FILE.get()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path)


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("cxstream_config_file", default=None)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    try:
        data = yamlfile.load(text, path)
    except yaml.YAMLError as exc:
        msg = f"config file {path} is not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"config file {path} must be a mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def format_validation_error(
    exc: ValidationError, source: str, *, env_prefix: str | None = None
) -> str:
    """One line per problem, each naming the dotted key, e.g. ``kafka.brokerz: extra ...``; with
    ``env_prefix``, a value that came from an environment variable is named by that variable."""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        variable = _env_variable(env_prefix, loc) if env_prefix is not None else None
        if variable is not None:
            lines.append(f"  {variable} (environment variable): {err['msg']}")
        else:
            lines.append(f"  {'.'.join(loc) or '<top>'}: {err['msg']}")
    return "\n".join(lines)


def _env_variable(prefix: str, loc: list[str]) -> str | None:
    """The environment variable that set the value at ``loc`` (or one of its parents), if any."""
    present = {name.upper(): name for name in os.environ}
    for n in range(len(loc), 0, -1):
        name = (prefix + "__".join(loc[:n])).upper()
        if name in present:
            return present[name]
    return None


def load_settings(
    path: str | Path | None = None, *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load and validate settings from ``path`` (YAML), the environment and ``overrides``.

    Raises :class:`~cxstream.errors.ConfigError` naming every bad key.
    """
    if path is not None:
        _read_yaml(Path(path))  # a clear error for an unreadable file or one that is not a mapping
    token = _CONFIG_FILE.set(Path(path) if path is not None else None)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        source = str(path or "settings")
        raise ConfigError(format_validation_error(exc, source, env_prefix=ENV_PREFIX)) from exc
    finally:
        _CONFIG_FILE.reset(token)


def config_path_from_env() -> str | None:
    """The config file named by ``CXSTREAM_CONFIG``, if any (for ``python -m bytewax.run``)."""
    return os.environ.get("CXSTREAM_CONFIG") or None

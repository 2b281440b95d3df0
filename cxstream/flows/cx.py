"""The CEM dataflow: QoS events in, alerts and actions out, nothing dropped.

::

    qos_in ─ parse_event ─ split_valid ─┬─ enrich ─ key_subscriber ─ detect_degradation ─ ...
                                        └─ (bad) ─────────────────────────────────────────┐
    ... ─ key_cell ─ demarcate_cells ─ split_incidents ─┬─ incident_msg (alarm, problem) ┐  │
                                                        └─ keep_alerts ─ ...           │  │
    ... ─ keep_alerts ─┬─ decide_actions ─ keep_sent ─ action_msg ────────────────────┤  │
                       └─ alert_msg ──────────────────────────────────────────────────┴──┴─ kafka_out
    customers_in ─ parse_customer ─ split_customers ─┬─ customers_to_redis   (bad → kafka_out)
    actions_in ─ parse_action ─ split_actions ─ webhook_out   (the actions topic read back;
                                                               bad records → kafka_out)

Production runs ``cxstream run --config FILE`` (or ``python -m bytewax.run
"cxstream.flows.cx:get_flow()"`` with ``CXSTREAM_CONFIG``); tests call :func:`build_flow` with
Bytewax's testing sources and sinks.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard, cast

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, Sink
from typing_extensions import override

from cxstream import metrics
from cxstream.actions.policy import Decision
from cxstream.actions.tmf import (
    alarm_from_alert,
    alarm_from_incident,
    cleared_alarm,
    service_problem_from_incident,
)
from cxstream.batches import AlarmClear, CellBatch, RawBatch, ShardBatch
from cxstream.detectors.cells import CellMonitor, CellStats
from cxstream.detectors.churn import ChurnLearner
from cxstream.detectors.table import SubscriberTable
from cxstream.events import (
    Action,
    AlarmCommand,
    BadEvent,
    CellIncident,
    CustomerErasure,
    CustomerUpdate,
    Outcome,
    RecordKind,
)
from cxstream.flows.connect import FlowIO, KafkaOut, kafka_io, pipeline_from_settings
from cxstream.pipeline import Candidate, CellOutput, Pipeline
from cxstream.settings import Settings, config_path_from_env, load_settings
from cxstream.steps.common import isolating

log = logging.getLogger(__name__)

__all__ = ["build_flow", "get_flow"]


def _is_cell_batch(item: object) -> TypeGuard[tuple[str, CellBatch]]:
    return isinstance(item, tuple)


def _is_shard_batch(item: BadEvent | tuple[str, ShardBatch]) -> TypeGuard[tuple[str, ShardBatch]]:
    return isinstance(item, tuple)


def _dead(item: object) -> BadEvent:
    """Narrow the false branch of a split (only dead letters go there)."""
    if not isinstance(item, BadEvent):
        msg = f"expected a BadEvent on the dead-letter branch; got {type(item).__name__}"
        raise TypeError(msg)
    return item


def _is_incident(item: CellOutput) -> TypeGuard[CellIncident]:
    return isinstance(item, CellIncident)


def _as_candidate(item: CellOutput) -> Candidate | None:
    return item if isinstance(item, Candidate) else None


class _DetectLogic(StatefulBatchLogic[ShardBatch, tuple[str, CellBatch], SubscriberTable]):
    """One shard of subscribers: their detector states as arrays, updated a batch at a time."""

    def __init__(self, pipeline: Pipeline, resume: SubscriberTable | None) -> None:
        self._pipeline = pipeline
        self._table = resume if resume is not None else pipeline.new_table()

    @override
    def on_batch(self, values: list[ShardBatch]) -> tuple[list[tuple[str, CellBatch]], bool]:
        return self._pipeline.detect_shard(self._table, values), StatefulBatchLogic.RETAIN

    @override
    def snapshot(self) -> SubscriberTable:
        return self._table


class _CellLogic(
    StatefulBatchLogic[CellBatch | AlarmCommand, CellOutput, dict[str, CellMonitor[Candidate]]]
):
    """One shard of cells: their demarcation states, and the operators' commands on them.

    Held alerts are released by each cell's own event-time clock while traffic flows; if a cell
    goes quiet, a wall-clock timer releases them after the cell's current wait
    (:attr:`~cxstream.detectors.cells.CellMonitor.hold_wait_s`: ``cells.hold_s``, or longer while
    an incident may be about to open), and at end of input everything held is released.
    """

    def __init__(
        self, pipeline: Pipeline, resume: dict[str, CellMonitor[Candidate]] | None
    ) -> None:
        self._pipeline = pipeline
        self._cells: dict[str, CellMonitor[Candidate]] = resume if resume is not None else {}
        self._due: dict[str, datetime] = {}
        for cell_id, monitor in self._cells.items():
            if monitor.holding:  # alerts held when the snapshot was taken
                metrics.HELD_ALERTS.inc(monitor.held_count)
                self._due[cell_id] = datetime.now(UTC) + timedelta(seconds=monitor.hold_wait_s)

    @override
    def on_batch(self, values: list[CellBatch | AlarmCommand]) -> tuple[list[CellOutput], bool]:
        batches = [v for v in values if isinstance(v, CellBatch)]
        commands = [v for v in values if isinstance(v, AlarmCommand)]
        out = self._pipeline.demarcate_shard(self._cells, batches) if batches else []
        if commands:  # after the shard's events: a command acts on the state they left
            out.extend(self._pipeline.apply_commands(self._cells, commands))
        now = datetime.now(UTC)
        for cell_id in {c for v in batches for c in v.cells}:
            monitor = self._cells[cell_id]
            if monitor.holding:  # released at once if the cell goes quiet for its wait
                self._due[cell_id] = now + timedelta(seconds=monitor.hold_wait_s)
            else:
                self._due.pop(cell_id, None)
        return out, StatefulBatchLogic.RETAIN

    @override
    def on_notify(self) -> tuple[list[CellOutput], bool]:
        now = datetime.now(UTC)
        out: list[CellOutput] = []
        for cell_id in [c for c, due in self._due.items() if due <= now]:
            del self._due[cell_id]
            out.extend(self._pipeline.release_held(self._cells[cell_id]))
        return out, StatefulBatchLogic.RETAIN

    @override
    def on_eof(self) -> tuple[list[CellOutput], bool]:
        out: list[CellOutput] = []
        for monitor in self._cells.values():
            out.extend(self._pipeline.release_held(monitor))
        self._due.clear()
        return out, StatefulBatchLogic.RETAIN

    @override
    def notify_at(self) -> datetime | None:
        return min(self._due.values()) if self._due else None

    @override
    def snapshot(self) -> dict[str, CellMonitor[Candidate]]:
        return self._cells


class _LearnLogic(StatefulBatchLogic[Outcome, dict[str, Any], ChurnLearner]):
    """The churn model's single writer: the outcomes of a poll are learned as one batch (one
    read of their snapshots, one checkpoint)."""

    def __init__(self, pipeline: Pipeline, resume: ChurnLearner | None) -> None:
        self._pipeline = pipeline
        self._learner = resume if resume is not None else pipeline.new_churn_learner()

    @override
    def on_batch(self, values: list[Outcome]) -> tuple[list[dict[str, Any]], bool]:
        self._learner, records = self._pipeline.learn_outcomes(self._learner, values)
        return records, StatefulBatchLogic.RETAIN

    @override
    def snapshot(self) -> ChurnLearner:
        return copy.deepcopy(self._learner)  # the learner goes on learning; the snapshot stays


def _is_outcome(item: Outcome | BadEvent) -> TypeGuard[Outcome]:
    return isinstance(item, Outcome)


def _out_key(msg: KafkaOut) -> str:
    return msg.key.decode(errors="replace") if msg.key else ""


def _messages(item: Any) -> list[Any]:
    """A poll's messages one by one (other items, such as consumer errors, pass as they are)."""
    return item.messages() if isinstance(item, RawBatch) else [item]


def _is_customer(
    item: CustomerUpdate | CustomerErasure | BadEvent,
) -> TypeGuard[CustomerUpdate | CustomerErasure]:
    return isinstance(item, CustomerUpdate | CustomerErasure)


def _is_action(item: Action | BadEvent) -> TypeGuard[Action]:
    return isinstance(item, Action)


def _is_command(item: AlarmCommand | BadEvent) -> TypeGuard[AlarmCommand]:
    return isinstance(item, AlarmCommand)


def _side_input(
    flow: Dataflow,
    input_id: str,
    source: Source[Any],
    kind: RecordKind,
    parse: Callable[[list[Any]], list[Any]],
    valid: Callable[[Any], bool],
) -> tuple[Stream[Any], Stream[Any]]:
    """A side topic's records, parsed one poll at a time: ``(valid ones, dead letters)``. The
    steps are named after the record kind (``<kind>_messages``, ``parse_<kind>``,
    ``split_<kind>s``), as recovery snapshots know them."""
    raw = op.flat_map(f"{kind}_messages", op.input(input_id, flow, source), _messages)
    parsed = op.flat_map_batch(f"parse_{kind}", raw, isolating(f"parse_{kind}", kind, parse))
    split = op.branch(f"split_{kind}s", parsed, valid)
    return split.trues, split.falses


def build_flow(settings: Settings, pipeline: Pipeline, io: FlowIO) -> Dataflow:
    """Wire the pipeline's steps into a Bytewax dataflow; does no I/O itself."""
    topics = settings.kafka.topics
    flow = Dataflow("cxstream")

    raw = op.input("qos_in", flow, io.qos_source)
    processor = getattr(io.qos_source, "processor", None)
    if processor is not None:
        # parse, validate, enrich and the subscribers' detectors ran in the source partitions
        # (BatchKafkaSource + Pipeline.process_poll): out come dead letters and cell batches
        processed: Stream[Any] = raw
    else:
        # the same steps as a keyed step over shards of subscribers (any source)
        ingested = op.flat_map_batch("ingest", raw, isolating("ingest", "qos", pipeline.ingest))
        split = op.branch("split_shards", ingested, _is_shard_batch)
        detected = op.stateful_batch(
            "detect_degradation", split.trues, lambda resume: _DetectLogic(pipeline, resume)
        )
        processed = op.merge(
            "merge_detected", op.map("cell_shard", detected, lambda kv: kv[1]), split.falses
        )
    valid = op.branch("split_valid", processed, _is_cell_batch)
    # state of cells is keyed by shards of cells (flow.shards): one call per shard and batch
    by_cell: Stream[tuple[str, CellBatch | AlarmCommand]] = op.flat_map_batch(
        "record_history", valid.trues, pipeline.record_cell_batches
    )
    bad_commands: Stream[Any] | None = None
    if io.control_source is not None:
        # operators' acknowledgements and clears (the dashboard's TMF642 events): to the shard
        # that holds the incident's cell, where a clear closes it
        commands, bad_commands = _side_input(
            flow, "control_in", io.control_source, "command", pipeline.parse_command_batch,
            _is_command,
        )  # fmt: skip
        routed = op.flat_map_batch("route_commands", commands, pipeline.route_commands)
        by_cell = op.merge("merge_commands", by_cell, routed)
    cell_out = op.stateful_batch(
        "demarcate_cells", by_cell, lambda resume: _CellLogic(pipeline, resume)
    )
    outputs = op.map("cell_output", cell_out, lambda kv: kv[1])
    split_out = op.branch("split_incidents", outputs, _is_incident)
    candidates = op.filter_map("keep_alerts", split_out.falses, _as_candidate)
    decisions = op.flat_map_batch("decide_actions", outputs, pipeline.decide_batch)
    sent = op.filter_map("keep_sent", decisions, lambda d: d.action if d.result == "sent" else None)
    actions: Stream[Action] = sent
    if io.deferred_source is not None:
        due = op.input("deferred_in", flow, io.deferred_source)
        rechecked = op.flat_map("release_deferred", due, lambda batch: batch)
        released = op.filter_map(
            "keep_released",
            rechecked,
            lambda d: d.action if d.result in ("released", "sent") else None,
        )
        actions = op.merge("merge_actions", sent, released)
        decisions = op.merge("merge_decisions", decisions, rechecked)

    def alert_msg(c: Candidate) -> KafkaOut:
        alert = c.alert
        return KafkaSinkMessage(
            (alert.subscriber_id or alert.cell_id).encode(),
            orjson.dumps(alarm_from_alert(alert)),
            topic=topics.alerts,
        )

    open_share = settings.cells.open_share

    def incident_msgs(incident: CellIncident) -> list[KafkaOut]:
        key = incident.cell_id.encode()
        alarm = alarm_from_incident(incident, open_share)
        problem = service_problem_from_incident(incident)
        return [
            KafkaSinkMessage(key, orjson.dumps(alarm), topic=topics.alerts),
            KafkaSinkMessage(key, orjson.dumps(problem), topic=topics.service_problems),
        ]

    def clear_msg(clear: AlarmClear) -> KafkaOut:
        alarm = cleared_alarm(clear)
        return KafkaSinkMessage(
            clear.subscriber_id.encode(), orjson.dumps(alarm), topic=topics.alerts
        )

    def decision_msg(d: Decision) -> KafkaOut:
        record = {
            "subscriber_id": d.signal.subscriber_id,
            "signal": d.signal.signal,
            "source_id": d.signal.source_id,
            "kind": d.kind,
            "result": d.result,
            "rule": d.rule,
            "action_id": d.action.action_id if d.action is not None else None,
            "send_at": d.action.send_at.isoformat() if d.action and d.action.send_at else None,
            "decided_at": pipeline.clock().isoformat(),
        }
        if "resolved_by" in d.signal.details:  # a notice cancelled by an operator's resolve
            record["resolved_by"] = d.signal.details["resolved_by"]
        return KafkaSinkMessage(
            d.signal.subscriber_id.encode(), orjson.dumps(record), topic=topics.decisions
        )

    def action_msg(a: Action) -> KafkaOut:
        return KafkaSinkMessage(
            a.subscriber_id.encode(), a.model_dump_json().encode(), topic=topics.actions
        )

    def dead_letter_msg(item: object) -> KafkaOut:
        # dead letters were counted where they were made (the parse steps)
        return KafkaSinkMessage(
            None, _dead(item).model_dump_json().encode(), topic=topics.dead_letters
        )

    stats = op.filter_map(
        "keep_cell_stats", outputs, lambda o: o if isinstance(o, CellStats) else None
    )

    def stats_msg(c: CellStats) -> KafkaOut:
        return KafkaSinkMessage(c.cell_id.encode(), orjson.dumps(c), topic=topics.cells)

    outs = [
        op.map("cell_stats_msg", stats, stats_msg),
        op.map("alert_msg", candidates, alert_msg),
        op.map(
            "clear_msg",
            op.filter_map(
                "keep_clears", outputs, lambda o: o if isinstance(o, AlarmClear) else None
            ),
            clear_msg,
        ),
        op.flat_map("incident_msg", split_out.trues, incident_msgs),
        op.map("decision_msg", decisions, decision_msg),
        op.map("action_msg", actions, action_msg),
        op.map("dead_letter_msg", valid.falses, dead_letter_msg),
    ]
    if bad_commands is not None:
        outs.append(op.map("bad_command_msg", bad_commands, dead_letter_msg))
    to_deliver = actions
    if io.webhook_sink is not None and io.action_source is not None:
        # The outbox: deliveries read the actions back from their topic, so a customer is only
        # contacted for an action the topic records, and every action it records is delivered
        # (or dead-lettered) even if a crash makes the replay decide differently.
        to_deliver, bad_actions = _side_input(
            flow, "actions_in", io.action_source, "action", pipeline.parse_action_batch, _is_action
        )
        outs.append(op.map("bad_action_msg", bad_actions, dead_letter_msg))
    if isinstance(io.webhook_sink, FixedPartitionedSink):  # the production, recoverable sink
        keyed_actions = op.key_on("key_action", to_deliver, lambda a: a.subscriber_id)
        op.output("webhook_out", keyed_actions, io.webhook_sink)
    elif io.webhook_sink is not None:  # a plain sink of actions (tests)
        op.output("webhook_out", to_deliver, cast("Sink[Action]", io.webhook_sink))

    if io.customer_source is not None and io.customer_sink is not None:
        customers, bad_customers = _side_input(
            flow, "customers_in", io.customer_source, "customer", pipeline.parse_customer_batch,
            _is_customer,
        )  # fmt: skip
        op.output("customers_to_redis", customers, io.customer_sink)
        outs.append(op.map("bad_customer_msg", bad_customers, dead_letter_msg))

    if io.outcome_source is not None:
        outcomes, bad_outcomes = _side_input(
            flow, "outcomes_in", io.outcome_source, "outcome", pipeline.parse_outcome_batch,
            _is_outcome,
        )  # fmt: skip
        joined = op.flat_map_batch("join_outcomes", outcomes, pipeline.record_outcomes)
        # one learner (a single key: one worker owns the model, Bytewax snapshots it); the
        # scorers on every worker pick up its checkpoints from Redis
        by_model = op.key_on("key_churn_model", outcomes, lambda _o: "churn-model")
        learned = op.stateful_batch(
            "learn_churn", by_model, lambda resume: _LearnLogic(pipeline, resume)
        )
        outs.append(
            op.map(
                "churn_outcome_msg",
                learned,
                lambda kv: KafkaSinkMessage(None, orjson.dumps(kv[1]), topic=topics.decisions),
            )
        )
        outs.append(op.map("bad_outcome_msg", bad_outcomes, dead_letter_msg))
        outs.append(
            op.map(
                "outcome_msg",
                joined,
                lambda j: KafkaSinkMessage(
                    None, orjson.dumps({"joined_outcome": j}), topic=topics.decisions
                ),
            )
        )

    if io.base_score_source is not None:
        passes = op.input("score_base_in", flow, io.base_score_source)
        outs.append(
            op.map(
                "score_base_msg",
                passes,
                lambda summary: KafkaSinkMessage(
                    None, orjson.dumps(summary), topic=topics.decisions
                ),
            )
        )

    merged = op.merge("merge_out", *outs)
    if isinstance(io.kafka_sink, FixedPartitionedSink):  # production: keyed over its partitions
        op.output("kafka_out", op.key_on("key_out", merged, _out_key), io.kafka_sink)
    else:
        op.output("kafka_out", merged, cast("Sink[KafkaOut]", io.kafka_sink))
    return flow


def get_flow(config: str | None = None) -> Dataflow:
    """The production dataflow from a config file (or ``CXSTREAM_CONFIG`` / env only)."""
    settings = load_settings(config if config is not None else config_path_from_env())
    pipeline = pipeline_from_settings(settings)
    return build_flow(settings, pipeline, kafka_io(settings, pipeline))

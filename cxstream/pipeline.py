"""The steps of the CEM pipeline, built for one process from the settings.

Each step is a small class of its own in :mod:`cxstream.steps`, plain Python, batch in and batch
out, holding only what it needs:

ingest (parse, validate, enrich) -> detect (per subscriber) -> demarcate (per cell) ->
churn risk -> decide (contact policy) -> actions; outcomes -> churn learner and experiment.

:class:`Pipeline` builds them with their shared dependencies (the context store, the policy, the
Redis-backed ledgers, the clock) and offers their methods under one name for the dataflow's
wiring in :mod:`cxstream.flows`, which calls them batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import redis

from cxstream.actions.ledger import ContactLedger, DeferredQueue, ExperimentLedger, MemoryLedger
from cxstream.actions.policy import ContactPolicy, Decision, SignalIn
from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import ClaimStore
from cxstream.batches import CellBatch, ShardBatch, shard_of
from cxstream.churn_state import ChurnState, MemoryChurnState
from cxstream.context import ContextStore
from cxstream.detectors.cells import CellMonitor
from cxstream.detectors.churn import ChurnLearner, ChurnModel
from cxstream.detectors.table import SubscriberTable
from cxstream.erasure import Eraser, ErasurePending
from cxstream.errors import ConfigError
from cxstream.events import (
    AlarmCommand,
    BadEvent,
    CustomerErasure,
    CustomerUpdate,
    Outcome,
    parse_alarm_command,
    utcnow,
)
from cxstream.settings import Settings
from cxstream.steps.churn_risk import BaseScoring, ChurnRisk
from cxstream.steps.common import (
    Candidate,
    CellOutput,
    RedisTrouble,
    SourceMessage,
    count_dead_letters,
    parse_batch,
    severity_of,
)
from cxstream.steps.decide import Decide
from cxstream.steps.demarcate import Demarcate
from cxstream.steps.detect import Detect
from cxstream.steps.ingest import (
    Ingest,
    parse_action_batch,
    parse_customer_batch,
    parse_outcome_batch,
    pseudonymise,
)
from cxstream.steps.outcomes import Outcomes

__all__ = ["Candidate", "CellOutput", "Pipeline", "SourceMessage", "severity_of"]


class Pipeline:
    """The steps of one process and what they share.

    Parameters
    ----------
    settings
        Validated settings.
    context
        Customer-context store (batched Redis reads with a cache).
    claims
        Where cooldowns and idempotency keys are claimed (and webhook deliveries recorded).
    ledger, deferred, experiment, churn
        The contact ledger, the deferred-actions queue, the hold-out experiment and the churn
        state (in memory when not given: tests).
    policy
        Where the contact policy is read from (default: ``policy.file`` or the built-in one).
    clock
        Returns the current UTC time (injected in tests).
    eraser
        Removes an erased customer's data from Redis (:mod:`cxstream.erasure`; None: only the
        in-memory state is forgotten).
    shard_keys
        The state key of each shard of subscribers and of cells (the engine's routing may want
        particular names; see :mod:`cxstream.flows.routing`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        context: ContextStore,
        claims: ClaimStore,
        ledger: ContactLedger | None = None,
        deferred: DeferredQueue | None = None,
        experiment: ExperimentLedger | None = None,
        policy: PolicySource | None = None,
        churn: ChurnState | None = None,
        clock: Callable[[], datetime] = utcnow,
        shard_keys: Sequence[str] | None = None,
        eraser: Eraser | None = None,
    ) -> None:
        self.settings = settings
        self.eraser = eraser
        self.shard_keys = (
            tuple(shard_keys)
            if shard_keys is not None
            else tuple(str(i) for i in range(settings.flow.shards))
        )
        if len(self.shard_keys) != settings.flow.shards:
            msg = f"{len(self.shard_keys)} shard keys for flow.shards={settings.flow.shards}"
            raise ConfigError(msg)
        self.context = context
        self.claims = claims
        self.clock = clock
        self.deferred = deferred if deferred is not None else DeferredQueue()
        self.experiment = experiment if experiment is not None else ExperimentLedger()
        self.churn = churn if churn is not None else MemoryChurnState()
        source = policy or PolicySource(
            settings.policy.file, default=DEFAULT_POLICY, check_s=settings.policy.reload_check_s
        )
        self.policy = ContactPolicy(
            source,
            ledger if ledger is not None else MemoryLedger(),
            key_prefix=settings.redis.key_prefix,
            experiment=self.experiment,
        )
        trouble = RedisTrouble()
        self.ingest_step = Ingest(settings, context, clock=clock, shard_keys=self.shard_keys)
        self.detect_step = Detect(
            settings, context, clock=clock, shard_keys=self.shard_keys, trouble=trouble
        )
        self.demarcate_step = Demarcate(settings)
        self.churn_step = ChurnRisk(settings, self.churn, trouble=trouble)
        profiles = getattr(context, "scan_profiles", None)  # None: no store (evaluations)
        self.base_scoring = BaseScoring(self.churn_step, profiles, clock)
        self.decide_step = Decide(
            context,
            self.policy,
            self.deferred,
            self.churn_step,
            clock=clock,
            trouble=trouble,
            redecide_window_s=settings.policy.redecide_window_s,
            record_ttl_s=settings.policy.idempotency_ttl_s,
        )
        self.outcomes_step = Outcomes(self.experiment, trouble=trouble)
        self._max_age = self.ingest_step.max_age
        self._max_ahead = self.ingest_step.max_ahead

    # -- ingest and detect ---------------------------------------------------------------------
    def ingest(self, messages: Sequence[Any]) -> list[BadEvent | tuple[str, ShardBatch]]:
        """See :meth:`Ingest.ingest`."""
        return self.ingest_step.ingest(messages)

    def new_poll_state(self) -> SubscriberTable:
        """The state kept beside each Kafka partition: its subscribers' detectors."""
        return self.detect_step.new_table()

    def process_poll(
        self, items: list[Any], table: SubscriberTable
    ) -> list[BadEvent | tuple[str, CellBatch]]:
        """One poll of one partition: parse, validate, enrich, detect; dead letters and batches
        for the shards of cells come out (the flow's first steps, run in the source).

        The partition's table holds all its subscribers: the poll's events go to it as one
        batch, without being grouped by shard of subscribers first."""
        bad, batch = self.ingest_step.parse(items)
        out: list[BadEvent | tuple[str, CellBatch]] = list(bad)
        if batch is not None:
            out.extend(self.detect_step.detect_shard(table, [batch]))
        return out

    def parse_customer_batch(
        self, messages: Sequence[Any]
    ) -> list[CustomerUpdate | CustomerErasure | BadEvent]:
        """See :func:`~cxstream.steps.ingest.parse_customer_batch` (ids pseudonymised when the
        privacy settings say so)."""
        return pseudonymise(parse_customer_batch(messages), self.ingest_step.pseudonyms)

    def erase_customers(self, subscriber_ids: Sequence[str]) -> None:
        """Forget erased customers (tombstones on the customers topic). At once, whatever Redis
        does: their cached context, their detector state (every table, at its next batch) and
        their outreach waiting to be decided again. Then, customer by customer, whatever Redis
        still holds about them (``cxstream erase`` removed it; this catches what was written
        since). Raises :class:`~cxstream.erasure.ErasurePending` naming those Redis could not
        be reached for (asked again for them, they are forgotten again: what came since too)."""
        self.context.forget(subscriber_ids)
        self.deferred.forget(subscriber_ids)
        self.detect_step.erasures.add(subscriber_ids)
        self.decide_step.forget(subscriber_ids)
        if self.eraser is None:
            return
        pending: list[str] = []
        cause: Exception | None = None
        for sid in subscriber_ids:
            try:
                self.eraser.erase(sid)
            except redis.RedisError as exc:
                pending.append(sid)
                cause = exc
        if cause is not None:
            raise ErasurePending(pending, cause)

    def parse_outcome_batch(self, messages: Sequence[Any]) -> list[Outcome | BadEvent]:
        """See :func:`~cxstream.steps.ingest.parse_outcome_batch` (ids pseudonymised when the
        privacy settings say so)."""
        return pseudonymise(parse_outcome_batch(messages), self.ingest_step.pseudonyms)

    parse_action_batch = staticmethod(parse_action_batch)
    count_dead_letters = staticmethod(count_dead_letters)

    def new_table(self) -> SubscriberTable:
        """See :meth:`Detect.new_table`."""
        return self.detect_step.new_table()

    def detect_shard(
        self, table: SubscriberTable, batches: Sequence[ShardBatch]
    ) -> list[tuple[str, CellBatch]]:
        """See :meth:`Detect.detect_shard`."""
        return self.detect_step.detect_shard(table, batches)

    def record_cell_batches(
        self, items: Sequence[tuple[str, CellBatch]]
    ) -> list[tuple[str, CellBatch]]:
        """See :meth:`Detect.record_cell_batches`."""
        return self.detect_step.record_cell_batches(items)

    # -- demarcate -----------------------------------------------------------------------------
    def new_cell_monitor(self, cell_id: str) -> CellMonitor[Candidate]:
        """See :meth:`Demarcate.new_cell_monitor`."""
        return self.demarcate_step.new_cell_monitor(cell_id)

    def demarcate_shard(
        self, monitors: dict[str, CellMonitor[Candidate]], batches: Sequence[CellBatch]
    ) -> list[CellOutput]:
        """See :meth:`Demarcate.demarcate_shard`."""
        return self.demarcate_step.demarcate_shard(monitors, batches)

    def apply_commands(
        self, monitors: dict[str, CellMonitor[Candidate]], commands: Sequence[AlarmCommand]
    ) -> list[CellOutput]:
        """See :meth:`Demarcate.apply_commands`."""
        return self.demarcate_step.apply_commands(monitors, commands)

    def parse_command_batch(self, messages: Sequence[Any]) -> list[AlarmCommand | BadEvent]:
        """Validate a batch of the alarm-updates topic's events (see
        :func:`~cxstream.events.parse_alarm_command`)."""
        return parse_batch(messages, parse_alarm_command, "command")

    def route_commands(self, commands: Sequence[AlarmCommand]) -> list[tuple[str, AlarmCommand]]:
        """Each command keyed by the shard of its cell (the shard holding the cell's monitor)."""
        shards = len(self.shard_keys)
        return [(self.shard_keys[shard_of(c.cell_id, shards)], c) for c in commands]

    def release_held(self, monitor: CellMonitor[Candidate]) -> list[CellOutput]:
        """See :meth:`Demarcate.release_held`."""
        return self.demarcate_step.release_held(monitor)

    # -- decide --------------------------------------------------------------------------------
    def decide_batch(self, items: Sequence[CellOutput]) -> list[Decision]:
        """See :meth:`Decide.decide_batch`."""
        return self.decide_step.decide_batch(items)

    def release_deferred(self) -> list[Decision]:
        """See :meth:`Decide.release_deferred`."""
        return self.decide_step.release_deferred()

    # -- churn risk and outcomes ---------------------------------------------------------------
    def _fresh_churn_model(self) -> ChurnModel:
        return self.churn_step.fresh_model()

    def check_churn_checkpoint(self) -> None:
        """See :meth:`ChurnRisk.check_checkpoint`."""
        self.churn_step.check_checkpoint()

    def new_churn_learner(self) -> ChurnLearner:
        """See :meth:`ChurnRisk.new_learner`."""
        return self.churn_step.new_learner()

    def churn_row(self, sig: SignalIn) -> dict[str, Any]:
        """See :meth:`ChurnRisk.churn_row`."""
        return self.churn_step.churn_row(sig)

    def score_churn(self, signals: list[SignalIn], now: datetime) -> list[SignalIn]:
        """See :meth:`ChurnRisk.score`."""
        return self.churn_step.score(signals, now)

    def learn_outcomes(
        self, learner: ChurnLearner | None, outcomes: Sequence[Outcome]
    ) -> tuple[ChurnLearner, list[dict[str, Any]]]:
        """See :meth:`ChurnRisk.learn_outcomes`."""
        return self.churn_step.learn_outcomes(learner, outcomes)

    def score_base_step(self) -> dict[str, Any] | None:
        """See :meth:`BaseScoring.step`."""
        return self.base_scoring.step()

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[dict[str, str | None]]:
        """See :meth:`Outcomes.record_outcomes`."""
        return self.outcomes_step.record_outcomes(outcomes)

    def publish_experiment(self) -> None:
        """See :meth:`Outcomes.publish_experiment`."""
        self.outcomes_step.publish_experiment()

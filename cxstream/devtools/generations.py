"""Broker generations: the embedded broker replaced with an empty one while the demo runs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from cxstream.actions.receiver import WebhookReceiver
from cxstream.clients import ensure_topics
from cxstream.devtools.flowprocess import DemoSummary, FlowProcess, summarize
from cxstream.devtools.services import EmbeddedBroker
from cxstream.errors import ServiceError
from cxstream.settings import Settings

__all__ = ["CARRIED_GAUGES", "Generations", "has_figure"]

CARRIED_GAUGES = frozenset(
    {"cxstream_churn_model_revision", "cxstream_churn_roc_auc", "cxstream_churn_log_loss"}
)
"""The churn model's figures: the model goes on in the next generation (its checkpoint is in
Redis), but these are set again only once it learns there, which may be an hour away (the demo's
CRM reports each customer once a round). Until then the summary would read revision 0 and a
ROC AUC of 0."""


class Generations:
    """The demo's dataflow process, and the embedded broker replaced every ``rotation_s``.

    The embedded broker (Tansu's memory engine) keeps every record for ever and has no
    retention, so a demo that runs for hours would grow without bound. With ``rotation_s``,
    the demo pauses its stream, waits until everything produced is processed and delivered,
    lets a recovery snapshot be taken, stops the flow, starts an empty broker on the same
    port, and starts the flow again from the snapshot: every subscriber's baseline, the cells,
    incidents and held alerts go on; the inputs start at the new topics' beginnings
    (``flow.inputs_from_start``). ``before_rotation(settings)`` is called once the flow has
    stopped and before the broker's records are dropped (the demo's capture reads its topics
    there). It offers the parts of
    :class:`FlowProcess` the demo reads; counters are totals over every generation.
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        secret: str,
        broker: EmbeddedBroker | None,
        rotation_s: float,
        say: Callable[[str], None],
        before_rotation: Callable[[Settings], None] | None = None,
    ) -> None:
        self.rotation_s = rotation_s if broker is not None else 0.0
        if self.rotation_s:
            flow = settings.flow.model_copy(update={"recovery_dir": str(workdir / "recovery")})
            settings = settings.model_copy(update={"flow": flow})
        self.settings = settings
        self._workdir = workdir
        self._secret = secret
        self._broker = broker
        self._say = say
        self._before_rotation = before_rotation
        self._base: dict[str, float] = {}
        self._carried: dict[str, float] = {}
        self._dashboard_port: int | None = None
        self.generation = 0
        self.current = self._start()

    def _start(self) -> FlowProcess:
        self.generation += 1
        workdir = self._workdir / f"flow-{self.generation}"
        workdir.mkdir()
        flow = FlowProcess(self.settings, workdir, self._secret, self._dashboard_port)
        self._dashboard_port = flow.dashboard_port
        try:
            flow.wait_ready()
        except ServiceError:
            flow.stop()
            raise
        return flow

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.current.proc

    @property
    def log_path(self) -> Path:
        return self.current.log_path

    @property
    def hold_s(self) -> float:
        return self.current.hold_s

    @property
    def metrics_url(self) -> str:
        return self.current.metrics_url

    @property
    def dashboard_url(self) -> str:
        return self.current.dashboard_url

    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]:
        """The current process's counters plus the earlier generations' totals; the churn
        model's gauges (:data:`CARRIED_GAUGES`) as the last generation that set them left them,
        until this one sets them."""
        now = self.current.counters(only)
        for key, value in self._base.items():
            if key in now or only is None:
                now[key] = now.get(key, 0.0) + value
        for key, value in self._carried.items():
            if not has_figure(now.get(key)) and (key in now or only is None):
                now[key] = value
        return now

    def stop(self) -> None:
        self.current.stop()

    def retire(self, final: dict[str, float]) -> None:
        """Keep what a stopped generation's counters (its ``final`` read) add to the totals,
        and its churn model's figures."""
        for key, value in final.items():
            name = key.split("{", 1)[0]
            if name.endswith("_total"):
                self._base[key] = self._base.get(key, 0.0) + value
            elif name in CARRIED_GAUGES and has_figure(value):
                self._carried[key] = value

    def rotate(self, produced: int, receiver: WebhookReceiver, timeout_s: float = 60.0) -> bool:
        """Replace the broker (see the class's docstring) once everything produced is done;
        False, and nothing replaced, if it is not done within ``timeout_s``."""
        assert self._broker is not None  # noqa: S101 - rotation_s is 0 without a broker
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                s = summarize(self, produced, receiver)
                c = self.counters()  # with the earlier generations' totals, as the summary
            except httpx.HTTPError:
                s, c = DemoSummary(), {}
            delivered = c.get("cxstream_webhook_deliveries_total{outcome=delivered}", 0) + c.get(
                "cxstream_webhook_deliveries_total{outcome=failed}", 0
            )
            pending = {
                "events": produced - s.events_processed - s.dead_letters,
                "queued outputs": c.get("cxstream_kafka_out_queued", 1),
                "webhook deliveries": s.actions - delivered,
            }
            if all(n <= 0 for n in pending.values()):
                break
            if time.monotonic() >= deadline:
                left = ", ".join(f"{n:.0f} {what}" for what, n in pending.items() if n > 0)
                self._say(
                    f"the embedded broker is not replaced now: the flow has work in hand ({left});"
                    " trying again shortly"
                )
                return False
            time.sleep(0.25)
        # two epochs with nothing new: the last recovery snapshot holds everything
        time.sleep(2 * self.settings.flow.snapshot_interval_s + 0.5)
        final = self.current.counters()
        self.current.stop()
        self.retire(final)
        if self._before_rotation is not None:
            self._before_rotation(self.settings)
        self._broker.restart()
        ensure_topics(self.settings)
        if not self.settings.flow.inputs_from_start:
            flow = self.settings.flow.model_copy(update={"inputs_from_start": True})
            self.settings = self.settings.model_copy(update={"flow": flow})
        self.current = self._start()
        self._say(
            f"embedded broker replaced with an empty one (generation {self.generation}); "
            "the flow resumed from its snapshot"
        )
        return True


def has_figure(value: float | None) -> bool:
    """Whether a gauge holds a figure: 0 is a gauge never set, NaN one not measured yet."""
    return value is not None and value == value and value != 0.0

"""The dataflow as a child process, as the demo, the benchmark and the tests run it, and the
figures read from its metrics endpoint."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cxstream.actions.receiver import WebhookReceiver
from cxstream.devtools.services import free_port
from cxstream.errors import ServiceError
from cxstream.settings import Settings

__all__ = ["DemoSummary", "Flow", "FlowProcess", "scrape_counters", "stop_all", "summarize"]

log = logging.getLogger(__name__)


@dataclass
class DemoSummary:
    """The figures printed at the end (``--json`` keys)."""

    events_produced: int = 0
    events_processed: int = 0
    dead_letters: int = 0
    alerts: int = 0
    actions: int = 0
    webhook_deliveries: int = 0
    drained: bool = True  # every produced event was processed or dead-lettered in time
    # not in the JSON line: details for the human summary
    max_lag: int = field(default=0, repr=False, metadata={"json": False})
    incidents_opened: dict[str, int] = field(  # by cause
        default_factory=dict, repr=False, metadata={"json": False}
    )
    decisions: dict[tuple[str, str], int] = field(
        default_factory=dict, repr=False, metadata={"json": False}
    )
    crm_outcomes: int = field(default=0, repr=False, metadata={"json": False})  # the demo's CRM
    crm_left: int = field(default=0, repr=False, metadata={"json": False})  # each replaced
    churn: dict[str, float] = field(  # outcomes by result, the learner's revision, rolling AUC
        default_factory=dict, repr=False, metadata={"json": False}
    )
    caught: list[str] = field(  # the planned incidents, each caught (when, how) or not
        default_factory=list, repr=False, metadata={"json": False}
    )


def scrape_counters(
    url: str,
    timeout_s: float = 2.0,
    client: httpx.Client | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, float]:
    """Sum each ``cxstream_*`` counter and gauge sample by name and labels, e.g.
    ``{'cxstream_events_total{outcome=processed}': 12.0, 'cxstream_alerts_total': 3.0}``.
    Plain names hold the sum over all label sets.

    Pass a ``client`` to scrape repeatedly: a bare ``httpx.get`` builds a client, and with it
    an SSL context from the CA bundle, on every call (measured: most of a benchmark's own CPU).
    ``only`` (sample names) parses just those samples' lines: the exposition parser is slow,
    and a benchmark polling twice a second needs one counter of a long page.
    """
    get = client.get if client is not None else httpx.get
    text = get(url, timeout=timeout_s).text
    if only is not None:
        # the samples, and the type lines (without them a gauge would read as "unknown")
        starts = tuple(f"{name}{sep}" for name in only for sep in "{ ") + tuple(
            f"# TYPE {name} " for name in only
        )
        text = "\n".join(line for line in text.splitlines() if line.startswith(starts))
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("cxstream"):
            continue
        for sample in family.samples:
            if not (sample.name.endswith("_total") or family.type == "gauge"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _flow_config(settings: Settings, path: Path) -> None:
    """Write the resolved settings for the child process (secrets go through its env)."""
    data = settings.model_dump(mode="json", exclude={"webhook": {"secret", "previous_secret"}})
    data["redis"]["url"] = None  # passed via env: it may hold a password
    data["redis"]["context_url"] = None
    data["kafka"].pop("sasl_password", None)
    data["privacy"]["log_key"] = None  # passed via env, as every secret
    data["privacy"]["subscriber_key"] = None
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def checkpoint_key(secret: str) -> bytes:
    """The churn checkpoints' key of a flow started with webhook ``secret`` (the same for every
    generation of the demo's flow, which reads the checkpoints of the one before)."""
    return hashlib.sha256(b"churn:" + secret.encode()).hexdigest().encode()


class FlowProcess:
    """The dataflow child process and its metrics endpoint."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        secret: str,
        dashboard_port: int | None = None,
        *,
        cluster: tuple[int, str] | None = None,
        metrics_base: int | None = None,
        cpus: set[int] | None = None,
        dashboard_users: Path | None = None,
    ) -> None:
        process_id = cluster[0] if cluster is not None else 0
        # a cluster's processes serve metrics on one base port plus their id, where process 0's
        # dashboard reads the others' (``metrics_base``: see services.free_ports)
        self.port = free_port() if metrics_base is None else metrics_base + process_id
        self.hold_s = settings.cells.hold_s
        config = workdir / "cxstream.yaml"
        _flow_config(settings, config)
        self.dashboard_port = free_port() if dashboard_port is None else dashboard_port
        env = {
            **os.environ,
            "CXSTREAM_WEBHOOK__SECRET": secret,
            "CXSTREAM_WEBHOOK__ALLOW_HTTP": "true",  # the tools' receivers listen on 127.0.0.1
            # the same for every generation of the demo's flow: it reads the checkpoints before
            "CXSTREAM_CHURN__CHECKPOINT_KEY": checkpoint_key(secret).decode(),
            # `run` serves metrics on flow.metrics_port + process id
            "CXSTREAM_FLOW__METRICS_PORT": str(self.port - process_id),
            "CXSTREAM_DASHBOARD__PORT": str(self.dashboard_port),
            "CXSTREAM_DASHBOARD__AUTH": "false",  # a local, throw-away demo
        }
        if dashboard_users is not None:  # people sign in with roles (the browser test)
            env["CXSTREAM_DASHBOARD__AUTH"] = "true"
            env["CXSTREAM_DASHBOARD__USERS_FILE"] = str(dashboard_users)
        if settings.redis.url is not None:
            env["CXSTREAM_REDIS__URL"] = settings.redis.url.get_secret_value()
        if settings.redis.context_url is not None:
            env["CXSTREAM_REDIS__CONTEXT_URL"] = settings.redis.context_url.get_secret_value()
        if settings.webhook.previous_secret is not None:
            previous = settings.webhook.previous_secret.get_secret_value()
            env["CXSTREAM_WEBHOOK__PREVIOUS_SECRET"] = previous
        privacy = settings.privacy
        for name, key in (
            ("LOG_KEY", privacy.log_key),
            ("SUBSCRIBER_KEY", privacy.subscriber_key),
        ):
            if key is not None:
                env[f"CXSTREAM_PRIVACY__{name}"] = key.get_secret_value()
        self.log_path = workdir / "flow.log"
        self._log = self.log_path.open("wb")
        # Own session: Ctrl-C in the terminal reaches the demo, which then drains the flow.
        command = [sys.executable, "-m", "cxstream", "run", "--config", str(config)]
        if cluster is not None:
            command += ["-i", str(cluster[0]), "-a", cluster[1]]
        if cpus is not None:  # pin the process and every thread it starts (benchmarks)
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self._http = httpx.Client()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}/"

    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]:
        return scrape_counters(self.metrics_url, client=self._http, only=only)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                msg = f"the dataflow exited with code {self.proc.returncode}:\n{tail}"
                raise ServiceError(msg)
            try:
                self.counters()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        msg = f"the dataflow did not serve metrics within {timeout_s:.0f}s (log: {self.log_path})"
        raise ServiceError(msg)

    def interrupt(self) -> None:
        """Ask the process to stop (SIGINT) without waiting; see :func:`stop_all`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        self.interrupt()  # nothing if it has exited; then the wait returns at once
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            log.warning(
                "the dataflow process %d did not stop within 20 s of SIGINT; killed (log: %s)",
                self.proc.pid,
                self.log_path,
            )
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        self._http.close()


def stop_all(flows: Sequence[FlowProcess]) -> None:
    """Stop the processes of one cluster together: all are interrupted before any is waited
    for. Stopped one after another, the first to exit left its peer's worker spinning a core
    (its connection gone) until it was killed 20 s later."""
    for flow in flows:
        flow.interrupt()
    for flow in flows:
        flow.stop()


class Flow(Protocol):
    """What the demo reads of its dataflow: a :class:`FlowProcess` or :class:`Generations`."""

    @property
    def proc(self) -> subprocess.Popen[bytes]: ...
    @property
    def log_path(self) -> Path: ...
    @property
    def hold_s(self) -> float: ...
    @property
    def dashboard_url(self) -> str: ...
    def counters(self, only: Sequence[str] | None = None) -> dict[str, float]: ...


def summarize(flow: Flow, produced: int, receiver: WebhookReceiver) -> DemoSummary:
    c = flow.counters()
    return DemoSummary(
        events_produced=produced,
        events_processed=int(c.get("cxstream_events_total{outcome=processed}", 0)),
        dead_letters=int(c.get("cxstream_events_total{outcome=dead_letter}", 0)),
        alerts=int(c.get("cxstream_alerts_total", 0)),
        actions=int(
            sum(
                v
                for k, v in c.items()
                if k.startswith("cxstream_decisions_total{")
                and ("result=sent" in k or "result=released" in k)
            )
        ),
        webhook_deliveries=receiver.deliveries,
        incidents_opened={
            k.split("cause=", 1)[1].split(",", 1)[0]: int(v)
            for k, v in c.items()
            if k.startswith("cxstream_cell_incidents_total{") and "state=open" in k and v
        },
        decisions=_decisions(c),
        churn={
            **{
                _labels(k)["result"]: v
                for k, v in c.items()
                if k.startswith("cxstream_churn_outcomes_total{")
            },
            "revision": c.get("cxstream_churn_model_revision{role=learner}", 0.0),
            "roc_auc": c.get("cxstream_churn_roc_auc", 0.0),
        },
    )


def _labels(key: str) -> dict[str, str]:
    """The labels of a :func:`scrape_counters` key: ``'m{a=1,b=2}'`` -> ``{'a': '1', 'b': '2'}``."""
    return dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(","))


def _decisions(counters: dict[str, float]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for key, value in counters.items():
        if key.startswith("cxstream_decisions_total{") and value:
            labels = _labels(key)
            out[(labels["kind"], labels["result"])] = int(value)
    return out

"""Run the production dataflow in this process (``cxstream run``)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from wsgiref.simple_server import WSGIServer

from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from prometheus_client import start_http_server

from cxstream.clients import ensure_topics
from cxstream.errors import ConfigError, ServiceError
from cxstream.flows.connect import FlowIO, kafka_io, pipeline_from_settings
from cxstream.flows.cx import build_flow
from cxstream.flows.source import BatchKafkaSource
from cxstream.health import FlowHealth, HealthMonitor, LagWatch, PartitionWatch
from cxstream.metrics import FLOW_HEALTH, KAFKA_INPUT_UNREAD
from cxstream.privacy import configure as configure_pseudonyms
from cxstream.settings import Settings

__all__ = ["partition_watch", "run_flow", "wait_for_kafka"]

log = logging.getLogger(__name__)


def wait_for_kafka(
    settings: Settings,
    *,
    attempts: int = 5,
    first_delay_s: float = 1.0,
    timeout_s: float = 10.0,
) -> None:
    """Create missing topics, retrying an unreachable broker with backoff, then fail clearly."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            ensure_topics(settings, timeout_s=timeout_s)
            return
        except ServiceError as exc:
            if attempt == attempts:
                msg = f"Kafka still unreachable after {attempts} attempts: {exc}"
                raise ServiceError(msg) from exc
            log.warning(
                "Kafka not reachable (attempt %d/%d), retrying in %.0fs: %s",
                attempt,
                attempts,
                delay,
                exc,
            )
            time.sleep(delay)
            delay *= 2


def _recovery(
    directory: Path, partitions: int, *, create: bool = True, wait_s: float = 120.0
) -> RecoveryConfig:
    """:func:`_open_recovery`, a directory the process cannot create or write named in a
    :class:`ConfigError` (a volume owned by root, an image run as an unprivileged user)."""
    try:
        return _open_recovery(directory, partitions, create=create, wait_s=wait_s)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(directory) else ""
        msg = (
            f"flow.recovery_dir {directory}: {exc.strerror or exc}{where}; this process "
            f"(uid {os.getuid()}) must be able to create and write it"
        )
        raise ConfigError(msg) from exc


def _open_recovery(
    directory: Path, partitions: int, *, create: bool, wait_s: float
) -> RecoveryConfig:
    """Bytewax recovery in ``directory``, creating its partitions the first time: when it
    holds none, whatever else it holds (a new volume's ``lost+found``, which a directory that
    had to be empty made Bytewax fail on at every start).

    In a cluster only process 0 creates them (``create``), and the others wait up to ``wait_s``
    for them: processes started together (a StatefulSet's parallel pods) each decided for
    themselves, so one could resume from partitions another was still writing, or two create
    them at once (Bytewax refuses a second creation). Each file is written aside and moved in
    whole, and the others go on once process 0's scratch directory is gone."""
    directory.mkdir(parents=True, exist_ok=True)
    if not create:
        deadline = time.monotonic() + wait_s
        while not any(directory.glob("part-*.sqlite3")) or any(directory.glob(".creating-*")):
            if time.monotonic() >= deadline:
                msg = (
                    f"process 0 has not created the recovery partitions in {directory} within "
                    f"{wait_s:.0f} s: every process of a cluster must see the same directory "
                    "(a shared volume), and process 0 must be running"
                )
                raise ServiceError(msg)
            time.sleep(0.5)
    else:
        for stale in directory.glob(".creating-*"):  # left by a process 0 that died creating
            shutil.rmtree(stale, ignore_errors=True)
    if any(directory.glob("part-*.sqlite3")):
        log.info("resuming from the recovery snapshots in %s", directory)
        return RecoveryConfig(str(directory))  # type: ignore[no-untyped-call]
    others = sorted(p.name for p in directory.iterdir() if p.name != "lost+found")
    if others:
        log.warning(
            "the recovery directory %s holds no recovery partitions but %s: starting from "
            "fresh state (delete the directory as a whole to start afresh)",
            directory,
            ", ".join(others[:5]),
        )
    aside = directory / f".creating-{os.getpid()}"
    aside.mkdir()
    init_db_dir(aside, partitions)  # type: ignore[no-untyped-call]
    for part in sorted(aside.glob("part-*.sqlite3")):
        part.replace(directory / part.name)
    aside.rmdir()
    log.info("created %d recovery partitions in %s", partitions, directory)
    return RecoveryConfig(str(directory))  # type: ignore[no-untyped-call]


def _tune_gc(threshold: int) -> None:
    """Fewer cyclic-GC passes on the hot path.

    Every batch allocates thousands of short-lived dicts and tuples; with Python's default
    threshold (700 allocations) the collector runs many times per batch and each full pass walks
    every long-lived object (detector tables, cell monitors). Objects alive at start-up are moved
    out of the collector's view (``gc.freeze``) and the young-generation threshold is raised.
    The hot path creates no reference cycles, so memory is still freed by reference counting.
    """
    if threshold > 0:
        gc.collect()
        gc.freeze()
        gc.set_threshold(threshold, 20, 100)


def _tune_gil(switch_interval_s: float, *, cluster: bool) -> None:
    """In a cluster, hand the GIL to other threads less often than Python's 5 ms.

    In a cluster (``-i``/``-a``, or ``-w`` above 1), Bytewax runs each worker on a thread of its
    own while the main thread wakes every millisecond to take the GIL and check for signals;
    with Python's default, a worker is made to hand the GIL over every 5 ms. Measured in one
    two-process ``cxstream bench`` run with 50 ms in one process and 5 ms in the other (then
    swapped): the 50 ms process read its partitions 20 % faster both times (57,700 vs 46,800
    and 56,900 vs 47,500 events/s). Other threads (webhook deliveries, metrics) wait at most
    this long for the GIL while the hot path is saturated, and not at all while it is idle. A
    single worker runs on the main thread, with no such poller: Python's default is kept.
    """
    if cluster:
        sys.setswitchinterval(switch_interval_s)


class _Stop:
    """The handler of SIGINT and SIGTERM: Bytewax's shutdown (a ``KeyboardInterrupt`` in its
    run loop), and a record of the signal, so that the stop it asked for ends the process
    quietly and with status 0."""

    def __init__(self) -> None:
        self.by: str | None = None  # the signal's name, once one came

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.by is not None:  # a second Ctrl-C while stopping: the stop goes on, unbroken
            log.info("%s: the dataflow is already stopping", name)
            return
        self.by = name
        log.info("%s: stopping the dataflow", name)
        raise KeyboardInterrupt

    def asked_for(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the shutdown a signal asked for (not a crash)."""
        if self.by is None:
            return False
        return isinstance(exc, KeyboardInterrupt) or "signal received" in str(exc)


def _interruptible() -> _Stop:
    """Let SIGINT stop the dataflow even when this process was started with it ignored, and
    SIGTERM stop it the same way.

    A program started in the background by a non-interactive shell (``cxstream bench &`` in a
    script), or by any launcher that ignores SIGINT, passes that on to its children, and Python
    keeps an inherited ``SIG_IGN``: Bytewax then never sees the interrupt, and ``demo`` and
    ``bench``, which stop their flows with SIGINT, had to kill them 20 s later (every run of a
    bench started that way). SIGTERM (what Kubernetes, ``docker stop`` and systemd send) stops
    the dataflow as Ctrl-C does, instead of ending the process where it stands.
    """
    stop = _Stop()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        log.info("SIGINT was ignored when this process started; it stops the dataflow now")
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.default_int_handler):
        signal.signal(signal.SIGINT, stop)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)
    return stop


def run_flow(
    settings: Settings,
    *,
    workers: int | None = None,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> None:
    """Check the broker, expose metrics on ``flow.metrics_port``, and run until interrupted."""
    key = settings.privacy.log_key
    configure_pseudonyms(key.get_secret_value() if key is not None else None)
    wait_for_kafka(settings)
    pipeline = pipeline_from_settings(settings)
    pipeline.context.ping()
    metrics_server = serve_metrics(settings, process_id)
    elsewhere = hosts_not_reaching_metrics(settings.flow.metrics_host, addresses or [])
    if elsewhere:
        log.warning(
            "flow.metrics_host is %s: the cluster's processes on other hosts (%s), process 0's "
            "dashboard among them, cannot read this process's metrics; set it to 0.0.0.0 or "
            "this host's address",
            settings.flow.metrics_host,
            ", ".join(elsewhere),
        )
    io = kafka_io(settings, pipeline)
    flow = build_flow(settings, pipeline, io)
    dashboard = None
    if settings.dashboard.enabled and (process_id or 0) == 0:
        from cxstream.dashboard.peers import Peers, peer_urls
        from cxstream.dashboard.server import start_dashboard

        peers = None
        if addresses is not None and len(addresses) > 1:
            f = settings.flow
            urls = peer_urls(addresses, 0, f.metrics_port, per_process=f.metrics_port_per_process)
            if not urls:
                log.warning(
                    "flow.metrics_port is 0: the dashboard's health line shows process 0 only"
                )
            peers = Peers(len(addresses), urls)
        dashboard = start_dashboard(settings, pipeline.context, peers)
        # the log never carries the token; a generated one is shown once, on the terminal
        log.info("dashboard at %s", dashboard.url.split("?", 1)[0])
        print(f"dashboard: {dashboard.url}", flush=True)
    recovery = None
    if settings.flow.recovery_dir is not None:
        recovery = _recovery(
            Path(settings.flow.recovery_dir),
            settings.flow.recovery_partitions,
            create=(process_id or 0) == 0,
        )
    monitor = HealthMonitor(
        LagWatch(settings.flow.lag_alert_s, settings.flow.lag_alert_events),
        on_state=_export_health,
        interval_s=min(5.0, settings.flow.lag_alert_s / 6),
    )
    monitor.start()
    partitions = partition_watch(io)
    partitions.start()
    _tune_gc(settings.flow.gc_threshold)
    stop = _interruptible()
    per_process = workers or settings.flow.workers
    _tune_gil(
        settings.flow.gil_switch_interval_s, cluster=per_process > 1 or process_id is not None
    )
    try:
        cli_main(  # type: ignore[no-untyped-call]
            flow,
            workers_per_process=per_process,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=settings.flow.snapshot_interval_s),
            recovery_config=recovery,
        )
    except (BytewaxRuntimeError, KeyboardInterrupt) as exc:
        # Bytewax stops on a signal by panicking out of its run loop (it prints a line
        # "panicked at src/run.rs ... Box<dyn Any>") and raising "signal received"
        if not stop.asked_for(exc):
            raise
        log.info(
            "stopped by %s; %s",
            stop.by,
            "a restart resumes from the last recovery snapshot"
            if recovery is not None
            else "without a recovery directory, a restart starts from fresh state",
        )
    finally:
        monitor.stop()
        partitions.stop()
        if dashboard is not None:
            dashboard.stop()
        if metrics_server is not None:
            metrics_server.shutdown()


def partition_watch(io: FlowIO, interval_s: float = 60.0) -> PartitionWatch:
    """Watches the partitions of the flow's Kafka inputs: partitions added to a topic while
    the flow runs are read only after a restart of every process, and until then the gauge
    ``cxstream_kafka_input_partitions_unread`` (0 from the start) and the log say so."""
    sources = [
        s
        for s in (io.qos_source, io.customer_source, io.action_source, io.outcome_source,
                  io.control_source)
        if isinstance(s, BatchKafkaSource)
    ]  # fmt: skip
    for source in sources:
        for topic in source.topics:
            KAFKA_INPUT_UNREAD.labels(topic).set(0)

    def read() -> dict[str, int]:
        return {topic: n for s in sources for topic, n in s.listed.items()}

    def count(topic: str) -> int:
        return next(s for s in sources if topic in s.listed).partitions_on_broker(topic)

    def export(topic: str, unread: int) -> None:
        KAFKA_INPUT_UNREAD.labels(topic).set(unread)

    return PartitionWatch(read, count, export, interval_s)


def hosts_not_reaching_metrics(metrics_host: str, addresses: list[str]) -> list[str]:
    """The cluster's hosts (from its ``host:port`` addresses) that cannot read metrics served
    on ``metrics_host``: every host but this one's loopback, when that is where they listen.

    >>> hosts_not_reaching_metrics("127.0.0.1", ["127.0.0.1:2101", "cx-1.cx:2101"])
    ['cx-1.cx']
    >>> hosts_not_reaching_metrics("0.0.0.0", ["cx-0.cx:2101", "cx-1.cx:2101"])
    []
    """
    if not _loopback(metrics_host):
        return []
    return sorted({host for a in addresses if not _loopback(host := a.rsplit(":", 1)[0])})


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only.

    >>> _loopback("127.0.0.1"), _loopback("localhost"), _loopback("[::1]"), _loopback("0.0.0.0")
    (True, True, True, False)
    """
    return host.strip("[]") in ("localhost", "::1") or host.startswith("127.")


def serve_metrics(settings: Settings, process_id: int | None = None) -> WSGIServer | None:
    """Serve ``/metrics`` on ``flow.metrics_host``, port ``flow.metrics_port`` (plus the process
    id with ``flow.metrics_port_per_process``; None when the port is 0). The registry holds
    Bytewax's own ``bytewax_kafka_consumer_lag`` too; Bytewax's dataflow API is not used, because
    it listens on every interface."""
    f = settings.flow
    if not f.metrics_port:
        return None
    port = f.metrics_port + ((process_id or 0) if f.metrics_port_per_process else 0)
    host = settings.flow.metrics_host
    server, _ = start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def _export_health(state: FlowHealth) -> None:
    FLOW_HEALTH.state(state.value)

"""The ``cxstream`` command line.

Commands: ``demo``, ``run``, ``simulate``, ``load-customers``, ``check-config``. Every command takes
``--config FILE`` (YAML; environment variables ``CXSTREAM_*`` override it). Exit codes: 0 success,
1 runtime failure (a service unreachable, a delivery error), 2 bad configuration or usage.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from cxstream.errors import ConfigError, CxStreamError
from cxstream.settings import Settings, load_settings

log = logging.getLogger("cxstream")


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if root.handlers:  # someone (a test, an embedding app) already configured logging
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


class _Progress:
    """One self-rewriting status line on stderr (plain lines when not a terminal)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, text: str) -> None:
        if self._tty:
            click.echo(f"\r{text}", nl=False, err=True)
        elif time.monotonic() - self._last >= 5.0:
            self._last = time.monotonic()
            click.echo(text, err=True)

    def done(self) -> None:
        if self._tty:
            click.echo("", err=True)


config_option = click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Settings file (YAML); see config/cxstream.yaml.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="cxstream")
def main(verbose: bool) -> None:
    """Real-time customer-experience stream processor for telecom operators."""
    _setup_logging(verbose)


@main.command()
@config_option
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds to stream, then stop and print the summary (default: until Ctrl-C).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Events per second at the busiest hour (fewer at quiet hours of the day).",
)
@click.option("--subscribers", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--cells", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--bad-ratio",
    type=click.FloatRange(0, 1),
    default=0.002,
    show_default=True,
    help="Share of deliberately malformed records.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the injected incidents (ground truth, JSON lines) to this file.",
)
@click.option(
    "--broker-rotation",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Replace the embedded broker with an empty one this often (seconds; 0: never): it "
    "has no retention, and the flow resumes from its recovery snapshot. See docs/operations.md.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait at the end for every event to be processed or dead-lettered; if "
    "they are not, the summary says so (drained: false) and the exit code is 1.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the summary as one JSON object on the last line of stdout.",
)
def demo(
    config: Path | None,
    duration: float | None,
    rate: float,
    subscribers: int,
    cells: int,
    bad_ratio: float,
    seed: int,
    truth: Path | None,
    broker_rotation: float,
    drain_timeout: float,
    as_json: bool,
) -> None:
    """Run the whole system on embedded services (Kafka-protocol broker, Redis) with a simulated
    network, injected incidents and a webhook receiver; print a summary at the end.

    While it runs, a flow that falls behind (its backlog growing for flow.lag_alert_s while
    events arrive, or nothing processed) is reported with a warning. Exit code 1 if the events
    were not all processed or dead-lettered within --drain-timeout at the end.

    Example: cxstream demo --duration 300 --json"""
    from cxstream.devtools.demo import DemoOptions, run_demo, summary_json, summary_lines

    settings = _settings(config)
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo("\nstopping: draining the pipeline (Ctrl-C again to abort) ...", err=True)
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    progress = _Progress()
    say = lambda text: click.echo(text, err=True)
    options = DemoOptions(
        duration_s=duration,
        rate=rate,
        subscribers=subscribers,
        cells=cells,
        bad_ratio=bad_ratio,
        seed=seed,
        truth_path=truth,
        drain_timeout_s=drain_timeout,
        broker_rotation_s=broker_rotation,
        lag_alert_s=settings.flow.lag_alert_s,
        lag_alert_events=settings.flow.lag_alert_events,
    )
    try:
        summary = run_demo(settings, options, say=say, progress=progress, stop=stop)
    except CxStreamError as exc:
        progress.done()
        raise click.ClickException(str(exc)) from exc
    finally:
        signal.signal(signal.SIGINT, previous)
    progress.done()
    click.echo("summary:")
    for line in summary_lines(summary):
        click.echo(line)
    if as_json:
        click.echo(summary_json(summary))
    if not summary.drained:
        sys.exit(1)


@main.command()
@config_option
@click.option(
    "--duration",
    type=click.FloatRange(min=10),
    default=1800.0,
    show_default=True,
    help="Seconds to stream.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Events per second at the busiest hour, as in `demo`.",
)
@click.option(
    "--checkpoint",
    type=click.FloatRange(min=10),
    default=600.0,
    show_default=True,
    help="Report every process's memory this often (seconds); growth is measured after the first.",
)
@click.option(
    "--lag-limit",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Report how long the lag stayed above this many seconds of input at the longest.",
)
@click.option(
    "--broker-rotation",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Replace the embedded broker with an empty one this often (seconds; 0: never): it "
    "has no retention, and the flow resumes from its recovery snapshot. See docs/operations.md.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line too.")
def soak(
    config: Path | None,
    duration: float,
    rate: float,
    checkpoint: float,
    lag_limit: float,
    broker_rotation: float,
    as_json: bool,
) -> None:
    """Run the demo for a long time and report the lag and every process's memory: events
    produced, processed and dead-lettered, the largest lag, and the peak and growth of the RSS
    of the demo, the dataflow, the embedded broker and Redis (Linux /proc). Exit code 1 if the
    events were not all processed or dead-lettered at the end.

    Example: cxstream soak --duration 1800 --json"""
    from cxstream.devtools.demo import DemoOptions, run_demo
    from cxstream.devtools.soak import SoakWatch, report_lines

    settings = _settings(config)
    watch = SoakWatch(checkpoint_s=checkpoint, lag_limit_s=lag_limit)
    options = DemoOptions(
        duration_s=duration,
        rate=rate,
        broker_rotation_s=broker_rotation,
        lag_alert_s=settings.flow.lag_alert_s,
        lag_alert_events=settings.flow.lag_alert_events,
    )
    say = lambda text: click.echo(text, err=True)
    try:
        summary = run_demo(settings, options, say=say, progress=_Progress(), observe=watch)
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    report = watch.report(summary)
    for line in report_lines(report):
        click.echo(line)
    if as_json:
        click.echo(json.dumps(report))
    if not summary.drained:
        sys.exit(1)


@main.command()
@config_option
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads in this process (default: flow.workers).",
)
@click.option(
    "--process-id",
    "-i",
    type=click.IntRange(min=0),
    default=None,
    help="This process's index in a Bytewax cluster (with --addresses).",
)
@click.option(
    "--addresses",
    "-a",
    default=None,
    help='Cluster addresses, ";"-separated: "host1:2101;host2:2101".',
)
@click.option(
    "--recovery-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep Bytewax recovery snapshots here (created if new); a restart resumes from them.",
)
def run(
    config: Path | None,
    workers: int | None,
    process_id: int | None,
    addresses: str | None,
    recovery_dir: Path | None,
) -> None:
    """Run the production dataflow against the configured Kafka and Redis."""
    from cxstream.flows.run import run_flow

    overrides = {"flow": {"recovery_dir": str(recovery_dir)}} if recovery_dir else None
    settings = _settings(config, overrides)
    if settings.kafka.brokers is None:
        raise click.UsageError("kafka.brokers is not set: `run` needs a broker (try `demo`).")
    if (process_id is None) != (addresses is None):
        raise click.UsageError("--process-id and --addresses go together.")
    try:
        run_flow(
            settings,
            workers=workers,
            process_id=process_id,
            addresses=addresses.split(";") if addresses else None,
        )
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@config_option
@click.option("--events", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop after this many seconds of event time.",
)
@click.option(
    "--rate",
    type=float,
    default=1000.0,
    show_default=True,
    help="Events per second at the busiest hour, paced to the wall clock; 0 = as fast "
    "as possible with a compressed clock.",
)
@click.option("--subscribers", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--cells", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--bad-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the injected incidents (JSON lines) here.",
)
@click.option(
    "--profiles",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the matching customer profiles (CSV, for load-customers) here.",
)
def simulate(
    config: Path | None,
    events: int | None,
    duration: float | None,
    rate: float,
    subscribers: int,
    cells: int,
    bad_ratio: float,
    seed: int,
    truth: Path | None,
    profiles: Path | None,
) -> None:
    """Produce a realistic QoS stream with injected incidents to the configured Kafka topic."""
    from confluent_kafka import Producer

    from cxstream.clients import ensure_topics
    from cxstream.customers import customers_to_csv
    from cxstream.devtools.producer import produce_events
    from cxstream.devtools.simulate import Simulator, plan_incidents
    from cxstream.events import utcnow

    if events is None and duration is None:
        raise click.UsageError("give --events or --duration")
    settings = _settings(config)
    if settings.kafka.brokers is None:
        raise click.UsageError("kafka.brokers is not set (config file or CXSTREAM_KAFKA__BROKERS)")
    sim = Simulator(
        subscribers, cells, seed=seed, bad_ratio=bad_ratio, run_id=f"sim{int(time.time())}"
    )
    if profiles is not None:
        with profiles.open("w", newline="", encoding="utf-8") as fh:
            n = customers_to_csv(sim.profiles(), fh)
        click.echo(f"wrote {n} customer profiles to {profiles}", err=True)
    start = utcnow()
    span = duration if duration is not None else (events or 0) / (rate if rate > 0 else 1000.0)
    sim.add_incidents(plan_incidents(sim, start, span, sim.rng))
    if truth is not None:
        truth.write_bytes(b"".join(i.to_json() + b"\n" for i in sim.incidents))
        click.echo(f"wrote {len(sim.incidents)} incidents (ground truth) to {truth}", err=True)
    try:
        ensure_topics(settings, [settings.kafka.topics.qos])
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    producer = Producer(settings.kafka.producer_settings())
    progress = _Progress()
    produced = produce_events(
        producer,
        settings.kafka.topics.qos,
        sim,
        rate=rate,
        events=events,
        duration_s=duration,
        start=start,
        on_progress=lambda n: progress(f"produced {n} events"),
    )
    progress.done()
    click.echo(f"produced {produced} events to {settings.kafka.topics.qos}")


@main.command("load-customers")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Column mapping (YAML); see config/mappings/telco_ibm.yaml. "
    "Without it the CSV must use cxstream's own column names.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write rejected rows (line, reason) to this CSV.",
)
def load_customers(
    csv_file: Path, config: Path | None, mapping: Path | None, rejects: Path | None
) -> None:
    """Bulk-load customer context from a CSV file into Redis (1,000 profiles per round trip)."""
    from cxstream.clients import context_client
    from cxstream.context import ContextStore
    from cxstream.customers import iter_customers, load_mapping
    from cxstream.events import CustomerContext

    settings = _settings(config)
    try:
        rules = load_mapping(mapping) if mapping is not None else None
        store = ContextStore(
            context_client(settings),
            prefix=settings.redis.key_prefix,
            customer_ttl_s=settings.redis.customer_ttl_s,
            max_entries=0,
        )
        store.ping()
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    loaded, rejected = 0, []
    batch: list[CustomerContext] = []
    progress = _Progress()
    with csv_file.open(newline="", encoding="utf-8-sig") as fh:
        for item in iter_customers(fh, rules):
            if isinstance(item, CustomerContext):
                batch.append(item)
                if len(batch) >= 1000:
                    store.put_many(batch)
                    loaded += len(batch)
                    batch.clear()
                    progress(f"loaded {loaded} profiles")
            else:
                rejected.append(item)
    store.put_many(batch)
    loaded += len(batch)
    progress.done()
    click.echo(f"loaded {loaded} customer profiles into Redis; rejected {len(rejected)} rows")
    for line, reason in rejected[:5]:
        click.echo(f"  line {line}: {reason}", err=True)
    if rejects is not None and rejected:
        rejects.write_text("line,reason\n" + "".join(f'{n},"{r}"\n' for n, r in rejected))
    if rejected and loaded == 0:
        sys.exit(1)


class _Bar:
    """A progress bar on stderr: ``stage [#####.....] done/total``, redrawn in place on a
    terminal, a plain line every few seconds otherwise."""

    def __init__(self, width: int = 30) -> None:
        self._tty = sys.stderr.isatty()
        self._width = width
        self._last = 0.0
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._stage, self._last = stage, now
        filled = int(self._width * min(done / total, 1.0)) if total else 0
        bar = "#" * filled + "." * (self._width - filled)
        text = f"{stage:<24s} [{bar}] {done:,}/{total:,}"
        if self._tty:
            click.echo(f"\r{text}", nl=False, err=True)
        else:
            click.echo(text, err=True)

    def done(self) -> None:
        if self._tty:
            click.echo("", err=True)


@main.command()
@config_option
@click.option("--events", type=click.IntRange(min=1000), default=200_000, show_default=True)
@click.option("--subscribers", type=click.IntRange(min=10), default=10_000, show_default=True)
@click.option("--cells", type=click.IntRange(min=3), default=500, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Dataflow processes (a Bytewax cluster on this machine, one worker each).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=None,
    help="Pace the producer at this many events/s (latency at a fixed load); default: saturate.",
)
@click.option(
    "--hold-s",
    type=click.FloatRange(min=0, max=3600),
    default=0.0,
    show_default=True,
    help="cells.hold_s during the run: how long individual outreach waits for a cell incident "
    "that would explain it. 0 measures the system's own latency; pass the configured value "
    "(10) to include that deliberate wait.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Pin each dataflow process (and its librdkafka threads) to a core of its own.",
)
@click.option(
    "--state-probe",
    is_flag=True,
    help="Instead: build the state of --subscribers active subscribers in --cells cells and "
    "measure its memory (resident growth and snapshot size).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line of stdout.")
def bench(
    config: Path | None,
    events: int,
    subscribers: int,
    cells: int,
    workers: int,
    rate: float | None,
    hold_s: float,
    seed: int,
    pin: bool,
    state_probe: bool,
    as_json: bool,
) -> None:
    """Measure the full production dataflow against this machine's limit in the same run:
    end-to-end throughput, a parse-only Kafka consumer's ceiling, their ratio, event-time-to-action
    latency percentiles and peak memory. Uses the embedded broker and Redis unless configured."""
    from cxstream.devtools.bench import BenchOptions, probe_state, run_bench

    settings = _settings(config)
    bar = _Bar()
    if state_probe:
        probe = probe_state(settings, subscribers, cells, progress=bar)
        bar.done()
        click.echo(
            f"state of {probe['subscribers']:,} subscribers in {probe['cells']:,} cells: "
            f"{probe['state_mb']:,} MB resident ({probe['bytes_per_subscriber']} bytes per "
            f"subscriber); snapshot {probe['snapshot_mb']} MB (detectors "
            f"{probe['detector_snapshot_mb']} MB, cells {probe['cells_snapshot_mb']} MB)"
        )
        if as_json:
            click.echo(json.dumps(probe))
        return
    options = BenchOptions(
        events=events,
        subscribers=subscribers,
        cells=cells,
        workers=workers,
        rate=rate,
        seed=seed,
        pin=pin,
        hold_s=hold_s,
    )
    try:
        report = run_bench(settings, options, progress=bar)
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    bar.done()
    s = report.summary()
    mode = f"paced at {rate:,.0f} events/s" if rate else "saturated"
    click.echo(
        f"{s['events']:,} events, {s['workers']} process(es), {mode}: {s['seconds']} s, "
        f"{s['events_per_s']:,} events/s"
    )
    if s["finish_skew_s"] and s["busy_events_per_s"] is not None:
        click.echo(
            f"  (while every process had events left; from the first event to the last "
            f"{s['busy_events_per_s']:,} events/s: one process ran out {s['finish_skew_s']} s "
            f"before the last)"
        )
    click.echo(
        f"ceiling (plain consumer + orjson, one core): {s['ceiling_events_per_s']:,} events/s; "
        f"ratio {s['ratio']:.3f}"
    )
    if s["latency_p50_ms"] is not None:
        click.echo(
            f"event time -> action: p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms "
            f"({s['actions']} actions; demarcation hold {s['hold_s']} s)"
            + ("" if rate else "; saturated: event times are simulated, use --rate for latency")
        )
    else:
        click.echo("no actions were taken: no latency to report")
    if s["pipeline_p50_ms"] is not None:
        click.echo(
            f"event time -> cell summary out (the hot path): p50 {s['pipeline_p50_ms']} ms, "
            f"p99 {s['pipeline_p99_ms']} ms ({s['pipeline_samples']} samples)"
        )
    if s["floor_p50_ms"] is not None:
        click.echo(
            f"event time -> plain consumer at the same rate (the broker alone): "
            f"p50 {s['floor_p50_ms']} ms, p99 {s['floor_p99_ms']} ms"
        )
    click.echo(
        f"dataflow CPU: {s['cpu_cores']} cores busy; peak RSS {s['peak_rss_mb']} MB; "
        f"{s['alerts']} alerts, {s['dead_letters']} dead letters"
    )
    if as_json:
        click.echo(json.dumps(s))


@main.command("check-config")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_config(config: Path) -> None:
    """Validate a settings file: print every bad key and exit 2, or print the effective settings."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2))
    click.echo(f"{config}: OK", err=True)


@main.group("eval")
def eval_group() -> None:
    """Measure detection quality on labelled data."""


@eval_group.command("nab")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A NAB tree: DIR/data/<group>/<file>.csv and optionally DIR/labels/combined_windows.json.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write RESULTS_DIR/<group>/<file>.csv with timestamp,value,anomaly_score,alert.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line of stdout.")
def eval_nab(data_dir: Path, out_dir: Path | None, as_json: bool) -> None:
    """Run the default series detector (the flow's) over a NAB data set and score it with NAB's
    method: standard, reward_low_FP_rate and reward_low_FN_rate profiles, normalised 0-100."""
    from cxstream.evaluate.nab import run_nab

    progress = _Progress()
    try:
        report = run_nab(data_dir, out_dir, on_file=lambda name: progress(f"scoring {name}"))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    progress.done()
    click.echo(
        f"{report.files} files, {report.points} points, detector "
        f"{report.points_per_s:,.0f} points/s (one core)"
    )
    if report.scores:
        click.echo(f"{'':24s} {'standard':>9s} {'low FP':>9s} {'low FN':>9s}")
        rows = [("all", report.scores), *report.groups.items()]
        for name, s in rows:
            click.echo(
                f"{name:24s} {s['standard']:9.1f} {s['reward_low_FP_rate']:9.1f} "
                f"{s['reward_low_FN_rate']:9.1f}"
            )
    else:
        click.echo("no labels/combined_windows.json: scores not computed")
    if out_dir is not None:
        click.echo(f"results written under {out_dir}")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "files": report.files,
                    "points": report.points,
                    "points_per_s": round(report.points_per_s),
                    **report.scores,
                    "groups": report.groups,
                }
            )
        )


@eval_group.command("churn")
@click.option(
    "--csv",
    "csv_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A churn table with a header row (any columns).",
)
@click.option("--label", required=True, help="The column that says whether the customer churned.")
@click.option(
    "--positive",
    default=None,
    help="The label value meaning churn (default: guessed for Yes/No, true/false, 1/0).",
)
@click.option("--id", "id_column", default=None, help="An identifier column to leave out.")
@click.option(
    "--model",
    type=click.Choice(["bayes", "river-lr", "river-arf", "ensemble"]),
    default="bayes",
    show_default=True,
    help="bayes is the flow's model; the others are River baselines for comparison.",
)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write row,label,probability per row (label as 0/1).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line of stdout.")
def eval_churn(
    csv_file: Path,
    label: str,
    positive: str | None,
    id_column: str | None,
    model: str,
    predictions: Path | None,
    as_json: bool,
) -> None:
    """Prequential churn evaluation on any CSV: column types inferred, blanks as missing, each row
    scored then learned in file order, one pass. Prints ROC AUC, PR AUC, log loss, accuracy at
    0.5 and rows per second."""
    from cxstream.evaluate.churn import run_churn

    progress = _Progress()
    try:
        report = run_churn(
            csv_file,
            label,
            positive=positive,
            id_column=id_column,
            model=model,
            predictions=predictions,
            on_progress=lambda i, n: progress(f"row {i:,}/{n:,}"),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    progress.done()
    s = report.summary()
    click.echo(
        f"{s['rows']:,} rows ({s['positives']:,} churned), model {model}: "
        f"{len(s['numeric'])} numeric and {len(s['categorical'])} categorical columns"
    )
    for col, why in report.skipped.items():
        click.echo(f"  skipped column {col!r}: {why}")
    click.echo(
        f"ROC AUC {s['roc_auc']:.4f}  PR AUC {s['pr_auc']:.4f}  log loss {s['log_loss']:.4f}  "
        f"accuracy {s['accuracy']:.4f}  ({s['rows_per_s']:,} rows/s, score + learn)"
    )
    click.echo(
        f"score path: {s['score_per_s']:,} predictions/s on one core "
        "(the flow's batched scoring, with explanations)"
    )
    if predictions is not None:
        click.echo(f"predictions written to {predictions}")
    if as_json:
        click.echo(json.dumps(s))


@eval_group.command("incidents")
@config_option
@click.option("--scenarios", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--subscribers", type=click.IntRange(min=10), default=300, show_default=True)
@click.option("--cells", type=click.IntRange(min=3), default=15, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(min=30),
    default=180.0,
    show_default=True,
    help="Seconds of event time per scenario.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=10),
    default=200.0,
    show_default=True,
    help="Events per second of event time (peak hour).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line of stdout.")
def eval_incidents(
    config: Path | None,
    scenarios: int,
    subscribers: int,
    cells: int,
    duration: float,
    rate: float,
    seed: int,
    as_json: bool,
) -> None:
    """Run the simulator's labelled scenarios (a cell outage, a lone degrading subscriber, a
    flapping cell, each) through detection and cell demarcation; report precision, recall and
    median detection delay of cell incidents and of individual degradations."""
    from cxstream.evaluate.incidents import run_incidents

    settings = _settings(config)
    progress = _Progress()
    report = run_incidents(
        scenarios=scenarios,
        subscribers=subscribers,
        cells=cells,
        duration_s=duration,
        rate=rate,
        seed=seed,
        settings=settings,
        on_scenario=lambda k: progress(f"scenario {k + 1}/{scenarios}"),
    )
    progress.done()
    s = report.summary()
    click.echo(f"{s['scenarios']} scenarios, {s['events']} events ({s['events_per_s']} events/s)")
    click.echo(
        f"cell incidents:          precision {s['cell_precision']:.3f}  recall "
        f"{s['cell_recall']:.3f}  median delay {s['cell_median_delay_s']} s"
    )
    click.echo(
        f"individual degradations: precision {s['individual_precision']:.3f}  recall "
        f"{s['individual_recall']:.3f}  median delay {s['individual_median_delay_s']} s"
    )
    click.echo(
        f"alerts explained by a cell incident: {s['explained_alerts']}; individual "
        f"outreach for them: {s['outreach_for_explained']}"
    )
    if as_json:
        click.echo(json.dumps(s))

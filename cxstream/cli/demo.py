"""``cxstream demo`` and ``cxstream soak``: the whole system on embedded services."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from cxstream.cli.app import (
    Progress,
    bad_ratio_option,
    broker_rotation_option,
    cells_option,
    config_option,
    main,
    seed_option,
    settings_from,
    subscribers_option,
    truth_option,
)
from cxstream.errors import CxStreamError

# Ctrl-C, a plain kill (or docker/systemd stopping it) and a closed terminal all stop the demo
# the same way: drain, then stop the embedded services, so none is left running
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """While inside: the first stop signal sets ``stop`` (the demo drains and ends), a second
    aborts (``KeyboardInterrupt``; the embedded services are still stopped on the way out)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        with contextlib.suppress(OSError):  # no terminal any more after SIGHUP
            click.echo(f"\n{name}: draining the pipeline (again to abort) ...", err=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    help="Events per second at the busiest hour; the load follows the time of day, never below "
    "59 % of it (at 4 a.m.).",
)
@subscribers_option(1000, minimum=1)
@cells_option(50, minimum=1)
@bad_ratio_option(0.002)
@seed_option(7)
@truth_option("Append the injected incidents (ground truth, JSON lines) to this file.")
@broker_rotation_option
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait at the end for every event to be processed or dead-lettered; if "
    "they are not, the summary says so (drained: false) and the exit code is 1.",
)
@click.option(
    "--capture",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="At the end, write what the run emitted to this folder, one JSON document per line: "
    "alerts.jsonl (TMF642 Alarms), service-problems.jsonl (TMF656), alarm-updates.jsonl, "
    "decisions.jsonl, webhooks.jsonl (each request's Standard Webhooks headers and CloudEvent "
    "body) and webhook-secret.txt (the run's throw-away signing secret). With broker rotation "
    "the topics are read before each replacement too, so the files hold the whole run.",
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
    capture: Path | None,
    as_json: bool,
) -> None:
    """Run the whole system on embedded services (Kafka-protocol broker, Redis) with a simulated
    network, injected incidents and a webhook receiver; print a summary at the end.

    While it runs, a flow that falls behind (its backlog growing for flow.lag_alert_s while
    events arrive, or nothing processed) is reported with a warning. Exit code 1 if the events
    were not all processed or dead-lettered within --drain-timeout at the end.

    Example: cxstream demo --duration 300 --json"""
    from cxstream.devtools.demo import DemoOptions, run_demo, summary_json, summary_lines

    settings = settings_from(config)
    stop = threading.Event()
    progress = Progress()
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
        capture_dir=capture,
    )
    try:
        with _stopped_by_signals(stop):
            summary = run_demo(settings, options, say=say, progress=progress, stop=stop)
    except CxStreamError as exc:
        progress.done()
        raise click.ClickException(str(exc)) from exc
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
@broker_rotation_option
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

    settings = settings_from(config)
    watch = SoakWatch(checkpoint_s=checkpoint, lag_limit_s=lag_limit)
    options = DemoOptions(
        duration_s=duration,
        rate=rate,
        broker_rotation_s=broker_rotation,
        lag_alert_s=settings.flow.lag_alert_s,
        lag_alert_events=settings.flow.lag_alert_events,
    )
    say = lambda text: click.echo(text, err=True)
    stop = threading.Event()
    try:
        with _stopped_by_signals(stop):
            summary = run_demo(
                settings, options, say=say, progress=Progress(), observe=watch, stop=stop
            )
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    report = watch.report(summary)
    for line in report_lines(report):
        click.echo(line)
    if as_json:
        click.echo(json.dumps(report))
    if not summary.drained:
        sys.exit(1)

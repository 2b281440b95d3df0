"""``cxstream bench``: the production dataflow against this machine's limit."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cxstream.cli.app import (
    Bar,
    cells_option,
    config_option,
    json_option,
    main,
    seed_option,
    settings_from,
    subscribers_option,
)
from cxstream.errors import CxStreamError


@main.command()
@config_option
@click.option(
    "--events",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Events to produce and process.",
)
@subscribers_option(10_000, minimum=10)
@cells_option(500, minimum=3)
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
@seed_option(7)
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
@json_option
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
    latency percentiles and peak memory. Uses the embedded broker and Redis unless configured.

    Example: cxstream bench --events 3000000 --json"""
    from cxstream.devtools.bench import BenchOptions, probe_state, run_bench

    settings = settings_from(config)
    bar = Bar()
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

"""``cxstream eval``: detection and churn quality on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cxstream.cli.app import (
    Progress,
    cells_option,
    config_option,
    json_option,
    main,
    seed_option,
    settings_from,
    subscribers_option,
)


@main.group("eval")
def eval_group() -> None:
    """Measure detection and churn quality on labelled data."""


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
@json_option
def eval_nab(data_dir: Path, out_dir: Path | None, as_json: bool) -> None:
    """Run the default series detector (the flow's) over a NAB data set and score it with NAB's
    method: standard, reward_low_FP_rate and reward_low_FN_rate profiles, normalised 0-100.
    A blank or NA value is a missing point (scored 0, not learned); any other value that is not
    a number stops the run with its file and line.

    Example: cxstream eval nab --data ../shared/data/nab --out results/"""
    from cxstream.evaluate.nab import run_nab

    progress = Progress()
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


@eval_group.command("protocol")
@click.option(
    "--data",
    "data_dirs",
    required=True,
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A labelled NAB tree (repeat for several data sets, e.g. nab and ms_cloud_monitoring).",
)
@json_option
def eval_protocol(data_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Measure how much the series detector's score owes to choosing its decision settings on
    the files it is scored on: each group scored with its own best setting (in sample), with the
    setting best on the other groups (leave one group out), with the setting best on another data
    set, and with the shipped one. NAB standard profile.

    Example: cxstream eval protocol --data ../shared/data/nab --data
    ../shared/data/ms_cloud_monitoring"""
    from cxstream.evaluate.protocol import run_protocol

    progress = Progress()
    try:
        report = run_protocol(list(data_dirs), on_stage=progress)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    progress.done()
    rate = report.points / report.seconds if report.seconds else 0.0
    click.echo(
        f"{report.points} points scored once ({rate:,.0f} points/s); settings threshold/hold/repeat/spike"
    )
    click.echo(
        f"{'group':38s} {'in sample':>9s} {'(setting)':>22s} {'held out':>9s} {'(setting)':>22s} "
        f"{'fixed':>6s} {report.fixed.name}"
    )
    for group, e in report.logo.items():
        held = f"{e['held_out']:9.1f}" if "held_out" in e else f"{'-':>9s}"
        click.echo(
            f"{group:38s} {e['in_sample']:9.1f} {e['chosen_in_sample']!s:>22s} {held} "
            f"{e.get('chosen', '-')!s:>22s} {e['fixed']:6.1f}"
        )
    for pair, e in report.across.items():
        click.echo(
            f"chosen on {pair}: {e['score']:.1f} with {e['chosen']} "
            f"(best there in sample: {e['in_sample']:.1f})"
        )
    if as_json:
        click.echo(report.as_json())


@eval_group.command("churn")
@config_option
@click.option(
    "--csv",
    "csv_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A churn table with a header row (any columns).",
)
@click.option(
    "--label",
    required=True,
    help="The column that says whether the customer churned (as written, or in another case).",
)
@click.option(
    "--positive",
    default=None,
    help=(
        "The label value meaning churn (default: guessed for Yes/No, true/false, 1/0, in any case,"
        " also written True. or 1.0); a value given here matches the same way when it does not"
        " occur as written (true for True., 1 for 1.0). A label typed several ways that reads"
        " as two values (Yes, yes, No) is read as those two."
    ),
)
@click.option(
    "--id",
    "id_column",
    multiple=True,
    help="An identifier column to leave out (likewise); repeat it for several.",
)
@click.option(
    "--model",
    type=click.Choice(["blend", "bayes", "trees", "river-lr", "river-arf", "ensemble"]),
    default="blend",
    show_default=True,
    help=(
        "blend is the flow's model (Bayesian logistic regression and refit gradient-boosted "
        "trees, blended by an online stacker); bayes and trees are its two parts alone; "
        "river-lr, river-arf and ensemble (their average with bayes) are River baselines."
    ),
)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write row,label,probability per row (label as 0/1).",
)
@json_option
def eval_churn(
    config: Path | None,
    csv_file: Path,
    label: str,
    positive: str | None,
    id_column: tuple[str, ...],
    model: str,
    predictions: Path | None,
    as_json: bool,
) -> None:
    """Prequential churn evaluation on any CSV: column types inferred, blanks as missing, each row
    scored then learned in file order, one pass. Prints ROC AUC, PR AUC, log loss, accuracy at
    0.5 and rows per second. The file may be comma, semicolon, tab or bar separated (the one its
    header uses most; where it is not a comma, a number may have a decimal comma), in UTF-8 or
    Windows-1252.

    blend and bayes are built from the configuration's churn section (prior_variance,
    max_categories, trees, tree_window; CXSTREAM_CHURN__* variables override it), as the flow
    builds its model.

    Example: cxstream eval churn --csv Telco-Customer-Churn.csv --label Churn --id customerID"""
    from cxstream.evaluate.churn import run_churn

    settings = settings_from(config)
    progress = Progress()
    try:
        report = run_churn(
            csv_file,
            label,
            positive=positive,
            id_column=id_column,
            model=model,
            predictions=predictions,
            on_progress=lambda i, n: progress(f"row {i:,}/{n:,}"),
            churn=settings.churn,
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

    def shown(x: float | None) -> str:
        return "n/a (one class only)" if x is None else f"{x:.4f}"

    click.echo(
        f"ROC AUC {shown(s['roc_auc'])}  PR AUC {shown(s['pr_auc'])}  "
        f"log loss {s['log_loss']:.4f}  accuracy {s['accuracy']:.4f}  "
        f"({s['rows_per_s']:,} rows/s, score + learn)"
    )
    click.echo(f"ROC AUC over the last fifth of rows: {shown(s['roc_auc_last_fifth'])}")
    click.echo(
        f"score path: {s['score_per_s']:,} predictions/s on one core "
        "(the flow's batched scoring, with explanations)"
    )
    click.echo("reliability (predicted vs observed churn rate per probability bin):")
    for b in s["reliability"]:
        observed = "n/a" if b["observed"] is None else f"{b['observed']:.3f}"
        click.echo(
            f"  {b['low']:.1f}-{b['high']:.1f}: {b['rows']:>7,} rows, "
            f"predicted {b['predicted']:.3f}, observed {observed}"
        )
    if predictions is not None:
        click.echo(f"predictions written to {predictions}")
    if as_json:
        click.echo(json.dumps(s))


@eval_group.command("incidents")
@config_option
@click.option(
    "--scenarios",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Seeded scenarios to run (seeds --seed, --seed + 1, ...).",
)
@subscribers_option(300, minimum=10)
@cells_option(15, minimum=3)
@click.option(
    "--duration",
    type=click.FloatRange(min=30),
    default=2700.0,
    show_default=True,
    help="Seconds of event time per scenario (the gradual degradation takes 30 minutes; cell "
    "KPIs need about 5 minutes of baseline).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=10),
    default=100.0,
    show_default=True,
    help="Events per second of event time (peak hour).",
)
@seed_option(1)
@click.option(
    "--clean",
    is_flag=True,
    help="No incidents, from midnight: every cell incident opened is a false one, reported per "
    "cell-day (with --duration 172800, a first day and a day with time-of-day profiles).",
)
@json_option
def eval_incidents(
    config: Path | None,
    scenarios: int,
    subscribers: int,
    cells: int,
    duration: float,
    rate: float,
    seed: int,
    clean: bool,
    as_json: bool,
) -> None:
    """Run the simulator's labelled scenarios (each: a lone degrading subscriber, a cell outage, a
    flapping cell, a gradual degradation, a mild shift of a whole cell, a cell gone silent; and
    as delivery goes wrong, a probe with a clock two minutes fast in the outage's cell and five
    probes uploading two minutes of measurements ten minutes late) through parsing, detection and
    cell demarcation; report precision, recall and median detection delay of cell incidents
    (also per kind) and of individual degradations, and the false cell incidents per cell-day.

    Example: cxstream eval incidents --scenarios 10 --json

    Example: cxstream eval incidents --clean --scenarios 2 --duration 172800 --rate 30"""
    from cxstream.evaluate.incidents import run_incidents

    settings = settings_from(config)
    progress = Progress()
    report = run_incidents(
        scenarios=scenarios,
        subscribers=subscribers,
        cells=cells,
        duration_s=duration,
        rate=rate,
        seed=seed,
        settings=settings,
        on_scenario=lambda k: progress(f"scenario {k + 1}/{scenarios}"),
        clean=clean,
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
    click.echo(
        f"delivery: {s['late_events']} events late (a backlog), {s['dead_letters']} dead letters"
    )
    click.echo(
        "silent cells whose outage names the neighbour their subscribers went to: "
        f"{s['silent_neighbour_named']:.3f}; of their subscribers in the minute before, named "
        f"as affected: {s['silent_subscribers_named']:.3f} ({s['silent_named_elsewhere']} "
        "named who were not the cell's)"
    )
    click.echo(
        f"false cell incidents: {s['cell_false']} ({s['cell_false_per_cell_day']} per cell-day)"
    )
    if s["cell_open_share"] is not None:
        click.echo(
            f"true cell incidents' span with an incident open in their cell: "
            f"{s['cell_open_share']:.3f} on average"
        )
    for kind, k in s["cell_by_kind"].items():
        click.echo(
            f"  {kind:<15} {k['incidents']:>3} incidents  recall {k['recall']:.3f}  "
            f"median delay {k['median_delay_s']} s  open for {k['open_share']} of it"
        )
    if as_json:
        click.echo(json.dumps(s))

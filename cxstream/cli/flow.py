"""``cxstream run`` and ``cxstream check-config``: the production dataflow and its settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cxstream.cli.app import config_option, main, settings_from
from cxstream.errors import ConfigError, CxStreamError
from cxstream.settings import load_settings


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
    """Run the production dataflow against the configured Kafka and Redis, with the dashboard
    and the metrics endpoint; with a recovery directory it resumes after a crash.

    Example: cxstream run --config config/cxstream.yaml --recovery-dir /var/lib/cxstream"""
    from cxstream.flows.run import run_flow

    overrides = {"flow": {"recovery_dir": str(recovery_dir)}} if recovery_dir else None
    settings = settings_from(config, overrides)
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


@main.command("check-config")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_config(config: Path) -> None:
    """Validate a settings file: print every bad key and exit 2, or print the effective settings.

    Example: cxstream check-config config/cxstream.yaml"""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2))
    click.echo(f"{config}: OK", err=True)


@main.command("dashboard-user")
@click.option(
    "--file",
    "users_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The users file (dashboard.users_file); created if missing.",
)
@click.option("--name", required=True, help="The user's name (letters, digits, . _ @ -).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "care", "operator"]),
    help="viewer: overview and incidents; care: also customer pages; operator: also "
    "acknowledge and resolve.",
)
@click.password_option(help="The password (asked twice when not given; or CXSTREAM_PASSWORD).",
                       envvar="CXSTREAM_PASSWORD")  # fmt: skip
def dashboard_user(users_file: Path, name: str, role: str, password: str) -> None:
    """Add a dashboard user, or replace one, with a role and a salted scrypt hash of their
    password (the password itself is never stored). The file is written readable by its owner
    only; point dashboard.users_file at it.

    Example: cxstream dashboard-user --file users.yaml --name olga --role operator"""
    from cxstream.dashboard.auth import Users

    if len(password) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="--password")
    try:
        Users.save(users_file, name, role, password)  # type: ignore[arg-type]
    except (ConfigError, ValueError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(f"{users_file}: {name} ({role})")

"""``cxstream redeliver``: deliver dead-lettered actions again, with their own webhook-id."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
import orjson
import redis

from cxstream.cli.app import config_option, json_option, main, settings_from
from cxstream.errors import CxStreamError


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{value!r} is not an ISO 8601 time (e.g. 2026-12-04T10:00:00+00:00)"
        raise click.BadParameter(msg, param_hint=name) from None
    if at.tzinfo is None:
        msg = f"{value!r} has no time zone (add +00:00 or Z)"
        raise click.BadParameter(msg, param_hint=name)
    return at


@main.command()
@config_option
@click.option(
    "--id", "ids", multiple=True, help="An action id to deliver again (repeatable; default: all)."
)
@click.option("--since", help="Only actions dead-lettered at or after this time (ISO 8601).")
@click.option("--until", help="Only actions dead-lettered at or before this time (ISO 8601).")
@click.option("--reason", help="Only actions whose error contains this text (e.g. 503, timeout).")
@click.option("--dry-run", is_flag=True, help="List what would be delivered; send nothing.")
@click.option(
    "--enable",
    is_flag=True,
    help="Enable the endpoint again if a 410 Gone disabled it (deletes its ledger mark).",
)
@json_option
def redeliver(
    config: Path | None,
    ids: tuple[str, ...],
    since: str | None,
    until: str | None,
    reason: str | None,
    dry_run: bool,
    enable: bool,
    as_json: bool,
) -> None:
    """Deliver dead-lettered actions again: read the actions dead-letter topic, keep the
    actions the filters name (by id, time range or reason; every filter given must match), and
    POST each to webhook.url with its original webhook-id, signed as the flow signs. The
    delivery ledger in Redis skips any already delivered, so running it twice contacts nobody
    twice; one that fails again stays in the topic, where the next run finds it. Exits 1 when
    any delivery failed.

    Example: cxstream redeliver --reason 503 --since 2026-12-04T08:00:00Z --json"""
    from cxstream.actions.redeliver import select
    from cxstream.actions.store import RedisClaimStore
    from cxstream.clients import read_topic, redis_client, webhook_sender

    settings = settings_from(config)
    chosen_since, chosen_until = _time(since, "--since"), _time(until, "--until")
    topic = settings.kafka.topics.actions_dead_letters
    try:
        client = redis_client(settings)
        sender = webhook_sender(settings, RedisClaimStore(client), breaker=False)
        selection = select(
            read_topic(settings, topic), ids=ids, since=chosen_since, until=chosen_until,
            reason=reason,
        )  # fmt: skip
    except CxStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    counts = {"delivered": 0, "already_delivered": 0, "failed": 0}
    results = []
    try:
        if enable:
            client.delete(sender.disabled_key)
        if not dry_run and sender.disabled():
            msg = (
                f"{sender.url} is disabled: it answered 410 Gone; --enable to deliver to it again "
                f"(ledger key {sender.disabled_key})"
            )
            raise click.ClickException(msg)
        for letter in selection.letters:
            action = letter.action
            error: str | None = letter.error
            if dry_run:
                outcome = "would_deliver"
            else:
                result = sender.deliver(action)
                outcome = "failed" if result.outcome in ("gone", "unknown") else result.outcome
                error = result.error
                counts[outcome if outcome in counts else "failed"] += 1
            results.append({"action_id": action.action_id, "outcome": outcome, "error": error})
            click.echo(f"{action.action_id}: {outcome}" + (f" ({error})" if error else ""))
    except redis.RedisError as exc:
        msg = f"the delivery ledger (Redis) is unavailable: {exc}; nothing more was sent"
        raise click.ClickException(msg) from exc
    finally:
        sender.close()
    summary = {
        "read": selection.read,
        "invalid": selection.invalid,
        "matched": len(selection.letters),
        **({"dry_run": True} if dry_run else counts),
    }
    click.echo(
        f"{topic}: {selection.read} records ({selection.invalid} unreadable), "
        f"{len(selection.letters)} matched"
        + ("" if dry_run else f"; {counts['delivered']} delivered, "
           f"{counts['already_delivered']} already delivered, {counts['failed']} failed")
    )  # fmt: skip
    if as_json:
        click.echo(orjson.dumps({**summary, "actions": results}).decode())
    if counts["failed"]:
        raise SystemExit(1)

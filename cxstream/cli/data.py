"""``cxstream simulate``, ``cxstream load-customers`` and ``cxstream erase``: data into Kafka and
Redis, and out of them."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import click
import redis

from cxstream.actions.tmf import inputs_text
from cxstream.cli.app import (
    Progress,
    bad_ratio_option,
    cells_option,
    config_option,
    json_option,
    main,
    seed_option,
    settings_from,
    subscribers_option,
    truth_option,
)
from cxstream.errors import CxStreamError, DataError


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
@subscribers_option(1000, minimum=1)
@cells_option(50, minimum=1)
@bad_ratio_option(0.0)
@seed_option(7)
@truth_option("Write the injected incidents (JSON lines) here.")
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
    """Produce a realistic QoS stream with injected incidents to the configured Kafka topic.

    Example: cxstream simulate --config config/cxstream.yaml --duration 600 --truth truth.jsonl
    --profiles customers.csv"""
    from confluent_kafka import Producer

    from cxstream.clients import ensure_topics
    from cxstream.customers import customers_to_csv
    from cxstream.devtools.producer import produce_events
    from cxstream.devtools.simulate import Simulator, plan_incidents
    from cxstream.events import utcnow

    if events is None and duration is None:
        raise click.UsageError("give --events or --duration")
    settings = settings_from(config)
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
    progress = Progress()
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
    """Bulk-load customer context from a CSV file into Redis (1,000 profiles per round trip).

    A row is loaded whole or rejected whole, with its line, every error and the CSV column;
    consent comes only from explicit values in the file (unknown: not granted). Rows merge into
    stored profiles like updates on the customers topic: the file's columns change, each only if
    the row (its updated_at, else now) is not older than what set the stored value.

    Example: cxstream load-customers Telco-Customer-Churn.csv --mapping
    config/mappings/telco_ibm.yaml --rejects rejects.csv"""
    from cxstream.clients import context_client
    from cxstream.context import ContextStore
    from cxstream.csvfile import file_encoding
    from cxstream.customers import iter_customers, load_mapping
    from cxstream.events import CustomerContext, CustomerUpdate

    settings = settings_from(config)
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

    pseudonyms = settings.privacy.pseudonyms()

    def write(profiles: list[CustomerContext]) -> None:
        # merged like an update on the customers topic: the columns the file has, each versioned
        # by the row's updated_at (else now), so a newer update already applied is kept
        if pseudonyms is not None:  # stored under the pseudonym the flow sees (privacy settings)
            profiles = [
                c.model_copy(update={"subscriber_id": pseudonyms(c.subscriber_id)})
                for c in profiles
            ]
        store.merge_many(
            [
                CustomerUpdate(c, frozenset(c.model_fields_set) - {"subscriber_id"}, b"")
                for c in profiles
            ]
        )

    progress = Progress()
    try:
        encoding = file_encoding(csv_file)
    except (OSError, DataError) as exc:
        raise click.ClickException(str(exc)) from exc
    # a byte the encoding does not define (5 of Windows-1252's) stops the load there (rows
    # before it stay loaded) rather than being guessed into a customer's values
    stopped = None
    with csv_file.open(newline="", encoding=encoding) as fh:
        try:
            for item in iter_customers(fh, rules):
                if isinstance(item, CustomerContext):
                    batch.append(item)
                    if len(batch) >= 1000:
                        write(batch)
                        loaded += len(batch)
                        batch.clear()
                        progress(f"loaded {loaded} profiles")
                else:
                    rejected.append(item)
        except UnicodeDecodeError as exc:
            shown = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "cp1252": "Windows-1252"}[encoding]
            stopped = f"{csv_file} is not {shown} text after {loaded + len(batch)} rows ({exc})"
    write(batch)
    loaded += len(batch)
    progress.done()
    click.echo(f"loaded {loaded} customer profiles into Redis; rejected {len(rejected)} rows")
    for line, reason in rejected[:5]:
        click.echo(f"  line {line}: {reason}", err=True)
    if rejects is not None and rejected:
        with rejects.open("w", newline="") as out:  # quoted as CSV: a reason may hold quotes
            csv.writer(out).writerows([("line", "reason"), *rejected])
    if stopped is not None:
        msg = f"{stopped}: save the file as UTF-8 and load it again (loaded rows merge again)"
        raise click.ClickException(msg)
    if rejected and loaded == 0:
        sys.exit(1)


@main.command(
    "erase", short_help="Erase one customer everywhere cxstream keeps them (GDPR art 17)."
)
@click.option(
    "--customer", "subscriber_id", required=True, help="The subscriber id of the customer to erase."
)
@config_option
@json_option
def erase(subscriber_id: str, config: Path | None, as_json: bool) -> None:
    """Erase one customer (GDPR art. 17): remove their profile, experience history, churn
    snapshot, experiment group, cooldowns, caps, delivery-ledger and audit entries from Redis, and
    publish a tombstone on the customers topic, so that a running flow and dashboard forget them
    and a compacted customers topic drops their profile. Safe to run again.

    Example: cxstream erase --customer sub-0000042 --json"""
    import orjson
    from confluent_kafka import KafkaException, Producer

    from cxstream.erasure import Eraser
    from cxstream.events import is_id

    if not is_id(subscriber_id):
        msg = (
            f"--customer {subscriber_id!r} is not a subscriber id (letters, digits, _:@+#=- and "
            "single dots, at most 128 characters)"
        )
        raise click.BadParameter(msg, param_hint="--customer")
    settings = settings_from(config)
    pseudonyms = settings.privacy.pseudonyms()
    # Redis knows the customer by their pseudonym when the inputs are pseudonymised; the
    # customers topic (an input) by their id, as the flow and the dashboard expect its keys
    stored_as = pseudonyms(subscriber_id) if pseudonyms is not None else subscriber_id
    try:
        report = Eraser.for_settings(settings).erase(stored_as)
    except (CxStreamError, redis.RedisError) as exc:
        msg = f"cannot erase from Redis: {exc}"
        raise click.ClickException(msg) from exc
    topic = settings.kafka.topics.customers
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer = Producer(settings.kafka.producer_settings())
        producer.produce(topic, value=None, key=subscriber_id.encode(), on_delivery=delivered)
        left = producer.flush(30)
    except KafkaException as exc:
        errors.append(str(exc))
        left = 1
    if left or errors:
        detail = "; ".join(errors) or "not acknowledged within 30 s"
        msg = (
            f"removed {report.redis_keys_deleted} Redis keys and {report.audit_entries_deleted} "
            f"audit entries, but the tombstone on {topic} was not published ({detail}): a "
            "running flow still holds the customer in memory; run the command again"
        )
        raise click.ClickException(msg)
    result = {
        "customer": subscriber_id,
        "redis_keys_deleted": report.redis_keys_deleted,
        "audit_entries_deleted": report.audit_entries_deleted,
        "tombstones": 1,
    }
    click.echo(
        f"erased {subscriber_id}: {report.redis_keys_deleted} Redis keys, "
        f"{report.audit_entries_deleted} audit entries, {report.members_removed} actions in "
        f"shared keys; a tombstone on {topic}"
    )
    if as_json:
        click.echo(orjson.dumps(result).decode())


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@config_option
@click.option(
    "--to-kafka",
    is_flag=True,
    help="Produce the events to the QoS topic, moved to the present, instead of replaying them "
    "offline.",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="With --to-kafka: 1 = real time, X > 1 = X times faster, 0 = as fast as possible.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="The time zone of the traces' Timestamp column (the phone's local time).",
)
@json_option
def replay(
    paths: tuple[Path, ...],
    config: Path | None,
    to_kafka: bool,
    speed: float,
    timezone: str,
    as_json: bool,
) -> None:
    """Replay real network traces (G-NetTrack Pro CSV exports, such as the UCC 5G dataset's):
    every row becomes a QoS event (subscriber = the trace, cell = its identity in the network;
    the mapping is in docs/integration.md) or a dead letter with its reason. Offline, the events
    go through the flow's own detection and demarcation, one trace at a time, and the alerts,
    degraded minutes and minutes per radio access technology of each trace are reported; with
    --to-kafka they go to the QoS topic for a running flow.

    Example: cxstream replay ../shared/data/ucc_5g_traces/traces --json"""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from cxstream.evaluate.replay import produce_traces, replay_traces
    from cxstream.traces import trace_files

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {timezone!r}"
        raise click.BadParameter(msg, param_hint="--timezone") from exc
    if speed < 0 or 0 < speed < 1:
        raise click.BadParameter("0 (as fast as possible) or at least 1", param_hint="--speed")
    if not trace_files(paths):
        msg = f"no .csv traces under {', '.join(map(str, paths))}"
        raise click.ClickException(msg)
    settings = settings_from(config)
    progress = Progress()
    if to_kafka:
        from confluent_kafka import Producer

        from cxstream.clients import ensure_topics

        try:
            ensure_topics(settings, [settings.kafka.topics.qos])
        except CxStreamError as exc:
            raise click.ClickException(str(exc)) from exc
        produced, dead = produce_traces(
            paths,
            Producer(settings.kafka.producer_settings()),
            settings.kafka.topics.qos,
            speed=speed,
            timezone=timezone,
            on_progress=lambda n: progress(f"produced {n} events"),
        )
        progress.done()
        click.echo(
            f"produced {produced} events to {settings.kafka.topics.qos}; "
            f"{dead} rows could not become events"
        )
        if as_json:
            click.echo(json.dumps({"events": produced, "dead_letters": dead}))
        return
    report = replay_traces(
        paths,
        settings,
        timezone=timezone,
        on_trace=lambda p: progress(f"replaying {p.name}"),
    )
    progress.done()
    s = report.summary()
    for t, result in zip(s["per_trace"], report.traces, strict=True):
        rats = ", ".join(f"{m} {v}" for m, v in t["rat_minutes"].items()) or "none"
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(result.reasons.items()))
        click.echo(
            f"{t['file']}: {t['rows']} rows, {t['events']} events, {t['dead_letters']} dead "
            f"letters{f' ({reasons})' if reasons else ''}; {t['alerts']} "
            f"alert{'' if t['alerts'] == 1 else 's'}, "
            f"{t['degraded_minutes']} degraded minutes; minutes by radio access: {rats}"
        )
        for at, why in zip(t["alert_times"], t["alert_why"], strict=True):
            experience = why.get("experience") or {}
            moved = inputs_text(why)
            click.echo(
                f"  alert at {at}: experience {experience.get('from')} -> "
                f"{experience.get('to')}{f'; {moved}' if moved else ''}"
            )
    rate = round(s["rows"] / report.seconds) if report.seconds else 0
    click.echo(
        f"{s['traces']} traces, {s['rows']} rows: {s['events']} events, {s['dead_letters']} "
        f"dead letters, {s['alerts']} alerts, {s['degraded_minutes']} degraded minutes "
        f"({rate} rows/s)"
    )
    if as_json:
        click.echo(json.dumps(s))

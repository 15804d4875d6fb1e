"""The ``de-assets`` command: simulate traffic, run the main job, start the Dagster UI."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import uuid
import warnings
from collections.abc import Sequence
from contextlib import ExitStack

import dagster as dg

from de_assets.settings import PRODUCTION, Settings, SettingsError, load_settings

DEFAULT_DAYS = 3


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _days_range(args: argparse.Namespace, today: dt.date) -> list[dt.date]:
    """The requested days: ``--days`` days from ``--start``, or ending yesterday (UTC) by default."""
    if args.days < 1:
        raise SettingsError("--days must be at least 1")
    start = args.start or today - dt.timedelta(days=args.days)
    days = [start + dt.timedelta(days=i) for i in range(args.days)]
    if days[-1] >= today:
        raise SettingsError(
            f"the last day requested ({days[-1]}) is not over yet (today is {today} UTC); simulate complete days only"
        )
    return days


def _add_traffic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=_date, help="first day (UTC); default: --days days ending yesterday")
    parser.add_argument(
        "--days", type=_positive, default=DEFAULT_DAYS, help=f"number of days (default {DEFAULT_DAYS})"
    )
    parser.add_argument("--orders-per-day", type=_positive, help="default 5,000")
    parser.add_argument("--events-per-day", type=_positive, help="default 20,000")
    parser.add_argument("--seed", type=_positive, help="default 42: same seed and day, same data")
    parser.add_argument(
        "--defect-scale", type=_scale, help="multiplies every defect rate (default 1; 0: clean)"
    )
    parser.add_argument("--schema-drift-day", type=_date, help="clickstream schema drifts from this day on")


def _simulation_config(args: argparse.Namespace) -> dict[str, object]:
    """The traffic options the user gave; the rest keep SimulationResource's defaults."""
    given = {
        "seed": args.seed,
        "orders_per_day": args.orders_per_day,
        "events_per_day": args.events_per_day,
        "defect_scale": args.defect_scale,
        "schema_drift_day": args.schema_drift_day.isoformat() if args.schema_drift_day else None,
    }
    return {name: value for name, value in given.items() if value is not None}


def _simulate(args: argparse.Namespace, settings: Settings, today: dt.date) -> int:
    from de_assets.generation.landing import LandingFolder
    from de_assets.generation.resources import SimulationResource
    from de_assets.generation.simulator import simulate_clickstream_day, simulate_shop_day

    params = SimulationResource(**_simulation_config(args)).params()
    landing = LandingFolder(settings.landing_dir.value)
    for day in _days_range(args, today):
        shop = simulate_shop_day(settings.source_db_url.value, settings.ledger_dir.value, day, params)
        clicks = simulate_clickstream_day(landing, settings.ledger_dir.value, day, params, shop.customer_pool)
        print(
            f"{day}: {shop.customers_created} customers, {shop.orders_created} orders, "
            f"{shop.orders_updated} order updates, {shop.orders_deleted + shop.customers_deleted} hard deletes, "
            f"{clicks.lines} clickstream lines in {len(clicks.files)} files, "
            f"{shop.defects + clicks.defects} defects in the ledger"
        )
    return 0


def _check_days(days: list[dt.date], settings: Settings) -> None:
    if days[0] < settings.start_date:
        raise SettingsError(
            f"{days[0]} is before the first partition ({settings.start_date}); set DE_ASSETS_START_DATE earlier"
        )


def _execute(
    job_name: str, days: list[dt.date], settings: Settings, run_config: dict[str, object], verbose: bool
) -> int:
    """Run a job over the days as one run on the home's instance; print its summary (``verbose``: the
    run's INFO log and every partition's figures as well).

    The run executes as runs launched by the daemon or the UI do (``dg.execute_job`` on a reconstructable
    job, in-process executor): a step's output is stored by its IO manager and not kept in memory
    (downstream steps read it back), where ``execute_in_process`` keeps every output until the run
    ends. The job is
    rebuilt in this process from the environment, so settings changed in ``os.environ`` (a rotated
    key) apply; only the job's name is recorded as its origin, never a setting.
    """
    from de_assets.orchestration.instance import local_instance
    from de_assets.orchestration.partitions import range_tags
    from de_assets.orchestration.run_summary import format_problems, format_summary, summarise

    _check_days(days, settings)
    # A fresh key per call: Dagster caches the last job it rebuilt, which may come from another
    # environment (an earlier call in this process).
    key = uuid.uuid4().hex
    job = dg.build_reconstructable_job("de_assets.cli", _job_from_environment.__name__, (job_name, key))
    with (
        local_instance(settings.home, production=settings.profile == PRODUCTION) as instance,
        dg.execute_job(
            job,
            instance=instance,
            run_config={
                **run_config,
                # Step-by-step events are for the UI; the terminal gets warnings and the summary.
                "loggers": {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}},
            },
            tags=range_tags(days[0].isoformat(), days[-1].isoformat()),
        ) as result,
    ):
        if verbose:
            for event in result.get_asset_materialization_events():
                materialization = event.step_materialization_data.materialization
                figures = ", ".join(
                    f"{name.removeprefix('dagster/')}={value.value}"
                    for name, value in materialization.metadata.items()
                    if isinstance(value.value, int) and not isinstance(value.value, bool) and name != "seed"
                )
                print(
                    f"  {materialization.partition} {materialization.asset_key.to_user_string()}: {figures}"
                )
        summary = summarise(job_name, days[0].isoformat(), days[-1].isoformat(), result)
    print(*format_summary(summary), sep="\n")
    for line in format_problems(summary):
        print(line, file=sys.stderr)
    return 0 if summary.success else 1


def _job_from_environment(job_name: str, key: str) -> dg.JobDefinition:
    """The reconstructable job of :func:`_execute`: the Definitions built from the current environment
    (``key`` only tells the calls apart)."""
    from de_assets.definitions import build_definitions

    return build_definitions(load_settings()).resolve_job_def(job_name)


def _run(args: argparse.Namespace, settings: Settings, today: dt.date) -> int:
    from de_assets.definitions import MAIN_JOB, REPLAY_JOB
    from de_assets.orchestration.run_summary import output_locations

    days = _days_range(args, today)
    config = {"resources": {"simulation": {"config": _simulation_config(args)}}}
    status = _execute(MAIN_JOB, days, settings, config, args.verbose)
    # Events delivered on the first days may have happened up to late_days earlier: rebuild those
    # earlier partitions from the raw zone so that late events reach the day they happened.
    first_late = max(settings.start_date, days[0] - dt.timedelta(days=settings.late_days))
    late = [first_late + dt.timedelta(days=i) for i in range((days[0] - first_late).days)]
    if status == 0 and late:
        status = _execute(REPLAY_JOB, late, settings, {}, args.verbose)
    print("outputs:", *output_locations(settings), "see it all in the Dagster UI: `de-assets dev`", sep="\n")
    return status


def _replay(args: argparse.Namespace, settings: Settings, today: dt.date) -> int:
    from de_assets.definitions import REPLAY_JOB

    return _execute(REPLAY_JOB, _days_range(args, today), settings, {}, args.verbose)


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase one customer everywhere, outside Dagster's run history (which would keep the id)."""
    from de_assets.security.erasure import forget_customer
    from de_assets.security.resources import PiiKeyResource
    from de_assets.serving.reverse_etl import segments_writer, shop_database_exists
    from de_assets.settings import PII_KEY
    from de_assets.storage.cold import ColdStore
    from de_assets.storage.hot import HotStore
    from de_assets.storage.tiering import TieredStore

    hot_url, cold_root = settings.hot_url.value, settings.cold_url.value
    key = PiiKeyResource(
        key=os.environ.get(PII_KEY, ""), key_file=str(settings.pii_key_file), registry_url=hot_url
    ).load()
    cold = ColdStore(cold_root)
    with ExitStack() as stack:
        shop = settings.segments_db_url.value
        segments = stack.enter_context(segments_writer(shop)) if shop_database_exists(shop) else None
        record = forget_customer(
            args.customer_id,
            key=key,
            hot=TieredStore(HotStore(hot_url), cold),
            cold=cold,
            segments=segments,
            now=dt.datetime.now(dt.UTC),
        )
    for item in record.erased:
        print(f"  {item.asset} {item.partition} ({item.tier}): {item.rows} rows erased")
    print(
        f"customer token {record.customer_token}: {record.rows} rows erased in {len(record.erased)} places; "
        "on the suppression list, so ingestion, replays and backfills will not bring the customer back"
    )
    return 0


NEW_PII_KEY = "DE_ASSETS_NEW_PII_KEY"


def _rotate_pii_key(args: argparse.Namespace, settings: Settings, today: dt.date) -> int:
    """Re-key the pseudonymised data: register the new key, then rebuild every partition with it.

    The new key comes from the environment (never the command line, which other users can see).
    """
    from de_assets.definitions import REPLAY_JOB
    from de_assets.security.erasure import customer_ids_in_sources, rekey
    from de_assets.security.key_registry import rotate
    from de_assets.security.pseudonymise import PiiKey, replace_key_file
    from de_assets.security.resources import PiiKeyResource
    from de_assets.settings import PII_KEY
    from de_assets.storage.cold import ColdStore
    from de_assets.storage.hot import HotStore

    if not os.environ.get(NEW_PII_KEY):
        raise SettingsError(
            f"set {NEW_PII_KEY} to the new key (e.g. `export {NEW_PII_KEY}=$(python3 -c "
            "'import secrets; print(secrets.token_hex(32))')`)"
        )
    new = PiiKey.from_text(os.environ[NEW_PII_KEY])
    old = PiiKeyResource(key=os.environ.get(PII_KEY, ""), key_file=str(settings.pii_key_file)).load()
    rotate(HotStore(settings.hot_url.value), old, new, now=dt.datetime.now(dt.UTC))
    # Forgotten customers must stay suppressed under the new key's tokens.
    held = customer_ids_in_sources(settings.source_db_url.value, settings.landing_dir.value)
    rekeyed, unmatched = rekey(ColdStore(settings.cold_url.value), old, new, held)
    if rekeyed or unmatched:
        print(
            f"suppression list re-keyed: {rekeyed} tokens ({unmatched} whose customer no source holds any more)"
        )
    if settings.pii_key.from_env:
        print(f"registered key {new.fingerprint}; set {PII_KEY} to the new key everywhere the pipeline runs")
    else:
        retired = replace_key_file(settings.pii_key_file, new, retired_suffix=old.fingerprint)
        print(f"registered key {new.fingerprint}; the old key file is kept as {retired}")
    # This process re-keys the data with the new key: every partition, from the raw zone.
    os.environ[PII_KEY] = os.environ[NEW_PII_KEY]
    rekeyed = load_settings(today=today)
    days = [settings.start_date + dt.timedelta(days=n) for n in range((today - settings.start_date).days)]
    return _execute(REPLAY_JOB, days, rekeyed, {}, args.verbose)


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from de_assets.orchestration.instance import prepare_dagster_home

    home = prepare_dagster_home(settings.home, production=settings.profile == PRODUCTION)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    # `python -m dagster` from this interpreter: works without the virtual environment on PATH.
    command = [sys.executable, "-m", "dagster", "dev", "-m", "de_assets.definitions"]
    command += ["-h", args.host, "-p", str(args.port)]
    # Replaces this process, so signals reach dagster directly.
    os.execve(command[0], command, env)
    return 0  # pragma: no cover


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from de_assets.orchestration.executor import run_worker

    run_worker(settings, name=args.name, concurrency=args.concurrency)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="de-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    simulate = commands.add_parser("simulate", help="write days of traffic into the source systems")
    _add_traffic_options(simulate)
    run = commands.add_parser("run", help="run the main job over days (default: the last 3), in this process")
    _add_traffic_options(run)
    replay = commands.add_parser(
        "replay",
        help="rebuild transformation and serving partitions over days from the raw zone alone (sources not read)",
    )
    replay.add_argument("--start", type=_date, help="first day (UTC); default: --days days ending yesterday")
    replay.add_argument(
        "--days", type=_positive, default=DEFAULT_DAYS, help=f"number of days (default {DEFAULT_DAYS})"
    )
    for command in (run, replay):
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also print the run's log and each partition's figures",
        )
    forget = commands.add_parser(
        "forget", help="erase one customer from every tier and keep them out (right to be forgotten)"
    )
    forget.add_argument("customer_id", type=_positive, help="the shop's id of the customer")
    rotate = commands.add_parser(
        "rotate-pii-key",
        help=f"re-key the pseudonymised data with the key in {NEW_PII_KEY} (replays every partition)",
    )
    rotate.add_argument("-v", "--verbose", action="store_true", help="also print the replay's log")
    dev = commands.add_parser(
        "dev", help="start the Dagster UI and daemon with the project's instance config"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=_positive, default=3000)
    worker = commands.add_parser(
        "worker", help="run steps of the production profile's runs on this machine (a Celery worker)"
    )
    worker.add_argument(
        "--name", default="de_assets", help="worker name, unique per machine (default de_assets)"
    )
    # One step at a time by default: a step of a big day holds gigabytes (README, benchmarks).
    worker.add_argument(
        "--concurrency", type=_positive, default=1, help="steps at once (default 1; 0: one per CPU)"
    )
    return parser


# Beta parameters we use on purpose (README, "Warnings you will see"): said once there, not per run.
_KNOWN_BETA_PARAMETERS = r"Parameter `(backfill_policy|allow_nonexistent_upstream_partitions)`"
# The Celery executor (production) registers dagster-celery's step task on a new Celery app for every
# step it sends; Celery 5.7 then warns once per run that the (same) task is registered already.
_CELERY_STEP_TASK_REREGISTERED = r"Task name 'execute_plan' is already registered to a different callable"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=_KNOWN_BETA_PARAMETERS)
    warnings.filterwarnings("ignore", message=_CELERY_STEP_TASK_REREGISTERED)
    today = dt.datetime.now(dt.UTC).date()
    try:
        settings = load_settings(today=today)
        if args.command == "simulate":
            return _simulate(args, settings, today)
        if args.command == "run":
            return _run(args, settings, today)
        if args.command == "replay":
            return _replay(args, settings, today)
        if args.command == "forget":
            return _forget(args, settings)
        if args.command == "rotate-pii-key":
            return _rotate_pii_key(args, settings, today)
        if args.command == "worker":
            return _worker(args, settings)
        return _dev(args, settings)
    except (SettingsError, ValueError) as error:
        print(f"de-assets: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

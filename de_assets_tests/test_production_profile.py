"""The production profile, as a deployment runs it: settings only, on real servers on 127.0.0.1.

One deployment for the module: a PostgreSQL cluster (the shop, the hot tier and the Dagster instance),
an S3-compatible server (moto: the landing folder and the cold tier in a bucket), a Redis broker with a
password and two `de-assets worker` processes (Celery). `de-assets run` runs the
lifecycle for three days with DE_ASSETS_PROFILE=production. The same command on the embedded default
(same seed, key and days) is the reference: every table must hold the same rows, apart from the
columns that record when the pipeline itself ran. The instance limits the ``hot_tier`` pool to one
step, to show that pools hold across workers.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.definitions import MAIN_JOB, build_definitions
from de_assets.orchestration.executor import CELERY_BROKER_URL
from de_assets.orchestration.instance import prepare_dagster_home
from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.security.redaction import redact_sqlalchemy_url
from de_assets.settings import load_settings
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets_tests.servers.celery import celery_workers
from de_assets_tests.servers.redis import RedisServer, running_redis
from de_assets_tests.servers.s3 import Bucket, aws_environment, create_bucket

DAYS = 3
TRAFFIC = ["--orders-per-day", "300", "--events-per-day", "1500"]
PII_KEY = "5" * 64
# The databases' password (the test cluster trusts loopback, but every URL carries it, with characters
# that must be encoded on the way to libpq, psycopg 3, psycopg2 and ADBC).
DB_PASSWORD = "pg s3cret+/@x"
WORKERS = ("w1", "w2")
# When the pipeline ran, not what it computed: these differ between any two runs.
RUN_TIME_COLUMNS = {"captured_at", "processed_at", "ingested_at", "detected_at"}
HOT_TABLES = [
    ("transformation", "orders"),
    ("transformation", "customers"),
    ("transformation", "events"),
    ("transformation", "sessions"),
    ("transformation", "quarantine"),
    ("serving", "daily_kpis"),
    ("serving", "customer_features"),
]
CELERY_WORKER = "Celery worker"  # dagster-celery's engine-event metadata: the worker that ran a step


@dataclass
class Deployment:
    env: dict[str, str]
    bucket: Bucket
    home: Path
    run: subprocess.CompletedProcess[str]
    events: list[dg.EventLogEntry]  # of the main job's run
    worker_by_process: dict[str, str]  # step -> worker whose process group started it
    embedded_home: Path
    embedded_run: subprocess.CompletedProcess[str]
    days: list[str]


def run_cli(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "de_assets.cli", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def environment(home: Path, **settings: str) -> dict[str, str]:
    """What every process of a deployment sees: the machine's environment without our settings, plus these."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DE_ASSETS_", "DAGSTER_"))}
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
    return {
        **clean,
        "DE_ASSETS_HOME": str(home),
        "DE_ASSETS_PII_KEY": PII_KEY,
        "DE_ASSETS_START_DATE": start.isoformat(),
        **settings,
    }


def main_job_events(dagster_home: Path, env: dict[str, str]) -> list[dg.EventLogEntry]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DE_ASSETS_INSTANCE_DB_URL", env["DE_ASSETS_INSTANCE_DB_URL"])
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            (record,) = instance.get_run_records(dg.RunsFilter(job_name=MAIN_JOB))
            records = instance.get_records_for_run(record.dagster_run.run_id, limit=100_000).records
    return [r.event_log_entry for r in records if r.event_log_entry.dagster_event is not None]


def of_type(events: list[dg.EventLogEntry], kind: dg.DagsterEventType) -> dict[str, dg.EventLogEntry]:
    return {e.dagster_event.step_key: e for e in events if e.dagster_event.event_type == kind}


def worker_by_process_group(
    events: list[dg.EventLogEntry], workers: dict[str, subprocess.Popen]
) -> dict[str, str]:
    """Which worker's processes (its prefork children share its process group) started each step."""
    name_of_group = {process.pid: name for name, process in workers.items()}

    def worker(pid: int | None) -> str:
        try:
            return name_of_group.get(os.getpgid(pid or 0), f"pid {pid}")
        except ProcessLookupError:  # gone already, so not a worker's (their processes are alive)
            return f"pid {pid}"

    started = of_type(events, dg.DagsterEventType.STEP_START)
    return {step: worker(e.dagster_event.pid) for step, e in started.items()}


def worker_by_report(events: list[dg.EventLogEntry]) -> dict[str, str]:
    """Which worker ran each step, as dagster-celery reports it (``name@host``)."""
    suffix = f"@{socket.gethostname()}"
    return {
        e.dagster_event.step_key: e.dagster_event.engine_event_data.metadata[
            CELERY_WORKER
        ].value.removesuffix(suffix)
        for e in events
        if e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and CELERY_WORKER in e.dagster_event.engine_event_data.metadata
    }


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, postgres_server, redis_server, s3_endpoint) -> Deployment:
    root = tmp_path_factory.mktemp("production")
    home, logs = root / "home", root / "logs"
    logs.mkdir()
    bucket = create_bucket(s3_endpoint)

    def database(prefix: str, driver: str = "psycopg") -> str:
        url = sa.make_url(postgres_server.create_database(prefix)).set(
            drivername=f"postgresql+{driver}", password=DB_PASSWORD
        )
        return url.render_as_string(hide_password=False)

    env = environment(
        home,
        **aws_environment(s3_endpoint, root),
        DE_ASSETS_PROFILE="production",
        DE_ASSETS_SOURCE_DB_URL=database("shop"),
        DE_ASSETS_HOT_URL=database("warehouse"),
        # dagster-postgres speaks psycopg2 (its NOTIFY fails on psycopg 3, SQLAlchemy 2.1's default).
        DE_ASSETS_INSTANCE_DB_URL=database("dagster", driver="psycopg2"),
        DE_ASSETS_LANDING_DIR=bucket.url("landing"),
        DE_ASSETS_COLD_URL=bucket.url("cold"),
        **{CELERY_BROKER_URL: redis_server.url()},
    )
    # The instance `de-assets run` will use, with the hot_tier pool at one step (production's default
    # is 4), set as an operator would.
    dagster_home = prepare_dagster_home(home, environ={}, production=True)
    limit = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "instance",
            "concurrency",
            "set",
            HOT_TIER_POOL,
            "1",
        ],
        env={**env, "DAGSTER_HOME": str(dagster_home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert limit.returncode == 0, limit.stderr
    first_day = dt.datetime.now(dt.UTC).date()
    with celery_workers(env, logs, WORKERS) as workers:
        run = run_cli(env, root, "run", "--days", str(DAYS), *TRAFFIC)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        events = main_job_events(dagster_home, env)
        # While the workers live: which worker's process started each step.
        by_process = worker_by_process_group(events, workers)

    embedded_home = root / "embedded"
    embedded_run = run_cli(environment(embedded_home), root, "run", "--days", str(DAYS), *TRAFFIC)
    if dt.datetime.now(dt.UTC).date() != first_day:
        pytest.skip("the UTC day changed between the two runs: they simulated different days")
    return Deployment(
        env=env,
        bucket=bucket,
        home=home,
        run=run,
        events=events,
        worker_by_process=by_process,
        embedded_home=embedded_home,
        embedded_run=embedded_run,
        days=[(first_day - dt.timedelta(days=n)).isoformat() for n in range(DAYS, 0, -1)],
    )


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=sorted(RUN_TIME_COLUMNS & set(frame.columns))).reset_index(drop=True)


def segments(url: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            statement = "SELECT customer_id, segment, computed_for_day FROM customer_segments ORDER BY 1"
            return [tuple(r) for r in conn.exec_driver_sql(statement)]
    finally:
        engine.dispose()


def test_the_run_succeeds_and_says_where_its_outputs_are(deployment):
    assert f"main_job over {deployment.days[0]}..{deployment.days[-1]} succeeded" in deployment.run.stdout
    assert "replay_job over" in deployment.run.stdout
    assert redact_sqlalchemy_url(deployment.env["DE_ASSETS_HOT_URL"]) in deployment.run.stdout
    assert "Warning" not in deployment.run.stderr, deployment.run.stderr


def test_every_table_equals_the_embedded_run(deployment):
    assert deployment.embedded_run.returncode == 0, deployment.embedded_run.stderr[-3000:]
    on_postgres = HotStore(deployment.env["DE_ASSETS_HOT_URL"])
    embedded = HotStore(f"duckdb:///{deployment.embedded_home / 'hot' / 'warehouse.duckdb'}")
    for stage, name in HOT_TABLES:
        table = TableRef(stage, name, partition_field="day")
        expected = comparable(embedded.read(table, deployment.days))
        assert len(expected) > 0, f"{stage}/{name} is empty: nothing was compared"
        actual = comparable(on_postgres.read(table, deployment.days))
        pd.testing.assert_frame_equal(actual, expected, obj=f"{stage}/{name}")
    shop_segments = segments(deployment.env["DE_ASSETS_SOURCE_DB_URL"])
    assert shop_segments, "reverse ETL wrote no segments into the shop on PostgreSQL"
    assert shop_segments == segments(f"sqlite:///{deployment.embedded_home / 'source' / 'shop.sqlite'}")


def test_the_run_history_is_in_postgresql(deployment):
    engine = sa.create_engine(deployment.env["DE_ASSETS_INSTANCE_DB_URL"], poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        statuses = [status for (status,) in conn.exec_driver_sql("SELECT status FROM runs")]
    engine.dispose()
    assert statuses == ["SUCCESS", "SUCCESS"]  # main_job and the replay of the days before
    assert not list(deployment.home.rglob("*.db"))


def test_every_step_ran_on_a_worker_and_both_workers_took_part(deployment):
    assert deployment.worker_by_process == worker_by_report(deployment.events)
    assert set(deployment.worker_by_process.values()) == set(WORKERS)


def test_the_hot_tier_pool_holds_across_workers(deployment):
    job = build_definitions(load_settings(deployment.env)).resolve_job_def(MAIN_JOB)
    hot_steps = {node.name for node in job.graph.nodes if node.definition.pool == HOT_TIER_POOL}
    started = of_type(deployment.events, dg.DagsterEventType.STEP_START)
    succeeded = of_type(deployment.events, dg.DagsterEventType.STEP_SUCCESS)
    spans = sorted((started[s].timestamp, succeeded[s].timestamp) for s in hot_steps & set(started))
    assert len(spans) >= 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))


def test_no_secret_reaches_an_output_a_file_or_the_run_history(deployment, redis_server):
    secrets = [
        redis_server.password,
        PII_KEY,
        DB_PASSWORD,
        quote(DB_PASSWORD, safe=""),
        quote_plus(DB_PASSWORD),
    ]
    for secret in secrets:
        assert secret not in deployment.run.stdout + deployment.run.stderr
    stored = [p for p in deployment.home.parent.rglob("*") if p.is_file()]
    assert not [p for p in stored if any(s.encode() in p.read_bytes() for s in secrets)]
    # What the UI shows: every run's record and every event of the instance.
    engine = sa.create_engine(deployment.env["DE_ASSETS_INSTANCE_DB_URL"], poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        statement = "SELECT run_body FROM runs UNION ALL SELECT event FROM event_logs"
        history = [text for (text,) in conn.exec_driver_sql(statement)]
    engine.dispose()
    assert len(history) > 100
    assert not [text for text in history if any(secret in text for secret in secrets)]


def test_landing_and_cold_tier_are_in_the_bucket(deployment):
    import s3fs

    store = s3fs.S3FileSystem(
        skip_instance_cache=True,
        endpoint_url=deployment.bucket.endpoint,
        key=deployment.env["AWS_ACCESS_KEY_ID"],
        secret=deployment.env["AWS_SECRET_ACCESS_KEY"],
    )
    landed = store.ls(deployment.bucket.url("landing"))
    assert len(landed) >= DAYS  # several clickstream batches a day
    for day in deployment.days:
        for asset in ("raw_orders", "raw_customers", "raw_events"):
            assert store.ls(deployment.bucket.url(f"cold/ingestion/{asset}/day={day}")), (asset, day)
    # Nothing of the tiers fell back to files under the home.
    assert not (deployment.home / "cold").exists()
    assert not (deployment.home / "landing").exists()

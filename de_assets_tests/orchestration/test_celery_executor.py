"""The production profile's runs executed by real Celery workers on a real Redis broker.

Two `de-assets worker` processes (w1, w2) and `de-assets run` share a temporary home (the embedded
tiers and the Dagster instance stand in for the shared PostgreSQL and object store) and the same
settings. The run must succeed with every step executed by a worker process, on both workers, with
the ``hot_tier`` pool still admitting one step at a time, and the broker's password must appear in no
output and no file.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from de_assets.definitions import MAIN_JOB, build_definitions
from de_assets.orchestration.executor import CELERY_BROKER_URL
from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.settings import load_settings
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import EVENTS, ORDERS, SESSIONS
from de_assets_tests.servers.processes import stop_process_group
from de_assets_tests.servers.redis import RedisServer, running_redis

WORKERS = ("w1", "w2")
READY_SECONDS = 60
RUN_SECONDS = 180
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
TRAFFIC = ["--orders-per-day", "200", "--events-per-day", "600"]
CELERY_WORKER = "Celery worker"  # dagster-celery's engine-event metadata: the worker that ran a step


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def _environment(home: Path, broker_url: str) -> dict[str, str]:
    """What every process of the deployment sees: the same settings (tiers, key, broker)."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("DE_ASSETS_")}
    env.update(
        {
            "DE_ASSETS_HOME": str(home),
            "DE_ASSETS_PROFILE": "production",
            "DE_ASSETS_PII_KEY": "5e" * 32,
            "DE_ASSETS_START_DATE": DAY.isoformat(),
            CELERY_BROKER_URL: broker_url,
        }
    )
    return env


@contextmanager
def celery_workers(env: Mapping[str, str], logs: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """One `de-assets worker` per name, each in its own process group, ready when this yields."""
    cli = Path(sys.executable).with_name("de-assets")
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in WORKERS:
            with (logs / f"{name}.log").open("wb") as log:
                workers[name] = subprocess.Popen(
                    [str(cli), "worker", "--name", name, "--concurrency", "1"],
                    env=dict(env),
                    cwd=logs,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + READY_SECONDS
        for name, process in workers.items():
            log = logs / f"{name}.log"
            while f"{name}@{socket.gethostname()} ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker {name} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.2)
        yield workers
    finally:
        for process in workers.values():
            stop_process_group(process, signal.SIGTERM)  # Celery's warm shutdown


def _step_events(instance: dg.DagsterInstance, job_name: str) -> list[dg.EventLogEntry]:
    """The Dagster events of the job's one run, with the time each was stored."""
    (record,) = instance.get_run_records(dg.RunsFilter(job_name=job_name))
    records = instance.get_records_for_run(record.dagster_run.run_id, limit=100_000).records
    return [r.event_log_entry for r in records if r.event_log_entry.dagster_event is not None]


def _of_type(events: list[dg.EventLogEntry], kind: dg.DagsterEventType) -> dict[str, dg.EventLogEntry]:
    return {e.dagster_event.step_key: e for e in events if e.dagster_event.event_type == kind}


def _worker_by_process_group(
    events: list[dg.EventLogEntry], workers: dict[str, subprocess.Popen]
) -> dict[str, str]:
    """Which worker's processes (its prefork children share its process group) started each step."""
    name_of_group = {process.pid: name for name, process in workers.items()}

    def worker(pid: int | None) -> str:
        try:
            return name_of_group.get(os.getpgid(pid or 0), f"pid {pid}")
        except ProcessLookupError:  # gone already, so not a worker's (their processes are alive)
            return f"pid {pid}"

    started = _of_type(events, dg.DagsterEventType.STEP_START)
    return {step: worker(e.dagster_event.pid) for step, e in started.items()}


def _worker_by_report(events: list[dg.EventLogEntry]) -> dict[str, str]:
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


def _spans(events: list[dg.EventLogEntry], steps: set[str]) -> list[tuple[float, float]]:
    """When each of the steps ran (start, success), in order."""
    started = _of_type(events, dg.DagsterEventType.STEP_START)
    succeeded = _of_type(events, dg.DagsterEventType.STEP_SUCCESS)
    return sorted((started[step].timestamp, succeeded[step].timestamp) for step in steps & set(started))


def test_a_run_of_the_production_profile_executes_its_steps_on_two_celery_workers(tmp_path, redis_server):
    home, logs = tmp_path / "home", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    env = _environment(home, redis_server.url())
    cli = Path(sys.executable).with_name("de-assets")
    with celery_workers(env, logs) as workers:
        run = subprocess.run(
            [str(cli), "run", "--start", DAY.isoformat(), "--days", "1", *TRAFFIC],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
        )
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        assert f"main_job over {DAY}..{DAY} succeeded" in run.stdout
        assert "Warning" not in run.stderr, run.stderr
        with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
            events = _step_events(instance, MAIN_JOB)
        # While the workers live: every step ran in a worker's process, the one Celery reports.
        by_process = _worker_by_process_group(events, workers)
    assert by_process == _worker_by_report(events)
    # Each worker takes the next step when it is idle: both take part.
    assert set(by_process.values()) == set(WORKERS)

    settings = load_settings(env)
    # The pool is honoured across workers: no two hot-tier steps ran at the same time.
    job = build_definitions(settings).resolve_job_def(MAIN_JOB)
    spans = _spans(events, {node.name for node in job.graph.nodes if node.definition.pool == HOT_TIER_POOL})
    assert len(spans) >= 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))

    # The outputs are in the tiers the workers share.
    hot = HotStore(settings.hot_url.value)
    for key in (ORDERS, EVENTS, SESSIONS):
        _states, frame = hot.load(TableRef.for_asset_key(key, "day"), [DAY.isoformat()])
        assert len(frame) > 0, key

    # The broker's password reached no output, log or stored file.
    secret = redis_server.password
    assert secret not in run.stdout + run.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]

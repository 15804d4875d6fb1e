"""The lifecycle through the real server: sensors react to new data, a backfill runs over GraphQL.

Starts `de-assets dev` (webserver, daemon, code server) on 127.0.0.1 with a temporary home, lets the
simulator deliver two days of shop rows and clickstream files, waits for the sensors' ingestion runs
and the transformation runs that follow them, launches an asset backfill through
`launchPartitionBackfill`, and checks the outputs in both tiers. Many runs start at once here (one
per raw partition and table, then their transformations): none may fail on the embedded hot tier.
"""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from de_assets.ingestion.assets import RAW_EVENTS, RAW_ORDERS
from de_assets.settings import load_settings
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import EVENTS, ORDERS, SESSIONS

from .dev_server import DevServer, dev_server

WAIT_SECONDS = 240
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
RUNS = "{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } } }"
LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs { runId status } }
  }
}"""


def _runs(server: DevServer) -> list[dict]:
    return server.graphql(RUNS)["runsOrError"]["results"]


def _wait(condition, what: str, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _settled(server: DevServer, minimum: int) -> list[dict] | None:
    """All runs, once at least ``minimum`` exist and none is queued or running."""
    runs = _runs(server)
    return runs if len(runs) >= minimum and all(r["status"] in TERMINAL for r in runs) else None


def _simulate(home: Path, start: dt.date, days: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DE_ASSETS_") and k != "DAGSTER_HOME"}
    env["DE_ASSETS_HOME"] = str(home)
    cli = Path(sys.executable).with_name("de-assets")
    command = [str(cli), "simulate", "--start", start.isoformat(), "--days", str(days)]
    command += ["--orders-per-day", "200", "--events-per-day", "600", "--seed", "9"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)


def test_sensors_and_a_graphql_backfill_run_the_lifecycle(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=6)
    days = [today - dt.timedelta(days=3), today - dt.timedelta(days=2)]
    env = {"DE_ASSETS_START_DATE": start.isoformat(), "DE_ASSETS_SENSOR_INTERVAL_SECONDS": "2"}
    settings = load_settings({"DE_ASSETS_HOME": str(tmp_path), **env})
    with dev_server(tmp_path, env) as server:
        _simulate(tmp_path, days[0], len(days))  # new rows in the shop, new files in the landing folder
        # Ingestion for each day (files and both tables), then transformation following it.
        runs = _wait(lambda: _settled(server, minimum=3), "the sensors' runs")
        assert all(r["status"] == "SUCCESS" for r in runs), [(r["jobName"], r["status"]) for r in runs]
        sensor_runs = {tag["value"] for r in runs for tag in r["tags"] if tag["key"] == "dagster/sensor_name"}
        assert {"landing_sensor", "source_db_sensor", "propagation_sensor"} <= sensor_runs

        events_before = _hot(settings, EVENTS, days)
        assert set(events_before["event_time"].dt.date) == set(days)

        names = ["orders", "orders_rejected", "customers", "customers_rejected"]
        names += ["events", "events_rejected", "sessions", "quarantine"]
        params = {
            "assetSelection": [{"path": ["transformation", name]} for name in names],
            "partitionNames": [d.isoformat() for d in days],
        }
        launched = server.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = _wait(
            lambda: _finished(server, launched["backfillId"]), "the backfill", timeout=WAIT_SECONDS
        )
        assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, backfill
        assert backfill["runs"]
        assert all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill["runs"]
        _wait(lambda: _settled(server, minimum=len(runs)), "every run to finish")

    # Both tiers hold the days: raw in cold, transformation in hot; the backfill changed nothing.
    cold = ColdStore(settings.cold_url.value)
    raw_lines = _cold(cold, RAW_EVENTS, days)
    landed = sum(p.read_bytes().count(b"\n") for p in (tmp_path / "landing").iterdir())
    assert len(raw_lines) == landed > 0
    assert set(_cold(cold, RAW_ORDERS, days)["window_day"]) == {d.isoformat() for d in days}
    events_after = _hot(settings, EVENTS, days)
    columns = [c for c in events_before.columns if c != "processed_at"]
    pd.testing.assert_frame_equal(
        events_before[columns].sort_values("event_id", ignore_index=True),
        events_after[columns].sort_values("event_id", ignore_index=True),
    )
    assert len(_hot(settings, ORDERS, days)) > 0
    assert len(_hot(settings, SESSIONS, days)) > 0


def _finished(server: DevServer, backfill_id: str) -> dict | None:
    backfill = server.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    done = backfill["status"] not in {"REQUESTED"} and all(r["status"] in TERMINAL for r in backfill["runs"])
    return backfill if done else None


def _cold(store: ColdStore, key, days) -> pd.DataFrame:
    return store.load(TableRef.for_asset_key(key, "day"), [d.isoformat() for d in days])[1]


def _hot(settings, key, days) -> pd.DataFrame:
    store = HotStore(settings.hot_url.value)
    return store.load(TableRef.for_asset_key(key, "day"), [d.isoformat() for d in days])[1]

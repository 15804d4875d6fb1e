"""The production profile, as a new user would run it: settings only, on real servers on 127.0.0.1.

`de-assets run` runs the whole lifecycle for a few days with DE_ASSETS_PROFILE=production: the shop,
the hot tier and the Dagster instance on a PostgreSQL cluster. The same command on the embedded
default (same seed, key and days) is the reference: every table must hold the same rows, apart from
the columns that record when the pipeline itself ran.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef

DAYS = 3
TRAFFIC = ["--orders-per-day", "300", "--events-per-day", "1500"]
PII_KEY = "5" * 64
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


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DE_ASSETS_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "de_assets.cli", *argv],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def common(home: Path) -> dict[str, str]:
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
    return {
        "DE_ASSETS_HOME": str(home),
        "DE_ASSETS_PII_KEY": PII_KEY,
        "DE_ASSETS_START_DATE": start.isoformat(),
    }


def production(home: Path, postgres_server) -> dict[str, str]:
    return {
        **common(home),
        "DE_ASSETS_PROFILE": "production",
        "DE_ASSETS_SOURCE_DB_URL": postgres_server.create_database("shop"),
        "DE_ASSETS_HOT_URL": postgres_server.create_database("warehouse"),
        "DE_ASSETS_INSTANCE_DB_URL": postgres_server.create_database("dagster").replace(
            "+psycopg:", "+psycopg2:"
        ),
        "DE_ASSETS_LANDING_DIR": str(home / "landing"),
        "DE_ASSETS_COLD_URL": str(home / "cold"),
    }


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=sorted(RUN_TIME_COLUMNS & set(frame.columns))).reset_index(drop=True)


def segments(url: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.exec_driver_sql(
                    "SELECT customer_id, segment, computed_for_day FROM customer_segments ORDER BY customer_id"
                )
            ]
    finally:
        engine.dispose()


def test_the_lifecycle_on_the_production_profile_equals_the_embedded_one(tmp_path, postgres_server):
    prod_env = production(tmp_path / "prod", postgres_server)
    first_day = dt.datetime.now(dt.UTC).date()
    prod = run_cli(prod_env, "run", "--days", str(DAYS), *TRAFFIC)
    assert prod.returncode == 0, prod.stdout[-3000:] + prod.stderr[-3000:]
    assert "main_job over" in prod.stdout
    assert "succeeded" in prod.stdout
    assert prod_env["DE_ASSETS_HOT_URL"].split("@")[1] in prod.stdout  # the summary names the hot tier

    emb_env = common(tmp_path / "embedded")
    emb = run_cli(emb_env, "run", "--days", str(DAYS), *TRAFFIC)
    assert emb.returncode == 0, emb.stdout[-3000:] + emb.stderr[-3000:]
    if dt.datetime.now(dt.UTC).date() != first_day:
        pytest.skip("the UTC day changed between the two runs: they simulated different days")

    days = [(first_day - dt.timedelta(days=n)).isoformat() for n in range(DAYS, 0, -1)]
    on_postgres = HotStore(prod_env["DE_ASSETS_HOT_URL"])
    embedded = HotStore(f"duckdb:///{tmp_path / 'embedded' / 'hot' / 'warehouse.duckdb'}")
    for stage, name in HOT_TABLES:
        table = TableRef(stage, name, partition_field="day")
        expected = comparable(embedded.read(table, days))
        assert len(expected) > 0, f"{stage}/{name} is empty: nothing was compared"
        pd.testing.assert_frame_equal(
            comparable(on_postgres.read(table, days)), expected, obj=f"{stage}/{name}"
        )
    shop_segments = segments(prod_env["DE_ASSETS_SOURCE_DB_URL"])
    assert shop_segments, "reverse ETL wrote no segments into the shop on PostgreSQL"
    assert shop_segments == segments(f"sqlite:///{tmp_path / 'embedded' / 'source' / 'shop.sqlite'}")
    # The run history is in the PostgreSQL instance, not in files of the home.
    instance = sa.create_engine(prod_env["DE_ASSETS_INSTANCE_DB_URL"], poolclass=sa.pool.NullPool)
    with instance.connect() as conn:
        statuses = [s for (s,) in conn.exec_driver_sql("SELECT status FROM runs")]
    instance.dispose()
    assert statuses == ["SUCCESS", "SUCCESS"]  # main_job and the replay of the days before
    assert not list((tmp_path / "prod").rglob("*.db"))

"""No customer e-mail address or name leaves the raw zone.

A whole lifecycle (`de-assets run`: generation through serving, then the replay of the days before)
runs with defects on, at ten times their default rate so that every quarantine holds rows (a null
e-mail rejects a customer whose name is still in the capture), with the clickstream contract
broken on the last day so that the alert sensor has something to write. Then every output outside
the raw zone is read, whatever its format, and searched for every e-mail address and name the shop
ever held: the hot tier (every schema, catalog tables included), the cold tier except the three raw
captures (so the rejected and quarantine tables are searched), the reports, the alerts file, the
segment tables reverse ETL writes into the shop, the Dagster instance (event logs, run storage with
run config and snapshots, compute logs), and anything else a run leaves in the home.
"""

import hashlib
import hmac
import os
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from de_assets.cli import main
from de_assets.settings import HOME, START_DATE
from de_assets_tests.security.alert_tick import tick_alert_sensor
from de_assets_tests.security.stored_text import Texts, found, sqlite_texts, tree_texts

# Values shorter than this are not searched: they could match unrelated text by chance. (The
# simulator's names and addresses are all longer, so nothing is skipped: the first test checks it.)
MIN_CHARS = 6
RAW_ZONE = ("raw_orders", "raw_customers", "raw_events")  # folders of cold/ingestion/; PII by design
# The simulated source systems: not outputs of the pipeline (their PII is the point). The key file
# holds a random key, no PII.
SOURCES = ("source", "landing", "ledger", "secrets")
SEGMENT_TABLES = ("customer_segments", "customer_segments_syncs")
# Fixed days, so that the simulated data (a function of seed and day) is the same on every run: these
# days hold rejected customers.
FIRST_PARTITION = "2026-01-01"
DAYS = ("2026-01-05", "2026-01-06", "2026-01-07")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home after `de-assets run` over three days and one tick of the alert sensor."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as env:
        for variable in [v for v in os.environ if v.startswith("DE_ASSETS_")] + ["DAGSTER_HOME"]:
            env.delenv(variable, raising=False)
        env.setenv(HOME, str(home))
        env.setenv(START_DATE, FIRST_PARTITION)
        argv = ["run", "--start", DAYS[0], "--days", str(len(DAYS)), "--orders-per-day", "100"]
        argv += ["--events-per-day", "400", "--defect-scale", "10", "--schema-drift-day", DAYS[-1]]
        assert main(argv) == 0
        tick_alert_sensor(home)
    return home


def _raw_zone(path: Path) -> bool:
    """Whether ``path`` (relative to the home) is in one of the raw captures."""
    return path.parts[:3] in {("cold", "ingestion", name) for name in RAW_ZONE}


def _outputs(home: Path) -> Texts:
    """Every text outside the raw zone and the sources, plus the segment tables in the shop."""
    yield from tree_texts(
        home, skip=lambda p: _raw_zone(p.relative_to(home)) or p.relative_to(home).parts[0] in SOURCES
    )
    yield from sqlite_texts(home / "source" / "shop.sqlite", "source/shop.sqlite", SEGMENT_TABLES)


def _raw_zone_texts(home: Path) -> Texts:
    for name in RAW_ZONE:
        yield from tree_texts(home / "cold" / "ingestion" / name)


def _pii(home: Path) -> tuple[set[str], int]:
    """Every e-mail address and name the shop holds or the raw zone captured (deleted customers and
    earlier addresses live on only there), as stored and normalised; and how many were too short."""
    with sqlite3.connect(home / "source" / "shop.sqlite") as conn:
        stored = [value for row in conn.execute("SELECT email, full_name FROM customers") for value in row]
    for path in (home / "cold" / "ingestion" / "raw_customers").rglob("*.parquet"):
        captured = pq.read_table(path, columns=["email", "full_name"])
        stored += [value for column in captured.columns for value in column.to_pylist()]
    values = {value for value in stored if value} | {value.strip().lower() for value in stored if value}
    return {v for v in values if len(v) >= MIN_CHARS}, len({v for v in values if len(v) < MIN_CHARS})


def test_the_raw_zone_holds_every_value_searched_for(home):
    pii, too_short = _pii(home)
    assert too_short == 0
    with sqlite3.connect(home / "source" / "shop.sqlite") as conn:
        emails = {email for (email,) in conn.execute("SELECT email FROM customers WHERE email IS NOT NULL")}
    assert len(emails) >= 50
    assert emails <= pii
    in_raw = {value for values in found(pii, _raw_zone_texts(home)).values() for value in values}
    assert in_raw == pii  # the same search finds every one of them where they are allowed


def test_every_kind_of_output_was_read(home):
    """The search below reads what it claims to: each kind of output is there, holds rows, and
    yields values the search finds (customer ids stand in for what must not be found)."""
    texts = dict(_outputs(home))
    with sqlite3.connect(home / "source" / "shop.sqlite") as conn:
        ids = {str(i) for (i,) in conn.execute("SELECT customer_id FROM customers")}
    hits = found(ids, texts.items())
    for where in (
        "hot/warehouse.duckdb:transformation.customers",
        "hot/warehouse.duckdb:serving.customer_features",  # keyed by token: holds no id, no hit expected
        "source/shop.sqlite:customer_segments",
        "source/shop.sqlite:customer_segments_syncs",
    ):
        assert texts[where]
    assert hits["hot/warehouse.duckdb:transformation.customers"]
    assert hits["source/shop.sqlite:customer_segments"]
    assert any(w.startswith("hot/warehouse.duckdb:de_assets_meta.") for w in texts)
    rejected = [w for w in texts if w.startswith("cold/transformation/customers_rejected/")]
    assert any(hits.get(w) for w in rejected)  # rejected customers are there, pointed at by id
    assert any(w.startswith("cold/ingestion/raw_events_rejected/") for w in texts)
    assert not any(_raw_zone(Path(w)) for w in texts)
    assert "data_contract" in texts["alerts.jsonl"]
    assert any(w.startswith("reports/daily_kpis/trend_") for w in texts)
    # The step that made the key logged its fingerprint: the event logs are read, JSON and all.
    secret = bytes.fromhex((home / "secrets" / "pii.key").read_text().strip())
    fingerprint = hmac.new(secret, b"de_assets key fingerprint", hashlib.sha256).hexdigest()[:16]
    event_logs = [
        w for w in texts if w.startswith("dagster_home/history/runs/") and w.endswith(":event_logs")
    ]
    assert len(event_logs) == 3  # the index and both runs (main, replay)
    assert found([fingerprint], [(w, texts[w]) for w in event_logs])
    assert "main_job" in texts["dagster_home/history/runs.db:runs"]


def test_no_pii_value_appears_outside_the_raw_zone(home):
    pii, _ = _pii(home)
    assert found(pii, _outputs(home)) == {}

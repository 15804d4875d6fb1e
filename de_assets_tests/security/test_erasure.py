"""Right to be forgotten: one customer erased from every tier, and kept out of later runs."""

import datetime as dt
import json
import re
import sqlite3

import dagster as dg
import duckdb
import pandas as pd
import pyarrow.parquet as pq

from de_assets.cli import main
from de_assets.definitions import build_definitions
from de_assets.security.erasure import (
    customer_token,
    erasure_log,
    payload_customer_ids,
    suppressed,
    suppression_list,
)
from de_assets.security.jobs import FORGET_JOB
from de_assets.security.pseudonymise import PiiKey
from de_assets.settings import load_settings
from de_assets.storage.cold import ColdStore

TRAFFIC = ["--orders-per-day", "150", "--events-per-day", "600"]


def test_customer_ids_are_found_in_raw_lines_parsable_or_not():
    payload = pd.Series(
        [
            '{"event_id": "a", "customer_id": 42, "page": "/x"}',
            '{"customer_id":"42"}',  # a wrong type still names the person
            '{"event_id": "b", "customer_id": null}',
            '{"customer_id": 420, "broken',  # not JSON, still found
            "not json at all",
        ],
        dtype="str",
    )
    assert payload_customer_ids(payload).tolist() == [42, 42, pd.NA, 420, pd.NA]


def test_suppression_matches_by_token_and_costs_nothing_without_a_list():
    key = PiiKey.from_text("k" * 40)
    ids = pd.Series([1, 2, None, 3], dtype="Int64")
    assert suppressed(ids, frozenset(), key).tolist() == [False] * 4
    tokens = frozenset({customer_token(key, 2)})
    assert suppressed(ids, tokens, key).tolist() == [False, True, False, False]
    other = PiiKey.from_text("o" * 40)
    assert not suppressed(ids, tokens, other).any()  # another key's token is another person


def _shop(home):
    return sqlite3.connect(home / "source" / "shop.sqlite")


def _traces(home, customer_id: int, token: str, order_ids: set[int], pii: set[str]) -> list[str]:
    """Every place outside the sources that still holds the customer."""
    found = []
    id_text = re.compile(rf'"customer_id"\s*:\s*"?{customer_id}\b')

    def scan(where: str, frame: pd.DataFrame) -> None:
        for column in frame.columns:
            values = frame[column]
            if (
                (column == "customer_id" and (values.astype("str") == str(customer_id)).any())
                or (column in ("order_id",) and values.dropna().astype("int64").isin(order_ids).any())
                or (
                    column == "source_key"
                    and values.astype("str").isin({str(customer_id)} | {str(o) for o in order_ids}).any()
                )
            ):
                found.append(f"{where}.{column}")
            elif values.dtype == object or pd.api.types.is_string_dtype(values):
                text = values.dropna().astype("str")
                if text.isin([token]).any() or text.str.contains(id_text).any():
                    found.append(f"{where}.{column}")
                elif any(text.str.contains(re.escape(v)).any() for v in pii):
                    found.append(f"{where}.{column} (PII)")

    for path in sorted((home / "cold").rglob("*.parquet")):
        if path.relative_to(home / "cold").parts[0] == "security":
            continue  # the suppression list and the erasure log hold the token by design
        scan(str(path.relative_to(home)), pq.read_table(path).to_pandas())
    with duckdb.connect(str(home / "hot" / "warehouse.duckdb"), read_only=True) as conn:
        for schema, table in conn.sql(
            "SELECT table_schema, table_name FROM information_schema.tables"
        ).fetchall():
            scan(f"hot:{schema}.{table}", conn.sql(f'SELECT * FROM "{schema}"."{table}"').df())
    with _shop(home) as conn:
        scan("shop.customer_segments", pd.read_sql("SELECT * FROM customer_segments", conn))
    return found


def test_forget_erases_everywhere_and_reingestion_and_backfills_do_not_bring_the_customer_back(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DE_ASSETS_HOME", str(tmp_path))
    for name in (
        "DE_ASSETS_START_DATE",
        "DE_ASSETS_PII_KEY",
        "DE_ASSETS_HOT_URL",
        "DE_ASSETS_SOURCE_DB_URL",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--days", "3", *TRAFFIC]) == 0
    with _shop(tmp_path) as conn:
        (customer_id,) = conn.execute(
            "SELECT customer_id FROM orders GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 1"
        ).fetchone()
        (email,) = conn.execute(
            "SELECT email FROM customers WHERE customer_id = ?", (customer_id,)
        ).fetchone()
        order_ids = {
            o for (o,) in conn.execute("SELECT order_id FROM orders WHERE customer_id = ?", (customer_id,))
        }
        segments_before = conn.execute("SELECT count(*) FROM customer_segments").fetchone()[0]
    key = PiiKey.from_text((tmp_path / "secrets" / "pii.key").read_text())
    token = customer_token(key, customer_id)
    # Names are not unique (another customer may share one): the e-mail address is.
    pii = {email, email.strip().lower()}
    assert _traces(tmp_path, customer_id, token, order_ids, pii)  # the scan does find the customer

    capsys.readouterr()
    assert main(["forget", str(customer_id)]) == 0
    out = capsys.readouterr().out
    assert token in out
    assert _traces(tmp_path, customer_id, token, order_ids, pii) == []
    with _shop(tmp_path) as conn:
        assert conn.execute("SELECT count(*) FROM customer_segments").fetchone()[0] == segments_before - 1
        # The source itself still holds the customer: only our copies are erased.
        assert conn.execute(
            "SELECT count(*) FROM customers WHERE customer_id = ?", (customer_id,)
        ).fetchone()[0]

    # Re-ingestion from the source and the landing files, then a backfill from the raw zone.
    assert main(["run", "--days", "3", *TRAFFIC]) == 0
    assert main(["replay", "--days", "3"]) == 0
    assert _traces(tmp_path, customer_id, token, order_ids, pii) == []

    cold = ColdStore(str(tmp_path / "cold"))
    assert token in suppression_list(cold)
    log = erasure_log(cold)
    assert log["customer_token"].tolist() == [token]
    erased = json.loads(log["erased"].iloc[0])
    assert {item["asset"] for item in erased} >= {
        "ingestion.raw_orders",
        "ingestion.raw_customers",
        "transformation.orders",
        "transformation.customers",
        "serving.customer_features",
    }
    assert int(log["rows_erased"].iloc[0]) == sum(item["rows"] for item in erased) > 0
    assert str(customer_id) not in log.astype("str").to_string()  # keyed by token, never the id


def test_the_forget_job_runs_the_same_erasure_from_dagster(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    settings = load_settings(
        {"DE_ASSETS_HOME": str(tmp_path), "DE_ASSETS_START_DATE": (today - dt.timedelta(days=2)).isoformat()},
        today=today,
    )
    definitions = build_definitions(settings)
    day = (today - dt.timedelta(days=1)).isoformat()
    with dg.DagsterInstance.ephemeral() as instance:
        traffic = {"resources": {"simulation": {"config": {"orders_per_day": 60, "events_per_day": 200}}}}
        assert (
            definitions.resolve_job_def("main_job")
            .execute_in_process(instance=instance, run_config=traffic, partition_key=day)
            .success
        )
        with _shop(tmp_path) as conn:
            (customer_id,) = conn.execute("SELECT customer_id FROM orders LIMIT 1").fetchone()
        result = definitions.resolve_job_def(FORGET_JOB).execute_in_process(
            instance=instance,
            run_config={"ops": {"forget_customer_op": {"config": {"customer_id": customer_id}}}},
        )
    assert result.success
    key = PiiKey.from_text((tmp_path / "secrets" / "pii.key").read_text())
    assert customer_token(key, customer_id) in suppression_list(ColdStore(str(tmp_path / "cold")))
    with duckdb.connect(str(tmp_path / "hot" / "warehouse.duckdb"), read_only=True) as conn:
        left = conn.sql(
            f"SELECT count(*) FROM transformation.orders WHERE customer_id = {customer_id}"
        ).fetchall()
    assert left == [(0,)]

"""The ingestion assets through Dagster, one day at a time as a daily schedule would run them."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.definitions import build_definitions
from de_assets.generation.assets import CLICKSTREAM_LANDING, SHOP_DATABASE
from de_assets.generation.ledger import read_ledger
from de_assets.ingestion.assets import (
    CHANGED_DAYS,
    RAW_CUSTOMERS,
    RAW_EVENTS,
    RAW_EVENTS_REJECTED,
    RAW_ORDERS,
)
from de_assets.settings import HOME, load_settings
from de_assets.storage.cold import ColdStore
from de_assets.storage.tier import TableRef

TODAY = dt.date(2026, 11, 22)
FIRST = dt.date(2026, 11, 10)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(5)]
TRAFFIC = {"orders_per_day": 300, "events_per_day": 500, "seed": 5, "defect_scale": 4.0}


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = load_settings({HOME: str(home), "DE_ASSETS_START_DATE": DAYS[0]}, today=TODAY)
    definitions = build_definitions(settings)
    job = definitions.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()

    def run(day: str, selection: list[dg.AssetKey]) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(
            instance=instance,
            asset_selection=selection,
            partition_key=day,
            run_config={"resources": {"simulation": {"config": TRAFFIC}}},
        )

    first_runs = {}
    for day in DAYS:  # the source changes day by day, and each day is captured after it
        first_runs[day] = run(
            day,
            [SHOP_DATABASE, CLICKSTREAM_LANDING, RAW_ORDERS, RAW_CUSTOMERS, RAW_EVENTS, RAW_EVENTS_REJECTED],
        )
        assert first_runs[day].success
    store = ColdStore(settings.cold_url.value)

    def read(key: dg.AssetKey) -> pd.DataFrame:
        return store.load(TableRef.for_asset_key(key, "day"), DAYS)[1]

    run.first_runs = first_runs
    return settings, run, read


def _source_orders(settings) -> set[int]:
    engine = sa.create_engine(settings.source_db_url.value)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT order_id FROM orders")).scalars())
    finally:
        engine.dispose()


def test_hard_deletes_get_exactly_one_tombstone_even_when_an_old_day_is_re_run(daily):
    settings, run, read = daily
    ledger = read_ledger(settings.ledger_dir.value)
    deleted = ledger[(ledger["defect"] == "hard_delete") & (ledger["table"] == "orders")]
    raw = read(RAW_ORDERS)
    captured = set(raw.loc[raw["op"] == "upsert", "order_id"])
    # Deleted after they were captured: reconciliation must find them.
    expected = {int(k) for k in deleted["key"]} & captured
    assert expected, "the traffic must delete orders that were captured before"
    assert not expected & _source_orders(settings)
    tombstones = raw[raw["op"] == "delete"]
    assert set(tombstones["order_id"]) == expected
    assert not tombstones["order_id"].duplicated().any()
    assert tombstones["created_at"].notna().all()

    # A re-run of the first day sees the later windows' tombstones and records none again.
    assert run(DAYS[0], [RAW_ORDERS]).success
    again = read(RAW_ORDERS)
    assert (again["op"] == "delete").sum() == len(tombstones)
    versions = ["order_id", "updated_at", "op"]
    assert len(again[versions].drop_duplicates()) >= len(raw[versions].drop_duplicates())


def test_re_running_a_day_keeps_each_file_s_ingestion_time(daily):
    _settings, run, read = daily
    before = read(RAW_EVENTS)
    assert run(DAYS[1], [RAW_EVENTS, RAW_EVENTS_REJECTED]).success
    after = read(RAW_EVENTS)
    columns = ["source_file", "line_number", "ingested_at"]
    pd.testing.assert_frame_equal(
        before[columns].sort_values(columns[:2], ignore_index=True),
        after[columns].sort_values(columns[:2], ignore_index=True),
    )


def test_each_capture_records_the_creation_days_its_news_touch(daily):
    _settings, run, read = daily
    raw = read(RAW_ORDERS)
    window = raw[raw["window_day"] == DAYS[2]]
    first = run.first_runs[DAYS[2]]
    recorded = {
        e.asset_key: e.step_materialization_data.materialization.metadata
        for e in first.get_asset_materialization_events()
    }
    expected = sorted(set(window["created_at"].dt.strftime("%Y-%m-%d")))
    assert recorded[RAW_ORDERS][CHANGED_DAYS].value == expected
    assert len(expected) > 1  # the window holds updates of orders created on earlier days
    # A re-run with nothing new at the source touches no creation day.
    again = run(DAYS[2], [RAW_ORDERS]).get_asset_materialization_events()
    assert again[0].step_materialization_data.materialization.metadata[CHANGED_DAYS].value == []

"""The Definitions load, validate, and the main job runs a range of days end to end."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.definitions import MAIN_JOB, build_definitions, defs
from de_assets.generation.assets import CLICKSTREAM_LANDING, SHOP_DATABASE
from de_assets.generation.ledger import ledger_days, read_ledger
from de_assets.orchestration.pools import SOURCE_DB_POOL
from de_assets.settings import HOME, load_settings
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef

TODAY = dt.date(2026, 11, 22)
SMALL = {"orders_per_day": 300, "events_per_day": 1_000, "seed": 3}


def _settings(tmp_path):
    return load_settings({HOME: str(tmp_path), "DE_ASSETS_START_DATE": "2026-11-01"}, today=TODAY)


def test_definitions_load_and_validate(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME, str(tmp_path))
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    keys = set(loaded.resolve_all_asset_keys())
    assert {SHOP_DATABASE, CLICKSTREAM_LANDING} <= keys
    assert loaded.resolve_job_def(MAIN_JOB).partitions_def is not None


def test_partitions_follow_the_configured_start_and_end_yesterday(tmp_path):
    definitions = build_definitions(_settings(tmp_path))
    partitions = definitions.resolve_job_def(MAIN_JOB).partitions_def
    keys = partitions.get_partition_keys(current_time=dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC))
    assert keys[0] == "2026-11-01"
    assert keys[-1] == "2026-11-21"


def test_generation_assets_declare_their_pool_group_and_tier(tmp_path):
    definitions = build_definitions(_settings(tmp_path))
    graph = definitions.resolve_asset_graph()
    shop = graph.get(SHOP_DATABASE)
    assert shop.group_name == "generation"
    assert shop.pools == {SOURCE_DB_POOL}
    assert shop.tags.get("stage") == "generation"
    assert SHOP_DATABASE in graph.get(CLICKSTREAM_LANDING).parent_keys


def _run_range(definitions, instance, start, end):
    return definitions.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance,
        run_config={"resources": {"simulation": {"config": SMALL}}},
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
    )


def _orders(settings):
    engine = sa.create_engine(settings.source_db_url.value)
    try:
        with engine.connect() as conn:
            return pd.read_sql("SELECT * FROM orders ORDER BY order_id", conn)
    finally:
        engine.dispose()


def _stored(settings, definitions, days) -> dict[dg.AssetKey, pd.DataFrame]:
    """Every ingestion, transformation and serving table over ``days``, in a stable order, without
    process times (reverse ETL's segments live in the shop database, not in a tier)."""
    graph = definitions.resolve_asset_graph()
    stores = {"hot": HotStore(settings.hot_url.value), "cold": ColdStore(settings.cold_url.value)}
    tables = {}
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        if (
            node.group_name not in ("ingestion", "transformation", "serving")
            or node.tags["tier"] not in stores
        ):
            continue
        _, frame = stores[node.tags["tier"]].load(TableRef.for_asset_key(key, "day"), days)
        frame = frame.drop(columns=["processed_at", "detected_at"], errors="ignore")
        tables[key] = frame.sort_values(list(frame.columns), ignore_index=True)
    return tables


def test_main_job_over_a_range_records_each_day_and_reruns_idempotently(tmp_path):
    settings = _settings(tmp_path)
    definitions = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run_range(definitions, instance, "2026-11-02", "2026-11-04")
        assert result.success
        by_partition = {}
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            by_partition[(materialization.asset_key, materialization.partition)] = materialization.metadata
        days = ["2026-11-02", "2026-11-03", "2026-11-04"]
        # Every asset of the job (generation through serving) lands each day of the range.
        graph = definitions.resolve_asset_graph()
        lifecycle = {"generation", "ingestion", "transformation", "serving"}
        job_assets = {k for k in graph.materializable_asset_keys if graph.get(k).group_name in lifecycle}
        assert {SHOP_DATABASE, CLICKSTREAM_LANDING} < job_assets
        assert set(by_partition) == {(k, d) for k in job_assets for d in days}
        # Each partition carries its own figures, not the range's totals.
        assert [by_partition[(SHOP_DATABASE, d)]["orders_created"].value for d in days] == [300, 300, 300]
        assert by_partition[(SHOP_DATABASE, days[0])]["orders_updated"].value == 0
        assert by_partition[(SHOP_DATABASE, days[1])]["orders_updated"].value > 0
        first = _orders(settings)
        ledger = read_ledger(settings.ledger_dir.value)
        tables = _stored(settings, definitions, days)
        assert _run_range(definitions, instance, "2026-11-03", "2026-11-03").success
        assert _run_range(definitions, instance, "2026-11-02", "2026-11-04").success
    pd.testing.assert_frame_equal(first, _orders(settings))
    # Re-running a day and the whole range leaves every stored table as it was (no duplicates); only
    # the processing time moves, and raw captures keep their first capture times.
    for key, frame in _stored(settings, definitions, days).items():
        pd.testing.assert_frame_equal(tables[key], frame, obj=key.to_user_string())
    pd.testing.assert_frame_equal(ledger, read_ledger(settings.ledger_dir.value))
    assert [d.isoformat() for d in ledger_days(settings.ledger_dir.value)] == days
    landed = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert {name.split("_")[1] for name in landed} == set(days)
    lines = sum(p.read_bytes().count(b"\n") for p in (tmp_path / "landing").iterdir())
    total = by_partition[(CLICKSTREAM_LANDING, days[0])]["lines"].value
    assert lines == sum(by_partition[(CLICKSTREAM_LANDING, d)]["lines"].value for d in days)
    assert total >= SMALL["events_per_day"]


def test_hot_tier_assets_must_go_through_the_hot_tier_pool():
    from de_assets.orchestration.pools import HOT_TIER_POOL, check_hot_tier_pools

    @dg.asset(io_manager_key="hot", pool=HOT_TIER_POOL)
    def pooled() -> int:
        return 1

    @dg.asset(io_manager_key="hot")
    def unpooled() -> int:
        return 1

    @dg.asset(io_manager_key="cold")
    def cold() -> int:
        return 1

    check_hot_tier_pools([pooled, cold], "hot")
    with pytest.raises(ValueError, match=r"must set pool='hot_tier'.*unpooled"):
        check_hot_tier_pools([pooled, unpooled, cold], "hot")

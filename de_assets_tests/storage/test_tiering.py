"""Hot partitions age into the cold tier and stay readable; raw partitions expire with a reason."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from de_assets.definitions import MAIN_JOB, REPLAY_JOB, build_definitions
from de_assets.orchestration.partitions import range_tags
from de_assets.orchestration.schedules import MAINTENANCE_JOB
from de_assets.settings import HOME, load_settings
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import PartitionState, TableRef
from de_assets.storage.tiering import (
    TieredStore,
    TieringError,
    checksum,
    drop_stale_cold_copies,
    expire,
    move_to_cold,
    tier,
)

TABLE = TableRef("transformation", "things", "day")


def _frame(day: str, n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "thing_id": pd.Series(range(offset, offset + n), dtype="int64"),
            "label": pd.Series([f"{day}-{i}" for i in range(n)], dtype="str"),
            "at": pd.Series(pd.Timestamp(day, tz="UTC"), index=range(n), dtype="datetime64[us, UTC]"),
        }
    )


@pytest.fixture(params=["duckdb", "postgresql"])
def stores(request, tmp_path):
    if request.param == "postgresql":
        hot = HotStore(request.getfixturevalue("postgres_server").create_database())
    else:
        hot = HotStore(f"duckdb:///{tmp_path / 'hot.duckdb'}")
    cold = ColdStore(str(tmp_path / "cold"))
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    hot.write(TABLE, {day: _frame(day, 3, offset=10 * i) for i, day in enumerate(days)})
    return hot, cold, TieredStore(hot, cold), days


def _data_files(tmp_path, day):
    return sorted((tmp_path / "cold" / "transformation" / "things" / f"day={day}").glob("*.parquet"))


def test_checksum_ignores_row_order_and_sees_any_changed_value():
    frame = _frame("2026-11-01", 5)
    assert checksum(frame) == checksum(frame.iloc[::-1].reset_index(drop=True))
    assert checksum(frame) == checksum(frame[["label", "at", "thing_id"]])
    changed = frame.copy()
    changed.loc[3, "label"] = "other"
    assert checksum(changed) != checksum(frame)
    assert checksum(frame.iloc[:4]) != checksum(frame)


def test_a_moved_partition_reads_the_same_from_the_cold_tier(stores, tmp_path):
    hot, cold, tiered, days = stores
    before = tiered.read(TABLE, days)
    moved = tier(hot, cold, [TABLE], before=dt.date(2026, 11, 3))
    assert [(m.partition, m.rows) for m in moved] == [("2026-11-01", 3), ("2026-11-02", 3)]
    assert hot.partitions(TABLE) == {
        "2026-11-01": PartitionState.TIERED,
        "2026-11-02": PartitionState.TIERED,
        "2026-11-03": PartitionState.PRESENT,
    }
    # The hot table no longer holds the rows; one record says where each partition is.
    assert len(hot.read(TABLE, days)) == 3
    pd.testing.assert_frame_equal(tiered.read(TABLE, days), before)
    assert tiered.states(TABLE, days) == dict.fromkeys(days, PartitionState.PRESENT)
    assert tiered.location(TABLE, "2026-11-01").startswith(str(tmp_path / "cold"))
    assert tiered.location(TABLE, "2026-11-03") == hot.location(TABLE, "2026-11-03")
    found = tiered.lookup(TABLE, "thing_id", [1, 11, 21, 99], ["thing_id", "label"])
    assert sorted(found["label"]) == ["2026-11-01-1", "2026-11-02-1", "2026-11-03-1"]
    assert tier(hot, cold, [TABLE], before=dt.date(2026, 11, 3)) == []  # nothing left to move


def test_rewriting_a_tiered_partition_leaves_one_copy_in_the_hot_tier(stores, tmp_path):
    hot, cold, tiered, _ = stores
    move_to_cold(hot, cold, TABLE, "2026-11-01")
    assert _data_files(tmp_path, "2026-11-01")
    fresh = _frame("2026-11-01", 2, offset=500)
    tiered.write(TABLE, {"2026-11-01": fresh})
    assert hot.partitions(TABLE)["2026-11-01"] is PartitionState.PRESENT
    assert _data_files(tmp_path, "2026-11-01") == []
    pd.testing.assert_frame_equal(tiered.read(TABLE, ["2026-11-01"]), fresh)


def test_a_crash_after_a_rewrite_leaves_a_stale_cold_copy_that_nobody_reads_and_the_sweep_deletes(
    stores, tmp_path
):
    hot, cold, tiered, _ = stores
    move_to_cold(hot, cold, TABLE, "2026-11-01")
    fresh = _frame("2026-11-01", 1, offset=900)
    hot.write(TABLE, {"2026-11-01": fresh})  # the rewrite, without the cold clean-up that follows it
    pd.testing.assert_frame_equal(tiered.read(TABLE, ["2026-11-01"]), fresh)
    assert drop_stale_cold_copies(hot, cold, [TABLE]) == [("transformation.things", "2026-11-01")]
    assert _data_files(tmp_path, "2026-11-01") == []


def test_a_cold_copy_that_does_not_match_keeps_the_hot_partition(stores, monkeypatch, tmp_path):
    hot, cold, tiered, _ = stores
    real_read = ColdStore.read

    def corrupt(self, table, keys):
        frame = real_read(self, table, keys)
        frame.loc[0, "label"] = "bit rot"
        return frame

    monkeypatch.setattr(ColdStore, "read", corrupt)
    with pytest.raises(TieringError, match="does not match"):
        move_to_cold(hot, cold, TABLE, "2026-11-01")
    monkeypatch.setattr(ColdStore, "read", real_read)
    assert hot.partitions(TABLE)["2026-11-01"] is PartitionState.PRESENT
    assert _data_files(tmp_path, "2026-11-01") == []
    assert len(tiered.read(TABLE, ["2026-11-01"])) == 3


def test_a_tiered_partition_whose_cold_copy_is_gone_is_an_error_not_an_empty_read(stores, tmp_path):
    hot, cold, tiered, _ = stores
    move_to_cold(hot, cold, TABLE, "2026-11-01")
    for path in _data_files(tmp_path, "2026-11-01"):
        path.unlink()
    with pytest.raises(TieringError, match="no copy"):
        tiered.read(TABLE, ["2026-11-01"])


def test_expired_raw_partitions_are_removed_with_their_reason(tmp_path):
    cold = ColdStore(str(tmp_path / "cold"))
    raw = TableRef("ingestion", "raw_things", "day")
    cold.write(raw, {day: _frame(day, 2) for day in ("2026-08-01", "2026-08-02", "2026-11-01")})
    expired = expire(cold, [raw], before=dt.date(2026, 8, 2), reason="retention: 90 days")
    assert [(e.partition, e.reason) for e in expired] == [("2026-08-01", "retention: 90 days")]
    assert cold.states(raw, ["2026-08-01", "2026-08-02"]) == {
        "2026-08-01": PartitionState.REMOVED,
        "2026-08-02": PartitionState.PRESENT,
    }
    assert expire(cold, [raw], before=dt.date(2026, 8, 2), reason="again") == []


def test_the_lifecycle_keeps_working_after_tiering_and_a_backfill_moves_partitions_back(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    days = [(today - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    settings = load_settings(
        {HOME: str(tmp_path), "DE_ASSETS_START_DATE": days[0], "DE_ASSETS_HOT_DAYS": "1"}, today=today
    )
    definitions = build_definitions(settings)
    traffic = {"resources": {"simulation": {"config": {"orders_per_day": 80, "events_per_day": 300}}}}
    hot, cold = HotStore(settings.hot_url.value), ColdStore(settings.cold_url.value)
    tiered = TieredStore(hot, cold)
    tables = [TableRef("transformation", n, "day") for n in ("orders", "customers", "events", "sessions")]
    tables += [TableRef("serving", n, "day") for n in ("daily_kpis", "customer_features")]
    with dg.DagsterInstance.ephemeral() as instance:

        def run(job: str, first: str, last: str, config: dict | None = None) -> None:
            result = definitions.resolve_job_def(job).execute_in_process(
                instance=instance, run_config=config or {}, tags=range_tags(first, last)
            )
            assert result.success

        run(MAIN_JOB, days[0], days[-1], traffic)
        before = {t: tiered.read(t, days) for t in tables}
        assert definitions.resolve_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance).success
        # Every hot table's two older days moved; yesterday (within DE_ASSETS_HOT_DAYS) stayed.
        for table in tables:
            states = hot.partitions(table)
            assert [states[d] for d in days] == [PartitionState.TIERED] * 2 + [PartitionState.PRESENT]
        # A backfill over the range reads the tiered inputs and writes everything back to the hot tier.
        run(REPLAY_JOB, days[0], days[-1])
        for table in tables:
            assert [hot.partitions(table)[d] for d in days] == [PartitionState.PRESENT] * 3
            assert all(_no_data(cold, table, d) for d in days)
            after = tiered.read(table, days).drop(columns=["processed_at"], errors="ignore")
            expected = before[table].drop(columns=["processed_at"], errors="ignore")
            key = list(after.columns)
            pd.testing.assert_frame_equal(
                after.sort_values(key, ignore_index=True), expected.sort_values(key, ignore_index=True)
            )


def _no_data(cold: ColdStore, table: TableRef, day: str) -> bool:
    return cold.states(table, [day])[day] is not PartitionState.PRESENT


def test_a_column_subset_reads_the_same_values_from_either_tier(stores):
    hot, cold, tiered, days = stores
    whole = tiered.read(TABLE, days)
    move_to_cold(hot, cold, TABLE, "2026-11-01")
    _, subset = tiered.load(TABLE, days, ["at", "thing_id"])
    assert list(subset.columns) == ["at", "thing_id"]
    pd.testing.assert_frame_equal(subset, whole[["at", "thing_id"]])
    _, hot_only = hot.load(TABLE, ["2026-11-02"], ["label"])
    assert hot_only["label"].dtype == whole["label"].dtype
    with pytest.raises(KeyError, match="no column"):
        hot.load(TABLE, ["2026-11-02"], ["nope"])

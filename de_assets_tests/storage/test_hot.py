"""The hot tier: HotStore on DuckDB and SQLite, and HotTierIOManager inside Dagster runs."""

import contextlib
import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.security.identifiers import UnsafeNameError
from de_assets.storage import hot_postgres
from de_assets.storage.hot import HotStore, HotTierIOManager, HotTierLockedError
from de_assets.storage.hot_dialects import UnsupportedTypeError, dialect_for
from de_assets.storage.tier import (
    IncompatibleSchemaError,
    PartitionNotFoundError,
    PartitionRemovedError,
    PartitionState,
    StorageError,
    TableRef,
)
from de_assets_tests.servers.processes import free_port

UNPARTITIONED = TableRef("transformation", "orders")
DAILY = TableRef("ingestion", "events", partition_field="day")
D1, D2, D3 = "2024-01-01", "2024-01-02", "2024-01-03"


@pytest.fixture(params=["duckdb", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # The folder does not exist yet: the store creates it.
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path}/new/hot.duckdb"
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_server").create_database()
    return f"sqlite:///{tmp_path}/new/hot.sqlite"


@pytest.fixture
def store(url: str) -> HotStore:
    return HotStore(url, lock_timeout_seconds=5)


def mixed_frame(offset: int = 0, rows: int = 3) -> pd.DataFrame:
    """Every dtype the round-trip guarantee covers, with nulls where the dtype allows them."""
    i = np.arange(offset, offset + rows)
    return pd.DataFrame(
        {
            "text": pd.Series([f"row {n}" if n % 3 else None for n in i], dtype="str"),
            "count": i.astype("int64") * 10,
            "ratio": np.where(i % 2 == 0, i / 4, np.nan),
            "flag": i % 2 == 0,
            "maybe": pd.array([None if n % 3 == 1 else int(n) for n in i], dtype="Int64"),
            "at": pd.Series(
                pd.Timestamp("2024-01-01 10:00:00.123456", tz="UTC") + pd.to_timedelta(i, unit="h")
            ).where(i % 3 != 2),
            "local": pd.Timestamp("2024-01-01 00:00:00.000001") + pd.to_timedelta(i * 90, unit="s"),
        }
    )


def test_mixed_frame_has_the_promised_dtypes() -> None:
    # Guards the round-trip tests: they only prove something if the frame really has these dtypes.
    dtypes = {name: str(dtype) for name, dtype in mixed_frame().dtypes.items()}
    assert dtypes["text"] == "str"
    assert dtypes["maybe"] == "Int64"
    assert dtypes["at"].endswith(", UTC]")
    assert dtypes["local"].startswith("datetime64[")
    assert [dtypes[c] for c in ("count", "ratio", "flag")] == ["int64", "float64", "bool"]


# -- round trips -----------------------------------------------------------------------------------


def test_unpartitioned_round_trip(store: HotStore) -> None:
    frame = mixed_frame(rows=5)
    stats = store.write(UNPARTITIONED, {None: frame})
    assert stats[None].rows == 5
    assert stats[None].bytes > 0
    pd.testing.assert_frame_equal(store.read(UNPARTITIONED, [None]), frame, check_dtype=True)


def test_other_zones_narrow_types_dates_and_bytes_round_trip(store: HotStore) -> None:
    frame = pd.DataFrame(
        {
            "paris": pd.Series(pd.to_datetime(["2024-03-31 01:30", "2024-03-31 03:30"])).dt.tz_localize(
                "Europe/Paris"
            ),
            "small": np.array([-(2**31), 2**31 - 1], dtype="int32"),
            "single": np.array([0.5, -1.25], dtype="float32"),
            "day": [dt.date(2024, 2, 29), None],
            "blob": [b"\x00\xff", None],
        }
    )
    store.write(UNPARTITIONED, {None: frame})
    back = store.read(UNPARTITIONED, [None])
    pd.testing.assert_frame_equal(back, frame, check_dtype=True)
    assert back["paris"].dt.tz_convert("UTC").dt.hour.tolist() == [0, 1]  # the instants, not wall times


def test_partitioned_single_key_round_trip(store: HotStore) -> None:
    frame = mixed_frame(rows=4)
    store.write(DAILY, {D1: frame})
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), frame, check_dtype=True)


def test_multi_key_read_follows_the_order_of_keys(store: HotStore) -> None:
    first, second, third = mixed_frame(0, 2), mixed_frame(10, 3), mixed_frame(20, 1)
    store.write(DAILY, {D2: second})
    store.write(DAILY, {D1: first, D3: third})
    expected = pd.concat([third, first, second], ignore_index=True)
    pd.testing.assert_frame_equal(store.read(DAILY, [D3, D1, D2]), expected, check_dtype=True)


def test_multi_key_read_keeps_row_order_across_duckdb_row_groups(tmp_path: Path) -> None:
    # Partitions larger than a DuckDB row group (122,880 rows) are scanned in parallel; a multi-key
    # IN planned as a join returned them interleaved. Two int columns keep this frame small in bytes.
    store = HotStore(f"duckdb:///{tmp_path}/hot.duckdb")
    rows = 150_000
    first = pd.DataFrame({"id": np.arange(rows), "day": 1})
    second = pd.DataFrame({"id": np.arange(rows, 2 * rows), "day": 2})
    store.write(DAILY, {D1: first, D2: second})
    back = store.read(DAILY, [D2, D1])
    np.testing.assert_array_equal(back["id"].to_numpy(), np.r_[second["id"], first["id"]])


def test_rewrite_replaces_and_never_duplicates(store: HotStore) -> None:
    store.write(DAILY, {D1: mixed_frame(0, 5), D2: mixed_frame(100, 2)})
    replacement = mixed_frame(50, 3)
    store.write(DAILY, {D1: replacement})
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), replacement)
    assert store.read(DAILY, [D2])["count"].tolist() == [1000, 1010]  # the other partition untouched
    store.write(UNPARTITIONED, {None: mixed_frame(0, 4)})
    store.write(UNPARTITIONED, {None: replacement})
    pd.testing.assert_frame_equal(store.read(UNPARTITIONED, [None]), replacement)


def test_empty_partition_is_present_and_keeps_its_columns(store: HotStore) -> None:
    empty = mixed_frame().iloc[0:0]
    store.write(DAILY, {D1: empty})
    assert store.states(DAILY, [D1]) == {D1: PartitionState.PRESENT}
    back = store.read(DAILY, [D1])
    assert back.empty
    assert list(back.columns) == list(empty.columns)
    assert back.dtypes.astype(str).tolist() == empty.dtypes.astype(str).tolist()


def test_read_of_a_table_never_written_is_empty_without_columns(store: HotStore) -> None:
    back = store.read(DAILY, [D1])
    assert back.empty
    assert list(back.columns) == []


def test_states_present_missing_removed(store: HotStore) -> None:
    store.write(DAILY, {D1: mixed_frame(), D2: mixed_frame()})
    store.remove(DAILY, D2, reason="retention: older than 30 days")
    assert store.states(DAILY, [D1, D2, D3]) == {
        D1: PartitionState.PRESENT,
        D2: PartitionState.REMOVED,
        D3: PartitionState.MISSING,
    }
    assert store.read(DAILY, [D2]).empty
    pd.testing.assert_frame_equal(store.read(DAILY, [D1, D2]), mixed_frame())


def test_remove_unpartitioned_then_write_again_is_present(store: HotStore) -> None:
    store.write(UNPARTITIONED, {None: mixed_frame()})
    store.remove(UNPARTITIONED, None, reason="erasure request 42")
    assert store.states(UNPARTITIONED, [None]) == {None: PartitionState.REMOVED}
    assert len(store.read(UNPARTITIONED, [None])) == 0
    store.write(UNPARTITIONED, {None: mixed_frame(rows=2)})
    assert store.states(UNPARTITIONED, [None]) == {None: PartitionState.PRESENT}
    pd.testing.assert_frame_equal(store.read(UNPARTITIONED, [None]), mixed_frame(rows=2))


def test_write_after_remove_is_present_again(store: HotStore) -> None:
    store.write(DAILY, {D1: mixed_frame()})
    store.remove(DAILY, D1, reason="retention")
    store.write(DAILY, {D1: mixed_frame(7, 2)})
    assert store.states(DAILY, [D1]) == {D1: PartitionState.PRESENT}
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), mixed_frame(7, 2))


def test_new_column_in_a_later_partition_reads_null_for_old_rows(store: HotStore) -> None:
    store.write(DAILY, {D1: pd.DataFrame({"id": [1, 2]})})
    store.write(DAILY, {D2: pd.DataFrame({"id": [3], "note": pd.Series(["late"], dtype="str")})})
    expected = pd.DataFrame({"id": [1, 2, 3], "note": pd.Series([None, None, "late"], dtype="str")})
    pd.testing.assert_frame_equal(store.read(DAILY, [D1, D2]), expected)


def test_missing_column_in_a_rewrite_is_null(store: HotStore) -> None:
    store.write(DAILY, {D1: pd.DataFrame({"id": [1], "note": pd.Series(["x"], dtype="str")})})
    store.write(DAILY, {D2: pd.DataFrame({"id": [2]})})
    assert store.read(DAILY, [D2])["note"].isna().tolist() == [True]


def test_compatible_widening_int32_to_int64_and_null_to_typed(store: HotStore) -> None:
    store.write(DAILY, {D1: pd.DataFrame({"n": np.array([1], dtype="int32"), "later": [None]})})
    store.write(DAILY, {D2: pd.DataFrame({"n": np.array([2**40], dtype="int64"), "later": [2.5]})})
    back = store.read(DAILY, [D1, D2])
    assert back["n"].tolist() == [1, 2**40]
    assert str(back["n"].dtype) == "int64"
    assert back["later"].tolist()[1] == 2.5
    assert np.isnan(back["later"].tolist()[0])


def test_incompatible_type_change_raises_and_changes_nothing(store: HotStore) -> None:
    original = pd.DataFrame({"id": [1, 2, 3]})
    store.write(DAILY, {D1: original})
    with pytest.raises(IncompatibleSchemaError) as error:
        store.write(DAILY, {D1: pd.DataFrame({"id": pd.Series(["a"], dtype="str")}), D2: original})
    assert "ingestion.events" in str(error.value)
    assert "hot tier" in str(error.value)
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), original)
    assert store.states(DAILY, [D2]) == {D2: PartitionState.MISSING}


def test_nested_types_are_refused_not_stringified(store: HotStore) -> None:
    with pytest.raises(UnsupportedTypeError, match="list"):
        store.write(UNPARTITIONED, {None: pd.DataFrame({"tags": [[1, 2], [3]]})})
    assert store.states(UNPARTITIONED, [None]) == {None: PartitionState.MISSING}


# -- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["x; DROP TABLE y", '"quoted"', "a.b", ""])
def test_hostile_table_names_are_refused(stage: str) -> None:
    with pytest.raises(UnsafeNameError):
        TableRef(stage, "t")
    with pytest.raises(UnsafeNameError):
        TableRef("t", stage)


def test_hostile_keys_and_columns_are_refused_and_tables_survive(store: HotStore) -> None:
    store.write(DAILY, {D1: pd.DataFrame({"id": [1]})})
    for key in ["'; DROP TABLE t; --", "../x", "a/b"]:
        with pytest.raises(UnsafeNameError):
            store.write(DAILY, {key: pd.DataFrame({"id": [2]})})
        with pytest.raises(UnsafeNameError):
            store.states(DAILY, [key])
        with pytest.raises(UnsafeNameError):
            store.remove(DAILY, key, "x")
    for column in ['a"b', "a b", "a;b", "x'); DROP TABLE events; --", "_partition", "_PARTITION"]:
        with pytest.raises(UnsafeNameError):
            store.write(DAILY, {D2: pd.DataFrame({column: [1]})})
    with pytest.raises(UnsafeNameError):
        store.write(TableRef("de_assets_meta", "tables"), {None: pd.DataFrame({"id": [1]})})
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), pd.DataFrame({"id": [1]}))
    assert store.states(DAILY, [D1, D2]) == {D1: PartitionState.PRESENT, D2: PartitionState.MISSING}


def test_sql_in_values_round_trips_as_data(store: HotStore) -> None:
    frame = pd.DataFrame({"v": pd.Series(["'); DROP TABLE x; --", 'a"b', "c;d"], dtype="str")})
    store.write(DAILY, {D1: frame})
    store.remove(DAILY, D2, reason="'); DROP TABLE x; --")
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), frame)
    assert store.states(DAILY, [D2]) == {D2: PartitionState.REMOVED}


def test_tables_sharing_a_flat_name_are_refused(tmp_path: Path) -> None:
    # Without schemas, a__b.c and a.b__c would both be table a__b__c.
    store = HotStore(f"sqlite:///{tmp_path}/hot.sqlite")
    store.write(TableRef("a__b", "c"), {None: pd.DataFrame({"id": [1]})})
    with pytest.raises(UnsafeNameError, match="rename"):
        store.write(TableRef("a", "b__c"), {None: pd.DataFrame({"id": [2]})})
    assert store.read(TableRef("a__b", "c"), [None])["id"].tolist() == [1]


def test_duckdb_file_named_like_a_stage(tmp_path: Path) -> None:
    # DuckDB names the catalog after the file: an unqualified schema "transformation" would be ambiguous.
    store = HotStore(f"duckdb:///{tmp_path}/transformation.duckdb")
    store.write(UNPARTITIONED, {None: mixed_frame()})
    pd.testing.assert_frame_equal(store.read(UNPARTITIONED, [None]), mixed_frame())


def test_location_never_shows_a_password(store: HotStore, url: str) -> None:
    assert store.location(DAILY, D1).startswith(url + "#")
    assert store.location(DAILY, D1).endswith(f"events/_partition={D1}")
    remote = HotStore("postgresql://analyst:s3cret@db.example:5432/warehouse")
    place = remote.location(DAILY, D1)
    assert "s3cret" not in place
    assert place.startswith("postgresql://analyst:***@db.example:5432/warehouse#ingestion.events")


# -- crash safety and connections ------------------------------------------------------------------


def test_crash_during_insert_leaves_the_old_version(store: HotStore, url: str, monkeypatch) -> None:
    old = mixed_frame(0, 4)
    store.write(DAILY, {D1: old, D2: mixed_frame(10, 1)})
    dialect_class = type(dialect_for(sa.make_url(url)))
    seen_after_delete: list[int] = []

    def crash(self, conn, table, staged) -> None:
        # Inside the transaction the old rows are gone when the new ones go in: the rollback must undo it.
        self.delete(conn, table, list(staged))
        seen_after_delete.append(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        raise RuntimeError("disk full")

    monkeypatch.setattr(dialect_class, "replace", crash)
    widened = mixed_frame(100, 2).assign(extra=1.5)  # also adds a column, which must roll back too
    with pytest.raises(RuntimeError, match="disk full"):
        store.write(DAILY, {D1: widened, D3: widened})
    monkeypatch.undo()
    assert seen_after_delete == [1]  # only D2's row was left when the insert began
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), old)
    assert store.states(DAILY, [D1, D2, D3]) == {
        D1: PartitionState.PRESENT,
        D2: PartitionState.PRESENT,
        D3: PartitionState.MISSING,
    }
    store.write(DAILY, {D3: widened})  # the rolled-back column can be added for real
    pd.testing.assert_frame_equal(store.read(DAILY, [D3]), widened)
    if url.startswith("postgresql"):
        # The failed write's staged tables were dropped; only the three partitions' children remain.
        tables = postgres_tables(url, "ingestion")
        assert sorted(tables.values()) == [True, True, True], tables


def postgres_tables(url: str, schema: str) -> dict[str, bool]:
    """The plain tables of ``schema`` on PostgreSQL, each with whether it is a partition."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT relname, relispartition FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = to_regnamespace(:schema)"
                ),
                {"schema": schema},
            ).all()
    finally:
        engine.dispose()
    return dict(rows)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_no_connection_is_held_after_a_call(tmp_path: Path) -> None:
    path = tmp_path / "hot.duckdb"
    store = HotStore(f"duckdb:///{path}", lock_timeout_seconds=0)
    store.write(DAILY, {D1: pd.DataFrame({"id": [1]})})
    other = f"""
        import duckdb
        con = duckdb.connect({str(path)!r})
        con.execute("CREATE TABLE other_process AS SELECT 42 AS answer")
        con.close()
    """
    subprocess.run(_python(other), check=True, timeout=60)
    store.read(DAILY, [D1])
    subprocess.run(_python(other.replace("CREATE TABLE", "CREATE OR REPLACE TABLE")), check=True, timeout=60)


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        _python(f"""
            import duckdb, time
            con = duckdb.connect({str(path)!r})
            print("locked", flush=True)
            time.sleep({seconds})
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_write_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "hot.duckdb"
    holder = _hold_lock(path, seconds=2)
    try:
        started = time.monotonic()
        HotStore(f"duckdb:///{path}", lock_timeout_seconds=30).write(DAILY, {D1: pd.DataFrame({"id": [1]})})
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert waited > 0.5
    assert HotStore(f"duckdb:///{path}").read(DAILY, [D1])["id"].tolist() == [1]


def test_lock_timeout_fails_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "hot.duckdb"
    holder = _hold_lock(path, seconds=30)
    try:
        with pytest.raises(HotTierLockedError) as error:
            HotStore(f"duckdb:///{path}", lock_timeout_seconds=0.5).states(DAILY, [D1])
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert str(path) in str(error.value)
    assert "hot_tier" in str(error.value)


# -- inside Dagster --------------------------------------------------------------------------------

DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")
RANGE_TAGS = {"dagster/asset_partition_range_start": D1, "dagster/asset_partition_range_end": D3}


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path}/hot.duckdb"


def _materialize(assets: list, url: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={"io_manager": HotTierIOManager(url=url, lock_timeout_seconds=5)},
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def test_dagster_unpartitioned_chain(duckdb_url: str) -> None:
    @dg.asset(key_prefix="ingestion")
    def orders() -> pd.DataFrame:
        return pd.DataFrame({"customer": pd.Series(["a", "b", "a"], dtype="str"), "amount": [1.0, 2.0, 4.0]})

    @dg.asset(key_prefix="transformation", ins={"orders": dg.AssetIn(key_prefix="ingestion")})
    def totals(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("customer", as_index=False)["amount"].sum()

    result = _materialize([orders, totals], duckdb_url)
    assert result.success
    stored = HotStore(duckdb_url).read(TableRef("transformation", "totals"), [None])
    expected = pd.DataFrame({"customer": pd.Series(["a", "b"], dtype="str"), "amount": [5.0, 2.0]})
    pd.testing.assert_frame_equal(stored, expected)
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "orders"]
    metadata = event.step_materialization_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 3
    assert metadata["tier"].value == "hot"


def _events_frame() -> pd.DataFrame:
    # Two rows on D1, none on D2, three on D3.
    days = [D1, D1, D3, D3, D3]
    return pd.DataFrame({"event_date": pd.Series(days, dtype="str"), "value": [1, 2, 3, 4, 5]})


def _events_asset() -> dg.AssetsDefinition:
    @dg.asset(
        key_prefix="ingestion",
        partitions_def=DAILY_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "event_date"},
    )
    def events(context: dg.AssetExecutionContext) -> pd.DataFrame:
        frame = _events_frame()
        return frame[frame["event_date"].isin(context.partition_keys)].reset_index(drop=True)

    return events


def test_dagster_one_daily_partition(duckdb_url: str) -> None:
    result = _materialize([_events_asset()], duckdb_url, partition_key=D3)
    assert result.success
    store = HotStore(duckdb_url)
    assert store.states(DAILY, [D1, D3]) == {D1: PartitionState.MISSING, D3: PartitionState.PRESENT}
    assert store.read(DAILY, [D3])["value"].tolist() == [3, 4, 5]


def test_dagster_range_run_writes_each_partition_with_its_own_figures(duckdb_url: str) -> None:
    result = _materialize([_events_asset()], duckdb_url, tags=RANGE_TAGS)
    assert result.success
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        rows[materialization.partition] = materialization.metadata["dagster/row_count"].value
        location = materialization.metadata["location"].value
        assert location == f"{duckdb_url}#ingestion.events/_partition={materialization.partition}"
    assert rows == {D1: 2, D2: 0, D3: 3}
    store = HotStore(duckdb_url)
    assert store.states(DAILY, [D1, D2, D3]) == dict.fromkeys([D1, D2, D3], PartitionState.PRESENT)
    pd.testing.assert_frame_equal(store.read(DAILY, [D1, D2, D3]), _events_frame())


def test_dagster_range_run_loads_the_range_as_one_frame(duckdb_url: str) -> None:
    loaded: list[pd.DataFrame] = []

    @dg.asset(
        key_prefix="transformation",
        partitions_def=DAILY_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "event_date"},
        ins={"events": dg.AssetIn(key_prefix="ingestion")},
    )
    def daily_totals(events: pd.DataFrame) -> pd.DataFrame:
        loaded.append(events)
        return events.groupby("event_date", as_index=False)["value"].sum()

    result = _materialize([_events_asset(), daily_totals], duckdb_url, tags=RANGE_TAGS)
    assert result.success
    [frame] = loaded
    pd.testing.assert_frame_equal(frame, _events_frame())
    totals = HotStore(duckdb_url).read(
        TableRef("transformation", "daily_totals", partition_field="day"), [D1, D2, D3]
    )
    assert totals["value"].tolist() == [3, 12]


def _reader(allow_missing: bool) -> dg.AssetsDefinition:
    metadata = {"allow_missing_partitions": True} if allow_missing else None

    @dg.asset(
        key_prefix="transformation",
        partitions_def=DAILY_PARTITIONS,
        ins={"events": dg.AssetIn(key_prefix="ingestion", metadata=metadata)},
    )
    def reader(events: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"rows": [len(events)]})

    return reader


def test_dagster_missing_upstream_partition(duckdb_url: str) -> None:
    events = _events_asset()
    _materialize([events], duckdb_url, partition_key=D1)
    with pytest.raises(PartitionNotFoundError) as error:
        _materialize(
            [events, _reader(False)], duckdb_url, partition_key=D2, selection=["transformation/reader"]
        )
    assert "ingestion/events" in str(error.value)
    assert D2 in str(error.value)
    assert "hot tier" in str(error.value)
    result = _materialize(
        [events, _reader(True)], duckdb_url, partition_key=D2, selection=["transformation/reader"]
    )
    reader_key = TableRef("transformation", "reader", partition_field="day")
    assert HotStore(duckdb_url).read(reader_key, [D2])["rows"].tolist() == [0]
    assert result.success


def test_dagster_removed_upstream_partition_fails_even_when_missing_is_allowed(duckdb_url: str) -> None:
    events = _events_asset()
    _materialize([events], duckdb_url, partition_key=D1)
    HotStore(duckdb_url).remove(DAILY, D1, reason="erasure")
    with pytest.raises(PartitionRemovedError) as error:
        _materialize(
            [events, _reader(True)], duckdb_url, partition_key=D1, selection=["transformation/reader"]
        )
    assert D1 in str(error.value)
    assert "hot tier" in str(error.value)


def test_postgres_partitions_are_swapped_child_tables_and_orphans_are_swept(postgres_server) -> None:
    url = postgres_server.create_database()
    store = HotStore(url)
    store.write(DAILY, {D1: mixed_frame(0, 3), D2: mixed_frame(3, 2)})
    store.write(DAILY, {D1: mixed_frame(10, 4)})  # replaces D1's child, keeps D2's
    # An orphan of a write that crashed seven hours ago, and one of a write still loading.
    old, fresh = int(time.time()) - 7 * 3600, int(time.time())
    postgres_server.execute(
        url,
        f"CREATE TABLE ingestion.events__s{old:010d}_0123abcd (x int)",
        f"CREATE TABLE ingestion.events__s{fresh:010d}_0123abcd (x int)",
    )

    assert sorted(postgres_tables(url, "ingestion").values()) == [False, False, True, True]
    store.maintain()
    left = postgres_tables(url, "ingestion")
    assert f"events__s{old:010d}_0123abcd" not in left
    assert f"events__s{fresh:010d}_0123abcd" in left
    assert sorted(left.values()) == [False, True, True]  # the two partitions and the fresh staging table
    pd.testing.assert_frame_equal(
        store.read(DAILY, [D1, D2]), pd.concat([mixed_frame(10, 4), mixed_frame(3, 2)], ignore_index=True)
    )


def test_postgres_large_partition_reads_back_in_written_order(postgres_server) -> None:
    # Wide rows (~50 MB in all): PostgreSQL plans a parallel scan, whose workers interleave pages.
    rows = 200_000
    frame = pd.DataFrame({"id": np.arange(rows)[::-1].copy(), "text": [f"{n:0>240}" for n in range(rows)]})
    store = HotStore(postgres_server.create_database())
    store.write(DAILY, {D1: frame, D2: frame.head(10)})
    expected = pd.concat([frame, frame.head(10)], ignore_index=True)
    pd.testing.assert_frame_equal(store.read(DAILY, [D1, D2]), expected)


def test_postgres_concurrent_writers_and_readers_see_whole_versions_only(postgres_server) -> None:
    url = postgres_server.create_database()
    versions = {n: mixed_frame(100 * n, 50 + n) for n in range(6)}
    HotStore(url).write(DAILY, {D1: versions[0], D2: versions[0]})
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def write(numbers: list[int]) -> None:
        try:
            for n in numbers:
                HotStore(url).write(DAILY, {D1: versions[n]})
        except BaseException as error:
            errors.append(error)

    def read() -> None:
        try:
            while not stop.is_set():
                frame = HotStore(url).read(DAILY, [D1])
                # Each read is one whole version: its length names it, its rows must be exactly that one.
                n = len(frame) - 50
                pd.testing.assert_frame_equal(frame, versions[n])
                seen.add(n)
        except BaseException as error:
            errors.append(error)

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(numbers,)) for numbers in ([1, 2, 3], [4, 5, 1])]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert not errors, errors
    assert len(seen) >= 2  # the reader saw the partition change under it
    final = HotStore(url).read(DAILY, [D1, D2])
    assert len(final) - len(versions[0]) - 50 in (1, 3)  # the last write of either writer, whole
    assert sorted(postgres_tables(url, "ingestion").values()) == [True, True]  # no staging table left


def test_postgres_passwords_with_any_character_reach_the_bulk_path_and_never_an_error(
    postgres_server,
) -> None:
    password = "a b@%+:/?#&=x"
    url = sa.make_url(postgres_server.create_database()).set(password=password)
    store = HotStore(url.render_as_string(hide_password=False))
    store.write(DAILY, {D1: mixed_frame(0, 3)})  # the server trusts loopback; the URI must still parse
    pd.testing.assert_frame_equal(store.read(DAILY, [D1]), mixed_frame(0, 3))
    nowhere = url.set(port=free_port())  # nothing listens there
    with (
        pytest.raises(StorageError, match="cannot connect to the hot tier") as refused,
        hot_postgres._adbc_connection(nowhere),
    ):
        pass
    assert password not in str(refused.value)
    assert quote(password, safe="") not in str(refused.value)


def test_postgres_parallel_first_writes_to_a_new_database_all_succeed(postgres_server) -> None:
    # A first deployment: several steps create the catalog, a stage's schema and their tables at once.
    url = postgres_server.create_database()
    tables = [TableRef("transformation", f"table_{n}", partition_field="day") for n in range(8)]
    errors: list[BaseException] = []

    def write(table: TableRef) -> None:
        try:
            HotStore(url).write(table, {D1: mixed_frame(0, 3)})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(table,)) for table in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for table in tables:
        pd.testing.assert_frame_equal(HotStore(url).read(table, [D1]), mixed_frame(0, 3))


def test_postgres_a_writer_waiting_past_the_lock_timeout_fails_clearly(postgres_server) -> None:
    url = postgres_server.create_database()
    HotStore(url).write(DAILY, {D1: mixed_frame(0, 3)})
    physical = "ingestion.events"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # Another session holds the table's lock (a long read, a stuck writer).
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(physical, 0))))
            with pytest.raises(HotTierLockedError, match=r"gave up after 0\.5 s waiting"):
                HotStore(url, lock_timeout_seconds=0.5).write(DAILY, {D1: mixed_frame(10, 2)})
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(HotStore(url).read(DAILY, [D1]), mixed_frame(0, 3))


def test_postgres_a_column_another_writer_adds_while_rows_are_staged_is_added_to_them(
    postgres_server, monkeypatch
) -> None:
    url = postgres_server.create_database()
    HotStore(url).write(DAILY, {D1: mixed_frame(0, 3)})
    staged_for_real = hot_postgres.PostgresDialect.staged
    interleaved: list[bool] = []

    @contextlib.contextmanager
    def another_writer_between(self, url_, target, incoming):
        with staged_for_real(self, url_, target, incoming) as staged:
            if not interleaved:  # once: the other writer's own write stages normally
                interleaved.append(True)
                HotStore(url).write(DAILY, {D2: mixed_frame(10, 2).assign(extra=1.5)})
            yield staged

    monkeypatch.setattr(hot_postgres.PostgresDialect, "staged", another_writer_between)
    HotStore(url).write(DAILY, {D1: mixed_frame(20, 4)})  # staged without "extra", attached with it
    monkeypatch.undo()
    both = HotStore(url).read(DAILY, [D1, D2])
    expected = pd.concat(
        [mixed_frame(20, 4).assign(extra=np.nan), mixed_frame(10, 2).assign(extra=1.5)], ignore_index=True
    )
    pd.testing.assert_frame_equal(both, expected)
    assert interleaved == [True]

"""The cold tier: ColdStore on its own, then ColdTierIOManager inside Dagster runs."""

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import fsspec
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from de_assets.security.identifiers import UnsafeNameError
from de_assets.storage import cold
from de_assets.storage.cold import ColdStore, ColdTierIOManager
from de_assets.storage.io_manager import BATCH_ROWS, COLUMNS, PartitionBatches
from de_assets.storage.tier import (
    IncompatibleSchemaError,
    PartitionNotFoundError,
    PartitionRemovedError,
    PartitionState,
    TableRef,
)

DAILY = TableRef("transformation", "orders", "day")
WHOLE = TableRef("serving", "summary")


def orders(first_id: int, n: int, day: str = "2024-01-01") -> pd.DataFrame:
    """A small frame of the dtypes the tiers promise to keep (no column called ``day``)."""
    ids = list(range(first_id, first_id + n))
    return pd.DataFrame(
        {
            "order_id": pd.Series(ids, dtype="int64"),
            "customer": pd.Series([f"c{i % 3}" for i in ids], dtype="str"),
            "amount": pd.Series([i * 1.5 for i in ids], dtype="float64"),
            "paid": pd.Series([i % 2 == 0 for i in ids], dtype="bool"),
            "coupon": pd.array([None if i % 2 else i for i in ids], dtype="Int64"),
            "placed_at": pd.Series(
                [pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=i) for i in ids],
                dtype="datetime64[us, UTC]",
            ),
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> ColdStore:
    return ColdStore(str(tmp_path / "cold"))


@pytest.fixture
def memory_folder() -> Iterator[str]:
    """A unique folder name in fsspec's process-wide memory filesystem, emptied afterwards."""
    name = uuid.uuid4().hex
    yield name
    memory = fsspec.filesystem("memory")
    for path in memory.find("/"):
        if f"/{name}/" in path:
            memory.rm_file(path)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- ColdStore ------------------------------------------------------------------------------------


def test_unpartitioned_round_trip(store: ColdStore, tmp_path: Path) -> None:
    frame = orders(0, 5)
    stats = store.write(WHOLE, {None: frame})
    pd.testing.assert_frame_equal(store.read(WHOLE, [None]), frame, check_dtype=True)
    path = tmp_path / "cold" / "serving" / "summary" / "data.parquet"
    assert files_under(tmp_path / "cold") == ["serving/summary/data.parquet"]
    assert stats[None].rows == 5
    assert stats[None].bytes == path.stat().st_size
    assert stats[None].location == str(path)


def test_partition_round_trip_and_layout(store: ColdStore, tmp_path: Path) -> None:
    frame = orders(0, 4, "2024-01-03")
    store.write(DAILY, {"2024-01-03": frame})
    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-03"]), frame, check_dtype=True)
    assert files_under(tmp_path / "cold") == ["transformation/orders/day=2024-01-03/part-0.parquet"]
    # The file holds exactly the frame's columns, zstd-compressed.
    metadata = pq.ParquetFile(tmp_path / "cold/transformation/orders/day=2024-01-03/part-0.parquet").metadata
    assert metadata.schema.to_arrow_schema().names == list(frame.columns)
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_multi_key_read_concatenates_in_key_order(store: ColdStore) -> None:
    frames = {"2024-01-01": orders(0, 2), "2024-01-02": orders(10, 3), "2024-01-03": orders(20, 1)}
    store.write(DAILY, frames)
    got = store.read(DAILY, ["2024-01-03", "2024-01-01", "2024-01-02"])
    assert got["order_id"].tolist() == [20, 0, 1, 10, 11, 12]
    assert got.index.tolist() == list(range(6))


def test_rewrite_replaces_rows(store: ColdStore, tmp_path: Path) -> None:
    store.write(DAILY, {"2024-01-01": orders(0, 3)})
    store.write(DAILY, {"2024-01-01": orders(100, 2)})
    assert store.read(DAILY, ["2024-01-01"])["order_id"].tolist() == [100, 101]
    assert files_under(tmp_path / "cold") == ["transformation/orders/day=2024-01-01/part-0.parquet"]


def test_empty_partition_keeps_schema_and_is_present(store: ColdStore) -> None:
    empty = orders(0, 0)
    stats = store.write(DAILY, {"2024-01-01": empty})
    assert stats["2024-01-01"].rows == 0
    assert store.states(DAILY, ["2024-01-01"]) == {"2024-01-01": PartitionState.PRESENT}
    got = store.read(DAILY, ["2024-01-01"])
    assert list(got.columns) == list(empty.columns)
    assert len(got) == 0


def test_read_of_absent_partitions(store: ColdStore) -> None:
    assert store.read(DAILY, ["2024-01-05"]).shape == (0, 0)  # table never written: no columns known
    store.write(DAILY, {"2024-01-01": orders(0, 2)})
    got = store.read(DAILY, ["2024-01-05", "2024-01-06"])
    assert len(got) == 0
    assert list(got.columns) == list(orders(0, 0).columns)


def test_states_present_missing_removed(store: ColdStore, tmp_path: Path) -> None:
    store.write(DAILY, {"2024-01-01": orders(0, 2), "2024-01-02": orders(2, 2)})
    store.remove(DAILY, "2024-01-02", reason="erasure request 17")
    keys = ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert store.states(DAILY, keys) == {
        "2024-01-01": PartitionState.PRESENT,
        "2024-01-02": PartitionState.REMOVED,
        "2024-01-03": PartitionState.MISSING,
    }
    folder = tmp_path / "cold/transformation/orders/day=2024-01-02"
    assert sorted(p.name for p in folder.iterdir()) == ["_REMOVED.json"]
    marker = json.loads((folder / "_REMOVED.json").read_text())
    assert marker["reason"] == "erasure request 17"
    assert pd.Timestamp(marker["removed_at"]).tzname() == "UTC"
    # A removed partition is not read, and the others still are.
    assert store.read(DAILY, keys)["order_id"].tolist() == [0, 1]


def test_states_of_many_keys_use_one_listing(store: ColdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"2024-01-{d:02d}" for d in range(1, 31)]
    store.write(DAILY, {k: orders(0, 1) for k in keys[::2]})
    calls: list[str] = []
    depth = [0]
    fs = fsspec.filesystem("file")  # fsspec caches instances: the store gets this very one

    def counted(name: str, original):
        def call(*args, **kwargs):
            if depth[0] == 0:  # calls the filesystem makes to itself (find → ls) are not the store's
                calls.append(name)
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    for name in ("exists", "isfile", "isdir", "ls", "find", "glob", "walk", "info", "open"):
        monkeypatch.setattr(fs, name, counted(name, getattr(fs, name)))
    states = store.states(DAILY, keys)
    assert [states[k] for k in keys] == [PartitionState.PRESENT, PartitionState.MISSING] * 15
    assert calls == ["find"]


def test_unpartitioned_remove_and_rewrite(store: ColdStore, tmp_path: Path) -> None:
    store.write(WHOLE, {None: orders(0, 2)})
    store.remove(WHOLE, None, reason="retention")
    assert store.states(WHOLE, [None]) == {None: PartitionState.REMOVED}
    assert files_under(tmp_path / "cold") == ["serving/summary/_REMOVED.json"]
    store.write(WHOLE, {None: orders(5, 1)})
    assert store.states(WHOLE, [None]) == {None: PartitionState.PRESENT}
    assert files_under(tmp_path / "cold") == ["serving/summary/data.parquet"]


def test_write_after_remove_is_present(store: ColdStore, tmp_path: Path) -> None:
    store.write(DAILY, {"2024-01-01": orders(0, 2)})
    store.remove(DAILY, "2024-01-01", reason="retention")
    store.write(DAILY, {"2024-01-01": orders(7, 1)})
    assert store.states(DAILY, ["2024-01-01"]) == {"2024-01-01": PartitionState.PRESENT}
    assert store.read(DAILY, ["2024-01-01"])["order_id"].tolist() == [7]
    assert files_under(tmp_path / "cold") == ["transformation/orders/day=2024-01-01/part-0.parquet"]


def test_new_column_reads_back_unified(store: ColdStore) -> None:
    old = orders(0, 2)
    new = orders(2, 2).assign(channel=pd.Series(["web", "app"], dtype="str"))
    store.write(DAILY, {"2024-01-01": old})
    store.write(DAILY, {"2024-01-02": new})
    got = store.read(DAILY, ["2024-01-01", "2024-01-02"])
    assert list(got.columns) == [*old.columns, "channel"]
    assert got["channel"].isna().tolist() == [True, True, False, False]
    assert got["channel"].iloc[2:].tolist() == ["web", "app"]
    expected = pd.concat([old, new.drop(columns="channel")], ignore_index=True)
    pd.testing.assert_frame_equal(got.drop(columns="channel"), expected, check_dtype=True)


def test_widened_column_reads_back_as_the_wider_type(store: ColdStore) -> None:
    store.write(DAILY, {"2024-01-01": pd.DataFrame({"x": pd.Series([1, 2], dtype="int32")})})
    store.write(DAILY, {"2024-01-02": pd.DataFrame({"x": [0.5]})})
    got = store.read(DAILY, ["2024-01-01", "2024-01-02"])
    assert got["x"].tolist() == [1.0, 2.0, 0.5]
    assert got["x"].dtype == "float64"


def test_incompatible_type_change_is_refused_before_writing(store: ColdStore, tmp_path: Path) -> None:
    before = pd.DataFrame({"qty": pd.Series([1, 2], dtype="int64")})
    store.write(DAILY, {"2024-01-01": before})
    path = tmp_path / "cold/transformation/orders/day=2024-01-01/part-0.parquet"
    stored_bytes = path.read_bytes()
    after = pd.DataFrame({"qty": pd.Series(["one"], dtype="str")})
    # Both the partition itself and a new one are refused: the stored type is the table's type.
    for key in ("2024-01-01", "2024-01-02"):
        with pytest.raises(IncompatibleSchemaError, match=r"transformation\.orders in the cold tier") as err:
            store.write(DAILY, {"2024-01-02": before, key: after})
        assert "qty" in str(err.value)
    assert path.read_bytes() == stored_bytes
    assert files_under(tmp_path / "cold") == ["transformation/orders/day=2024-01-01/part-0.parquet"]
    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-01"]), before)


@pytest.mark.parametrize(
    ("stage", "name"),
    [("x; DROP TABLE y", "orders"), ("transformation", "x; DROP TABLE y"), ("..", "orders")],
)
def test_hostile_table_names_refused(stage: str, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        TableRef(stage, name, "day")


@pytest.mark.parametrize("key", ["../../etc", "a/b", "..", "", "2024-01-01/../x", "a\\b"])
def test_hostile_partition_keys_refused(store: ColdStore, tmp_path: Path, key: str) -> None:
    for call in (
        lambda: store.write(DAILY, {key: orders(0, 1)}),
        lambda: store.read(DAILY, [key]),
        lambda: store.states(DAILY, [key]),
        lambda: store.remove(DAILY, key, "x"),
        lambda: store.location(DAILY, key),
    ):
        with pytest.raises(UnsafeNameError):
            call()
    assert not (tmp_path / "cold").exists()


@pytest.mark.parametrize("column", ['a"b', "a b", "x; DROP TABLE y", "../c", 3])
def test_hostile_column_names_refused(store: ColdStore, tmp_path: Path, column: object) -> None:
    with pytest.raises(UnsafeNameError):
        store.write(DAILY, {"2024-01-01": pd.DataFrame({"ok": [1], column: [2]})})
    assert not (tmp_path / "cold").exists()


def test_column_named_like_the_partition_folder_is_refused(store: ColdStore, tmp_path: Path) -> None:
    with pytest.raises(UnsafeNameError, match="clashes with the 'day=' partition folders"):
        store.write(DAILY, {"2024-01-01": pd.DataFrame({"day": ["2024-01-01"], "x": [1]})})
    assert not (tmp_path / "cold").exists()
    # Unpartitioned tables have no folders to clash with.
    store.write(WHOLE, {None: pd.DataFrame({"day": ["2024-01-01"]})})
    assert store.read(WHOLE, [None])["day"].tolist() == ["2024-01-01"]


def test_key_must_match_partitioning(store: ColdStore) -> None:
    with pytest.raises(ValueError, match="unpartitioned"):
        store.write(WHOLE, {"2024-01-01": orders(0, 1)})
    with pytest.raises(ValueError, match="partitioned"):
        store.read(DAILY, [None])


def test_location_hides_password(memory_folder: str) -> None:
    url_store = ColdStore(f"memory://user:secret@host/{memory_folder}")
    frame = orders(0, 2)
    stats = url_store.write(DAILY, {"2024-01-01": frame})
    pd.testing.assert_frame_equal(url_store.read(DAILY, ["2024-01-01"]), frame)
    for location in (stats["2024-01-01"].location, url_store.location(DAILY, "2024-01-01")):
        assert "secret" not in location
        assert location.startswith("memory://***@host/")
        assert location.endswith("/transformation/orders/day=2024-01-01/part-0.parquet")


def failing_write(written: list[str]) -> Callable[..., None]:
    """A stand-in for ``cold._write_parquet`` that leaves half a file (its path added to ``written``) and
    fails, as a full disk or a dropped connection does."""

    def half_write(table, path: str, fs) -> None:
        written.append(path)
        with fs.open(path, "wb") as f:
            f.write(b"PAR1" + b"\0" * 100)
        raise OSError("write failed")

    return half_write


def test_crash_mid_write_keeps_the_old_partition(
    store: ColdStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = orders(0, 3)
    store.write(DAILY, {"2024-01-01": old})
    table_dir = tmp_path / "cold/transformation/orders"
    temporaries: list[str] = []
    monkeypatch.setattr(cold, "_write_parquet", failing_write(temporaries))
    with pytest.raises(OSError, match="write failed"):
        store.write(DAILY, {"2024-01-01": orders(50, 7)})
    assert len(temporaries) == 1
    assert files_under(table_dir) == ["day=2024-01-01/part-0.parquet"]  # the temporary was cleaned up
    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-01"]), old)

    # A process killed mid-write cannot clean up: recreate its half-written temporary file.
    Path(temporaries[0]).write_bytes(b"PAR1" + b"\0" * 100)
    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-01"]), old)
    assert store.states(DAILY, ["2024-01-01"]) == {"2024-01-01": PartitionState.PRESENT}
    dataset = ds.dataset(str(table_dir), format="parquet", partitioning="hive")
    assert len(dataset.files) == 1
    assert dataset.to_table().column("order_id").to_pylist() == [0, 1, 2]
    glob = str(table_dir / "*" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(3,)]


def test_tables_are_readable_as_hive_datasets(store: ColdStore, tmp_path: Path) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    store.write(DAILY, {day: orders(10 * i, i + 1, day) for i, day in enumerate(days)})
    store.write(DAILY, {"2024-01-04": orders(99, 1)})
    store.remove(DAILY, "2024-01-04", reason="retention")
    table_dir = tmp_path / "cold/transformation/orders"
    got = ds.dataset(str(table_dir), format="parquet", partitioning="hive").to_table().to_pandas()
    got = got.sort_values("order_id", ignore_index=True)
    assert got["order_id"].tolist() == [0, 10, 11, 20, 21, 22]
    assert [str(d)[:10] for d in got["day"]] == ["2024-01-01"] + ["2024-01-02"] * 2 + ["2024-01-03"] * 3
    counts = duckdb.sql(
        f"SELECT day::VARCHAR, count(*) FROM read_parquet('{table_dir}/*/*.parquet', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert counts == [("2024-01-01", 1), ("2024-01-02", 2), ("2024-01-03", 3)]


# --- ColdTierIOManager in Dagster runs ----------------------------------------------------------------

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")
RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2024-01-01",
    "dagster/asset_partition_range_end": "2024-01-03",
}
ROWS_PER_DAY = {"2024-01-01": 2, "2024-01-02": 0, "2024-01-03": 3}


def run(assets: list, root: Path, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={"io_manager": ColdTierIOManager(root=str(root))},
        instance=dg.DagsterInstance.ephemeral(),
        **kwargs,
    )


def test_unpartitioned_asset_chain(tmp_path: Path) -> None:
    @dg.asset(key_prefix="ingestion")
    def raw() -> pd.DataFrame:
        return orders(0, 4)

    @dg.asset(key_prefix="serving", ins={"raw": dg.AssetIn(key=["ingestion", "raw"])})
    def total(raw: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"amount": [raw["amount"].sum()]})

    result = run([raw, total], tmp_path)
    assert result.success
    assert files_under(tmp_path) == ["ingestion/raw/data.parquet", "serving/total/data.parquet"]
    pd.testing.assert_frame_equal(
        ColdStore(str(tmp_path)).read(TableRef("ingestion", "raw"), [None]), orders(0, 4)
    )
    assert pd.read_parquet(tmp_path / "serving/total/data.parquet")["amount"].tolist() == [9.0]
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "raw"]
    assert event.step_materialization_data.materialization.metadata["dagster/row_count"].value == 4


def test_one_daily_partition(tmp_path: Path) -> None:
    @dg.asset(partitions_def=PARTITIONS)
    def events(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return orders(0, 3, context.partition_key)

    result = run([events], tmp_path, partition_key="2024-01-05")
    assert result.success
    assert files_under(tmp_path) == ["default/events/day=2024-01-05/part-0.parquet"]
    got = pd.read_parquet(tmp_path / "default/events/day=2024-01-05/part-0.parquet")
    pd.testing.assert_frame_equal(got, orders(0, 3, "2024-01-05"))


def range_assets() -> list:
    @dg.asset(
        key_prefix="ingestion",
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "event_date"},
    )
    def events(context: dg.AssetExecutionContext) -> pd.DataFrame:
        frames = [
            orders(10 * i, ROWS_PER_DAY[day], day).assign(event_date=pd.Timestamp(day, tz="UTC"))
            for i, day in enumerate(context.partition_keys)
        ]
        return pd.concat(frames, ignore_index=True)

    @dg.asset(
        key_prefix="serving",
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "event_date"},
        ins={"events": dg.AssetIn(key=["ingestion", "events"])},
    )
    def daily(events: pd.DataFrame) -> pd.DataFrame:
        # One frame for the whole range: the per-day counts prove all rows arrived together.
        counts = events.groupby("event_date").size()
        return pd.DataFrame({"event_date": counts.index, "rows": counts.to_numpy(), "seen": len(events)})

    return [events, daily]


def row_counts(result: dg.ExecuteInProcessResult, asset: str) -> dict[str | None, int]:
    materializations = [
        ev.step_materialization_data.materialization
        for ev in result.get_asset_materialization_events()
        if ev.asset_key.path[-1] == asset
    ]
    return {m.partition: m.metadata["dagster/row_count"].value for m in materializations}


def test_range_run_writes_each_partition_with_its_own_row_count(tmp_path: Path) -> None:
    events, _ = range_assets()
    result = run([events], tmp_path, tags=RANGE_TAGS)
    assert result.success
    assert files_under(tmp_path) == [f"ingestion/events/day={day}/part-0.parquet" for day in ROWS_PER_DAY]
    store = ColdStore(str(tmp_path))
    for day, rows in ROWS_PER_DAY.items():
        got = store.read(TableRef("ingestion", "events", "day"), [day])
        assert len(got) == rows
        assert got["event_date"].eq(pd.Timestamp(day, tz="UTC")).all()
    assert row_counts(result, "events") == ROWS_PER_DAY


def test_range_run_loads_the_range_as_one_frame(tmp_path: Path) -> None:
    result = run(range_assets(), tmp_path, tags=RANGE_TAGS)
    assert result.success
    summary = ColdStore(str(tmp_path)).read(TableRef("serving", "daily", "day"), list(ROWS_PER_DAY))
    assert summary["rows"].tolist() == [2, 3]
    assert summary["seen"].tolist() == [5, 5]  # the downstream got all five rows in one frame
    assert row_counts(result, "daily") == {"2024-01-01": 1, "2024-01-02": 0, "2024-01-03": 1}


def reader_of(upstream_key: list[str], allow_missing: bool) -> tuple[dg.AssetsDefinition, ...]:
    @dg.asset(key=upstream_key, partitions_def=PARTITIONS)
    def upstream() -> pd.DataFrame:
        return orders(0, 2)

    metadata = {"allow_missing_partitions": True} if allow_missing else None
    ins = {"upstream": dg.AssetIn(key=upstream_key, metadata=metadata)}

    @dg.asset(key_prefix="serving", partitions_def=PARTITIONS, ins=ins)
    def reader(upstream: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"rows": [len(upstream)]})

    return upstream, reader


def error_chain(excinfo: pytest.ExceptionInfo) -> list[BaseException]:
    """An error and everything that caused it (Dagster wraps IO manager errors)."""
    chain: list[BaseException] = []
    error: BaseException | None = excinfo.value
    while error is not None and error not in chain:  # context chains can loop
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_never_materialised_upstream_partition_is_an_error(tmp_path: Path) -> None:
    upstream, reader = reader_of(["ingestion", "events"], allow_missing=False)
    with pytest.raises(Exception) as excinfo:  # noqa: PT011 - Dagster's wrapper type is not ours to pin
        run([upstream, reader], tmp_path, selection=[reader.key], partition_key="2024-01-07")
    [error] = [e for e in error_chain(excinfo) if isinstance(e, PartitionNotFoundError)]
    for expected in ("ingestion/events", "2024-01-07", "cold", "never materialised"):
        assert expected in str(error)
    assert not (tmp_path / "serving").exists()


def test_allow_missing_partitions_reads_empty(tmp_path: Path) -> None:
    upstream, reader = reader_of(["ingestion", "events"], allow_missing=True)
    run([upstream], tmp_path, partition_key="2024-01-06")  # the table exists, this day does not
    result = run([upstream, reader], tmp_path, selection=[reader.key], partition_key="2024-01-07")
    assert result.success
    got = pd.read_parquet(tmp_path / "serving/reader/day=2024-01-07/part-0.parquet")
    assert got["rows"].tolist() == [0]


def test_removed_upstream_partition_is_an_error_even_when_missing_is_allowed(tmp_path: Path) -> None:
    upstream, reader = reader_of(["ingestion", "events"], allow_missing=True)
    assert run([upstream], tmp_path, partition_key="2024-01-07").success
    ColdStore(str(tmp_path)).remove(TableRef("ingestion", "events", "day"), "2024-01-07", "erasure")
    with pytest.raises(Exception) as excinfo:  # noqa: PT011 - Dagster's wrapper type is not ours to pin
        run([upstream, reader], tmp_path, selection=[reader.key], partition_key="2024-01-07")
    [error] = [e for e in error_chain(excinfo) if isinstance(e, PartitionRemovedError)]
    for expected in ("ingestion/events", "2024-01-07", "cold", "removed"):
        assert expected in str(error)
    assert not (tmp_path / "serving").exists()


@pytest.fixture(params=["memory", "s3"])
def fsspec_root(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":  # a real S3-compatible server; endpoint and keys from the AWS variables
        return request.getfixturevalue("s3_bucket").url("cold")
    return f"memory://{request.getfixturevalue('memory_folder')}"


def test_io_manager_on_an_fsspec_url(fsspec_root: str) -> None:
    root = fsspec_root

    @dg.asset(partitions_def=PARTITIONS)
    def events() -> pd.DataFrame:
        return orders(0, 2)

    result = dg.materialize(
        [events],
        partition_key="2024-01-02",
        resources={"io_manager": ColdTierIOManager(root=root, storage_options={})},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    got = ColdStore(root).read(TableRef("default", "events", "day"), ["2024-01-02"])
    pd.testing.assert_frame_equal(got, orders(0, 2))


# --- opt-in input metadata: a subset of columns, batches ----------------------------------------


def test_load_of_some_columns_equals_the_full_load_restricted(store: ColdStore) -> None:
    store.write(DAILY, {"2024-01-01": orders(0, 5), "2024-01-02": orders(5, 4, "2024-01-02")})
    keys = ["2024-01-01", "2024-01-02", "2024-01-03"]
    states, some = store.load(DAILY, keys, columns=["placed_at", "order_id"])
    full = store.read(DAILY, keys)
    pd.testing.assert_frame_equal(some, full[["placed_at", "order_id"]])
    assert states["2024-01-03"] is PartitionState.MISSING
    assert list(store.load(DAILY, ["2024-01-03"], columns=["coupon"])[1].columns) == ["coupon"]
    with pytest.raises(Exception, match="nope"):
        store.load(DAILY, keys, columns=["nope"])


def test_batches_of_a_partition_equal_its_read(store: ColdStore) -> None:
    store.write(DAILY, {"2024-01-01": orders(0, 7)})
    batches = list(store.batches(DAILY, "2024-01-01", 3, columns=["customer", "coupon", "placed_at"]))
    assert [len(b) for b in batches] == [3, 3, 1]
    whole = store.read(DAILY, ["2024-01-01"])[["customer", "coupon", "placed_at"]]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole)
    assert list(store.batches(DAILY, "2024-01-09", 3)) == []


def batch_reader(metadata: dict, seen: list) -> dg.AssetsDefinition:
    @dg.asset(
        key_prefix="serving",
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        metadata={"partition_column": "event_date"},
        ins={"events": dg.AssetIn(key=["ingestion", "events"], metadata=metadata)},
    )
    def daily(context: dg.AssetExecutionContext, events: PartitionBatches) -> pd.DataFrame:
        seen.append(events.keys)
        for key in context.partition_keys:
            seen.append([(key, b) for b in events.batches([key])])
        whole = pd.concat(list(events), ignore_index=True)
        counts = whole.groupby("event_date").size()
        return pd.DataFrame({"event_date": counts.index, "rows": counts.to_numpy(), "seen": len(whole)})

    return daily


def test_an_input_asking_for_batches_gets_each_partition_in_frames_of_its_columns(tmp_path: Path) -> None:
    events, _ = range_assets()
    assert run([events], tmp_path, tags=RANGE_TAGS).success
    seen: list = []
    reader = batch_reader({COLUMNS: ["event_date", "order_id"], BATCH_ROWS: 2}, seen)
    result = run([events, reader], tmp_path, tags=RANGE_TAGS, selection=[reader])
    assert result.success
    assert seen[0] == list(ROWS_PER_DAY)
    store = ColdStore(str(tmp_path))
    for key, batches in zip(ROWS_PER_DAY, seen[1:], strict=True):
        assert all(len(b) <= 2 for _, b in batches)
        assert all(k == key for k, _ in batches)
        expected = store.read(TableRef("ingestion", "events", "day"), [key])[["event_date", "order_id"]]
        got = pd.concat([b for _, b in batches], ignore_index=True) if batches else expected.iloc[:0]
        pd.testing.assert_frame_equal(got, expected)
    summary = store.read(TableRef("serving", "daily", "day"), list(ROWS_PER_DAY))
    assert summary["seen"].tolist() == [5, 5]


def test_batches_of_missing_partitions_follow_allow_missing(tmp_path: Path) -> None:
    events, _ = range_assets()
    assert run([events], tmp_path, partition_key="2024-01-01").success
    seen: list = []
    strict = batch_reader({BATCH_ROWS: 10}, seen)
    failed = run([events, strict], tmp_path, tags=RANGE_TAGS, selection=[strict], raise_on_error=False)
    assert not failed.success
    assert "never materialised" in str(failed.get_step_failure_events()[0].step_failure_data.error)
    lenient = batch_reader({BATCH_ROWS: 10, "allow_missing_partitions": True}, seen)
    assert run([events, lenient], tmp_path, tags=RANGE_TAGS, selection=[lenient]).success
    assert seen[-4] == ["2024-01-01"]

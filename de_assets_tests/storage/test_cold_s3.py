"""The cold tier on S3-compatible storage (a real moto server): no folders, no rename, cached listings.

"Another process" is an s3fs client of its own (``skip_instance_cache``): it shares nothing with the
filesystem instance fsspec keeps for the store under test, exactly like a second worker would.
"""

import datetime as dt

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from de_assets.security.erasure import suppress, suppression_list
from de_assets.storage import cold
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import PartitionState, TableRef
from de_assets.storage.tiering import TieredStore, checksum, move_to_cold
from de_assets_tests.servers.s3 import Bucket
from de_assets_tests.storage.test_cold import DAILY, WHOLE, failing_write, orders

DAYS = ["2024-01-01", "2024-01-02"]


@pytest.fixture
def store(s3_bucket: Bucket) -> ColdStore:
    # No storage options: endpoint and credentials come from the AWS variables, as in production.
    return ColdStore(s3_bucket.url("cold"))


def other_process(s3_bucket: Bucket) -> ColdStore:
    return ColdStore(s3_bucket.url("cold"), {"skip_instance_cache": True})


def objects(separate_s3, s3_bucket: Bucket) -> list[str]:
    return sorted(
        path.removeprefix(f"{s3_bucket.name}/cold/") for path in separate_s3.find(f"{s3_bucket.name}/cold")
    )


def test_round_trip_layout_and_listing(store, separate_s3, s3_bucket):
    frames = {"2024-01-01": orders(0, 3), "2024-01-02": orders(10, 2, "2024-01-02")}
    stats = store.write(DAILY, frames)
    store.write(WHOLE, {None: orders(50, 4)})
    assert objects(separate_s3, s3_bucket) == [
        "serving/summary/data.parquet",
        "transformation/orders/day=2024-01-01/part-0.parquet",
        "transformation/orders/day=2024-01-02/part-0.parquet",
    ]
    path = f"{s3_bucket.name}/cold/transformation/orders/day=2024-01-02/part-0.parquet"
    assert stats["2024-01-02"].bytes == separate_s3.size(path)
    assert stats["2024-01-02"].location == f"s3://{path}"
    # Read back independently of the store, and through it.
    with separate_s3.open(path, "rb") as f:
        pd.testing.assert_frame_equal(pq.read_table(f).to_pandas(), frames["2024-01-02"])
    pd.testing.assert_frame_equal(store.read(DAILY, DAYS), pd.concat(frames.values(), ignore_index=True))
    pd.testing.assert_frame_equal(store.read(WHOLE, [None]), orders(50, 4))
    assert store.partitions(DAILY) == dict.fromkeys(DAYS, PartitionState.PRESENT)
    assert store.states(DAILY, ["2024-01-02", "2024-01-09"]) == {
        "2024-01-02": PartitionState.PRESENT,
        "2024-01-09": PartitionState.MISSING,
    }
    batches = list(store.batches(DAILY, "2024-01-01", rows=2, columns=["order_id"]))
    assert [b["order_id"].tolist() for b in batches] == [[0, 1], [2]]


def test_replace_leaves_one_object_and_no_temporaries(store, separate_s3, s3_bucket):
    store.write(DAILY, {"2024-01-01": orders(0, 3)})
    store.write(DAILY, {"2024-01-01": orders(100, 5)})
    assert store.read(DAILY, ["2024-01-01"])["order_id"].tolist() == list(range(100, 105))
    assert objects(separate_s3, s3_bucket) == ["transformation/orders/day=2024-01-01/part-0.parquet"]


def test_every_call_sees_what_other_processes_did_since(store, s3_bucket):
    """s3fs caches listings in the filesystem instance fsspec shares: the store must not use them."""
    other = other_process(s3_bucket)
    store.write(DAILY, {"2024-01-01": orders(0, 3)})
    assert store.partitions(DAILY) == {"2024-01-01": PartitionState.PRESENT}
    assert store.read(DAILY, DAYS)["order_id"].tolist() == [0, 1, 2]

    other.write(DAILY, {"2024-01-01": orders(100, 5), "2024-01-02": orders(200, 1)})
    assert store.partitions(DAILY) == dict.fromkeys(DAYS, PartitionState.PRESENT)
    assert store.read(DAILY, DAYS)["order_id"].tolist() == [100, 101, 102, 103, 104, 200]
    assert [b["order_id"].tolist() for b in store.batches(DAILY, "2024-01-02", rows=10)] == [[200]]

    other.remove(DAILY, "2024-01-01", reason="retention")
    other.discard(DAILY, "2024-01-02")
    assert store.partitions(DAILY) == {"2024-01-01": PartitionState.REMOVED}
    assert store.states(DAILY, DAYS) == {
        "2024-01-01": PartitionState.REMOVED,
        "2024-01-02": PartitionState.MISSING,
    }
    assert list(store.batches(DAILY, "2024-01-02", rows=10)) == []


def failed_copy(fs, source: str, target: str) -> None:
    raise OSError("copy failed")


@pytest.mark.parametrize(
    ("step", "failure"),
    [("_write_parquet", "write failed"), ("_move", "copy failed")],
    ids=["upload", "copy"],  # on S3 a move is a copy (whole or not at all) and a delete
)
def test_a_failed_write_keeps_the_old_version_and_cleans_up(
    store, separate_s3, s3_bucket, monkeypatch, step, failure
):
    old = orders(0, 3)
    store.write(DAILY, {"2024-01-01": old})
    written: list[str] = []
    monkeypatch.setattr(cold, step, failing_write(written) if step == "_write_parquet" else failed_copy)
    with pytest.raises(OSError, match=failure):
        store.write(DAILY, {"2024-01-01": orders(50, 7)})
    assert objects(separate_s3, s3_bucket) == ["transformation/orders/day=2024-01-01/part-0.parquet"]
    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-01"]), old)


def test_a_killed_writer_leaves_temporaries_that_readers_skip_and_the_sweep_removes(
    store, separate_s3, s3_bucket
):
    old = orders(0, 3)
    store.write(DAILY, {"2024-01-01": old})
    folder = f"{s3_bucket.name}/cold/transformation/orders/day=2024-01-01"
    # Killed mid-upload (a half file) and killed between the copy and the delete of the move (a whole one).
    separate_s3.pipe_file(f"{folder}/_tmp-0{cold._TEMPORARY_SUFFIX}", b"PAR1" + b"\0" * 100)
    separate_s3.copy(f"{folder}/part-0.parquet", f"{folder}/_tmp-1{cold._TEMPORARY_SUFFIX}")

    pd.testing.assert_frame_equal(store.read(DAILY, ["2024-01-01"]), old)
    assert store.partitions(DAILY) == {"2024-01-01": PartitionState.PRESENT}
    dataset = ds.dataset(
        f"{s3_bucket.name}/cold/transformation/orders",
        filesystem=separate_s3,
        format="parquet",
        partitioning="hive",
    )
    assert dataset.files == [f"{folder}/part-0.parquet"]
    assert dataset.to_table().column("order_id").to_pylist() == [0, 1, 2]

    assert store.sweep_interrupted_writes(dt.timedelta(hours=1)) == []  # too young: maybe still writing
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    swept = store.sweep_interrupted_writes(dt.timedelta(hours=1), now=later)
    assert sorted(p.rsplit("/", 1)[-1] for p in swept) == [
        f"_tmp-{i}{cold._TEMPORARY_SUFFIX}" for i in (0, 1)
    ]
    assert objects(separate_s3, s3_bucket) == ["transformation/orders/day=2024-01-01/part-0.parquet"]


def test_remove_discard_and_rewrite(store, separate_s3, s3_bucket):
    store.write(DAILY, {day: orders(0, 2, day) for day in DAYS})
    store.remove(DAILY, "2024-01-01", reason="retention")
    store.discard(DAILY, "2024-01-02")
    assert objects(separate_s3, s3_bucket) == ["transformation/orders/day=2024-01-01/_REMOVED.json"]
    assert store.partitions(DAILY) == {"2024-01-01": PartitionState.REMOVED}
    store.write(DAILY, {"2024-01-01": orders(7, 1)})
    assert objects(separate_s3, s3_bucket) == ["transformation/orders/day=2024-01-01/part-0.parquet"]
    assert store.states(DAILY, DAYS) == {
        "2024-01-01": PartitionState.PRESENT,
        "2024-01-02": PartitionState.MISSING,
    }
    store.remove(WHOLE, None, reason="retention")
    assert store.states(WHOLE, [None]) == {None: PartitionState.REMOVED}


def test_move_to_cold_onto_s3(store, separate_s3, s3_bucket, tmp_path):
    table = TableRef("transformation", "things", "day")
    hot = HotStore(f"duckdb:///{tmp_path / 'hot.duckdb'}")
    frames = {day: orders(10 * i, 3, day) for i, day in enumerate(DAYS)}
    hot.write(table, frames)
    moved = move_to_cold(hot, store, table, "2024-01-01")
    assert (moved.rows, moved.checksum) == (3, checksum(frames["2024-01-01"]))
    assert hot.partitions(table) == {
        "2024-01-01": PartitionState.TIERED,
        "2024-01-02": PartitionState.PRESENT,
    }
    assert objects(separate_s3, s3_bucket) == ["transformation/things/day=2024-01-01/part-0.parquet"]
    # Readers find each partition in whichever tier holds it, another process's store included.
    tiered = TieredStore(hot, other_process(s3_bucket))
    got = tiered.read(table, DAYS)
    pd.testing.assert_frame_equal(got, pd.concat(frames.values(), ignore_index=True), check_dtype=False)
    assert tiered.location(table, "2024-01-01").startswith(f"s3://{s3_bucket.name}/cold/")


def test_the_suppression_list_in_the_bucket_is_seen_at_once_by_every_process(store, s3_bucket):
    assert suppression_list(store) == frozenset()  # listed while empty
    now = dt.datetime(2024, 1, 5, tzinfo=dt.UTC)
    suppress(other_process(s3_bucket), "token-1", now)  # `de-assets forget` on another machine
    assert suppression_list(store) == {"token-1"}
    suppress(store, "token-2", now)
    assert suppression_list(other_process(s3_bucket)) == {"token-1", "token-2"}


def test_a_missing_bucket_fails_the_write_and_is_never_created(s3_bucket, separate_s3):
    from de_assets.generation.landing import LandingFolder

    missing = f"{s3_bucket.name}-misspelt"
    with pytest.raises(FileNotFoundError):
        ColdStore(f"s3://{missing}/cold").write(DAILY, {DAYS[0]: orders(1, 3)})
    with pytest.raises(FileNotFoundError):
        LandingFolder(f"s3://{missing}/landing").write_atomic("clickstream_2024-01-01_01.jsonl", b"{}\n")
    assert not separate_s3.exists(missing)


def test_a_read_that_a_rewrite_overtakes_reads_the_new_version_whole(store, s3_bucket, monkeypatch):
    old, new = orders(1, 20_000), orders(100_000, 30_000)
    store.write(DAILY, {DAYS[0]: old})
    real_read_table = cold.pq.read_table
    overtaken: list[str] = []

    def overtaken_once(path, *, filesystem, **options):
        if overtaken:
            return real_read_table(path, filesystem=filesystem, **options)
        overtaken.append(path)
        handle = filesystem.open(path, "rb")  # the read begins: pinned to the old version's ETag
        other_process(s3_bucket).write(DAILY, {DAYS[0]: new})  # another process replaces the partition
        with handle:
            return real_read_table(handle, **options)  # the server refuses the old version's ranges

    monkeypatch.setattr(cold.pq, "read_table", overtaken_once)
    # The first attempt fails on the server's If-Match (FileExpired), never with mixed bytes; the
    # second reads the new version whole.
    pd.testing.assert_frame_equal(store.read(DAILY, [DAYS[0]]), new)
    assert len(overtaken) == 1

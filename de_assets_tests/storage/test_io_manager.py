"""The tier-independent partition logic of the IO managers."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.storage.io_manager import partition_field_for, split_by_partition
from de_assets.storage.tier import TableRef

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")
KEYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.integers(min_value=0, max_value=3 * 86_400_000_000 - 1), max_size=60))
def test_split_conserves_every_row_and_puts_it_in_its_day(offsets):
    stamps = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(offsets, unit="us")
    frame = pd.DataFrame({"event_time": stamps, "n": range(len(offsets))})
    parts = split_by_partition(frame, KEYS, DAILY, "event_time", "a")
    assert list(parts) == KEYS
    assert sum(len(p) for p in parts.values()) == len(frame)
    for key, part in parts.items():
        assert (part["event_time"].dt.strftime("%Y-%m-%d") == key).all()
    rejoined = pd.concat(parts.values()).sort_values("n")["n"].tolist()
    assert rejoined == list(range(len(offsets)))


def test_naive_dates_and_strings_are_understood_as_utc_days():
    frame = pd.DataFrame({"day": ["2024-01-03", "2024-01-01"], "x": [1, 2]})
    parts = split_by_partition(frame, KEYS, DAILY, "day", "a")
    assert [len(p) for p in parts.values()] == [1, 0, 1]
    dates = pd.DataFrame({"day": [dt.date(2024, 1, 2)], "x": [1]})
    assert len(split_by_partition(dates, KEYS, DAILY, "day", "a")["2024-01-02"]) == 1


def test_rows_outside_the_written_partitions_are_refused_not_dropped():
    frame = pd.DataFrame({"day": ["2024-01-01", "2024-01-09", None], "x": [1, 2, 3]})
    with pytest.raises(ValueError, match="2 of 3 rows have day outside"):
        split_by_partition(frame, KEYS, DAILY, "day", "a")


def test_range_without_partition_column_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="partition_column"):
        split_by_partition(pd.DataFrame({"x": [1]}), KEYS, DAILY, None, "stage/asset")


def test_single_partition_without_column_takes_the_whole_frame():
    frame = pd.DataFrame({"x": [1, 2]})
    assert split_by_partition(frame, KEYS[:1], DAILY, None, "a")[KEYS[0]] is frame


def test_static_partitions_split_on_their_keys():
    static = dg.StaticPartitionsDefinition(["eu", "us"])
    frame = pd.DataFrame({"region": ["us", "eu", "us"]})
    parts = split_by_partition(frame, ["eu", "us"], static, "region", "a")
    assert [len(p) for p in parts.values()] == [1, 2]
    with pytest.raises(ValueError, match="outside"):
        split_by_partition(pd.DataFrame({"region": ["apac"]}), ["eu", "us"], static, "region", "a")


def test_partition_field_names_and_table_refs():
    assert partition_field_for(DAILY) == "day"
    assert partition_field_for(dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")) == "hour"
    assert partition_field_for(dg.StaticPartitionsDefinition(["a"])) == "partition"
    assert partition_field_for(None) is None
    ref = TableRef.for_asset_key(dg.AssetKey(["transformation", "orders"]), "day")
    assert (ref.stage, ref.name, ref.qualified_name) == ("transformation", "orders", "transformation.orders")
    assert TableRef.for_asset_key(dg.AssetKey(["orders"])).stage == "default"

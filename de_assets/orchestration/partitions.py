"""Daily partitions (UTC), starting at the configured start date and ending with yesterday."""

from __future__ import annotations

import datetime as dt

import dagster as dg

# The run tags of a single-run backfill: a run carrying them covers the whole range in one go.
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make one run cover the partitions ``first``..``last`` (single-run backfill policy)."""
    return {RANGE_START: first, RANGE_END: last}


def daily_partitions(start_date: dt.date) -> dg.DailyPartitionsDefinition:
    # end_offset=0: the newest partition is the last complete day, so schedules and freshness line
    # up with the real clock.
    return dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC", end_offset=0)


def days_of(context: dg.AssetExecutionContext) -> list[tuple[str, dt.date]]:
    """(partition key, day) for every day a run covers: one for a single partition, all for a range."""
    return [(key, dt.date.fromisoformat(key)) for key in context.partition_keys]


def first_day(partitions_def: dg.PartitionsDefinition) -> dt.date | None:
    """The first partition's day, or None for a definition without a start (not time-windowed)."""
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return partitions_def.start.date()
    return None

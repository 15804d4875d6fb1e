"""Schedules: the daily lifecycle run, and storage maintenance with its job.

The daily schedule runs the main job for yesterday's partition shortly after midnight UTC (the
partitions end with the last complete day). The maintenance job keeps the tiers tidy: it folds the
embedded hot tier's write-ahead log into the database file, removes the temporary files of cold
writes that crashed, moves hot partitions older than ``DE_ASSETS_HOT_DAYS`` to the cold tier and
deletes raw-zone partitions older than ``DE_ASSETS_RAW_RETENTION_DAYS`` (``storage.tiering``).
"""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import dagster as dg

from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.settings import COLD, HOT
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.io_manager import TierIOManager
from de_assets.storage.tier import TableRef
from de_assets.storage.tiering import TieredStore, drop_stale_cold_copies, expire, tier

DAILY_SCHEDULE = "daily_lifecycle_schedule"
MAINTENANCE_JOB = "maintenance_job"
MAINTENANCE_SCHEDULE = "maintenance_schedule"
# Older than any write in progress: a partition write takes seconds, even at millions of rows.
INTERRUPTED_WRITE_AGE = dt.timedelta(hours=1)


@dg.op(
    pool=HOT_TIER_POOL,
    required_resource_keys={HOT},
    description="Runs the hot tier database's housekeeping (DuckDB: CHECKPOINT, which folds the "
    "write-ahead log into the database file).",
)
def maintain_hot_tier(context: dg.OpExecutionContext) -> None:
    manager: TierIOManager = getattr(context.resources, HOT)
    store = manager.build_store()
    ran = store.maintain() if isinstance(store, HotStore | TieredStore) else []
    context.log.info(f"hot tier housekeeping: {', '.join(ran) or 'nothing to do for this database'}")
    context.add_output_metadata({"statements": ", ".join(ran) or "none"})


@dg.op(
    required_resource_keys={COLD},
    description="Removes the temporary files of cold-tier writes that crashed (older than an hour; "
    "readers never see them, so this only reclaims space).",
)
def sweep_cold_tier(context: dg.OpExecutionContext) -> None:
    manager: TierIOManager = getattr(context.resources, COLD)
    store = manager.build_store()
    removed = store.sweep_interrupted_writes(INTERRUPTED_WRITE_AGE) if isinstance(store, ColdStore) else []
    for path in removed:
        context.log.info(f"removed the leftover of an interrupted write: {path}")
    context.add_output_metadata({"interrupted_writes_removed": len(removed)})


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _tiered_store(context: dg.OpExecutionContext) -> TieredStore:
    store = getattr(context.resources, HOT).build_store()
    if not isinstance(store, TieredStore):
        raise TypeError("the hot tier IO manager has no cold_root: tiering needs both tiers")
    return store


def build_maintenance_job(
    hot_tables: Sequence[TableRef], raw_tables: Sequence[TableRef], *, hot_days: int, raw_retention_days: int
) -> dg.JobDefinition:
    """The maintenance job over the given hot-tier tables (tiering) and raw-zone tables (retention)."""

    @dg.op(
        pool=HOT_TIER_POOL,
        required_resource_keys={HOT},
        description=f"Moves hot-tier partitions older than {hot_days} days to the cold tier, each verified "
        "by row count and checksum before its hot rows are dropped; deletes cold copies of partitions a "
        "backfill has rewritten in the hot tier since.",
    )
    def tier_hot_partitions(context: dg.OpExecutionContext) -> None:
        store = _tiered_store(context)
        before = _today() - dt.timedelta(days=hot_days)
        stale = drop_stale_cold_copies(store.hot, store.cold, hot_tables)
        for table, key in stale:
            context.log.info(
                f"deleted the stale cold copy of {table} partition {key} (the hot tier holds it)"
            )
        moved = tier(store.hot, store.cold, hot_tables, before=before)
        for item in moved:
            context.log.info(
                f"moved {item.table} partition {item.partition} to the cold tier ({item.rows} rows)"
            )
        context.add_output_metadata(
            {
                "partitions_moved": len(moved),
                "rows_moved": sum(item.rows for item in moved),
                "stale_cold_copies_deleted": len(stale),
                "moved": dg.MetadataValue.json([vars(item) for item in moved]),
                "older_than": before.isoformat(),
            }
        )

    @dg.op(
        required_resource_keys={COLD},
        description=f"Deletes raw-zone partitions older than {raw_retention_days} days (a removal marker "
        "with the reason stays, so a later read fails clearly instead of reading nothing).",
    )
    def expire_raw_partitions(context: dg.OpExecutionContext) -> None:
        store = getattr(context.resources, COLD).build_store()
        before = _today() - dt.timedelta(days=raw_retention_days)
        reason = f"retention: raw-zone partitions are kept {raw_retention_days} days"
        expired = expire(store, raw_tables, before=before, reason=reason)
        for item in expired:
            context.log.info(f"deleted {item.table} partition {item.partition} ({item.reason})")
        context.add_output_metadata(
            {
                "partitions_deleted": len(expired),
                "deleted": dg.MetadataValue.json([f"{item.table}/{item.partition}" for item in expired]),
                "older_than": before.isoformat(),
            }
        )

    @dg.job(
        name=MAINTENANCE_JOB,
        description="Storage housekeeping and data lifecycle for both tiers (on its own schedule, or by "
        "hand from the UI): hot-tier checkpoint, interrupted cold writes, tiering, raw retention.",
    )
    def maintenance_job() -> None:
        maintain_hot_tier()
        sweep_cold_tier()
        tier_hot_partitions()
        expire_raw_partitions()

    return maintenance_job


def build_schedules(main_job: Any, maintenance_job: dg.JobDefinition) -> list[Any]:
    """The daily lifecycle schedule (yesterday's partition) and the nightly maintenance schedule.

    ``main_job`` is what :func:`dagster.define_asset_job` returns; neither that class nor the
    partitioned schedule built from it is exported by Dagster, hence ``Any``.
    """

    # Written out rather than dg.build_schedule_from_partitioned_job, which calls a deprecated API
    # (JobDefinition.run_request_for_partition) on every tick in Dagster 1.13.
    @dg.schedule(
        name=DAILY_SCHEDULE,
        job=main_job,
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        description="Yesterday's partition of the whole lifecycle, at 00:30 UTC.",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        yesterday = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
        key = yesterday.isoformat()
        return dg.RunRequest(run_key=key, partition_key=key)

    maintenance = dg.ScheduleDefinition(
        name=MAINTENANCE_SCHEDULE,
        job=maintenance_job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        description="Storage maintenance at 03:00 UTC, after the daily run.",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return [daily, maintenance]

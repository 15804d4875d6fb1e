"""Schedules: the daily lifecycle run, and storage maintenance with its job.

The daily schedule runs the main job for yesterday's partition shortly after midnight UTC (the
partitions end with the last complete day). The maintenance job keeps the tiers tidy: it folds the
embedded hot tier's write-ahead log into the database file and removes the temporary files of cold
writes that crashed. The undercurrents issue adds tiering and retention to the same job.
"""

import datetime as dt
from typing import Any

import dagster as dg

from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.settings import COLD, HOT
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.io_manager import TierIOManager

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
    ran = store.maintain() if isinstance(store, HotStore) else []
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


@dg.job(name=MAINTENANCE_JOB, description="Storage housekeeping for both tiers (on its own schedule).")
def maintenance_job() -> None:
    maintain_hot_tier()
    sweep_cold_tier()


def build_schedules(main_job: Any) -> list[Any]:
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

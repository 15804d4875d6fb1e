"""The daily schedule targets yesterday's partition; the maintenance job tidies both tiers."""

import datetime as dt
import os
import time

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from de_assets.definitions import MAIN_JOB, build_definitions
from de_assets.orchestration.schedules import DAILY_SCHEDULE, MAINTENANCE_JOB, MAINTENANCE_SCHEDULE
from de_assets.settings import HOME, load_settings
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef

TODAY = dt.date(2026, 11, 22)


def _definitions(tmp_path):
    settings = load_settings({HOME: str(tmp_path), "DE_ASSETS_START_DATE": "2026-11-01"}, today=TODAY)
    return settings, build_definitions(settings)


def test_the_daily_schedule_runs_the_lifecycle_for_yesterday(tmp_path):
    _, definitions = _definitions(tmp_path)
    schedule = definitions.resolve_schedule_def(DAILY_SCHEDULE)
    assert schedule.job_name == MAIN_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = dt.datetime(2026, 11, 22, 0, 30, tzinfo=dt.UTC)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=definitions.get_repository_def()
        )
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-11-21"]


def test_the_maintenance_job_checkpoints_the_hot_tier_and_sweeps_crashed_cold_writes(tmp_path):
    settings, definitions = _definitions(tmp_path)
    assert definitions.resolve_schedule_def(MAINTENANCE_SCHEDULE).job_name == MAINTENANCE_JOB
    HotStore(settings.hot_url.value).write(
        TableRef("transformation", "t", "day"), {"2026-11-02": pd.DataFrame({"a": [1]})}
    )
    folder = tmp_path / "cold" / "transformation" / "t" / "day=2026-11-02"
    folder.mkdir(parents=True)
    stale, fresh, data = (
        folder / "_tmp-a.parquet.tmp",
        folder / "_tmp-b.parquet.tmp",
        folder / "part-0.parquet",
    )
    for path in (stale, fresh, data):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(data, (two_hours_ago, two_hours_ago))
    with dg.DagsterInstance.ephemeral() as instance:
        result = definitions.resolve_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance)
    assert result.success
    assert not stale.exists()
    assert fresh.exists()  # may be a write in progress
    assert data.exists()
    ran = {
        e.step_key: e.event_specific_data.metadata
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
    }
    assert ran["maintain_hot_tier"]["statements"].value == "CHECKPOINT"
    assert ran["sweep_cold_tier"]["interrupted_writes_removed"].value == 1
    engine = sa.create_engine(settings.hot_url.value)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM transformation.t")).scalar_one() == 1
    engine.dispose()

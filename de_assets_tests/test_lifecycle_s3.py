"""One day of the lifecycle with the cold tier and the landing folder on S3-compatible storage.

Configured as production configures it: ``DE_ASSETS_COLD_URL`` and ``DE_ASSETS_LANDING_DIR`` name
``s3://`` URLs, and endpoint, region and credentials are the standard AWS variables (set by the
``s3_bucket`` fixture), which no Dagster config mentions.
"""

import datetime as dt

import dagster as dg
import pytest

from de_assets.definitions import MAIN_JOB, build_definitions
from de_assets.ingestion.assets import RAW_EVENTS
from de_assets.orchestration.landing_sensor import LANDING_SENSOR
from de_assets.settings import COLD_URL, HOME, LANDING_DIR, START_DATE, load_settings
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import EVENTS
from de_assets_tests.servers.s3 import Bucket

TODAY = dt.date(2026, 11, 22)
DAY = "2026-11-12"
TRAFFIC = {"orders_per_day": 40, "events_per_day": 300, "seed": 5, "clickstream_batches": 3}


def lines_of(data: bytes) -> int:
    """Delivered lines as the raw zone counts them: a final line ending ends a line, it starts none."""
    return len(data.split(b"\n")) - data.endswith(b"\n") if data else 0


@pytest.fixture
def home(tmp_path, s3_bucket: Bucket, monkeypatch):
    for variable, value in {
        HOME: str(tmp_path / "home"),
        START_DATE: "2026-11-09",
        COLD_URL: s3_bucket.url("cold"),
        LANDING_DIR: s3_bucket.url("landing"),
    }.items():
        monkeypatch.setenv(variable, value)  # resources read them as EnvVar when the run starts
    return tmp_path / "home"


def test_a_day_lands_and_is_ingested_and_transformed_through_the_bucket(home, s3_bucket, separate_s3):
    settings = load_settings(today=TODAY)
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    result = definitions.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance,
        partition_key=DAY,
        run_config={"resources": {"simulation": {"config": TRAFFIC}}},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.get_step_failure_events()]

    # Looked at with a client of its own: the files landed in the bucket, and the raw zone there holds
    # every line of each of them.
    landed = {
        path.rsplit("/", 1)[-1]: separate_s3.cat_file(path)
        for path in separate_s3.find(f"{s3_bucket.name}/landing")
    }
    assert len(landed) == TRAFFIC["clickstream_batches"]
    assert all(name.startswith(f"clickstream_{DAY}_") for name in landed)
    raw = ColdStore(s3_bucket.url("cold"), {"skip_instance_cache": True}).read(
        TableRef.for_asset_key(RAW_EVENTS, "day"), [DAY]
    )
    assert raw.groupby("source_file").size().to_dict() == {
        name: lines_of(data) for name, data in landed.items()
    }
    assert not (home / "cold").exists()
    assert not (home / "landing").exists()

    events = HotStore(settings.hot_url.value).read(TableRef.for_asset_key(EVENTS, "day"), [DAY])
    assert 0 < len(events) <= len(raw)
    assert set(events["delivery_day"]) == {DAY}

    # The landing sensor of the same Definitions sees the day's files in the bucket.
    with dg.build_sensor_context(
        instance=instance, definitions=definitions, resources={"landing": definitions.resources["landing"]}
    ) as context:
        data = definitions.resolve_sensor_def(LANDING_SENSOR).evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == [DAY]

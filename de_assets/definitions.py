"""Assembles the Definitions from the stages; nothing else lives here."""

from __future__ import annotations

import dagster as dg

from de_assets.catalog.catalogue import catalogued
from de_assets.generation.assets import GROUP as GENERATION
from de_assets.generation.assets import build_generation_assets
from de_assets.ingestion.assets import GROUP as INGESTION
from de_assets.ingestion.assets import build_ingestion_assets
from de_assets.orchestration.alerts import build_alert_sensor
from de_assets.orchestration.executor import build_executor
from de_assets.orchestration.landing_sensor import build_landing_sensor
from de_assets.orchestration.partitions import daily_partitions
from de_assets.orchestration.pools import check_hot_tier_pools
from de_assets.orchestration.propagation import build_propagation_sensor
from de_assets.orchestration.schedules import build_maintenance_job, build_schedules
from de_assets.orchestration.source_sensor import build_source_db_sensor
from de_assets.security.jobs import forget_job
from de_assets.serving.assets import GROUP as SERVING
from de_assets.serving.assets import build_serving_assets
from de_assets.settings import HOT, Settings, build_resources, load_settings
from de_assets.storage.io_manager import partition_field_for
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import GROUP as TRANSFORMATION
from de_assets.transformation.assets import build_transformation_assets

MAIN_JOB = "main_job"
REPLAY_JOB = "replay_job"


def _tables(assets: list[dg.AssetsDefinition], tag: str, value: str) -> list[TableRef]:
    """The tier tables of the daily-partitioned assets tagged ``tag=value`` (tiering, retention)."""
    return [
        TableRef.for_asset_key(spec.key, partition_field_for(definition.partitions_def))
        for definition in assets
        if definition.partitions_def is not None
        for spec in definition.specs
        if spec.tags.get(tag) == value
    ]


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings.start_date)
    main_job = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups(GENERATION, INGESTION, TRANSFORMATION, SERVING),
        description="The whole lifecycle for a day (or a range of days), stage by stage.",
    )
    replay_job = dg.define_asset_job(
        REPLAY_JOB,
        selection=dg.AssetSelection.groups(TRANSFORMATION, SERVING),
        description="Rebuilds transformation and serving partitions from the raw zone alone, without "
        "reading the sources (serving's reverse ETL still writes its segments to the shop).",
    )
    assets = catalogued(
        [
            *build_generation_assets(partitions),
            *build_ingestion_assets(
                partitions,
                order_lookback_days=settings.order_lookahead_days,
                customer_lookback_days=settings.customer_lookahead_days,
            ),
            *build_transformation_assets(
                partitions,
                late_days=settings.late_days,
                order_lookahead_days=settings.order_lookahead_days,
                customer_lookahead_days=settings.customer_lookahead_days,
                contract_threshold=settings.contract_threshold,
            ),
            *build_serving_assets(
                partitions,
                late_days=settings.late_days,
                order_lookahead_days=settings.order_lookahead_days,
                customer_lookahead_days=settings.customer_lookahead_days,
            ),
        ]
    )
    check_hot_tier_pools(assets, HOT)
    maintenance_job = build_maintenance_job(
        _tables(assets, "tier", "hot"),
        _tables(assets, "zone", "raw"),
        hot_days=settings.hot_days,
        raw_retention_days=settings.raw_retention_days,
    )
    interval = settings.sensor_interval_seconds
    return dg.Definitions(
        assets=assets,
        jobs=[main_job, replay_job, maintenance_job, forget_job],
        schedules=build_schedules(main_job, maintenance_job),
        sensors=[
            build_landing_sensor(partitions, minimum_interval_seconds=interval),
            build_source_db_sensor(
                partitions, minimum_interval_seconds=interval, scan_days=settings.source_scan_days
            ),
            build_propagation_sensor(
                partitions, late_days=settings.late_days, minimum_interval_seconds=interval
            ),
            build_alert_sensor(alerts_file=settings.alerts_file, minimum_interval_seconds=interval),
        ],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Settings are read here, when the code location loads, never at import.
    return build_definitions(load_settings())

"""Assembles the Definitions from the stages; nothing else lives here."""

from __future__ import annotations

import dagster as dg

from de_assets.generation.assets import GROUP as GENERATION
from de_assets.generation.assets import build_generation_assets
from de_assets.orchestration.partitions import daily_partitions
from de_assets.orchestration.pools import check_hot_tier_pools
from de_assets.settings import HOT, Settings, build_resources, load_settings

MAIN_JOB = "main_job"


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings.start_date)
    main_job = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups(GENERATION),
        description="The whole lifecycle for a day (or a range of days), stage by stage.",
    )
    assets = [*build_generation_assets(partitions)]
    check_hot_tier_pools(assets, HOT)
    return dg.Definitions(
        assets=assets,
        jobs=[main_job],
        resources=build_resources(settings),
        # The multiprocess executor costs over a second per step on two cores; steps are I/O bound.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Settings are read here, when the code location loads, never at import.
    return build_definitions(load_settings())

"""The generation stage as daily-partitioned assets wrapping the simulator.

Materialising a day writes that day's traffic into the source systems, replacing what the day
wrote before. The assets store nothing in the storage tiers: their products are the source systems.
"""

import dagster as dg

from de_assets.generation.resources import (
    DefectLedgerResource,
    LandingFolderResource,
    ShopDatabaseResource,
    SimulationResource,
)
from de_assets.generation.simulator import shop_customer_pool, simulate_clickstream_day, simulate_shop_day
from de_assets.orchestration.partitions import days_of
from de_assets.orchestration.pools import SOURCE_DB_POOL

GROUP = "generation"
SHOP_DATABASE = dg.AssetKey([GROUP, "shop_database"])
CLICKSTREAM_LANDING = dg.AssetKey([GROUP, "clickstream_landing"])


def build_generation_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=SHOP_DATABASE,
        group_name=GROUP,
        partitions_def=partitions_def,
        # Days are applied in order inside one run; a range is one run so a backfill is cheap.
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=SOURCE_DB_POOL,
        kinds={"sqlalchemy", "python"},
        tags={"stage": GROUP, "tier": "source", "pii": "true"},
        description="The shop's OLTP database (customers, orders): a day's sign-ups and orders, the status "
        "and e-mail changes of earlier rows, and hard deletes.",
    )
    def shop_database(
        context: dg.AssetExecutionContext,
        shop: ShopDatabaseResource,
        ledger: DefectLedgerResource,
        simulation: SimulationResource,
    ) -> dg.MaterializeResult:
        params = simulation.params()
        for key, day in days_of(context):
            summary = simulate_shop_day(shop.url, ledger.folder, day, params)
            context.add_asset_metadata(
                {
                    "customers_created": summary.customers_created,
                    "orders_created": summary.orders_created,
                    "orders_updated": summary.orders_updated,
                    "orders_deleted": summary.orders_deleted,
                    "customers_updated": summary.customers_updated,
                    "customers_deleted": summary.customers_deleted,
                    "defects_injected": summary.defects,
                    "seed": params.seed,
                },
                partition_key=key,
            )
        return dg.MaterializeResult()

    @dg.asset(
        key=CLICKSTREAM_LANDING,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        # Browsing customers come from the shop database, so the day's shop traffic comes first.
        deps=[SHOP_DATABASE],
        kinds={"json", "python"},
        tags={"stage": GROUP, "tier": "source", "pii": "true"},
        description="Clickstream JSON-lines files delivered in batches into the landing folder, named after "
        "their delivery day, with duplicates, late events, malformed lines and schema drift.",
    )
    def clickstream_landing(
        context: dg.AssetExecutionContext,
        shop: ShopDatabaseResource,
        landing: LandingFolderResource,
        ledger: DefectLedgerResource,
        simulation: SimulationResource,
    ) -> dg.MaterializeResult:
        params = simulation.params()
        folder = landing.folder()
        for key, day in days_of(context):
            summary = simulate_clickstream_day(
                folder, ledger.folder, day, params, shop_customer_pool(shop.url, day)
            )
            context.add_asset_metadata(
                {
                    "files": dg.MetadataValue.json(summary.files),
                    "lines": summary.lines,
                    "defects_injected": summary.defects,
                    "seed": params.seed,
                },
                partition_key=key,
            )
        return dg.MaterializeResult()

    return [shop_database, clickstream_landing]

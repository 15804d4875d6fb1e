"""Dagster pools: every step that opens a single-writer database goes through one of these.

The limits live in the instance configuration (``dagster.yaml``: ``concurrency.pools.default_limit``).
"""

from collections.abc import Iterable

import dagster as dg

# The embedded hot tier (DuckDB): one process writing blocks every other reader and writer.
HOT_TIER_POOL = "hot_tier"
# The embedded shop database (SQLite): one writer at a time.
SOURCE_DB_POOL = "source_db"


def check_hot_tier_pools(assets: Iterable[dg.AssetsDefinition], hot_key: str) -> None:
    """Refuse an asset stored in the hot tier whose step does not go through :data:`HOT_TIER_POOL`.

    Reading it goes through the same file, so its consumers must be in the pool too; that is checked
    where the stages declare their inputs.
    """
    offenders = [
        key.to_user_string()
        for assets_def in assets
        for key in assets_def.keys
        if assets_def.get_io_manager_key_for_asset_key(key) == hot_key and assets_def.op.pool != HOT_TIER_POOL
    ]
    if offenders:
        raise ValueError(
            f"assets stored in the hot tier must set pool={HOT_TIER_POOL!r}: {sorted(offenders)}"
        )

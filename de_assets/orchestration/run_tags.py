"""Run tags that the instance's run queue limits (see de_assets/orchestration/dagster.yaml).

Two runs that ingest the same partition of the same raw asset would both read its previous capture
and write it back, and one of them would lose what the other added. Every run a sensor requests for a
raw partition therefore carries :data:`RAW_PARTITION_LOCK` with the value from :func:`raw_partition_lock`,
and the queued run coordinator starts at most one run per value at a time
(``tag_concurrency_limits`` with ``applyLimitPerUniqueValue``).
"""

from __future__ import annotations

import dagster as dg

RAW_PARTITION_LOCK = "de_assets/raw_partition"


def raw_partition_lock(asset_key: dg.AssetKey, partition_key: str) -> dict[str, str]:
    """The run tag that serialises runs writing ``partition_key`` of the raw asset ``asset_key``."""
    return {RAW_PARTITION_LOCK: f"{asset_key.to_user_string()}@{partition_key}"}

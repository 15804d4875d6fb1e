"""Resources of the serving stage: keyed reads from the warehouse, the reverse ETL's writer, reports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from de_assets.security.redaction import RedactedRepr
from de_assets.serving.reverse_etl import segments_writer, shop_database_exists
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import PartitionState, TableRef
from de_assets.storage.tiering import TieredStore, hot_store


class WarehouseResource(RedactedRepr, dg.ConfigurableResource):
    """Reads of hot-tier tables that an input mapping cannot express: a join to a dimension by key,
    and the recent partitions of an asset's own history."""

    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ("url",)

    url: str = Field(description="SQLAlchemy URL of the hot tier (the same as the hot IO manager's)")
    cold_root: str = Field(default="", description="Cold tier root, where old hot partitions are moved")

    def _store(self) -> HotStore | TieredStore:
        return hot_store(self.url, self.cold_root)

    def lookup(
        self, key: dg.AssetKey, column: str, values: Sequence[object], columns: Sequence[str]
    ) -> pd.DataFrame:
        """``columns`` of the rows of ``key`` (any partition) whose ``column`` is one of ``values``."""
        return self._store().lookup(TableRef.for_asset_key(key, "day"), column, values, columns)

    def partitions(self, key: dg.AssetKey, partition_keys: Sequence[str]) -> pd.DataFrame:
        """The rows of those partitions of ``key`` that exist (missing ones are simply absent)."""
        states, frame = self._store().load(TableRef.for_asset_key(key, "day"), list(partition_keys))
        return frame if any(s is PartitionState.PRESENT for s in states.values()) else pd.DataFrame()


class SegmentsDatabaseResource(RedactedRepr, dg.ConfigurableResource):
    """The reverse ETL's own connection to the shop database (never ingestion's read-only one)."""

    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ("url",)

    url: str = Field(description="SQLAlchemy URL the segments are written through (give it as EnvVar)")

    @contextmanager
    def writer(self) -> Iterator[sa.Engine]:
        with segments_writer(self.url) as engine:
            yield engine

    def exists(self) -> bool:
        """Whether the shop's database is there to write to (an embedded file may not exist yet)."""
        return shop_database_exists(self.url)


class ReportsResource(dg.ConfigurableResource):
    """The local folder where report files (charts) are written for people to pick up."""

    folder: str = Field(description="Local folder for report files")

    def path(self, *parts: str) -> Path:
        target = Path(self.folder).expanduser().joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

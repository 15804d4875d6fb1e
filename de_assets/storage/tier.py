"""The contract every storage tier implements, independent of Dagster.

A tier stores tables addressed by :class:`TableRef` (stage + asset name). A partitioned table is a
set of independently replaceable partitions; an unpartitioned table is addressed with the partition
key ``None``. The Dagster IO manager in :mod:`de_assets.storage.io_manager` turns contexts into calls
on this interface, so each tier only knows how to move frames in and out of its medium.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import dagster as dg
import pandas as pd

from de_assets.security.identifiers import safe_identifier, safe_partition_key

# The stage used when an asset key has a single component.
DEFAULT_STAGE = "default"

PartitionKey = str | None
"""A partition key, or ``None`` for the whole of an unpartitioned table."""


class PartitionState(StrEnum):
    PRESENT = "present"  # written and readable (possibly with zero rows)
    MISSING = "missing"  # never written
    REMOVED = "removed"  # written once, then deleted on purpose (retention, erasure)
    TIERED = "tiered"  # moved to the cold tier (recorded by the hot tier, which no longer holds it)


@dataclass(frozen=True)
class TableRef:
    """Where an asset lives in a tier: ``stage`` is the schema or top folder, ``name`` the table."""

    stage: str
    name: str
    # Name of the partition dimension in file layouts (``day`` gives ``day=YYYY-MM-DD/``);
    # ``None`` for unpartitioned tables.
    partition_field: str | None = None

    def __post_init__(self) -> None:
        safe_identifier(self.stage, "stage (schema) name")
        safe_identifier(self.name, "table name")
        if self.partition_field is not None:
            safe_identifier(self.partition_field, "partition field name")

    @classmethod
    def for_asset_key(cls, key: dg.AssetKey, partition_field: str | None = None) -> TableRef:
        """``["transformation", "orders"]`` → ``transformation.orders``; one component → default stage."""
        *prefix, name = key.path
        stage = "__".join(prefix) if prefix else DEFAULT_STAGE
        return cls(stage=stage, name=name, partition_field=partition_field)

    @property
    def qualified_name(self) -> str:
        return f"{self.stage}.{self.name}"

    def check_key(self, key: PartitionKey) -> PartitionKey:
        """Refuse a key that does not fit this table (a partition key on an unpartitioned one, or vice versa)."""
        if (key is None) != (self.partition_field is None):
            kind = "partitioned" if self.partition_field else "unpartitioned"
            raise ValueError(f"{self.qualified_name} is {kind}; got partition key {key!r}")
        return None if key is None else safe_partition_key(key)


@dataclass(frozen=True)
class WriteStats:
    """What one partition's write stored: shown to people as metadata."""

    rows: int
    bytes: int
    location: str  # never contains a password


class StorageError(Exception):
    """Base for errors that name the asset, partition and tier involved."""


class PartitionNotFoundError(StorageError):
    pass


class PartitionRemovedError(StorageError):
    pass


class IncompatibleSchemaError(StorageError):
    pass


def describe(tier: str, table: TableRef, keys: Sequence[PartitionKey]) -> str:
    """A human description such as ``partition 2024-01-03 of transformation.orders in the cold tier``."""
    shown = [k for k in keys if k is not None]
    if not shown:
        return f"{table.qualified_name} in the {tier} tier"
    listed = ", ".join(shown[:5]) + (f" (+{len(shown) - 5} more)" if len(shown) > 5 else "")
    word = "partition" if len(shown) == 1 else "partitions"
    return f"{word} {listed} of {table.qualified_name} in the {tier} tier"


class TierStore(Protocol):
    """One storage tier. Implementations must be safe to construct per step and hold no open connections."""

    tier: str  # "hot" or "cold"

    def write(
        self, table: TableRef, frames: Mapping[PartitionKey, pd.DataFrame]
    ) -> dict[PartitionKey, WriteStats]:
        """Replace each given partition (or the whole unpartitioned table, key ``None``) with its frame.

        Each partition is replaced atomically: a crash leaves either the old or the new version whole.
        A written partition that had been removed becomes present again. Columns new to the table are
        added; a column whose type changes incompatibly raises :class:`IncompatibleSchemaError`
        before anything is changed.
        """
        ...

    def states(self, table: TableRef, keys: Sequence[PartitionKey]) -> dict[PartitionKey, PartitionState]:
        """The state of each key."""
        ...

    def read(self, table: TableRef, keys: Sequence[PartitionKey]) -> pd.DataFrame:
        """Concatenate the present partitions among ``keys`` in the order given, with one unified schema.

        Keys that are not present are skipped (the caller decides whether that is an error). With no
        present partition, returns an empty frame with the table's columns if any partition exists,
        else an empty frame without columns.
        """
        ...

    def load(
        self, table: TableRef, keys: Sequence[PartitionKey]
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        """``states`` and ``read`` of the present keys together, in one round trip where the tier can."""
        ...

    def remove(self, table: TableRef, key: PartitionKey, reason: str) -> None:
        """Delete a partition's data and remember that it was removed on purpose (and why)."""
        ...

    def location(self, table: TableRef, key: PartitionKey) -> str:
        """Where a partition lives, for people (never with a password)."""
        ...

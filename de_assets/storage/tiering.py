"""Data lifecycle across the tiers: hot partitions age into the cold tier, raw partitions expire.

**One record says where a partition lives**: the hot tier's catalog. ``present`` means the hot table
holds it, ``tiered`` that the cold tier does (same layout as the cold assets: ``<stage>/<table>/day=D``),
``removed`` that it was deleted on purpose. :class:`TieredStore` reads through that record, so any
reader (IO manager inputs, warehouse lookups, backfills) finds a partition in whichever tier holds it.

Moving a partition (:func:`move_to_cold`): copy to cold, read the copy back and compare row count and
an order-independent checksum of every value with the hot rows, and only then drop the hot rows and
record ``tiered`` in one hot-tier transaction. A crash at any point leaves one readable copy: before the
record changes, readers use hot (a cold copy may exist and is swept later); after, cold.

Rewriting a tiered partition (a backfill) writes it to the hot tier and records ``present`` in the same
transaction, then deletes the cold copy, so there are never two copies for readers; a crash between
the two leaves a stale cold copy that nobody reads and :func:`drop_stale_cold_copies` deletes.

**Retention** (:func:`expire`) removes raw-zone partitions older than a cut-off with a removal marker and
its reason, so a later read of such a partition fails clearly ("removed on purpose") instead of reading
as empty.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import PartitionKey, PartitionState, StorageError, TableRef, WriteStats


class TieringError(StorageError):
    """A cold copy did not match the hot partition, or a tiered partition's cold copy is missing."""


@dataclass(frozen=True)
class Moved:
    table: str
    partition: str
    rows: int
    checksum: str


@dataclass(frozen=True)
class Expired:
    table: str
    partition: str
    reason: str


def checksum(frame: pd.DataFrame) -> str:
    """An order-independent fingerprint of every value (columns in name order, row order ignored)."""
    if frame.empty:
        return f"0:{len(frame.columns)}"
    hashes = pd.util.hash_pandas_object(frame[sorted(frame.columns)], index=False).to_numpy(dtype=np.uint64)
    return f"{hashes.sum(dtype=np.uint64):016x}:{np.bitwise_xor.reduce(hashes):016x}"


class TieredStore:
    """A hot store whose old partitions may live in the cold tier (see the module docstring)."""

    tier = "hot"

    def __init__(self, hot: HotStore, cold: ColdStore) -> None:
        self.hot = hot
        self.cold = cold

    def maintain(self) -> list[str]:
        return self.hot.maintain()

    def _with_tiered(
        self,
        table: TableRef,
        states: dict[PartitionKey, PartitionState],
        frame: pd.DataFrame,
        columns: Sequence[str] | None = None,
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        tiered = [key for key, state in states.items() if state is PartitionState.TIERED]
        if not tiered:
            return states, frame
        cold_states, cold_frame = self.cold.load(table, tiered, columns)
        lost = [key for key in tiered if cold_states[key] is not PartitionState.PRESENT]
        if lost:
            raise TieringError(
                f"{table.qualified_name}: partitions {', '.join(map(str, lost))} are recorded as moved to the "
                f"cold tier, but the cold tier has no copy ({self.cold.location(table, lost[0])})"
            )
        merged = {**states, **dict.fromkeys(tiered, PartitionState.PRESENT)}
        parts = [f for f in (cold_frame, frame) if len(f.columns)]
        # Tiered partitions are the older ones: cold rows first keeps the days in order.
        return merged, pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts or [frame])[0]

    def load(
        self, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None = None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        states, frame = self.hot.load(table, keys, columns)
        return self._with_tiered(table, states, frame, columns)

    def read(self, table: TableRef, keys: Sequence[PartitionKey]) -> pd.DataFrame:
        return self.load(table, keys)[1]

    def states(self, table: TableRef, keys: Sequence[PartitionKey]) -> dict[PartitionKey, PartitionState]:
        states = self.hot.states(table, keys)
        return {k: PartitionState.PRESENT if s is PartitionState.TIERED else s for k, s in states.items()}

    def write(
        self, table: TableRef, frames: Mapping[PartitionKey, pd.DataFrame]
    ) -> dict[PartitionKey, WriteStats]:
        stats = self.hot.write(table, frames)
        if table.partition_field is not None:
            drop_stale_cold_copies(self.hot, self.cold, [table], keys=[k for k in frames if k is not None])
        return stats

    def remove(self, table: TableRef, key: PartitionKey, reason: str) -> None:
        self.hot.remove(table, key, reason)
        if key is not None:
            self.cold.discard(table, key)

    def location(self, table: TableRef, key: PartitionKey) -> str:
        if key is not None and self.hot.states(table, [key])[key] is PartitionState.TIERED:
            return self.cold.location(table, key)
        return self.hot.location(table, key)

    def lookup(
        self, table: TableRef, column: str, values: Sequence[object], columns: Sequence[str]
    ) -> pd.DataFrame:
        """Rows of any partition, hot or tiered, whose ``column`` is one of ``values``."""
        found = self.hot.lookup(table, column, values, columns)
        tiered = [k for k, s in self.hot.partitions(table).items() if s is PartitionState.TIERED]
        if not tiered:
            return found
        wanted = list(dict.fromkeys(columns))
        _, cold = self.cold.load(table, tiered, list(dict.fromkeys([column, *wanted])))
        cold = cold.loc[cold[column].isin(list(values)), wanted]
        parts = [f for f in (cold, found) if len(f)]
        return pd.concat(parts, ignore_index=True) if parts else found


def hot_store(url: str, cold_root: str = "", lock_timeout_seconds: float = 60.0) -> HotStore | TieredStore:
    """The hot tier at ``url``; with ``cold_root``, reading through to partitions moved there."""
    hot = HotStore(url, lock_timeout_seconds=lock_timeout_seconds)
    return TieredStore(hot, ColdStore(cold_root)) if cold_root else hot


def move_to_cold(hot: HotStore, cold: ColdStore, table: TableRef, key: str) -> Moved:
    """Copy one hot partition to cold, verify the copy, then drop it from hot (see the module docstring)."""
    frame = hot.read(table, [key])
    cold.write(table, {key: frame})
    copy = cold.read(table, [key])
    expected = checksum(frame)
    if len(copy) != len(frame) or checksum(copy) != expected:
        cold.discard(table, key)
        raise TieringError(
            f"{table.qualified_name} partition {key}: the cold copy ({len(copy)} rows) does not match the "
            f"hot partition ({len(frame)} rows); the hot partition is kept"
        )
    hot.mark_tiered(table, key, len(frame))
    return Moved(table.qualified_name, key, len(frame), expected)


def tier(hot: HotStore, cold: ColdStore, tables: Iterable[TableRef], *, before: dt.date) -> list[Moved]:
    """Move every hot partition of ``tables`` older than ``before`` to the cold tier."""
    moved = []
    for table in tables:
        for key, state in sorted(hot.partitions(table).items()):
            if state is PartitionState.PRESENT and dt.date.fromisoformat(key) < before:
                moved.append(move_to_cold(hot, cold, table, key))
    return moved


def drop_stale_cold_copies(
    hot: HotStore, cold: ColdStore, tables: Iterable[TableRef], keys: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Delete cold copies of partitions the hot tier holds again (rewritten after they were tiered)."""
    dropped = []
    for table in tables:
        # Given keys (after every hot write), only their folders are looked at, not the whole table.
        cold_states = cold.partitions(table) if keys is None else cold.states(table, list(keys))
        candidates = [str(k) for k, s in cold_states.items() if s is PartitionState.PRESENT]
        if not candidates:
            continue
        hot_states = hot.states(table, candidates)
        for key in candidates:
            if hot_states[key] is PartitionState.PRESENT:
                cold.discard(table, key)
                dropped.append((table.qualified_name, key))
    return dropped


def expire(cold: ColdStore, tables: Iterable[TableRef], *, before: dt.date, reason: str) -> list[Expired]:
    """Remove (with a marker giving ``reason``) every cold partition of ``tables`` older than ``before``."""
    expired = []
    for table in tables:
        for key, state in sorted(cold.partitions(table).items()):
            if state is PartitionState.PRESENT and dt.date.fromisoformat(key) < before:
                cold.remove(table, key, reason)
                expired.append(Expired(table.qualified_name, key, reason))
    return expired

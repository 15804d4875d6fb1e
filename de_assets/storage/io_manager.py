"""The Dagster side of both tiers: contexts in, :class:`TierStore` calls out.

Partition handling lives here once for both tiers:

* a single-partition run replaces exactly that partition;
* a range run (single-run backfill) splits the frame on the asset's ``partition_column`` metadata and
  replaces every partition of the range, empty ones included;
* per-partition figures (rows, bytes, schema) are recorded on each partition's materialization,
  not the range totals Dagster would otherwise stamp on all of them;
* an input partition that was never written is an error unless the input asks for
  ``allow_missing_partitions``; one removed on purpose is always an error.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from de_assets.storage.schema import column_schema
from de_assets.storage.tier import (
    PartitionKey,
    PartitionNotFoundError,
    PartitionRemovedError,
    PartitionState,
    TableRef,
    TierStore,
    WriteStats,
    describe,
)

# Asset definition metadata: the column whose values say which partition a row belongs to.
PARTITION_COLUMN = "partition_column"
# Input (AssetIn) metadata: read never-materialised upstream partitions as empty.
ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"
# Input metadata, opt-in: load only these columns (a list of names).
COLUMNS = "columns"
# Input metadata, opt-in: give the asset a :class:`PartitionBatches` of at most this many rows per
# frame instead of one frame, so that it never holds the whole input at once.
BATCH_ROWS = "batch_rows"

_FIELD_BY_PARTITIONS_TYPE: list[tuple[type, str]] = [
    (dg.HourlyPartitionsDefinition, "hour"),
    (dg.DailyPartitionsDefinition, "day"),
    (dg.WeeklyPartitionsDefinition, "week"),
    (dg.MonthlyPartitionsDefinition, "month"),
]


def partition_field_for(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    """The folder-layout name of a partition dimension (``day`` for daily partitions)."""
    if partitions_def is None:
        return None
    for cls, field in _FIELD_BY_PARTITIONS_TYPE:
        if isinstance(partitions_def, cls):
            return field
    return "partition"


def split_by_partition(
    frame: pd.DataFrame,
    keys: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    partition_column: str | None,
    asset: str,
) -> dict[PartitionKey, pd.DataFrame]:
    """One frame per key (empty where no row falls in it), in key order.

    Every row must land in exactly one of ``keys``: rows outside are an error, never dropped.
    """
    if partition_column is None or partition_column not in frame.columns:
        if len(keys) == 1:
            return {keys[0]: frame}
        raise ValueError(
            f"{asset} produced one frame for {len(keys)} partitions ({keys[0]}..{keys[-1]}) but has no "
            f"'{PARTITION_COLUMN}' column to split it on: set metadata={{'{PARTITION_COLUMN}': <column>}} "
            "on the asset and include that column in the frame"
        )
    values = frame[partition_column]
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        windows = [partitions_def.time_window_for_partition_key(k) for k in keys]
        starts = pd.DatetimeIndex([w.start for w in windows]).tz_convert("UTC")
        ends = pd.DatetimeIndex([w.end for w in windows]).tz_convert("UTC")
        # Plain UTC datetime64 arrays: a tz-aware Series' to_numpy() would build one Timestamp object
        # per row (seconds at millions of rows).
        stamps = (
            pd.to_datetime(values, utc=True, errors="coerce").dt.tz_localize(None).to_numpy("datetime64[ns]")
        )
        start_ns = starts.tz_localize(None).to_numpy("datetime64[ns]")
        end_ns = ends.tz_localize(None).to_numpy("datetime64[ns]")
        position = np.searchsorted(start_ns, stamps, side="right") - 1
        inside = (position >= 0) & ~np.isnat(stamps)
        inside[inside] = stamps[inside] < end_ns[position[inside]]
    else:
        as_text = values.astype("string")
        lookup = {k: i for i, k in enumerate(keys)}
        position = as_text.map(lookup).fillna(-1).astype("int64").to_numpy()
        inside = position >= 0
    if not inside.all():
        outside = values[~inside]
        raise ValueError(
            f"{asset}: {len(outside)} of {len(frame)} rows have {partition_column} outside the partitions "
            f"being written ({keys[0]}..{keys[-1]}), e.g. {outside.head(3).tolist()}; refusing to drop them"
        )
    if len(keys) == 1:
        return {keys[0]: frame.reset_index(drop=True)}  # every row is inside: no need to reorder a copy
    order = np.argsort(position, kind="stable")
    sorted_frame = frame.iloc[order]
    bounds = np.searchsorted(position[order], np.arange(len(keys) + 1))
    return {
        key: sorted_frame.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True) for i, key in enumerate(keys)
    }


def days_in(
    key: dg.AssetKey,
    *,
    before: int = 0,
    after: int = 0,
    metadata: Mapping[str, object] | None = None,
) -> dg.AssetIn:
    """An input of daily partition D reading upstream D-before..D+after; days not materialised (yet)
    read as empty. ``metadata``: more for the IO manager (``COLUMNS``, ``BATCH_ROWS``)."""
    mapping = (
        None
        if before == after == 0
        else dg.TimeWindowPartitionMapping(
            start_offset=-before, end_offset=after, allow_nonexistent_upstream_partitions=True
        )
    )
    return dg.AssetIn(
        key=key, partition_mapping=mapping, metadata={ALLOW_MISSING_PARTITIONS: True, **(metadata or {})}
    )


class PartitionBatches:
    """An input read lazily: the present partitions, each as frames of at most ``rows`` rows.

    Nothing is read until the asset iterates; iterating again reads again. ``read(key)`` yields one
    partition's frames.
    """

    def __init__(self, keys: Sequence[str], read: Callable[[str], Iterator[pd.DataFrame]]) -> None:
        self.keys = list(keys)
        self._read = read

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return self.batches()

    def batches(self, keys: Iterable[str] | None = None) -> Iterator[pd.DataFrame]:
        """The frames of the present partitions among ``keys`` (default: all), in partition order."""
        wanted = None if keys is None else set(keys)
        for key in self.keys:
            if wanted is None or key in wanted:
                yield from self._read(key)


def concat_days(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames of a run's days as one output; a single day's frame is returned as it is, since
    ``pd.concat`` would copy every column of it (hundreds of MB for a day of raw clickstream)."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)


def _current_asset_context() -> dg.AssetExecutionContext | None:
    try:
        context = dg.AssetExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
    return context if isinstance(context, dg.AssetExecutionContext) else None


def write_metadata(tier: str, stats: WriteStats, frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "dagster/row_count": dg.MetadataValue.int(stats.rows),
        "bytes": dg.MetadataValue.int(stats.bytes),
        "tier": dg.MetadataValue.text(tier),
        "location": dg.MetadataValue.text(stats.location),
        "dagster/column_schema": column_schema(frame),
    }


class TierIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames in one tier; subclasses say which by building the :class:`TierStore`."""

    @abstractmethod
    def build_store(self) -> TierStore:
        """A store for this step; it must not hold connections open after each call."""

    def _table(self, key: dg.AssetKey, partitions_def: dg.PartitionsDefinition | None) -> TableRef:
        return TableRef.for_asset_key(key, partition_field_for(partitions_def))

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            context.log.debug(f"{context.asset_key.to_user_string()} returned None: nothing stored")
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; the storage tiers "
                "store pandas DataFrames"
            )
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
        table = self._table(context.asset_key, partitions_def)
        frames: Mapping[PartitionKey, pd.DataFrame]
        if partitions_def is None:
            frames = {None: obj}
        else:
            frames = split_by_partition(
                obj,
                context.asset_partition_keys,
                partitions_def,
                (context.definition_metadata or {}).get(PARTITION_COLUMN),
                context.asset_key.to_user_string(),
            )
        store = self.build_store()
        stats = store.write(table, frames)
        self._record(context, store.tier, stats, frames)

    def _record(
        self,
        context: dg.OutputContext,
        tier: str,
        stats: Mapping[PartitionKey, WriteStats],
        frames: Mapping[PartitionKey, pd.DataFrame],
    ) -> None:
        asset_context = _current_asset_context()
        for key, written in stats.items():
            metadata = write_metadata(tier, written, frames[key])
            if key is not None and asset_context is not None:
                asset_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
            elif len(stats) == 1:
                context.add_output_metadata(metadata)
            else:
                context.log.info(f"wrote {written.rows} rows to partition {key} at {written.location}")

    def load_columns(
        self, store: TierStore, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        """``store.load`` with only ``columns`` (all when None); tiers that can read fewer override this."""
        states, frame = store.load(table, keys)
        return states, frame if columns is None else _select(frame, columns)

    def read_batches(
        self, store: TierStore, table: TableRef, key: str, columns: Sequence[str] | None, rows: int
    ) -> Iterator[pd.DataFrame]:
        """One present partition as frames of at most ``rows`` rows; tiers that stream override this."""
        frame = store.read(table, [key])
        frame = frame if columns is None else _select(frame, columns)
        for start in range(0, len(frame), rows):
            yield frame.iloc[start : start + rows].reset_index(drop=True)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | PartitionBatches:
        partitions_def = context.asset_partitions_def if context.has_asset_partitions else None
        table = self._table(context.asset_key, partitions_def)
        keys: list[PartitionKey] = list(context.asset_partition_keys) if partitions_def else [None]
        store = self.build_store()
        metadata = context.definition_metadata or {}
        columns = metadata.get(COLUMNS)
        rows = metadata.get(BATCH_ROWS)
        if rows is not None:
            if partitions_def is None or int(rows) < 1:
                raise ValueError(
                    f"{BATCH_ROWS} needs a partitioned input and a number >= 1; got {rows!r} for "
                    f"{context.asset_key.to_user_string()}"
                )
            states = store.states(table, keys)
            self._check_states(context, store, table, keys, states, partitions_def)
            present = [str(k) for k in keys if states[k] is PartitionState.PRESENT]
            return PartitionBatches(
                present, lambda key: self.read_batches(store, table, key, columns, int(rows))
            )
        # One round trip: the data of the present keys comes back with the states, so the common case
        # (everything present) opens the store once. On error the frame is simply dropped.
        states, frame = self.load_columns(store, table, keys, columns)
        missing = self._check_states(context, store, table, keys, states, partitions_def)
        if len(keys) == 1:
            context.add_input_metadata({"rows_loaded": len(frame), "partitions_missing": len(missing)})
        else:
            # Dagster cannot attach input metadata to several partitions (dagster-io/dagster#27940).
            context.log.info(f"loaded {len(frame)} rows from {len(keys)} partitions ({len(missing)} missing)")
        return frame

    def _check_states(
        self,
        context: dg.InputContext,
        store: TierStore,
        table: TableRef,
        keys: Sequence[PartitionKey],
        states: Mapping[PartitionKey, PartitionState],
        partitions_def: dg.PartitionsDefinition | None,
    ) -> list[PartitionKey]:
        """The missing keys; raises for removed ones, and for missing ones unless the input allows them."""
        removed = [k for k in keys if states[k] is PartitionState.REMOVED]
        if removed:
            raise PartitionRemovedError(
                f"cannot load {describe(store.tier, table, removed)} for {context.asset_key.to_user_string()}: "
                "it was removed on purpose (retention or erasure); re-materialise it to read it again"
            )
        missing = [k for k in keys if states[k] is PartitionState.MISSING]
        allow_missing = bool((context.definition_metadata or {}).get(ALLOW_MISSING_PARTITIONS))
        if missing and not (allow_missing and partitions_def is not None):
            raise PartitionNotFoundError(
                f"cannot load {describe(store.tier, table, missing)} for asset "
                f"{context.asset_key.to_user_string()}: it was never materialised"
            )
        return missing


def _select(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame``'s ``columns`` (a frame without columns, i.e. nothing stored yet, stays as it is)."""
    return frame if frame.columns.empty else frame[list(columns)]

"""The cold tier: Parquet files on any fsspec filesystem, laid out as a hive-style dataset.

```
<root>/<stage>/<name>/<field>=<key>/part-0.parquet   partitioned (``day=2024-01-03/``)
<root>/<stage>/<name>/data.parquet                   unpartitioned
```

pyarrow.dataset and DuckDB can read a table folder directly. Files they must not see (temporary files
mid-write, removal markers) start with ``_``, which dataset discovery skips, and do not end in
``.parquet``, so ``*.parquet`` globs skip them too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from de_assets.security.identifiers import UnsafeNameError, safe_column_names
from de_assets.security.redaction import redact_url
from de_assets.storage.filesystem import ensure_folder, open_folder
from de_assets.storage.io_manager import TierIOManager
from de_assets.storage.schema import merge_schemas
from de_assets.storage.tier import (
    PartitionKey,
    PartitionState,
    StorageError,
    TableRef,
    TierStore,
    WriteStats,
    describe,
)

TIER = "cold"
PARTITION_FILE = "part-0.parquet"
UNPARTITIONED_FILE = "data.parquet"
REMOVED_MARKER = "_REMOVED.json"
COMPRESSION = "zstd"
# A partition is written to a temporary file next to its target and then renamed over it.
_TEMPORARY_SUFFIX = ".parquet.tmp"
_TEMPORARY_GLOB = f"_tmp-*{_TEMPORARY_SUFFIX}"
# Footers of many partitions are read in parallel: on object stores each one is a round trip.
_FOOTER_THREADS = 16
# Attempts at reading a partition that other processes keep replacing (object stores, see _read_whole).
_READ_ATTEMPTS = 5


def _write_parquet(table: pa.Table, path: str, fs: AbstractFileSystem) -> None:
    """Write one Parquet file (kept separate so tests can simulate a crash mid-write)."""
    pq.write_table(table, path, filesystem=fs, compression=COMPRESSION)


def _read_whole(fs: AbstractFileSystem, path: str, columns: list[str] | None) -> pa.Table:
    """One data file, read whole in one version.

    On an object store a file is read in several ranged requests, each pinned to the version (ETag)
    the first one saw; a partition replaced in between ends the read with s3fs's FileExpired, an
    OSError with errno EBUSY (never mixed bytes). Reading again gets the new version, whole: a replace
    is itself whole.
    """
    for attempt in range(1, _READ_ATTEMPTS + 1):
        try:
            return pq.read_table(path, filesystem=fs, partitioning=None, columns=columns)
        except OSError as error:
            if error.errno != errno.EBUSY or attempt == _READ_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _move(fs: AbstractFileSystem, source: str, target: str) -> None:
    if isinstance(fs, LocalFileSystem):
        os.replace(source, target)  # atomic, and replaces the target on every OS
    else:
        fs.mv(source, target)


def _pandas_metadata(schemas: Sequence[pa.Schema], unified: pa.Schema) -> dict[bytes, bytes]:
    """pandas metadata for ``unified``, so nullable and other pandas dtypes survive a unified read.

    A column keeps the pandas description of the latest file that stored it with exactly the unified
    type; where the type was widened the description no longer applies and Arrow's default is used.
    """
    base: dict[str, Any] | None = None
    entries: dict[str, Any] = {}
    for schema in schemas:
        raw = (schema.metadata or {}).get(b"pandas")
        if raw is None:
            continue
        base = json.loads(raw)
        for column in base.get("columns", []):
            name = column.get("field_name")
            if (
                not isinstance(name, str)
                or min(schema.get_field_index(name), unified.get_field_index(name)) < 0
            ):
                continue
            if schema.field(name).type.equals(unified.field(name).type):
                entries[name] = column
    if base is None:
        return {}
    base["index_columns"] = []
    base["columns"] = [entries[name] for name in unified.names if name in entries]
    return {b"pandas": json.dumps(base).encode()}


def unify(schemas: Sequence[pa.Schema], where: str) -> pa.Schema:
    """One schema for several files, by the shared rules of :func:`merge_schemas`, with pandas metadata."""
    first = schemas[0]
    if all(schema.equals(first) for schema in schemas[1:]):
        unified = first
    else:
        merged = reduce(lambda a, b: merge_schemas(a, b, where), schemas)
        # merge_schemas normalises types (large_string → string); where every file agrees, keep the
        # stored type so those files need no cast.
        fields = []
        for field in merged:
            stored = {s.field(field.name).type for s in schemas if s.get_field_index(field.name) >= 0}
            fields.append(field.with_type(stored.pop()) if len(stored) == 1 else field)
        unified = pa.schema(fields)
    return unified.with_metadata(_pandas_metadata(schemas, unified))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: widened where needed, null where absent."""
    columns = [
        table.column(field.name).cast(field.type)
        if table.schema.get_field_index(field.name) >= 0
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class ColdStore:
    """Parquet files under ``root``: a local folder or any fsspec URL (``s3://bucket/prefix``)."""

    tier = TIER

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self._storage_options = dict(storage_options or {})

    # --- layout ------------------------------------------------------------------------------------

    def _fs(self) -> tuple[AbstractFileSystem, str]:
        # A fresh lookup per call: fsspec caches instances, and nothing is held open between calls.
        return open_folder(self.root, self._storage_options)

    @staticmethod
    def _folder(table: TableRef, key: PartitionKey) -> str:
        table_dir = f"{table.stage}/{table.name}"
        return table_dir if key is None else f"{table_dir}/{table.partition_field}={key}"

    @staticmethod
    def _data_name(table: TableRef) -> str:
        return UNPARTITIONED_FILE if table.partition_field is None else PARTITION_FILE

    def _data_path(self, base: str, table: TableRef, key: PartitionKey) -> str:
        return f"{base}/{self._folder(table, key)}/{self._data_name(table)}"

    def location(self, table: TableRef, key: PartitionKey) -> str:
        key = table.check_key(key)
        return redact_url(f"{self.root}/{self._folder(table, key)}/{self._data_name(table)}")

    # --- listing -----------------------------------------------------------------------------------

    def _scan(
        self, fs: AbstractFileSystem, base: str, table: TableRef, keys: Sequence[PartitionKey] | None = None
    ) -> dict[PartitionKey, set[str]]:
        """The file names in each partition folder, from one listing (of one folder when one key is asked)."""
        if table.partition_field is None or (keys is not None and len(keys) == 1):
            key = keys[0] if table.partition_field is not None and keys else None
            folder = f"{base}/{self._folder(table, key)}"
            try:
                paths = fs.ls(folder, detail=False)
            except FileNotFoundError:
                paths = []
            return {key: {p.rstrip("/").rsplit("/", 1)[-1] for p in paths}}
        table_dir = f"{base}/{table.stage}/{table.name}"
        prefix = f"{table.partition_field}="
        found: dict[PartitionKey, set[str]] = {}
        # find() without maxdepth: object stores answer it with one flat (paged) listing.
        for path in fs.find(table_dir):
            *_, folder, name = path.rstrip("/").split("/")
            if folder.startswith(prefix):
                found.setdefault(folder[len(prefix) :], set()).add(name)
        return found

    def _state(self, table: TableRef, names: set[str]) -> PartitionState:
        if REMOVED_MARKER in names:
            return PartitionState.REMOVED
        if self._data_name(table) in names:
            return PartitionState.PRESENT
        return PartitionState.MISSING

    def _stored_schema(
        self,
        fs: AbstractFileSystem,
        base: str,
        table: TableRef,
        found: Mapping[PartitionKey, set[str]],
        where: str,
    ) -> pa.Schema | None:
        """The unified schema of every data file of the table, from Parquet footers only."""
        paths = [
            self._data_path(base, table, key)
            for key, names in found.items()
            if self._state(table, names) is PartitionState.PRESENT
        ]
        if not paths:
            return None
        if len(paths) == 1:
            schemas = [pq.read_schema(paths[0], filesystem=fs)]
        else:
            with ThreadPoolExecutor(max_workers=min(_FOOTER_THREADS, len(paths))) as pool:
                schemas = list(pool.map(lambda p: pq.read_schema(p, filesystem=fs), paths))
        return unify(schemas, where)

    # --- TierStore ---------------------------------------------------------------------------------

    def states(self, table: TableRef, keys: Sequence[PartitionKey]) -> dict[PartitionKey, PartitionState]:
        keys = [table.check_key(k) for k in keys]
        fs, base = self._fs()
        found = self._scan(fs, base, table, keys)
        return {key: self._state(table, found.get(key, set())) for key in keys}

    def write(
        self, table: TableRef, frames: Mapping[PartitionKey, pd.DataFrame]
    ) -> dict[PartitionKey, WriteStats]:
        if not frames:
            return {}
        keys = [table.check_key(k) for k in frames]
        where = describe(self.tier, table, keys)
        tables: dict[PartitionKey, pa.Table] = {}
        for key, frame in frames.items():
            safe_column_names(frame.columns, f"column name in {where}")
            if table.partition_field is not None and table.partition_field in frame.columns:
                # pyarrow.dataset refuses the clash and DuckDB silently replaces the column by the folder value.
                raise UnsafeNameError(
                    f"refusing column {table.partition_field!r} in {where}: it clashes with the "
                    f"'{table.partition_field}=' partition folders that dataset readers add as a column; "
                    f"rename it (e.g. 'event_{table.partition_field}')"
                )
            tables[key] = pa.Table.from_pandas(frame, preserve_index=False)
        fs, base = self._fs()
        found = self._scan(fs, base, table)
        # Every frame is checked against the stored files and the other frames before anything is written.
        schema = self._stored_schema(fs, base, table, found, where)
        for arrow_table in tables.values():
            schema = (
                arrow_table.schema if schema is None else merge_schemas(schema, arrow_table.schema, where)
            )
        return {
            key: self._replace(fs, base, table, key, arrow_table, REMOVED_MARKER in found.get(key, set()))
            for key, arrow_table in tables.items()
        }

    def _replace(
        self,
        fs: AbstractFileSystem,
        base: str,
        table: TableRef,
        key: PartitionKey,
        data: pa.Table,
        was_removed: bool,
    ) -> WriteStats:
        folder = f"{base}/{self._folder(table, key)}"
        target = f"{folder}/{self._data_name(table)}"
        temporary = f"{folder}/_tmp-{uuid.uuid4().hex}{_TEMPORARY_SUFFIX}"
        ensure_folder(fs, folder)
        try:
            _write_parquet(data, temporary, fs)
            size = fs.size(temporary)
            _move(fs, temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.rm_file(temporary)
            raise
        if was_removed:
            # Only after the data is in place: a crash in between leaves the partition REMOVED, not lost.
            fs.rm_file(f"{folder}/{REMOVED_MARKER}")
        return WriteStats(rows=data.num_rows, bytes=int(size), location=self.location(table, key))

    def read(self, table: TableRef, keys: Sequence[PartitionKey]) -> pd.DataFrame:
        return self.load(table, keys)[1]

    def sweep_interrupted_writes(self, older_than: timedelta, now: datetime | None = None) -> list[str]:
        """Delete the temporary files of writes that crashed, once older than ``older_than``.

        A write in progress has a temporary file too: the age keeps the sweep away from it. Returns
        the removed paths. Readers never see these files, so this only reclaims space.
        """
        fs, base = self._fs()
        cutoff = (now or datetime.now(UTC)) - older_than
        if not fs.exists(base):
            return []
        removed = []
        for path in sorted(fs.glob(f"{base}/**/{_TEMPORARY_GLOB}")):
            modified = fs.modified(path)
            modified = modified if modified.tzinfo else modified.replace(tzinfo=UTC)
            if modified < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(path)
                    removed.append(path)
        return removed

    def load(
        self, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None = None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        """``columns``: read only these (default all); a column a file lacks is an error."""
        keys = [table.check_key(k) for k in keys]
        where = describe(self.tier, table, keys)
        fs, base = self._fs()
        found = self._scan(fs, base, table, keys)
        states = {key: self._state(table, found.get(key, set())) for key in keys}
        present = [k for k in keys if states[k] is PartitionState.PRESENT]
        if not present:
            schema = self._stored_schema(fs, base, table, self._scan(fs, base, table), where)
            if schema is None:
                return states, pd.DataFrame()
            return states, _select(schema.empty_table(), columns, where).to_pandas()
        # partitioning=None: the columns are in the file; the folder name must not add a "day" column.
        wanted = None if columns is None else list(columns)
        tables = [_read_whole(fs, self._data_path(base, table, k), wanted) for k in present]
        schema = unify([t.schema for t in tables], where)
        tables = [t if t.schema.equals(schema) else _conform(t, schema) for t in tables]
        combined = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return states, combined.replace_schema_metadata(schema.metadata).to_pandas()

    def batches(
        self, table: TableRef, key: str, rows: int, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """A present partition as frames of at most ``rows`` rows (``columns``: only these), read as the
        caller iterates, so only about one batch of it is in memory at a time. Nothing if not present."""
        key = table.check_key(key) or ""
        where = describe(self.tier, table, [key])
        fs, base = self._fs()
        path = self._data_path(base, table, key)
        try:
            source = fs.open(path, "rb")
        except FileNotFoundError:
            return
        try:
            with source, pq.ParquetFile(source) as parquet:
                schema = parquet.schema_arrow
                if columns is not None:
                    schema = _select(schema.empty_table(), columns, where).schema
                for batch in parquet.iter_batches(batch_size=rows, columns=schema.names):
                    yield pa.Table.from_batches([batch]).replace_schema_metadata(schema.metadata).to_pandas()
        except OSError as error:
            if error.errno != errno.EBUSY:
                raise
            # Batches already handed out cannot be taken back: the caller's step fails, and its retry
            # reads the new version from the start (see _read_whole).
            raise StorageError(
                f"{where} was replaced by another process while being read in batches; read it again"
            ) from error

    def partitions(self, table: TableRef) -> dict[str, PartitionState]:
        """Every partition folder of ``table`` and its state (one listing)."""
        fs, base = self._fs()
        found = self._scan(fs, base, table)
        return {str(key): self._state(table, names) for key, names in found.items() if key is not None}

    def discard(self, table: TableRef, key: str) -> None:
        """Delete a partition's copy without a removal marker: another tier holds the partition now."""
        key = table.check_key(key) or ""
        fs, base = self._fs()
        folder = f"{base}/{self._folder(table, key)}"
        for name in (self._data_name(table), REMOVED_MARKER):
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(f"{folder}/{name}")

    def remove(self, table: TableRef, key: PartitionKey, reason: str) -> None:
        key = table.check_key(key)
        fs, base = self._fs()
        folder = f"{base}/{self._folder(table, key)}"
        ensure_folder(fs, folder)
        marker = {"reason": reason, "removed_at": datetime.now(UTC).isoformat()}
        # The marker first: a crash before the delete leaves a partition that reads as REMOVED.
        fs.pipe_file(f"{folder}/{REMOVED_MARKER}", json.dumps(marker).encode())
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{folder}/{self._data_name(table)}")


class ColdTierIOManager(TierIOManager):
    """Stores DataFrames as Parquet under ``root`` (a local folder or any fsspec URL)."""

    root: str
    # Passed to fsspec (credentials, endpoint); give secrets as dg.EnvVar so they stay out of run config.
    storage_options: dict[str, str] = {}  # noqa: RUF012 - pydantic copies field defaults

    def build_store(self) -> ColdStore:
        return ColdStore(self.root, self.storage_options)

    def load_columns(
        self, store: TierStore, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        assert isinstance(store, ColdStore)
        return store.load(table, keys, columns)

    def read_batches(
        self, store: TierStore, table: TableRef, key: str, columns: Sequence[str] | None, rows: int
    ) -> Iterator[pd.DataFrame]:
        assert isinstance(store, ColdStore)
        return store.batches(table, key, rows, columns)


def _select(table: pa.Table, columns: Sequence[str] | None, where: str) -> pa.Table:
    if columns is None:
        return table
    unknown = [name for name in columns if table.schema.get_field_index(name) < 0]
    if unknown:
        raise KeyError(f"no column {unknown} in {where}")
    return table.select(list(columns))

"""The hot tier: tables in a SQL database reached through any SQLAlchemy URL (embedded DuckDB by default).

Layout: schema = stage, table = asset name (``<stage>__<name>`` on databases without schemas, such as
SQLite). A partitioned table carries a leading ``_partition`` column. A catalog (schema
``de_assets_meta``) records each partition's state and each table's declared Arrow schema, pandas
dtypes included, so reads give back exactly the dtypes that were written on every database.

Every call opens one connection (``NullPool``), runs one transaction and closes it: an embedded DuckDB
file held open by one process blocks every other process.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import ClassVar

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.security.identifiers import UnsafeNameError, safe_column_names
from de_assets.security.redaction import RedactedRepr, redact_sqlalchemy_url
from de_assets.storage.hot_dialects import KEY_COLUMN, META_STAGE, GenericDialect, dialect_for, sql_type
from de_assets.storage.io_manager import TierIOManager
from de_assets.storage.schema import merge_schemas, merged_type
from de_assets.storage.tier import (
    PartitionKey,
    PartitionState,
    StorageError,
    TableRef,
    TierStore,
    WriteStats,
    describe,
)

TIER = "hot"
# Catalog key of an unpartitioned table's single "partition".
_WHOLE_TABLE = ""


# Values per IN (...) of a keyed lookup: below SQLite's bound-parameter limit, fine for any driver.
_LOOKUP_BATCH = 5_000


class HotTierLockedError(StorageError):
    """Another process kept the embedded database locked for longer than the lock timeout."""


def _same_storage(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal up to encoding (string vs large_string, dictionary): ``merged_type`` normalises both."""
    merged = merged_type(a, b)
    return merged is not None and merged.equals(merged_type(a, a)) and merged.equals(merged_type(b, b))


def _pandas_columns(schema: pa.Schema) -> list[dict[str, object]]:
    return json.loads(schema.metadata[b"pandas"])["columns"] if schema.metadata else []


def declare(stored: pa.Schema | None, incoming: pa.Schema, where: str) -> pa.Schema:
    """The table's new declared schema: types merged by the shared rules, pandas dtypes carried along.

    A column keeps the pandas dtype (``Int64``, ``str``...) of the latest side whose Arrow type is the
    merged one; a column whose type widened falls back to pandas' default for the merged type.
    """
    base = stored if stored is not None else pa.schema([])
    merged = merge_schemas(base, incoming, where)
    safe_column_names(merged.names)  # a column differing only in case would clash in SQL
    entries: dict[str, dict[str, object]] = {}
    for source in (base, incoming):
        for entry in _pandas_columns(source):
            name = str(entry["name"])
            if name in merged.names and _same_storage(source.field(name).type, merged.field(name).type):
                entries[name] = entry
    skeleton = json.loads(incoming.metadata[b"pandas"])
    skeleton["columns"] = [entries[n] for n in merged.names if n in entries]
    return merged.with_metadata({b"pandas": json.dumps(skeleton).encode()})


def _encode(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _decode(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _conform(data: pa.Table, declared: pa.Schema) -> pa.Table:
    """The rows as stored, cast back to the declared types (a database returns its own)."""
    arrays = [
        pa.nulls(data.num_rows, f.type) if pa.types.is_null(f.type) else data[f.name].cast(f.type)
        for f in declared
    ]
    return pa.Table.from_arrays(arrays, schema=declared)


def _subset(declared: pa.Schema, columns: Sequence[str], table: TableRef) -> pa.Schema:
    """The declared schema of ``columns`` only, with the pandas metadata (dtypes) of those columns."""
    unknown = [name for name in columns if declared.get_field_index(name) < 0]
    if unknown:
        raise KeyError(f"{table.qualified_name} has no column {', '.join(map(repr, unknown))}")
    metadata = dict(declared.metadata or {})
    if b"pandas" in metadata:
        pandas = json.loads(metadata[b"pandas"])
        pandas["columns"] = [c for c in pandas.get("columns", []) if c.get("field_name") in set(columns)]
        metadata[b"pandas"] = json.dumps(pandas).encode()
    return pa.schema([declared.field(name) for name in columns], metadata=metadata)


def _incoming(frame: pd.DataFrame) -> pa.Table:
    names = safe_column_names(frame.columns)
    if KEY_COLUMN.lower() in (n.lower() for n in names):
        raise UnsafeNameError(f"refusing column name {KEY_COLUMN!r}: the hot tier reserves it")
    return pa.Table.from_pandas(frame, preserve_index=False)


def _catalog(qualifier: str, has_schemas: bool) -> tuple[sa.Table, sa.Table]:
    """The catalog tables: per table its declared schema, per partition its state."""
    metadata = sa.MetaData()
    schema, prefix = (qualifier + META_STAGE, "") if has_schemas else (None, f"{META_STAGE}__")
    tables = sa.Table(
        f"{prefix}tables",
        metadata,
        # <stage>.<name>, or <stage>__<name> without schemas: two assets must not share one.
        sa.Column("physical_name", sa.String(200), primary_key=True),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("table_name", sa.String(63), nullable=False),
        sa.Column("arrow_schema", sa.Text, nullable=False),  # base64 Arrow IPC, pandas metadata included
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    partitions = sa.Table(
        f"{prefix}partitions",
        metadata,
        sa.Column("stage", sa.String(63), primary_key=True),
        sa.Column("table_name", sa.String(63), primary_key=True),
        sa.Column("partition_key", sa.String(128), primary_key=True),  # '' for an unpartitioned table
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    return tables, partitions


class _Session:
    """The statements of one transaction: catalog and table definitions on one connection."""

    def __init__(self, conn: sa.Connection, dialect: GenericDialect, create_catalog: bool = True) -> None:
        self.conn = conn
        self.dialect = dialect
        self.qualifier = dialect.schema_qualifier(conn)
        self.tables, self.partitions = _catalog(self.qualifier, dialect.has_schemas)
        if create_catalog:
            self.create_catalog()

    def create_catalog(self) -> None:
        if self.dialect.has_schemas:
            self.conn.execute(sa.schema.CreateSchema(self.qualifier + META_STAGE, if_not_exists=True))
        for catalog in (self.tables, self.partitions):
            self.conn.execute(sa.schema.CreateTable(catalog, if_not_exists=True))

    def catalog_exists(self) -> bool:
        inspector = sa.inspect(self.conn)
        return all(inspector.has_table(t.name, schema=t.schema) for t in (self.tables, self.partitions))

    def lock(self, table: TableRef, exclusive: bool) -> None:
        """Until the transaction ends: ``exclusive`` for a writer of ``table``, shared for a reader."""
        physical = _physical_name(self.dialect, table)
        if exclusive:
            self.dialect.lock_for_write(self.conn, physical)
        else:
            self.dialect.lock_for_read(self.conn, physical)

    def definition(self, table: TableRef, declared: pa.Schema) -> sa.Table:
        columns = [(f.name, sql_type(f.type, self.dialect.null_type)) for f in declared]
        return self.dialect.sa_table(self.qualifier, table, columns)

    def declared(self, table: TableRef) -> pa.Schema | None:
        """The table's declared schema, or None if it was never written."""
        physical = _physical_name(self.dialect, table)
        t = self.tables.c
        rows = self.conn.execute(
            sa.select(t.stage, t.table_name, t.arrow_schema).where(t.physical_name == physical)
        ).all()
        if not rows:
            return None
        stage, name, encoded = rows[0]
        if (stage, name) != (table.stage, table.name):
            raise UnsafeNameError(
                f"{table.qualified_name} would be stored as {physical}, which already holds {stage}.{name}: "
                "rename one of the assets"
            )
        return _decode(encoded)

    def save_declared(self, table: TableRef, declared: pa.Schema) -> None:
        physical = _physical_name(self.dialect, table)
        self.conn.execute(sa.delete(self.tables).where(self.tables.c.physical_name == physical))
        self.conn.execute(
            sa.insert(self.tables),
            {
                "physical_name": physical,
                "stage": table.stage,
                "table_name": table.name,
                "arrow_schema": _encode(declared),
                "updated_at": datetime.now(UTC),
            },
        )

    def record(
        self, table: TableRef, states: Mapping[PartitionKey, tuple[PartitionState, int, str | None]]
    ) -> None:
        """Upsert the catalog rows of ``states`` (key → state, rows, reason)."""
        p = self.partitions
        keys = [key or _WHOLE_TABLE for key in states]
        self.conn.execute(
            sa.delete(p).where(
                p.c.stage == table.stage, p.c.table_name == table.name, p.c.partition_key.in_(keys)
            )
        )
        now = datetime.now(UTC)
        self.conn.execute(
            sa.insert(p),
            [
                {
                    "stage": table.stage,
                    "table_name": table.name,
                    "partition_key": key,
                    "state": state.value,
                    "rows": rows,
                    "reason": reason,
                    "updated_at": now,
                }
                for key, (state, rows, reason) in zip(keys, states.values(), strict=True)
            ],
        )

    def delete(self, target: sa.Table, keys: Sequence[PartitionKey]) -> None:
        """Delete the rows of ``keys`` (all rows of an unpartitioned table)."""
        self.dialect.delete(self.conn, target, keys)

    def create(self, target: sa.Table) -> None:
        self.dialect.lock_for_ddl(self.conn)
        if target.schema is not None:
            self.conn.execute(sa.schema.CreateSchema(target.schema, if_not_exists=True))
        self.conn.execute(sa.schema.CreateTable(target, if_not_exists=True))
        for index in target.indexes:
            self.conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))

    def evolve(self, old: sa.Table, new: sa.Table) -> None:
        """Add new columns and alter widened ones so the stored table matches ``new``."""
        self.dialect.evolve(self.conn, old, new)


def _physical_name(dialect: GenericDialect, table: TableRef) -> str:
    if table.stage == META_STAGE:
        raise UnsafeNameError(f"refusing stage {META_STAGE!r}: the hot tier's catalog uses it")
    schema, name = dialect.physical(table)
    return name if schema is None else f"{schema}.{name}"


class HotStore(TierStore):
    """:class:`TierStore` over a SQLAlchemy URL, e.g. ``duckdb:////abs/path/hot.duckdb``."""

    tier = TIER

    def __init__(self, url: str, lock_timeout_seconds: float = 60.0) -> None:
        self._url = sa.make_url(url)
        self._shown_url = redact_sqlalchemy_url(url)
        self._dialect = dialect_for(self._url)
        self._lock_timeout = lock_timeout_seconds
        # Once seen, the catalog stays: later sessions of this store skip the check (a database server).
        self._catalog_seen = False

    @contextmanager
    def _session(self) -> Iterator[_Session]:
        """One connection and one transaction (committed on success); nothing stays open afterwards."""
        self._dialect.prepare(self._url)
        engine = sa.create_engine(
            self._url, poolclass=sa.pool.NullPool, **self._dialect.engine_options(self._lock_timeout)
        )
        self._dialect.configure(engine)
        apart = self._dialect.creates_catalog_apart
        try:
            with self._connect(engine) as conn:
                if apart and not self._catalog_seen:
                    with conn.begin():
                        bootstrap = _Session(conn, self._dialect, create_catalog=False)
                        if not bootstrap.catalog_exists():
                            self._dialect.lock_for_ddl(conn)
                            bootstrap.create_catalog()
                    self._catalog_seen = True
                with conn.begin():
                    yield _Session(conn, self._dialect, create_catalog=not apart)
        except sa.exc.DBAPIError as error:
            if self._dialect.is_lock_timeout(error):
                raise HotTierLockedError(
                    f"gave up after {self._lock_timeout:g} s waiting for another reader or writer of the "
                    f"same table in the hot tier {self._shown_url}; it is retried with the run"
                ) from error
            raise
        finally:
            engine.dispose()

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        """Connect, waiting with backoff while another process holds the database."""
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.05
        while True:
            try:
                return engine.connect()
            except sa.exc.DBAPIError as error:
                remaining = deadline - time.monotonic()
                if not self._dialect.is_lock_error(error):
                    raise
                if remaining <= 0:
                    raise HotTierLockedError(
                        f"the hot tier database {self._url.database} is locked by another process "
                        f"(waited {self._lock_timeout:g} s). An embedded database allows one process "
                        f"at a time: run every step that opens it through the '{HOT_TIER_POOL}' pool "
                        "(limit 1) and close other sessions on that file."
                    ) from error
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)

    def maintain(self) -> list[str]:
        """Run the database's housekeeping statements; returns what was run."""
        statements = list(self._dialect.maintenance_statements())
        if not statements:
            return statements
        self._dialect.prepare(self._url)
        engine = sa.create_engine(
            self._url, poolclass=sa.pool.NullPool, **self._dialect.engine_options(self._lock_timeout)
        )
        try:
            # Outside any transaction: DuckDB refuses to CHECKPOINT while one is open, its own included;
            # on PostgreSQL a database-wide ANALYZE in one transaction would hold every table's lock.
            with self._connect(engine) as connection:
                conn = (
                    connection.execution_options(isolation_level="AUTOCOMMIT")
                    if self._dialect.maintains_in_autocommit
                    else connection
                )
                for statement in statements:
                    conn.exec_driver_sql(statement)
                conn.commit()
        finally:
            engine.dispose()
        return statements

    def write(
        self, table: TableRef, frames: Mapping[PartitionKey, pd.DataFrame]
    ) -> dict[PartitionKey, WriteStats]:
        """Replace each partition, all in one transaction.

        ``WriteStats.bytes`` is the Arrow in-memory size of the rows written (``pyarrow.Table.nbytes``),
        not the size on disk.
        """
        incoming = {table.check_key(key): _incoming(frame) for key, frame in frames.items()}
        if not incoming:
            return {}
        where = describe(TIER, table, list(incoming))
        staging_target = self._staging_target(table, incoming, where)
        with self._dialect.staged(self._url, staging_target, incoming) as staged, self._session() as session:
            session.lock(table, exclusive=True)
            stored = session.declared(table)
            declared = stored
            for data in incoming.values():
                declared = declare(declared, data.schema, where)
            assert declared is not None  # there was at least one frame
            target = session.definition(table, declared)
            if stored is None:
                if not target.columns:
                    raise ValueError(f"cannot create {where}: the frame has no columns")
                session.create(target)
            else:
                session.evolve(session.definition(table, stored), target)
            self._dialect.replace(session.conn, target, staged)
            session.record(
                table,
                {key: (PartitionState.PRESENT, data.num_rows, None) for key, data in incoming.items()},
            )
            session.save_declared(table, declared)
        return {
            key: WriteStats(rows=data.num_rows, bytes=data.nbytes, location=self.location(table, key))
            for key, data in incoming.items()
        }

    def _staging_target(
        self, table: TableRef, incoming: Mapping[PartitionKey, pa.Table], where: str
    ) -> sa.Table | None:
        """The table as this write will define it, for a dialect that loads rows before the transaction
        (None for the others).

        Read in a short transaction of its own; :meth:`write` re-reads it under its lock and a dialect
        adapts staged rows to any column another writer added in between.
        """
        if not self._dialect.stages_rows:
            return None
        with self._session() as session:
            declared = session.declared(table)
            for data in incoming.values():
                declared = declare(declared, data.schema, where)
            assert declared is not None
            return session.definition(table, declared)

    def states(self, table: TableRef, keys: Sequence[PartitionKey]) -> dict[PartitionKey, PartitionState]:
        checked = [table.check_key(k) for k in keys]
        with self._session() as session:
            return self._states(session, table, checked)

    def read(self, table: TableRef, keys: Sequence[PartitionKey]) -> pd.DataFrame:
        checked = [table.check_key(k) for k in keys]
        with self._session() as session:
            session.lock(table, exclusive=False)
            return self._read(session, table, checked)

    def load(
        self, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None = None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        """``columns``: read only these (default all); the database sends nothing else."""
        checked = [table.check_key(k) for k in keys]
        with self._session() as session:
            session.lock(table, exclusive=False)
            states = self._states(session, table, checked)
            present = [k for k in checked if states[k] is PartitionState.PRESENT]
            return states, self._read(session, table, present, columns)

    @staticmethod
    def _states(
        session: _Session, table: TableRef, keys: Sequence[PartitionKey]
    ) -> dict[PartitionKey, PartitionState]:
        if not keys:
            return {}
        p = session.partitions.c
        rows = session.conn.execute(
            sa.select(p.partition_key, p.state).where(
                p.stage == table.stage,
                p.table_name == table.name,
                p.partition_key.in_([k or _WHOLE_TABLE for k in keys]),
            )
        ).all()
        found = dict(rows)
        return {k: PartitionState(found.get(k or _WHOLE_TABLE, PartitionState.MISSING)) for k in keys}

    def _read(
        self,
        session: _Session,
        table: TableRef,
        keys: Sequence[PartitionKey],
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        declared = session.declared(table)
        if declared is None:
            return pd.DataFrame()
        target = session.definition(table, declared)
        wanted = declared if columns is None else _subset(declared, columns, table)
        plain = wanted.remove_metadata()
        parts = [
            _conform(data, wanted)
            for data in self._dialect.select_many(session.conn, target, plain, list(dict.fromkeys(keys)))
        ]
        return (pa.concat_tables(parts) if parts else wanted.empty_table()).to_pandas()

    def lookup(
        self, table: TableRef, column: str, values: Sequence[object], columns: Sequence[str]
    ) -> pd.DataFrame:
        """``columns`` of the rows (any partition) whose ``column`` is one of ``values``: a keyed read,
        as a join to a dimension needs, without loading the table. No table yet: no rows."""
        wanted = list(dict.fromkeys(columns))
        unique = list(dict.fromkeys(values))
        with self._session() as session:
            session.lock(table, exclusive=False)
            declared = session.declared(table)
            if declared is None:
                return pd.DataFrame({name: pd.Series(dtype="object") for name in wanted})
            unknown = [name for name in [column, *wanted] if name not in declared.names]
            if unknown:
                raise KeyError(f"{table.qualified_name} has no column {', '.join(map(repr, unknown))}")
            schema = pa.schema([declared.field(name) for name in wanted])
            target = session.definition(table, declared)
            parts = [
                self._dialect.select_where(
                    session.conn, target, schema, column, unique[start : start + _LOOKUP_BATCH]
                )
                for start in range(0, len(unique), _LOOKUP_BATCH)
            ]
            data = pa.concat_tables(parts) if parts else schema.empty_table()
            return _conform(data, schema).to_pandas()

    def remove(self, table: TableRef, key: PartitionKey, reason: str) -> None:
        key = table.check_key(key)
        with self._session() as session:
            session.lock(table, exclusive=True)
            declared = session.declared(table)
            if declared is not None:
                session.delete(session.definition(table, declared), [key])
            session.record(table, {key: (PartitionState.REMOVED, 0, reason)})

    def partitions(self, table: TableRef) -> dict[str, PartitionState]:
        """Every partition the catalog records for ``table``, with its state."""
        with self._session() as session:
            p = session.partitions.c
            rows = session.conn.execute(
                sa.select(p.partition_key, p.state).where(p.stage == table.stage, p.table_name == table.name)
            ).all()
        return {key: PartitionState(state) for key, state in rows if key != _WHOLE_TABLE}

    def mark_tiered(self, table: TableRef, key: str, rows: int) -> None:
        """Drop the partition's rows and record, in the same transaction, that the cold tier holds it."""
        key = table.check_key(key) or ""
        with self._session() as session:
            session.lock(table, exclusive=True)
            declared = session.declared(table)
            if declared is not None:
                session.delete(session.definition(table, declared), [key])
            session.record(table, {key: (PartitionState.TIERED, rows, "moved to the cold tier")})

    def location(self, table: TableRef, key: PartitionKey) -> str:
        key = table.check_key(key)
        place = f"{self._shown_url}#{_physical_name(self._dialect, table)}"
        return place if key is None else f"{place}/{KEY_COLUMN}={key}"


class HotTierIOManager(RedactedRepr, TierIOManager):
    """Stores assets as tables in the hot tier database at ``url`` (any SQLAlchemy URL); with
    ``cold_root``, partitions moved to the cold tier are read from there (``storage.tiering``)."""

    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ("url",)

    url: str
    lock_timeout_seconds: float = 60.0
    cold_root: str = ""

    def load_columns(
        self, store: TierStore, table: TableRef, keys: Sequence[PartitionKey], columns: Sequence[str] | None
    ) -> tuple[dict[PartitionKey, PartitionState], pd.DataFrame]:
        # Both stores this manager builds read only the columns asked for.
        return store.load(table, keys, columns)  # type: ignore[call-arg]

    def build_store(self) -> TierStore:
        # Imported here: the tiering module builds on this one.
        from de_assets.storage.tiering import hot_store

        return hot_store(self.url, self.cold_root, self.lock_timeout_seconds)

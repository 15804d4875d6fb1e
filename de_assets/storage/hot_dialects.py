"""How the hot tier talks to each kind of database: table names, SQL types and the bulk paths.

:class:`GenericDialect` works on any SQLAlchemy URL with Core statements (executemany inserts, typed
selects). A database with a faster native path subclasses it: DuckDB overrides
:meth:`~GenericDialect.insert` and :meth:`~GenericDialect.select` (it scans registered Arrow tables);
PostgreSQL (``hot_postgres.py``) loads rows before the transaction with binary ``COPY`` and overrides
:meth:`~GenericDialect.staged`, :meth:`~GenericDialect.replace`, :meth:`~GenericDialect.delete` and
:meth:`~GenericDialect.select_many`. Names reaching SQL here are already validated; they are still
quoted by the dialect's identifier preparer. Values are bound parameters, except where a bulk path
needs a parameterless statement (PostgreSQL's partition keys and snapshot id), which quotes them as
SQL literals.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC
from itertools import repeat

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from de_assets.storage.embedded import ensure_database_folder
from de_assets.storage.tier import StorageError, TableRef

# System column holding a partitioned table's partition key; stripped on read.
KEY_COLUMN = "_partition"
# The schema of the hot tier's own catalog (each table's declared schema, each partition's state).
META_STAGE = "de_assets_meta"
# Partition keys are validated to at most 128 characters (de_assets.security.identifiers).
_KEY_TYPE = sa.String(128)
# Rows per executemany batch on the generic path: bounds the Python objects alive at once.
_GENERIC_BATCH_ROWS = 20_000


class UnsupportedTypeError(StorageError):
    """A column type the hot tier cannot store as a SQL column (lists, structs, durations...)."""


def sql_type(arrow: pa.DataType, null_type: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """The SQL column type for an Arrow type; raises :class:`UnsupportedTypeError` for nested ones."""
    if pa.types.is_dictionary(arrow):
        return sql_type(arrow.value_type, null_type)
    if pa.types.is_null(arrow):
        return null_type
    if pa.types.is_boolean(arrow):
        return sa.Boolean()
    if pa.types.is_integer(arrow):
        # Signed width that holds every value; uint64 needs 20 decimal digits.
        width = arrow.bit_width if pa.types.is_signed_integer(arrow) else arrow.bit_width * 2
        if width <= 16:
            return sa.SmallInteger()
        if width <= 32:
            return sa.Integer()
        return sa.BigInteger() if width <= 64 else sa.Numeric(20, 0)
    if pa.types.is_floating(arrow):
        return sa.Double() if arrow.bit_width == 64 else sa.REAL()
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return sa.Text()
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) or pa.types.is_fixed_size_binary(arrow):
        return sa.LargeBinary()
    if pa.types.is_timestamp(arrow):
        return sa.DateTime(timezone=arrow.tz is not None)
    if pa.types.is_date(arrow):
        return sa.Date()
    if pa.types.is_time(arrow):
        return sa.Time()
    if pa.types.is_decimal(arrow):
        return sa.Numeric(arrow.precision, arrow.scale)
    raise UnsupportedTypeError(
        f"Arrow type {arrow} has no SQL column type in the hot tier; flatten the column or serialise it "
        "(e.g. to JSON text, or a duration to a number of seconds) before returning the frame"
    )


def _python_values(column: pa.Array) -> list[object]:
    """A column as Python values for a DBAPI driver; zone-aware timestamps as UTC datetimes.

    UTC matters where the driver drops the zone (SQLite stores the wall time). Converting through naive
    values is ~3x faster than letting pyarrow build zone-aware datetimes.
    """
    if not (pa.types.is_timestamp(column.type) and column.type.tz):
        return column.to_pylist()
    naive = column.cast(pa.timestamp(column.type.unit)).to_pylist()  # the UTC wall time
    return [None if v is None else v.replace(tzinfo=UTC) for v in naive]


class GenericDialect:
    """Any SQLAlchemy database, through Core statements only (no reflection)."""

    # Tables live in a schema named after the stage; otherwise in the main database as <stage>__<name>.
    has_schemas = True
    # Index the partition column (cheap on row stores, speeds up DELETE/SELECT of one partition).
    index_partitions = True
    # Whether a widened column (int32 → int64, null → typed) is altered in place.
    alters_types = True
    # SQL type of a column that has only ever held nulls, until a typed write alters it.
    null_type: sa.types.TypeEngine = sa.Text()

    def prepare(self, url: sa.URL) -> None:
        """Hook run before connecting (e.g. to create an embedded database's folder)."""

    def engine_options(self, lock_timeout_seconds: float) -> dict[str, object]:
        """Extra ``create_engine`` arguments."""
        return {}

    def configure(self, engine: sa.Engine) -> None:
        """Hook run on every new engine (e.g. to make DDL transactional)."""

    def is_lock_error(self, error: sa.exc.DBAPIError) -> bool:
        """Whether connecting failed because another process holds the database."""
        return False

    def maintenance_statements(self) -> tuple[str, ...]:
        """Housekeeping SQL the maintenance job runs (in one transaction); none for unknown databases."""
        return ()

    def lock_for_write(self, conn: sa.Connection, physical_name: str) -> None:
        """Serialise writers of one table until the transaction ends (embedded databases lock the file)."""

    def lock_for_read(self, conn: sa.Connection, physical_name: str) -> None:
        """Keep writers of one table out until the reading transaction ends (see PostgreSQL's)."""

    def lock_for_ddl(self, conn: sa.Connection) -> None:
        """Serialise creating schemas and catalog tables (``IF NOT EXISTS`` races on a server database)."""

    # Whether the catalog is created in a short transaction of its own before each session's work
    # (a database server with concurrent sessions), instead of inside that work's transaction.
    creates_catalog_apart = False
    # Whether housekeeping statements run outside a transaction, each committing on its own.
    maintains_in_autocommit = False

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        """Whether a statement gave up waiting for a lock (the database's own lock timeout)."""
        return False

    def schema_qualifier(self, conn: sa.Connection) -> str:
        """Prefix that makes a schema name unambiguous on this connection (``""`` when not needed)."""
        return ""

    def physical(self, table: TableRef) -> tuple[str | None, str]:
        """(schema, table name) where ``table`` is stored, before qualification."""
        if self.has_schemas:
            return table.stage, table.name
        return None, f"{table.stage}__{table.name}"

    def sa_table(
        self, qualifier: str, table: TableRef, columns: Sequence[tuple[str, sa.types.TypeEngine]]
    ) -> sa.Table:
        """The stored table, built in Python (never reflected); a partitioned one has the key column first."""
        schema, name = self.physical(table)
        keyed = table.partition_field is not None
        key = [sa.Column(KEY_COLUMN, _KEY_TYPE, nullable=False)] if keyed else []
        definition = sa.Table(
            name,
            sa.MetaData(),
            *key,
            *(sa.Column(n, t) for n, t in columns),
            schema=None if schema is None else qualifier + schema,
        )
        if keyed and self.index_partitions:
            # Short and unique per schema whatever the table name's length.
            digest = hashlib.sha1(f"{schema}.{name}".encode()).hexdigest()[:10]
            sa.Index(f"ix_{name[:40]}_{digest}_partition", definition.c[KEY_COLUMN])
        return definition

    def alter_type(self, conn: sa.Connection, table: sa.Table, column: sa.Column) -> None:
        """Change a stored column to ``column.type`` (values cast in place)."""
        prep = conn.dialect.identifier_preparer
        name, new_type = prep.quote(column.name), column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {prep.format_table(table)} ALTER COLUMN {name} TYPE {new_type} "
            f"USING CAST({name} AS {new_type})"
        )

    def evolve(self, conn: sa.Connection, old: sa.Table, new: sa.Table) -> None:
        """Add new columns and alter widened ones so the stored table ``old`` matches ``new``."""
        dialect = conn.dialect
        prep = dialect.identifier_preparer
        for column in new.columns:
            new_type = column.type.compile(dialect=dialect)
            if column.name not in old.c:
                conn.exec_driver_sql(
                    f"ALTER TABLE {prep.format_table(new)} ADD COLUMN {prep.quote(column.name)} {new_type}"
                )
            elif self.alters_types and new_type != old.c[column.name].type.compile(dialect=dialect):
                self.alter_type(conn, new, column)

    # Whether writes load their rows before the write transaction (see :meth:`staged`).
    stages_rows = False

    @contextmanager
    def staged(
        self, url: sa.URL, target: sa.Table | None, incoming: Mapping[str | None, pa.Table]
    ) -> Iterator[Mapping[str | None, object]]:
        """Load the rows somewhere no reader looks, before the write transaction starts.

        A bulk path with a connection of its own (PostgreSQL's binary COPY through ADBC) cannot join
        the SQLAlchemy transaction; it loads here and :meth:`replace` swaps the rows in. ``target`` is
        the table as this write will define it (None for a dialect that does not stage). Yields what
        :meth:`replace` takes per key; here the rows themselves, inserted inside the transaction.
        """
        yield incoming

    def replace(self, conn: sa.Connection, target: sa.Table, staged: Mapping[str | None, object]) -> None:
        """Inside the write transaction: the partitions of ``staged`` get exactly the staged rows."""
        self.delete(conn, target, list(staged))
        for key, data in staged.items():
            assert isinstance(data, pa.Table)
            if data.num_rows:
                self.insert(conn, target, key, data)

    def delete(self, conn: sa.Connection, target: sa.Table, keys: Sequence[str | None]) -> None:
        """Delete the rows of ``keys`` (all rows of an unpartitioned table)."""
        where = self.key_filter(target, keys)
        conn.execute(sa.delete(target) if where is None else sa.delete(target).where(where))

    def key_filter(self, table: sa.Table, keys: Sequence[str | None]) -> sa.ColumnElement[bool] | None:
        """WHERE clause selecting the partitions ``keys`` (``None`` for an unpartitioned table)."""
        if KEY_COLUMN not in table.c:
            return None
        return table.c[KEY_COLUMN].in_(list(keys))

    def insert(self, conn: sa.Connection, table: sa.Table, key: str | None, data: pa.Table) -> None:
        """Append ``data`` (one partition) to ``table``."""
        names = data.column_names
        statement = sa.insert(table)
        for batch in data.to_batches(max_chunksize=_GENERIC_BATCH_ROWS):
            columns = [_python_values(column) for column in batch.columns]
            if key is not None:
                names_with_key = [KEY_COLUMN, *names]
                rows = [
                    dict(zip(names_with_key, values, strict=True))
                    for values in zip(repeat(key), *columns, strict=False)  # repeat() is endless
                ]
            else:
                rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            conn.execute(statement, rows)

    def select(self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, key: str | None) -> pa.Table:
        """One partition's rows (the whole table for key ``None``) in the order they were written.

        One partition per query: the engine's order within a filtered scan is the insertion order,
        while a multi-key IN may be planned as a join that interleaves partitions and row groups.
        """
        return self._rows(conn, table, schema, self.key_filter(table, [key]))

    def select_many(
        self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, keys: Sequence[str | None]
    ) -> list[pa.Table]:
        """:meth:`select` of each key, in order (a dialect may share one connection or snapshot)."""
        return [self.select(conn, table, schema, key) for key in keys]

    def select_where(
        self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, column: str, values: Sequence[object]
    ) -> pa.Table:
        """The rows of any partition whose ``column`` is one of ``values`` (a bounded list)."""
        return self._rows(conn, table, schema, table.c[column].in_(list(values)))

    def _rows(
        self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, where: sa.ColumnElement[bool] | None
    ) -> pa.Table:
        statement = sa.select(*(table.c[n] for n in schema.names))
        if where is not None:
            statement = statement.where(where)
        rows = conn.execute(statement).all()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.names]
        # Zone-aware values arrive as UTC (or naive UTC from SQLite); the caller casts to the zone.
        types = [
            pa.timestamp(f.type.unit, tz="UTC") if pa.types.is_timestamp(f.type) and f.type.tz else f.type
            for f in schema
        ]
        return pa.table(
            [pa.array(c, type=t) for c, t in zip(columns, types, strict=True)], names=schema.names
        )


class SQLiteDialect(GenericDialect):
    has_schemas = False
    # SQLite columns take any value (type affinity); widening needs no ALTER, and SQLite has none.
    alters_types = False
    # BLOB affinity stores values as given, so a first typed write into an all-null column stays typed.
    null_type = sa.LargeBinary()

    def prepare(self, url: sa.URL) -> None:
        ensure_database_folder(url)

    def engine_options(self, lock_timeout_seconds: float) -> dict[str, object]:
        return {"connect_args": {"timeout": lock_timeout_seconds}}

    def configure(self, engine: sa.Engine) -> None:
        # pysqlite commits DDL implicitly; SQLAlchemy's documented recipe hands BEGIN to us instead, so
        # CREATE/ALTER roll back with the rest of a failed write.
        @sa.event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection: object, _record: object) -> None:
            dbapi_connection.isolation_level = None  # type: ignore[attr-defined]

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")


@functools.cache
def _duckdb_keywords() -> frozenset[str]:
    """Every DuckDB keyword, reserved or not."""
    with duckdb.connect() as con:
        return frozenset(name for (name,) in con.sql("SELECT keyword_name FROM duckdb_keywords()").fetchall())


class DuckDBDialect(GenericDialect):
    # Zone maps already skip other partitions' row groups; an ART index would slow bulk loads and
    # block ALTER TABLE on the indexed table.
    index_partitions = False

    def prepare(self, url: sa.URL) -> None:
        ensure_database_folder(url)

    def configure(self, engine: sa.Engine) -> None:
        # duckdb_engine quotes only DuckDB's fully reserved keywords, yet a column named e.g. "at"
        # (a type_func keyword) is a syntax error unquoted: quote every keyword.
        preparer = engine.dialect.identifier_preparer
        preparer.reserved_words = preparer.reserved_words | _duckdb_keywords()

    def is_lock_error(self, error: sa.exc.DBAPIError) -> bool:
        return "Could not set lock on file" in str(error.orig)

    def maintenance_statements(self) -> tuple[str, ...]:
        # Folds the write-ahead log into the database file, so a crash replays nothing and the file
        # alone is a complete copy.
        return ("CHECKPOINT",)

    def schema_qualifier(self, conn: sa.Connection) -> str:
        # A schema named like an attached catalog (the file's stem, "memory", "system", "temp") is an
        # ambiguous reference in DuckDB: always name the catalog. Its alias never contains a dot.
        (database,) = conn.exec_driver_sql("SELECT current_database()").all()[0]
        return f"{database}."

    def insert(self, conn: sa.Connection, table: sa.Table, key: str | None, data: pa.Table) -> None:
        if data.num_columns == 0:
            return
        raw = conn.connection.driver_connection  # the DuckDB connection, inside this transaction
        prep = conn.dialect.identifier_preparer
        view = f"de_assets_incoming_{uuid.uuid4().hex}"
        columns = ", ".join(prep.quote(n) for n in data.column_names)
        target = prep.format_table(table)
        raw.register(view, data)
        try:
            if key is None:
                raw.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {view}")
            else:
                raw.execute(
                    f"INSERT INTO {target} ({prep.quote(KEY_COLUMN)}, {columns}) SELECT ?, {columns} FROM {view}",
                    [key],
                )
        finally:
            raw.unregister(view)

    def select(self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, key: str | None) -> pa.Table:
        if not schema.names:
            return pa.table({})
        raw = conn.connection.driver_connection
        prep = conn.dialect.identifier_preparer
        sql = f"SELECT {', '.join(prep.quote(n) for n in schema.names)} FROM {prep.format_table(table)}"
        if key is None:
            return raw.sql(sql).to_arrow_table()
        # Zone maps skip the row groups of other partitions.
        return raw.sql(f"{sql} WHERE {prep.quote(KEY_COLUMN)} = ?", params=[key]).to_arrow_table()


def dialect_for(url: sa.URL) -> GenericDialect:
    """The bulk-path implementation for a URL's backend; the generic one for anything unknown."""
    backend = url.get_backend_name()
    if backend == "duckdb":
        return DuckDBDialect()
    if backend == "sqlite":
        return SQLiteDialect()
    if backend == "postgresql":
        # Imported here: its bulk path needs the production extra (ADBC's PostgreSQL driver).
        from de_assets.storage.hot_postgres import PostgresDialect

        return PostgresDialect()
    return GenericDialect()

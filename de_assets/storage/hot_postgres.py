"""The hot tier on PostgreSQL: binary COPY through ADBC for the rows, SQLAlchemy (psycopg 3) for the rest.

A partitioned table is a ``PARTITION BY LIST (_partition)`` table with one child table per partition
key. Writing a partition:

1. before the write transaction, ADBC's PostgreSQL driver creates a new standalone table (named
   ``<table>__s<epoch>_<random>``, carrying ``CHECK (_partition = key)``) and fills it with binary
   ``COPY`` on its own connection, committed but attached to nothing, so no reader sees it;
2. the write transaction (SQLAlchemy, with the catalog) drops the key's old child and attaches the new
   one. The CHECK constraint proves the bound, so ``ATTACH PARTITION`` scans nothing: the swap is a
   catalog change, atomic with the catalog record.

A crash between the two leaves an unattached table; the write's own clean-up drops it, and the
maintenance job drops any older than an hour. An unpartitioned table is loaded the same way and
copied in with ``INSERT ... SELECT`` inside the transaction.

Reads go through ADBC too (``COPY`` out, Arrow-native): every partition of a read through one
connection, in the snapshot exported by the SQLAlchemy transaction that read the catalog. Readers
share an advisory lock on the table that writers take alone, because swapping tables is not MVCC-safe.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from de_assets.security.redaction import redact_sqlalchemy_url
from de_assets.storage.hot_dialects import KEY_COLUMN, META_STAGE, GenericDialect
from de_assets.storage.tier import StorageError, TableRef

# Unattached staging tables older than this are orphans of a crashed write (maintenance drops them).
# A live write stages for minutes at most (its lock waits give up after the lock timeout); the margin
# covers clocks that disagree, since the age is the writer's clock, in the table's name.
_ORPHAN_AGE_SECONDS = 6 * 3600
# Staging table names: <table prefix>__s<unix seconds>_<8 hex>; 63 bytes is PostgreSQL's limit.
_STAGING_PATTERN = r"__s[0-9]{10}_[0-9a-f]{8}$"


def adbc_uri(url: sa.URL) -> str:
    """The libpq URI of a SQLAlchemy PostgreSQL URL (any driver), password included.

    Every part is percent-encoded: SQLAlchemy leaves e.g. a space in a password as it is, which libpq
    refuses (quoting the password in its error).
    """
    encode = functools.partial(quote, safe="")
    userinfo = ""
    if url.username:
        password = "" if url.password is None else f":{encode(str(url.password))}"
        userinfo = f"{encode(url.username)}{password}@"
    host = url.host or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    port = f":{url.port}" if url.port else ""
    database = f"/{encode(url.database)}" if url.database else ""
    pairs = [
        (k, v) for k, values in url.query.items() for v in ((values,) if isinstance(values, str) else values)
    ]
    query = f"?{urlencode(pairs)}" if pairs else ""
    return f"postgresql://{userinfo}{host}{port}{database}{query}"


@contextmanager
def _adbc_connection(url: sa.URL, **options: object) -> Iterator[Any]:
    """An ADBC connection to ``url``; a failure to connect names the database, never the password."""
    import adbc_driver_postgresql.dbapi as adbc

    try:
        conn = adbc.connect(adbc_uri(url), **options)
    except Exception as error:
        text = str(error)
        for secret in {str(url.password or ""), quote(str(url.password or ""), safe="")} - {""}:
            text = text.replace(secret, "***")
        raise StorageError(
            f"cannot connect to the hot tier {redact_sqlalchemy_url(url.render_as_string())} through ADBC: {text}"
        ) from None
    with conn:
        yield conn


def _copy_ready(column: pa.ChunkedArray, target: sa.types.TypeEngine) -> pa.ChunkedArray:
    """``column`` in the Arrow type whose binary COPY encoding is the SQL column's type."""
    arrow = column.type
    if pa.types.is_dictionary(arrow):
        return _copy_ready(column.cast(arrow.value_type), target)
    # Both offset widths stream as they are (a cast would copy every value).
    if isinstance(target, sa.Text):
        return (
            column
            if pa.types.is_string(arrow) or pa.types.is_large_string(arrow)
            else column.cast(pa.string())
        )
    if isinstance(target, sa.LargeBinary):
        return (
            column
            if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow)
            else column.cast(pa.binary())
        )
    if isinstance(target, sa.Numeric) and not isinstance(target, sa.Float):
        return column if pa.types.is_decimal(arrow) else column.cast(pa.decimal128(20, 0))
    wanted = {
        sa.SmallInteger: pa.int16(),
        sa.Integer: pa.int32(),
        sa.BigInteger: pa.int64(),
        sa.Double: pa.float64(),
        sa.REAL: pa.float32(),
        sa.Date: pa.date32(),
    }.get(type(target))
    if wanted is not None and not arrow.equals(wanted):
        return column.cast(wanted)
    return column


def _copy_table(data: pa.Table, target: sa.Table) -> pa.Table:
    return pa.table({name: _copy_ready(data[name], target.c[name].type) for name in data.column_names})


# The advisory lock that serialises creating schemas and the catalog (one per database).
_DDL_LOCK_NAME = "de_assets: schemas and catalog"


class PostgresDialect(GenericDialect):
    # Partitions are child tables: replacing one is a catalog swap, reading one scans only it.
    index_partitions = False
    stages_rows = True
    creates_catalog_apart = True
    maintains_in_autocommit = True

    def engine_options(self, lock_timeout_seconds: float) -> dict[str, object]:
        # Every lock wait (the tables' advisory locks included) gives up after the hot tier's timeout.
        return {"connect_args": {"options": f"-c lock_timeout={max(1, round(lock_timeout_seconds * 1000))}"}}

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == "55P03"  # lock_not_available

    def lock_for_ddl(self, conn: sa.Connection) -> None:
        # Two sessions creating the same schema or table "IF NOT EXISTS" at once: one fails on a unique
        # index of the system catalog. Taken after a table's own lock, never before one.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(_DDL_LOCK_NAME, 0))))

    def sa_table(
        self, qualifier: str, table: TableRef, columns: Sequence[tuple[str, sa.types.TypeEngine]]
    ) -> sa.Table:
        definition = super().sa_table(qualifier, table, columns)
        if KEY_COLUMN in definition.c:
            definition.dialect_options["postgresql"]["partition_by"] = f'LIST ("{KEY_COLUMN}")'
        return definition

    def lock_for_write(self, conn: sa.Connection, physical_name: str) -> None:
        # Writers of one table queue here, so none reads a declared schema another is about to change.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(physical_name, 0))))

    def lock_for_read(self, conn: sa.Connection, physical_name: str) -> None:
        # Dropping and attaching children is not MVCC-safe: a reader whose snapshot predates a swap
        # would find the old child gone and the new one's rows invisible (an empty partition). Readers
        # share this lock, writers take it alone, so no swap commits while a read is in flight. It is
        # an advisory lock, not a table lock: a reader's second (ADBC) connection never queues behind
        # a writer waiting for it, which would deadlock through the client.
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock_shared(sa.func.hashtextextended(physical_name, 0)))
        )

    def maintenance_statements(self) -> tuple[str, ...]:
        # Orphans of a crashed write: staging tables never attached, in the stages' schemas only, old.
        return (
            f"""DO $$
DECLARE orphan record;
BEGIN
  FOR orphan IN
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '{_STAGING_PATTERN}'
      AND n.nspname IN (SELECT stage FROM {META_STAGE}.tables)
      AND substring(c.relname FROM '__s([0-9]{{10}})_')::bigint
          < extract(epoch FROM now()) - {_ORPHAN_AGE_SECONDS}
  LOOP
    EXECUTE 'DROP TABLE ' || quote_ident(orphan.nspname) || '.' || quote_ident(orphan.relname);
  END LOOP;
END $$""",
            "ANALYZE",
        )

    # --- writes -------------------------------------------------------------------------------------

    def _staging_definition(self, target: sa.Table, key: str | None, name: str | None = None) -> sa.Table:
        """A standalone table shaped like ``target``; for a partition, bound to ``key`` by a CHECK."""
        name = name or f"{target.name[:36]}__s{int(time.time()):010d}_{secrets.token_hex(4)}"
        columns = [sa.Column(c.name, c.type, nullable=c.nullable) for c in target.columns]
        constraints: list[sa.CheckConstraint] = []
        if key is not None:
            columns[0] = sa.Column(
                KEY_COLUMN, target.c[KEY_COLUMN].type, nullable=False, server_default=sa.literal(key)
            )
            constraints.append(sa.CheckConstraint(sa.column(KEY_COLUMN) == sa.literal(key)))
        return sa.Table(name, sa.MetaData(), *columns, *constraints, schema=target.schema)

    @contextmanager
    def staged(
        self, url: sa.URL, target: sa.Table | None, incoming: Mapping[str | None, pa.Table]
    ) -> Iterator[Mapping[str | None, object]]:
        assert target is not None  # HotStore builds it for every dialect that stages rows
        compiler = postgresql.psycopg.dialect()
        prep = compiler.identifier_preparer
        staged: dict[str | None, sa.Table | None] = {}
        try:
            with _adbc_connection(url) as conn, conn.cursor() as cursor:
                if target.schema is not None:
                    cursor.execute(f"SELECT to_regnamespace({_quoted(prep.quote_schema(target.schema))})")
                    if cursor.fetchone()[0] is None:
                        cursor.execute(
                            f"SELECT pg_advisory_xact_lock(hashtextextended({_quoted(_DDL_LOCK_NAME)}, 0))"
                        )
                        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {prep.quote_schema(target.schema)}")
                        conn.commit()
                for key, data in incoming.items():
                    if not data.num_rows and key is not None:
                        staged[key] = None  # an empty partition has no child table
                        continue
                    definition = self._staging_definition(target, key)
                    cursor.execute(str(sa.schema.CreateTable(definition).compile(dialect=compiler)))
                    staged[key] = definition
                    if data.num_rows:
                        rows = _copy_table(data, definition)
                        cursor.adbc_ingest(definition.name, rows, mode="append", db_schema_name=target.schema)
                    # Committed per table: a long load holds no lock that readers or writers wait for.
                    conn.commit()
            yield staged
        except BaseException:
            self._drop_unattached(url, [d for d in staged.values() if d is not None])
            raise

    def _drop_unattached(self, url: sa.URL, definitions: Sequence[sa.Table]) -> None:
        """Drop the staging tables of a failed write (never one that became a partition)."""
        if not definitions:
            return
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with suppress(sa.exc.DBAPIError), engine.begin() as conn:
                prep = conn.dialect.identifier_preparer
                for definition in definitions:
                    name = prep.format_table(definition)
                    attached = conn.execute(
                        sa.text("SELECT relispartition FROM pg_class WHERE oid = to_regclass(:name)"),
                        {"name": name},
                    ).scalar()
                    if attached is False:
                        conn.exec_driver_sql(f"DROP TABLE {name}")
        finally:
            engine.dispose()

    def replace(self, conn: sa.Connection, target: sa.Table, staged: Mapping[str | None, object]) -> None:
        prep = conn.dialect.identifier_preparer
        parent = prep.format_table(target)
        self.delete(conn, target, list(staged))
        for key, definition in staged.items():
            if definition is None:
                continue
            assert isinstance(definition, sa.Table)
            # Another writer may have added a column since the rows were staged.
            self.evolve(conn, definition, self._staging_definition(target, key, definition.name))
            child = prep.format_table(definition)
            if key is None:
                columns = ", ".join(prep.quote(c.name) for c in target.columns)
                conn.exec_driver_sql(f"INSERT INTO {parent} ({columns}) SELECT {columns} FROM {child}")
                conn.exec_driver_sql(f"DROP TABLE {child}")
            else:
                bound = sa.literal(key).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                conn.exec_driver_sql(f"ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES IN ({bound})")

    def delete(self, conn: sa.Connection, target: sa.Table, keys: Sequence[str | None]) -> None:
        if KEY_COLUMN not in target.c:
            # TRUNCATE, not DELETE: no dead copy of the table per write, and the refill is laid out in
            # the order written (free space left by a DELETE would interleave rows). Readers are kept
            # out by the table's advisory lock, as for a child swap.
            conn.exec_driver_sql(f"TRUNCATE {conn.dialect.identifier_preparer.format_table(target)}")
            return
        prep = conn.dialect.identifier_preparer
        children = conn.execute(
            sa.text(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = to_regclass(:parent) "
                "AND pg_get_expr(c.relpartbound, c.oid) = ANY(:bounds)"
            ),
            {
                "parent": prep.format_table(target),
                "bounds": [f"FOR VALUES IN ({_quoted(key)})" for key in keys if key is not None],
            },
        ).scalars()
        for child in children:
            conn.exec_driver_sql(f"DROP TABLE {child}")

    # --- reads --------------------------------------------------------------------------------------

    def select(self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, key: str | None) -> pa.Table:
        return self.select_many(conn, table, schema, [key])[0]

    def select_many(
        self, conn: sa.Connection, table: sa.Table, schema: pa.Schema, keys: Sequence[str | None]
    ) -> list[pa.Table]:
        """Each partition of ``keys`` through one ADBC connection, all in one snapshot: the one of the
        SQLAlchemy transaction that read the catalog (readers also hold the table's shared lock)."""
        if not schema.names:
            return [pa.table({}) for _ in keys]
        prep = conn.dialect.identifier_preparer
        select = f"SELECT {', '.join(prep.quote(n) for n in schema.names)} FROM {prep.format_table(table)}"
        snapshot = conn.execute(sa.select(sa.func.pg_export_snapshot())).scalar_one()
        parts: list[pa.Table] = []
        with _adbc_connection(conn.engine.url, autocommit=True) as reader, reader.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute(f"SET TRANSACTION SNAPSHOT {_quoted(snapshot)}")
            # Rows come back in the order they were written (a child is only ever bulk-loaded): no
            # parallel workers interleaving their pages, no scan joining another one mid-table.
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute("SET LOCAL synchronize_seqscans = off")
            for key in keys:
                # A literal, not a bound parameter: ADBC streams a parameterless query as binary COPY
                # (twice as fast). Keys are validated names (de_assets.security.identifiers), quoted.
                where = "" if key is None else f" WHERE {prep.quote(KEY_COLUMN)} = {_quoted(key)}"
                cursor.execute(select + where)
                parts.append(cursor.fetch_arrow_table())
            cursor.execute("COMMIT")
        for data in parts:
            if data.num_columns != len(schema):
                raise StorageError(
                    f"{prep.format_table(table)}: expected columns {schema.names}, got {data.column_names}"
                )
        # Numeric arrives as text from the driver; the caller casts every column to the declared type.
        return [
            pa.table([_from_copy(d.column(i), f.type) for i, f in enumerate(schema)], names=schema.names)
            for d in parts
        ]


def _from_copy(column: pa.ChunkedArray, wanted: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_decimal(wanted) and pa.types.is_string(column.type):
        return pc.cast(column, wanted)
    return column


def _quoted(value: str) -> str:
    """A SQL string literal (PostgreSQL's standard_conforming_strings, the default since 9.1)."""
    return "'" + value.replace("'", "''") + "'"

"""Reverse ETL: customer segments written back into the shop's database, where the application reads them.

Two tables in the shop database belong to us, and only they can be written:

* ``customer_segments``: one row per customer (the shop's own ``customer_id``), its ``segment``, the
  partition day it was computed for (``computed_for_day``) and when it was written (``synced_at``);
* ``customer_segments_syncs``: one row per partition synced (day, time, rows inserted / updated /
  unchanged): the audit trail, and the record of the newest day synced.

A sync of day D, in one transaction:

* is skipped entirely when a later day was already synced: that sync evaluated every customer
  again, including those whose segment it left unchanged (and so did not rewrite), so an old day
  must not overwrite any of them;
* otherwise inserts new customers and updates only rows whose segment changed, each update guarded
  by ``computed_for_day <= D`` in SQL as well. Running the same day again writes nothing.

The writer opens its own engine on its own URL (by default the shop database's URL; in production
a role granted only these two tables). On SQLite the connection itself is limited to them: an
authorizer denies reading or writing any other table, so a bug here cannot touch the shop's data.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from de_assets.security.redaction import redact_sqlalchemy_url

SEGMENTS_TABLE = "customer_segments"
SYNCS_TABLE = "customer_segments_syncs"
OWN_TABLES = frozenset({SEGMENTS_TABLE, SYNCS_TABLE})
_KEYS_PER_QUERY = 5_000  # below SQLite's bound-parameter limit

metadata = sa.MetaData()
segments_table = sa.Table(
    SEGMENTS_TABLE,
    metadata,
    sa.Column("customer_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("segment", sa.String(16), nullable=False),
    sa.Column("computed_for_day", sa.String(10), nullable=False),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
)
syncs_table = sa.Table(
    SYNCS_TABLE,
    metadata,
    sa.Column("computed_for_day", sa.String(10), primary_key=True),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
)


class SegmentSyncError(RuntimeError):
    """The segments could not be written (database refused, bad input)."""


@dataclass(frozen=True)
class SyncResult:
    day: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_newer_day: str | None = None  # set when a later day was synced already: nothing written

    def as_metadata(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "day"}


# --- the writer connection ------------------------------------------------------------------------------

# sqlite3 authorizer actions whose table name is the first argument, or the second one.
_TABLE_FIRST = {
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_CREATE_TABLE,
    sqlite3.SQLITE_DROP_TABLE,
}
_TABLE_SECOND = {sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_ALTER_TABLE}
_ALWAYS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_TRANSACTION,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_SAVEPOINT,
}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
# Read-only pragmas SQLAlchemy's inspector uses to look at our own tables.
_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "foreign_key_list", "index_xinfo"}


def _own_tables_only(
    action: int, first: str | None, second: str | None, _db: str | None, _by: str | None
) -> int:
    """sqlite3 authorizer: anything on the reverse ETL's own tables (and the schema they live in)."""
    if action in _ALWAYS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        allowed = (first or "").lower() in _PRAGMAS and (second is None or second in OWN_TABLES)
        return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
    table = first if action in _TABLE_FIRST else second if action in _TABLE_SECOND else None
    if table is not None and (table in OWN_TABLES or table in _SCHEMA_TABLES):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def shop_database_exists(url: str) -> bool:
    """False only for an embedded (SQLite) database whose file is not there."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or "uri" in parsed.query:
        return True
    return Path(parsed.database or "").expanduser().is_file()


@contextmanager
def segments_writer(url: str) -> Iterator[sa.Engine]:
    """An engine for the reverse ETL alone: no pool kept, limited to its tables on SQLite."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise SegmentSyncError(f"not a SQLAlchemy URL: {redact_sqlalchemy_url(url)}") from None
    if parsed.get_backend_name() == "sqlite" and "uri" not in parsed.query:
        # mode=rw: the shop's database must exist; writing segments never creates one.
        if not shop_database_exists(url):
            raise SegmentSyncError(f"the shop database {redact_sqlalchemy_url(url)} does not exist")
        path = Path(parsed.database or "").expanduser()
        parsed = parsed.set(
            database=f"file:{quote(str(path.resolve()))}", query={**parsed.query, "mode": "rw", "uri": "true"}
        )
    engine = sa.create_engine(parsed, poolclass=NullPool)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _limit(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.execute("PRAGMA busy_timeout = 30000")  # the shop app may be writing
            dbapi_connection.set_authorizer(_own_tables_only)

    try:
        yield engine
    finally:
        engine.dispose()


# --- the sync ------------------------------------------------------------------------------------------


def _existing(conn: sa.Connection, ids: list[int]) -> pd.DataFrame:
    t = segments_table.c
    rows: list[tuple[object, ...]] = []
    for start in range(0, len(ids), _KEYS_PER_QUERY):
        chunk = ids[start : start + _KEYS_PER_QUERY]
        rows += conn.execute(
            sa.select(t.customer_id, t.segment, t.computed_for_day).where(t.customer_id.in_(chunk))
        ).all()
    return pd.DataFrame(rows, columns=["customer_id", "stored_segment", "stored_day"]).astype(
        {"customer_id": "int64", "stored_segment": "str", "stored_day": "str"}
    )


def sync_segments(
    engine: sa.Engine, segments: pd.DataFrame, day: dt.date, synced_at: dt.datetime
) -> SyncResult:
    """Write the segments of ``day`` (columns ``customer_id``, ``segment``) as the module describes."""
    if segments["customer_id"].isna().any() or segments["customer_id"].duplicated().any():
        raise SegmentSyncError("segments must have one row per customer_id, none null")
    key = day.isoformat()
    if segments.empty:
        return SyncResult(key)  # nobody to segment that day: no reason to open the shop's database
    at = synced_at.astimezone(dt.UTC)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            newest = conn.execute(sa.select(sa.func.max(syncs_table.c.computed_for_day))).scalar()
            if newest is not None and newest > key:
                return SyncResult(key, skipped_newer_day=newest)
            frame = pd.DataFrame(
                {"customer_id": segments["customer_id"].astype("int64"), "segment": segments["segment"]}
            )
            merged = frame.merge(_existing(conn, frame["customer_id"].tolist()), on="customer_id", how="left")
            new = merged[merged["stored_segment"].isna()]
            changed = merged[
                merged["stored_segment"].notna() & (merged["stored_segment"] != merged["segment"])
            ]
            if len(new):
                conn.execute(
                    segments_table.insert(),
                    [
                        {"customer_id": int(c), "segment": s, "computed_for_day": key, "synced_at": at}
                        for c, s in zip(new["customer_id"], new["segment"], strict=True)
                    ],
                )
            updated = 0
            if len(changed):
                t = segments_table.c
                statement = (
                    segments_table.update()
                    .where(t.customer_id == sa.bindparam("id"), t.computed_for_day <= key)
                    .values(segment=sa.bindparam("new_segment"), computed_for_day=key, synced_at=at)
                )
                result = conn.execute(
                    statement,
                    [
                        {"id": int(c), "new_segment": s}
                        for c, s in zip(changed["customer_id"], changed["segment"], strict=True)
                    ],
                )
                updated = max(result.rowcount, 0)
            outcome = SyncResult(
                key, inserted=len(new), updated=updated, unchanged=len(merged) - len(new) - len(changed)
            )
            logged = conn.execute(
                sa.select(sa.func.count()).where(syncs_table.c.computed_for_day == key)
            ).scalar()
            if logged and not (outcome.inserted or outcome.updated):
                return outcome  # a re-run that changed nothing leaves no trace, the log included
            conn.execute(sa.delete(syncs_table).where(syncs_table.c.computed_for_day == key))
            conn.execute(
                syncs_table.insert().values(
                    computed_for_day=key,
                    synced_at=at,
                    inserted=outcome.inserted,
                    updated=outcome.updated,
                    unchanged=outcome.unchanged,
                )
            )
            return outcome
    except sa.exc.DBAPIError as error:
        raise SegmentSyncError(
            f"cannot write {SEGMENTS_TABLE} to {redact_sqlalchemy_url(str(engine.url))}: {error.orig}"
        ) from error

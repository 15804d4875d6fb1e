"""The shop's operational database: its tables, and applying one simulated day to it.

Works on any SQLAlchemy URL (SQLite by default). A day is applied in one transaction, so a crash
leaves the database as it was before that day. Timestamps are stored as naive UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from de_assets.generation.defects import DefectRates
from de_assets.generation.shop_model import DayPlan
from de_assets.storage.embedded import ensure_database_folder

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("full_name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320)),  # nullable on purpose: the source does not enforce it
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.BigInteger),  # no foreign key: closed accounts leave orders behind
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", sa.Numeric(12, 2, asdecimal=False), nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

# The simulator's own bookkeeping: which days exist and with which seed and volumes, so that a day
# can redraw the rows of the days before it. Ingestion never reads it.
simulated_days = sa.Table(
    "simulated_days",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("customers", sa.Integer, nullable=False),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("defect_rates", sa.Text, nullable=False),  # JSON of DefectRates
    sa.Column("generated_at", sa.DateTime, nullable=False),
)

_CHUNK = 50_000


@contextmanager
def source_engine(url: str) -> Iterator[sa.Engine]:
    """An engine that holds no connection once the block ends."""
    ensure_database_folder(url)
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def ensure_schema(engine: sa.Engine) -> None:
    metadata.create_all(engine)


def load_plans(conn: sa.Connection) -> dict[dt.date, DayPlan]:
    rows = conn.execute(sa.select(simulated_days)).all()
    return {
        _as_date(r.day): DayPlan(
            day=_as_date(r.day),
            seed=int(r.seed),
            customers=int(r.customers),
            orders=int(r.orders),
            rates=DefectRates(**json.loads(r.defect_rates)),
        )
        for r in rows
    }


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _timestamps_as_sqlite_text(series: pd.Series) -> list[object]:
    """SQLAlchemy's own SQLite text format, so its bound comparisons (``updated_at < ?``) keep working."""
    text = np.datetime_as_string(series.to_numpy(dtype="datetime64[us]"), unit="us")
    values = np.char.replace(text.astype(str), "T", " ").astype(object)
    values[series.isna().to_numpy()] = None
    return values.tolist()


def _column_values(frame: pd.DataFrame, sqlite_text: bool) -> list[list[object]]:
    """Each column as plain Python values: None for missing; timestamps as datetime, or as SQLite text."""
    columns = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            if sqlite_text:
                columns.append(_timestamps_as_sqlite_text(series))
            else:
                columns.append([None if pd.isna(v) else v for v in series.dt.to_pydatetime()])
        else:
            columns.append(series.astype(object).where(series.notna(), None).tolist())
    return columns


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts for SQLAlchemy's executemany (any dialect)."""
    names = list(frame.columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*_column_values(frame, False), strict=True)]


def _sqlite_rows(frame: pd.DataFrame) -> list[tuple[object, ...]]:
    """Tuples straight for the SQLite driver: SQLAlchemy's per-value processing is most of the cost of
    a million-row day, so the SQLite fast path skips it."""
    return list(zip(*_column_values(frame, True), strict=True))


def _insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    if conn.dialect.name == "sqlite":
        statement = str(table.insert().compile(dialect=conn.dialect, column_keys=list(frame.columns)))
        rows = _sqlite_rows(frame)
        for start in range(0, len(rows), _CHUNK):
            conn.exec_driver_sql(statement, rows[start : start + _CHUNK])
        return
    for start in range(0, len(frame), _CHUNK):
        conn.execute(table.insert(), _records(frame.iloc[start : start + _CHUNK]))


def _delete_ids(conn: sa.Connection, column: sa.Column, ids: np.ndarray) -> None:
    for start in range(0, len(ids), _CHUNK):
        chunk = [int(i) for i in ids[start : start + _CHUNK]]
        conn.execute(sa.delete(column.table).where(column.in_(chunk)))


def _update_newer(conn: sa.Connection, table: sa.Table, key: str, updates: pd.DataFrame) -> None:
    """Set the given columns where the stored row is older: re-applying a day never moves a row back."""
    if updates.empty:
        return
    fields = [c for c in updates.columns if c != key]
    statement = (
        sa.update(table)
        .where(table.c[key] == sa.bindparam("_key"), table.c.updated_at < sa.bindparam("_updated_at"))
        .values({c: sa.bindparam(f"_{c}") for c in fields})
    )
    renamed = updates.rename(columns={key: "_key", **{c: f"_{c}" for c in fields}})
    for start in range(0, len(renamed), _CHUNK):
        conn.execute(statement, _records(renamed.iloc[start : start + _CHUNK]))


def apply_day(
    conn: sa.Connection,
    plan: DayPlan,
    new_customers: pd.DataFrame,
    new_orders: pd.DataFrame,
    order_updates: pd.DataFrame,
    order_deletes: np.ndarray,
    customer_updates: pd.DataFrame,
    customer_deletes: np.ndarray,
) -> None:
    """Replace what ``plan.day`` created and apply its changes to earlier rows, in the caller's transaction."""
    start = dt.datetime.combine(plan.day, dt.time())
    end = start + dt.timedelta(days=1)
    for table in (orders, customers):
        conn.execute(sa.delete(table).where(table.c.created_at >= start, table.c.created_at < end))
    _insert(conn, customers, new_customers)
    _insert(conn, orders, new_orders)
    _update_newer(conn, orders, "order_id", order_updates)
    _update_newer(conn, customers, "customer_id", customer_updates)
    _delete_ids(conn, orders.c.order_id, order_deletes)
    _delete_ids(conn, customers.c.customer_id, customer_deletes)
    conn.execute(sa.delete(simulated_days).where(simulated_days.c.day == plan.day))
    conn.execute(
        simulated_days.insert().values(
            day=plan.day,
            seed=plan.seed,
            customers=plan.customers,
            orders=plan.orders,
            defect_rates=json.dumps(dataclasses.asdict(plan.rates)),
            generated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
    )

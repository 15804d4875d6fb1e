"""Reverse ETL into a real SQLite shop database: what a sync writes, and what its connection refuses."""

import datetime as dt
import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.generation import shop_db
from de_assets.serving.reverse_etl import (
    SEGMENTS_TABLE,
    SYNCS_TABLE,
    SegmentSyncError,
    segments_writer,
    sync_segments,
)

DAY = dt.date(2024, 6, 10)
T1 = dt.datetime(2024, 6, 11, 2, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 6, 12, 2, 0, tzinfo=dt.UTC)
T3 = dt.datetime(2024, 6, 13, 2, 0, tzinfo=dt.UTC)
SHOP_TABLES = ("customers", "orders")


@pytest.fixture
def shop(tmp_path) -> str:
    """A shop database with a few customers and orders; returns its URL."""
    return make_shop(f"sqlite:///{tmp_path / 'shop.sqlite'}")


def make_shop(url: str) -> str:
    """The shop's tables at ``url`` with five customers and their orders; returns ``url``."""
    with shop_db.source_engine(url) as engine:
        shop_db.ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(
                shop_db.customers.insert(),
                [
                    {
                        "customer_id": i,
                        "full_name": f"Customer {i}",
                        "email": f"c{i}@example.com",
                        "country": "DE",
                        "created_at": dt.datetime(2024, 6, 1, i),
                        "updated_at": dt.datetime(2024, 6, 1, i),
                    }
                    for i in range(1, 6)
                ],
            )
            conn.execute(
                shop_db.orders.insert(),
                [
                    {
                        "order_id": 100 + i,
                        "customer_id": i,
                        "status": "paid",
                        "amount": 9.5 * i,
                        "currency": "EUR",
                        "created_at": dt.datetime(2024, 6, 2, i),
                        "updated_at": dt.datetime(2024, 6, 2, i),
                    }
                    for i in range(1, 6)
                ],
            )
    return url


def path_of(url: str) -> str:
    return sa.make_url(url).database


def dump(url: str, tables: tuple[str, ...]) -> dict[str, tuple[str, list[tuple]]]:
    """Schema and every row of ``tables``, read with plain sqlite3 (not through the writer)."""
    conn = sqlite3.connect(path_of(url))
    try:
        return {
            t: (
                conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (t,)).fetchone(),
                conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall(),
            )
            for t in tables
        }
    finally:
        conn.close()


def ours(url: str) -> dict[str, tuple[str, list[tuple]]]:
    return dump(url, (SEGMENTS_TABLE, SYNCS_TABLE))


def segments(pairs: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(list(pairs), dtype="int64"),
            "segment": pd.Series(list(pairs.values()), dtype="str"),
        }
    )


def sync(url: str, pairs: dict[int, str], day: dt.date, at: dt.datetime):
    with segments_writer(url) as engine:
        return sync_segments(engine, segments(pairs), day, at)


def rows(url: str, table: str) -> list[dict]:
    conn = sqlite3.connect(path_of(url))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
    finally:
        conn.close()


FIRST = {1: "new", 2: "active", 3: "at_risk", 4: "churned"}


def test_a_first_sync_inserts_every_row_and_logs_the_day(shop):
    result = sync(shop, FIRST, DAY, T1)
    assert (result.inserted, result.updated, result.unchanged, result.skipped_newer_day) == (4, 0, 0, None)
    stored = rows(shop, SEGMENTS_TABLE)
    assert [(r["customer_id"], r["segment"], r["computed_for_day"]) for r in stored] == [
        (c, s, "2024-06-10") for c, s in FIRST.items()
    ]
    assert len({r["synced_at"] for r in stored}) == 1
    assert str(stored[0]["synced_at"]).startswith("2024-06-11 02:00:00")
    log = rows(shop, SYNCS_TABLE)
    assert [(r["computed_for_day"], r["inserted"], r["updated"], r["unchanged"]) for r in log] == [
        ("2024-06-10", 4, 0, 0)
    ]


def test_the_same_sync_again_writes_nothing(shop):
    sync(shop, FIRST, DAY, T1)
    before = ours(shop)
    result = sync(shop, FIRST, DAY, T2)
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 4)
    assert ours(shop) == before


def test_a_changed_segment_rewrites_only_that_row(shop):
    sync(shop, FIRST, DAY, T1)
    before = {r["customer_id"]: r for r in rows(shop, SEGMENTS_TABLE)}
    next_day = DAY + dt.timedelta(days=1)
    result = sync(shop, {**FIRST, 3: "churned", 5: "new"}, next_day, T2)
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 3)
    after = {r["customer_id"]: r for r in rows(shop, SEGMENTS_TABLE)}
    for customer in (1, 2, 4):
        assert after[customer] == before[customer]
    assert (after[3]["segment"], after[3]["computed_for_day"]) == ("churned", "2024-06-11")
    assert after[3]["synced_at"] != before[3]["synced_at"]
    assert (after[5]["segment"], after[5]["computed_for_day"]) == ("new", "2024-06-11")
    log = rows(shop, SYNCS_TABLE)
    assert [(r["computed_for_day"], r["inserted"], r["updated"], r["unchanged"]) for r in log] == [
        ("2024-06-10", 4, 0, 0),
        ("2024-06-11", 1, 1, 3),
    ]


def test_an_older_day_after_a_newer_one_writes_nothing(shop):
    sync(shop, FIRST, DAY + dt.timedelta(days=1), T1)
    before = ours(shop)
    result = sync(shop, {1: "churned", 2: "churned", 6: "new"}, DAY, T2)
    assert result.skipped_newer_day == "2024-06-11"
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 0)
    assert ours(shop) == before


def test_no_segments_do_not_open_the_database(tmp_path):
    missing = tmp_path / "nowhere" / "shop.sqlite"
    engine = sa.create_engine(f"sqlite:///{missing}")
    connects = []
    sa.event.listen(engine, "connect", lambda *_: connects.append(1))
    try:
        result = sync_segments(engine, segments({}), DAY, T1)
    finally:
        engine.dispose()
    assert (result.inserted, result.updated, result.unchanged, result.skipped_newer_day) == (0, 0, 0, None)
    assert connects == []
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"customer_id": [1, 1], "segment": ["new", "active"]}),
        pd.DataFrame({"customer_id": pd.Series([1, None], dtype="Int64"), "segment": ["new", "active"]}),
    ],
    ids=["duplicate", "null"],
)
def test_segments_need_one_row_per_customer(shop, frame):
    with segments_writer(shop) as engine, pytest.raises(SegmentSyncError, match="one row per customer_id"):
        sync_segments(engine, frame, DAY, T1)
    conn = sqlite3.connect(path_of(shop))
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert SEGMENTS_TABLE not in names


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM customers",
        "SELECT count(*) FROM orders",
        "SELECT email FROM customers WHERE customer_id = 1",
        "UPDATE customers SET email = 'x@example.com'",
        "UPDATE orders SET amount = 0",
        "INSERT INTO customers VALUES (9, 'X', 'x@example.com', 'DE', '2024-06-01', '2024-06-01')",
        "DELETE FROM orders",
        "DELETE FROM customers WHERE customer_id = 1",
        "DROP TABLE orders",
        "DROP TABLE customers",
        "ALTER TABLE customers ADD COLUMN segment TEXT",
        "ALTER TABLE orders RENAME TO orders_old",
        "CREATE INDEX ix_mine ON customers (email)",
        "CREATE TABLE another (x INTEGER)",
        "CREATE TEMP TABLE another (x INTEGER)",
        "CREATE VIEW emails AS SELECT email FROM customers",
        "CREATE TRIGGER t AFTER INSERT ON customer_segments BEGIN DELETE FROM customers; END",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA table_info(customers)",
        "PRAGMA writable_schema = ON",
        "SELECT * FROM customer_segments JOIN customers USING (customer_id)",
        "INSERT INTO customer_segments SELECT customer_id, 'new', '2024-06-10', '2024-06-10' FROM customers",
    ],
)
def test_the_writer_connection_refuses_anything_but_its_own_tables(shop, statement):
    sync(shop, FIRST, DAY, T1)  # our tables exist, so only the authorizer can refuse
    before = dump(shop, SHOP_TABLES)
    ours_before = ours(shop)
    with (
        segments_writer(shop) as engine,
        engine.begin() as conn,
        pytest.raises(sa.exc.DatabaseError, match=r"not authorized|prohibited"),
    ):
        conn.execute(sa.text(statement))
    assert dump(shop, SHOP_TABLES) == before
    assert ours(shop) == ours_before


def test_the_writer_connection_cannot_copy_the_shop_elsewhere(shop, tmp_path):
    copy = tmp_path / "copy.sqlite"
    with (
        segments_writer(shop) as engine,
        engine.connect() as conn,
        pytest.raises(sa.exc.DatabaseError, match="authorization denied"),
    ):
        conn.exec_driver_sql(f"VACUUM INTO '{copy}'")
    assert not copy.exists()
    # The same statement on an ordinary connection does copy it: the refusal is the writer's.
    engine = sa.create_engine(shop)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"VACUUM INTO '{copy}'")
    finally:
        engine.dispose()
    assert copy.read_bytes().startswith(b"SQLite format 3")


def test_the_writer_connection_can_work_on_its_own_tables(shop):
    sync(shop, FIRST, DAY, T1)
    with segments_writer(shop) as engine, engine.begin() as conn:
        count = conn.execute(sa.text(f"SELECT count(*) FROM {SEGMENTS_TABLE}")).scalar()
        assert count == len(FIRST)
        assert conn.execute(sa.text(f"SELECT count(*) FROM {SYNCS_TABLE}")).scalar() == 1
        assert {c["name"] for c in sa.inspect(conn).get_columns(SEGMENTS_TABLE)} == {
            "customer_id",
            "segment",
            "computed_for_day",
            "synced_at",
        }


def test_syncs_never_change_the_shops_own_tables(shop):
    before = dump(shop, SHOP_TABLES)
    sync(shop, FIRST, DAY, T1)
    sync(shop, {**FIRST, 2: "at_risk", 5: "new"}, DAY + dt.timedelta(days=1), T2)
    sync(shop, FIRST, DAY, T3)  # skipped: older
    assert dump(shop, SHOP_TABLES) == before


def test_a_missing_shop_database_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "shop.sqlite"
    with pytest.raises(SegmentSyncError, match="does not exist"), segments_writer(f"sqlite:///{missing}"):
        pass
    assert not missing.exists()
    # A folder is not a database either.
    with pytest.raises(SegmentSyncError, match="does not exist"), segments_writer(f"sqlite:///{tmp_path}"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_url_that_is_not_one_is_refused():
    with pytest.raises(SegmentSyncError, match="not a SQLAlchemy URL"), segments_writer("not a url"):
        pass

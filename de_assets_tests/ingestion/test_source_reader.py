"""Reading the shop database: read-only engines, half-open windows, contract dtypes, keys, fingerprints."""

import datetime as dt
import hashlib
import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.generation import shop_db
from de_assets.generation.simulator import SimulationParams, simulate_shop_day
from de_assets.ingestion.source_reader import (
    SHOP_TABLES,
    SourceUnavailableError,
    UnsupportedSourceError,
    _columns,
    _generic_rows,
    conform,
    existing_keys,
    fetch_window,
    read_only_engine,
    read_only_options,
    window_fingerprint,
)

DAY0 = dt.date(2024, 3, 1)
T0 = dt.datetime(2024, 3, 1)
SPAN = 5


def day_window(day):
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


def order(order_id, updated_at, *, customer_id=7, status="placed", amount=10.5, created_at=None):
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "status": status,
        "amount": amount,
        "currency": "EUR",
        "created_at": created_at or updated_at,
        "updated_at": updated_at,
    }


def make_shop(path, orders=()):
    """A shop database written through SQLAlchemy, as the simulator writes it."""
    url = f"sqlite:///{path}"
    with shop_db.source_engine(url) as engine:
        shop_db.ensure_schema(engine)
        if orders:
            with engine.begin() as conn:
                conn.execute(shop_db.orders.insert(), list(orders))
    return url


def write(url, *statements):
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        engine.dispose()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Five simulated days (updates move rows to later days, some rows are hard-deleted)."""
    folder = tmp_path_factory.mktemp("simulated")
    url = f"sqlite:///{folder / 'shop.sqlite'}"
    for i in range(SPAN):
        params = SimulationParams(orders_per_day=400, events_per_day=0)
        simulate_shop_day(url, str(folder / "ledger"), DAY0 + dt.timedelta(days=i), params)
    return url, folder / "shop.sqlite"


def independent_read(path, table):
    """The whole table with plain sqlite3 and pandas, typed by hand."""
    with sqlite3.connect(path) as conn:
        frame = pd.read_sql_query(f"SELECT * FROM {table}", conn)
    for column in ("created_at", "updated_at"):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d %H:%M:%S.%f")
    return frame


# --- read-only engines -------------------------------------------------------------------------------


def test_a_write_through_the_read_only_engine_fails_and_leaves_the_file_unchanged(tmp_path):
    path = tmp_path / "shop.sqlite"
    url = make_shop(path, [order(1, T0)])
    before = digest(path)
    with read_only_engine(url) as engine:
        with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.begin() as conn:
            conn.execute(shop_db.orders.insert().values(order(2, T0)))
        with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE sneaky (x INTEGER)"))
        assert fetch_window(engine, "orders", T0, T0 + dt.timedelta(days=1))["order_id"].tolist() == [1]
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.sqlite"]


def test_a_missing_database_file_is_reported_and_never_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'nowhere' / 'shop.sqlite'}"
    with pytest.raises(SourceUnavailableError, match="does not exist") as raised, read_only_engine(url):
        pass
    assert str(tmp_path / "nowhere" / "shop.sqlite") in str(raised.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SourceUnavailableError), read_only_engine(f"duckdb:///{tmp_path / 'shop.duckdb'}"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_is_unavailable(tmp_path):
    path = tmp_path / "shop.sqlite"
    path.write_bytes(b"certainly not a database" * 100)
    with pytest.raises(SourceUnavailableError, match="cannot open"), read_only_engine(f"sqlite:///{path}"):
        pass


def test_other_dialects_are_refused_with_the_url_redacted():
    with pytest.raises(UnsupportedSourceError, match="sqlite, duckdb, postgresql") as raised:
        read_only_options("mysql+pymysql://shop:hunter2@db.example/shop")
    assert "hunter2" not in str(raised.value)
    assert "db.example" in str(raised.value)
    with pytest.raises(SourceUnavailableError, match="in-memory"):
        read_only_options("sqlite://")


def test_postgresql_sessions_are_read_only_and_keep_their_own_options():
    url, options = read_only_options("postgresql+psycopg://u:pw@h/shop?options=-csearch_path%3Dshop")
    assert options == {"connect_args": {"options": "-csearch_path=shop -c default_transaction_read_only=on"}}
    assert "options" not in url.query
    assert url.password == "pw"


def test_duckdb_is_opened_read_only(tmp_path):
    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT, status VARCHAR, "
            "amount DECIMAL(12, 2), currency VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP)"
        )
        con.execute(
            "INSERT INTO orders VALUES (2, NULL, 'paid', 3.10, 'EUR', '2024-03-01', '2024-03-02 00:00:00'),"
            "(1, 9007199254740993, 'placed', 12.00, 'USD', '2024-03-01', '2024-03-01 23:59:59.999999')"
        )
    with read_only_engine(f"duckdb:///{path}") as engine:
        with pytest.raises(sa.exc.DBAPIError, match="read-only"), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO orders (order_id) VALUES (3)"))
        day1 = fetch_window(engine, "orders", T0, T0 + dt.timedelta(days=1))
        day2 = fetch_window(engine, "orders", T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2))
        assert existing_keys(engine, "orders", np.array([3, 2, 1, 2])).tolist() == [1, 2]
        fingerprint = window_fingerprint(engine, "orders", T0, T0 + dt.timedelta(days=2))
    assert_contract_dtypes(day1, "orders")
    # 2**53 + 1 survives: no detour through floats.
    assert day1["customer_id"].tolist() == [9007199254740993]
    assert day1["amount"].tolist() == [12.0]
    assert day2["order_id"].tolist() == [2]
    assert day2["customer_id"].isna().all()
    assert (fingerprint.rows, fingerprint.key_sum) == (2, 3)
    assert fingerprint.max_updated_at == dt.datetime(2024, 3, 2)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM orders").fetchall() == [(2,)]


def assert_contract_dtypes(frame, table):
    for column, dtype in SHOP_TABLES[table].columns.items():
        assert frame[column].dtype == pd.Series([], dtype=dtype).dtype, column


# --- windows -----------------------------------------------------------------------------------------


def test_windows_are_half_open_and_never_overlap(tmp_path):
    instants = [
        T0,
        T0 + dt.timedelta(hours=12),
        T0 + dt.timedelta(days=1, microseconds=-1),
        T0 + dt.timedelta(days=1),
        T0 + dt.timedelta(days=1, microseconds=1),
        T0 + dt.timedelta(days=2),
    ]
    url = make_shop(tmp_path / "shop.sqlite", [order(i + 1, t) for i, t in enumerate(instants)])
    with read_only_engine(url) as engine:
        windows = [fetch_window(engine, "orders", *day_window(DAY0 + dt.timedelta(days=d))) for d in range(3)]
    assert [w["order_id"].tolist() for w in windows] == [[1, 2, 3], [4, 5], [6]]
    assert windows[1]["updated_at"].iloc[0] == pd.Timestamp("2024-03-02 00:00:00")


def test_aware_bounds_are_converted_to_utc_and_empty_windows_are_refused(tmp_path):
    url = make_shop(tmp_path / "shop.sqlite", [order(1, T0 + dt.timedelta(hours=1))])
    cet = dt.timezone(dt.timedelta(hours=1))
    with read_only_engine(url) as engine:
        # 01:00 CET is midnight UTC: the window [00:00, 01:00) UTC holds nothing, [01:00, 02:00) the row.
        assert fetch_window(engine, "orders", T0.replace(tzinfo=cet), T0.replace(hour=2, tzinfo=cet)).empty
        aware = fetch_window(engine, "orders", T0.replace(hour=2, tzinfo=cet), T0.replace(hour=3, tzinfo=cet))
        assert aware["order_id"].tolist() == [1]
        with pytest.raises(ValueError, match="empty window"):
            fetch_window(engine, "orders", T0, T0)
        with pytest.raises(ValueError, match="unknown source table"):
            fetch_window(engine, "simulated_days", T0, T0 + dt.timedelta(days=1))


def test_every_row_is_in_exactly_the_window_of_its_updated_at(simulated):
    url, path = simulated
    for table, contract in SHOP_TABLES.items():
        with read_only_engine(url) as engine:
            windows = [
                fetch_window(engine, table, *day_window(DAY0 + dt.timedelta(days=d)))
                for d in range(-1, SPAN + 1)
            ]
        for day_offset, window in zip(range(-1, SPAN + 1), windows, strict=True):
            assert_contract_dtypes(window, table)
            assert window[contract.key].is_monotonic_increasing
            assert (window["updated_at"].dt.date == DAY0 + dt.timedelta(days=day_offset)).all()
        fetched = pd.concat(windows, ignore_index=True).sort_values(contract.key, ignore_index=True)
        expected = independent_read(path, table).sort_values(contract.key, ignore_index=True)
        assert len(expected) > 300
        pd.testing.assert_frame_equal(fetched, expected, check_dtype=False)


def test_fetch_conforms_types_and_keeps_columns_added_at_the_source(tmp_path):
    path = tmp_path / "shop.sqlite"
    url = make_shop(
        path,
        [order(1, T0, customer_id=None, amount=12), order(2, T0 + dt.timedelta(hours=1), amount=0.1)],
    )
    write(
        url,
        sa.text("ALTER TABLE orders ADD COLUMN channel TEXT"),
        sa.text("UPDATE orders SET channel = 'web' WHERE order_id = 2"),
    )
    with read_only_engine(url) as engine:
        frame = fetch_window(engine, "orders", *day_window(DAY0))
    assert_contract_dtypes(frame, "orders")
    assert frame["customer_id"].isna().tolist() == [True, False]
    assert frame["amount"].tolist() == [12.0, 0.1]  # SQLite's NUMERIC affinity stored 12 as an integer
    assert frame["channel"].tolist()[1] == "web"
    assert pd.isna(frame["channel"].iloc[0])


def test_a_value_that_will_not_coerce_leaves_its_column_as_text(tmp_path):
    path = tmp_path / "shop.sqlite"
    url = make_shop(path, [order(1, T0), order(2, T0 + dt.timedelta(hours=1))])
    with sqlite3.connect(path) as conn:  # SQLite stores whatever it is given
        conn.execute("UPDATE orders SET amount = 'twelve', created_at = 'yesterday' WHERE order_id = 2")
    with read_only_engine(url) as engine:
        frame = fetch_window(engine, "orders", *day_window(DAY0))
    assert frame["amount"].tolist() == ["10.5", "twelve"]
    assert frame["created_at"].tolist() == ["2024-03-01 00:00:00.000000", "yesterday"]
    assert pd.api.types.is_string_dtype(frame["amount"])
    assert frame["updated_at"].dtype == "datetime64[us]"


# --- keys and fingerprints ---------------------------------------------------------------------------


def test_existing_keys_finds_exactly_the_present_candidates(simulated):
    url, path = simulated
    present = set(independent_read(path, "orders")["order_id"])
    rng = np.random.default_rng(1)
    candidates = np.concatenate(
        [rng.choice(sorted(present), 900), np.arange(1, 12_001), np.array([max(present) + 1])]
    )
    with read_only_engine(url) as engine:
        found = existing_keys(engine, "orders", candidates)
        none = existing_keys(engine, "orders", np.array([], dtype=np.int64))
    assert found.dtype == np.int64
    assert found.tolist() == sorted(present & set(candidates.tolist()))
    assert none.tolist() == []


def test_late_committed_rows_change_the_fingerprint(tmp_path):
    url = make_shop(tmp_path / "shop.sqlite", [order(i, T0 + dt.timedelta(hours=i)) for i in (1, 2, 3)])
    window = day_window(DAY0)

    def fingerprint():
        with read_only_engine(url) as engine:
            return window_fingerprint(engine, "orders", *window)

    first = fingerprint()
    assert (first.rows, first.key_sum, first.max_updated_at) == (3, 6, T0 + dt.timedelta(hours=3))
    assert first.as_json()["max_updated_at"] == "2024-03-01T03:00:00"
    assert fingerprint() == first
    # A change in another window leaves this one alone.
    write(url, shop_db.orders.insert().values(order(9, T0 + dt.timedelta(days=1))))
    assert fingerprint() == first
    # A transaction that commits late with an updated_at inside the window.
    write(url, shop_db.orders.insert().values(order(4, T0 + dt.timedelta(minutes=30))))
    late = fingerprint()
    assert (late.rows, late.key_sum, late.max_updated_at) == (4, 10, first.max_updated_at)
    # A row updated again within the window: same count and keys, other timestamps.
    orders = shop_db.orders
    write(url, sa.update(orders).where(orders.c.order_id == 1).values(updated_at=T0 + dt.timedelta(hours=2)))
    moved = fingerprint()
    assert (moved.rows, moved.key_sum) == (late.rows, late.key_sum)
    assert moved != late


def test_fingerprints_of_simulated_windows_match_an_independent_count(simulated):
    url, path = simulated
    frame = independent_read(path, "customers")
    with read_only_engine(url) as engine:
        for offset in range(SPAN):
            day = DAY0 + dt.timedelta(days=offset)
            fingerprint = window_fingerprint(engine, "customers", *day_window(day))
            rows = frame[frame["updated_at"].dt.date == day]
            assert fingerprint.rows == len(rows) > 0
            assert fingerprint.key_sum == int((rows["customer_id"] % (2**31 - 1)).sum())
            assert fingerprint.max_updated_at == rows["updated_at"].max().to_pydatetime()


def test_the_generic_path_agrees_with_the_sqlite_fast_path(simulated):
    """PostgreSQL and other dialects read through SQLAlchemy Core; SQLite runs that path too."""
    url, _ = simulated
    with read_only_engine(url) as engine:
        everything = (T0, T0 + dt.timedelta(days=SPAN))
        fast = fetch_window(engine, "orders", *everything)
        with engine.connect() as conn:
            names, rows = _generic_rows(conn, "orders", *everything)
    generic = pd.DataFrame(
        {n: conform(s, SHOP_TABLES["orders"].columns[n]) for n, s in _columns(names, rows).items()}
    )
    assert len(fast) > 1_000
    pd.testing.assert_frame_equal(generic, fast)


def test_an_empty_window_has_an_empty_fingerprint(tmp_path):
    url = make_shop(tmp_path / "shop.sqlite")
    with read_only_engine(url) as engine:
        empty = window_fingerprint(engine, "customers", *day_window(DAY0))
    assert (empty.rows, empty.max_updated_at, empty.key_sum, empty.updated_seconds_sum) == (0, None, 0, 0)

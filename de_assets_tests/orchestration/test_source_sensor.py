"""The source database sensor on a real SQLite shop: changed windows in, nothing else."""

import datetime as dt
import hashlib
import json
import re
import sqlite3

import dagster as dg
import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.generation import shop_db
from de_assets.generation.resources import LandingFolderResource, ShopDatabaseResource
from de_assets.generation.simulator import SimulationParams, simulate_shop_day
from de_assets.ingestion.assets import RAW_CUSTOMERS, RAW_ORDERS, build_ingestion_assets
from de_assets.ingestion.source_reader import daily_fingerprints, read_only_engine, window_fingerprint
from de_assets.orchestration.partitions import daily_partitions
from de_assets.orchestration.run_tags import RAW_PARTITION_LOCK
from de_assets.orchestration.source_sensor import SOURCE_DB_SENSOR, build_source_db_sensor
from de_assets.security.resources import PiiKeyResource
from de_assets.storage.cold import ColdTierIOManager

FIRST = dt.date(2024, 3, 1)
# Six in the morning on 2024-03-10: the last complete partition is 2024-03-09.
NOW = dt.datetime(2024, 3, 10, 6, tzinfo=dt.UTC)
SCAN_DAYS = 5  # scans 2024-03-05 .. 2024-03-09
PARTITIONS = daily_partitions(FIRST)
SENSOR = build_source_db_sensor(PARTITIONS, minimum_interval_seconds=30, scan_days=SCAN_DAYS)
ASSETS = build_ingestion_assets(PARTITIONS, order_lookback_days=2, customer_lookback_days=2)
KEY = re.compile(r"^(orders|customers):(\d{4}-\d{2}-\d{2}):(\d+):([0-9a-f]{16})$")


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour))


def order(order_id: int, updated: str, hour: int = 12) -> dict:
    stamp = at(updated, hour)
    return {
        "order_id": order_id,
        "customer_id": 1,
        "status": "placed",
        "amount": 9.5,
        "currency": "EUR",
        "created_at": stamp,
        "updated_at": stamp,
    }


def customer(customer_id: int, updated: str) -> dict:
    stamp = at(updated)
    return {
        "customer_id": customer_id,
        "full_name": "Ada",
        "email": "ada@example.com",
        "country": "DE",
        "created_at": stamp,
        "updated_at": stamp,
    }


class Shop:
    """A real SQLite shop database and the sensor's ticks over it, cursor carried from tick to tick."""

    def __init__(self, tmp_path, sensor: dg.SensorDefinition = SENSOR):
        self.path = tmp_path / "shop.sqlite"
        self.url = f"sqlite:///{self.path}"
        with shop_db.source_engine(self.url) as engine:
            shop_db.ensure_schema(engine)
        self.sensor = sensor
        self.resource = ShopDatabaseResource(url=self.url)
        self.definitions = dg.Definitions(
            assets=ASSETS,
            sensors=[sensor],
            resources={
                "shop": self.resource,
                "landing": LandingFolderResource(root=str(tmp_path / "landing")),
                "cold": ColdTierIOManager(root=str(tmp_path / "cold")),
                # Ingestion consults the suppression list (right to be forgotten) with this key.
                "pii_key": PiiKeyResource(key_file=str(tmp_path / "secrets" / "pii.key")),
            },
        )
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def write(self, statement, rows=None) -> None:
        """One committed write, as the shop application (or reverse ETL) would make it."""
        with shop_db.source_engine(self.url) as engine, engine.begin() as conn:
            conn.execute(statement, rows)

    def tick(self, *, now: dt.datetime = NOW, cursor: str | None = None):
        """One evaluation through ``evaluate_tick``, which checks the partition keys like the daemon."""
        with (
            dg.partition_loading_context(effective_dt=now),
            dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursor if cursor is None else cursor,
                resources={"shop": self.resource},
                definitions=self.definitions,
            ) as context,
        ):
            data = self.sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursor = data.cursor
        return data


def requested(data) -> set[tuple[str, str]]:
    """(table, day) of a tick's requests, each checked for its asset, lock tag and key."""
    pairs = set()
    for request in data.run_requests:
        table, day, _, _ = KEY.fullmatch(request.run_key).groups()
        asset = {"orders": RAW_ORDERS, "customers": RAW_CUSTOMERS}[table]
        assert request.partition_key == day
        assert request.asset_selection == [asset]
        assert request.tags[RAW_PARTITION_LOCK] == f"{asset.to_user_string()}@{day}"
        pairs.add((table, day))
    assert len(pairs) == len(data.run_requests), "one request per table, day and tick"
    return pairs


@pytest.fixture
def shop(tmp_path) -> Shop:
    shop = Shop(tmp_path)
    shop.write(
        shop_db.orders.insert(),
        [order(1, "2024-03-06"), order(2, "2024-03-06"), order(3, "2024-03-08")],
    )
    shop.write(shop_db.customers.insert(), [customer(1, "2024-03-07")])
    assert requested(shop.tick()) == {
        ("orders", "2024-03-06"),
        ("orders", "2024-03-08"),
        ("customers", "2024-03-07"),
    }
    assert shop.tick().run_requests == []
    return shop


def test_the_sensor_is_defined_as_the_issue_asks():
    assert SENSOR.name == SOURCE_DB_SENSOR == "source_db_sensor"
    assert SENSOR.default_status == dg.DefaultSensorStatus.RUNNING
    assert SENSOR.minimum_interval_seconds == 30
    with pytest.raises(ValueError, match="scan_days"):
        build_source_db_sensor(PARTITIONS, minimum_interval_seconds=30, scan_days=0)
    with pytest.raises(ValueError, match="daily"):
        build_source_db_sensor(dg.StaticPartitionsDefinition(["a"]), minimum_interval_seconds=30, scan_days=3)


def test_first_tick_requests_the_days_with_rows_then_skips(shop):
    # The fixture's two ticks are the test: the third tick is just as quiet.
    data = shop.tick()
    assert data.run_requests == []
    assert "no changes in orders, customers since 2024-03-05" in data.skip_message
    cursor = json.loads(shop.cursor)
    assert cursor["v"] == 1
    assert set(cursor["tables"]["orders"]) == {"2024-03-06", "2024-03-08"}


def test_calling_the_sensor_directly_gives_the_same_requests(tmp_path):
    shop = Shop(tmp_path)
    shop.write(shop_db.orders.insert(), [order(1, "2024-03-06")])
    with (
        dg.partition_loading_context(effective_dt=NOW),
        dg.build_sensor_context(instance=shop.instance, resources={"shop": shop.resource}) as context,
    ):
        result = SENSOR(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        (r.partition_key, r.run_key) for r in shop.tick().run_requests
    ]


def test_a_new_day_is_requested_once_it_is_complete(shop):
    shop.write(shop_db.orders.insert(), [order(10, "2024-03-10", hour=1)])
    assert shop.tick().run_requests == []  # today: still filling, not a partition
    shop.write(shop_db.orders.insert(), [order(11, "2024-03-10", hour=23)])
    assert requested(shop.tick(now=NOW + dt.timedelta(days=1))) == {("orders", "2024-03-10")}


def test_a_late_commit_into_a_captured_window_is_requested(shop):
    before = json.loads(shop.cursor)["tables"]["orders"]["2024-03-06"]
    shop.write(shop_db.orders.insert(), [order(20, "2024-03-06", hour=3)])  # stamped early, committed now
    data = shop.tick()
    assert requested(data) == {("orders", "2024-03-06")}
    _, _, sequence, digest = KEY.fullmatch(data.run_requests[0].run_key).groups()
    assert (int(sequence), digest) != tuple(before)
    assert int(sequence) == before[0] + 1


def test_an_update_moves_a_row_and_both_windows_are_requested(shop):
    shop.write(
        sa.update(shop_db.orders)
        .where(shop_db.orders.c.order_id == 1)
        .values(status="paid", updated_at=at("2024-03-09"))
    )
    assert requested(shop.tick()) == {("orders", "2024-03-06"), ("orders", "2024-03-09")}


def test_a_row_re_stamped_within_its_day_is_requested(shop):
    # Same rows and keys, a later stamp on the same day: only the seconds sum (and the max) move.
    shop.write(
        sa.update(shop_db.orders)
        .where(shop_db.orders.c.order_id == 2)
        .values(updated_at=at("2024-03-06", 13))
    )
    assert requested(shop.tick()) == {("orders", "2024-03-06")}


def test_hard_deletes_are_requested_even_when_they_empty_a_window(shop):
    shop.write(sa.delete(shop_db.orders).where(shop_db.orders.c.order_id == 1))
    assert requested(shop.tick()) == {("orders", "2024-03-06")}
    shop.write(sa.delete(shop_db.orders).where(shop_db.orders.c.order_id == 3))
    assert requested(shop.tick()) == {("orders", "2024-03-08")}
    assert shop.tick().run_requests == []


def test_a_window_that_returns_to_an_earlier_fingerprint_gets_a_fresh_key(shop):
    keys = []
    shop.write(sa.delete(shop_db.orders).where(shop_db.orders.c.order_id == 3))
    keys += [r.run_key for r in shop.tick().run_requests]
    shop.write(shop_db.orders.insert(), [order(3, "2024-03-08")])  # back exactly as it was
    keys += [r.run_key for r in shop.tick().run_requests]
    assert len(keys) == len(set(keys)) == 2


def test_writes_to_other_tables_never_request_anything(shop):
    # Reverse ETL writes segments into the same database: serving must not feed ingestion in a loop.
    segments = sa.Table(
        "customer_segments",
        sa.MetaData(),
        sa.Column("customer_id", sa.BigInteger, primary_key=True),
        sa.Column("segment", sa.String(20)),
        sa.Column("updated_at", sa.DateTime),
    )
    with shop_db.source_engine(shop.url) as engine:
        segments.create(engine)
    shop.write(
        segments.insert(),
        [{"customer_id": 1, "segment": "vip", "updated_at": at("2024-03-08")}],
    )
    shop.write(segments.update().values(segment="churn", updated_at=at("2024-03-09")))
    shop.write(
        shop_db.simulated_days.insert().values(
            day=dt.date(2024, 3, 7),
            seed=1,
            customers=1,
            orders=1,
            defect_rates="{}",
            generated_at=at("2024-03-07"),
        )
    )
    assert shop.tick().run_requests == []


def test_only_partition_days_are_requested(tmp_path):
    sensor = build_source_db_sensor(PARTITIONS, minimum_interval_seconds=30, scan_days=30)
    shop = Shop(tmp_path, sensor)
    shop.write(
        shop_db.orders.insert(),
        [order(1, "2024-02-20"), order(2, "2024-02-29"), order(3, "2024-03-01"), order(4, "2024-03-10")],
    )
    assert requested(shop.tick()) == {("orders", "2024-03-01")}  # not before FIRST, not today
    assert requested(shop.tick(now=NOW + dt.timedelta(days=1))) == {("orders", "2024-03-10")}


def test_no_complete_day_yet_is_a_skip():
    sensor = build_source_db_sensor(
        daily_partitions(dt.date(2030, 1, 1)), minimum_interval_seconds=30, scan_days=3
    )
    with (
        dg.partition_loading_context(effective_dt=NOW),
        dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            resources={"shop": ShopDatabaseResource(url="sqlite:///x")},
        ) as context,
    ):
        result = sensor(context)
    assert result.run_requests == []
    assert "no complete day" in result.skip_reason.skip_message


def test_a_late_commit_older_than_the_scan_is_not_seen(shop):
    # The documented limit: 2024-03-04 is outside the 5 scanned days; a backfill recovers it.
    shop.write(shop_db.orders.insert(), [order(30, "2024-03-04")])
    assert shop.tick().run_requests == []


@pytest.mark.parametrize(
    "cursor",
    ["{oops", '{"v": 0}', '{"v": 1, "tables": []}', '{"v": 1, "tables": {"orders": {"2024-03-06": [1]}}}'],
)
def test_an_unreadable_cursor_is_logged_and_every_scanned_day_is_requested_again(shop, capfd, cursor):
    capfd.readouterr()
    assert requested(shop.tick(cursor=cursor)) == {
        ("orders", "2024-03-06"),
        ("orders", "2024-03-08"),
        ("customers", "2024-03-07"),
    }
    assert re.search(r"WARNING.*starting over: every scanned day with rows", capfd.readouterr().err)
    assert shop.tick().run_requests == []


def test_a_cursor_without_a_table_requests_that_table_only(shop):
    cursor = json.loads(shop.cursor)
    del cursor["tables"]["customers"]
    assert requested(shop.tick(cursor=json.dumps(cursor))) == {("customers", "2024-03-07")}


def test_a_missing_database_is_a_skip_and_keeps_the_cursor(shop):
    kept = shop.cursor
    shop.path.rename(shop.path.with_suffix(".moved"))
    data = shop.tick()
    assert data.run_requests == []
    assert "does not exist" in data.skip_message
    assert data.cursor == shop.cursor == kept


def test_a_tick_never_writes_to_the_shop(shop):
    shop.write(shop_db.orders.insert(), [order(40, "2024-03-07")])
    digest = hashlib.sha256(shop.path.read_bytes()).hexdigest()
    shop.tick()
    assert hashlib.sha256(shop.path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in shop.path.parent.iterdir() if p.name.startswith("shop")) == ["shop.sqlite"]


# --- against the simulator, with expectations computed independently -------------------------------


def windows(path) -> dict[tuple[str, str], tuple]:
    """(table, day) -> (rows, key set, stamps) per updated_at day, read with plain sqlite3 and pandas."""
    result = {}
    with sqlite3.connect(path) as conn:
        for table, key in (("orders", "order_id"), ("customers", "customer_id")):
            frame = pd.read_sql_query(f"SELECT {key} AS k, updated_at FROM {table}", conn)
            frame["day"] = frame["updated_at"].str[:10]
            for day, rows in frame.groupby("day"):
                result[table, day] = (len(rows), frozenset(rows["k"]), tuple(sorted(rows["updated_at"])))
    return result


def test_a_simulated_day_requests_exactly_the_windows_it_changed(tmp_path):
    shop = Shop(tmp_path, build_source_db_sensor(PARTITIONS, minimum_interval_seconds=30, scan_days=9))
    params = SimulationParams(orders_per_day=300, events_per_day=0, seed=3)
    ledger = str(tmp_path / "ledger")
    for offset in range(6):  # 2024-03-01 .. 2024-03-06
        simulate_shop_day(shop.url, ledger, FIRST + dt.timedelta(days=offset), params)
    now = dt.datetime(2024, 3, 7, 1, tzinfo=dt.UTC)  # last partition 2024-03-06
    first = requested(shop.tick(now=now))
    assert first == {key for key in windows(shop.path) if key[1] <= "2024-03-06"}
    before = windows(shop.path)
    simulate_shop_day(shop.url, ledger, dt.date(2024, 3, 7), params)
    after = windows(shop.path)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert any(day < "2024-03-07" for _, day in changed), "the simulated day must update older rows"
    assert requested(shop.tick(now=now + dt.timedelta(days=1))) == changed


def test_grouped_fingerprints_equal_the_single_window_ones_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    for offset in range(4):
        simulate_shop_day(
            url,
            str(tmp_path / "ledger"),
            FIRST + dt.timedelta(days=offset),
            SimulationParams(events_per_day=0),
        )
    with read_only_engine(url) as engine:
        for table in ("orders", "customers"):
            grouped = daily_fingerprints(engine, table, FIRST + dt.timedelta(days=1))
            assert sorted(grouped) == [FIRST + dt.timedelta(days=d) for d in (1, 2, 3)]
            for day, fingerprint in grouped.items():
                start = dt.datetime.combine(day, dt.time())
                assert fingerprint == window_fingerprint(engine, table, start, start + dt.timedelta(days=1))
                assert fingerprint.rows > 0


def test_grouped_fingerprints_keep_midnight_boundaries_on_duckdb(tmp_path):
    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT, status VARCHAR, "
            "amount DECIMAL(12, 2), currency VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP)"
        )
        con.execute(
            "INSERT INTO orders VALUES (1, 1, 'p', 1, 'EUR', '2024-03-01', '2024-03-01 23:59:59.7'),"
            "(2, 1, 'p', 1, 'EUR', '2024-03-01', '2024-03-02 00:00:00'),"
            "(3, 1, 'p', 1, 'EUR', '2024-03-01', '2024-03-02 12:00:00.5'),"
            "(4, 1, 'p', 1, 'EUR', '2024-02-29', '2024-02-29 23:59:59.999999')"
        )
    with read_only_engine(f"duckdb:///{path}") as engine:
        grouped = daily_fingerprints(engine, "orders", FIRST)
        assert {day: f.rows for day, f in grouped.items()} == {FIRST: 1, dt.date(2024, 3, 2): 2}
        assert grouped[FIRST].max_updated_at == dt.datetime(2024, 3, 1, 23, 59, 59, 700000)
        for day, fingerprint in grouped.items():
            start = dt.datetime.combine(day, dt.time())
            assert fingerprint == window_fingerprint(engine, "orders", start, start + dt.timedelta(days=1))

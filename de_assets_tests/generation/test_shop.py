"""The simulated shop database: determinism, idempotent regeneration, and an honest ledger."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.generation.defects import Defect, DefectRates
from de_assets.generation.ledger import read_ledger
from de_assets.generation.shop_model import ID_BLOCK, ID_EPOCH
from de_assets.generation.simulator import SimulationParams, simulate_shop_day

DAY0 = dt.date(2024, 3, 1)


def days(n, start=DAY0):
    return [start + dt.timedelta(days=i) for i in range(n)]


def snapshot(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return (
                pd.read_sql("SELECT * FROM orders ORDER BY order_id", conn),
                pd.read_sql("SELECT * FROM customers ORDER BY customer_id", conn),
            )
    finally:
        engine.dispose()


def simulate(tmp_path, name, day_list, params):
    url = f"sqlite:///{tmp_path / name / 'shop.sqlite'}"
    for day in day_list:
        simulate_shop_day(url, str(tmp_path / name / "ledger"), day, params)
    return url


def test_same_seed_same_database_other_seed_other_data(tmp_path):
    params = SimulationParams(orders_per_day=2_000)
    a = snapshot(simulate(tmp_path, "a", days(4), params))
    b = snapshot(simulate(tmp_path, "b", days(4), params))
    c = snapshot(simulate(tmp_path, "c", days(4), SimulationParams(orders_per_day=2_000, seed=7)))
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not a[0]["amount"].equals(c[0]["amount"])


def test_regenerating_a_day_replaces_and_never_duplicates(tmp_path):
    params = SimulationParams(orders_per_day=3_000)
    url = simulate(tmp_path, "shop", days(12), params)
    before = snapshot(url)
    ledger_before = read_ledger(tmp_path / "shop" / "ledger")
    for day in (days(12)[3], days(12)[0], days(12)[11]):
        simulate_shop_day(url, str(tmp_path / "shop" / "ledger"), day, params)
    after = snapshot(url)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    pd.testing.assert_frame_equal(ledger_before, read_ledger(tmp_path / "shop" / "ledger"))
    assert before[0]["order_id"].is_unique


def test_earlier_rows_change_so_updated_at_is_the_only_watermark(tmp_path):
    params = SimulationParams(orders_per_day=2_000)
    url = simulate(tmp_path, "shop", days(6), params)
    orders, customers = snapshot(url)
    created = pd.to_datetime(orders["created_at"])
    updated = pd.to_datetime(orders["updated_at"])
    assert (updated >= created).all()
    # Many orders of the first day were changed on later days: an id watermark would miss them.
    first_day = orders[created.dt.date == DAY0]
    assert (pd.to_datetime(first_day["updated_at"]).dt.date > DAY0).mean() > 0.5
    assert set(orders["status"]) >= {"placed", "paid", "shipped", "delivered", "cancelled"}
    assert (pd.to_datetime(customers["updated_at"]) >= pd.to_datetime(customers["created_at"])).all()


def test_ledger_matches_the_database_exactly(tmp_path):
    n, span = 10_000, 8
    params = SimulationParams(orders_per_day=n)
    url = simulate(tmp_path, "shop", days(span), params)
    orders, customers = snapshot(url)
    ledger = read_ledger(tmp_path / "shop" / "ledger")

    def keys(defect, table):
        rows = ledger[(ledger["defect"] == defect) & (ledger["table"] == table)]
        return set(rows["key"].astype(int))

    deleted_orders = keys(Defect.HARD_DELETE, "orders")
    present = set(orders["order_id"])
    assert keys(Defect.NEGATIVE_AMOUNT, "orders") - deleted_orders == set(
        orders.loc[orders["amount"] < 0, "order_id"]
    )
    known = {"EUR", "USD", "GBP"}
    unknown = set(orders.loc[~orders["currency"].isin(known), "order_id"])
    assert keys(Defect.UNKNOWN_CURRENCY, "orders") - deleted_orders == unknown
    assert keys(Defect.NULL_REQUIRED, "orders") - deleted_orders == set(
        orders.loc[orders["customer_id"].isna(), "order_id"]
    )
    deleted_customers = keys(Defect.HARD_DELETE, "customers")
    null_email = set(customers.loc[customers["email"].isna(), "customer_id"])
    assert keys(Defect.NULL_REQUIRED, "customers") - deleted_customers == null_email

    # Conservation: every order id ever created is either present or ledgered as hard-deleted.
    created = set()
    for day in days(span):
        base = (day - ID_EPOCH).days * ID_BLOCK
        created |= set(range(base + 1, base + n + 1))
    assert present | deleted_orders == created
    assert not present & deleted_orders


@pytest.mark.parametrize(
    ("defect", "table", "rate"),
    [
        (Defect.NEGATIVE_AMOUNT, "orders", 0.01),
        (Defect.UNKNOWN_CURRENCY, "orders", 0.02),
        (Defect.NULL_REQUIRED, "orders", 0.015),
    ],
)
def test_defect_rates_land_within_tolerance(tmp_path, defect, table, rate):
    n = 40_000
    rates = DefectRates(negative_amount=0.01, unknown_currency=0.02, null_required=0.015)
    simulate(tmp_path, "shop", days(1), SimulationParams(orders_per_day=n, rates=rates))
    ledger = read_ledger(tmp_path / "shop" / "ledger")
    count = ((ledger["defect"] == defect) & (ledger["table"] == table)).sum()
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(count - n * rate) < 5 * sigma


def test_zero_rates_give_clean_data(tmp_path):
    params = SimulationParams(orders_per_day=5_000, rates=DefectRates().scaled(0))
    url = simulate(tmp_path, "shop", days(5), params)
    orders, customers = snapshot(url)
    assert (orders["amount"] > 0).all()
    assert orders["customer_id"].notna().all()
    assert customers["email"].notna().all()
    assert read_ledger(tmp_path / "shop" / "ledger").empty


def test_orders_reference_customers_that_existed(tmp_path):
    params = SimulationParams(orders_per_day=3_000, rates=DefectRates().scaled(0))
    url = simulate(tmp_path, "shop", days(3), params)
    orders, customers = snapshot(url)
    assert set(orders["customer_id"].astype(int)) <= set(customers["customer_id"])


def test_generic_sql_path_stores_the_same_data_as_the_sqlite_fast_path(tmp_path):
    params = SimulationParams(orders_per_day=1_500)
    sqlite = snapshot(simulate(tmp_path, "a", days(3), params))
    url = f"duckdb:///{tmp_path / 'b' / 'shop.duckdb'}"
    for day in days(3):
        simulate_shop_day(url, str(tmp_path / "b" / "ledger"), day, params)
    duck = snapshot(url)
    for left, right in zip(sqlite, duck, strict=True):
        for column in ("created_at", "updated_at"):
            left[column], right[column] = pd.to_datetime(left[column]), pd.to_datetime(right[column])
        pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_a_crash_while_applying_a_day_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    from de_assets.generation import shop_db

    params = SimulationParams(orders_per_day=2_000)
    url = simulate(tmp_path, "shop", days(3), params)
    before = snapshot(url)

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    # Fails after the day's old rows were deleted and its new rows inserted.
    monkeypatch.setattr(shop_db, "_update_newer", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        simulate_shop_day(url, str(tmp_path / "shop" / "ledger"), days(4)[3], params)
    with pytest.raises(RuntimeError, match="power cut"):
        simulate_shop_day(url, str(tmp_path / "shop" / "ledger"), days(3)[1], params)
    after = snapshot(url)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])

"""serving/daily_kpis: the KPI rows of a day per country, checked against figures worked out by hand."""

import datetime as dt
import math

import pandas as pd
import pytest

from de_assets.quality.models import DailyKpisModel
from de_assets.serving.kpis import KPI_COLUMNS, daily_kpis, totals_by_day

DAY = dt.date(2024, 5, 6)
COUNTRIES = {1: "DE", 2: "DE", 3: "FR", 4: "FR", 5: "IT"}  # 99: a customer the warehouse does not know


def country_of(ids: pd.Series) -> pd.Series:
    return pd.Series(
        [COUNTRIES.get(i) if pd.notna(i) else None for i in ids], index=ids.index, dtype="object"
    )


def orders_frame(rows: list[tuple[int | None, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": pd.Series(range(1, len(rows) + 1), dtype="int64"),
            "customer_id": pd.Series([r[0] for r in rows], dtype="Int64"),
            "status": pd.Series([r[1] for r in rows], dtype="str"),
            "amount_eur": pd.Series([r[2] for r in rows], dtype="float64"),
            "created_at": pd.Series([pd.Timestamp(DAY, tz="UTC")] * len(rows), dtype="datetime64[us, UTC]"),
        }
    )


def sessions_frame(rows: list[tuple[int | None, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_day": pd.Series([DAY.isoformat()] * len(rows), dtype="str"),
            "customer_id": pd.Series([r[0] for r in rows], dtype="Int64"),
            "converted": pd.Series([r[1] for r in rows], dtype="bool"),
        }
    )


def events_frame(rows: list[tuple[int | None, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([r[0] for r in rows], dtype="Int64"),
            "lateness_days": pd.Series([r[1] for r in rows], dtype="int64"),
        }
    )


ORDERS = [
    (1, "paid", 10.0),
    (1, "shipped", 20.5),
    (2, "cancelled", 99.0),  # customer 2 has no kept order: not among DE's customers
    (2, "placed", 1.0),
    (1, "delivered", 4.0),
    (3, "delivered", 5.25),
    (4, "cancelled", 7.0),
    (99, "paid", 3.0),  # unknown to the warehouse
]
SESSIONS = [(1, True), (1, False), (2, False), (None, True), (None, False), (99, False), (3, False)]
EVENTS = [(1, 0), (1, 0), (1, 2), (2, 1), (None, 0), (None, 3), (99, 0), (5, 0)]

# Worked out by hand from the rows above.
EXPECTED = {
    "DE": {
        "orders": 4,
        "cancelled_orders": 1,
        "revenue_eur": 35.5,
        "average_order_value_eur": 8.88,  # 35.5 / 4 = 8.875, rounded to cents
        "customers": 2,  # 1 and 2 (2 through its placed order)
        "sessions": 3,
        "converted_sessions": 1,
        "conversion_rate": 1 / 3,
        "events": 4,
        "late_events": 2,
        "late_event_share": 0.5,
    },
    "FR": {
        "orders": 1,
        "cancelled_orders": 1,
        "revenue_eur": 5.25,
        "average_order_value_eur": 5.25,
        "customers": 1,
        "sessions": 1,
        "converted_sessions": 0,
        "conversion_rate": 0.0,
        "events": 0,
        "late_events": 0,
        "late_event_share": None,
    },
    "IT": {
        "orders": 0,
        "cancelled_orders": 0,
        "revenue_eur": 0.0,
        "average_order_value_eur": None,
        "customers": 0,
        "sessions": 0,
        "converted_sessions": 0,
        "conversion_rate": None,
        "events": 1,
        "late_events": 0,
        "late_event_share": 0.0,
    },
    "unknown": {
        "orders": 1,
        "cancelled_orders": 0,
        "revenue_eur": 3.0,
        "average_order_value_eur": 3.0,
        "customers": 1,
        "sessions": 3,
        "converted_sessions": 1,
        "conversion_rate": 1 / 3,
        "events": 3,
        "late_events": 1,
        "late_event_share": 1 / 3,
    },
}


def assert_kpis(table: pd.DataFrame, expected: dict[str, dict[str, float | None]]) -> None:
    assert list(table["country"]) == sorted(expected)
    assert set(table["kpi_day"]) == {DAY.isoformat()}
    for row in table.to_dict("records"):
        for column, value in expected[row["country"]].items():
            actual = row[column]
            if value is None:
                assert pd.isna(actual), (row["country"], column, actual)
            else:
                assert actual == pytest.approx(value), (row["country"], column, actual)


def test_every_column_per_country_matches_the_hand_computed_figures():
    table = daily_kpis(orders_frame(ORDERS), sessions_frame(SESSIONS), events_frame(EVENTS), DAY, country_of)
    assert list(table.columns) == list(KPI_COLUMNS)
    assert {c: str(t) for c, t in table.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in KPI_COLUMNS.items()
    }
    assert_kpis(table, EXPECTED)
    DailyKpisModel.validate(table)


def test_per_country_counts_add_up_to_the_rows_of_the_day():
    table = daily_kpis(orders_frame(ORDERS), sessions_frame(SESSIONS), events_frame(EVENTS), DAY, country_of)
    assert int(table["orders"].sum() + table["cancelled_orders"].sum()) == len(ORDERS)
    assert int(table["sessions"].sum()) == len(SESSIONS)
    assert int(table["events"].sum()) == len(EVENTS)
    kept = sum(amount for _, status, amount in ORDERS if status != "cancelled")
    assert table["revenue_eur"].sum() == pytest.approx(kept)


def test_only_cancelled_orders_give_no_revenue_and_no_average():
    table = daily_kpis(
        orders_frame([(3, "cancelled", 12.0), (4, "cancelled", 8.0)]),
        sessions_frame([]),
        events_frame([]),
        DAY,
        country_of,
    )
    assert_kpis(
        table,
        {
            "FR": {
                "orders": 0,
                "cancelled_orders": 2,
                "revenue_eur": 0.0,
                "average_order_value_eur": None,
                "customers": 0,
                "sessions": 0,
                "conversion_rate": None,
                "events": 0,
                "late_event_share": None,
            }
        },
    )
    DailyKpisModel.validate(table)


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(lambda: (orders_frame([]), sessions_frame([]), events_frame([])), id="no rows"),
        pytest.param(lambda: (pd.DataFrame(), pd.DataFrame(), pd.DataFrame()), id="no columns"),
    ],
)
def test_a_day_without_data_gives_no_rows(frames):
    table = daily_kpis(*frames(), DAY, country_of)
    assert table.empty
    assert list(table.columns) == list(KPI_COLUMNS)
    DailyKpisModel.validate(table)


def test_a_day_with_only_events_still_counts_them():
    # Orders and sessions partitions not materialised yet read as frames without columns.
    table = daily_kpis(pd.DataFrame(), pd.DataFrame(), events_frame([(1, 1), (None, 0)]), DAY, country_of)
    assert_kpis(
        table,
        {
            "DE": {"orders": 0, "sessions": 0, "events": 1, "late_events": 1, "late_event_share": 1.0},
            "unknown": {"orders": 0, "sessions": 0, "events": 1, "late_events": 0, "late_event_share": 0.0},
        },
    )
    DailyKpisModel.validate(table)


def test_totals_recompute_the_conversion_rate_from_the_sums():
    kpis = pd.DataFrame(
        {
            "kpi_day": ["2024-05-06", "2024-05-06", "2024-05-07", "2024-05-08"],
            "country": ["DE", "FR", "DE", "DE"],
            "orders": [3, 1, 2, 0],
            "revenue_eur": [30.0, 2.5, 11.0, 0.0],
            "sessions": [1, 99, 4, 0],
            "converted_sessions": [1, 0, 1, 0],
            "conversion_rate": [1.0, 0.0, 0.25, math.nan],
        }
    )
    totals = totals_by_day(kpis)
    assert list(totals.index) == ["2024-05-06", "2024-05-07", "2024-05-08"]
    assert list(totals["orders"]) == [4, 2, 0]
    assert list(totals["revenue_eur"]) == pytest.approx([32.5, 11.0, 0.0])
    assert list(totals["sessions"]) == [100, 4, 0]
    # 1 converted of 100 sessions, not the mean (1.0 + 0.0) / 2 of the two countries' rates.
    assert totals.loc["2024-05-06", "conversion_rate"] == pytest.approx(0.01)
    assert totals.loc["2024-05-07", "conversion_rate"] == pytest.approx(0.25)
    assert pd.isna(totals.loc["2024-05-08", "conversion_rate"])

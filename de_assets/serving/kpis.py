"""Daily business KPIs per country: the BI mart's one table, with its definitions written down.

Definitions (day D, country C; amounts in EUR through the reference rates):

* ``orders``: orders created on D by customers of C, excluding cancelled ones; ``cancelled_orders``
  the cancelled ones (both from ``transformation/orders``, so invalid orders are already out);
* ``revenue_eur``: sum of ``amount_eur`` of ``orders``; ``average_order_value_eur``: revenue_eur /
  orders (null without orders);
* ``customers``: distinct customers among ``orders``;
* ``sessions``: sessions started on D by visitors of C; ``converted_sessions``: those with a purchase
  event; ``conversion_rate``: converted_sessions / sessions (null without sessions);
* ``events``: events that happened on D by visitors of C; ``late_events``: those delivered after D;
  ``late_event_share``: late_events / events (null without events).

The country is the customer's country (``transformation/customers``); anonymous visitors and
customers the warehouse does not know are counted under ``unknown``, so per-country rows always add
up to the day's totals. Counts are kept next to every ratio so that totals over countries or days
are computed exactly (sum the counts, then divide), never by averaging ratios.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd

UNKNOWN_COUNTRY = "unknown"
CANCELLED = "cancelled"

KPI_COLUMNS: dict[str, str] = {
    "kpi_day": "str",
    "country": "str",
    "orders": "int64",
    "cancelled_orders": "int64",
    "revenue_eur": "float64",
    "average_order_value_eur": "float64",
    "customers": "int64",
    "sessions": "int64",
    "converted_sessions": "int64",
    "conversion_rate": "float64",
    "events": "int64",
    "late_events": "int64",
    "late_event_share": "float64",
}

CountryOf = Callable[[pd.Series], pd.Series]
"""Maps customer ids (nullable) to their country, same index; unknown ids map to null."""


def _country(ids: pd.Series, country_of: CountryOf) -> pd.Series:
    if ids.empty:
        return pd.Series(dtype="str", index=ids.index)
    return country_of(ids).fillna(UNKNOWN_COUNTRY).astype("str")


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype("float64")


def daily_kpis(
    orders: pd.DataFrame,
    sessions: pd.DataFrame,
    events: pd.DataFrame,
    day: dt.date,
    country_of: CountryOf,
) -> pd.DataFrame:
    """The KPI rows of ``day`` from that day's orders, sessions and events partitions."""
    cancelled = (
        orders["status"].astype("str").eq(CANCELLED).to_numpy(dtype=bool)
        if len(orders)
        else np.array([], bool)
    )
    by_order = pd.DataFrame(
        {
            "country": _country(orders.get("customer_id", pd.Series(dtype="Int64")), country_of).to_numpy(),
            "kept": ~cancelled,
            "revenue": np.where(cancelled, 0.0, orders["amount_eur"].to_numpy(dtype="float64"))
            if len(orders)
            else [],
            "customer": orders["customer_id"].where(~cancelled).to_numpy() if len(orders) else [],
        }
    )
    order_parts = by_order.groupby("country").agg(
        orders=("kept", "sum"),
        revenue_eur=("revenue", "sum"),
        customers=("customer", "nunique"),
    )
    order_parts["cancelled_orders"] = by_order.groupby("country")["kept"].size() - order_parts["orders"]
    session_parts = (
        pd.DataFrame(
            {
                "country": _country(
                    sessions.get("customer_id", pd.Series(dtype="Int64")), country_of
                ).to_numpy(),
                "converted": sessions["converted"].to_numpy(dtype=bool) if len(sessions) else [],
            }
        )
        .groupby("country")
        .agg(sessions=("converted", "size"), converted_sessions=("converted", "sum"))
    )
    event_parts = (
        pd.DataFrame(
            {
                "country": _country(
                    events.get("customer_id", pd.Series(dtype="Int64")), country_of
                ).to_numpy(),
                "late": (events["lateness_days"].to_numpy() > 0) if len(events) else [],
            }
        )
        .groupby("country")
        .agg(events=("late", "size"), late_events=("late", "sum"))
    )

    table = order_parts.join([session_parts, event_parts], how="outer").fillna(0)
    table.index.name = "country"
    table = table.reset_index().sort_values("country", ignore_index=True)
    table["kpi_day"] = day.isoformat()
    table["revenue_eur"] = table["revenue_eur"].astype("float64").round(2)
    table["average_order_value_eur"] = _ratio(table["revenue_eur"], table["orders"]).round(2)
    table["conversion_rate"] = _ratio(table["converted_sessions"], table["sessions"])
    table["late_event_share"] = _ratio(table["late_events"], table["events"])
    return table[list(KPI_COLUMNS)].astype(KPI_COLUMNS)


def totals_by_day(kpis: pd.DataFrame) -> pd.DataFrame:
    """One row per day over all countries: counts summed, ratios recomputed from the sums."""
    sums = kpis.groupby("kpi_day")[["orders", "revenue_eur", "sessions", "converted_sessions"]].sum()
    sums["conversion_rate"] = _ratio(sums["converted_sessions"], sums["sessions"])
    return sums.sort_index()

"""Clean orders of one creation day: the latest valid version of each order, amounts also in EUR.

Ownership of raw rows, duplicates, versions and deletes follow :mod:`de_assets.transformation.versions`.
The latest version of an order is then checked, in this order (the first failing rule is the
quarantine reason, the detail lists all that fail):

1. ``missing_required_field``: order_id, status, amount, currency, created_at or updated_at absent
   from the capture, null (or blank text); customer_id absent from the capture;
2. ``missing_customer``: customer_id null (an order of a closed account keeps its customer_id, so
   a dangling id is valid here);
3. ``wrong_type``: a value the capture held with another type; ``invalid_value``: unknown status;
4. ``negative_amount``; 5. ``unknown_currency`` (no rate in the reference table);
6. ``updated_before_created``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.ingestion.source_reader import SHOP_TABLES
from de_assets.quality.conservation import Conservation
from de_assets.quality.models import ORDER_STATUSES
from de_assets.transformation.quarantine import Reason
from de_assets.transformation.rules import Check, required, settle, updated_before_created, wrong_types
from de_assets.transformation.versions import CapturedTable, current_versions

ORDERS_TABLE = CapturedTable.of(
    SHOP_TABLES["orders"],
    asset="transformation/orders",
    raw_asset="ingestion/raw_orders",
    table="orders",
)
_REQUIRED = ("order_id", "status", "amount", "currency", "created_at", "updated_at")


@dataclass(frozen=True)
class OrdersResult:
    orders: pd.DataFrame
    quarantine: pd.DataFrame
    conservation: Conservation


def build_orders(
    raw: pd.DataFrame,
    day: dt.date,
    *,
    lookahead_days: int,
    rates: Mapping[str, float],
    processed_at: dt.datetime,
    first_day: dt.date | None = None,
) -> OrdersResult:
    """Partition ``day`` of ``transformation/orders`` from the raw order captures of windows day..day+L.

    ``rates`` maps a currency code to EUR per unit (:func:`de_assets.transformation.reference.rates_to_eur`).
    """
    current = current_versions(
        raw,
        day,
        lookahead_days=lookahead_days,
        table=ORDERS_TABLE,
        processed_at=processed_at,
        first_day=first_day,
    )
    latest = current.latest
    customer_absent = "customer_id" in current.absent  # a schema change, not a missing customer
    no_customer = latest["customer_id"].isna().to_numpy() & ~current.wrong_type("customer_id")
    checks = [
        *required(current, _REQUIRED + (("customer_id",) if customer_absent else ())),
        Check(Reason.MISSING_CUSTOMER, no_customer & (not customer_absent), "customer_id is null"),
        *wrong_types(current),
        Check(
            Reason.INVALID_VALUE,
            (latest["status"].notna() & ~latest["status"].isin(ORDER_STATUSES)).to_numpy(dtype=bool),
            f"status is not one of {', '.join(ORDER_STATUSES)}",
        ),
        Check(
            Reason.NEGATIVE_AMOUNT,
            (latest["amount"] < 0).to_numpy(dtype=bool),
            "amount is negative",
        ),
        Check(
            Reason.UNKNOWN_CURRENCY,
            (latest["currency"].notna() & ~latest["currency"].isin(list(rates))).to_numpy(dtype=bool),
            "currency has no rate in the reference table",
        ),
        updated_before_created(current),
    ]
    settled = settle(current, checks, processed_at)
    valid = settled.valid
    codes, currencies = pd.factorize(valid["currency"])  # a handful of codes: look each up once
    rate = pd.Series(np.array([rates[c] for c in currencies], dtype="float64")[codes], index=valid.index)
    amount = valid["amount"].astype("float64")
    orders = pd.DataFrame(
        {
            "order_id": valid["order_id"].astype("int64"),
            "customer_id": valid["customer_id"].astype("Int64"),
            "status": valid["status"].astype("str"),
            "amount": amount,
            "currency": valid["currency"].astype("str"),
            "fx_rate_to_eur": rate,
            "amount_eur": pd.Series(np.round(amount.to_numpy() * rate.to_numpy(), 2), index=valid.index),
            **settled.version_columns(processed_at),
        }
    )
    return OrdersResult(orders, settled.quarantine, settled.conservation)

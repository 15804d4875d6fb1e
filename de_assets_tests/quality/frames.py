"""Hand-built frames with the dtypes the pipeline produces (pandas 3), one valid frame per model."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pandas as pd

from de_assets.quality import models
from de_assets.transformation.quarantine import quarantine_frame

EMAIL = "ada.lovelace@example.com"
FULL_NAME = "Ada Lovelace"


def text(*values: str | None) -> pd.Series:
    return pd.Series(list(values), dtype="str")


def naive(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), format="ISO8601")).astype("datetime64[us]")


def utc(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601")).astype("datetime64[us, UTC]")


def ints(*values: int) -> pd.Series:
    return pd.Series(list(values), dtype="int64")


def nullable_ints(*values: int | None) -> pd.Series:
    return pd.Series(list(values), dtype="Int64")


def floats(*values: float | None) -> pd.Series:
    return pd.Series(list(values), dtype="float64")


def hex64(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def raw_orders() -> pd.DataFrame:
    """An upsert and a tombstone (nulls wherever the source row was gone)."""
    return pd.DataFrame(
        {
            "order_id": ints(11, 12),
            "customer_id": nullable_ints(7, None),
            "status": text("paid", None),
            "amount": floats(19.5, None),
            "currency": text("EUR", None),
            "created_at": naive("2024-01-01 09:00", None),
            "updated_at": naive("2024-01-01 10:00", None),
            "op": text("upsert", "delete"),
            "captured_at": utc("2024-01-02 00:05", "2024-01-02 00:05"),
            "window_day": text("2024-01-01", "2024-01-01"),
        }
    )


def raw_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ints(7, 8),
            "full_name": text(FULL_NAME, None),
            "email": text(EMAIL, None),
            "country": text("GB", None),
            "created_at": naive("2024-01-01 08:00", None),
            "updated_at": naive("2024-01-01 08:00", None),
            "op": text("upsert", "delete"),
            "captured_at": utc("2024-01-02 00:05", "2024-01-02 00:05"),
            "window_day": text("2024-01-01", "2024-01-01"),
        }
    )


def raw_events() -> pd.DataFrame:
    """A parsed line and a malformed one from the same file."""
    return pd.DataFrame(
        {
            "delivery_day": text("2024-01-01", "2024-01-01"),
            "source_file": text("clickstream_2024-01-01_0.jsonl", "clickstream_2024-01-01_0.jsonl"),
            "line_number": ints(1, 2),
            "file_sha256": text(hex64("file"), hex64("file")),
            "ingested_at": utc("2024-01-01 23:00", "2024-01-01 23:00"),
            "payload": text('{"event_id": "e1"}', '{"event_id": '),
            "parse_error": text(None, "malformed_json"),
            "parse_detail": text(None, "Expecting value: line 1 column 14"),
        }
    )


def orders() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": ints(11, 13),
            "customer_id": nullable_ints(7, 8),
            "status": text("paid", "cancelled"),
            "amount": floats(19.5, 0.0),
            "currency": text("USD", "EUR"),
            "fx_rate_to_eur": floats(0.9, 1.0),
            "amount_eur": floats(17.55, 0.0),
            "created_at": utc("2024-01-01 09:00", "2024-01-01 11:00"),
            "updated_at": utc("2024-01-01 10:00", "2024-01-01 11:00"),
            "versions_seen": ints(2, 1),
            "captured_at": utc("2024-01-02 00:05", "2024-01-02 00:05"),
            "processed_at": utc("2024-01-02 01:00", "2024-01-02 01:00"),
        }
    )


def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ints(7, 8),
            "customer_token": text(hex64("c7"), hex64("c8")),
            "email_token": text(hex64("e7"), hex64("e8")),
            "name_token": text(hex64("n7"), hex64("n8")),
            "country": text("GB", "DE"),
            "created_at": utc("2024-01-01 08:00", "2024-01-01 09:00"),
            "updated_at": utc("2024-01-01 08:00", "2024-01-03 09:00"),
            "versions_seen": ints(1, 3),
            "captured_at": utc("2024-01-02 00:05", "2024-01-04 00:05"),
            "processed_at": utc("2024-01-04 01:00", "2024-01-04 01:00"),
            "pii_key_fingerprint": text("0123456789abcdef", "0123456789abcdef"),
        }
    )


def events() -> pd.DataFrame:
    """An anonymous page view and a signed-in purchase."""
    return pd.DataFrame(
        {
            "event_id": text("e1", "e2"),
            "event_time": utc("2024-01-01 10:00", "2024-01-01 10:05"),
            "event_type": text("page_view", "purchase"),
            "session_id": text("s1", "s1"),
            "customer_id": nullable_ints(None, 7),
            "page": text("/", None),
            "device": text("mobile", "mobile"),
            "amount": floats(None, 30.0),
            "currency": text(None, "GBP"),
            "amount_eur": floats(None, 35.1),
            "extra_fields": text(None, '{"referrer": "https://t.co/"}'),
            "source_file": text("clickstream_2024-01-01_0.jsonl", "clickstream_2024-01-02_0.jsonl"),
            "line_number": ints(1, 4),
            "delivery_day": text("2024-01-01", "2024-01-02"),
            "ingested_at": utc("2024-01-01 23:00", "2024-01-02 23:00"),
            "processed_at": utc("2024-01-03 01:00", "2024-01-03 01:00"),
            "lateness_days": ints(0, 1),
        }
    )


def sessions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_key": text("k1", "k2"),
            "session_day": text("2024-01-01", "2024-01-01"),
            "customer_id": nullable_ints(7, None),
            "visitor": text("customer:7", "session:s9"),
            "first_session_id": text("s1", "s9"),
            "started_at": utc("2024-01-01 10:00", "2024-01-01 12:00"),
            "ended_at": utc("2024-01-01 10:05", "2024-01-01 12:00"),
            "duration_seconds": floats(300.0, 0.0),
            "events": ints(2, 1),
            "purchases": ints(1, 0),
            "revenue_eur": floats(35.1, 0.0),
            "device": text("mobile", None),
            "converted": pd.Series([True, False], dtype="bool"),
        }
    )


def quarantine() -> pd.DataFrame:
    """A file record and a table record, built by the shared quarantine helper."""
    detected_at = dt.datetime(2024, 1, 3, 1, 0, tzinfo=dt.UTC)
    from_file = quarantine_frame(
        asset="transformation/events",
        partition="2024-01-01",
        reason="too_late",
        detail="arrived 5 days after it happened",
        raw_asset="ingestion/raw_events",
        raw_partition="2024-01-06",
        detected_at=detected_at,
        source_file=text("clickstream_2024-01-06_0.jsonl"),
        line_number=nullable_ints(3),
    )
    from_table = quarantine_frame(
        asset="transformation/orders",
        partition="2024-01-01",
        reason="negative_amount",
        detail="amount < 0",
        raw_asset="ingestion/raw_orders",
        raw_partition="2024-01-01",
        detected_at=detected_at,
        source_table="orders",
        source_key=ints(11),
    )
    return pd.concat([from_file, from_table], ignore_index=True)


GOOD: dict[type, Callable[[], pd.DataFrame]] = {
    models.RawOrdersModel: raw_orders,
    models.RawCustomersModel: raw_customers,
    models.RawEventsModel: raw_events,
    models.OrdersModel: orders,
    models.CustomersModel: customers,
    models.EventsModel: events,
    models.SessionsModel: sessions,
    models.QuarantineModel: quarantine,
}

"""Column lineage of the transformation and serving tables: each output column and the upstream
columns it is computed from. An empty list marks a column the step makes itself (a processing time,
a key fingerprint, the partition day of a snapshot).

Declared next to each other rather than inside every asset so the whole graph can be checked at once:
the catalog test fails when a table gains a column nobody declared, or a declaration names an upstream
column that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

Sources = list[tuple[dg.AssetKey, str]]


def _key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def _from(asset: str, *columns: str) -> Sources:
    return [(_key(asset), column) for column in columns]


RAW_ORDERS = "ingestion/raw_orders"
RAW_CUSTOMERS = "ingestion/raw_customers"
RAW_EVENTS = "ingestion/raw_events"
ORDERS = "transformation/orders"
EVENTS = "transformation/events"
SESSIONS = "transformation/sessions"
_QUARANTINE_COLUMNS = (
    "asset",
    "partition",
    "reason",
    "detail",
    "raw_asset",
    "raw_partition",
    "source_file",
    "line_number",
    "source_table",
    "source_key",
    "detected_at",
)


def _rejected(raw: str, key_column: str | None) -> dict[str, Sources]:
    """A *_rejected table: the record's reason is judged on the whole raw row, it points at the raw row."""
    rows = _from(raw, "op", "window_day") if key_column else _from(raw, "payload", "parse_error")
    where = _from(raw, key_column) if key_column else _from(raw, "source_file", "line_number")
    day = _from(raw, "window_day" if key_column else "delivery_day")
    return {
        "asset": [],
        "partition": day,
        "reason": rows,
        "detail": rows,
        "raw_asset": [],
        "raw_partition": day,
        "source_file": _from(raw, "source_file") if not key_column else [],
        "line_number": _from(raw, "line_number") if not key_column else [],
        "source_table": [],
        "source_key": where if key_column else [],
        "detected_at": [],
    }


def _versioned(raw: str, key_column: str) -> dict[str, Sources]:
    return {
        "created_at": _from(raw, "created_at"),
        "updated_at": _from(raw, "updated_at"),
        "versions_seen": _from(raw, key_column, "updated_at", "op"),
        "captured_at": _from(raw, "captured_at"),
        "processed_at": [],
    }


_EVENT_PAYLOAD = _from(RAW_EVENTS, "payload")

COLUMN_LINEAGE: Mapping[str, Mapping[str, Sources]] = {
    ORDERS: {
        "order_id": _from(RAW_ORDERS, "order_id"),
        "customer_id": _from(RAW_ORDERS, "customer_id"),
        "status": _from(RAW_ORDERS, "status"),
        "amount": _from(RAW_ORDERS, "amount"),
        "currency": _from(RAW_ORDERS, "currency"),
        "fx_rate_to_eur": _from(RAW_ORDERS, "currency"),  # and the reference rate table
        "amount_eur": _from(RAW_ORDERS, "amount", "currency"),
        **_versioned(RAW_ORDERS, "order_id"),
    },
    "transformation/customers": {
        "customer_id": _from(RAW_CUSTOMERS, "customer_id"),
        "customer_token": _from(RAW_CUSTOMERS, "customer_id"),
        "email_token": _from(RAW_CUSTOMERS, "email"),
        "name_token": _from(RAW_CUSTOMERS, "full_name"),
        "country": _from(RAW_CUSTOMERS, "country"),
        "pii_key_fingerprint": [],
        **_versioned(RAW_CUSTOMERS, "customer_id"),
    },
    EVENTS: {
        **{
            name: _EVENT_PAYLOAD
            for name in (
                "event_id",
                "event_time",
                "event_type",
                "session_id",
                "customer_id",
                "page",
                "device",
                "amount",
                "currency",
                "amount_eur",
                "extra_fields",
            )
        },
        "source_file": _from(RAW_EVENTS, "source_file"),
        "line_number": _from(RAW_EVENTS, "line_number"),
        "delivery_day": _from(RAW_EVENTS, "delivery_day"),
        "ingested_at": _from(RAW_EVENTS, "ingested_at"),
        "processed_at": [],
        "lateness_days": [*_EVENT_PAYLOAD, *_from(RAW_EVENTS, "delivery_day")],
    },
    SESSIONS: {
        "session_key": _from(EVENTS, "customer_id", "session_id", "event_time"),
        "session_day": _from(EVENTS, "event_time"),
        "customer_id": _from(EVENTS, "customer_id"),
        "visitor": _from(EVENTS, "customer_id", "session_id"),
        "first_session_id": _from(EVENTS, "session_id", "event_time"),
        "started_at": _from(EVENTS, "event_time"),
        "ended_at": _from(EVENTS, "event_time"),
        "duration_seconds": _from(EVENTS, "event_time"),
        "events": _from(EVENTS, "event_id"),
        "purchases": _from(EVENTS, "event_type"),
        "revenue_eur": _from(EVENTS, "event_type", "amount_eur"),
        "device": _from(EVENTS, "device", "event_time"),
        "converted": _from(EVENTS, "event_type"),
    },
    "transformation/orders_rejected": _rejected(RAW_ORDERS, "order_id"),
    "transformation/customers_rejected": _rejected(RAW_CUSTOMERS, "customer_id"),
    "transformation/events_rejected": {
        **_rejected(RAW_EVENTS, None),
        "partition": [*_EVENT_PAYLOAD],  # the event's own day
    },
    "transformation/quarantine": {
        column: [
            (_key(upstream), column)
            for upstream in (
                "ingestion/raw_events_rejected",
                "transformation/orders_rejected",
                "transformation/customers_rejected",
                "transformation/events_rejected",
            )
        ]
        for column in _QUARANTINE_COLUMNS
    },
    "serving/daily_kpis": {
        "kpi_day": _from(ORDERS, "created_at"),
        "country": [
            *_from("transformation/customers", "country"),
            *_from(ORDERS, "customer_id"),
            *_from(SESSIONS, "customer_id"),
            *_from(EVENTS, "customer_id"),
        ],
        "orders": _from(ORDERS, "order_id", "status"),
        "cancelled_orders": _from(ORDERS, "order_id", "status"),
        "revenue_eur": _from(ORDERS, "amount_eur", "status"),
        "average_order_value_eur": _from(ORDERS, "amount_eur", "status"),
        "customers": _from(ORDERS, "customer_id", "status"),
        "sessions": _from(SESSIONS, "session_key"),
        "converted_sessions": _from(SESSIONS, "converted"),
        "conversion_rate": _from(SESSIONS, "session_key", "converted"),
        "events": _from(EVENTS, "event_id"),
        "late_events": _from(EVENTS, "lateness_days"),
        "late_event_share": _from(EVENTS, "event_id", "lateness_days"),
    },
    "serving/customer_features": {
        "feature_day": [],
        "customer_token": [
            *_from(ORDERS, "customer_id"),
            *_from(EVENTS, "customer_id"),
            *_from(RAW_CUSTOMERS, "customer_id"),
        ],
        "as_of": [],
        "new_account": _from(RAW_CUSTOMERS, "customer_id", "created_at", "op", "window_day"),
        "recency_days": [
            *_from(ORDERS, "created_at", "status"),
            *_from(RAW_ORDERS, "created_at", "status", "window_day"),
        ],
        **{
            f"orders_{n}d": [
                *_from(ORDERS, "order_id", "created_at", "status"),
                *_from(RAW_ORDERS, "order_id", "created_at", "status", "window_day"),
            ]
            for n in (7, 30, 90)
        },
        **{
            f"revenue_eur_{n}d": [
                *_from(ORDERS, "amount_eur", "created_at", "status"),
                *_from(RAW_ORDERS, "amount", "currency", "created_at", "status", "window_day"),
            ]
            for n in (7, 30, 90)
        },
        "sessions_7d": [
            *_from(SESSIONS, "session_key", "session_day"),
            *_from(EVENTS, "event_time", "delivery_day"),
        ],
        "sessions_30d": [
            *_from(SESSIONS, "session_key", "session_day"),
            *_from(EVENTS, "event_time", "delivery_day"),
        ],
        "events_7d": _from(EVENTS, "event_id", "event_time", "delivery_day"),
        "events_30d": _from(EVENTS, "event_id", "event_time", "delivery_day"),
        "preferred_device": _from(EVENTS, "device", "event_time", "delivery_day"),
        "pii_key_fingerprint": [],
    },
    "serving/customer_segments": {
        "customer_id": [
            *_from("serving/customer_features", "customer_token"),
            *_from("transformation/customers", "customer_token", "customer_id"),
        ],
        "segment": _from(
            "serving/customer_features", "new_account", "orders_30d", "orders_90d", "sessions_30d"
        ),
        "computed_for_day": _from("serving/customer_features", "feature_day"),
        "synced_at": [],
    },
}


def column_lineage(key: dg.AssetKey) -> dg.TableColumnLineage | None:
    """The declared lineage of ``key``'s columns, or None for an asset without a declaration."""
    declared = COLUMN_LINEAGE.get(key.to_user_string())
    if declared is None:
        return None
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=asset, column_name=name) for asset, name in sources]
            for column, sources in declared.items()
        }
    )

"""The catalog, applied in one place: owners, code references, column lineage, and the column schemas
of the assets that are no warehouse table (the simulated sources, the reverse ETL's target).

The Definitions pass every asset through :func:`catalogued`, so the Dagster UI works as the data
catalog; a test walks the Definitions and fails on any asset that lacks an entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import dagster as dg

from de_assets.catalog.lineage import column_lineage
from de_assets.ingestion.source_reader import SHOP_TABLES
from de_assets.transformation.event_contract import EVENT_CONTRACT

COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"
DATA_ENGINEERING = "team:data-engineering"
OWNERS: Mapping[str, list[str]] = {
    "generation": [DATA_ENGINEERING],
    "ingestion": [DATA_ENGINEERING],
    "transformation": [DATA_ENGINEERING],
    "serving": [DATA_ENGINEERING, "team:analytics"],
}

_SHOP_COLUMNS = {
    "customer_id": "the customer's key",
    "full_name": "the customer's name (PII)",
    "email": "the customer's e-mail address (PII)",
    "country": "ISO 3166-1 alpha-2 country code",
    "order_id": "the order's key",
    "status": "placed, paid, shipped, delivered or cancelled",
    "amount": "order amount in `currency`",
    "currency": "ISO 4217 currency code",
    "created_at": "when the row was created (naive UTC)",
    "updated_at": "when the row last changed (naive UTC): the capture watermark",
}
_EVENT_FIELDS = {
    "event_id": "event id (re-sent events repeat it)",
    "event_time": "when it happened, ISO 8601 with a zone",
    "event_type": "page_view, search, add_to_cart or purchase",
    "session_id": "browser session id",
    "device": "mobile, desktop or tablet",
    "customer_id": "signed-in customer's id; null for anonymous visitors",
    "page": "page path",
    "amount": "purchase amount (purchases only)",
    "currency": "currency of the amount (purchases only)",
}


def _shop_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f"{table}.{column}", dtype, description=_SHOP_COLUMNS[column])
            for table, contract in SHOP_TABLES.items()
            for column, dtype in contract.columns.items()
        ]
    )


def _landing_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                spec.json_type,
                description=_EVENT_FIELDS[name] + (" (required)" if spec.required else ""),
            )
            for name, spec in EVENT_CONTRACT.items()
        ]
    )


def _segments_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn("customer_id", "int64", description="the shop's own customer id (primary key)"),
            dg.TableColumn("segment", "str", description="new, active, at_risk or churned"),
            dg.TableColumn("computed_for_day", "str", description="the features' day the segment came from"),
            dg.TableColumn("synced_at", "datetime", description="when this row was last written (UTC)"),
        ]
    )


# Assets whose data is not a warehouse table with a pandera model: their schema is declared here.
_SCHEMAS = {
    "generation/shop_database": _shop_schema,
    "generation/clickstream_landing": _landing_schema,
    "serving/customer_segments": _segments_schema,
}


def _describe(spec: dg.AssetSpec) -> dg.AssetSpec:
    metadata: dict[str, object] = {}
    lineage = column_lineage(spec.key)
    if lineage is not None:
        metadata[COLUMN_LINEAGE] = lineage
    schema = _SCHEMAS.get(spec.key.to_user_string())
    if schema is not None and COLUMN_SCHEMA not in spec.metadata:
        metadata[COLUMN_SCHEMA] = schema()
    return spec.merge_attributes(
        owners=OWNERS.get(spec.group_name or "", [DATA_ENGINEERING]), metadata=metadata
    )


def catalogued(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with owners, lineage and schemas merged in, and references to their source code."""
    described = dg.map_asset_specs(_describe, assets)
    # Code references are beta in Dagster 1.13; we want them in the catalog, and the warning (raised
    # for every asset, on every load of the code location) says nothing a user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(described))

"""The serving stage as daily-partitioned assets: the BI mart, ML features and reverse ETL.

Serving reads only transformation outputs (and, for point-in-time features, the raw capture windows
transformation itself reads), so everything here sits behind transformation's blocking checks: a
transformation partition that fails them is never stored, and serving does not run on it. Each step
validates its own output in memory before storing or writing it (write-audit-publish).
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack

import dagster as dg
import numpy as np
import pandas as pd

from de_assets.ingestion.assets import RAW_CUSTOMERS, RAW_ORDERS
from de_assets.orchestration.partitions import days_of, first_day
from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.quality.checks import (
    column_schema,
    conservation_check_result,
    for_asset,
    metric_history,
    pandera_check_result,
    pandera_check_spec,
    spc_check_result,
)
from de_assets.quality.conservation import Conservation
from de_assets.quality.models import CustomerFeaturesModel, CustomerSegmentsModel, DailyKpisModel
from de_assets.security.resources import PiiKeyResource
from de_assets.serving.chart import TREND_DAYS, markdown_image, trend_png
from de_assets.serving.features import (
    NEW_ACCOUNT_DAYS,
    ORDER_DAYS,
    VISIT_DAYS,
    FeatureSettings,
    FeatureSources,
    customer_features,
    utc_days,
)
from de_assets.serving.kpis import daily_kpis, totals_by_day
from de_assets.serving.resources import ReportsResource, SegmentsDatabaseResource, WarehouseResource
from de_assets.serving.reverse_etl import SEGMENTS_TABLE, SYNCS_TABLE, SyncResult, sync_segments
from de_assets.serving.segments import SEGMENTS, assign_segments
from de_assets.settings import HOT
from de_assets.storage.io_manager import PARTITION_COLUMN, concat_days, days_in
from de_assets.transformation.assets import CUSTOMERS, EVENTS, ORDERS, SESSIONS
from de_assets.transformation.reference import rates_to_eur

GROUP = "serving"
DAILY_KPIS = dg.AssetKey([GROUP, "daily_kpis"])
CUSTOMER_FEATURES = dg.AssetKey([GROUP, "customer_features"])
CUSTOMER_SEGMENTS = dg.AssetKey([GROUP, "customer_segments"])
HOT_TAGS = {"stage": GROUP, "tier": "hot", "pii": "false"}
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=30)
)


# A lookup by key into transformation/customers reads whichever sign-up days hold the keys.
_CUSTOMER_DIMENSION = dg.AssetDep(CUSTOMERS, partition_mapping=dg.AllPartitionMapping())


def _daily_step(partitions_def: dg.PartitionsDefinition) -> dict[str, object]:
    """What every serving step shares: its group, daily partitions run as one range, the hot-tier
    pool (each reads or writes the embedded hot tier)."""
    return {
        "group_name": GROUP,
        "partitions_def": partitions_def,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "pool": HOT_TIER_POOL,
    }


def _on_day(frame: pd.DataFrame, column: str, day: dt.date) -> pd.DataFrame:
    """The rows of ``frame`` whose ``column`` (timestamps or ISO day text) falls on ``day``."""
    if frame.empty:
        return frame
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        return frame[utc_days(values) == np.datetime64(day, "D")]
    return frame[values.astype("str") == day.isoformat()]


def _blocking_checks(
    key: dg.AssetKey, model: type, table: pd.DataFrame, conservation: dict[str, Conservation]
) -> list[dg.AssetCheckResult]:
    """The pandera model and the conservation balance of a step's output, evaluated before it is stored."""
    return [
        pandera_check_result(model, table, check_name=pandera_check_spec(model, key).name, asset_key=key),
        for_asset(key, conservation_check_result("conservation", conservation)),
    ]


def _conservation_spec(key: dg.AssetKey, what: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("conservation", asset=key, blocking=True, description=what)


def _daily_kpis_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=DAILY_KPIS,
        ins={
            name: days_in(key)
            for name, key in (("orders", ORDERS), ("sessions", SESSIONS), ("events", EVENTS))
        },
        deps=[_CUSTOMER_DIMENSION],  # countries, looked up by customer id
        **_daily_step(partitions_def),
        io_manager_key=HOT,
        check_specs=[
            pandera_check_spec(DailyKpisModel, DAILY_KPIS),
            _conservation_spec(
                DAILY_KPIS,
                "Every order, session and event of the day is counted under exactly one country: the "
                "per-country counts add up to the rows of the upstream partitions.",
            ),
        ],
        output_required=False,
        metadata={PARTITION_COLUMN: "kpi_day", "dagster/column_schema": column_schema(DailyKpisModel)},
        kinds={"duckdb", "pandas"},
        tags=HOT_TAGS,
        freshness_policy=FRESHNESS,
        description="Business KPIs per day and country: orders and revenue in EUR (cancelled orders apart), "
        "average order value, distinct customers, sessions and conversion rate (sessions with a purchase / "
        "sessions), late-event share (events delivered after their day / events). Country is the "
        "customer's; anonymous visitors count under `unknown`. Each materialisation attaches a chart of "
        f"the last {TREND_DAYS} days (revenue and conversion) to its metadata and writes it as a PNG to "
        "the reports folder.",
    )
    def daily_kpis_asset(
        context: dg.AssetExecutionContext,
        orders: pd.DataFrame,
        sessions: pd.DataFrame,
        events: pd.DataFrame,
        warehouse: WarehouseResource,
        reports: ReportsResource,
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        known = sorted(
            {
                int(i)
                for frame in (orders, sessions, events)
                if "customer_id" in frame
                for i in frame["customer_id"].dropna().unique()
            }
        )
        dimension = warehouse.lookup(CUSTOMERS, "customer_id", known, ["customer_id", "country"])
        countries = dict(zip(dimension["customer_id"].astype("int64"), dimension["country"], strict=True))

        def country_of(customer_ids: pd.Series) -> pd.Series:
            return customer_ids.astype("Int64").map(countries).astype("str")

        frames, conservation = [], {}
        for partition, day in days_of(context):
            day_orders = _on_day(orders, "created_at", day)
            day_sessions = _on_day(sessions, "session_day", day)
            day_events = _on_day(events, "event_time", day)
            kpis = daily_kpis(day_orders, day_sessions, day_events, day, country_of)
            frames.append(kpis)
            counted = int(kpis[["orders", "cancelled_orders", "sessions", "events"]].to_numpy().sum())
            conservation[partition] = Conservation(
                rows_in=len(day_orders) + len(day_sessions) + len(day_events), rows_out=counted, quarantined=0
            )
        table = concat_days(frames)
        checks = _blocking_checks(DAILY_KPIS, DailyKpisModel, table, conservation)
        yield from checks
        if not all(check.passed for check in checks):
            return
        _attach_trends(context, table, warehouse, reports)
        yield dg.Output(table)

    return daily_kpis_asset


def _attach_trends(
    context: dg.AssetExecutionContext,
    table: pd.DataFrame,
    warehouse: WarehouseResource,
    reports: ReportsResource,
) -> None:
    """For each day of the run: a chart of the TREND_DAYS days up to it, in metadata and as a file."""
    days = [day for _, day in days_of(context)]
    first, last = days[0] - dt.timedelta(days=TREND_DAYS - 1), days[-1]
    span = [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    this_run = set(table["kpi_day"])
    stored = warehouse.partitions(DAILY_KPIS, [d for d in span if d not in this_run])
    history = totals_by_day(pd.concat([f for f in (stored, table) if len(f)] or [table], ignore_index=True))
    for partition, day in days_of(context):
        window = [(day - dt.timedelta(days=n)).isoformat() for n in range(TREND_DAYS - 1, -1, -1)]
        # Every day of the window on the axis: a day without figures shows as a gap, not as no day.
        trend = history.reindex(window)
        png = trend_png(trend, f"Revenue (EUR) and conversion rate, the {TREND_DAYS} days to {partition}")
        path = reports.path("daily_kpis", f"trend_{partition}.png")
        path.write_bytes(png)
        context.add_asset_metadata(
            {
                "trend": dg.MetadataValue.md(markdown_image(png, f"KPI trend up to {partition}")),
                "trend_file": dg.MetadataValue.path(str(path)),
            },
            asset_key=DAILY_KPIS,
            partition_key=partition,
        )


def _customer_features_asset(
    partitions_def: dg.PartitionsDefinition,
    *,
    late_days: int,
    order_lookahead_days: int,
    customer_lookahead_days: int,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=CUSTOMER_FEATURES,
        ins={
            "orders": days_in(ORDERS, before=ORDER_DAYS),
            # Creation days whose look-ahead is still open at D are rebuilt from these windows.
            "raw_orders": days_in(RAW_ORDERS, before=max(order_lookahead_days - 1, 0)),
            "raw_customers": days_in(RAW_CUSTOMERS, before=NEW_ACCOUNT_DAYS),
            "events": days_in(EVENTS, before=VISIT_DAYS),
            "sessions": days_in(SESSIONS, before=VISIT_DAYS),
        },
        **_daily_step(partitions_def),
        io_manager_key=HOT,
        check_specs=[
            pandera_check_spec(CustomerFeaturesModel, CUSTOMER_FEATURES),
            dg.AssetCheckSpec(
                "row_count_anomaly",
                asset=CUSTOMER_FEATURES,
                description="Customers per day within mean ± 3 sigma of earlier partitions (WARN).",
            ),
        ],
        output_required=False,
        metadata={
            PARTITION_COLUMN: "feature_day",
            "dagster/column_schema": column_schema(CustomerFeaturesModel),
        },
        kinds={"duckdb", "pandas"},
        tags={**HOT_TAGS, "pii": "pseudonymised"},
        freshness_policy=FRESHNESS,
        description="One row per customer (keyed token, no PII) as of the end of the day, point-in-time "
        "correct: only orders in the version that stood at the end of the day and events that had "
        "happened and arrived by then. Recency, frequency and monetary value over 7/30/90 days, sessions "
        "and events over 7/30 days, preferred device, new account. Each partition is a day's snapshot, so "
        "a training set for any range of days is a range of partitions.",
    )
    def customer_features_asset(
        context: dg.AssetExecutionContext,
        orders: pd.DataFrame,
        raw_orders: pd.DataFrame,
        raw_customers: pd.DataFrame,
        events: pd.DataFrame,
        sessions: pd.DataFrame,
        pii_key: PiiKeyResource,
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        processed_at = dt.datetime.now(dt.UTC)
        settings = FeatureSettings(
            order_lookahead_days=order_lookahead_days,
            customer_lookahead_days=customer_lookahead_days,
            late_days=late_days,
            rates=rates_to_eur(),
            key=pii_key.load(context.log),
            first_day=first_day(partitions_def),
        )
        sources = FeatureSources(orders, raw_orders, raw_customers, events, sessions)
        frames, counts = [], {}
        for partition, day in days_of(context):
            features = customer_features(sources, day, settings, processed_at)
            frames.append(features)
            counts[partition] = float(len(features))
            context.add_asset_metadata(
                {"customers": len(features), "new_accounts": int(features["new_account"].sum())},
                asset_key=CUSTOMER_FEATURES,
                partition_key=partition,
            )
        table = concat_days(frames)
        pandera = pandera_check_result(
            CustomerFeaturesModel,
            table,
            check_name=pandera_check_spec(CustomerFeaturesModel, CUSTOMER_FEATURES).name,
            asset_key=CUSTOMER_FEATURES,
        )
        history = metric_history(context.instance, CUSTOMER_FEATURES, "dagster/row_count")
        spc = spc_check_result("row_count_anomaly", "dagster/row_count", counts, history)
        yield for_asset(CUSTOMER_FEATURES, pandera)
        yield for_asset(CUSTOMER_FEATURES, spc)
        if pandera.passed:
            yield dg.Output(table)

    return customer_features_asset


def _customer_segments_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=CUSTOMER_SEGMENTS,
        ins={"features": days_in(CUSTOMER_FEATURES)},
        # Customer ids are resolved by token in transformation/customers, whatever day they signed up.
        deps=[_CUSTOMER_DIMENSION],
        **_daily_step(partitions_def),
        output_required=False,
        check_specs=[
            pandera_check_spec(CustomerSegmentsModel, CUSTOMER_SEGMENTS),
            _conservation_spec(
                CUSTOMER_SEGMENTS,
                "Every feature row becomes a segment row for the shop, or is counted as unresolved "
                "(its token has no customer in transformation/customers).",
            ),
        ],
        kinds={"sqlite", "pandas"},
        tags={"stage": GROUP, "tier": "source", "pii": "false", "reverse_etl": "true"},
        description=f"Customer segments ({', '.join(SEGMENTS)}; rules in de_assets/serving/segments.py) "
        f"derived from the day's features and written back into the shop database (tables "
        f"`{SEGMENTS_TABLE}` and the sync log `{SYNCS_TABLE}`) through the reverse ETL's own "
        "connection, keyed by the shop's customer_id: only changed rows are written, and a day older "
        "than the newest day synced writes nothing.",
    )
    def customer_segments_asset(
        context: dg.AssetExecutionContext,
        features: pd.DataFrame,
        warehouse: WarehouseResource,
        segments_db: SegmentsDatabaseResource,
    ) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
        tokens = features["customer_token"].unique().tolist() if len(features) else []
        dimension = warehouse.lookup(CUSTOMERS, "customer_token", tokens, ["customer_token", "customer_id"])
        ids = dict(zip(dimension["customer_token"], dimension["customer_id"].astype("int64"), strict=True))
        by_day, conservation = {}, {}
        for partition, day in days_of(context):
            day_features = _on_day(features, "feature_day", day) if len(features) else features
            segment = assign_segments(day_features) if len(day_features) else pd.Series(dtype="str")
            customer_id = (
                day_features["customer_token"].map(ids) if len(day_features) else pd.Series(dtype="Int64")
            )
            resolved = customer_id.notna()
            by_day[partition] = (
                day,
                pd.DataFrame(
                    {
                        "computed_for_day": partition,
                        "customer_id": customer_id[resolved].astype("int64"),
                        "segment": segment[resolved],
                    }
                ).reset_index(drop=True),
            )
            unresolved = int((~resolved).sum())
            conservation[partition] = Conservation(
                rows_in=len(day_features),
                rows_out=int(resolved.sum()),
                quarantined=0,
                dropped_by={"unresolved_token": unresolved} if unresolved else {},
            )
        table = pd.concat([frame for _, frame in by_day.values()], ignore_index=True)
        checks = _blocking_checks(CUSTOMER_SEGMENTS, CustomerSegmentsModel, table, conservation)
        yield from checks
        if not all(check.passed for check in checks):
            return
        synced_at = dt.datetime.now(dt.UTC)
        with ExitStack() as stack:
            engine = stack.enter_context(segments_db.writer()) if len(table) else None
            for partition, (day, frame) in sorted(by_day.items()):
                result = sync_segments(engine, frame, day, synced_at) if engine else SyncResult(partition)
                context.add_asset_metadata(
                    {
                        **result.as_metadata(),
                        **conservation[partition].as_metadata(),
                        "by_segment": dg.MetadataValue.json(frame["segment"].value_counts().to_dict()),
                    },
                    asset_key=CUSTOMER_SEGMENTS,
                    partition_key=partition,
                )
        yield dg.MaterializeResult(asset_key=CUSTOMER_SEGMENTS)

    return customer_segments_asset


def build_serving_assets(
    partitions_def: dg.PartitionsDefinition,
    *,
    late_days: int,
    order_lookahead_days: int,
    customer_lookahead_days: int,
) -> list[dg.AssetsDefinition]:
    return [
        _daily_kpis_asset(partitions_def),
        _customer_features_asset(
            partitions_def,
            late_days=late_days,
            order_lookahead_days=order_lookahead_days,
            customer_lookahead_days=customer_lookahead_days,
        ),
        _customer_segments_asset(partitions_def),
    ]

"""The transformation stage as daily-partitioned assets, built from the raw zone alone.

Every asset validates its output in memory before anything is stored (write-audit-publish): the
blocking checks (pandera model, conservation) are evaluated inside the step and the outputs are
yielded only when they pass, so bad data never reaches the hot tier or the next stage. Rejected
records go to a per-stage ``*_rejected`` table in the cold tier, and ``quarantine`` unions them.

Partitions and late data: ``orders``/``customers`` partition D holds the rows created on D and reads
the capture windows D..D+lookahead; ``events`` partition D holds the events that happened on D and
reads the deliveries of D..D+late_days. A partition re-materialised after later raw partitions
landed picks up their late rows (see docs/ARCHITECTURE.md).
"""

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from de_assets.ingestion.assets import RAW_CUSTOMERS, RAW_EVENTS, RAW_EVENTS_REJECTED, RAW_ORDERS
from de_assets.orchestration.partitions import days_of, first_day
from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.quality.checks import (
    column_schema,
    conservation_check_result,
    drift_check_result,
    for_asset,
    metric_history,
    pandera_check_result,
    pandera_check_spec,
    spc_check_result,
    threshold_check_result,
)
from de_assets.quality.conservation import Conservation
from de_assets.quality.models import (
    CustomersModel,
    EventsModel,
    OrdersModel,
    QuarantineModel,
    SessionsModel,
)
from de_assets.security.resources import PiiKeyResource
from de_assets.settings import COLD, HOT
from de_assets.storage.io_manager import (
    BATCH_ROWS,
    COLUMNS,
    PARTITION_COLUMN,
    PartitionBatches,
    concat_days,
    days_in,
)
from de_assets.storage.memory import release_freed_memory
from de_assets.transformation.customers import build_customers
from de_assets.transformation.events import RAW_BATCH_LINES, RAW_COLUMNS_USED, build_events
from de_assets.transformation.orders import build_orders
from de_assets.transformation.quarantine import empty_quarantine
from de_assets.transformation.reference import rates_to_eur
from de_assets.transformation.sessions import EVENT_COLUMNS_USED, sessionise

GROUP = "transformation"
ORDERS = dg.AssetKey([GROUP, "orders"])
CUSTOMERS = dg.AssetKey([GROUP, "customers"])
EVENTS = dg.AssetKey([GROUP, "events"])
SESSIONS = dg.AssetKey([GROUP, "sessions"])
QUARANTINE = dg.AssetKey([GROUP, "quarantine"])
ORDERS_REJECTED = dg.AssetKey([GROUP, "orders_rejected"])
CUSTOMERS_REJECTED = dg.AssetKey([GROUP, "customers_rejected"])
EVENTS_REJECTED = dg.AssetKey([GROUP, "events_rejected"])

# Yesterday's partition lands after midnight UTC; a table not refreshed for two days is stale.
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=30)
)
HOT_TAGS = {"stage": GROUP, "tier": "hot", "pii": "false"}
REJECT_TAGS = {"stage": GROUP, "tier": "cold", "zone": "quarantine", "pii": "false"}
ROW_COUNT = "dagster/row_count"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _quality_specs(
    key: dg.AssetKey, model: type, extra: list[dg.AssetCheckSpec] | None = None
) -> list[dg.AssetCheckSpec]:
    return [
        pandera_check_spec(model, key),
        dg.AssetCheckSpec(
            "conservation",
            asset=key,
            blocking=True,
            description="Rows in = rows out + dropped (duplicates, superseded versions, deletes) + quarantined, "
            "per partition: nothing is lost silently.",
        ),
        dg.AssetCheckSpec(
            "row_count_anomaly",
            asset=key,
            description="Statistical process control: each partition's row count within mean ± 3 sigma of the "
            "earlier partitions' recorded counts (WARN).",
        ),
        *(extra or []),
    ]


@dataclass
class _StepOutputs:
    """What one transformation step produced for every day of its run."""

    frames: list[pd.DataFrame]
    rejects: list[pd.DataFrame]
    conservation: dict[str, Conservation]

    def table(self) -> pd.DataFrame:
        return concat_days(self.frames)

    def quarantine(self) -> pd.DataFrame:
        return pd.concat([r for r in self.rejects if len(r)] or [empty_quarantine()], ignore_index=True)


def _audit(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    model: type,
    table: pd.DataFrame,
    conservation: Mapping[str, Conservation],
    spc_sums: Mapping[str, str],
    partition_column: str,
) -> tuple[list[dg.AssetCheckResult], bool]:
    """The checks of a step's output before it is published; True when the blocking ones passed.

    SPC runs on the row count per partition and on the sum of each column in ``spc_sums`` (metric
    name -> column); ``partition_column`` holds each row's partition day.
    """
    results = [
        pandera_check_result(model, table, check_name=pandera_check_spec(model, key).name, asset_key=key),
        conservation_check_result("conservation", conservation),
    ]
    # Grouped once over day codes: no per-row text, no copy of a partition's rows.
    keys = list(conservation)
    position = {day: i for i, day in enumerate(np.asarray(keys, dtype="datetime64[D]"))}
    days = _days(table[partition_column])
    found, inverse = np.unique(days, return_inverse=True)
    slot = np.array([position.get(day, -1) for day in found], dtype=np.int64)[inverse]
    mine = slot >= 0
    metrics = {ROW_COUNT: np.bincount(slot[mine], minlength=len(keys)).astype(float)}
    for metric, column in spc_sums.items():
        weights = table[column].to_numpy(dtype=float, na_value=0.0)[mine]
        metrics[metric] = np.bincount(slot[mine], weights=weights, minlength=len(keys))
    for metric, by_slot in metrics.items():
        values = {pk: float(by_slot[i]) for i, pk in enumerate(keys)}
        history = metric_history(context.instance, key, metric)
        results.append(
            spc_check_result(
                f"{'row_count' if metric == ROW_COUNT else metric}_anomaly", metric, values, history
            )
        )
        if metric != ROW_COUNT:
            for pk, value in values.items():
                context.add_asset_metadata({metric: value}, asset_key=key, partition_key=pk)
    passed = all(r.passed for r in results[:2])
    return [for_asset(key, r) for r in results], passed


def _days(values: pd.Series) -> np.ndarray:
    """Each value's UTC day as datetime64[D] (timestamps, aware or naive, or ISO day strings)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values.to_numpy().astype("datetime64[D]")
    return np.asarray(values.to_numpy(dtype=object), dtype="datetime64[D]")


def _record(
    context: dg.AssetExecutionContext, key: dg.AssetKey, partition: str, metadata: Mapping[str, object]
) -> None:
    context.add_asset_metadata(dict(metadata), asset_key=key, partition_key=partition)


def _table_out(
    key: dg.AssetKey, model: type, partition_column: str, description: str, pii: str = "false"
) -> dg.AssetOut:
    return dg.AssetOut(
        key=key,
        io_manager_key=HOT,
        is_required=False,
        metadata={PARTITION_COLUMN: partition_column, "dagster/column_schema": column_schema(model)},
        kinds={"duckdb", "pandas"},
        tags={**HOT_TAGS, "pii": pii},
        freshness_policy=FRESHNESS,
        description=description,
    )


def _rejects_out(key: dg.AssetKey, what: str) -> dg.AssetOut:
    return dg.AssetOut(
        key=key,
        io_manager_key=COLD,
        is_required=False,
        metadata={PARTITION_COLUMN: "partition", "dagster/column_schema": column_schema(QuarantineModel)},
        kinds={"parquet"},
        tags=REJECT_TAGS,
        description=f"Quarantine records of the {what} rejected by this stage: reason, source reference and "
        "where the payload is kept in the raw zone (no PII here).",
    )


def _publish(
    checks: list[dg.AssetCheckResult],
    passed: bool,
    outputs: dict[str, pd.DataFrame],
    rejected: tuple[str, dg.AssetKey] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
    """Yield the checks, then the outputs only if every blocking check passed (``rejected``: the
    quarantine output's name and key, whose records are validated too)."""
    if rejected is not None:
        name, key = rejected
        check = pandera_check_result(
            QuarantineModel,
            outputs[name],
            check_name=pandera_check_spec(QuarantineModel, key).name,
            asset_key=key,
        )
        checks, passed = [*checks, check], passed and check.passed
    yield from checks
    if passed:
        for name, frame in outputs.items():
            yield dg.Output(frame, output_name=name)


def _cleaning_step(
    *,
    name: str,
    key: dg.AssetKey,
    rejected_key: dg.AssetKey,
    model: type,
    partition_column: str,
    description: str,
    raw_key: dg.AssetKey,
    raw_days_after: int,
    extra_checks: list[dg.AssetCheckSpec],
    partitions_def: dg.PartitionsDefinition,
    pii: str = "false",
    raw_metadata: Mapping[str, object] | None = None,
) -> Callable[[Callable[..., object]], dg.AssetsDefinition]:
    """The multi-asset shared by the cleaning steps: a hot table and its cold ``*_rejected`` records,
    from a look-ahead window of a raw asset, with the quality checks of both outputs."""
    return dg.multi_asset(
        name=name,
        outs={
            name: _table_out(key, model, partition_column, description, pii),
            f"{name}_rejected": _rejects_out(rejected_key, name),
        },
        ins={"raw": days_in(raw_key, after=raw_days_after, metadata=raw_metadata)},
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=HOT_TIER_POOL,
        check_specs=_quality_specs(
            key, model, [*extra_checks, pandera_check_spec(QuarantineModel, rejected_key)]
        ),
        can_subset=False,
    )


def _shop_table_asset(
    *,
    name: str,
    key: dg.AssetKey,
    rejected_key: dg.AssetKey,
    raw_key: dg.AssetKey,
    model: type,
    lookahead_days: int,
    build: Callable[..., object],
    result_table: str,
    extra_metrics: Mapping[str, str],
    description: str,
    needs_key: bool,
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    @_cleaning_step(
        name=name,
        key=key,
        rejected_key=rejected_key,
        model=model,
        partition_column="created_at",
        description=description,
        raw_key=raw_key,
        raw_days_after=lookahead_days,
        extra_checks=[
            dg.AssetCheckSpec(
                f"{metric}_anomaly", asset=key, description=f"SPC on {metric} per partition (WARN)."
            )
            for metric in extra_metrics
        ],
        partitions_def=partitions_def,
        # The customers table holds keyed tokens: pseudonymous, still personal data.
        pii="pseudonymised" if needs_key else "false",
    )
    def step(
        context: dg.AssetExecutionContext, raw: pd.DataFrame, pii_key: PiiKeyResource
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        processed_at = _now()
        options: dict[str, object] = {
            "lookahead_days": lookahead_days,
            "processed_at": processed_at,
            "first_day": first_day(partitions_def),
        }
        if needs_key:
            options["key"] = pii_key.load(context.log)
        else:
            options["rates"] = rates_to_eur()
        outputs = _StepOutputs([], [], {})
        for partition, day in days_of(context):
            result = build(raw, day, **options)
            outputs.frames.append(getattr(result, result_table))
            outputs.rejects.append(result.quarantine)
            outputs.conservation[partition] = result.conservation
            _record(context, key, partition, result.conservation.as_metadata())
        table = outputs.table()
        checks, passed = _audit(
            context,
            key,
            model,
            table,
            outputs.conservation,
            extra_metrics,
            "created_at",
        )
        yield from _publish(
            checks,
            passed,
            {name: table, f"{name}_rejected": outputs.quarantine()},
            (f"{name}_rejected", rejected_key),
        )

    return step


def _events_asset(
    partitions_def: dg.PartitionsDefinition, late_days: int, contract_threshold: float
) -> dg.AssetsDefinition:
    @_cleaning_step(
        name="events",
        key=EVENTS,
        rejected_key=EVENTS_REJECTED,
        model=EventsModel,
        partition_column="event_time",
        description="Clickstream events, typed and validated against the data contract, deduplicated by "
        "event_id (first delivery wins; a re-sent id with other content is quarantined as a conflict), in "
        f"the partition of the day they happened. Events arriving up to {late_days} days late reach "
        "their day when it is re-materialised; later ones are quarantined as too late.",
        raw_key=RAW_EVENTS,
        raw_days_after=late_days,
        extra_checks=[
            dg.AssetCheckSpec(
                "data_contract",
                asset=EVENTS,
                description=f"Share of a delivery's lines rejected by parsing or the contract: WARN up to "
                f"{contract_threshold:.1%}, ERROR above (that delivery's rows are then quarantined as "
                "contract_broken, blocking only the partitions it feeds).",
            ),
            dg.AssetCheckSpec("schema_drift", asset=EVENTS, description="Fields not in the contract (WARN)."),
        ],
        partitions_def=partitions_def,
        # Only the raw columns the events use, a batch of lines at a time: the step never holds the
        # raw lines' payloads in full (the largest part of a clickstream day).
        raw_metadata={COLUMNS: RAW_COLUMNS_USED, BATCH_ROWS: RAW_BATCH_LINES},
    )
    def events(
        context: dg.AssetExecutionContext, raw: PartitionBatches
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        processed_at, rates = _now(), rates_to_eur()
        outputs = _StepOutputs([], [], {})
        new_fields: dict[str, int] = {}
        delivered: dict[str, tuple[int, int]] = {}  # delivery day -> (rejected, total) lines
        for partition, day in days_of(context):
            window = [(day + dt.timedelta(days=k)).isoformat() for k in range(late_days + 1)]
            result = build_events(
                raw.batches(window),
                day,
                late_limit_days=late_days,
                rates=rates,
                contract_break_share=contract_threshold,
                processed_at=processed_at,
                first_day=first_day(partitions_def),
            )
            # What the build freed (the lines it kept, its working arrays) would otherwise stay with
            # the allocators and add to the checks' and the write's peak.
            release_freed_memory()
            outputs.frames.append(result.events)
            outputs.rejects.append(result.quarantine)
            outputs.conservation[partition] = result.conservation
            for field, count in result.new_fields.items():
                new_fields[field] = new_fields.get(field, 0) + count
            delivered.update(result.lines_by_delivery_day)
            _record(
                context,
                EVENTS,
                partition,
                {**result.conservation.as_metadata(), "late_events": result.late_events},
            )
        table = outputs.table()
        checks, passed = _audit(
            context,
            EVENTS,
            EventsModel,
            table,
            outputs.conservation,
            {},
            "event_time",
        )
        worst_day, (rejected, total) = max(
            delivered.items(), key=lambda item: item[1][0] / item[1][1], default=("none", (0, 0))
        )
        contract = threshold_check_result(
            "data_contract",
            rejected=rejected,
            total=total,
            threshold_share=contract_threshold,
            what=f"lines delivered on the worst day read ({worst_day})",
        )
        drift = drift_check_result("schema_drift", new_fields)
        checks += [for_asset(EVENTS, c) for c in (contract, drift)]
        yield from _publish(
            checks,
            passed,
            {"events": table, "events_rejected": outputs.quarantine()},
            ("events_rejected", EVENTS_REJECTED),
        )

    return events


def _sessions_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=SESSIONS,
        # Sessions read 7 of the events' 17 columns: the others never leave the hot tier.
        ins={"events": days_in(EVENTS, metadata={COLUMNS: EVENT_COLUMNS_USED})},
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=HOT,
        pool=HOT_TIER_POOL,
        check_specs=_quality_specs(SESSIONS, SessionsModel),
        output_required=False,
        metadata={PARTITION_COLUMN: "session_day", "dagster/column_schema": column_schema(SessionsModel)},
        kinds={"duckdb", "pandas"},
        tags=HOT_TAGS,
        freshness_policy=FRESHNESS,
        description="Sessions of the day's events: a visitor (customer, or browser session when anonymous) "
        "starts a new session after 30 minutes of inactivity.",
    )
    def sessions(
        context: dg.AssetExecutionContext, events: pd.DataFrame
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        frames, conservation = [], {}
        event_days = _days(events["event_time"]) if len(events) else np.array([], dtype="datetime64[D]")
        for partition, day in days_of(context):
            on_day = event_days == np.datetime64(day, "D")
            result = sessionise(events if on_day.all() else events[on_day], day)
            frames.append(result.sessions)
            conservation[partition] = result.conservation
            _record(context, SESSIONS, partition, result.conservation.as_metadata())
        table = concat_days(frames)
        checks, passed = _audit(
            context,
            SESSIONS,
            SessionsModel,
            table,
            conservation,
            {},
            "session_day",
        )
        yield from checks
        if passed:
            yield dg.Output(table)

    return sessions


def _quarantine_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    sources = {
        "raw_events_rejected": RAW_EVENTS_REJECTED,
        "orders_rejected": ORDERS_REJECTED,
        "customers_rejected": CUSTOMERS_REJECTED,
        "events_rejected": EVENTS_REJECTED,
    }

    @dg.asset(
        key=QUARANTINE,
        ins={name: days_in(key) for name, key in sources.items()},
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=HOT,
        pool=HOT_TIER_POOL,
        metadata={PARTITION_COLUMN: "partition", "dagster/column_schema": column_schema(QuarantineModel)},
        check_specs=_quality_specs(QUARANTINE, QuarantineModel),
        output_required=False,
        kinds={"duckdb", "pandas"},
        tags={"stage": GROUP, "tier": "hot", "zone": "quarantine", "pii": "false"},
        description="Every record rejected anywhere in the lifecycle, for review: the rejecting asset and "
        "partition, the reason, the source reference (file and line, or table and key) and when it was "
        "detected. The payload itself stays in the restricted raw zone (raw_asset, raw_partition).",
    )
    def quarantine(
        context: dg.AssetExecutionContext,
        raw_events_rejected: pd.DataFrame,
        orders_rejected: pd.DataFrame,
        customers_rejected: pd.DataFrame,
        events_rejected: pd.DataFrame,
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        rejected = (raw_events_rejected, orders_rejected, customers_rejected, events_rejected)
        frames = [frame for frame in rejected if len(frame)]
        union = pd.concat(frames, ignore_index=True) if frames else empty_quarantine()
        conservation = {}
        for partition in context.partition_keys:
            counts = union.loc[union["partition"] == partition, "reason"].value_counts()
            conservation[partition] = Conservation(
                rows_in=sum(int((frame["partition"] == partition).sum()) for frame in frames),
                rows_out=int(counts.sum()),
                quarantined=0,
            )
            _record(
                context,
                QUARANTINE,
                partition,
                {
                    **conservation[partition].as_metadata(),
                    "by_reason": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
                },
            )
        checks, passed = _audit(
            context,
            QUARANTINE,
            QuarantineModel,
            union,
            conservation,
            {},
            "partition",
        )
        yield from _publish(checks, passed, {"result": union})

    return quarantine


def build_transformation_assets(
    partitions_def: dg.PartitionsDefinition,
    *,
    late_days: int,
    order_lookahead_days: int,
    customer_lookahead_days: int,
    contract_threshold: float,
) -> list[dg.AssetsDefinition]:
    orders = _shop_table_asset(
        name="orders",
        key=ORDERS,
        rejected_key=ORDERS_REJECTED,
        raw_key=RAW_ORDERS,
        model=OrdersModel,
        lookahead_days=order_lookahead_days,
        build=build_orders,
        result_table="orders",
        extra_metrics={"revenue_eur": "amount_eur"},
        description="Orders created on the day, each in its latest captured version (repeated captures of a "
        "version count once), deleted orders dropped, amounts normalised to EUR through the reference "
        "rate table; invalid orders are quarantined with a reason.",
        needs_key=False,
        partitions_def=partitions_def,
    )
    customers = _shop_table_asset(
        name="customers",
        key=CUSTOMERS,
        rejected_key=CUSTOMERS_REJECTED,
        raw_key=RAW_CUSTOMERS,
        model=CustomersModel,
        lookahead_days=customer_lookahead_days,
        build=build_customers,
        result_table="customers",
        extra_metrics={},
        description="Customers who signed up on the day, in their current state; e-mail and name exist only "
        "as keyed HMAC-SHA256 tokens (no later stage ever sees them in clear); closed accounts dropped.",
        needs_key=True,
        partitions_def=partitions_def,
    )
    return [
        orders,
        customers,
        _events_asset(partitions_def, late_days, contract_threshold),
        _sessions_asset(partitions_def),
        _quarantine_asset(partitions_def),
    ]

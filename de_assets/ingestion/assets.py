"""The ingestion stage as daily-partitioned assets: raw captures into the cold tier's raw zone.

The raw zone keeps what came in as it came (it holds PII: the assets and their PII columns are tagged
so). Each asset reads its own earlier capture of the partition straight from the cold tier, because
a raw capture is append-only: a re-run adds what it had not seen and never drops what it had.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from de_assets.generation.resources import LandingFolderResource, ShopDatabaseResource
from de_assets.ingestion.clickstream_files import capture_day, delivery_day, parse_rejects
from de_assets.ingestion.shop_capture import merge_capture, tombstones
from de_assets.ingestion.source_reader import (
    SHOP_TABLES,
    existing_keys,
    fetch_window,
    read_only_engine,
    window_fingerprint,
)
from de_assets.orchestration.partitions import days_of
from de_assets.orchestration.pools import SOURCE_DB_POOL
from de_assets.quality.checks import column_schema, pandera_check_result, pandera_check_spec
from de_assets.quality.models import QuarantineModel, RawCustomersModel, RawEventsModel, RawOrdersModel
from de_assets.security.erasure import Suppression
from de_assets.security.identifiers import UnsafeNameError
from de_assets.security.resources import PiiKeyResource
from de_assets.settings import COLD
from de_assets.storage.cold import ColdStore
from de_assets.storage.io_manager import PARTITION_COLUMN, TierIOManager, concat_days
from de_assets.storage.tier import PartitionState, TableRef
from de_assets.transformation.quarantine import empty_quarantine

GROUP = "ingestion"
RAW_ORDERS = dg.AssetKey([GROUP, "raw_orders"])
RAW_CUSTOMERS = dg.AssetKey([GROUP, "raw_customers"])
RAW_EVENTS = dg.AssetKey([GROUP, "raw_events"])
RAW_EVENTS_REJECTED = dg.AssetKey([GROUP, "raw_events_rejected"])
SHOP_DATABASE = dg.AssetKey(["generation", "shop_database"])
CLICKSTREAM_LANDING = dg.AssetKey(["generation", "clickstream_landing"])

# Metadata key on each raw capture partition: the creation days its run added versions or deletes to.
CHANGED_DAYS = "changed_created_days"
RAW_TAGS = {"stage": GROUP, "tier": "cold", "zone": "raw", "pii": "true"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _created_days(capture: pd.DataFrame, captured_at: dt.datetime, deleted: pd.DataFrame) -> list[str]:
    """The creation days of the versions first captured at ``captured_at`` and of the new tombstones."""
    new = capture.loc[capture["captured_at"] == captured_at, "created_at"] if len(capture) else None
    stamps = [f for f in (new, deleted["created_at"] if len(deleted) else None) if f is not None]
    if not stamps:
        return []
    # Day codes first, text for the few distinct days only (a capture holds a million versions).
    days = np.unique(pd.concat(stamps).dropna().to_numpy().astype("datetime64[D]"))
    return [str(day) for day in days]


def _window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


def _cold_store(cold: TierIOManager) -> ColdStore:
    store = cold.build_store()
    if not isinstance(store, ColdStore):
        raise TypeError("the raw zone lives in the cold tier")
    return store


class RawZone:
    """Earlier captures of one raw asset, read straight from the cold tier, plus this run's new ones."""

    def __init__(self, io_manager: TierIOManager, key: dg.AssetKey) -> None:
        self._store = io_manager.build_store()
        self._table = TableRef.for_asset_key(key, "day")
        self._this_run: dict[str, pd.DataFrame] = {}

    def previous(self, partition: str) -> pd.DataFrame | None:
        if partition in self._this_run:
            return self._this_run[partition]
        states, frame = self._store.load(self._table, [partition])
        return frame if states[partition] is PartitionState.PRESENT else None

    def window(self, partitions: list[str]) -> pd.DataFrame | None:
        stored = [p for p in partitions if p not in self._this_run]
        frames = [self._this_run[p] for p in partitions if p in self._this_run]
        if stored:
            _, frame = self._store.load(self._table, stored)
            frames.append(frame)
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else None

    def remember(self, partition: str, frame: pd.DataFrame) -> None:
        self._this_run[partition] = frame


def _shop_capture_asset(
    key: dg.AssetKey,
    table: str,
    model: type,
    lookback_days: int,
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    source_key = SHOP_TABLES[table].key
    spec = pandera_check_spec(model, key)

    @dg.asset(
        key=key,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[SHOP_DATABASE],
        io_manager_key=COLD,
        pool=SOURCE_DB_POOL,
        check_specs=[spec],
        output_required=False,
        metadata={PARTITION_COLUMN: "window_day", "dagster/column_schema": column_schema(model)},
        kinds={"parquet", "sqlalchemy"},
        tags=RAW_TAGS,
        description=f"Append-only capture of the shop's `{table}` table: every row version whose updated_at "
        "falls in the partition's day [day, day+1) UTC, read through a read-only connection, plus "
        "tombstones for rows hard-deleted at the source (key reconciliation over the last "
        f"{lookback_days} capture windows). Holds PII as it came.",
    )
    def capture(
        context: dg.AssetExecutionContext,
        shop: ShopDatabaseResource,
        cold: dg.ResourceParam[TierIOManager],
        pii_key: PiiKeyResource,
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        zone = RawZone(cold, key)
        suppression = Suppression(_cold_store(cold), lambda: pii_key.load(context.log))
        frames = []
        with read_only_engine(shop.url) as engine:
            for partition, day in days_of(context):
                start, end = _window(day)
                fetched = fetch_window(engine, table, start, end)
                fetched_rows = len(fetched)
                # Forgotten customers stay out of the raw zone, however often the source is read.
                forgotten = suppression.rows(fetched["customer_id"]) if "customer_id" in fetched else None
                if forgotten is not None and forgotten.any():
                    fetched = fetched[~forgotten].reset_index(drop=True)
                captured_at = _now()
                merged = merge_capture(
                    zone.previous(partition),
                    fetched,
                    key=source_key,
                    window_day=partition,
                    captured_at=captured_at,
                )
                # Earlier windows hold the keys to reconcile; later ones (when an old day is re-run)
                # may already hold their tombstones, which must not be recorded twice.
                around = [
                    (day + dt.timedelta(days=offset)).isoformat()
                    for offset in range(-lookback_days, lookback_days + 1)
                    if offset
                ]
                captured = pd.concat(
                    [f for f in (zone.window(around), merged.frame) if f is not None and len(f)],
                    ignore_index=True,
                )
                deleted = pd.DataFrame()
                if len(captured):
                    candidates = captured.loc[captured["op"] == "upsert", source_key].unique()
                    present = existing_keys(engine, table, candidates)
                    deleted = tombstones(
                        captured, present, key=source_key, window_day=partition, detected_at=_now()
                    )
                frame = pd.concat([f for f in (merged.frame, deleted) if len(f)] or [merged.frame])
                frame = frame.reset_index(drop=True)
                zone.remember(partition, frame)
                frames.append(frame)
                fingerprint = window_fingerprint(engine, table, start, end)
                context.add_asset_metadata(
                    {
                        # fetched = suppressed + new versions + already captured
                        "fetched_rows": fetched_rows,
                        "suppressed": int(forgotten.sum()) if forgotten is not None else 0,
                        "new_versions": merged.new_versions,
                        "already_captured": merged.already_captured,
                        "deletes_detected": len(deleted),
                        # Which creation-day partitions downstream this run's news can change.
                        CHANGED_DAYS: dg.MetadataValue.json(
                            _created_days(merged.frame, captured_at, deleted)
                        ),
                        "source_window_rows": fingerprint.rows,
                        "source_window_fingerprint": dg.MetadataValue.json(fingerprint.as_json()),
                    },
                    partition_key=partition,
                )
        output = concat_days(frames)
        check = pandera_check_result(model, output, check_name=spec.name, asset_key=key)
        yield check
        if check.passed:
            yield dg.Output(output)

    return capture


def _landed_files(
    context: dg.AssetExecutionContext, landing: LandingFolderResource, day: dt.date
) -> Iterator[tuple[str, bytes]]:
    """The day's deliveries as (name, content), each file read only when the previous one is parsed;
    refused entries (odd names, symbolic links, anything that is not a plain file inside the folder)
    are logged and never read, whatever a sensor decided."""
    folder = landing.folder()
    for entry in folder.list("clickstream_"):
        if delivery_day(entry.name) != day:
            continue
        if entry.refused is not None:
            context.log.warning(f"skipping landed file {entry.name!r}: {entry.refused}")
            continue
        try:
            data = folder.read(entry.name)
        except UnsafeNameError as error:  # swapped for a link (or worse) since it was listed
            context.log.warning(f"skipping landed file: {error}")
            continue
        yield entry.name, data
        del data  # not kept while the next file is read


def _raw_events_assets(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    spec = pandera_check_spec(RawEventsModel, RAW_EVENTS)
    rejects_spec = pandera_check_spec(QuarantineModel, RAW_EVENTS_REJECTED)

    @dg.multi_asset(
        outs={
            "raw_events": dg.AssetOut(
                key=RAW_EVENTS,
                io_manager_key=COLD,
                is_required=False,
                metadata={
                    PARTITION_COLUMN: "delivery_day",
                    "dagster/column_schema": column_schema(RawEventsModel),
                },
                kinds={"parquet", "json"},
                tags=RAW_TAGS,
                description="Every line of the clickstream files delivered for the day (by the day in the file "
                "name), kept as it came (`payload`), with its lineage (file, line, content hash) and "
                "ingestion time (when the file first arrived; a re-run keeps it). Lines that cannot be "
                "parsed are kept too, marked with the reason. Holds PII as it came.",
            ),
            "raw_events_rejected": dg.AssetOut(
                key=RAW_EVENTS_REJECTED,
                io_manager_key=COLD,
                is_required=False,
                metadata={
                    PARTITION_COLUMN: "partition",
                    "dagster/column_schema": column_schema(QuarantineModel),
                },
                kinds={"parquet"},
                tags={"stage": GROUP, "tier": "cold", "zone": "quarantine", "pii": "false"},
                description="Quarantine records of the clickstream lines that could not be parsed (bad encoding, "
                "bad JSON, not an object, blank): file, line and reason; the payload stays in raw_events.",
            ),
        },
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[CLICKSTREAM_LANDING],
        check_specs=[spec, rejects_spec],
        can_subset=False,
    )
    def raw_events(
        context: dg.AssetExecutionContext,
        landing: LandingFolderResource,
        cold: dg.ResourceParam[TierIOManager],
        pii_key: PiiKeyResource,
    ) -> Iterator[dg.AssetCheckResult | dg.Output[pd.DataFrame]]:
        zone = RawZone(cold, RAW_EVENTS)
        suppression = Suppression(_cold_store(cold), lambda: pii_key.load(context.log))
        frames, rejects = [], []
        for partition, day in days_of(context):
            now = _now()
            capture = capture_day(zone.previous(partition), _landed_files(context, landing, day), now=now)
            frame = capture.frame
            forgotten = suppression.lines(frame["payload"]) if len(frame) else np.zeros(0, dtype=bool)
            if forgotten.any():  # lines naming a forgotten customer never enter the raw zone
                frame = frame[~forgotten].reset_index(drop=True)
            frames.append(frame)
            rejected = parse_rejects(frame, partition=partition, detected_at=now)
            rejects.append(rejected)
            context.add_asset_metadata(
                {
                    "files": capture.files,
                    "new_or_rewritten_files": capture.new_or_rewritten_files,
                    "empty_files": capture.empty_files,
                    "lines": len(frame),
                    "lines_rejected": len(rejected),
                    "lines_suppressed": int(forgotten.sum()),
                },
                asset_key=RAW_EVENTS,
                partition_key=partition,
            )
        output = concat_days(frames)
        rejected_all = pd.concat([r for r in rejects if len(r)] or [empty_quarantine()], ignore_index=True)
        checks = [
            pandera_check_result(RawEventsModel, output, check_name=spec.name, asset_key=RAW_EVENTS),
            pandera_check_result(
                QuarantineModel, rejected_all, check_name=rejects_spec.name, asset_key=RAW_EVENTS_REJECTED
            ),
        ]
        yield from checks
        if all(check.passed for check in checks):
            yield dg.Output(output, output_name="raw_events")
            yield dg.Output(rejected_all, output_name="raw_events_rejected")

    return raw_events


def build_ingestion_assets(
    partitions_def: dg.PartitionsDefinition, *, order_lookback_days: int, customer_lookback_days: int
) -> list[dg.AssetsDefinition]:
    return [
        _shop_capture_asset(RAW_ORDERS, "orders", RawOrdersModel, order_lookback_days, partitions_def),
        _shop_capture_asset(
            RAW_CUSTOMERS, "customers", RawCustomersModel, customer_lookback_days, partitions_def
        ),
        _raw_events_assets(partitions_def),
    ]

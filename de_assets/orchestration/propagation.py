"""Propagation: when a raw partition lands, the transformation (and serving) partitions it feeds follow.

Declarative automation cannot do this here: ``AutomationCondition.eager()`` only fires for the latest
time partition, while a capture of day D changes orders created up to ``order_lookahead_days``
earlier and a delivery of day A carries late events of up to ``late_days`` earlier. So a sensor reads
the new materializations of the raw assets from the event log and requests single-run ranges over
exactly the partitions that can have changed:

- ``raw_orders`` / ``raw_customers`` partition D: the creation days its run newly captured versions
  or deletes of, as recorded in the ``changed_created_days`` metadata of that partition;
- ``raw_events`` partition A: the events partitions A-late_days..A (their look-ahead reads A).

Failed raw runs write no materialization, so they trigger nothing. The mapping is the plain function
:func:`plan_runs`; the sensor only reads the event log, calls it and builds the run requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from de_assets.ingestion.assets import CHANGED_DAYS, RAW_CUSTOMERS, RAW_EVENTS, RAW_ORDERS
from de_assets.orchestration.partitions import range_tags
from de_assets.transformation.assets import GROUP as TRANSFORMATION

SENSOR_NAME = "propagation_sensor"
# The serving stage's group (defined by a later stage): a missing group selects nothing, so serving
# assets join the propagated runs as soon as they exist, with no change here.
SERVING = "serving"
PROPAGATED = dg.AssetSelection.groups(TRANSFORMATION, SERVING)

# Raw captures that record which creation days their run changed (metadata CHANGED_DAYS).
CAPTURES = (RAW_ORDERS, RAW_CUSTOMERS)
# Raw deliveries: partition A is read by the downstream partitions A-late_days..A.
DELIVERIES = (RAW_EVENTS,)
# raw_events_rejected always lands in the same run as raw_events (one non-subsettable step), and the
# quarantine partition it feeds (A) is among raw_events' own, so it needs no reading of its own.
WATCHED = (*CAPTURES, *DELIVERIES)

# Materializations read per asset and query; a tick pages on until it has read everything.
PAGE_SIZE = 500


@dataclass(frozen=True)
class Landing:
    """One raw partition that was materialized, and the creation days its run changed (captures)."""

    raw: dg.AssetKey
    partition: str
    # None when the materialization carries no CHANGED_DAYS (a delivery, or a capture recorded before
    # the metadata existed).
    changed_days: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One run to request: the downstream of ``sources`` over the partitions ``first``..``last``."""

    sources: tuple[dg.AssetKey, ...]
    first: str
    last: str


def affected_positions(landing: Landing, position: dict[str, int], late_days: int) -> set[int]:
    """Positions (in the ordered partition keys) of the downstream partitions ``landing`` can change.

    Days outside the partitions (created before the first partition, say) are dropped: there is no
    partition to rebuild for them.
    """
    if landing.raw in DELIVERIES:
        at = position.get(landing.partition)
        return set() if at is None else set(range(max(0, at - late_days), at + 1))
    if landing.raw in CAPTURES:
        # Without the metadata only the landed day itself is known to be affected.
        days = landing.changed_days if landing.changed_days is not None else (landing.partition,)
        return {position[day] for day in days if day in position}
    return set()


def contiguous(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions, as (first, last) pairs in ascending order."""
    spans: list[tuple[int, int]] = []
    for at in sorted(set(positions)):
        if spans and at == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], at)
        else:
            spans.append((at, at))
    return spans


def plan_runs(landings: Iterable[Landing], partition_keys: Sequence[str], late_days: int) -> list[PlannedRun]:
    """The runs that bring every downstream partition the landings can change up to date.

    Each raw asset's affected partitions are grouped into contiguous ranges (one single-run backfill
    each, so a gap is never rebuilt for nothing); raw assets with the very same range share one run.
    """
    position = {key: at for at, key in enumerate(partition_keys)}
    by_raw: dict[dg.AssetKey, set[int]] = {}
    for landing in landings:
        by_raw.setdefault(landing.raw, set()).update(affected_positions(landing, position, late_days))
    by_range: dict[tuple[int, int], set[dg.AssetKey]] = {}
    for raw, positions in by_raw.items():
        for span in contiguous(positions):
            by_range.setdefault(span, set()).add(raw)
    return [
        PlannedRun(
            sources=tuple(sorted(raws, key=lambda key: key.to_user_string())),
            first=partition_keys[first],
            last=partition_keys[last],
        )
        for (first, last), raws in sorted(by_range.items())
    ]


def _changed_days(record: dg.EventLogRecord) -> tuple[str, ...] | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get(CHANGED_DAYS) if materialization is not None else None
    return None if value is None else tuple(str(day) for day in value.value)


def read_landings(instance: dg.DagsterInstance, after: int) -> tuple[list[Landing], int]:
    """The raw materializations stored after storage id ``after``, and the id read up to.

    Each asset is paged separately; when a page is full, records of other assets beyond its last id
    are left for the next page, so the returned position never skips a record.
    """
    landings: list[Landing] = []
    while True:
        pages = {
            key: instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=PAGE_SIZE, ascending=True
            )
            for key in WATCHED
        }
        full = [page.records[-1].storage_id for page in pages.values() if page.has_more]
        seen = [record.storage_id for page in pages.values() for record in page.records]
        if not seen:
            return landings, after
        through = min(full) if full else max(seen)
        for key, page in pages.items():
            landings.extend(
                Landing(key, record.partition_key, _changed_days(record))
                for record in page.records
                if record.storage_id <= through and record.partition_key is not None
            )
        after = through
        if not full:
            return landings, after


def _run_request(run: PlannedRun, assets: Sequence[dg.AssetsDefinition], window: str) -> dg.RunRequest | None:
    selection = dg.AssetSelection.assets(*run.sources).downstream() & PROPAGATED
    keys = sorted(selection.resolve(assets), key=lambda key: key.to_user_string())
    if not keys:
        return None
    sources = "+".join(key.to_user_string() for key in run.sources)
    return dg.RunRequest(
        # The same event-log window always plans the same runs: a re-evaluated tick (cursor not yet
        # stored) is deduplicated by Dagster instead of launching the runs twice.
        run_key=f"{window}:{sources}:{run.first}...{run.last}",
        asset_selection=keys,
        tags=range_tags(run.first, run.last),
    )


def build_propagation_sensor(
    partitions_def: dg.PartitionsDefinition, *, late_days: int, minimum_interval_seconds: int
) -> dg.SensorDefinition:
    """The sensor that rebuilds the transformation (and serving) partitions a raw landing can change.

    Cursor: the event-log storage id up to which raw materializations were read (none: from the
    start, so a fresh instance catches up on everything ingested before the sensor ran).
    """

    @dg.sensor(
        name=SENSOR_NAME,
        # asset_selection, not target: a target builds one job over the whole selection at load time,
        # which fails once serving adds assets partitioned otherwise (or not at all); requests from an
        # asset_selection sensor resolve to the implicit asset job instead.
        asset_selection=PROPAGATED,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When raw_orders, raw_customers or raw_events partitions land, rebuilds the "
        "transformation and serving partitions they can change (historical ones included): the orders/"
        "customers creation days a capture changed, the events days a delivery's late events belong to "
        f"(up to {late_days} days before it). One single-run range per contiguous span of days.",
    )
    def propagation_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor) if context.cursor else 0
        landings, through = read_landings(context.instance, after)
        if through == after:
            return dg.SkipReason(f"no raw materialization after storage id {after}")
        if context.repository_def is None:
            raise dg.DagsterInvariantViolationError(f"{SENSOR_NAME} needs the Definitions to resolve assets")
        assets = list(set(context.repository_def.assets_defs_by_key.values()))
        runs = plan_runs(landings, partitions_def.get_partition_keys(), late_days)
        window = f"{after}-{through}"
        requests = [r for r in (_run_request(run, assets, window) for run in runs) if r is not None]
        if not requests:
            # Captures that changed nothing (a re-run with nothing new at the source) still move on.
            return dg.SensorResult(
                skip_reason=f"{len(landings)} raw materializations change no partition", cursor=str(through)
            )
        return dg.SensorResult(run_requests=requests, cursor=str(through))

    return propagation_sensor

"""The source database sensor: ingestion runs for the shop's days whose rows changed.

Each tick opens the shop database read-only and sends one grouped query per table (``orders``,
``customers``): the :class:`~de_assets.ingestion.source_reader.WindowFingerprint` (rows, latest
``updated_at``, key sum, sum of whole seconds) of every daily ``updated_at`` window among the last
``scan_days`` partitions. The query filters on ``updated_at >= <first scanned day>`` only, so the
watermark index bounds the work to the rows of the scanned days, however large the table grows. A
partition day whose fingerprint differs from the one in the cursor gets one run of its raw asset
(``raw_orders`` for orders, ``raw_customers`` for customers), which captures the window again:

- new rows: the watermark moved into a day the cursor does not know yet;
- rows committed late into an already captured day: its row count or sums change;
- an updated row leaves its old window and enters the new one: both fingerprints change;
- a hard delete lowers the window's row count: the re-run records the tombstone.

Only those two tables are read. Writes anywhere else in the database (reverse ETL's
``customer_segments``, the simulator's bookkeeping) never request anything, so serving cannot feed
ingestion in a loop. Today's window is still filling and is not a partition: it is neither requested
nor remembered, and is requested as a whole on the first tick after midnight. Days before the first
partition are never requested.

Run keys ``<table>:<day>:<sequence>:<digest>`` and the cursor
``{"v": 1, "tables": {"orders": {"YYYY-MM-DD": [sequence, digest]}, "customers": {...}}}`` work as
the landing sensor's (:mod:`de_assets.orchestration.landing_sensor`): the digest is the window
fingerprint's, the sequence counts requests, so a window that returns to an earlier fingerprint (a row
deleted, then inserted again unchanged) still gets a fresh key, and a tick evaluated again after a
crash repeats its keys. The cursor holds the scanned days only. An unreadable cursor is logged and
replaced: every scanned day with rows is requested again, which is safe because captures are
append-only and idempotent. Every request carries the raw partition lock tag, so two runs capturing
the same window never race.

**Late commits older than the scan.** A row committed into a window more than ``scan_days``
partitions old is not seen by this sensor, and that raw partition keeps its earlier capture (its
recorded ``source_window_fingerprint`` metadata no longer matches
:func:`~de_assets.ingestion.source_reader.window_fingerprint` at the source). To recover, backfill the
raw partitions concerned, e.g. ``dagster asset materialize -m de_assets.definitions --select
ingestion/raw_orders --partition-range 2024-03-01...2024-03-04`` or a backfill from the UI: a re-run
adds exactly what the capture lacks and nothing twice. (Hard deletes of such rows are still recorded
by the next capture whose reconciliation lookback reaches the row's window.) Choose ``scan_days`` to
cover how late commits arrive; each tick reads that many days of rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import dagster as dg

from de_assets.generation.resources import ShopDatabaseResource
from de_assets.ingestion.assets import RAW_CUSTOMERS, RAW_ORDERS
from de_assets.ingestion.source_reader import (
    SourceUnavailableError,
    WindowFingerprint,
    daily_fingerprints,
    read_only_engine,
)
from de_assets.orchestration.day_marks import (
    DayMark,
    advance,
    dump_cursor,
    last_partition_day,
    load_cursor,
    marks_from_json,
    marks_to_json,
    run_key,
    short_digest,
)
from de_assets.orchestration.partitions import first_day
from de_assets.orchestration.run_tags import raw_partition_lock

SOURCE_DB_SENSOR = "source_db_sensor"
# The shop tables the sensor watches, with the raw asset that captures each.
TABLE_ASSETS: Mapping[str, dg.AssetKey] = MappingProxyType({"orders": RAW_ORDERS, "customers": RAW_CUSTOMERS})
EMPTY_WINDOW = WindowFingerprint(rows=0, max_updated_at=None, key_sum=0, updated_seconds_sum=0)


def scanned_days(first: dt.date, last: dt.date | None, scan_days: int) -> list[dt.date]:
    """The last ``scan_days`` partition days up to ``last``, oldest first (none before ``first``)."""
    if last is None:
        return []
    days = (last - dt.timedelta(days=back) for back in reversed(range(scan_days)))
    return [day for day in days if day >= first]


def plan_table(
    current: Mapping[dt.date, WindowFingerprint], marks: Mapping[str, DayMark], days: Sequence[dt.date]
) -> tuple[dict[str, DayMark], dict[str, DayMark]]:
    """(requests by ISO day, the table's next marks) for the scanned partition ``days``.

    ``current`` has the fingerprints of the days with rows; a day that had rows and has none now
    (all deleted or moved on) changed too.
    """
    requests: dict[str, DayMark] = {}
    kept: dict[str, DayMark] = {}
    for day in days:
        key, fingerprint, previous = day.isoformat(), current.get(day), marks.get(day.isoformat())
        if fingerprint is None and previous is None:
            continue  # no rows, and none known before: nothing to capture
        mark, new = advance(previous, short_digest((fingerprint or EMPTY_WINDOW).as_json()))
        kept[key] = mark
        if new:
            requests[key] = mark
    return requests, kept


def _cursor_marks(context: dg.SensorEvaluationContext) -> dict[str, dict[str, DayMark]]:
    try:
        tables = load_cursor(context.cursor).get("tables", {})
        if not isinstance(tables, dict):
            raise ValueError("the cursor's tables are not an object")
        # A table the cursor does not know (one watched since) starts empty: its days are requested.
        return {table: marks_from_json(tables.get(table, {})) for table in TABLE_ASSETS}
    except ValueError as error:
        context.log.warning(
            f"{error}; starting over: every scanned day with rows is requested again "
            "(safe: captures are append-only and idempotent)"
        )
        return {}


def build_source_db_sensor(
    partitions_def: dg.PartitionsDefinition, *, minimum_interval_seconds: int, scan_days: int
) -> dg.SensorDefinition:
    """The sensor that requests raw_orders / raw_customers runs for the days whose rows changed."""
    first = first_day(partitions_def)
    if first is None:
        raise ValueError("the source database sensor needs daily (time-window) partitions")
    if scan_days < 1:
        raise ValueError(f"scan_days must be at least 1, got {scan_days}")

    @dg.sensor(
        name=SOURCE_DB_SENSOR,
        target=list(TABLE_ASSETS.values()),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests raw_orders / raw_customers runs for the days (among the last {scan_days}) "
        "whose rows in the shop's orders / customers tables are new, updated, deleted or committed late.",
    )
    def source_db_sensor(context: dg.SensorEvaluationContext, shop: ShopDatabaseResource) -> dg.SensorResult:
        days = scanned_days(first, last_partition_day(partitions_def), scan_days)
        if not days:
            return dg.SensorResult(skip_reason="no complete day is a partition yet")
        marks = _cursor_marks(context)
        try:
            with read_only_engine(shop.url) as engine:
                current = {table: daily_fingerprints(engine, table, days[0]) for table in TABLE_ASSETS}
        except SourceUnavailableError as error:  # not created yet, or down: try again next tick
            return dg.SensorResult(skip_reason=str(error))
        requests = []
        next_marks = {}
        for table, asset in TABLE_ASSETS.items():
            table_requests, next_marks[table] = plan_table(current[table], marks.get(table, {}), days)
            for day, mark in table_requests.items():
                window = current[table].get(dt.date.fromisoformat(day), EMPTY_WINDOW)
                context.log.info(
                    f"requesting {table} {day}: the window now has {window.rows} row(s), latest "
                    f"updated_at {window.max_updated_at}"
                )
                requests.append(
                    dg.RunRequest(
                        partition_key=day,
                        asset_selection=[asset],
                        run_key=run_key(f"{table}:{day}", mark),
                        tags=raw_partition_lock(asset, day),
                    )
                )
        cursor = dump_cursor({"tables": {table: marks_to_json(m) for table, m in next_marks.items()}})
        if not requests:
            return dg.SensorResult(
                skip_reason=f"no changes in {', '.join(TABLE_ASSETS)} since {days[0]}", cursor=cursor
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return source_db_sensor

"""Lifecycle benchmark: what orchestration costs on a day of traffic, on backfills, and per executor.

What it measures
----------------
Set-up, never timed: ``de-assets simulate`` writes the traffic into a temporary ``DE_ASSETS_HOME``
(shop database on SQLite, clickstream JSON-lines files in the landing folder). Every measured run is
a fresh subprocess of this script on its own copy of that home, so all variants start from identical
inputs and each peak RSS is one process's own; imports are not timed.

1. **One day through every stage** (default 1,000,000 orders and 2,000,000 clickstream events; the
   simulator adds 200,000 sign-ups and 1.5% extra lines: duplicates, re-sends, defects), the
   ``ingestion`` and ``transformation`` groups for one daily partition D:

   (a) **Dagster**: ``build_definitions``, an asset job over the two groups, ``dg.execute_job`` on
       the reconstructable job (in-process executor) with D's range tags on the project's persistent
       local instance (``local_instance``), as ``de-assets run`` does and as runs launched by the
       daemon or the UI execute; the real IO managers (cold: Parquet, hot: DuckDB).
   (b) **Plain script**: the same plain functions with the same arguments and per-partition loop as
       the asset bodies (``fetch_window``, ``merge_capture``, ``existing_keys``, ``tombstones``,
       ``capture_day`` (``parse_file``, ``assemble_partition``), ``parse_rejects``, ``build_orders``,
       ``build_customers``, ``build_events``, ``sessionise``, the quarantine union), the same pandera
       validations and conservation / data-contract checks, each output written by the native writer
       under its tier: ``pa.Table.from_pandas`` + ``pq.write_table(compression="zstd")`` in the cold
       tier's layout, DuckDB ``register`` + ``CREATE OR REPLACE TABLE ... AS SELECT`` for the hot tier.
       Frames pass from stage to stage in memory and are dropped when no later stage needs them.
       Left to (a), so counted as orchestration: reading inputs back from the tiers, the IO managers'
       partition handling and catalog, Dagster's run, step and event-log machinery, and what the
       assets compute only for metadata (source window fingerprints, changed creation days, SPC
       metrics and their history).
   (a'') informational: the same job through ``execute_in_process`` (``partition_key=D``), which
       keeps every step's output in memory until the run ends (tests and notebooks use it).

   ``tax`` = time (a) / time (b), target <= 1.3. Rows/s counts input rows: the orders and customers
   fetched for D plus the clickstream lines. **Input in-memory size** = ``memory_usage(deep=True)``
   of the orders and customers frames that ``fetch_window`` returns for D's ``updated_at`` window, plus
   the day's clickstream lines (line endings removed) as one pandas ``str`` column. The memory target
   is peak RSS of (a) <= 3x that. The per-stage table gives each stage's seconds ((a): Dagster's step
   duration, inputs loaded and outputs stored included) and peak RSS (:class:`PeakMemory`); RSS
   includes memory the allocators keep after a stage frees it. (a) and (b) must write the same
   number of rows to every asset, or the benchmark fails.

2. **Backfill**: N days (default 30 days of 20,000 orders and 40,000 events) through the same job as
   one single-run backfill (range tags, as ``de-assets run``) against N one-partition runs in a row on
   one instance, in process. The one-partition runs see less late data (day D is transformed before
   D+1 is ingested), so their outputs differ slightly. Informational: the cold start a launched run
   pays in its own process.

3. **Executor**: the same job for one partition of the backfill's volume, through ``dg.execute_job``
   on a persistent instance, with ``in_process_executor`` and with ``multiprocess_executor`` (spawn).

The machine is shared and noisy: single totals vary by up to 40% between runs, so (a) and (b)
alternate (A B, B A, ...) and the medians are compared; rerun with ``--repeats 3`` or more when the
tax is near its target. ``--quick`` ratios are smoke, not verdicts: fixed costs dominate small days.

Usage::

    python benchmarks/bench_lifecycle.py            # full run, (a) and (b) twice each (~10 min on 2 cores)
    python benchmarks/bench_lifecycle.py --quick    # 50,000 orders / 100,000 events, 5-day backfill
    python benchmarks/bench_lifecycle.py --check    # exit 1 when the tax or memory target is missed
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from de_assets.definitions import build_definitions
from de_assets.ingestion.assets import GROUP as INGESTION
from de_assets.ingestion.assets import RAW_CUSTOMERS, RAW_EVENTS, RAW_EVENTS_REJECTED, RAW_ORDERS
from de_assets.ingestion.clickstream_files import capture_day, delivery_day, parse_rejects
from de_assets.ingestion.shop_capture import merge_capture, tombstones
from de_assets.ingestion.source_reader import SHOP_TABLES, existing_keys, fetch_window, read_only_engine
from de_assets.orchestration.instance import local_instance
from de_assets.orchestration.partitions import range_tags
from de_assets.quality.checks import (
    conservation_check_result,
    drift_check_result,
    pandera_check_name,
    pandera_check_result,
    threshold_check_result,
)
from de_assets.quality.conservation import Conservation
from de_assets.quality.models import (
    CustomersModel,
    EventsModel,
    OrdersModel,
    QuarantineModel,
    RawCustomersModel,
    RawEventsModel,
    RawOrdersModel,
    SessionsModel,
)
from de_assets.security.pseudonymise import PiiKey
from de_assets.settings import HOME, PII_KEY, START_DATE, Settings, load_settings
from de_assets.transformation.assets import (
    CUSTOMERS,
    CUSTOMERS_REJECTED,
    EVENTS,
    EVENTS_REJECTED,
    ORDERS,
    ORDERS_REJECTED,
    QUARANTINE,
    SESSIONS,
)
from de_assets.transformation.assets import GROUP as TRANSFORMATION
from de_assets.transformation.customers import build_customers
from de_assets.transformation.events import build_events
from de_assets.transformation.orders import build_orders
from de_assets.transformation.quarantine import empty_quarantine
from de_assets.transformation.reference import rates_to_eur
from de_assets.transformation.sessions import sessionise

TARGET_TAX = 1.3
TARGET_MEMORY = 3.0  # peak RSS / input in-memory size
COLD_STARTS = 3
JOB = "lifecycle_bench"
# A fixed pseudonymisation key for the benchmark's throwaway data (both variants use it).
BENCH_PII_KEY = hashlib.sha256(b"de_assets lifecycle benchmark").hexdigest()
# Beta parameters the project uses on purpose (see de_assets.cli).
_KNOWN_BETA_PARAMETERS = r"Parameter `(backfill_policy|allow_nonexistent_upstream_partitions)`"
RESULT_PREFIX = "RESULT "
# Step keys of (a) and the stage names (b) times under, in run order.
STAGES = {
    "ingestion__raw_orders": "raw_orders",
    "ingestion__raw_customers": "raw_customers",
    "raw_events": "raw_events",
    "orders": "orders",
    "customers": "customers",
    "events": "events",
    "transformation__sessions": "sessions",
    "transformation__quarantine": "quarantine",
}


@dataclass(frozen=True)
class Volumes:
    orders: int
    events: int
    backfill_days: int
    backfill_orders: int
    backfill_events: int
    repeats: int  # runs of (a) and of (b)


FULL = Volumes(1_000_000, 2_000_000, 30, 20_000, 40_000, repeats=2)
QUICK = Volumes(50_000, 100_000, 5, 5_000, 10_000, repeats=1)


# --- the job and the environment -------------------------------------------------------------------


def lifecycle_job(settings: Settings, executor: dg.ExecutorDefinition | None = None) -> dg.JobDefinition:
    """Ingestion + transformation (no generation) as one asset job of the project's Definitions."""
    definitions = build_definitions(settings)
    job = dg.define_asset_job(
        JOB, selection=dg.AssetSelection.groups(INGESTION, TRANSFORMATION), executor_def=executor
    )
    return dg.Definitions.merge(definitions, dg.Definitions(jobs=[job])).resolve_job_def(JOB)


def in_process_lifecycle_job() -> dg.JobDefinition:
    """For ``dg.reconstructable``: the job with the project's executor, settings from the environment."""
    return lifecycle_job(load_settings(), dg.in_process_executor)


def multiprocess_lifecycle_job() -> dg.JobDefinition:
    """For ``dg.reconstructable``: the job with Dagster's default multiprocess executor (spawn)."""
    return lifecycle_job(load_settings(), dg.multiprocess_executor)


def child_env(home: Path, start: dt.date) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DE_ASSETS_", "DAGSTER_HOME"))}
    return {**env, HOME: str(home), START_DATE: start.isoformat(), PII_KEY: BENCH_PII_KEY}


def _quiet() -> None:
    warnings.filterwarnings("ignore", message=_KNOWN_BETA_PARAMETERS)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6  # kB (KiB) to MB
    return float("nan")


class PeakMemory:
    """Peak RSS per stage, from a thread that reads the kernel's high-water mark and resets it.

    Every ``interval`` seconds the thread reads ``VmHWM`` and resets it (``/proc/self/clear_refs``),
    so each sample is the exact peak since the previous one: a stage's peak is the largest sample
    whose interval overlaps the stage. The reset also lowers what ``ru_maxrss`` reports afterwards,
    so the process's peak is the largest sample. Where the reset is not allowed, samples are the
    high-water mark so far (stage peaks then only rise).
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (from, to, peak MB in between)
        self.baseline_mb = _status_mb("VmRSS")
        self._stop = threading.Event()
        self._last = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now, peak = time.time(), _status_mb("VmHWM")
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self.samples.append((self._last, now, peak))
        self._last = now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> float:
        """Peak RSS (MB) between two ``time.time()`` moments."""
        return max((mb for since, until, mb in self.samples if since < end and until >= start), default=0.0)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _days(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(count)]


QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# --- (a) Dagster -----------------------------------------------------------------------------------


def run_dagster(day: dt.date, launched: bool) -> dict[str, object]:
    """(a): ``execute_job`` (as ``de-assets run`` and launched runs), or (a'') ``execute_in_process``."""
    settings = load_settings()
    with PeakMemory() as memory:
        started = time.perf_counter()
        with local_instance(settings.home) as instance:
            if launched:
                with dg.execute_job(
                    dg.reconstructable(in_process_lifecycle_job),
                    instance=instance,
                    run_config=QUIET_LOGS,
                    tags=range_tags(day.isoformat(), day.isoformat()),
                ) as launched_result:
                    elapsed = time.perf_counter() - started
                    report = _run_report(instance, launched_result)
            else:
                result = lifecycle_job(settings).execute_in_process(
                    instance=instance,
                    partition_key=day.isoformat(),
                    run_config=QUIET_LOGS,
                    raise_on_error=False,
                )
                elapsed = time.perf_counter() - started
                report = _run_report(instance, result)
    windows = report.pop("windows")
    return {
        **report,
        "seconds": elapsed,
        "step_peak_mb": {name: memory.peak(*window) for name, window in windows.items()},
        "peak_mb": memory.peak(),
        "baseline_mb": memory.baseline_mb,
    }


def _run_report(
    instance: dg.DagsterInstance,
    result: dg.ExecuteInProcessResult | dg.JobExecutionResult,
) -> dict[str, object]:
    """Seconds and ``time.time()`` window of each step, rows written per asset, success."""
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    logs = instance.all_logs(result.run_id, of_type=kinds)
    starts = {e.step_key: e.timestamp for e in logs if e.dagster_event_type == dg.DagsterEventType.STEP_START}
    steps, windows = {}, {}
    for entry in logs:
        if entry.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS and entry.dagster_event:
            name = STAGES.get(entry.step_key or "", entry.step_key or "")
            steps[name] = entry.dagster_event.event_specific_data.duration_ms / 1000
            windows[name] = (starts[entry.step_key], entry.timestamp)
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        count = materialization.metadata.get("dagster/row_count")
        if count is not None:
            rows[materialization.asset_key.to_user_string()] = int(count.value)
    return {
        "steps": steps,
        "windows": windows,
        "rows": rows,
        "ok": result.success,
        "failures": [e.message for e in result.get_step_failure_events()],
    }


# --- (b) the plain script --------------------------------------------------------------------------


class Writer:
    """The native writers under each tier, in the tiers' layout."""

    def __init__(self, settings: Settings) -> None:
        self.cold = Path(settings.cold_url.value)
        self.hot = Path(sa.make_url(settings.hot_url.value).database or "")

    def cold_path(self, key: dg.AssetKey, partition: str) -> Path:
        stage, name = key.path
        return self.cold / stage / name / f"day={partition}" / "part-0.parquet"

    def read_cold(self, key: dg.AssetKey, partition: str) -> pd.DataFrame | None:
        path = self.cold_path(key, partition)
        return pq.read_table(path).to_pandas() if path.exists() else None

    def write_cold(self, key: dg.AssetKey, partition: str, frame: pd.DataFrame) -> None:
        path = self.cold_path(key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")

    def write_hot(self, key: dg.AssetKey, frame: pd.DataFrame) -> None:
        stage, name = key.path
        table = pa.Table.from_pandas(frame, preserve_index=False)
        self.hot.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.hot)) as con:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{stage}"')
            con.register("incoming", table)
            con.execute(f'CREATE OR REPLACE TABLE "{stage}"."{name}" AS SELECT * FROM incoming')
            con.unregister("incoming")


def _require(*checks: dg.AssetCheckResult) -> None:
    """(a) publishes only when the blocking checks pass; (b) stops instead."""
    failed = [f"{c.check_name}: {c.description}" for c in checks if not c.passed]
    if failed:
        raise RuntimeError(f"blocking checks failed: {failed}")


def _pandera(model: type, frame: pd.DataFrame) -> dg.AssetCheckResult:
    return pandera_check_result(model, frame, check_name=pandera_check_name(model))


def plain_capture(
    writer: Writer, settings: Settings, day: dt.date, table: str, key: dg.AssetKey, model: type, lookback: int
) -> pd.DataFrame:
    """The body of the raw_orders / raw_customers asset for one partition."""
    source_key = SHOP_TABLES[table].key
    partition = day.isoformat()
    frames = []
    with read_only_engine(settings.source_db_url.value) as engine:
        start = dt.datetime.combine(day, dt.time())
        fetched = fetch_window(engine, table, start, start + dt.timedelta(days=1))
        merged = merge_capture(
            writer.read_cold(key, partition),
            fetched,
            key=source_key,
            window_day=partition,
            captured_at=_now(),
        )
        around = [(day + dt.timedelta(days=o)).isoformat() for o in range(-lookback, lookback + 1) if o]
        earlier = [writer.read_cold(key, p) for p in around]
        captured = pd.concat(
            [f for f in (*earlier, merged.frame) if f is not None and len(f)], ignore_index=True
        )
        deleted = pd.DataFrame()
        if len(captured):
            candidates = captured.loc[captured["op"] == "upsert", source_key].unique()
            present = existing_keys(engine, table, candidates)
            deleted = tombstones(captured, present, key=source_key, window_day=partition, detected_at=_now())
        frame = pd.concat([f for f in (merged.frame, deleted) if len(f)] or [merged.frame])
        frames.append(frame.reset_index(drop=True))
    output = pd.concat(frames, ignore_index=True)
    _require(_pandera(model, output))
    writer.write_cold(key, partition, output)
    return output


def plain_raw_events(writer: Writer, settings: Settings, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    partition = day.isoformat()
    landing = Path(settings.landing_dir.value)
    # Read one at a time as they are parsed, as the asset does.
    files = (
        (p.name, p.read_bytes()) for p in sorted(landing.glob("clickstream_*")) if delivery_day(p.name) == day
    )
    now = _now()
    frames = [capture_day(writer.read_cold(RAW_EVENTS, partition), files, now=now).frame]
    rejects = [parse_rejects(frames[0], partition=partition, detected_at=now)]
    output = pd.concat(frames, ignore_index=True)
    rejected = pd.concat([r for r in rejects if len(r)] or [empty_quarantine()], ignore_index=True)
    _require(_pandera(RawEventsModel, output), _pandera(QuarantineModel, rejected))
    writer.write_cold(RAW_EVENTS, partition, output)
    writer.write_cold(RAW_EVENTS_REJECTED, partition, rejected)
    return output, rejected


def _quarantine_of(rejects: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([r for r in rejects if len(r)] or [empty_quarantine()], ignore_index=True)


def plain_shop_table(
    writer: Writer,
    day: dt.date,
    raw: pd.DataFrame,
    build: Callable[..., object],
    result_table: str,
    model: type,
    keys: tuple[dg.AssetKey, dg.AssetKey],
    options: dict[str, object],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The body of the orders / customers asset for one partition."""
    partition = day.isoformat()
    result = build(raw, day, **options)
    table = pd.concat([getattr(result, result_table)], ignore_index=True)
    quarantine = _quarantine_of([result.quarantine])
    _require(
        _pandera(model, table),
        conservation_check_result("conservation", {partition: result.conservation}),
        _pandera(QuarantineModel, quarantine),
    )
    writer.write_hot(keys[0], table)
    writer.write_cold(keys[1], partition, quarantine)
    return table, quarantine


def plain_events(
    writer: Writer, settings: Settings, day: dt.date, raw: pd.DataFrame, first_day: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    partition = day.isoformat()
    result = build_events(
        raw,
        day,
        late_limit_days=settings.late_days,
        rates=rates_to_eur(),
        contract_break_share=settings.contract_threshold,
        processed_at=_now(),
        first_day=first_day,
    )
    table = pd.concat([result.events], ignore_index=True)
    quarantine = _quarantine_of([result.quarantine])
    worst, (rejected, total) = max(
        result.lines_by_delivery_day.items(), key=lambda i: i[1][0] / i[1][1], default=("none", (0, 0))
    )
    contract = threshold_check_result(
        "data_contract",
        rejected=rejected,
        total=total,
        threshold_share=settings.contract_threshold,
        what=f"lines delivered on the worst day read ({worst})",
    )
    drift_check_result("schema_drift", result.new_fields)  # WARN only, computed as the asset does
    _require(
        _pandera(EventsModel, table),
        conservation_check_result("conservation", {partition: result.conservation}),
        _pandera(QuarantineModel, quarantine),
    )
    if contract.severity == dg.AssetCheckSeverity.ERROR and not contract.passed:
        raise RuntimeError(contract.description)
    writer.write_hot(EVENTS, table)
    writer.write_cold(EVENTS_REJECTED, partition, quarantine)
    return table, quarantine


def plain_sessions(writer: Writer, day: dt.date, events: pd.DataFrame) -> pd.DataFrame:
    partition = day.isoformat()
    day_of_event = events["event_time"].dt.strftime("%Y-%m-%d") if len(events) else pd.Series(dtype="str")
    result = sessionise(events[day_of_event == partition], day)
    table = pd.concat([result.sessions], ignore_index=True)
    _require(
        _pandera(SessionsModel, table),
        conservation_check_result("conservation", {partition: result.conservation}),
    )
    writer.write_hot(SESSIONS, table)
    return table


def plain_quarantine(writer: Writer, day: dt.date, rejected: Sequence[pd.DataFrame]) -> pd.DataFrame:
    partition = day.isoformat()
    frames = [frame for frame in rejected if len(frame)]
    union = pd.concat(frames, ignore_index=True) if frames else empty_quarantine()
    counts = union.loc[union["partition"] == partition, "reason"].value_counts()
    conservation = Conservation(
        rows_in=sum(int((frame["partition"] == partition).sum()) for frame in frames),
        rows_out=int(counts.sum()),
        quarantined=0,
    )
    _require(
        _pandera(QuarantineModel, union), conservation_check_result("conservation", {partition: conservation})
    )
    writer.write_hot(QUARANTINE, union)
    return union


class StageTimer:
    """Seconds and ``time.time()`` window of each stage of (b)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.windows: dict[str, tuple[float, float]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        since, started = time.time(), time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self.windows[name] = (since, time.time())


def run_plain(day: dt.date) -> dict[str, object]:
    settings = load_settings()
    timer = StageTimer()
    with PeakMemory() as memory:
        started = time.perf_counter()
        rows = plain_lifecycle(settings, day, timer)
        elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "steps": timer.seconds,
        "step_peak_mb": {name: memory.peak(*window) for name, window in timer.windows.items()},
        "peak_mb": memory.peak(),
        "baseline_mb": memory.baseline_mb,
        "rows": rows,
        "ok": True,
    }


def plain_lifecycle(settings: Settings, day: dt.date, timer: StageTimer) -> dict[str, int]:
    """Every stage in order; each frame is dropped once no later stage needs it, as (a) does."""
    writer, first_day = Writer(settings), settings.start_date
    rows: dict[dg.AssetKey, int] = {}
    rejected: list[pd.DataFrame] = []
    with timer.stage("raw_orders"):
        lookback = settings.order_lookahead_days
        raw_orders = plain_capture(writer, settings, day, "orders", RAW_ORDERS, RawOrdersModel, lookback)
    with timer.stage("raw_customers"):
        lookback = settings.customer_lookahead_days
        raw_customers = plain_capture(
            writer, settings, day, "customers", RAW_CUSTOMERS, RawCustomersModel, lookback
        )
    with timer.stage("raw_events"):
        raw_events, raw_rejected = plain_raw_events(writer, settings, day)
        rejected.append(raw_rejected)
    with timer.stage("orders"):
        options = {
            "lookahead_days": settings.order_lookahead_days,
            "processed_at": _now(),
            "first_day": first_day,
            "rates": rates_to_eur(),
        }
        keys = (ORDERS, ORDERS_REJECTED)
        orders, orders_rejected = plain_shop_table(
            writer, day, raw_orders, build_orders, "orders", OrdersModel, keys, options
        )
        rejected.append(orders_rejected)
    with timer.stage("customers"):
        options = {
            "lookahead_days": settings.customer_lookahead_days,
            "processed_at": _now(),
            "first_day": first_day,
            "key": PiiKey.from_text(os.environ[PII_KEY]),
        }
        keys = (CUSTOMERS, CUSTOMERS_REJECTED)
        customers, customers_rejected = plain_shop_table(
            writer, day, raw_customers, build_customers, "customers", CustomersModel, keys, options
        )
        rejected.append(customers_rejected)
    rows |= {RAW_ORDERS: len(raw_orders), RAW_CUSTOMERS: len(raw_customers), ORDERS: len(orders)}
    rows |= {CUSTOMERS: len(customers), RAW_EVENTS: len(raw_events)}
    del raw_orders, raw_customers, orders, customers
    with timer.stage("events"):
        events, events_rejected = plain_events(writer, settings, day, raw_events, first_day)
        del raw_events
        rejected.append(events_rejected)
    with timer.stage("sessions"):
        sessions = plain_sessions(writer, day, events)
    rows |= {EVENTS: len(events), SESSIONS: len(sessions)}
    del events, sessions
    with timer.stage("quarantine"):
        quarantine = plain_quarantine(writer, day, rejected)
    keys = (RAW_EVENTS_REJECTED, ORDERS_REJECTED, CUSTOMERS_REJECTED, EVENTS_REJECTED, QUARANTINE)
    rows |= {key: len(frame) for key, frame in zip(keys, [*rejected, quarantine], strict=True)}
    return {key.to_user_string(): count for key, count in rows.items()}


# --- input size, backfills, executors, cold start ------------------------------------------------


def measure_inputs(day: dt.date) -> dict[str, object]:
    """Deep in-memory size of the day's raw inputs, loaded as DataFrames (see the module docstring)."""
    settings = load_settings()
    start = dt.datetime.combine(day, dt.time())
    sizes, rows = {}, {}
    with read_only_engine(settings.source_db_url.value) as engine:
        for table in ("orders", "customers"):
            frame = fetch_window(engine, table, start, start + dt.timedelta(days=1))
            sizes[table], rows[table] = int(frame.memory_usage(deep=True).sum()), len(frame)
            del frame
    lines: list[str] = []
    for path in sorted(Path(settings.landing_dir.value).glob("clickstream_*")):
        if delivery_day(path.name) == day:
            lines += path.read_bytes().decode("utf-8", errors="backslashreplace").splitlines()
    events = pd.DataFrame({"line": pd.Series(lines, dtype="str")})
    sizes["clickstream lines"], rows["clickstream lines"] = (
        int(events.memory_usage(deep=True).sum()),
        len(events),
    )
    return {"bytes": sizes, "rows": rows}


def run_backfill(first: dt.date, days: int, single_run: bool) -> dict[str, object]:
    settings = load_settings()
    started = time.perf_counter()
    job = lifecycle_job(settings)
    keys = [d.isoformat() for d in _days(first, days)]
    runs: list[float] = []
    ok = True
    with local_instance(settings.home) as instance:
        if single_run:
            tags = {
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            }
            result = job.execute_in_process(
                instance=instance, tags=tags, run_config=QUIET_LOGS, raise_on_error=False
            )
            ok = result.success
        else:
            for key in keys:
                run_started = time.perf_counter()
                result = job.execute_in_process(
                    instance=instance, partition_key=key, run_config=QUIET_LOGS, raise_on_error=False
                )
                runs.append(time.perf_counter() - run_started)
                ok = ok and result.success
    return {"seconds": time.perf_counter() - started, "runs": runs, "ok": ok}


def run_executor(day: dt.date, multiprocess: bool) -> dict[str, object]:
    settings = load_settings()
    target = multiprocess_lifecycle_job if multiprocess else in_process_lifecycle_job
    started = time.perf_counter()
    with (
        local_instance(settings.home) as instance,
        dg.execute_job(
            dg.reconstructable(target),
            instance=instance,
            run_config=QUIET_LOGS,
            tags={"dagster/partition": day.isoformat()},
        ) as result,
    ):
        ok = result.success
        steps = sum(1 for e in result.all_events if e.event_type_value == "STEP_SUCCESS")
    return {"seconds": time.perf_counter() - started, "ok": ok, "steps": steps}


def run_cold_start() -> dict[str, object]:
    """Only reached after the imports: the parent times the whole process."""
    lifecycle_job(load_settings())
    return {"ok": True}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, object]]] = {
    "inputs": lambda a: measure_inputs(a.day),
    "dagster": lambda a: run_dagster(a.day, launched=True),
    "dagster-in-process": lambda a: run_dagster(a.day, launched=False),
    "plain": lambda a: run_plain(a.day),
    "backfill-single": lambda a: run_backfill(a.day, a.days, single_run=True),
    "backfill-runs": lambda a: run_backfill(a.day, a.days, single_run=False),
    "executor-in_process": lambda a: run_executor(a.day, multiprocess=False),
    "executor-multiprocess": lambda a: run_executor(a.day, multiprocess=True),
    "cold-start": lambda a: run_cold_start(),
}


# --- the parent: set-up, subprocesses, report ------------------------------------------------------


@dataclass
class Child:
    result: dict[str, object]
    wall: float  # seconds, the whole process
    peak_mb: float  # peak RSS of the process: ru_maxrss via wait4, or the child's own samples if higher


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def simulate(self, name: str, first: dt.date, days: int, orders: int, events: int) -> Path:
        home = self.work / "setup" / name
        command = [
            sys.executable,
            "-m",
            "de_assets.cli",
            "simulate",
            "--start",
            first.isoformat(),
            "--days",
            str(days),
            "--orders-per-day",
            str(orders),
            "--events-per-day",
            str(events),
        ]
        started = time.perf_counter()
        subprocess.run(command, env=child_env(home, first), check=True, stdout=subprocess.DEVNULL)
        print(
            f"  set-up {name}: {days} day(s) from {first} simulated in {time.perf_counter() - started:.0f} s"
        )
        return home

    def child(
        self, kind: str, setup: Path, start: dt.date, day: dt.date, days: int = 1, *, writes: bool = True
    ) -> Child:
        """Run one measurement in a fresh process (on a fresh copy of ``setup`` if it ``writes``)."""
        self._count += 1
        home = self.work / f"run-{self._count}" if writes else setup
        if writes:
            shutil.copytree(setup, home)
        log = self.logs / f"{self._count}-{kind}.log"
        command = [sys.executable, __file__, "--child", kind, "--day", day.isoformat(), "--days", str(days)]
        try:
            with log.open("w") as stderr:
                started = time.perf_counter()
                process = subprocess.Popen(
                    command, env=child_env(home, start), stdout=subprocess.PIPE, stderr=stderr, text=True
                )
                assert process.stdout is not None
                output = process.stdout.read()
                process.stdout.close()
                _, status, usage = os.wait4(process.pid, 0)
                wall = time.perf_counter() - started
                process.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if writes:
                shutil.rmtree(home, ignore_errors=True)
        results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
        if process.returncode or not results:
            tail = "\n".join(log.read_text().splitlines()[-30:])
            raise RuntimeError(f"{kind} failed (exit {process.returncode}); see {log}:\n{tail}")
        result = json.loads(results[-1].removeprefix(RESULT_PREFIX))
        if not result.get("ok", True):
            raise RuntimeError(f"{kind}: the run did not succeed: {result.get('failures')}; see {log}")
        return Child(result, wall, max(usage.ru_maxrss * 1024 / 1e6, result.get("peak_mb", 0.0)))


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def lifecycle(bench: Bench, volumes: Volumes, day: dt.date) -> dict[str, float]:
    print(f"\n1. one day ({day}) through ingestion + transformation")
    setup = bench.simulate("day", day, 1, volumes.orders, volumes.events)
    inputs = bench.child("inputs", setup, day, day, writes=False).result
    sizes, rows = inputs["bytes"], inputs["rows"]
    input_mb = sum(sizes.values()) / 1e6
    rows_in = sum(rows.values())
    described = ", ".join(f"{name} {rows[name]:,} rows / {sizes[name] / 1e6:.0f} MB" for name in sizes)
    print(f"  input: {rows_in:,} rows, {input_mb:.0f} MB in memory ({described})")
    runs: dict[str, list[Child]] = {"dagster": [], "plain": []}
    for repeat in range(volumes.repeats):
        for kind in ("dagster", "plain") if repeat % 2 == 0 else ("plain", "dagster"):
            runs[kind].append(bench.child(kind, setup, day, day))
    a, b = runs["dagster"], runs["plain"]
    if a[-1].result["rows"] != b[-1].result["rows"]:
        raise AssertionError(
            f"(a) and (b) wrote different rows:\n{a[-1].result['rows']}\n{b[-1].result['rows']}"
        )
    print(
        "  rows written, equal in (a) and (b): "
        + ", ".join(f"{k} {v:,}" for k, v in a[-1].result["rows"].items())
    )
    print()
    print_stages(a, b)
    ta, tb = _median([c.result["seconds"] for c in a]), _median([c.result["seconds"] for c in b])
    peak_a, peak_b = max(c.peak_mb for c in a), max(c.peak_mb for c in b)
    tax, memory = ta / tb, peak_a / input_mb
    print()
    for label, runs_, seconds, peak in (("(a) dagster", a, ta, peak_a), ("(b) plain  ", b, tb, peak_b)):
        each = ", ".join(f"{c.result['seconds']:.1f}" for c in runs_)
        print(
            f"  {label}: {seconds:5.1f} s ({each}), {rows_in / seconds:,.0f} input rows/s, peak RSS {peak:,.0f} MB "
            f"= {peak / input_mb:.1f}x input (imports alone: {runs_[0].result['baseline_mb']:.0f} MB)"
        )
    in_process = bench.child("dagster-in-process", setup, day, day)
    ti = in_process.result["seconds"]
    print(
        f"  (a'') in process: {ti:5.1f} s, peak RSS {in_process.peak_mb:,.0f} MB = "
        f"{in_process.peak_mb / input_mb:.1f}x input, tax {ti / tb:.2f} "
        "[informational: execute_in_process keeps every step's output until the run ends; 1 run]"
    )
    repeats = f"median of {volumes.repeats}" if volumes.repeats > 1 else "1 run each"
    print(
        f"  orchestration tax (a)/(b): {tax:.2f} (target <= {TARGET_TAX}) {_state(tax <= TARGET_TAX)} [{repeats}]"
    )
    print(
        f"  memory, peak RSS of (a) / input in-memory size: {memory:.2f} (target <= {TARGET_MEMORY}) "
        f"{_state(memory <= TARGET_MEMORY)}"
    )
    return {"tax": tax, "memory": memory}


def print_stages(a: list[Child], b: list[Child]) -> None:
    """Seconds and peak RSS per stage: (a)'s step (inputs loaded, outputs stored) against (b)'s stage."""
    header = (
        f"  {'stage':<14} {'(a) s':>7} {'(b) s':>7} {'ratio':>6}   {'(a) peak MB':>11} {'(b) peak MB':>11}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name in STAGES.values():
        ta = _median([c.result["steps"][name] for c in a])
        tb = _median([c.result["steps"][name] for c in b])
        pa_, pb = (max(c.result["step_peak_mb"][name] for c in runs) for runs in (a, b))
        print(f"  {name:<14} {ta:7.2f} {tb:7.2f} {ta / tb:6.2f}   {pa_:11,.0f} {pb:11,.0f}")
    total_a = _median([c.result["seconds"] for c in a])
    outside = total_a - sum(_median([c.result["steps"][n] for c in a]) for n in STAGES.values())
    print(
        f"  {'outside steps':<14} {outside:7.2f} {'':>7}          (Definitions, instance, run start and end)"
    )
    total_b = _median([c.result["seconds"] for c in b])
    print(f"  {'total':<14} {total_a:7.2f} {total_b:7.2f} {total_a / total_b:6.2f}")


def backfill(bench: Bench, volumes: Volumes, first: dt.date) -> Path:
    n = volumes.backfill_days
    print(
        f"\n2. backfill: {n} days x {volumes.backfill_orders:,} orders / {volumes.backfill_events:,} events, "
        f"{first}..{first + dt.timedelta(days=n - 1)}"
    )
    setup = bench.simulate("backfill", first, n, volumes.backfill_orders, volumes.backfill_events)
    single = bench.child("backfill-single", setup, first, first, n)
    runs = bench.child("backfill-runs", setup, first, first, n)
    ts, tr = single.result["seconds"], runs.result["seconds"]
    per_run = runs.result["runs"]
    print(f"  one single-run backfill over {n} partitions: {ts:6.1f} s ({ts / n:.2f} s per day)")
    print(
        f"  {n} one-partition runs, in process:       {tr:6.1f} s ({_median(per_run):.2f} s per run, median)"
    )
    print(f"  single run is {tr / ts:.1f}x faster")
    starts = [bench.child("cold-start", setup, first, first, writes=False).wall for _ in range(COLD_STARTS)]
    print(
        f"  informational: a launched run also starts its own process (interpreter, imports, Definitions): "
        f"{_median(starts):.1f} s per run (median of {COLD_STARTS})"
    )
    return setup


def executors(bench: Bench, volumes: Volumes, setup: Path, day: dt.date) -> None:
    print(
        f"\n3. executor: the same job for one partition ({day}, {volumes.backfill_orders:,} orders / "
        f"{volumes.backfill_events:,} events), dg.execute_job on a persistent instance"
    )
    inproc = bench.child("executor-in_process", setup, day, day).result["seconds"]
    multiprocess = bench.child("executor-multiprocess", setup, day, day).result
    multi, steps = multiprocess["seconds"], multiprocess["steps"]
    print(f"  in_process_executor:   {inproc:6.1f} s")
    print(
        f"  multiprocess_executor: {multi:6.1f} s  ({multi / inproc:.1f}x; +{(multi - inproc) / steps:.2f} s per step, "
        f"{steps} steps)"
    )


def _state(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small volumes, 5-day backfill (smoke run)")
    parser.add_argument(
        "--repeats", type=int, help="runs of (a) and of (b), median reported (default 2; --quick: 1)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the tax or memory target is missed")
    parser.add_argument(
        "--orders", type=int, help="orders of the one-day section (default 1,000,000; --quick: 50,000)"
    )
    parser.add_argument(
        "--events", type=int, help="clickstream events of the one-day section (default 2,000,000)"
    )
    parser.add_argument(
        "--day-only",
        action="store_true",
        help="only the one-day section (no backfill, no executor comparison)",
    )
    parser.add_argument(
        "--keep", type=Path, help="work here and keep it (default: temporary folder, removed)"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--day", type=dt.date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if (args.orders is not None and args.orders < 1) or (args.events is not None and args.events < 1):
        parser.error("--orders and --events must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    if args.child:
        print(RESULT_PREFIX + json.dumps(CHILDREN[args.child](args)), flush=True)
        return 0
    volumes = QUICK if args.quick else FULL
    if args.repeats:
        volumes = replace(volumes, repeats=args.repeats)
    volumes = replace(volumes, orders=args.orders or volumes.orders, events=args.events or volumes.events)
    today = dt.datetime.now(dt.UTC).date()
    day = today - dt.timedelta(days=2)  # a complete day, also when the run crosses midnight
    first = day - dt.timedelta(days=volumes.backfill_days - 1)
    print(f"lifecycle benchmark{' (--quick: smoke run, not a verdict)' if args.quick else ''}")
    print(
        f"python {sys.version.split()[0]}, dagster {dg.__version__}, pandas {pd.__version__}, "
        f"pyarrow {pa.__version__}, duckdb {duckdb.__version__}, {os.cpu_count()} cores"
    )
    started = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_lifecycle_"))
    try:
        bench = Bench(work)
        verdicts = lifecycle(bench, volumes, day)
        if not args.day_only:
            setup = backfill(bench, volumes, first)
            executors(bench, volumes, setup, first)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    missed = verdicts["tax"] > TARGET_TAX or verdicts["memory"] > TARGET_MEMORY
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Storage benchmark: the tier IO managers against the native path underneath each of them.

What it measures
----------------
One deterministic frame (default 1,000,000 rows x 10 columns of mixed types: int64, nullable Int64,
int32, float64, pandas ``str`` of low and high cardinality, a category-like ``str``, bool, zone-aware
and naive timestamps) is written and read back, in one process, through:

* **IO managers**, exactly as Dagster calls them but without run overhead: ``handle_output`` (write)
  and ``load_input`` (read) on contexts from ``dg.build_output_context`` / ``dg.build_input_context``,
  for one partition of a ``DailyPartitionsDefinition``. Building the contexts is not timed. The asset
  has no ``partition_column`` metadata, so the frame is stored whole (no split), as for any
  single-partition run; without an asset context in scope, metadata goes to ``add_output_metadata``.

  - ``ColdTierIOManager`` (Parquet files, zstd);
  - ``HotTierIOManager`` on DuckDB (the default hot tier: Arrow bulk path);
  - ``HotTierIOManager`` on SQLite (the generic SQLAlchemy path), as evidence for the DuckDB default.

* **Native baselines** on the same medium, same frame, same kind of file:

  - cold: ``pa.Table.from_pandas`` + ``pq.write_table(compression="zstd")``;
    ``pq.read_table(...).to_pandas()``;
  - DuckDB: ``duckdb.connect(file)``, ``register`` the Arrow table, ``CREATE OR REPLACE TABLE t AS
    SELECT * FROM view``, close; read ``con.sql("SELECT * FROM t").to_arrow_table().to_pandas()``.
    ``from_pandas`` and the connect/close (which checkpoints) are timed, as in the IO manager;
  - SQLite: stdlib ``sqlite3``: ``DROP``/``CREATE TABLE`` + ``executemany`` of tuples (timestamps bound
    as ISO text, as SQLAlchemy stores them on SQLite); read ``cursor.fetchall()`` ->
    ``pd.DataFrame.from_records`` (values as SQLite returns them: no dtype restoration).
  - informational, not a verdict baseline: raw DuckDB doing the hot tier's own operation, replacing
    one partition of a keyed table (``DELETE`` + ``INSERT`` in one transaction; filtered read), to
    separate the cost of partition-replace semantics from the IO manager's own overhead.

* **References**: ``DataFrame.to_sql`` / ``pd.read_sql`` through SQLAlchemy, on SQLite at full size and
  on DuckDB (duckdb_engine) on a sample of ``min(rows, 50,000)`` rows, because it is ~250x slower than
  the bulk path; that row's times are extrapolated linearly to the full row count and labelled so.

Every write replaces existing data: the IO managers replace the partition in the same file/table each
repeat (the realistic re-materialisation path: DuckDB/SQLite DELETE + INSERT, Parquet temp file +
rename), the native baselines ``CREATE OR REPLACE`` / ``DROP`` + ``CREATE`` / overwrite the file. The
``to_sql`` references write a fresh database file each repeat (duckdb_engine cannot replace a table).

Each path is warmed up once with the full frame (first-touch memory costs are large on small VMs;
the ``to_sql`` references, which spend seconds in per-row Python, on 10,000 rows), then timed
``--repeats`` times with ``time.perf_counter``, IO manager and native interleaved in alternating
order so drift hits both; ``gc.collect()`` runs before every timed call. Times are medians; ``total``
is the median of write+read per repeat. After the timed runs, each IO manager's last read is compared
with the original frame (``pd.testing.assert_frame_equal``, untimed): a fast but wrong path fails.

How to read it
--------------
``ratio`` = IO manager / native on the same medium (total, then write and read separately). The
target from the issue is a total ratio <= 1.25 for both tiers as deployed: cold, and hot on DuckDB.
The SQLite hot tier is shown with its ratio for information and is not checked. The last line
compares the hot tier on DuckDB with the hot tier on SQLite.

The fast paths take tenths of a second, and single reads on a small VM vary by up to 2x between
repeats: a median of 3 moves the DuckDB ratio by about +-0.07. When a ratio is near the target, rerun
with ``--repeats 9`` or more. The IO managers have a fixed cost per call (DuckDB: opening the file,
the catalog, the checkpoint, about 50-60 ms), so ratios at ``--quick`` size are not verdicts.

Usage::

    python benchmarks/bench_storage.py              # 1,000,000 rows, median of 3
    python benchmarks/bench_storage.py --quick      # 100,000 rows, 1 repeat (smoke run)
    python benchmarks/bench_storage.py --check      # exit 1 when a checked tier is over target

The exit status is 0 unless ``--check`` is given and a checked ratio is over the target.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from de_assets.storage.cold import ColdTierIOManager
from de_assets.storage.hot import HotTierIOManager
from de_assets.storage.io_manager import TierIOManager

TARGET_RATIO = 1.25
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
# duckdb_engine's to_sql inserts row by row (~87 s per million rows): sample it, extrapolate.
DUCKDB_TO_SQL_SAMPLE = 50_000
# The to_sql references spend seconds in per-row Python, where first-touch memory costs are noise:
# warming them up on a sample keeps the default run near three minutes.
REFERENCE_WARMUP_ROWS = 10_000

ASSET_KEY = dg.AssetKey(["bench", "orders"])
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
PARTITION_KEY = "2024-01-03"
NATIVE_TABLE = "t"

Writer = Callable[[], None]
Reader = Callable[[], pd.DataFrame]


# --- the frame -------------------------------------------------------------------------------------


def make_frame(rows: int) -> pd.DataFrame:
    """The benchmark frame: deterministic (seed 0), one day of orders, realistic mixed dtypes."""
    rng = np.random.default_rng(0)
    day = pd.Timestamp(PARTITION_KEY)
    micros_in_day = 86_400_000_000
    customer = pd.array(rng.integers(1, 200_000, rows), dtype="Int64")
    customer[rng.random(rows) < 0.05] = pd.NA  # guest checkouts
    countries = ["DE", "FR", "NL", "US", "GB", "ES", "IT", "PL", "SE", "AT", "BE", "CH"]
    statuses = ["new", "paid", "shipped", "returned", "cancelled"]
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),
            "customer_id": customer,
            "quantity": rng.integers(1, 10, rows).astype("int32"),
            "amount": rng.gamma(2.0, 30.0, rows).round(2),
            "country": pd.Series(rng.choice(countries, rows), dtype="str"),
            "order_ref": pd.Series([f"ORD-{n:010d}" for n in rng.integers(0, 10**10, rows)], dtype="str"),
            "status": pd.Series(rng.choice(statuses, rows, p=[0.1, 0.3, 0.5, 0.05, 0.05]), dtype="str"),
            "is_gift": rng.random(rows) < 0.1,
            "created_at": (
                day.tz_localize("UTC") + pd.to_timedelta(rng.integers(0, micros_in_day, rows), unit="us")
            ).astype("datetime64[us, UTC]"),
            "local_time": (day + pd.to_timedelta(rng.integers(0, micros_in_day, rows), unit="us")).astype(
                "datetime64[us]"
            ),
        }
    )


# --- what is timed ---------------------------------------------------------------------------------


class Target(Protocol):
    """One way of storing a frame. ``writer``/``reader`` do untimed set-up and return the timed call."""

    label: str

    def writer(self, frame: pd.DataFrame) -> Writer: ...

    def reader(self) -> Reader: ...


@dataclass
class IOManagerTarget:
    """A tier IO manager, called the way Dagster calls it for one daily partition."""

    label: str
    manager: TierIOManager

    def _output_context(self) -> dg.OutputContext:
        return dg.build_output_context(
            asset_key=ASSET_KEY, partition_key=PARTITION_KEY, asset_partitions_def=PARTITIONS
        )

    def writer(self, frame: pd.DataFrame) -> Writer:
        context = self._output_context()
        return lambda: self.manager.handle_output(context, frame)

    def reader(self) -> Reader:
        context = dg.build_input_context(
            asset_key=ASSET_KEY,
            partition_key=PARTITION_KEY,
            asset_partitions_def=PARTITIONS,
            upstream_output=self._output_context(),
        )
        return lambda: self.manager.load_input(context)


@dataclass
class ParquetNative:
    label: str
    path: Path

    def writer(self, frame: pd.DataFrame) -> Writer:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, self.path, compression="zstd")

        return write

    def reader(self) -> Reader:
        return lambda: pq.read_table(self.path).to_pandas()


@dataclass
class DuckDBNative:
    label: str
    path: Path

    def writer(self, frame: pd.DataFrame) -> Writer:
        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            with duckdb.connect(str(self.path)) as con:
                con.register("arrow_view", table)
                con.execute(f"CREATE OR REPLACE TABLE {NATIVE_TABLE} AS SELECT * FROM arrow_view")
                con.unregister("arrow_view")

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            with duckdb.connect(str(self.path)) as con:
                return con.sql(f"SELECT * FROM {NATIVE_TABLE}").to_arrow_table().to_pandas()

        return read


@dataclass
class DuckDBPartitionReplace:
    """Raw DuckDB doing what the hot tier does: replace one partition of a keyed table, in a transaction.

    Not the verdict's baseline (that is the plain bulk load above); shown to separate the cost of
    partition-replace semantics (DELETE + INSERT) from the IO manager's own overhead.
    """

    label: str
    path: Path

    def writer(self, frame: pd.DataFrame) -> Writer:
        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            with duckdb.connect(str(self.path)) as con:
                con.register("arrow_view", table)
                con.execute("BEGIN")
                con.execute(
                    f"CREATE TABLE IF NOT EXISTS {NATIVE_TABLE} AS "
                    "SELECT ''::VARCHAR AS _partition, * FROM arrow_view LIMIT 0"
                )
                con.execute(f"DELETE FROM {NATIVE_TABLE} WHERE _partition = ?", [PARTITION_KEY])
                con.execute(f"INSERT INTO {NATIVE_TABLE} SELECT ?, * FROM arrow_view", [PARTITION_KEY])
                con.execute("COMMIT")
                con.unregister("arrow_view")

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            sql = f"SELECT * EXCLUDE (_partition) FROM {NATIVE_TABLE} WHERE _partition = ?"
            with duckdb.connect(str(self.path)) as con:
                return con.sql(sql, params=[PARTITION_KEY]).to_arrow_table().to_pandas()

        return read


def _sqlite_type(arrow: pa.DataType) -> str:
    if pa.types.is_boolean(arrow):
        return "BOOLEAN"
    if pa.types.is_integer(arrow):
        return "BIGINT"
    if pa.types.is_floating(arrow):
        return "FLOAT"
    if pa.types.is_timestamp(arrow):
        return "DATETIME"
    return "TEXT"


def _sqlite_values(column: pa.ChunkedArray) -> list[object]:
    """A column as values sqlite3 binds natively; timestamps as UTC ISO text (SQLAlchemy's format)."""
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp(column.type.unit)).cast(pa.string()).to_pylist()
    return column.to_pylist()


@dataclass
class SQLiteNative:
    """stdlib sqlite3: executemany of tuples in one transaction; read by fetchall (no dtype restore)."""

    label: str
    path: Path

    def writer(self, frame: pd.DataFrame) -> Writer:
        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            columns = ", ".join(f'"{f.name}" {_sqlite_type(f.type)}' for f in table.schema)
            marks = ", ".join("?" * table.num_columns)
            con = sqlite3.connect(self.path)
            try:
                with con:  # one transaction, committed on success
                    con.execute(f"DROP TABLE IF EXISTS {NATIVE_TABLE}")
                    con.execute(f"CREATE TABLE {NATIVE_TABLE} ({columns})")
                    rows = zip(*(_sqlite_values(c) for c in table.columns), strict=True)
                    con.executemany(f"INSERT INTO {NATIVE_TABLE} VALUES ({marks})", rows)
            finally:
                con.close()

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            con = sqlite3.connect(self.path)
            try:
                cursor = con.execute(f"SELECT * FROM {NATIVE_TABLE}")
                names = [d[0] for d in cursor.description]
                return pd.DataFrame.from_records(cursor.fetchall(), columns=names)
            finally:
                con.close()

        return read


@dataclass
class ToSqlReference:
    """pandas to_sql / read_sql through a SQLAlchemy engine; a fresh database file every write."""

    label: str
    backend: str  # "sqlite" or "duckdb"
    path: Path

    def _engine(self) -> sa.Engine:
        return sa.create_engine(f"{self.backend}:///{self.path}", poolclass=sa.pool.NullPool)

    def writer(self, frame: pd.DataFrame) -> Writer:
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)

        def write() -> None:
            engine = self._engine()
            try:
                frame.to_sql(NATIVE_TABLE, engine, index=False)
            finally:
                engine.dispose()

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            engine = self._engine()
            try:
                return pd.read_sql(f"SELECT * FROM {NATIVE_TABLE}", engine)
            finally:
                engine.dispose()

        return read


# --- timing ----------------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    writes: list[float]
    reads: list[float]
    scale: float = 1.0  # factor to the benchmark's row count (sampled references only)

    @property
    def write(self) -> float:
        return statistics.median(self.writes) * self.scale

    @property
    def read(self) -> float:
        return statistics.median(self.reads) * self.scale

    @property
    def total(self) -> float:
        return statistics.median(w + r for w, r in zip(self.writes, self.reads, strict=True)) * self.scale


def _timed_write(target: Target, frame: pd.DataFrame) -> float:
    write = target.writer(frame)
    gc.collect()
    start = time.perf_counter()
    write()
    return time.perf_counter() - start


def _timed_read(target: Target, rows: int) -> tuple[float, pd.DataFrame]:
    read = target.reader()
    gc.collect()
    start = time.perf_counter()
    result = read()
    elapsed = time.perf_counter() - start
    if len(result) != rows:
        raise AssertionError(f"{target.label}: read {len(result)} rows, wrote {rows}")
    return elapsed, result


def run_group(
    targets: Sequence[Target], frame: pd.DataFrame, repeats: int, warmup: pd.DataFrame | None = None
) -> tuple[list[Timing], list[pd.DataFrame]]:
    """Warm each target up once, then time them interleaved; also return each one's last read.

    The order alternates every repeat (A B, B A, ...) so neither side always runs first.
    """
    for target in targets:
        warm = frame if warmup is None else warmup
        _timed_write(target, warm)
        _timed_read(target, len(warm))
    timings = [Timing(t.label, [], []) for t in targets]
    last: list[pd.DataFrame] = [pd.DataFrame() for _ in targets]
    for repeat in range(repeats):
        order = list(enumerate(targets))
        for i, target in order if repeat % 2 == 0 else reversed(order):
            timings[i].writes.append(_timed_write(target, frame))
            last[i] = pd.DataFrame()  # free the previous read before the next one
            elapsed, last[i] = _timed_read(target, len(frame))
            timings[i].reads.append(elapsed)
    return timings, last


def check_round_trip(label: str, result: pd.DataFrame, frame: pd.DataFrame) -> None:
    """The IO manager gave back exactly what it was given (untimed)."""
    try:
        pd.testing.assert_frame_equal(result, frame)
    except AssertionError as error:
        raise AssertionError(f"{label} did not round-trip the frame: {error}") from error


# --- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """An IO manager against the native path on its medium."""

    name: str
    io_manager: Timing
    native: Timing
    checked: bool  # whether the target applies (tiers as deployed)

    @property
    def ratio(self) -> float:
        return self.io_manager.total / self.native.total


def _ratio_cell(comparison: Comparison | None) -> str:
    if comparison is None:
        return ""
    io, native = comparison.io_manager, comparison.native
    return f"{comparison.ratio:5.2f}  (w {io.write / native.write:.2f} / r {io.read / native.read:.2f})"


def print_table(rows: Sequence[tuple[Timing, Comparison | None]]) -> None:
    width = max(len(timing.label) for timing, _ in rows)
    header = f"{'path':<{width}} {'write s':>8} {'read s':>8} {'total s':>8}   ratio vs native (total; w/r)"
    print(header)
    print("-" * len(header))
    for timing, comparison in rows:
        line = f"{timing.label:<{width}} {timing.write:8.3f} {timing.read:8.3f} {timing.total:8.3f}"
        print(f"{line}   {_ratio_cell(comparison)}".rstrip())


def _factor(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x"


def verdict(comparison: Comparison) -> str:
    state = "OK" if comparison.ratio <= TARGET_RATIO else "OVER TARGET"
    line = f"{comparison.name}: ratio {comparison.ratio:.2f} (target ≤ {TARGET_RATIO}) {state}"
    if not comparison.checked:
        line += " [informational, not checked: generic SQLAlchemy path, not the default hot tier]"
    return line


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help="rows in the frame (default 1,000,000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; median reported")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, 1 repeat (smoke run)")
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temporary folder, removed)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a checked ratio is over target")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = QUICK_ROWS, 1
    if args.rows < 1 or args.repeats < 1:
        parser.error("--rows and --repeats must be at least 1")
    return args


def print_header(frame: pd.DataFrame, repeats: int) -> None:
    megabytes = frame.memory_usage(deep=True).sum() / 1e6
    print(
        f"storage benchmark: {len(frame):,} rows x {frame.shape[1]} columns ({megabytes:.0f} MB in memory), "
        f"one daily partition; median of {repeats} after 1 warm-up"
    )
    print(
        f"python {sys.version.split()[0]}, dagster {dg.__version__}, pandas {pd.__version__}, "
        f"pyarrow {pa.__version__}, duckdb {duckdb.__version__}, sqlite {sqlite3.sqlite_version}, "
        f"sqlalchemy {sa.__version__}"
    )
    print("columns: " + ", ".join(f"{name} {dtype}" for name, dtype in frame.dtypes.items()))
    print()


@dataclass(frozen=True)
class Group:
    """An IO manager, its native baseline, and optional extra native rows, timed interleaved."""

    name: str
    checked: bool
    io_manager: IOManagerTarget
    native: Target
    extras: tuple[Target, ...] = ()


def groups(out: Path) -> list[Group]:
    return [
        Group(
            "cold",
            True,
            IOManagerTarget("cold  ColdTierIOManager (Parquet)", ColdTierIOManager(root=str(out / "cold"))),
            ParquetNative("cold  native pyarrow write_table/read_table", out / "native" / "part-0.parquet"),
        ),
        Group(
            "hot/duckdb",
            True,
            IOManagerTarget(
                "hot   HotTierIOManager duckdb:///", HotTierIOManager(url=f"duckdb:///{out / 'hot.duckdb'}")
            ),
            DuckDBNative("hot   native duckdb register + CREATE OR REPLACE AS", out / "native.duckdb"),
            extras=(
                DuckDBPartitionReplace(
                    "hot   native duckdb DELETE + INSERT one partition", out / "replace.duckdb"
                ),
            ),
        ),
        Group(
            "hot/sqlite",
            False,
            IOManagerTarget(
                "hot   HotTierIOManager sqlite:///", HotTierIOManager(url=f"sqlite:///{out / 'hot.sqlite'}")
            ),
            SQLiteNative("hot   native sqlite3 executemany / fetchall", out / "native.sqlite"),
        ),
    ]


def run(frame: pd.DataFrame, repeats: int, out: Path) -> list[Comparison]:
    """Run every path, print the table and the verdicts; return the IO-manager comparisons."""
    comparisons: list[Comparison] = []
    notes: list[str] = []
    table_rows: list[tuple[Timing, Comparison | None]] = []
    for group in groups(out):
        targets = [group.io_manager, group.native, *group.extras]
        (io_timing, native_timing, *extra_timings), (io_result, *_) = run_group(targets, frame, repeats)
        check_round_trip(group.io_manager.label, io_result, frame)
        comparison = Comparison(group.name, io_timing, native_timing, group.checked)
        comparisons.append(comparison)
        table_rows += [(io_timing, comparison), (native_timing, None)]
        for extra in extra_timings:
            table_rows.append((extra, None))
            notes.append(
                f"{group.name}: ratio vs {extra.label.split(maxsplit=1)[1]} "
                f"{io_timing.total / extra.total:.2f} (w {io_timing.write / extra.write:.2f} / "
                f"r {io_timing.read / extra.read:.2f}) [informational: like-for-like partition replace]"
            )

    table_rows += [(t, None) for t in run_references(frame, repeats, out)]
    print_table(table_rows)
    print()
    for comparison in comparisons:
        print(verdict(comparison))
    for note in notes:
        print(note)
    duck, lite = comparisons[1].io_manager, comparisons[2].io_manager
    print(
        f"embedded hot tier: DuckDB {duck.total:.3f} s vs SQLite {lite.total:.3f} s total "
        f"(write {_factor(lite.write / duck.write)}, read {_factor(lite.read / duck.read)}): "
        f"DuckDB is {_factor(lite.total / duck.total)} faster"
    )
    return comparisons


def run_references(frame: pd.DataFrame, repeats: int, out: Path) -> list[Timing]:
    """pandas to_sql/read_sql: SQLite at full size, DuckDB on a sample scaled to the full row count."""
    (sqlite_timing,), _ = run_group(
        [ToSqlReference("ref   pandas to_sql/read_sql, SQLAlchemy sqlite", "sqlite", out / "to_sql.sqlite")],
        frame,
        repeats,
        warmup=frame.head(REFERENCE_WARMUP_ROWS),
    )
    sample = frame.head(min(len(frame), DUCKDB_TO_SQL_SAMPLE))
    scale = len(frame) / len(sample)
    label = "ref   pandas to_sql/read_sql, duckdb_engine"
    if scale != 1:
        label += f" (x{scale:g}, extrapolated from {len(sample):,} rows)"
    (duck_timing,), _ = run_group(
        [ToSqlReference(label, "duckdb", out / "to_sql.duckdb")],
        sample,
        repeats,
        warmup=sample.head(REFERENCE_WARMUP_ROWS),
    )
    duck_timing.scale = scale
    return [sqlite_timing, duck_timing]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    frame = make_frame(args.rows)
    print_header(frame, args.repeats)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_storage_"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        comparisons = run(frame, args.repeats, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    over = [c for c in comparisons if c.checked and c.ratio > TARGET_RATIO]
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())

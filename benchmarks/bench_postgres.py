"""The hot tier on PostgreSQL against PostgreSQL's own bulk paths, measured in the same run.

A real PostgreSQL cluster is started on 127.0.0.1 (Debian's binaries, as the tests do; fsync off, the
same for every path), and one deterministic frame (the storage benchmark's: 10 columns of every dtype
the hot tier promises) is written and read back through:

| row | what is timed |
|---|---|
| ``HotTierIOManager postgresql+psycopg://`` | ``handle_output`` / ``load_input`` for one daily partition (replace in one transaction, catalog included) |
| raw binary COPY (ADBC) | ``pa.Table.from_pandas`` + ADBC ``adbc_ingest(mode="replace")``; ``SELECT *`` → ``fetch_arrow_table().to_pandas()`` |
| ref ``pandas.to_sql`` / ``read_sql`` | through SQLAlchemy + psycopg 3 (``method="multi"`` is slower here), on a sample, extrapolated |

The verdict is the IO manager's total (write + read) over raw COPY's; the target is ≤ 1.25.

Usage::

    python benchmarks/bench_postgres.py            # 1,000,000 rows, median of 3 (~1 min)
    python benchmarks/bench_postgres.py --quick    # 100,000 rows, 1 repeat (smoke run)
    python benchmarks/bench_postgres.py --check    # exit 1 when the ratio is over the target
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import adbc_driver_postgresql
import adbc_driver_postgresql.dbapi as adbc
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from bench_storage import (
    DEFAULT_ROWS,
    NATIVE_TABLE,
    QUICK_ROWS,
    TARGET_RATIO,
    Comparison,
    IOManagerTarget,
    Reader,
    Writer,
    check_round_trip,
    make_frame,
    print_header,
    print_table,
    run_group,
    verdict,
)

from de_assets.storage.hot import HotTierIOManager
from de_assets.storage.hot_postgres import adbc_uri
from de_assets_tests.servers.postgres import running_postgres

# to_sql sends rows through Python one statement batch at a time (~15 s per million rows): sample it.
TO_SQL_SAMPLE = 100_000


@dataclass
class CopyNative:
    """PostgreSQL's binary COPY through ADBC, from and to Arrow: the fastest path PostgreSQL offers."""

    label: str
    url: str

    def _uri(self) -> str:
        return adbc_uri(sa.make_url(self.url))

    def writer(self, frame: pd.DataFrame) -> Writer:
        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            with adbc.connect(self._uri()) as conn, conn.cursor() as cursor:
                cursor.adbc_ingest(NATIVE_TABLE, table, mode="replace")
                conn.commit()

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            with adbc.connect(self._uri()) as conn, conn.cursor() as cursor:
                cursor.execute(f"SELECT * FROM {NATIVE_TABLE}")
                return cursor.fetch_arrow_table().to_pandas()

        return read


@dataclass
class ToSqlPostgres:
    label: str
    url: str

    def writer(self, frame: pd.DataFrame) -> Writer:
        def write() -> None:
            engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            try:
                frame.to_sql(NATIVE_TABLE, engine, index=False, if_exists="replace")
            finally:
                engine.dispose()

        return write

    def reader(self) -> Reader:
        def read() -> pd.DataFrame:
            engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            try:
                return pd.read_sql(f"SELECT * FROM {NATIVE_TABLE}", engine)
            finally:
                engine.dispose()

        return read


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the frame")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; median reported")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, 1 repeat (smoke run)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the ratio is over the target")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = QUICK_ROWS, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    frame = make_frame(args.rows)
    print_header(frame, args.repeats)
    with running_postgres() as server:
        engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        engine.dispose()
        print(
            f"PostgreSQL {version} on 127.0.0.1 (fsync off), ADBC driver {adbc_driver_postgresql.__version__}"
        )
        io_manager = IOManagerTarget(
            "hot   HotTierIOManager postgresql+psycopg://",
            HotTierIOManager(url=server.create_database("bench_io")),
        )
        native = CopyNative(
            "hot   raw binary COPY (ADBC ingest / fetch_arrow_table)", server.create_database("bench_copy")
        )
        (io_timing, native_timing), (io_result, _) = run_group([io_manager, native], frame, args.repeats)
        check_round_trip(io_manager.label, io_result, frame)
        sample = frame.head(min(len(frame), TO_SQL_SAMPLE))
        scale = len(frame) / len(sample)
        label = "ref   pandas to_sql/read_sql, psycopg 3"
        if scale != 1:
            label += f" (x{scale:g}, extrapolated from {len(sample):,} rows)"
        (to_sql_timing,), _ = run_group(
            [ToSqlPostgres(label, server.create_database("bench_to_sql"))], sample, args.repeats
        )
        to_sql_timing.scale = scale
    comparison = Comparison("hot/postgresql", io_timing, native_timing, True)
    print_table([(io_timing, comparison), (native_timing, None), (to_sql_timing, None)])
    print()
    print(verdict(comparison))
    print(
        f"hot tier vs pandas.to_sql/read_sql: {to_sql_timing.total / io_timing.total:.1f}x faster "
        f"(write {to_sql_timing.write / io_timing.write:.1f}x, read {to_sql_timing.read / io_timing.read:.1f}x)"
    )
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 1 if args.check and comparison.ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())

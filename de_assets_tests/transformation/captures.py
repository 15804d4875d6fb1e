"""Raw captures for the transformation tests: hand-written rows, random histories, simulated shop days.

Everything here is computed without the code under test: the expectations are plain Python over
lists of dicts, following the ownership and version rules as documented.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from hypothesis import strategies as st

from de_assets.generation.defects import DefectRates
from de_assets.generation.ledger import read_ledger
from de_assets.generation.simulator import SimulationParams, simulate_shop_day
from de_assets.ingestion.source_reader import SHOP_TABLES

DAY0 = dt.date(2024, 1, 1)
PROCESSED_AT = dt.datetime(2024, 2, 1, 6, 0, tzinfo=dt.UTC)
CAPTURE_DTYPES = {"op": "str", "captured_at": "datetime64[us, UTC]", "window_day": "str"}
# What ingestion stores (its contract), so the tests feed exactly the frames the pipeline produces.
ORDER_DTYPES = dict(SHOP_TABLES["orders"].columns)
CUSTOMER_DTYPES = dict(SHOP_TABLES["customers"].columns)


def day(offset: int) -> dt.date:
    return DAY0 + dt.timedelta(days=offset)


def at(offset_days: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day(offset_days), dt.time(hour, minute))


def capture_frame(rows: Iterable[dict], dtypes: dict[str, str]) -> pd.DataFrame:
    """Rows as ingestion stores them: source columns, then op, captured_at, window_day."""
    rows = list(rows)
    columns = {**dtypes, **CAPTURE_DTYPES}
    data = {name: [row.get(name) for row in rows] for name in columns}
    frame = pd.DataFrame({name: pd.Series(values, dtype="object") for name, values in data.items()})
    return frame.astype(columns)


def version(
    key: str,
    key_value: int,
    created: dt.datetime | None,
    updated: dt.datetime | None,
    window: int,
    captured: dt.datetime,
    **content: object,
) -> dict:
    """One upsert row; ``captured`` is naive UTC."""
    return {
        key: key_value,
        **content,
        "created_at": created,
        "updated_at": updated,
        "op": "upsert",
        "captured_at": captured.replace(tzinfo=dt.UTC),
        "window_day": day(window).isoformat(),
    }


def tombstone(
    key: str, key_value: int, created: dt.datetime | None, window: int, captured: dt.datetime
) -> dict:
    return {
        key: key_value,
        "created_at": created,
        "op": "delete",
        "captured_at": captured.replace(tzinfo=dt.UTC),
        "window_day": day(window).isoformat(),
    }


# --- random histories and what any correct build makes of them ------------------------------------


@st.composite
def histories(draw: st.DrawFn, key: str, contents: st.SearchStrategy[dict]) -> tuple[int, list[dict]]:
    """(lookahead_days, raw rows): versions, repeated captures, deletes, missing created_at, any order."""
    lookahead = draw(st.integers(0, 2))
    captured = (at(0, 0) + dt.timedelta(minutes=7 * i) for i in itertools.count())
    rows: list[dict] = []
    for key_value in range(1, draw(st.integers(0, 6)) + 1):
        created_day = draw(st.integers(0, 3))
        created = at(created_day, draw(st.integers(0, 23)), draw(st.integers(0, 59)))
        for _ in range(draw(st.integers(1, 4))):
            updated = created + dt.timedelta(minutes=draw(st.sampled_from([-30, 0, 5, 5, 600, 2000, 4000])))
            content = draw(contents)
            placed = None if draw(st.integers(0, 12)) == 0 else created
            for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
                window = created_day + draw(
                    st.integers(-1 if draw(st.integers(0, 15)) == 0 else 0, lookahead + 2)
                )
                rows.append(version(key, key_value, placed, updated, window, next(captured), **content))
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            window = created_day + draw(st.integers(0, lookahead + 2))
            rows.append(tombstone(key, key_value, created, window, next(captured)))
    return lookahead, draw(st.permutations(rows))


def partitions_of(rows: list[dict]) -> list[dt.date]:
    """Every day that can own a row: its creation day or its window (other days own nothing)."""
    days = {dt.date.fromisoformat(r["window_day"]) for r in rows}
    return sorted(days | {r["created_at"].date() for r in rows if r["created_at"] is not None})


@dataclass
class Expected:
    """What the partitions must hold: kept latest versions, reasons of rejected keys, counts per day."""

    kept: dict[int, dict] = field(default_factory=dict)
    versions_seen: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)  # key -> reason of its latest version
    counts: dict[dt.date, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )


def expected_partitions(
    rows: list[dict],
    key: str,
    lookahead: int,
    content: list[str],
    first_failure: Callable[[dict], str | None],
) -> Expected:
    """The documented rules, applied row by row in plain Python."""
    result = Expected()
    by_key: dict[tuple[dt.date, int], list[dict]] = defaultdict(list)
    for row in rows:
        window = dt.date.fromisoformat(row["window_day"])
        created = row["created_at"].date() if row["created_at"] is not None else None
        if created is not None and created <= window <= created + dt.timedelta(days=lookahead):
            by_key[(created, row[key])].append(row)
            result.counts[created]["rows_in"] += 1
        else:
            result.counts[window]["rows_in"] += 1
            result.counts[window]["quarantined"] += 1
    for (created, key_value), owned in by_key.items():
        counts = result.counts[created]
        upserts = [r for r in owned if r["op"] == "upsert"]
        tombstones = [r for r in owned if r["op"] == "delete"]
        first_capture: dict[tuple, dict] = {}
        for row in sorted(upserts, key=lambda r: r["captured_at"]):
            first_capture.setdefault(tuple(row.get(c) for c in [*content, "created_at", "updated_at"]), row)
        distinct = list(first_capture.values())
        counts["duplicate"] += len(upserts) - len(distinct) + len(tombstones) - min(len(tombstones), 1)
        counts["superseded"] += max(len(distinct) - 1, 0)
        if tombstones:
            counts["deleted"] += 1 + (1 if distinct else 0)
            continue
        latest = max(distinct, key=lambda r: (r["updated_at"], r["captured_at"]))
        reason = first_failure(latest)
        if reason is None:
            counts["rows_out"] += 1
            result.kept[key_value] = latest
            result.versions_seen[key_value] = len(upserts)
        else:
            counts["quarantined"] += 1
            result.rejected[key_value] = reason
    return result


def check_partitions(
    build: Callable[[pd.DataFrame, dt.date], Any],
    output: str,
    rows: list[dict],
    dtypes: dict[str, str],
    expected: Expected,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build every partition that can own one of ``rows`` and check each account against ``expected``,
    and the reasons of the rejected latest versions; returns the union of the outputs and of the rejects."""
    raw = capture_frame(rows, dtypes)
    results = {d: build(raw, d) for d in partitions_of(rows) or [DAY0]}
    for partition, result in results.items():
        account, counts = result.conservation, expected.counts.get(partition, {})
        assert account.balanced, partition
        assert (account.rows_in, account.rows_out, account.quarantined) == tuple(
            counts.get(k, 0) for k in ("rows_in", "rows_out", "quarantined")
        ), partition
        assert account.dropped_by == {k: counts.get(k, 0) for k in ("duplicate", "superseded", "deleted")}
    assert sum(r.conservation.rows_in for r in results.values()) == len(rows)
    union = pd.concat([getattr(r, output) for r in results.values()], ignore_index=True)
    rejected = pd.concat([r.quarantine for r in results.values()], ignore_index=True)
    # Rejects of a key's latest version; the others are rows owned by their window (tested one by one).
    validation = rejected[~rejected["detail"].str.contains("captured in window|cannot be placed")]
    assert validation["source_key"].is_unique
    assert (
        dict(zip(validation["source_key"].astype(int), validation["reason"], strict=True))
        == expected.rejected
    )
    return union, rejected


# --- the simulated shop, captured window by window --------------------------------------------------


@dataclass(frozen=True)
class SimulatedShop:
    raw_orders: pd.DataFrame
    raw_customers: pd.DataFrame
    final_orders: pd.DataFrame  # the source tables after the last day
    final_customers: pd.DataFrame
    ledger: pd.DataFrame
    days: list[dt.date]


def _read(url: str, table: str, dtypes: dict[str, str]) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(f"SELECT * FROM {table}"), conn)
    finally:
        engine.dispose()
    for name in ("created_at", "updated_at"):
        frame[name] = pd.to_datetime(frame[name], format="ISO8601")
    if "customer_id" in frame and dtypes["customer_id"] == "Int64":
        frame["customer_id"] = frame["customer_id"].astype("Float64").round()
    return frame.astype(dtypes)[list(dtypes)]


def _window(frame: pd.DataFrame, window: dt.date, captured: dt.datetime) -> pd.DataFrame:
    start = pd.Timestamp(window)
    rows = frame[(frame["updated_at"] >= start) & (frame["updated_at"] < start + pd.Timedelta(days=1))]
    return rows.assign(
        op="upsert", captured_at=pd.Timestamp(captured).tz_localize("UTC"), window_day=window.isoformat()
    )


def _tombstones(
    before: pd.DataFrame, after: pd.DataFrame, key: str, window: dt.date, captured: dt.datetime
) -> pd.DataFrame:
    gone = before[~before[key].isin(after[key])]
    rows = pd.DataFrame({key: gone[key], "created_at": gone["created_at"]})
    return rows.assign(
        op="delete", captured_at=pd.Timestamp(captured).tz_localize("UTC"), window_day=window.isoformat()
    )


DIRTY_SHOP = DefectRates(
    negative_amount=0.03,
    unknown_currency=0.03,
    null_required=0.03,
    test_order_deleted=0.03,
    account_closed=0.6,
)
"""Shop defects frequent enough that a few small days hold each kind (closures come 1-30 days late)."""


SHOP_TABLES = {"orders": ("order_id", ORDER_DTYPES), "customers": ("customer_id", CUSTOMER_DTYPES)}


def simulate_shop(
    tmp_path: Path, days: int = 5, orders_per_day: int = 250, rates: DefectRates = DIRTY_SHOP
) -> SimulatedShop:
    """Simulate ``days`` days, capturing each day's updated_at window after it (and re-capturing the
    window before, which repeats unchanged versions), with tombstones for keys that disappeared."""
    url, ledger_dir = f"sqlite:///{tmp_path / 'shop.sqlite'}", tmp_path / "ledger"
    params = SimulationParams(orders_per_day=orders_per_day, rates=rates)
    captures: dict[str, list[pd.DataFrame]] = {table: [] for table in SHOP_TABLES}
    previous = {table: pd.DataFrame(columns=[key, "created_at"]) for table, (key, _) in SHOP_TABLES.items()}
    day_list = [day(i) for i in range(days)]
    for today in day_list:
        simulate_shop_day(url, str(ledger_dir), today, params)
        captured = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0, 5))
        for table, (key, dtypes) in SHOP_TABLES.items():
            current = _read(url, table, dtypes)
            captures[table].append(_window(current, today, captured))
            if today > DAY0:
                captures[table].append(_window(current, today - dt.timedelta(days=1), captured))
            captures[table].append(_tombstones(previous[table], current, key, today, captured))
            previous[table] = current
    raw = {
        table: pd.concat([f for f in captures[table] if len(f)], ignore_index=True).astype(
            {**dtypes, **CAPTURE_DTYPES}
        )
        for table, (_, dtypes) in SHOP_TABLES.items()
    }
    ledger = read_ledger(ledger_dir)
    return SimulatedShop(
        raw["orders"], raw["customers"], previous["orders"], previous["customers"], ledger, day_list
    )

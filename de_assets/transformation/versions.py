"""Current versions of a captured source table, for one partition of creation days.

The raw zone keeps every captured version of a source row (``op="upsert"``) and a tombstone for each
detected hard delete (``op="delete"``, carrying the key and its ``created_at``), by capture window
(``window_day``, the raw partition). Partition D of a table holds the rows created on D and reads the
windows D .. D+L (L = ``lookahead_days``).

**Ownership.** Every raw row is owned by exactly one partition, so counts add up over a backfill.
A row created on C and captured in window W is owned by:

* C when ``C <= W <= C + L``: it takes part in building C's rows;
* W when ``W > C + L``: quarantined as ``beyond_lookahead`` (a change captured after C was built for
  the last time; a reviewer must see it, because C no longer reflects the source);
* W when ``W < C``: captured before its row was created, quarantined as ``updated_before_created``
  when its ``updated_at`` predates ``created_at``, else as ``from_the_future`` (the design leaves
  this case open; without it such a row would belong to no partition);
* W when its ``created_at`` is missing: it cannot be placed (``missing_required_field``);
* W when C is before the first partition (``before_first_partition``), which does not exist.

Rows of other partitions in the input are ignored. Partition D therefore only needs the windows
D .. D+L, and the rows it owns depend on nothing else. A tombstone must carry its key's
``created_at``: without it the delete cannot be placed either, and is quarantined, not applied.

**Versions.** Among the rows a partition keeps, with a null key or an unknown ``op`` quarantined one
by one:

* exact repeated captures of one version (same key, ``updated_at`` and content) count once; the
  first capture is kept, the others are dropped as ``duplicate``;
* the latest version of a key by ``updated_at`` (ties: the latest captured) is its state; the older
  distinct versions are dropped as ``superseded``;
* a key with a tombstone is gone: its latest version and its distinct tombstones are dropped as
  ``deleted`` (its older versions stay ``superseded``).

So ``rows_in = duplicate + superseded + deleted + quarantined + kept``, where ``kept`` are the latest
versions the table's own rules then validate (:mod:`de_assets.transformation.rules`).

**Missing columns.** A contract column absent from the capture (the source schema changed) is read
as null, and a value that cannot be read as the contract's type as null with a ``wrong_type`` mark:
the rules then quarantine the rows instead of the step failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.ingestion.source_reader import TableContract
from de_assets.transformation.quarantine import Reason, empty_quarantine, quarantine_frame

UPSERT, DELETE = "upsert", "delete"
CAPTURE_COLUMNS = ("op", "captured_at", "window_day")
DUPLICATE, SUPERSEDED, DELETED = "duplicate", "superseded", "deleted"
_UNPLACED = ": the row cannot be placed in a creation day"
_WRONG = "_wrong_type:"  # prefix of the hidden marker column of a value that had the wrong type
_EMPTY_QUARANTINE = empty_quarantine()
_Explain = Callable[[pd.DataFrame], tuple[Reason | pd.Series, str | pd.Series]]  # rows -> reason, detail


@dataclass(frozen=True)
class CapturedTable:
    """A source table as captured in the raw zone, and where its rejects are reported."""

    asset: str  # the transformation asset, e.g. "transformation/orders"
    raw_asset: str  # e.g. "ingestion/raw_orders"
    table: str  # source table name
    key: str  # source key column
    columns: Mapping[str, str]  # the contract: source column → dtype while processing (nullable)

    @classmethod
    def of(cls, contract: TableContract, *, asset: str, raw_asset: str, table: str) -> CapturedTable:
        """The table as ingestion's contract declares it; integers become nullable here, so that a
        drifted capture's missing values can be seen and quarantined."""
        columns = {name: "Int64" if dtype == "int64" else dtype for name, dtype in contract.columns.items()}
        return cls(asset=asset, raw_asset=raw_asset, table=table, key=contract.key, columns=columns)


@dataclass(frozen=True)
class CurrentVersions:
    """What one partition keeps of a captured table, before the table's own validation.

    ``latest`` has one row per live key (sorted by key): the contract columns (absent ones null),
    ``captured_at`` (UTC), ``window_day`` and ``versions_seen`` (its owned upserts, duplicates
    included). ``quarantine`` holds the rows rejected on the way; ``rows_in`` counts the owned rows.
    """

    table: CapturedTable
    day: dt.date
    latest: pd.DataFrame
    absent: frozenset[str]
    quarantine: pd.DataFrame
    rows_in: int
    dropped_by: dict[str, int]

    def wrong_type(self, column: str) -> np.ndarray:
        """Rows of ``latest`` whose ``column`` held a value of another type (read as null)."""
        marker = f"{_WRONG}{column}"
        if marker not in self.latest:
            return np.zeros(len(self.latest), dtype=bool)
        return self.latest[marker].to_numpy(dtype=bool)

    def reject(
        self, rows: pd.DataFrame, reason: Reason | pd.Series, detail: str | pd.Series, at: dt.datetime
    ) -> pd.DataFrame:
        """Quarantine rows (of ``latest`` or the raw capture) in this partition, pointing at their raw rows."""
        return _rejects(self.table, self.day, rows, reason, detail, at)


def current_versions(
    raw: pd.DataFrame,
    day: dt.date,
    *,
    lookahead_days: int,
    table: CapturedTable,
    processed_at: dt.datetime,
    first_day: dt.date | None = None,
) -> CurrentVersions:
    """The rows of ``raw`` that partition ``day`` owns, reduced to the latest version of each live key.

    ``first_day`` is the first partition: a row created before it has no partition of its own, so
    its capture window owns it and quarantines it as ``before_first_partition``.
    """
    if first_day is not None and day < first_day:
        raise ValueError(f"day {day} is before the first partition {first_day}")
    if lookahead_days < 0:
        raise ValueError(f"lookahead_days must not be negative, got {lookahead_days}")
    if processed_at.tzinfo is None:
        raise ValueError("processed_at must be timezone-aware (UTC)")
    if raw.empty and not set(CAPTURE_COLUMNS) <= set(raw.columns):
        raw = _empty_capture(table)  # no raw partition materialised yet
    missing = [c for c in CAPTURE_COLUMNS if c not in raw]
    if missing:
        raise ValueError(f"{table.raw_asset} lacks the capture columns {missing}: not an ingestion frame")

    first, last = np.datetime64(day, "D"), np.datetime64(day + dt.timedelta(days=lookahead_days), "D")
    window = _window_days(raw["window_day"])
    readable = (window >= first) & (window <= last)  # no other window can hold a row this day owns
    frame, absent = _typed(raw[readable] if not readable.all() else raw, table)
    window = window[readable]
    created = frame["created_at"].to_numpy(dtype="datetime64[us]").astype("datetime64[D]")
    placed = ~np.isnat(created)
    here = window == first
    mine = placed & (created == first)
    late = here & placed & (window > created + np.timedelta64(lookahead_days, "D"))
    early = here & placed & (window < created)
    unplaced = here & ~placed
    orphan = np.zeros(len(frame), bool)
    if first_day is not None:
        orphan = here & placed & (created < np.datetime64(first_day, "D")) & ~late
    rows_in = int(mine.sum() + late.sum() + early.sum() + unplaced.sum() + orphan.sum())

    keys, ops = frame[table.key], frame["op"]
    no_key = mine & keys.isna().to_numpy()
    bad_op = mine & ~no_key & ~ops.isin([UPSERT, DELETE]).to_numpy()
    explanations: list[tuple[np.ndarray, _Explain]] = [
        (late, lambda rows: (Reason.BEYOND_LOOKAHEAD, _late_detail(rows, lookahead_days))),
        (early, _early_reasons),
        (
            orphan,
            lambda _: (Reason.BEFORE_FIRST_PARTITION, f"created before the first partition {first_day}"),
        ),
        (unplaced, lambda _: (Reason.MISSING_REQUIRED_FIELD, _null_text("created_at", absent) + _UNPLACED)),
        (no_key, lambda _: (Reason.MISSING_REQUIRED_FIELD, _null_text(table.key, absent))),
        (bad_op, lambda _: (Reason.INVALID_VALUE, "op is neither upsert nor delete")),
    ]
    rejects = [
        _rejects(table, day, frame[mask], *explain(frame[mask]), processed_at)
        for mask, explain in explanations
        if mask.any()
    ]
    latest, dropped_by = _latest_versions(frame, mine & ~no_key & ~bad_op, table)
    quarantine = pd.concat(rejects, ignore_index=True) if rejects else _EMPTY_QUARANTINE.copy()
    return CurrentVersions(table, day, latest, frozenset(absent), quarantine, rows_in, dropped_by)


def _latest_versions(
    frame: pd.DataFrame, kept: np.ndarray, table: CapturedTable
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The latest version of each live key among the ``kept`` rows, and why the others were dropped.

    Works on row positions and takes the full rows of the latest versions only: at a million rows,
    reordering whole frames would cost more than everything else together.
    """
    groups = _content_groups(frame, [c for c in frame.columns if c not in CAPTURE_COLUMNS])
    keys = frame[table.key].to_numpy(dtype="int64", na_value=0)
    upserts = np.flatnonzero(kept & (frame["op"] == UPSERT).to_numpy(dtype=bool))
    updated, captured = _sortable(frame["updated_at"]), _sortable(frame["captured_at"])
    order = upserts[np.lexsort((captured[upserts], updated[upserts], keys[upserts]))]
    repeated = pd.Series(groups[order]).duplicated().to_numpy()  # the first capture of a version stays
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(order) else order
    seen = np.diff(np.r_[starts, len(order)]).astype("int64")
    distinct = order[~repeated]
    distinct_keys = keys[distinct]
    newest = distinct[np.r_[distinct_keys[1:] != distinct_keys[:-1], True]] if len(distinct) else distinct

    tombstones = np.flatnonzero(kept & (frame["op"] == DELETE).to_numpy(dtype=bool))
    repeated_tombstones = pd.Series(groups[tombstones]).duplicated().to_numpy()
    gone = np.isin(keys[newest], keys[tombstones])
    dropped_by = {
        DUPLICATE: int(repeated.sum() + repeated_tombstones.sum()),
        SUPERSEDED: len(distinct) - len(newest),
        DELETED: int((~repeated_tombstones).sum() + gone.sum()),
    }
    latest = frame.take(newest[~gone]).assign(versions_seen=seen[~gone]).reset_index(drop=True)
    return latest, dropped_by


def _content_groups(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A number per row, equal exactly when the rows' ``columns`` are equal (nulls equal to nulls).

    Rows are hashed (fast) and each row is then compared with the first row of its hash, so a hash
    collision can never merge two different versions; should one occur, exact grouping takes over.
    """
    if frame.empty:
        return np.empty(0, np.int64)
    hashes = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    groups, _ = pd.factorize(hashes)
    first = np.full(groups.max() + 1, -1, np.int64)
    first[groups[::-1]] = np.arange(len(groups) - 1, -1, -1)  # earliest row of each hash
    later = np.flatnonzero(first[groups] != np.arange(len(groups)))
    if len(later):
        a = frame[columns].take(later).reset_index(drop=True)
        b = frame[columns].take(first[groups[later]]).reset_index(drop=True)
        same = ((a == b) | (a.isna() & b.isna())).to_numpy(dtype=bool, na_value=False).all()
        if not same:
            return frame.groupby(columns, sort=False, dropna=False).ngroup().to_numpy()
    return groups.astype(np.int64)


def _sortable(times: pd.Series) -> np.ndarray:
    """Timestamps as int64 for sorting; NaT is the smallest value, so an undated version sorts first."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert(None)
    return times.to_numpy(dtype="datetime64[us]").view("int64")


def _window_days(windows: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(windows)
    if (codes < 0).any():
        raise ValueError("window_day must not be null: every captured row belongs to a raw partition")
    return np.asarray(uniques, dtype="datetime64[D]")[codes]


def _typed(raw: pd.DataFrame, table: CapturedTable) -> tuple[pd.DataFrame, list[str]]:
    """Contract columns with their processing dtypes (absent ones all null) and the capture columns."""
    raw = raw.reset_index(drop=True)
    data: dict[str, pd.Series] = {}
    absent = [name for name in table.columns if name not in raw]
    for name, dtype in table.columns.items():
        if name in absent:
            data[name] = pd.Series(pd.array([None] * len(raw), dtype=dtype), index=raw.index)
            continue
        data[name], wrong = _as_dtype(raw[name], dtype)
        if wrong.any():
            data[f"{_WRONG}{name}"] = pd.Series(wrong, index=raw.index)
    data["op"] = raw["op"]
    data["captured_at"] = utc(raw["captured_at"])
    data["window_day"] = raw["window_day"].astype("str")
    return pd.DataFrame(data, index=raw.index), absent


def _as_dtype(values: pd.Series, dtype: str) -> tuple[pd.Series, np.ndarray]:
    """``values`` as ``dtype``; where a present value cannot be read as it, null and marked True."""
    target = pd.api.types.pandas_dtype(dtype)
    if values.dtype == target:
        return values, np.zeros(len(values), dtype=bool)
    if target.kind == "M":
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            converted = values.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            converted = pd.to_datetime(values, errors="coerce", format="ISO8601")
    elif pd.api.types.is_numeric_dtype(target):
        converted = pd.to_numeric(values, errors="coerce")
        if pd.api.types.is_integer_dtype(target):
            converted = converted.where(converted.isna() | (converted % 1 == 0))
    else:
        converted = values.astype(target)
    wrong = (values.notna() & converted.isna()).to_numpy(dtype=bool)
    return converted.astype(target), wrong


def utc(times: pd.Series) -> pd.Series:
    """Timestamps as ``datetime64[us, UTC]``: naive ones are UTC (the source stores naive UTC)."""
    if not pd.api.types.is_datetime64_any_dtype(times):
        times = pd.to_datetime(times, errors="coerce", format="ISO8601", utc=True)
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return times.dt.tz_localize("UTC").astype("datetime64[us, UTC]")


def _rejects(
    table: CapturedTable,
    day: dt.date,
    rows: pd.DataFrame,
    reason: Reason | pd.Series,
    detail: str | pd.Series,
    at: dt.datetime,
) -> pd.DataFrame:
    """Quarantine rows of partition ``day``; a detail starts with its reason when the reason is one for all."""
    if isinstance(reason, Reason):
        detail = f"{reason.value}: " + detail
    return quarantine_frame(
        asset=table.asset,
        partition=day.isoformat(),
        reason=reason,
        detail=detail,
        raw_asset=table.raw_asset,
        raw_partition=rows["window_day"],
        detected_at=at,
        source_table=table.table,
        source_key=rows[table.key],
        length=len(rows),
    )


def _null_text(column: str, absent: list[str] | frozenset[str]) -> str:
    return f"{column} absent from the capture" if column in absent else f"{column} is null"


def _created_day(rows: pd.DataFrame) -> pd.Series:
    return rows["created_at"].dt.strftime("%Y-%m-%d").astype("str")


def _late_detail(rows: pd.DataFrame, lookahead_days: int) -> pd.Series:
    return (
        "captured in window " + rows["window_day"] + f", more than {lookahead_days} days after its "
        "creation day " + _created_day(rows) + ": that partition no longer reads it"
    )


def _early_reasons(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """A version captured before its creation day: its clock is wrong, or its updated_at predates it."""
    before = (rows["updated_at"] < rows["created_at"]).to_numpy(dtype=bool, na_value=False)
    reason = pd.Series(
        np.where(before, Reason.UPDATED_BEFORE_CREATED.value, Reason.FROM_THE_FUTURE.value),
        index=rows.index,
        dtype="str",
    )
    detail = reason + ": captured in window " + rows["window_day"] + ", before its creation day "
    return reason, detail + _created_day(rows)


def _empty_capture(table: CapturedTable) -> pd.DataFrame:
    columns = {name: pd.Series(dtype=dtype) for name, dtype in table.columns.items()}
    capture = {"op": "str", "captured_at": "datetime64[us, UTC]", "window_day": "str"}
    return pd.DataFrame({**columns, **{name: pd.Series(dtype=dtype) for name, dtype in capture.items()}})

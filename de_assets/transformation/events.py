"""Clean clickstream events of one event day, from the raw lines of the deliveries that can hold them.

Partitions are event days; raw lines come by delivery day. An event of day E may be delivered on any
day A with ``E <= A <= E + late_limit_days``, so the events of day D are built from the deliveries of
days D .. D+L. Every raw line is *owned* by exactly one events partition, so that counts add up over
a backfill and nothing is counted twice:

* a line ingestion could not parse is owned by none (``ingestion/raw_events`` quarantined it);
* a line that breaks the contract is owned by its delivery day, where it is quarantined;
* a valid line is owned by its event day E when ``A - L <= E <= A``; otherwise by its delivery day A,
  quarantined as ``too_late`` (E < A - L) or ``from_the_future`` (E > A), or as
  ``before_first_partition`` when E is in time but before the first partition.

A delivery day whose rejected share (parse errors and contract violations among its lines) passes
``contract_break_share`` is suspect as a whole: its otherwise valid lines are quarantined as
``contract_broken`` where they are owned, so one broken delivery holds back only the partitions it
feeds instead of failing a backfill.

Among the valid lines a partition keeps, the first delivery of an event id wins (delivery order is
``ingested_at, source_file, line_number``): a later copy with the same content is dropped as a
duplicate, one with other content quarantined as ``conflicting_resend``. A re-send that moves an event
to another day lands in that day's partition, which cannot see the first delivery: event ids are
unique within a partition, and across partitions only while re-sends keep their day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from de_assets.ingestion.clickstream_files import RAW_EVENTS_ASSET, empty_raw_events
from de_assets.quality.conservation import Conservation
from de_assets.storage.memory import release_freed_memory
from de_assets.transformation.event_contract import CONTRACT_VALUE_COLUMNS, check_contract
from de_assets.transformation.quarantine import Reason, empty_quarantine, quarantine_frame

EVENTS_ASSET = "transformation/events"

EVENT_COLUMNS: dict[str, str] = {
    **{name: dtype for name, dtype in CONTRACT_VALUE_COLUMNS.items() if name != "extra_fields"},
    "amount_eur": "float64",  # amount * rates[currency]; null without an amount
    "extra_fields": "str",  # unknown fields as a JSON object, null when there are none
    "source_file": "str",
    "line_number": "int64",
    "delivery_day": "str",
    "ingested_at": "datetime64[us, UTC]",
    "processed_at": "datetime64[us, UTC]",
    "lateness_days": "int64",  # delivery day minus event day
}

# The parsed content two deliveries of one event id are compared on.
_CONTENT = [name for name in CONTRACT_VALUE_COLUMNS if name != "event_id"]


@dataclass(frozen=True)
class EventsResult:
    """One events partition and its accounts.

    ``conservation.rows_in`` counts the raw lines the partition owns; ``new_fields`` counts, per
    unknown field name, the owned lines that carry it; ``rejected_share_by_delivery_day`` covers the
    delivery days read; ``late_events`` counts kept events delivered after their day.
    """

    events: pd.DataFrame
    quarantine: pd.DataFrame
    conservation: Conservation
    new_fields: dict[str, int]
    rejected_share_by_delivery_day: dict[str, float]
    late_events: int
    lines_by_delivery_day: dict[str, tuple[int, int]]  # (rejected, total) lines per delivery day read


# The raw_events columns the events are built from (a reader may load only these).
RAW_COLUMNS_USED = ["delivery_day", "source_file", "line_number", "ingested_at", "payload", "parse_error"]
# Raw lines per batch when they are read in batches: bounds the payloads in memory at once (about
# 60 MB of typical lines) while per-batch costs stay small (100,000 measured no lower at the peak).
RAW_BATCH_LINES = 250_000
_META = ["source_file", "line_number", "delivery_day", "ingested_at"]


def build_events(
    raw: pd.DataFrame | Iterable[pd.DataFrame],
    day: dt.date,
    *,
    late_limit_days: int,
    rates: Mapping[str, float],
    contract_break_share: float,
    processed_at: dt.datetime,
    first_day: dt.date | None = None,
) -> EventsResult:
    """The events of ``day`` from the raw lines of delivery days ``day .. day + late_limit_days``.

    ``raw`` is one frame of raw lines or an iterable of frames (batches of lines, in any order): each
    batch is checked and reduced to the lines this partition owns before the next one is read, so
    only one batch's payloads are in memory at a time. The result does not depend on the batching.
    ``first_day`` is the first partition: an event that happened before it has no partition to go
    to, so its delivery day owns it and quarantines it as ``before_first_partition``.
    """
    if first_day is not None and day < first_day:
        raise ValueError(f"day {day} is before the first partition {first_day}")
    if late_limit_days < 0:
        raise ValueError("late_limit_days must be >= 0")
    if processed_at.tzinfo is None:
        raise ValueError("processed_at must be timezone-aware")
    window = [(day + dt.timedelta(days=k)).isoformat() for k in range(late_limit_days + 1)]
    counts = np.zeros(len(window), np.int64)  # lines per delivery day of the window
    rejected = np.zeros(len(window), np.int64)  # of which parse errors or contract violations
    parts: list[_OwnedLines] = []
    for batch in [raw] if isinstance(raw, pd.DataFrame) else raw:
        part = _owned_lines(batch, day, window, late_limit_days, rates, first_day)
        counts += part.counts
        rejected += part.rejected
        parts.append(part)
        del batch, part
        release_freed_memory()  # the batch's payloads are gone: keep them out of the next one's peak
    if not parts:  # no batch at all: nothing delivered
        parts.append(_owned_lines(empty_raw_events(), day, window, late_limit_days, rates, first_day))
    lines = _OwnedLines.concat(parts)
    del parts
    release_freed_memory()
    share = rejected / np.maximum(counts, 1)
    shares = {d: float(share[k]) for k, d in enumerate(window) if counts[k]}
    broken_day = share > contract_break_share
    a, e, valid, violation, event_day = lines.a, lines.e, lines.valid, lines.violation, lines.event_day
    broken = valid & broken_day[a]
    in_range = (a - late_limit_days <= e) & (e <= a)

    reason = np.full(len(a), None, dtype=object)
    detail = np.full(len(a), None, dtype=object)
    reason[violation] = lines.reason[violation].to_numpy(object)
    detail[violation] = lines.detail[violation].to_numpy(object)
    mine = valid & ~in_range & ~broken  # owned by its delivery day, so a == 0
    too_late = mine & (e < -late_limit_days)
    reason[too_late] = Reason.TOO_LATE.value
    detail[too_late] = _late_detail(event_day[too_late], day, f", over the limit of {late_limit_days} days")
    future = mine & (e > 0)
    reason[future] = Reason.FROM_THE_FUTURE.value
    detail[future] = _late_detail(event_day[future], day, "")
    mine = lines.orphan & ~broken
    reason[mine] = Reason.BEFORE_FIRST_PARTITION.value
    detail[mine] = _late_detail(event_day[mine], day, f", before the first partition {first_day}")
    reason[broken] = Reason.CONTRACT_BROKEN.value
    broken_text = np.array(
        [f"{s:.1%} of the lines delivered on {d} were rejected (limit {contract_break_share:.1%})"
         for d, s in zip(window, share, strict=True)],
        dtype=object,
    )  # fmt: skip
    detail[broken] = broken_text[a[broken]]

    meta, values = lines.meta, lines.values
    candidates = np.flatnonzero(valid & pd.isna(reason))
    candidates = candidates[np.argsort(_delivery_rank(meta)[candidates], kind="stable")]
    kept, duplicates, conflicts = _dedupe(values, candidates, meta)
    reason[conflicts.index] = Reason.CONFLICTING_RESEND.value
    detail[conflicts.index] = conflicts.to_numpy(object)

    flagged = np.flatnonzero(pd.notna(reason))
    flagged = flagged[np.argsort(_delivery_rank(meta.iloc[flagged]), kind="stable")]
    quarantine = _quarantine(meta.iloc[flagged], reason[flagged], detail[flagged], day, processed_at)
    # The lines' values and meta are not needed after this: they move into the events column by column.
    events = _events_frame(meta, values, kept, a[kept] - e[kept], rates, processed_at)
    return EventsResult(
        events=events,
        quarantine=quarantine,
        conservation=Conservation(
            rows_in=len(a),
            rows_out=len(events),
            quarantined=len(quarantine),
            dropped_by={"duplicate": duplicates},
        ),
        new_fields={str(k): int(v) for k, v in lines.fields.value_counts().sort_index().items()},
        rejected_share_by_delivery_day=shares,
        late_events=int((events["lateness_days"] > 0).sum()),
        lines_by_delivery_day={
            d: (int(rejected[k]), int(counts[k])) for k, d in enumerate(window) if counts[k]
        },
    )


@dataclass(frozen=True)
class _OwnedLines:
    """The lines of some raw rows that one partition owns, with what its build needs of them.

    ``a``/``e``: days from the partition's day to the delivery / to the event (0 without a valid
    event); ``reason``/``detail``: the contract's verdict; ``fields``: the unknown field names the
    lines carry, once per line and name. ``counts``/``rejected`` count *every* line of the window
    read (owned or not) per delivery day, for the delivery days' rejected shares.
    """

    meta: pd.DataFrame
    values: pd.DataFrame
    a: np.ndarray
    e: np.ndarray
    valid: np.ndarray
    violation: np.ndarray
    orphan: np.ndarray
    event_day: np.ndarray
    reason: pd.Series
    detail: pd.Series
    fields: pd.Series
    counts: np.ndarray
    rejected: np.ndarray

    @staticmethod
    def concat(parts: list[_OwnedLines]) -> _OwnedLines:
        if len(parts) == 1:
            return parts[0]

        def frames(name: str) -> pd.DataFrame | pd.Series:
            return pd.concat([getattr(p, name) for p in parts], ignore_index=True)

        def arrays(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return _OwnedLines(
            **{name: frames(name) for name in ("meta", "values", "reason", "detail", "fields")},
            **{name: arrays(name) for name in ("a", "e", "valid", "violation", "orphan", "event_day")},
            counts=sum(p.counts for p in parts),
            rejected=sum(p.rejected for p in parts),
        )


def _owned_lines(
    raw: pd.DataFrame,
    day: dt.date,
    window: list[str],
    late_limit_days: int,
    rates: Mapping[str, float],
    first_day: dt.date | None,
) -> _OwnedLines:
    """Check ``raw``'s lines of the window against the contract and keep those ``day`` owns."""
    if raw.empty and "delivery_day" not in raw.columns:
        raw = empty_raw_events()  # no raw partition materialised yet: nothing delivered
    # Positions instead of filtering, which would copy every payload.
    in_window = raw["delivery_day"].isin(window).to_numpy()
    lines = (raw if in_window.all() else raw.loc[in_window]).reset_index(drop=True)
    delivery = pd.Categorical(lines["delivery_day"], categories=window)
    a = delivery.codes.astype(np.int64)  # days from ``day`` to the delivery
    parseable = lines["parse_error"].isna().to_numpy()
    check = check_contract(lines["payload"], rates=rates)
    violation = parseable & check.reason.notna().to_numpy()
    valid = parseable & ~violation
    counts = np.bincount(a, minlength=len(window))
    rejected = np.bincount(a, weights=(~valid).astype(float), minlength=len(window)).astype(np.int64)

    event_day = check.values["event_time"].dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    e = np.zeros(len(lines), np.int64)
    e[valid] = (event_day[valid] - np.datetime64(day, "D")).astype(np.int64)
    in_range = (a - late_limit_days <= e) & (e <= a)
    orphan = np.zeros(len(lines), bool)  # valid, in time, but its day has no partition
    if first_day is not None:
        orphan = valid & in_range & (e < (first_day - day).days)
    owned = parseable & (np.where(valid & in_range & ~orphan, e, a) == 0)
    fields = check.unknown_fields
    carried = fields.loc[owned[fields["row"].to_numpy()], "field"].reset_index(drop=True)
    if owned.all():
        position: np.ndarray | slice = slice(None)
    else:
        position = np.flatnonzero(owned)
    return _OwnedLines(
        meta=lines[_META].iloc[position].reset_index(drop=True),
        values=check.values.iloc[position].reset_index(drop=True),
        a=a[position],
        e=e[position],
        valid=valid[position],
        violation=violation[position],
        orphan=orphan[position],
        event_day=event_day[position],
        reason=check.reason.iloc[position].reset_index(drop=True),
        detail=check.detail.iloc[position].reset_index(drop=True),
        fields=carried,
        counts=counts,
        rejected=rejected,
    )


def _delivery_rank(meta: pd.DataFrame) -> np.ndarray:
    """Each row's place in delivery order (``ingested_at, source_file, line_number``)."""
    files = pd.factorize(meta["source_file"], sort=True)[0]
    arrived = meta["ingested_at"].dt.tz_localize(None).to_numpy().astype(np.int64)
    order = np.lexsort((meta["line_number"].to_numpy(), files, arrived))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _late_detail(event_day: np.ndarray, day: dt.date, limit: str) -> np.ndarray:
    """Why an event is not in its own day's partition; only days, nothing of the payload."""
    lateness = (np.datetime64(day, "D") - event_day).astype(np.int64)
    text = (
        "happened on "
        + pd.Series(event_day.astype(str), dtype="str")
        + f", delivered on {day.isoformat()}, "
        + pd.Series(np.abs(lateness).astype(str), dtype="str")
        + np.where(lateness >= 0, " days later", " days before")
        + limit
    )
    return text.to_numpy(object)


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash (DuckDB's ``hash``) of each id, in order; missing ids all hash alike."""
    with duckdb.connect(":memory:") as con:
        con.register("ids", pa.table({"id": ids}))
        # A plain projection keeps the rows in order (DuckDB preserves insertion order by default).
        return con.sql("SELECT hash(id) AS h FROM ids").fetchnumpy()["h"]


def later_deliveries(
    ids: pa.Array | pa.ChunkedArray,
    candidates: np.ndarray,
    hash_ids: Callable[[pa.Array | pa.ChunkedArray], np.ndarray] = id_hashes,
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the rows ``candidates`` (in delivery order) repeat the id of an earlier one.

    Returns a mask over ``candidates`` and, for each row it marks (in ``candidates`` order), the row
    of the id's first delivery. Ids are grouped by a 64-bit hash of all rows (8 bytes per row; a hash
    table of millions of id strings costs hundreds of MB), and only the few candidates whose hash is
    not unique are grouped by their text: two distinct ids whose hashes collide are never merged. A
    missing id is an id too (as ``duplicated`` has it).
    """
    hashes = hash_ids(ids)[candidates]
    order = np.argsort(hashes, kind="stable")
    same = hashes[order[1:]] == hashes[order[:-1]]
    shared = np.zeros(len(candidates), bool)  # the hash is another candidate's too
    shared[order[1:][same]] = True
    shared[order[:-1][same]] = True
    del hashes, order, same
    positions = np.flatnonzero(shared)  # ascending, so in delivery order
    text = ids.take(candidates[positions])
    codes = pc.index_in(text, pc.unique(text), skip_nulls=False).to_numpy()
    first_of_code = np.unique(codes, return_index=True)[1]
    repeat = np.ones(len(codes), bool)
    repeat[first_of_code] = False
    later = np.zeros(len(candidates), bool)
    later[positions[repeat]] = True
    first = candidates[positions[first_of_code]][np.searchsorted(codes[first_of_code], codes[repeat])]
    return later, first


def _dedupe(
    values: pd.DataFrame, candidates: np.ndarray, lines: pd.DataFrame
) -> tuple[np.ndarray, int, pd.Series]:
    """Keep the first delivery of each event id among the rows ``candidates`` (in delivery order).

    Returns the kept positions, the number of identical later copies, and per conflicting later
    delivery (indexed by position) a detail naming the differing fields and the first delivery. Only
    the ids of all candidates are looked at; contents only for the few later copies and their firsts.
    """
    ids = pa.array(values["event_id"])  # the column's own Arrow data, no copy
    later, first = later_deliveries(ids, candidates, id_hashes)
    if not later.any():
        return candidates, 0, pd.Series(dtype="str")
    content = values[_CONTENT]
    copy = content.iloc[candidates[later]].reset_index(drop=True)
    original = content.iloc[first].reset_index(drop=True)
    differing = pd.DataFrame(
        {
            name: ~(
                (copy[name] == original[name]).fillna(False) | (copy[name].isna() & original[name].isna())
            )
            for name in _CONTENT
        }
    ).astype(bool)
    conflict = differing.any(axis=1).to_numpy()
    names = pd.Series("", index=differing.index, dtype="str")
    for name in _CONTENT:
        names = names.where(~differing[name], names + np.where(names == "", "", ", ") + name)
    detail = (
        "differs in "
        + names
        + " from the first delivery, "
        + lines["source_file"].iloc[first].to_numpy(object)
        + " line "
        + lines["line_number"].iloc[first].to_numpy().astype(str)
    )
    conflicts = pd.Series(detail[conflict].to_numpy(object), index=candidates[later][conflict], dtype="str")
    return candidates[~later], int((~conflict).sum()), conflicts


def _events_frame(
    lines: pd.DataFrame,
    values: pd.DataFrame,
    kept: np.ndarray,
    lateness: np.ndarray,
    rates: Mapping[str, float],
    processed_at: dt.datetime,
) -> pd.DataFrame:
    """The kept rows (positions in delivery order) as events, ordered by event time.

    Columns of ``lines`` and ``values`` are removed from them as they are taken: the lines and the
    events, both about the size of the partition, are never held in full at the same time.
    """
    # stable: events at the same instant stay in delivery order, so a re-run gives the same frame
    by_time = values["event_time"].iloc[kept].reset_index(drop=True).sort_values(kind="stable").index
    order = kept[by_time.to_numpy()]
    columns: dict[str, pd.Series] = {}
    taken = [(values, name) for name in CONTRACT_VALUE_COLUMNS] + [(lines, name) for name in _META]
    for frame, name in taken:
        columns[name] = frame.pop(name).take(order).reset_index(drop=True)
        # Taking from the batches' chunks first joins them (a transient copy of the column): without
        # this, the allocators keep those copies and every column's adds to the peak.
        release_freed_memory()
    index = columns["currency"].index
    columns["amount_eur"] = columns["amount"] * _rates_of(columns["currency"], rates)
    columns["processed_at"] = pd.Series(pd.Timestamp(processed_at).tz_convert("UTC"), index=index)
    columns["lateness_days"] = pd.Series(lateness[by_time.to_numpy()], index=index)
    # copy=False: the columns as they are, not consolidated into new 2-D blocks (a copy of each).
    return pd.DataFrame({name: columns[name] for name in EVENT_COLUMNS}, copy=False).astype(EVENT_COLUMNS)


def _rates_of(currency: pd.Series, rates: Mapping[str, float]) -> pd.Series:
    """The rate of each row's currency, NaN where it has none or an unknown one.

    Looked up by Arrow (``Series.map`` would make a Python string of every row's currency).
    """
    factor = np.array([*rates.values(), np.nan], dtype="float64")
    known = pa.array(list(rates), pa.string())
    position = pc.fill_null(pc.index_in(pa.array(currency), value_set=known), len(known))
    return pd.Series(factor[position.to_numpy()], index=currency.index)


def _quarantine(
    lines: pd.DataFrame, reason: np.ndarray, detail: np.ndarray, day: dt.date, processed_at: dt.datetime
) -> pd.DataFrame:
    if lines.empty:
        return empty_quarantine()
    return quarantine_frame(
        asset=EVENTS_ASSET,
        partition=day.isoformat(),
        reason=pd.Series(reason, lines.index, dtype="str"),
        detail=pd.Series(detail, lines.index, dtype="str"),
        raw_asset=RAW_EVENTS_ASSET,
        raw_partition=lines["delivery_day"],
        detected_at=processed_at,
        source_file=lines["source_file"],
        line_number=lines["line_number"],
        length=len(lines),
    )

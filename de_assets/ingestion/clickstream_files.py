"""Clickstream deliveries into the raw zone: one row per delivered line, exactly as it came.

The raw zone keeps every line of every landed file, bad ones included, so that any later decision can
be replayed and every quarantined record can be traced back to its bytes. Lines are only checked for
being *parseable* here (UTF-8, not blank, a JSON object); whether they make sense as events is the
events contract's business (:mod:`de_assets.transformation.event_contract`), which can change without
re-ingesting anything.

A partition is a delivery day (the day in the file name, not the day the events happened). Its rows
are the files of that day currently in the landing folder plus those captured earlier and since
removed: the raw zone never loses a delivery, and a file rewritten in place counts with its current
content only. ``ingested_at`` is when a file's current content was first captured, kept across
re-runs, so that "first delivery wins" downstream stays stable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from de_assets.transformation.quarantine import Reason, empty_quarantine, quarantine_frame

RAW_EVENTS_ASSET = "ingestion/raw_events"

RAW_EVENT_COLUMNS: dict[str, str] = {
    "delivery_day": "str",  # YYYY-MM-DD from the file name: the partition key
    "source_file": "str",
    "line_number": "int64",  # 1-based
    "file_sha256": "str",  # of the whole file, to tell a re-run from a rewrite
    "ingested_at": "datetime64[us, UTC]",  # when the file (with this content) arrived
    "payload": "str",  # the line without its line ending; invalid UTF-8 as backslash escapes
    "parse_error": "str",  # a Reason value, null when the line is a JSON object
    "parse_detail": "str",
}

_NAME = re.compile(r"clickstream_([0-9]{4}-[0-9]{2}-[0-9]{2})_[^/\\]*\.jsonl")
_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = " \t\r\n"
_SORT = ["ingested_at", "source_file", "line_number"]
# Bytes of a file decoded and checked at a time: bounds the Python strings alive at once (a few times
# the chunk) while per-chunk costs stay negligible.
CHUNK_BYTES = 8 * 2**20


def delivery_day(name: str) -> dt.date | None:
    """The delivery day in a landed clickstream file name, None for other names or impossible dates."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _reject_constant(name: str) -> float:
    # NaN and Infinity are Python extensions, not JSON: other readers of the raw zone would choke.
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _check_line(text: str) -> tuple[str, str] | None:
    """Why ``text`` is not a JSON object (reason, detail), None when it is one."""
    stripped = text.strip(_JSON_WHITESPACE)
    if not stripped:
        return Reason.EMPTY_LINE.value, "blank line"
    try:
        # raw_decode on the stripped text is json.loads without its two whitespace scans per line.
        value, end = _DECODER.raw_decode(stripped)
        if end != len(stripped):
            raise json.JSONDecodeError("Extra data", stripped, end)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError; deep nesting recurses
        # The decoder's messages name positions, never the content, so they are safe to keep.
        return Reason.MALFORMED_JSON.value, (str(error) or type(error).__name__)[:200]
    if not isinstance(value, dict):
        return Reason.NOT_AN_OBJECT.value, f"a JSON {type(value).__name__}, not an object"
    return None


def _line_chunks(data: bytes, chunk_bytes: int) -> Iterator[tuple[list[str], dict[int, str]]]:
    """The lines of ``data`` about ``chunk_bytes`` at a time (whole lines), as :func:`_decoded_lines`.

    A file's lines as Python strings take about twice its size; a chunk at a time they take a chunk's.
    """
    start = len(_BOM) if data.startswith(_BOM) else 0
    while start < len(data):
        # The chunk ends with the first line ending at or after start + chunk_bytes, or with the file.
        end = data.find(b"\n", min(start + chunk_bytes, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        yield _decoded_lines(data[start:end])
        start = end


def _decoded_lines(data: bytes) -> tuple[list[str], dict[int, str]]:
    """The lines of ``data`` as text, and the details of the lines that are not valid UTF-8."""
    if not data:
        return [], {}
    try:
        # One decode for the whole chunk is much faster; "\n" is never part of a multi-byte character.
        parts = data.decode("utf-8").split("\n")
        invalid: dict[int, str] = {}
    except UnicodeDecodeError:
        parts, invalid = [], {}
        for index, chunk in enumerate(data.split(b"\n")):
            try:
                parts.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as error:
                parts.append(chunk.decode("utf-8", errors="backslashreplace"))
                invalid[index] = f"invalid UTF-8 at byte {error.start} of the line"
    if parts[-1] == "":  # the chunk ends with a newline: no line after it
        parts.pop()
    return [p.removesuffix("\r") for p in parts], invalid


def _repeat(value: str, n: int) -> pd.Series:
    """``value`` n times as a ``str`` column, built in Arrow (no list of n Python references)."""
    return pd.Series(pc.take(pa.array([value], pa.large_string()), np.zeros(n, np.int8)), dtype="str")


def parse_file(
    name: str,
    data: bytes,
    *,
    ingested_at: dt.datetime,
    sha256: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> pd.DataFrame:
    """One raw row per line of the delivered file ``name``; never raises on the content.

    A final line without a newline counts, a zero-byte file gives no rows, ``\\r\\n`` endings and a
    leading UTF-8 byte order mark are removed. The frame carries the file name in ``attrs`` so that
    :func:`assemble_partition` can tell that an empty file replaced an earlier capture. ``sha256`` is
    the content's digest when the caller has it already; lines are decoded and checked about
    ``chunk_bytes`` at a time, which changes nothing in the result.
    """
    day = delivery_day(name)
    if day is None:
        raise ValueError(f"{name!r} is not a clickstream delivery (clickstream_YYYY-MM-DD_<part>.jsonl)")
    if ingested_at.tzinfo is None:
        raise ValueError("ingested_at must be timezone-aware")
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be >= 1")
    payloads: list[pa.Array] = []
    errors: list[pa.Array] = []
    details: list[pa.Array] = []
    for lines, invalid in _line_chunks(data, chunk_bytes):
        chunk_errors: list[str | None] = [None] * len(lines)
        chunk_details: list[str | None] = [None] * len(lines)
        for index, text in enumerate(lines):
            problem = (
                (Reason.INVALID_ENCODING.value, invalid[index]) if index in invalid else _check_line(text)
            )
            if problem is not None:
                chunk_errors[index], chunk_details[index] = problem
        # Into Arrow per chunk: the chunk's Python strings are freed before the next one is decoded.
        payloads.append(pa.array(lines, pa.large_string()))
        errors.append(pa.array(chunk_errors, pa.large_string()))
        details.append(pa.array(chunk_details, pa.large_string()))
    n = sum(len(chunk) for chunk in payloads)
    frame = pd.DataFrame(
        {
            "delivery_day": _repeat(day.isoformat(), n),
            "source_file": _repeat(name, n),
            "line_number": np.arange(1, n + 1, dtype=np.int64),
            "file_sha256": _repeat(sha256 or hashlib.sha256(data).hexdigest(), n),
            "ingested_at": pd.Series(pd.Timestamp(ingested_at).tz_convert("UTC"), index=pd.RangeIndex(n)),
            # Chunked columns: pandas' str dtype keeps the Arrow chunks as they are (no copy).
            "payload": pd.Series(pa.chunked_array(payloads, pa.large_string()), dtype="str"),
            "parse_error": pd.Series(pa.chunked_array(errors, pa.large_string()), dtype="str"),
            "parse_detail": pd.Series(pa.chunked_array(details, pa.large_string()), dtype="str"),
        }
    ).astype(RAW_EVENT_COLUMNS)
    frame.attrs["source_file"] = name
    return frame


def first_arrivals(previous: pd.DataFrame | None) -> dict[tuple[str, str], dt.datetime]:
    """When each (file name, sha256) of an earlier capture first arrived."""
    if previous is None or not len(previous):
        return {}
    firsts = previous.groupby(["source_file", "file_sha256"], sort=False)["ingested_at"].min()
    return {key: value.to_pydatetime() for key, value in firsts.items()}


def arrival_times(previous: pd.DataFrame | None, files: Mapping[str, str]) -> dict[str, dt.datetime | None]:
    """For each current file (name → sha256), when an earlier capture of the same content arrived.

    None means new or rewritten: the caller stamps it with the current time. Keeping the earlier time
    makes a re-run reproduce the partition instead of re-dating every delivery.
    """
    known = first_arrivals(previous)
    return {name: known.get((name, sha)) for name, sha in files.items()}


@dataclass(frozen=True)
class DayCapture:
    """A delivery day's raw rows (:func:`assemble_partition`) and counts of the files read for it."""

    frame: pd.DataFrame
    files: int
    new_or_rewritten_files: int
    empty_files: int


def _one_by_one(files: dict[str, bytes] | Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    """(name, content) pairs; a dict is emptied as it goes, so each content can be freed once parsed."""
    if isinstance(files, dict):
        while files:
            name = next(iter(files))
            yield name, files.pop(name)
    else:
        yield from files


def capture_day(
    previous: pd.DataFrame | None,
    files: dict[str, bytes] | Iterable[tuple[str, bytes]],
    *,
    now: dt.datetime,
    chunk_bytes: int = CHUNK_BYTES,
) -> DayCapture:
    """The raw rows of a delivery day from its landed files: name → content (emptied as it is read),
    or (name, content) pairs read lazily, one file in memory at a time.

    New and rewritten files are stamped ``now``; others keep their first arrival. Each file's bytes
    are freed once it is parsed, while its rows are added: a day's files and their rows are never held
    in full at the same time.
    """
    known = first_arrivals(previous)
    parsed, new, empty = [], 0, 0
    for name, data in _one_by_one(files):
        digest = hashlib.sha256(data).hexdigest()
        arrived = known.get((name, digest))
        new += arrived is None
        empty += not data
        parsed.append(
            parse_file(name, data, ingested_at=arrived or now, sha256=digest, chunk_bytes=chunk_bytes)
        )
        del data  # before the next file is parsed
    return DayCapture(assemble_partition(previous, parsed), len(parsed), new, empty)


def assemble_partition(previous: pd.DataFrame | None, current: list[pd.DataFrame]) -> pd.DataFrame:
    """A delivery day's raw rows: the current files, plus earlier captures of files since removed.

    A file present now (even empty) replaces whatever was captured under its name before.
    """
    names = {f.attrs.get("source_file") for f in current} | {
        name for f in current for name in f["source_file"].unique()
    }
    kept = []
    if previous is not None and len(previous):
        kept.append(previous[~previous["source_file"].isin(names)])
    # Files in delivery order (a file's rows share ingested_at and name, and are in line order) so that
    # the final sort usually finds the rows in order and copies nothing; it still decides the order.
    current = sorted(
        (f for f in current if len(f)), key=lambda f: (f["ingested_at"].iloc[0], f["source_file"].iloc[0])
    )
    frames = [f for f in [*kept, *current] if len(f)]
    if not frames:
        return empty_raw_events()
    # The str columns concatenate as chunks of the same Arrow data, without a copy.
    combined = pd.concat([f[list(RAW_EVENT_COLUMNS)] for f in frames], ignore_index=True)
    combined = combined.astype(RAW_EVENT_COLUMNS)
    combined.attrs = {}
    return combined.sort_values(_SORT, ignore_index=True)


def empty_raw_events() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in RAW_EVENT_COLUMNS.items()})


def parse_rejects(raw: pd.DataFrame, *, partition: str, detected_at: dt.datetime) -> pd.DataFrame:
    """Quarantine rows for the raw lines that could not be parsed (they stay in the raw zone)."""
    # Only the columns the records need: filtering the whole frame would copy every payload (the
    # Arrow-backed text columns are combined into one chunk before a filter).
    needed = ["parse_error", "parse_detail", "delivery_day", "source_file", "line_number"]
    bad = raw[needed].take(np.flatnonzero(raw["parse_error"].notna().to_numpy()))
    if bad.empty:
        return empty_quarantine()
    return quarantine_frame(
        asset=RAW_EVENTS_ASSET,
        partition=partition,
        reason=bad["parse_error"],
        detail=bad["parse_detail"],
        raw_asset=RAW_EVENTS_ASSET,
        raw_partition=bad["delivery_day"],
        detected_at=detected_at,
        source_file=bad["source_file"],
        line_number=bad["line_number"],
        length=len(bad),
    )

"""Day marks: how the ingestion sensors remember what they requested for each day, in a small cursor.

A mark is (sequence, digest): the how-manieth request for the day, and a digest of the state it
covered (the day's files, or the window's fingerprint). A new digest means a new request with the next
sequence, so a run key ``<scope>:<sequence>:<digest>`` is fresh for every change, even back to an
earlier state, while a tick evaluated again (after a crash, before its cursor was saved) repeats its
keys, which Dagster runs once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping

import dagster as dg

CURSOR_VERSION = 1
_DIGEST_HEX = 16  # 64 bits: a digest only has to tell one day's states apart


@dataclasses.dataclass(frozen=True)
class DayMark:
    """What a sensor last requested for a day: the how-manieth request, and the digest it covered."""

    sequence: int
    digest: str


def advance(previous: DayMark | None, digest: str) -> tuple[DayMark, bool]:
    """(the day's mark, whether it is a new request): new when ``digest`` differs from the last one."""
    if previous is not None and previous.digest == digest:
        return previous, False
    return DayMark(sequence=(previous.sequence if previous else 0) + 1, digest=digest), True


def run_key(scope: str, mark: DayMark) -> str:
    return f"{scope}:{mark.sequence}:{mark.digest}"


def short_digest(payload: object) -> str:
    """A short SHA-256 of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_HEX]


def load_cursor(text: str | None) -> dict[str, object]:
    """The cursor's JSON object ({} when there is none yet); ValueError when unreadable or of another version."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("the cursor is not JSON") from None
    if not isinstance(value, dict) or value.get("v") != CURSOR_VERSION:
        raise ValueError(f"the cursor is not a version {CURSOR_VERSION} cursor")
    return value


def dump_cursor(content: Mapping[str, object]) -> str:
    return json.dumps({"v": CURSOR_VERSION, **content}, sort_keys=True, separators=(",", ":"))


def marks_to_json(marks: Mapping[str, DayMark]) -> dict[str, list[object]]:
    return {day: [mark.sequence, mark.digest] for day, mark in sorted(marks.items())}


def marks_from_json(value: object) -> dict[str, DayMark]:
    """Marks by ISO day from their JSON form; ValueError for anything else."""
    if not isinstance(value, dict):
        raise ValueError("the cursor's days are not an object")
    marks = {}
    for day, mark in value.items():
        try:
            valid_day = dt.date.fromisoformat(day).isoformat() == day
        except (TypeError, ValueError):
            valid_day = False
        if not valid_day:
            raise ValueError(f"the cursor names {day!r}, not a day")
        match mark:
            # bool is an int too: a cursor saying [true, ...] was not written by this code.
            case [int(sequence), str(digest)] if not isinstance(sequence, bool) and sequence >= 1:
                marks[day] = DayMark(sequence, digest)
            case _:
                raise ValueError(f"the cursor's entry for {day} is not [sequence, digest]")
    return marks


def last_partition_day(partitions_def: dg.PartitionsDefinition) -> dt.date | None:
    """The last complete day at the evaluation time (Dagster's partition loading context)."""
    key = partitions_def.get_last_partition_key()
    return None if key is None else dt.date.fromisoformat(key)

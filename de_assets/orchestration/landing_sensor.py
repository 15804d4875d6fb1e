"""The landing sensor: an ingestion run for every delivery day whose clickstream files changed.

A raw_events run for a day reads every file delivered for that day and is idempotent (a file it has
captured before adds nothing), so the sensor thinks in days, not files:

- **One request per day per tick**, covering all of the day's files: three files landing together
  need one run, and two requests of one tick never race for the same partition. Every request also
  carries the :func:`~de_assets.orchestration.run_tags.raw_partition_lock` tag, so runs for the same
  day from any sensor, schedule or backfill wait for each other.
- **Run key** ``<day>:<sequence>:<digest>``. The digest (16 hex digits of SHA-256) covers the name,
  size and modification time of every file of the day (and its ETag on an object store, whose times
  are whole seconds); the sequence counts the sensor's requests for the day. Any change (a new file, a file rewritten in place, a removal) gives a new digest and the
  next sequence, so the key is fresh even if the files return to an earlier state, and no file is ever
  skipped because a key was used. A tick evaluated again after a crash, before its cursor was saved,
  computes the same keys, and Dagster runs each key once.
- **Cursor** ``{"v": 1, "days": {"YYYY-MM-DD": [sequence, digest]}}``: a few dozen bytes per delivery
  day, however many files it has. A cursor that cannot be read (corrupt, or of another version) is
  logged and replaced: every day with files is requested again. That is safe because runs are
  idempotent; a key equal to one requested before (sequence 1 and the very same files) is skipped by
  Dagster, and that earlier run covered exactly those files.
- **No "newer than" cursor**: a tick compares each day's whole file set with the digest it remembers,
  never times or listing order. Object stores list by key, not by time, and a file can land late for
  an old day or keep an older time than one already seen: it is requested all the same. Each tick
  lists the folder afresh (listings are never cached, see :mod:`de_assets.storage.filesystem`).
- **Not requested**, and logged with the reason: entries the landing folder refuses (odd names,
  symbolic links, special files; ingestion refuses them too), names without a valid delivery day, days
  before the first partition. A day after the last complete partition (at the evaluation time) is
  pending: logged but not remembered, so its files are requested once the day is a partition. Hidden
  names (files still being written) are never listed.

A run that fails is not requested again for the same files (its key was used): retrying runs is the
instance's business (run retries), or an operator's (re-run the partition).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping

import dagster as dg

from de_assets.generation.landing import LandedFile
from de_assets.generation.resources import LandingFolderResource
from de_assets.ingestion.assets import RAW_EVENTS, RAW_EVENTS_REJECTED
from de_assets.ingestion.clickstream_files import delivery_day
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

LANDING_SENSOR = "landing_sensor"
CLICKSTREAM_PREFIX = "clickstream_"
NO_DELIVERY_DAY = "no valid delivery day in the name (clickstream_YYYY-MM-DD_<part>.jsonl)"
# Names logged per reason and tick: a folder full of odd files must not flood the log.
_NAMES_LOGGED = 10


def files_digest(files: Iterable[LandedFile]) -> str:
    """Digest of a day's files: any new, removed or rewritten file (new size, time or ETag) changes it."""
    # The ETag only where the store has one: digests of local folders, and so their cursors, stay valid.
    return short_digest(sorted([f.name, f.size, f.modified, *([f.etag] if f.etag else [])] for f in files))


@dataclasses.dataclass(frozen=True)
class LandingPlan:
    """One tick's decision: the days to request with their marks, the next cursor, and what was left."""

    requests: dict[str, DayMark]  # by ISO day, in day order; the run key is run_key(day, mark)
    files: dict[str, int]  # files covered by each request
    marks: dict[str, DayMark]  # the next cursor's days
    ignored: dict[str, list[str]]  # reason -> names that will not be requested
    pending: list[str]  # names whose day is not a partition yet


def plan_landing(
    files: Iterable[LandedFile], marks: Mapping[str, DayMark], *, first: dt.date, last: dt.date | None
) -> LandingPlan:
    """Which delivery days to request, given the landed ``files`` and the marks of earlier requests.

    ``first`` and ``last`` are the first and the last complete partition's days (``last`` None when
    there is no complete day yet).
    """
    by_day: dict[str, list[LandedFile]] = defaultdict(list)
    ignored: dict[str, list[str]] = defaultdict(list)
    pending: list[str] = []
    for entry in files:
        day = delivery_day(entry.name)
        if entry.refused is not None:
            ignored[f"refused: {entry.refused}"].append(entry.name)
        elif day is None:
            ignored[NO_DELIVERY_DAY].append(entry.name)
        elif day < first:
            ignored[f"delivery day before the first partition ({first})"].append(entry.name)
        elif last is None or day > last:
            pending.append(entry.name)
        else:
            by_day[day.isoformat()].append(entry)
    requests = {}
    for day in sorted(by_day):
        mark, new = advance(marks.get(day), files_digest(by_day[day]))
        if new:
            requests[day] = mark
    return LandingPlan(
        requests=requests,
        files={day: len(by_day[day]) for day in requests},
        # Days without files now keep their mark: if files come back, the sequence goes on.
        marks={**marks, **requests},
        ignored=dict(ignored),
        pending=pending,
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_NAMES_LOGGED])  # repr: a name cannot forge log lines
    return shown + (f" and {len(names) - _NAMES_LOGGED} more" if len(names) > _NAMES_LOGGED else "")


def _log_plan(log: logging.Logger, plan: LandingPlan) -> None:
    for reason, names in sorted(plan.ignored.items()):
        log.warning(f"not requesting {len(names)} landed file(s), {reason}: {_names(names)}")
    if plan.pending:
        log.info(
            f"{len(plan.pending)} landed file(s) wait for their delivery day to become a partition: "
            f"{_names(plan.pending)}"
        )
    for day, mark in plan.requests.items():
        log.info(f"requesting {day} ({plan.files[day]} file(s)), run key {run_key(day, mark)}")


def _cursor_marks(context: dg.SensorEvaluationContext) -> dict[str, DayMark]:
    try:
        return marks_from_json(load_cursor(context.cursor).get("days", {}))
    except ValueError as error:
        context.log.warning(
            f"{error}; starting over: every delivery day with files is requested again "
            "(safe: ingestion runs are idempotent)"
        )
        return {}


def build_landing_sensor(
    partitions_def: dg.PartitionsDefinition, *, minimum_interval_seconds: int
) -> dg.SensorDefinition:
    """The sensor that requests raw_events runs for the delivery days whose files changed."""
    first = first_day(partitions_def)
    if first is None:
        raise ValueError("the landing sensor needs daily (time-window) partitions")

    @dg.sensor(
        name=LANDING_SENSOR,
        target=[RAW_EVENTS, RAW_EVENTS_REJECTED],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one raw_events run per delivery day whose clickstream files are new or "
        "changed (keyed by the day's file set); refuses links and odd names.",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, landing: LandingFolderResource
    ) -> dg.SensorResult:
        plan = plan_landing(
            landing.folder().list(CLICKSTREAM_PREFIX),
            _cursor_marks(context),
            first=first,
            last=last_partition_day(partitions_def),
        )
        _log_plan(context.log, plan)
        cursor = dump_cursor({"days": marks_to_json(plan.marks)})
        if not plan.requests:
            return dg.SensorResult(skip_reason="no new or changed clickstream files", cursor=cursor)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=day,
                    run_key=run_key(day, mark),
                    tags=raw_partition_lock(RAW_EVENTS, day),
                )
                for day, mark in plan.requests.items()
            ],
            cursor=cursor,
        )

    return landing_sensor

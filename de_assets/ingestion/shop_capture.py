"""The raw capture of a shop table: an append-only log of row versions and tombstones (pure pandas).

Layout: the source's columns, plus ``op`` (``"upsert"`` or ``"delete"``), ``captured_at`` (UTC, when
the version was first captured; a re-run never changes it) and ``window_day`` (the ``YYYY-MM-DD``
partition the row is stored under: the day of its ``updated_at`` for an upsert, the day whose run
detected the deletion for a tombstone).

Why append-only versions plus tombstones are enough to rebuild the latest state of every row:

* The source stamps every insert and update with ``updated_at``, so the current version of a live row
  lies in exactly one daily window, the one of its current ``updated_at``. Capturing every window once
  after its day is over (and again when a sensor sees a window's fingerprint change, for rows committed
  late) therefore captures the current version of every live row.
* An update moves the row into a later window; the earlier version stays in the earlier capture, since
  captures only ever append. Nothing is lost, and versions are told apart by their content, so a re-run
  adds only what it had not seen.
* A hard delete leaves no row to capture. Key reconciliation (captured keys that the source no longer
  has) records it as a tombstone, once.

So the latest state of a key is its upsert with the greatest ``(updated_at, captured_at)``, unless a
tombstone of that key was captured after it (a later upsert, captured after the tombstone, is a row
re-inserted with the same key). What the capture cannot see are intermediate versions overwritten
between two captures of a window; the latest state does not need them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from de_assets.ingestion.source_reader import WATERMARK

OP_UPSERT = "upsert"
OP_DELETE = "delete"
META_COLUMNS = ("op", "captured_at", "window_day")
CAPTURED_AT_DTYPE = "datetime64[us, UTC]"
_META_DTYPES = {"op": "str", "captured_at": CAPTURED_AT_DTYPE, "window_day": "str"}


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """A window's capture after a (re-)run, and how many fetched rows were new versions."""

    frame: pd.DataFrame
    new_versions: int
    already_captured: int


def merge_capture(
    previous: pd.DataFrame | None,
    fetched: pd.DataFrame,
    *,
    key: str,
    window_day: str,
    captured_at: dt.datetime,
) -> CaptureResult:
    """``previous`` unchanged plus every fetched row whose content it does not hold yet (as upserts).

    Content is the value of every column the source has now (``fetched``'s columns), compared
    null-safely and independently of how the dtypes came back (int64 or Int64, str or object, us or ns).
    A column the source dropped does not make old rows new; one it added does, where it holds a value.
    """
    start = _window_start(window_day)
    stamp = _utc(captured_at, "captured_at")
    _check_in_window(fetched, start)
    if previous is not None and previous.empty:
        previous = None
    source = [c for c in fetched.columns if c not in META_COLUMNS]
    unseen = _unseen(fetched[source], _upserts(previous), source)
    new = fetched.loc[unseen, source].assign(op=OP_UPSERT, captured_at=stamp, window_day=window_day)
    stored = [] if previous is None else [c for c in previous.columns if c not in (*source, *META_COLUMNS)]
    frames = [new] if previous is None else [previous, new]
    frame = _union(frames, [*source, *stored], _target_dtypes(fetched, previous))
    frame = frame.sort_values([key, WATERMARK, "captured_at"], kind="mergesort", na_position="last")
    new_versions = int(unseen.sum())
    return CaptureResult(
        frame=frame.reset_index(drop=True),
        new_versions=new_versions,
        already_captured=len(fetched) - new_versions,
    )


def tombstones(
    captured: pd.DataFrame,
    present_keys: np.ndarray,
    *,
    key: str,
    window_day: str,
    detected_at: dt.datetime,
) -> pd.DataFrame:
    """One delete row per captured key that the source no longer has and that has no tombstone yet.

    ``captured`` is the capture to reconcile (earlier windows and this one). A key whose latest upsert
    was captured after its latest tombstone was re-inserted, so its disappearance is a new deletion.
    The tombstone carries the key, the key's ``created_at`` and the metadata; other columns are null.
    """
    _window_start(window_day)
    stamp = _utc(detected_at, "detected_at")
    upserts = _upserts(captured)
    keys, created = _vanished(captured, upserts, np.asarray(present_keys), key)
    dtypes = dict(captured.dtypes)
    frame = pd.DataFrame({c: _nulls(len(keys), _nullable(d)) for c, d in dtypes.items()})
    frame[key] = pd.Series(keys, dtype=dtypes[key])
    frame["created_at"] = pd.Series(created, dtype=_nullable(dtypes["created_at"]))
    frame["op"] = pd.Series(OP_DELETE, index=frame.index, dtype="str")
    frame["captured_at"] = pd.Series(stamp, index=frame.index).astype(CAPTURED_AT_DTYPE)
    frame["window_day"] = pd.Series(window_day, index=frame.index, dtype="str")
    return frame


def _vanished(
    captured: pd.DataFrame, upserts: pd.DataFrame, present: np.ndarray, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys that need a tombstone now, and each one's created_at (from its latest version)."""
    if upserts.empty:
        return captured[key].to_numpy()[:0], captured["created_at"].to_numpy()[:0]
    last_upsert = upserts.groupby(key)["captured_at"].max()
    deletes = captured.loc[captured["op"] == OP_DELETE]
    last_delete = deletes.groupby(key)["captured_at"].max().reindex(last_upsert.index)
    gone = ~last_upsert.index.isin(present)
    pending = last_delete.isna().to_numpy() | (last_upsert > last_delete).to_numpy()
    keys = last_upsert.index[gone & pending].sort_values()
    latest = upserts.sort_values([WATERMARK, "captured_at"], kind="mergesort", na_position="first")
    created = latest.groupby(key)["created_at"].last().reindex(keys)
    return keys.to_numpy(), created.to_numpy()


# --- helpers -----------------------------------------------------------------------------------------


def _window_start(window_day: str) -> pd.Timestamp:
    try:
        day = dt.date.fromisoformat(window_day)
    except (TypeError, ValueError):
        day = None
    if day is None or day.isoformat() != window_day:
        raise ValueError(f"window_day must be YYYY-MM-DD, got {window_day!r}")
    return pd.Timestamp(day)


def _utc(moment: dt.datetime, name: str) -> pd.Timestamp:
    """Capture times are instants: a naive value is refused rather than guessed."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
    return stamp.tz_convert("UTC")


def _check_in_window(fetched: pd.DataFrame, start: pd.Timestamp) -> None:
    """Refuse rows outside the window: stored under another day, a version could be captured twice."""
    stamps = fetched.get(WATERMARK)
    if stamps is None or not pd.api.types.is_datetime64_any_dtype(stamps):
        return  # text (a contract violation) is the caller's check to reject
    outside = stamps.notna() & ((stamps < start) | (stamps >= start + pd.Timedelta(days=1)))
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} fetched rows have {WATERMARK} outside window {start.date()}, "
            f"e.g. {stamps[outside].iloc[0]}"
        )


def _upserts(capture: pd.DataFrame | None) -> pd.DataFrame:
    if capture is None:
        return pd.DataFrame()
    missing = [c for c in META_COLUMNS if c not in capture.columns]
    if missing:
        raise ValueError(f"not a raw capture: columns {missing} are missing")
    return capture.loc[capture["op"] == OP_UPSERT]


def _unseen(fetched: pd.DataFrame, seen: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Mask of ``fetched`` rows whose values on ``columns`` no row of ``seen`` has (nor an earlier
    fetched row); nulls equal nulls."""
    if not columns:
        return np.zeros(len(fetched), dtype=bool)
    left, right = {}, {}
    for name in columns:
        old = seen[name] if name in seen.columns else _nulls(len(seen), "object")
        left[name], right[name] = _comparable(
            old.reset_index(drop=True), fetched[name].reset_index(drop=True)
        )
    both = pd.concat([pd.DataFrame(left), pd.DataFrame(right)], ignore_index=True)
    return ~both.duplicated(keep="first").to_numpy()[len(seen) :]


def _kind(dtype: object) -> str:
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "text"


def _comparable(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Both sides in one canonical dtype, chosen from the kinds of the sides that hold any value."""
    kinds = {_kind(s.dtype) for s in (a, b) if s.notna().any()}
    if kinds == {"datetime"}:
        return _naive_utc_us(a), _naive_utc_us(b)
    if kinds <= {"int", "float"} and kinds:
        target = "Int64" if kinds == {"int"} else "float64"
    elif kinds == {"bool"}:
        target = "boolean"
    else:
        target = "str"
    return _cast(a, target), _cast(b, target)


def _cast(series: pd.Series, dtype: str) -> pd.Series:
    if not series.notna().any():
        return _nulls(len(series), dtype)
    return series.astype(dtype)


def _naive_utc_us(series: pd.Series) -> pd.Series:
    if not series.notna().any():
        return _nulls(len(series), "datetime64[us]")
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.astype("datetime64[us]")


def _nulls(length: int, dtype: object) -> pd.Series:
    return pd.Series(index=pd.RangeIndex(length), dtype=dtype)


def _nullable(dtype: object) -> object:
    """The dtype that can also hold nulls (int64 → Int64, bool → boolean)."""
    if pd.api.types.is_bool_dtype(dtype) and not isinstance(dtype, pd.BooleanDtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype) and not isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return "Int64"
    return dtype


def _target_dtypes(fetched: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, object]:
    """Column dtypes of the merged capture: the fresh fetch's (the contract's), else the stored ones."""
    stored = {} if previous is None else dict(previous.dtypes)
    return stored | {c: fetched[c].dtype for c in fetched.columns} | _META_DTYPES


def _restored(column: pd.Series, dtype: object) -> pd.Series:
    """``column`` in ``dtype`` (nullable if it holds nulls) when that keeps its values: same kind of
    data, or integers that came back as floats; otherwise unchanged."""
    target = dtype if column.notna().all() else _nullable(dtype)
    kinds = {_kind(column.dtype), _kind(target)}
    if column.notna().any() and len(kinds) > 1 and kinds != {"int", "float"}:
        return column
    try:
        return column.astype(target)
    except (TypeError, ValueError):
        return column


def _union(frames: list[pd.DataFrame], order: list[str], dtypes: dict[str, object]) -> pd.DataFrame:
    """Concatenate with every column in every frame (nulls where absent), in the target dtypes where
    :func:`_restored` can, otherwise in pandas' common dtype."""
    columns = [*order, *META_COLUMNS]
    aligned = []
    for frame in frames:
        parts = {}
        for name in columns:
            if name not in frame.columns:
                parts[name] = _nulls(len(frame), _nullable(dtypes[name]))
                continue
            parts[name] = _restored(frame[name].reset_index(drop=True), dtypes[name])
        aligned.append(pd.DataFrame(parts, index=pd.RangeIndex(len(frame))))
    return pd.concat(aligned, ignore_index=True)

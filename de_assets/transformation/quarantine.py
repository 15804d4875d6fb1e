"""Quarantine records: every rejected record, with where it came from and why.

A quarantine row never carries the rejected payload itself (it may hold PII): it points at the record
in the restricted raw zone (``raw_asset``, ``raw_partition`` and the file/line or table/key), which
keeps the payload as it came. One frame layout serves every stage, so the ``quarantine`` asset is a
plain union of the stages' rejects.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import pandas as pd


class Reason(StrEnum):
    """Why a record was rejected; stable codes that reviewers and tests can count on."""

    # the line itself
    INVALID_ENCODING = "invalid_encoding"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    EMPTY_LINE = "empty_line"
    # the data contract
    MISSING_REQUIRED_FIELD = "missing_required_field"
    NULL_REQUIRED_FIELD = "null_required_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    CONTRACT_BROKEN = "contract_broken"  # valid row of a delivery whose rejected share passed the threshold
    # business rules
    NEGATIVE_AMOUNT = "negative_amount"
    UNKNOWN_CURRENCY = "unknown_currency"
    MISSING_CUSTOMER = "missing_customer"
    UPDATED_BEFORE_CREATED = "updated_before_created"
    # time and identity
    CONFLICTING_RESEND = "conflicting_resend"  # same event_id as an earlier delivery, other payload
    TOO_LATE = "too_late"  # arrived more than the late-arrival limit after it happened
    FROM_THE_FUTURE = "from_the_future"  # happened after the day of the file that delivered it
    BEYOND_LOOKAHEAD = "beyond_lookahead"  # a source change captured after its partition closed
    BEFORE_FIRST_PARTITION = "before_first_partition"  # happened before the partitions start


QUARANTINE_COLUMNS: dict[str, str] = {
    "asset": "str",  # the asset that rejected it, e.g. transformation/events
    "partition": "str",  # that asset's partition key
    "reason": "str",  # a Reason value
    "detail": "str",  # human-readable specifics (field names, values without PII)
    "raw_asset": "str",  # where the payload is kept, e.g. ingestion/raw_events
    "raw_partition": "str",
    "source_file": "str",  # file records: landing file name and 1-based line
    "line_number": "Int64",
    "source_table": "str",  # table records: source table and key
    "source_key": "str",
    "detected_at": "datetime64[us, UTC]",
}


def quarantine_frame(
    *,
    asset: str,
    partition: str | pd.Series,
    reason: Reason | str | pd.Series,
    detail: str | pd.Series,
    raw_asset: str,
    raw_partition: str | pd.Series,
    detected_at: dt.datetime,
    source_file: pd.Series | None = None,
    line_number: pd.Series | None = None,
    source_table: str | None = None,
    source_key: pd.Series | None = None,
    length: int | None = None,
) -> pd.DataFrame:
    """Quarantine rows in the shared layout; scalars are broadcast to ``length`` (or the series' length)."""
    series = [v for v in (partition, reason, detail, raw_partition, source_file, line_number, source_key)
              if isinstance(v, pd.Series)]  # fmt: skip
    n = length if length is not None else (len(series[0]) if series else 0)
    if detected_at.tzinfo is None:
        raise ValueError("detected_at must be timezone-aware (UTC)")
    values: dict[str, object] = {
        "asset": asset,
        "partition": partition,
        "reason": reason.value if isinstance(reason, Reason) else reason,
        "detail": detail,
        "raw_asset": raw_asset,
        "raw_partition": raw_partition,
        "source_file": source_file,
        "line_number": line_number,
        "source_table": source_table,
        "source_key": source_key.astype("str") if source_key is not None else None,
        "detected_at": pd.Timestamp(detected_at).tz_convert("UTC"),
    }
    data = {
        name: (value.to_numpy() if isinstance(value, pd.Series) else [value] * n)
        for name, value in values.items()
    }
    return empty_quarantine() if n == 0 else pd.DataFrame(data).astype(QUARANTINE_COLUMNS)


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in QUARANTINE_COLUMNS.items()})

"""Validation of a table's latest versions: the first failing rule rejects a row, the detail names them all.

A table lists its rules as :class:`Check` values in priority order; :func:`settle` quarantines every
latest version that fails one (one quarantine row per key, the reason of the first failing check,
the detail listing every failing check) and closes the partition's conservation account. Details
name fields and rules, never values: a rejected row may hold PII.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.quality.conservation import Conservation
from de_assets.transformation.quarantine import Reason
from de_assets.transformation.versions import CurrentVersions, utc


@dataclass(frozen=True)
class Check:
    """One rule: the rows of ``latest`` that fail it, and what to tell a reviewer about them."""

    reason: Reason
    failed: np.ndarray
    text: str


@dataclass(frozen=True)
class Settled:
    """The valid latest versions, every reject of the partition, and its conservation account."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    conservation: Conservation

    def version_columns(self, processed_at: dt.datetime) -> dict[str, pd.Series]:
        """The output columns every current-version table shares (timestamps in UTC)."""
        at = pd.Timestamp(processed_at).tz_convert("UTC").as_unit("us")
        return {
            "created_at": utc(self.valid["created_at"]),
            "updated_at": utc(self.valid["updated_at"]),
            "versions_seen": self.valid["versions_seen"].astype("int64"),
            "captured_at": self.valid["captured_at"].astype("datetime64[us, UTC]"),
            "processed_at": pd.Series(at, index=self.valid.index, dtype="datetime64[us, UTC]"),
        }


def required(current: CurrentVersions, columns: Iterable[str]) -> list[Check]:
    """Missing-field checks: a column absent from the capture, null, or (text) blank."""
    checks = []
    for column in columns:
        values = current.latest[column]
        missing = values.isna().to_numpy() & ~current.wrong_type(column)
        if column in current.absent:
            text = f"{column} absent from the capture"
        elif isinstance(values.dtype, pd.StringDtype):
            missing |= (values.str.strip() == "").to_numpy(dtype=bool, na_value=False)
            text = f"{column} is null or blank"
        else:
            text = f"{column} is null"
        checks.append(Check(Reason.MISSING_REQUIRED_FIELD, missing, text))
    return checks


def wrong_types(current: CurrentVersions) -> list[Check]:
    """Values the capture held with another type than the contract's (read as null)."""
    return [
        Check(Reason.WRONG_TYPE, current.wrong_type(column), f"{column} is not of type {dtype}")
        for column, dtype in current.table.columns.items()
    ]


def updated_before_created(current: CurrentVersions) -> Check:
    latest = current.latest
    before = (latest["updated_at"] < latest["created_at"]).to_numpy(dtype=bool, na_value=False)
    return Check(Reason.UPDATED_BEFORE_CREATED, before, "updated_at is before created_at")


def settle(current: CurrentVersions, checks: list[Check], processed_at: dt.datetime) -> Settled:
    """Quarantine the latest versions failing a check; the rest are the partition's rows."""
    latest = current.latest
    failed = np.column_stack([c.failed for c in checks]) if checks else np.zeros((len(latest), 0), bool)
    bad = failed.any(axis=1)
    quarantine = current.quarantine
    if bad.any():
        reasons, details = _explain(failed[bad], checks)
        rejects = current.reject(latest[bad], reasons, details, processed_at)
        quarantine = pd.concat([q for q in (quarantine, rejects) if len(q)], ignore_index=True)
    valid = latest[~bad].reset_index(drop=True)
    conservation = Conservation(
        rows_in=current.rows_in,
        rows_out=len(valid),
        quarantined=len(quarantine),
        dropped_by=dict(current.dropped_by),
    )
    return Settled(valid, quarantine, conservation)


def _explain(failed: np.ndarray, checks: list[Check]) -> tuple[pd.Series, pd.Series]:
    """Reason (first failing check) and detail (every failing check) per row, once per failure pattern."""
    patterns, inverse = np.unique(failed, axis=0, return_inverse=True)
    reasons = [checks[int(np.argmax(p))].reason.value for p in patterns]
    details = [
        "; ".join(f"{c.reason.value}: {c.text}" for c, f in zip(checks, p, strict=True) if f)
        for p in patterns
    ]
    inverse = inverse.reshape(-1)
    return (
        pd.Series(np.asarray(reasons, dtype=object)[inverse], dtype="str"),
        pd.Series(np.asarray(details, dtype=object)[inverse], dtype="str"),
    )

"""The defects the simulator injects, and how often.

Every injected defect is written to the ground-truth ledger (:mod:`de_assets.generation.ledger`) so
later stages can be scored on what they catch and what valid data they wrongly reject.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum


class Defect(StrEnum):
    # shop database
    NEGATIVE_AMOUNT = "negative_amount"
    UNKNOWN_CURRENCY = "unknown_currency"
    NULL_REQUIRED = "null_required"
    HARD_DELETE = "hard_delete"
    # clickstream
    EXACT_DUPLICATE = "exact_duplicate"
    RESENT_EVENT_ID = "resent_event_id"
    LATE_EVENT = "late_event"
    MALFORMED_JSON = "malformed_json"
    WRONG_TYPE = "wrong_type"
    EMPTY_FILE = "empty_file"
    SCHEMA_DRIFT_NEW_FIELD = "schema_drift_new_field"
    SCHEMA_DRIFT_RENAMED_FIELD = "schema_drift_renamed_field"


@dataclass(frozen=True)
class DefectRates:
    """Fractions of records that get each defect (0 disables it). Defaults are a realistic dirty day."""

    # shop database (fractions of the day's new orders / customers)
    negative_amount: float = 0.002
    unknown_currency: float = 0.002
    null_required: float = 0.002
    test_order_deleted: float = 0.002  # hard-deleted one or two days after creation
    account_closed: float = 0.001  # customer hard-deleted 1 to 30 days after sign-up
    # clickstream (fractions of the day's events; empty_file is a chance per day)
    exact_duplicate: float = 0.01
    resent_event_id: float = 0.005
    late_event: float = 0.02
    event_null_required: float = 0.003
    malformed_json: float = 0.002
    wrong_type: float = 0.003
    event_unknown_currency: float = 0.002
    event_negative_amount: float = 0.002
    empty_file: float = 0.3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"defect rate {f.name} must be a fraction between 0 and 1, got {value!r}")

    def scaled(self, factor: float) -> DefectRates:
        """Every rate multiplied by ``factor`` (capped at 1): 0 gives clean data."""
        return DefectRates(**{f.name: min(1.0, getattr(self, f.name) * factor) for f in fields(self)})


NO_DEFECTS = DefectRates().scaled(0.0)

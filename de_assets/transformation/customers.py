"""Clean customers of one creation day: the latest valid version of each customer, pseudonymised.

Ownership of raw rows, duplicates, versions and deletes (closed accounts) follow
:mod:`de_assets.transformation.versions`. The latest version is checked, in this order:

1. ``missing_required_field``: customer_id, full_name, email, country, created_at or updated_at absent
   from the capture, null or blank;
2. ``wrong_type``: a value the capture held with another type;
3. ``invalid_value``: country is not two upper-case letters (ISO 3166-1 alpha-2);
4. ``updated_before_created``.

PII never leaves this function in clear: the output carries keyed tokens
(:func:`de_assets.security.pseudonymise.tokens`) of the customer id, the normalised e-mail address
(trimmed, lower-cased, so one mailbox gets one token) and the full name, plus the key's fingerprint.
Quarantine rows point at the raw row by customer id and never hold a name or an address.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from de_assets.ingestion.source_reader import SHOP_TABLES
from de_assets.quality.conservation import Conservation
from de_assets.security.pseudonymise import PiiKey, tokens
from de_assets.transformation.quarantine import Reason
from de_assets.transformation.rules import Check, required, settle, updated_before_created, wrong_types
from de_assets.transformation.versions import CapturedTable, current_versions

CUSTOMERS_TABLE = CapturedTable.of(
    SHOP_TABLES["customers"],
    asset="transformation/customers",
    raw_asset="ingestion/raw_customers",
    table="customers",
)
_REQUIRED = ("customer_id", "full_name", "email", "country", "created_at", "updated_at")
_COUNTRY = r"[A-Z]{2}"


@dataclass(frozen=True)
class CustomersResult:
    customers: pd.DataFrame
    quarantine: pd.DataFrame
    conservation: Conservation


def build_customers(
    raw: pd.DataFrame,
    day: dt.date,
    *,
    lookahead_days: int,
    key: PiiKey,
    processed_at: dt.datetime,
    first_day: dt.date | None = None,
) -> CustomersResult:
    """Partition ``day`` of ``transformation/customers`` from the raw customer captures of windows day..day+L."""
    current = current_versions(
        raw,
        day,
        lookahead_days=lookahead_days,
        table=CUSTOMERS_TABLE,
        processed_at=processed_at,
        first_day=first_day,
    )
    country = current.latest["country"]
    checks = [
        *required(current, _REQUIRED),
        *wrong_types(current),
        Check(
            Reason.INVALID_VALUE,
            (country.notna() & ~country.str.fullmatch(_COUNTRY)).to_numpy(dtype=bool, na_value=False),
            "country is not an ISO 3166-1 alpha-2 code (two upper-case letters)",
        ),
        updated_before_created(current),
    ]
    settled = settle(current, checks, processed_at)
    valid = settled.valid
    customer_id = valid["customer_id"].astype("int64")
    customers = pd.DataFrame(
        {
            "customer_id": customer_id,
            "customer_token": tokens(key, customer_id.astype("str"), "customer"),
            "email_token": tokens(key, valid["email"].str.strip().str.lower(), "email"),
            "name_token": tokens(key, valid["full_name"], "name"),
            "country": valid["country"].astype("str"),
            **settled.version_columns(processed_at),
            "pii_key_fingerprint": pd.Series(key.fingerprint, index=valid.index, dtype="str"),
        }
    )
    return CustomersResult(customers, settled.quarantine, settled.conservation)

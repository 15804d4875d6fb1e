"""transformation/customers: latest valid version of each customer, pseudonymised, PII never in clear."""

import datetime as dt
import hashlib
import hmac

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from de_assets.quality.models import CustomersModel, QuarantineModel
from de_assets.security.pseudonymise import PiiKey
from de_assets.transformation.customers import build_customers
from de_assets_tests.transformation.captures import (
    CUSTOMER_DTYPES,
    PROCESSED_AT,
    at,
    capture_frame,
    check_partitions,
    day,
    expected_partitions,
    histories,
    simulate_shop,
    tombstone,
    version,
)

SECRET = bytes(range(32))
KEY = PiiKey(SECRET)
VALID = {"full_name": "Ada Lovelace", "email": " Ada.Lovelace@Example.COM ", "country": "GB"}


def token(value: str, purpose: str, secret: bytes = SECRET) -> str:
    """The documented scheme, computed here with nothing but hmac."""
    purpose_key = hmac.new(secret, b"de_assets token purpose:" + purpose.encode(), hashlib.sha256).digest()
    return hmac.new(purpose_key, value.encode(), hashlib.sha256).hexdigest()


def customer(customer_id, created, updated, window, captured, **changes):
    return version("customer_id", customer_id, created, updated, window, captured, **{**VALID, **changes})


def build(rows, partition=0, lookahead=2, key=KEY):
    raw = rows if isinstance(rows, pd.DataFrame) else capture_frame(rows, CUSTOMER_DTYPES)
    return build_customers(raw, day(partition), lookahead_days=lookahead, key=key, processed_at=PROCESSED_AT)


def assert_no_pii(frames, values):
    """No cell of any text column holds a raw name or address (or its normalised form)."""
    needles = {v.strip().lower() for v in values if isinstance(v, str) and v.strip()}
    for frame in frames:
        for column in frame.columns:
            cells = frame[column].dropna().astype(str).str.lower()
            for needle in needles:
                assert not cells.str.contains(needle, regex=False).any(), (column, needle)


OUTPUT_DTYPES = {
    "customer_id": "int64",
    "customer_token": "str",
    "email_token": "str",
    "name_token": "str",
    "country": "str",
    "created_at": "datetime64[us, UTC]",
    "updated_at": "datetime64[us, UTC]",
    "versions_seen": "int64",
    "captured_at": "datetime64[us, UTC]",
    "processed_at": "datetime64[us, UTC]",
    "pii_key_fingerprint": "str",
}


def test_tokens_replace_pii_and_the_latest_version_wins():
    rows = [
        customer(7, at(0, 8), at(0, 8), 0, at(1), email="ada@example.com"),
        customer(7, at(0, 8), at(1, 9), 1, at(2)),
        customer(7, at(0, 8), at(1, 9), 2, at(3)),  # the same version captured again
        customer(
            8, at(0, 9), at(0, 9), 0, at(1), full_name="Grace Hopper", email="grace@example.org", country="US"
        ),
    ]
    result = build(rows)
    customers = result.customers.set_index("customer_id")
    ada = customers.loc[7]
    assert ada["customer_token"] == token("7", "customer")
    assert ada["email_token"] == token("ada.lovelace@example.com", "email")  # trimmed, lower-cased
    assert ada["name_token"] == token("Ada Lovelace", "name")
    assert ada["email_token"] != hashlib.sha256(b"ada.lovelace@example.com").hexdigest()
    assert ada["versions_seen"] == 3
    assert ada["updated_at"] == pd.Timestamp("2024-01-02 09:00", tz="UTC")
    assert ada["pii_key_fingerprint"] == KEY.fingerprint
    assert customers.loc[8, "country"] == "US"
    assert result.conservation.dropped_by == {"duplicate": 1, "superseded": 1, "deleted": 0}
    assert (result.conservation.rows_in, result.conservation.rows_out) == (4, 2)
    assert {name: str(dtype) for name, dtype in result.customers.dtypes.items()} == OUTPUT_DTYPES
    assert list(result.customers.columns) == list(OUTPUT_DTYPES)
    CustomersModel.validate(result.customers)
    pii = ["Ada Lovelace", "ada@example.com", "Grace Hopper", "grace@example.org", VALID["email"]]
    assert_no_pii([result.customers, result.quarantine], pii)


def test_another_key_gives_other_tokens():
    rows = [customer(7, at(0), at(0), 0, at(1))]
    first, second = build(rows), build(rows, key=PiiKey(bytes(range(1, 33))))
    for column in ("customer_token", "email_token", "name_token", "pii_key_fingerprint"):
        assert first.customers.loc[0, column] != second.customers.loc[0, column]
    assert first.customers.loc[0, "email_token"] == build(rows).customers.loc[0, "email_token"]


def test_invalid_customers_are_quarantined_without_their_pii():
    rows = [
        customer(1, at(0), at(0), 0, at(1), email=None),
        customer(2, at(0), at(0), 0, at(1), full_name="  "),
        customer(3, at(0), at(0), 0, at(1), country="gb"),
        customer(4, at(0), at(0), 0, at(1), country="GBR", email=None),
        customer(5, at(0, 12), at(0, 11), 0, at(1)),
        customer(6, at(0), at(0), 0, at(1), country=None),
        customer(7, at(0), at(0), 0, at(1)),
    ]
    result = build(rows)
    q = result.quarantine
    assert dict(zip(q["source_key"], q["reason"], strict=True)) == {
        "1": "missing_required_field",
        "2": "missing_required_field",
        "3": "invalid_value",
        "4": "missing_required_field",
        "5": "updated_before_created",
        "6": "missing_required_field",
    }
    details = dict(zip(q["source_key"], q["detail"], strict=True))
    assert details["4"] == (
        "missing_required_field: email is null or blank; "
        "invalid_value: country is not an ISO 3166-1 alpha-2 code (two upper-case letters)"
    )
    assert set(q["asset"]) == {"transformation/customers"}
    assert set(q["raw_asset"]) == {"ingestion/raw_customers"}
    assert set(q["source_table"]) == {"customers"}
    assert result.customers["customer_id"].tolist() == [7]
    assert result.conservation.balanced
    QuarantineModel.validate(q)
    assert_no_pii([q, result.customers], ["Ada Lovelace", VALID["email"]])


def test_a_closed_account_is_dropped_as_deleted():
    rows = [
        customer(1, at(0), at(0), 0, at(1), email=None),
        tombstone("customer_id", 1, at(0), 2, at(3)),
        customer(2, at(0), at(0), 0, at(1)),
    ]
    result = build(rows)
    assert result.customers["customer_id"].tolist() == [2]
    assert result.quarantine.empty
    assert result.conservation.dropped_by == {"duplicate": 0, "superseded": 0, "deleted": 2}


def test_a_missing_email_column_quarantines_every_customer():
    raw = capture_frame(
        [customer(1, at(0), at(0), 0, at(1)), customer(2, at(0), at(0), 0, at(1))], CUSTOMER_DTYPES
    )
    result = build(raw.drop(columns=["email"]))
    assert result.customers.empty
    assert (
        result.quarantine["detail"].tolist() == ["missing_required_field: email absent from the capture"] * 2
    )
    CustomersModel.validate(result.customers)


# --- property: the union of the partitions, pseudonymised -----------------------------------------

NAMES = ["Ada Lovelace", "Grace Hopper", "  ", None]
EMAILS = ["ada@example.com", " Grace@Example.org", "", None]
CONTENT = ["full_name", "email", "country"]
_customers = st.fixed_dictionaries(
    {
        "full_name": st.sampled_from(NAMES),
        "email": st.sampled_from(EMAILS),
        "country": st.sampled_from(["GB", "DE", "gb", "GER", None]),
    }
)


def first_failure(row):
    if any(row[c] is None or not row[c].strip() for c in CONTENT):
        return "missing_required_field"
    if len(row["country"]) != 2 or not row["country"].isupper():
        return "invalid_value"
    if row["updated_at"] < row["created_at"]:
        return "updated_before_created"
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories("customer_id", _customers))
def test_partitions_hold_the_latest_valid_customers_pseudonymised(history):
    lookahead, rows = history
    expected = expected_partitions(rows, "customer_id", lookahead, CONTENT, first_failure)
    customers, quarantine = check_partitions(
        lambda raw, d: build_customers(raw, d, lookahead_days=lookahead, key=KEY, processed_at=PROCESSED_AT),
        "customers",
        rows,
        CUSTOMER_DTYPES,
        expected,
    )
    customers = customers.set_index("customer_id")
    assert sorted(customers.index) == sorted(expected.kept)
    for customer_id, row in expected.kept.items():
        got = customers.loc[customer_id]
        assert got["email_token"] == token(row["email"].strip().lower(), "email")
        assert got["name_token"] == token(row["full_name"], "name")
        assert got["country"] == row["country"]
        assert got["versions_seen"] == expected.versions_seen[customer_id]
    assert_no_pii([customers.reset_index(), quarantine], NAMES + EMAILS)


# --- the simulated shop ---------------------------------------------------------------------------


def test_simulated_customers_null_emails_quarantined_closed_accounts_gone(tmp_path):
    shop = simulate_shop(tmp_path)
    raw = shop.raw_customers
    results = [
        build_customers(raw, d, lookahead_days=len(shop.days), key=KEY, processed_at=PROCESSED_AT)
        for d in shop.days
    ]
    assert all(r.conservation.balanced for r in results)
    assert sum(r.conservation.rows_in for r in results) == len(raw)
    customers = pd.concat([r.customers for r in results], ignore_index=True)
    quarantine = pd.concat([r.quarantine for r in results], ignore_index=True)
    CustomersModel.validate(customers)
    QuarantineModel.validate(quarantine)

    ledger = shop.ledger[shop.ledger["table"] == "customers"]
    closed = set(ledger.loc[ledger["defect"] == "hard_delete", "key"].astype(int))
    null_email = set(ledger.loc[ledger["defect"] == "null_required", "key"].astype(int)) - closed
    assert closed
    assert null_email
    assert set(zip(quarantine["source_key"].astype(int), quarantine["reason"], strict=True)) == {
        (k, "missing_required_field") for k in null_email
    }
    assert closed.isdisjoint(customers["customer_id"])
    assert closed.isdisjoint(quarantine["source_key"].astype(int))
    final = shop.final_customers[~shop.final_customers["customer_id"].isin(null_email)]
    assert len(customers) == len(final)
    published = customers.set_index("customer_id").loc[final["customer_id"]]
    assert published["email_token"].tolist() == [token(e.strip().lower(), "email") for e in final["email"]]
    assert published["name_token"].tolist() == [token(n, "name") for n in final["full_name"]]
    assert published["country"].tolist() == final["country"].tolist()
    assert_no_pii(
        [customers, quarantine], raw["email"].dropna().tolist()[:50] + raw["full_name"].unique().tolist()
    )


def test_a_day_without_captures_is_empty():
    result = build_customers(
        pd.DataFrame(), dt.date(2024, 1, 1), lookahead_days=1, key=KEY, processed_at=PROCESSED_AT
    )
    assert result.customers.empty
    assert result.conservation.rows_in == 0
    CustomersModel.validate(result.customers)

"""The events contract: each violation's reason and detail, and a property test against a plain-Python reading."""

import datetime as dt
import json
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.ingestion.clickstream_files import RAW_EVENTS_ASSET
from de_assets.transformation.event_contract import EVENT_TYPES, check_contract
from de_assets.transformation.events import EVENT_COLUMNS, EVENTS_ASSET
from de_assets.transformation.quarantine import QUARANTINE_COLUMNS

from .clickstream_lines import DAY, PROCESSED, RATES, build, event, has_layout, purchase, raw_of


def only_reject(value: dict[str, Any] | str) -> pd.Series:
    result = build(raw_of({(DAY, 1): [value, event(event_id="fine")]}))
    assert result.events["event_id"].tolist() == ["fine"]
    assert len(result.quarantine) == 1
    assert result.conservation.balanced
    return result.quarantine.iloc[0]


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (event(event_id=None), "null_required_field", "event_id is null"),
        (event(session_id=None), "null_required_field", "session_id is null"),
        (event(event_type=...), "missing_required_field", "event_type is missing"),
        (event(device=..., device_type="mobile"), "missing_required_field", "renamed to device_type"),
        (
            event(device=..., device_type="x", referrer="y"),
            "missing_required_field",
            "renamed to device_type",
        ),
        (event(device=...), "missing_required_field", "device is missing"),
        (
            event(device=..., kind="m"),
            "missing_required_field",
            "device is missing (probably renamed to kind)",
        ),
        (
            event(device=..., session_id=..., kind="m"),
            "missing_required_field",
            "session_id is missing; device is missing",
        ),
        (event(customer_id="123"), "wrong_type", "customer_id is not a JSON integer"),
        (event(customer_id=True), "wrong_type", "customer_id"),
        (event(customer_id=7.0), "wrong_type", "customer_id"),
        (event(customer_id=2**63), "invalid_value", "customer_id is out of the 64-bit range"),
        (event(event_time=1704283200000), "wrong_type", "event_time is not a JSON string"),
        (event(event_time="2024-01-03 12:00:00Z"), "invalid_value", "event_time"),
        (event(event_time="2024-01-03T12:00:00"), "invalid_value", "event_time"),
        (event(event_time="2024-02-30T12:00:00Z"), "invalid_value", "event_time"),
        (event(event_type="click"), "invalid_value", "event_type is unknown"),
        (event(event_id=""), "invalid_value", "event_id is empty"),
        (event(page=5), "wrong_type", "page is not a JSON string"),
        (event(device=["mobile"]), "wrong_type", "device"),
        (purchase(amount="12,50"), "wrong_type", "amount is not a JSON number"),
        (purchase(amount=False), "wrong_type", "amount"),
        (purchase(amount=...), "missing_required_field", "amount is missing"),
        (purchase(amount=None), "null_required_field", "amount is null"),
        (purchase(currency=...), "missing_required_field", "currency is missing"),
        (purchase(amount=-3.5), "negative_amount", "amount is negative"),
        (purchase(currency="XXQ"), "unknown_currency", "currency XXQ has no rate"),
        (json.dumps(purchase())[:-1] + ', "amount": 1e400}', "invalid_value", "a field name occurs more"),
        (
            json.dumps(event(device=...))[:-1] + ', "device": "a", "device": "b"}',
            "invalid_value",
            "occurs more",
        ),
        (
            json.dumps(event())[:-1] + ', "x": 1, "x": 2}',
            "invalid_value",
            "a field name occurs more than once",
        ),
        (json.dumps(purchase()).replace("12.5", "1e400"), "invalid_value", "amount is out of range"),
        (json.dumps(event()).replace('"/"', '"\\ud800"'), "invalid_value", "not readable"),
    ],
)
def test_contract_violations(value, reason, detail):
    rejected = only_reject(value)
    assert rejected["reason"] == reason
    assert detail in rejected["detail"]
    assert rejected["asset"] == EVENTS_ASSET
    assert rejected["raw_asset"] == RAW_EVENTS_ASSET
    assert (rejected["partition"], rejected["raw_partition"], rejected["line_number"]) == (
        "2024-01-03",
    ) * 2 + (1,)


def test_a_line_with_several_problems_gets_the_first_reason_and_all_details():
    rejected = only_reject(event(device=..., device_type="mobile", customer_id="7", event_type=None))
    assert rejected["reason"] == "missing_required_field"
    assert rejected["detail"] == (
        "device is missing (probably renamed to device_type); event_type is null; "
        "customer_id is not a JSON integer"
    )


def test_valid_values_are_typed_without_coercion():
    lines = [
        event(event_id="a", page='/search?q="x"\\é', customer_id=None),
        event(event_id="b", event_time="2024-01-03T13:30:00.123456+01:00", customer_id=-0, page=...),
        purchase(event_id="c", amount=20, currency="GBP", referrer={"url": "https://x/", "n": [1, 2.5]}),
        purchase(event_id="d", customer_id=2**63 - 1, campaign=None),
    ]
    result = build(raw_of({(DAY, 1): lines}))
    assert has_layout(result.events, EVENT_COLUMNS)
    events = result.events.set_index("event_id")
    assert events.loc["a", "page"] == '/search?q="x"\\é'
    assert pd.isna(events.loc["a", "customer_id"])
    assert pd.isna(events.loc["b", "page"])
    assert events.loc["b", "event_time"] == pd.Timestamp("2024-01-03T12:30:00.123456Z")
    assert events.loc["b", "customer_id"] == 0
    assert events.loc["d", "customer_id"] == 2**63 - 1
    assert (events.loc["c", "amount"], events.loc["c", "amount_eur"]) == (20.0, 20.0 * 1.15)
    assert events.loc["d", "amount_eur"] == 12.5 * 0.9
    assert pd.isna(events.loc["a", "amount_eur"])
    assert json.loads(events.loc["c", "extra_fields"]) == {"referrer": {"url": "https://x/", "n": [1, 2.5]}}
    assert json.loads(events.loc["d", "extra_fields"]) == {"campaign": None}
    assert pd.isna(events.loc["a", "extra_fields"])
    assert result.new_fields == {"campaign": 1, "referrer": 1}
    assert result.quarantine.empty
    assert has_layout(result.quarantine, QUARANTINE_COLUMNS)
    assert set(result.events["processed_at"]) == {pd.Timestamp(PROCESSED)}
    assert set(result.events["ingested_at"]) == {pd.Timestamp("2024-01-03T21:00Z")}


# --- property: the contract agrees with a plain reading of arbitrary objects in Python

ABSENT = object()
REQUIRED = {"event_id", "event_time", "event_type", "session_id", "device"}
FOR_PURCHASES = {"amount", "currency"}
TEXT_FIELDS = {"event_id", "event_time", "event_type", "session_id", "device", "page", "currency"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
moments = st.datetimes(dt.datetime(1700, 1, 1), dt.datetime(2200, 1, 1), timezones=st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
))  # fmt: skip
times = st.tuples(moments, st.sampled_from(["auto", "seconds", "milliseconds"]), st.booleans()).map(
    lambda t: t[0].isoformat(timespec=t[1]).replace("+00:00", "Z" if t[2] else "+00:00")
)
odd_times = times.map(lambda t: t[:19]) | times.map(lambda t: t.replace("T", " ")) | st.text(max_size=25)
VALID = {
    "event_id": st.text(min_size=1),
    "event_time": times,
    "event_type": st.sampled_from(EVENT_TYPES),
    "session_id": st.text(min_size=1),
    "device": st.text(),
    "customer_id": st.just(ABSENT) | st.none() | st.integers(-(2**63), 2**63 - 1),
    "page": st.just(ABSENT) | st.none() | st.text(),
    "amount": st.floats(0, 1e12) | st.integers(0, 10**6),
    "currency": st.sampled_from(sorted(RATES)),
}
BROKEN = {name: st.just(ABSENT) | json_values for name in VALID} | {
    "event_time": st.just(ABSENT) | st.none() | odd_times | st.integers(),
    "event_type": st.just(ABSENT) | st.none() | st.text(),
    "customer_id": json_values | st.integers(2**63 - 10, 2**70) | st.integers(-(2**70), -(2**63) + 10),
    "amount": json_values | st.floats(-1e12, 0) | st.integers(10**300, 10**400),
    "currency": json_values | st.text(max_size=4),
}


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events: a few fields (often none) drawn from anything, plus unknown fields."""
    broken = draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
    values = {name: draw(BROKEN[name] if name in broken else VALID[name]) for name in VALID}
    extras = draw(st.dictionaries(st.text(max_size=5).map(lambda s: "x_" + s), json_values, max_size=2))
    return {k: v for k, v in values.items() if v is not ABSENT} | extras


def plain_reasons(obj: dict[str, Any]) -> set[str]:
    """Every rule the object breaks, read with nothing but Python."""
    found = set()
    is_purchase = obj.get("event_type") == "purchase"
    for name in VALID:
        needed = name in REQUIRED or (is_purchase and name in FOR_PURCHASES)
        value = obj.get(name, ABSENT)
        if value is ABSENT or value is None:
            if needed:
                found.add("missing_required_field" if value is ABSENT else "null_required_field")
            continue
        if name in TEXT_FIELDS:
            typed = isinstance(value, str)
        elif name == "customer_id":
            typed = isinstance(value, int) and not isinstance(value, bool)
        else:
            typed = isinstance(value, int | float) and not isinstance(value, bool)
        if not typed:
            found.add("wrong_type")
        elif (
            (name == "customer_id" and not -(2**63) <= value < 2**63)
            or (name == "event_type" and value not in EVENT_TYPES)
            or (name in ("event_id", "session_id") and not value)
            or (name == "event_time" and not plain_time(value))
            or (name == "amount" and abs(value) > 1.7976931348623157e308)
        ):
            found.add("invalid_value")
        elif name == "amount" and value < 0:
            found.add("negative_amount")
        elif name == "currency" and value not in RATES:
            found.add("unknown_currency")
    return found


def plain_time(text: str) -> bool:
    """ISO 8601 with a date, "T", a time and a zone (the first and last year left out: UTC may leave 1-9999)."""
    if len(text) < 20 or text[10] != "T" or not text[:4].isdigit():
        return False
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None and 1 < moment.year < 9999


@settings(max_examples=150, deadline=None)
@given(st.lists(objects(), min_size=1, max_size=6), st.booleans())
def test_the_contract_agrees_with_a_plain_reading(objs, ascii_only):
    payloads = pd.Series([json.dumps(o, ensure_ascii=ascii_only) for o in objs], dtype="str")
    check = check_contract(payloads, rates=RATES)
    for i, obj in enumerate(objs):
        expected = plain_reasons(obj)
        reason = check.reason.iloc[i]
        if expected:
            assert reason in expected, (obj, reason, check.detail.iloc[i])
            continue
        assert pd.isna(reason), (obj, reason, check.detail.iloc[i])
        row = check.values.iloc[i]
        for name in ("event_id", "session_id", "device", "event_type", "page", "currency", "customer_id"):
            value = obj.get(name)
            assert (pd.isna(row[name]) and value is None) or row[name] == value, name
        assert row["event_time"] == pd.Timestamp(obj["event_time"]).floor("us")
        assert (pd.isna(row["amount"]) and obj.get("amount") is None) or row["amount"] == float(obj["amount"])
        extras = {k: v for k, v in obj.items() if k not in VALID}
        assert (json.loads(row["extra_fields"]) if pd.notna(row["extra_fields"]) else {}) == extras
    listed = check.unknown_fields.groupby("row")["field"].apply(set).to_dict()
    assert listed == {i: set(o) - set(VALID) for i, o in enumerate(objs) if set(o) - set(VALID)}


def assert_same_check(chunked, whole):
    pd.testing.assert_frame_equal(chunked.values, whole.values, check_exact=True)
    pd.testing.assert_series_equal(chunked.reason, whole.reason, check_exact=True)
    pd.testing.assert_series_equal(chunked.detail, whole.detail, check_exact=True)
    pd.testing.assert_frame_equal(chunked.unknown_fields, whole.unknown_fields, check_exact=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(objects(), min_size=0, max_size=7), st.integers(1, 4))
def test_checking_in_chunks_gives_the_result_of_one_chunk(objs, chunk_lines):
    lines = [json.dumps(o) for o in objs] + ["[1]", '{"event_id": "a", "event_id": "b"}', "not json"]
    payloads = pd.Series(lines, index=range(100, 100 + len(lines)), dtype="str")
    whole = check_contract(payloads, rates=RATES, chunk_lines=len(lines))
    assert_same_check(check_contract(payloads, rates=RATES, chunk_lines=chunk_lines), whole)


def test_unknown_fields_keep_their_line_across_chunks():
    lines = [json.dumps(event(event_id=str(i), **{f"extra_{i % 3}": i})) for i in range(7)]
    check = check_contract(pd.Series(lines, dtype="str"), rates=RATES, chunk_lines=2)
    assert check.unknown_fields.to_dict("list") == {
        "row": list(range(7)),
        "field": [f"extra_{i % 3}" for i in range(7)],
    }
    assert check.values["extra_fields"].tolist() == [f'{{"extra_{i % 3}":{i}}}' for i in range(7)]
    assert check.reason.isna().all()
    empty = check_contract(pd.Series([], dtype="str"), rates=RATES, chunk_lines=2)
    assert empty.values.dtypes.equals(check.values.dtypes)
    with pytest.raises(ValueError, match="chunk_lines"):
        check_contract(pd.Series(lines, dtype="str"), rates=RATES, chunk_lines=0)

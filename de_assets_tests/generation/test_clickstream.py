"""Clickstream generation, checked by parsing the delivered files line by line with ``json.loads``."""

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from de_assets.generation.clickstream import (
    ClickstreamDay,
    clickstream_file_prefix,
    generate_clickstream_day,
    land_clickstream_day,
)
from de_assets.generation.defects import NO_DEFECTS, Defect, DefectRates
from de_assets.generation.landing import LandingFolder
from de_assets.generation.ledger import LEDGER_COLUMNS, read_ledger, write_ledger

DAY = dt.date(2024, 1, 3)
CUSTOMERS = np.arange(1001, 1501)
REQUIRED = ("event_id", "event_time", "event_type", "session_id")
CURRENCIES = {"EUR", "USD", "GBP"}
EVENT_TYPES = {"page_view", "search", "add_to_cart", "purchase"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Rates high enough for every defect to show up many times in a few thousand events.
DIRTY = DefectRates().scaled(5)


def generate(day: dt.date = DAY, **kwargs: Any) -> ClickstreamDay:
    params: dict[str, Any] = {"seed": 11, "events_per_day": 4000, "customer_ids": CUSTOMERS} | kwargs
    return generate_clickstream_day(day, **params)


@dataclass
class Line:
    file: str
    line: int
    raw: bytes
    record: dict[str, Any] | None  # None when the line is not valid JSON


def lines_of(delivery: ClickstreamDay) -> list[Line]:
    """Every line of every file, in delivery order."""
    found = []
    for name, content in delivery.files.items():
        assert content == b"" or content.endswith(b"\n"), name
        for number, raw in enumerate(content.splitlines(), start=1):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                record = None
            found.append(Line(name, number, raw, record))
    return found


def ledger_by_line(delivery: ClickstreamDay) -> dict[tuple[str, int], pd.Series]:
    rows = delivery.ledger[delivery.ledger["line"].notna()]
    places = list(zip(rows["file"], rows["line"].astype(int), strict=True))
    assert len(places) == len(set(places)), "a line has more than one ledger row"
    return {place: row for place, (_, row) in zip(places, rows.iterrows(), strict=True)}


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def valid_event_problems(record: dict[str, Any], day: dt.date, drift: bool) -> list[str]:
    """Why ``record`` is not a valid event of ``day`` (empty when it is one)."""
    problems = []
    device = "device_type" if drift else "device"
    expected = {"event_id", "event_time", "customer_id", "session_id", "event_type", "page", device}
    expected |= {"amount", "currency"} | ({"referrer"} if drift else set())
    if set(record) != expected:
        problems.append(f"fields {sorted(record)}")
    if any(record.get(f) is None for f in REQUIRED):
        problems.append("null required field")
    if not (isinstance(record.get("event_id"), str) and re.fullmatch(r"[0-9a-f]{32}", record["event_id"])):
        problems.append("event_id")
    stamp = record.get("event_time")
    if not (isinstance(stamp, str) and TIME.match(stamp)):
        problems.append("event_time")
    elif dt.date.fromisoformat(stamp[:10]) != day:
        problems.append("event_time not on the delivery day")
    customer = record.get("customer_id")
    if not (customer is None or (isinstance(customer, int) and not isinstance(customer, bool))):
        problems.append("customer_id type")
    if not isinstance(record.get("session_id"), str) or record.get("event_type") not in EVENT_TYPES:
        problems.append("session_id or event_type")
    if not isinstance(record.get("page"), str) or record.get(device) not in {"mobile", "desktop", "tablet"}:
        problems.append("page or device")
    if record.get("event_type") == "purchase":
        amount = record.get("amount")
        if not is_number(amount) or amount < 0 or round(amount, 2) != amount:
            problems.append("amount")
        if record.get("currency") not in CURRENCIES:
            problems.append("currency")
    elif record.get("amount") is not None or record.get("currency") is not None:
        problems.append("amount or currency outside a purchase")
    return problems


@pytest.fixture(scope="module")
def dirty() -> ClickstreamDay:
    return generate(rates=DIRTY, schema_drift_day=DAY)


def test_same_inputs_give_identical_bytes():
    first, second = generate(rates=DIRTY), generate(rates=DIRTY)
    assert first.files == second.files
    pd.testing.assert_frame_equal(first.ledger, second.ledger)


@pytest.mark.parametrize(
    "change", [{"seed": 12}, {"day": DAY + dt.timedelta(days=1)}, {"events_per_day": 4001}]
)
def test_different_inputs_give_different_files(change):
    base = generate(rates=DIRTY)
    other = generate(**({"rates": DIRTY} | change))
    assert [c for c in base.files.values() if c] != [c for c in other.files.values() if c]
    base_ids = {line.record["event_id"] for line in lines_of(base) if line.record}
    other_ids = {line.record["event_id"] for line in lines_of(other) if line.record}
    assert not base_ids & other_ids - {None}


def test_files_are_named_after_the_delivery_day_and_cover_several_batches():
    delivery = generate(rates=NO_DEFECTS, batches=6)
    names = list(delivery.files)
    assert names == [f"clickstream_2024-01-03_{i:02d}.jsonl" for i in range(1, 7)]
    assert all(name.startswith(clickstream_file_prefix(DAY)) for name in names)
    counts = [content.count(b"\n") for content in delivery.files.values()]
    assert sum(counts) == 4000
    assert max(counts) - min(counts) <= 1
    # Batches follow arrival order: each file's events are later than the previous file's, roughly.
    times = pd.DataFrame([(ln.file, pd.Timestamp(ln.record["event_time"])) for ln in lines_of(delivery)])
    medians = times.groupby(0)[1].median()
    assert medians.index.tolist() == names
    assert medians.is_monotonic_increasing


def test_a_clean_day_has_only_valid_events_and_an_empty_ledger():
    delivery = generate(rates=NO_DEFECTS)
    assert delivery.ledger.empty
    assert list(delivery.ledger.columns) == LEDGER_COLUMNS
    lines = lines_of(delivery)
    assert len(lines) == delivery.events == 4000
    assert all(ln.record is not None and not valid_event_problems(ln.record, DAY, False) for ln in lines)
    ids = [ln.record["event_id"] for ln in lines]
    assert len(set(ids)) == len(ids)
    customers = [ln.record["customer_id"] for ln in lines]
    assert {c for c in customers if c is not None} <= set(CUSTOMERS.tolist())
    assert 0.2 < sum(c is None for c in customers) / len(customers) < 0.4  # anonymous browsing
    types = pd.Series([ln.record["event_type"] for ln in lines]).value_counts(normalize=True)
    assert types["page_view"] > types["search"] > types["add_to_cart"] > types["purchase"] > 0.01
    sessions = pd.DataFrame([ln.record for ln in lines]).groupby("session_id")["event_time"]
    spans = sessions.agg(lambda t: pd.Timestamp(t.max()) - pd.Timestamp(t.min()))
    assert sessions.ngroups < 4000 / 3
    assert spans.median() < pd.Timedelta(minutes=30)


def test_every_ledger_row_points_at_a_line_with_that_defect(dirty):
    lines = lines_of(dirty)
    seen_raw: set[bytes] = set()
    seen_by_id: dict[str, dict[str, Any]] = {}
    ledger = ledger_by_line(dirty)
    checked, visited = set(), 0
    for ln in lines:
        entry = ledger.get((ln.file, ln.line))
        if entry is not None:
            visited += 1
            defect, record = entry["defect"], ln.record
            checked.add(defect)
            if defect == Defect.MALFORMED_JSON:
                assert record is None
                assert entry["key"].encode() in ln.raw  # the id comes first and survives the cut
                continue
            assert record is not None, (defect, ln.raw)
            assert pd.isna(entry["key"]) or entry["key"] == record["event_id"]
            if defect == Defect.EXACT_DUPLICATE:
                assert ln.raw in seen_raw
            elif defect == Defect.RESENT_EVENT_ID:
                assert record["event_id"] in seen_by_id
                assert seen_by_id[record["event_id"]] != record
            elif defect == Defect.LATE_EVENT:
                own_day = dt.date.fromisoformat(record["event_time"][:10])
                assert 1 <= (DAY - own_day).days <= 3
                assert entry["detail"] == own_day.isoformat()
                assert not valid_event_problems(record, own_day, True)
            elif defect == Defect.NULL_REQUIRED:
                nulls = [f for f in REQUIRED if record[f] is None]
                assert len(nulls) == 1
                assert nulls[0] in entry["detail"]
            elif defect == Defect.WRONG_TYPE:
                assert (
                    isinstance(record["customer_id"], str)
                    or isinstance(record["amount"], str)
                    or is_number(record["event_time"])
                )
            elif defect == Defect.UNKNOWN_CURRENCY:
                assert record["event_type"] == "purchase"
                assert record["currency"] not in CURRENCIES
            elif defect == Defect.NEGATIVE_AMOUNT:
                assert record["event_type"] == "purchase"
                assert record["amount"] < 0
            else:
                pytest.fail(f"unexpected line-level defect {defect}")
        seen_raw.add(ln.raw)
        if ln.record and ln.record.get("event_id"):
            seen_by_id.setdefault(ln.record["event_id"], ln.record)
    line_defects = {
        Defect.EXACT_DUPLICATE, Defect.RESENT_EVENT_ID, Defect.LATE_EVENT, Defect.NULL_REQUIRED,
        Defect.MALFORMED_JSON, Defect.WRONG_TYPE, Defect.UNKNOWN_CURRENCY, Defect.NEGATIVE_AMOUNT,
    }  # fmt: skip
    assert checked == line_defects
    assert visited == len(ledger), "a ledger row points at a line that does not exist"
    file_level = dirty.ledger.loc[dirty.ledger["line"].isna(), "defect"]
    assert set(file_level) == {
        Defect.EMPTY_FILE,
        Defect.SCHEMA_DRIFT_NEW_FIELD,
        Defect.SCHEMA_DRIFT_RENAMED_FIELD,
    }


def test_every_line_without_a_ledger_row_is_a_valid_new_event(dirty):
    ledger = ledger_by_line(dirty)
    seen_ids: set[str] = set()
    unledgered = 0
    for ln in lines_of(dirty):
        if (ln.file, ln.line) not in ledger:
            unledgered += 1
            assert ln.record is not None, ln.raw
            assert not valid_event_problems(ln.record, DAY, drift=True), ln.raw
            assert ln.record["event_id"] not in seen_ids, "an unledgered repeat of an event id"
        if ln.record and isinstance(ln.record.get("event_id"), str):
            seen_ids.add(ln.record["event_id"])
    assert unledgered > 0.8 * dirty.events


def test_lines_are_conserved(dirty):
    lines = lines_of(dirty)
    copies = dirty.ledger["defect"].isin([Defect.EXACT_DUPLICATE, Defect.RESENT_EVENT_ID])
    assert len(lines) == dirty.events + copies.sum()
    copy_places = set(zip(dirty.ledger.loc[copies, "file"], dirty.ledger.loc[copies, "line"], strict=True))
    genuine = [ln for ln in lines if (ln.file, ln.line) not in copy_places]
    assert len(genuine) == dirty.events
    # A genuine event's id is on its line, or in the ledger when the line is broken JSON.
    keys = dict(
        zip(zip(dirty.ledger["file"], dirty.ledger["line"], strict=True), dirty.ledger["key"], strict=True)
    )
    ids = [ln.record["event_id"] if ln.record else keys[(ln.file, ln.line)] for ln in genuine]
    known = [i for i in ids if isinstance(i, str)]
    assert len(known) == len(set(known))
    assert len(ids) - len(known) == (dirty.ledger["detail"] == "event_id is null").sum()
    copied_ids = {ln.record["event_id"] for ln in lines if (ln.file, ln.line) in copy_places}
    assert copied_ids <= set(known)


def test_defect_counts_land_near_their_rates():
    n = 20_000
    rates = DefectRates(empty_file=0.0)
    counts = generate(events_per_day=n, rates=rates).ledger["defect"].value_counts()
    expected = {
        Defect.EXACT_DUPLICATE: rates.exact_duplicate,
        Defect.RESENT_EVENT_ID: rates.resent_event_id,
        Defect.LATE_EVENT: rates.late_event,
        Defect.NULL_REQUIRED: rates.event_null_required,
        Defect.MALFORMED_JSON: rates.malformed_json,
        Defect.WRONG_TYPE: rates.wrong_type,
        Defect.UNKNOWN_CURRENCY: rates.event_unknown_currency,
        Defect.NEGATIVE_AMOUNT: rates.event_negative_amount,
    }
    for defect, rate in expected.items():
        if defect == Defect.LATE_EVENT:  # whole sessions, as many as fit in the target
            assert 0.9 * rate * n <= counts[defect] <= rate * n
        else:
            assert counts[defect] == round(rate * n), defect
    assert set(counts.index) == set(expected)


@pytest.mark.parametrize("seed", range(5))
def test_an_empty_file_is_delivered_exactly_when_its_rate_says(seed):
    always = generate(seed=seed, events_per_day=300, rates=DefectRates(empty_file=1.0))
    empty = [name for name, content in always.files.items() if content == b""]
    assert len(empty) == 1
    assert len(always.files) == 5
    rows = always.ledger[always.ledger["defect"] == Defect.EMPTY_FILE]
    assert rows["file"].tolist() == empty
    assert rows["line"].isna().all()
    never = generate(seed=seed, events_per_day=300, rates=DefectRates(empty_file=0.0))
    assert all(never.files.values())
    assert len(never.files) == 4
    assert not (never.ledger["defect"] == Defect.EMPTY_FILE).any()


@pytest.mark.parametrize(("offset", "drifted"), [(-1, False), (0, True), (5, True)])
def test_schema_drift_applies_from_its_day_on(offset, drifted):
    day = DAY + dt.timedelta(days=offset)
    delivery = generate(day, rates=DefectRates(empty_file=1.0), schema_drift_day=DAY)
    records = [ln.record for ln in lines_of(delivery) if ln.record]
    assert all(("referrer" in r) is drifted for r in records)
    assert all(("device_type" in r) is drifted and ("device" in r) is not drifted for r in records)
    for defect in (Defect.SCHEMA_DRIFT_NEW_FIELD, Defect.SCHEMA_DRIFT_RENAMED_FIELD):
        rows = delivery.ledger[delivery.ledger["defect"] == defect]
        expected = sorted(name for name, content in delivery.files.items() if content) if drifted else []
        assert sorted(rows["file"]) == expected
        assert rows["line"].isna().all()
    assert not generate(day, rates=NO_DEFECTS).ledger["defect"].str.startswith("schema_drift").any()


def test_purchase_defects_take_other_events_when_purchases_run_short():
    rates = DefectRates(**{f: 0.0 for f in ("exact_duplicate", "resent_event_id", "late_event",
                                            "event_null_required", "malformed_json", "wrong_type", "empty_file")},
                        event_unknown_currency=0.2, event_negative_amount=0.2)  # fmt: skip
    delivery = generate(events_per_day=1000, rates=rates)
    counts = delivery.ledger["defect"].value_counts()
    assert counts[Defect.UNKNOWN_CURRENCY] == 200
    assert counts[Defect.NEGATIVE_AMOUNT] == 200


def test_the_ledger_is_writable_and_keeps_its_rows(dirty, tmp_path):
    assert list(dirty.ledger.columns) == LEDGER_COLUMNS
    assert (dirty.ledger["day"] == "2024-01-03").all()
    assert (dirty.ledger["system"] == "clickstream").all()
    write_ledger(tmp_path, DAY, "clickstream", dirty.ledger)
    back = read_ledger(tmp_path)
    assert len(back) == len(dirty.ledger)
    assert back["line"].dropna().astype(int).tolist() == dirty.ledger["line"].dropna().astype(int).tolist()


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="defect rates"):
        generate(rates=DefectRates(exact_duplicate=0.6, resent_event_id=0.6))
    with pytest.raises(ValueError, match="customer_ids"):
        generate(customer_ids=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="batches"):
        generate(batches=0)


def test_a_day_without_customers_or_events_still_generates():
    anonymous = generate(customer_ids=np.empty(0, np.int64), rates=NO_DEFECTS)
    assert all(ln.record["customer_id"] is None for ln in lines_of(anonymous))
    quiet = generate(events_per_day=0, rates=DefectRates(empty_file=0.0))
    assert quiet.files == {}
    assert quiet.ledger.empty
    assert quiet.events == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    events=st.integers(1, 400),
    batches=st.integers(1, 8),
    dirt=st.floats(0.0, 20.0),
    drift=st.booleans(),
)
def test_every_line_is_valid_or_has_exactly_one_ledger_row(seed, events, batches, dirt, drift):
    delivery = generate(
        seed=seed, events_per_day=events, batches=batches, rates=DefectRates().scaled(dirt),
        schema_drift_day=DAY if drift else None,
    )  # fmt: skip
    ledger = ledger_by_line(delivery)
    lines = lines_of(delivery)
    for ln in lines:
        if (ln.file, ln.line) not in ledger:
            assert ln.record is not None, ln.raw
            assert not valid_event_problems(ln.record, DAY, drift), ln.raw
    assert set(ledger) <= {(ln.file, ln.line) for ln in lines}
    copies = delivery.ledger["defect"].isin([Defect.EXACT_DUPLICATE, Defect.RESENT_EVENT_ID]).sum()
    assert len(lines) == events + copies
    assert len(delivery.files) - batches in (0, 1) or len(lines) < batches


def test_landing_replaces_a_day_and_leaves_other_days_alone(tmp_path):
    folder = LandingFolder(str(tmp_path / "landing"))
    first = generate(batches=5, rates=DefectRates(empty_file=1.0))
    paths = land_clickstream_day(folder, first)
    assert [p.rsplit("/", 1)[-1] for p in paths] == list(first.files)
    assert {f.name: f.size for f in folder.list()} == {n: len(c) for n, c in first.files.items()}
    other_day = generate(DAY + dt.timedelta(days=1))
    land_clickstream_day(folder, other_day)
    other_before = {f.name: folder.read(f.name) for f in folder.list(clickstream_file_prefix(other_day.day))}

    again = generate(batches=2, seed=99, rates=DefectRates(empty_file=0.0))
    land_clickstream_day(folder, again)
    land_clickstream_day(folder, again)  # idempotent
    assert [f.name for f in folder.list(clickstream_file_prefix(DAY))] == list(again.files)
    assert all(folder.read(name) == content for name, content in again.files.items())
    assert {
        f.name: folder.read(f.name) for f in folder.list(clickstream_file_prefix(other_day.day))
    } == other_before
    on_disk = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert on_disk == sorted([*again.files, *other_before]), "temporary or stale files left behind"

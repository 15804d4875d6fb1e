"""Events: routing of lines to event days, dedupe, broken deliveries, and accounting for every raw line."""

import datetime as dt
import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from de_assets.generation.clickstream import generate_clickstream_day
from de_assets.generation.defects import DefectRates
from de_assets.ingestion.clickstream_files import assemble_partition, parse_file, parse_rejects
from de_assets.transformation import events as events_module
from de_assets.transformation.events import (
    EVENT_COLUMNS,
    _rates_of,
    build_events,
    id_hashes,
    later_deliveries,
)
from de_assets.transformation.quarantine import QUARANTINE_COLUMNS

from .clickstream_lines import DAY, PROCESSED, RATES, build, event, has_layout, iso, raw_of


def test_lines_are_routed_to_their_event_day_within_the_limit():
    delivered = DAY + dt.timedelta(days=3)
    lines = [event(event_id=f"back{k}", event_time=iso(delivered - dt.timedelta(days=k))) for k in range(6)]
    lines.append(event(event_id="ahead", event_time=iso(delivered + dt.timedelta(days=1))))
    lines.append(event(event_id="odd", customer_id="1", event_time=iso(DAY)))
    raw = raw_of({(delivered, 1): lines})
    found = {}
    for offset in range(-3, 6):
        day = DAY + dt.timedelta(days=offset)
        result = build(raw, day, limit=2)
        assert result.conservation.balanced
        for row in result.events.itertuples():
            found[row.event_id] = (day, "kept", row.lateness_days)
        for row in result.quarantine.itertuples():
            found[lines[row.line_number - 1]["event_id"]] = (day, row.reason, row.detail)
    assert found["back0"] == (delivered, "kept", 0)
    assert found["back1"] == (delivered - dt.timedelta(days=1), "kept", 1)
    assert found["back2"] == (delivered - dt.timedelta(days=2), "kept", 2)
    for name in ("back3", "back4", "back5"):
        assert found[name][:2] == (delivered, "too_late")
    assert (
        found["back3"][2]
        == "happened on 2024-01-03, delivered on 2024-01-06, 3 days later, over the limit of 2 days"
    )
    assert found["ahead"][:2] == (delivered, "from_the_future")
    assert found["odd"][:2] == (delivered, "wrong_type")  # owned by its delivery day, not its event day
    assert len(found) == len(lines)


def test_rows_of_other_delivery_days_are_ignored():
    raw = raw_of(
        {
            (DAY - dt.timedelta(days=1), 1): [event(event_id="before")],
            (DAY, 1): [event(event_id="mine")],
            (DAY + dt.timedelta(days=2), 1): [event(event_id="late", event_time=iso(DAY))],
            (DAY + dt.timedelta(days=3), 1): [event(event_id="too far", event_time=iso(DAY)), "{bad"],
        }
    )
    result = build(raw, limit=2)
    assert sorted(result.events["event_id"]) == ["late", "mine"]
    assert result.late_events == 1
    assert list(result.rejected_share_by_delivery_day) == ["2024-01-03", "2024-01-05"]
    assert result.conservation.rows_in == 2


def test_a_broken_delivery_holds_back_only_its_own_lines():
    tomorrow = DAY + dt.timedelta(days=1)
    raw = raw_of(
        {
            (DAY, 1): [event(event_id="ok")],
            (tomorrow, 1): [event(event_id="held", event_time=iso(DAY)), "{", event(customer_id="x")],
            (tomorrow, 2): [event(event_id="tomorrow", event_time=iso(tomorrow))],
        }
    )
    result = build(raw, share=0.5)
    assert result.rejected_share_by_delivery_day == {"2024-01-03": 0.0, "2024-01-04": 0.5}
    assert result.events["event_id"].tolist() == ["ok", "held"]  # 0.5 is not above the limit
    result = build(raw, share=0.4)
    assert result.events["event_id"].tolist() == ["ok"]
    assert result.quarantine["reason"].tolist() == ["contract_broken"]
    assert result.quarantine["detail"].tolist() == [
        "50.0% of the lines delivered on 2024-01-04 were rejected (limit 40.0%)"
    ]
    assert result.conservation.balanced
    assert result.conservation.quarantined == 1
    tomorrow_result = build(raw, tomorrow, share=0.4)
    assert sorted(tomorrow_result.quarantine["reason"]) == ["contract_broken", "wrong_type"]


def test_first_delivery_wins_and_resends_are_told_apart():
    first = [event(event_id="a"), event(event_id="b", page="/x"), event(event_id="c")]
    later = [
        event(event_id="a"),  # exact duplicate
        {**event(event_id="c", event_time="2024-01-03T13:00:00+01:00")},  # same instant: a duplicate
        event(event_id="b", page="/y", event_time=iso(DAY, 43_201)),  # changed: conflicting
    ]
    # File 02 was ingested before file 01, so its lines are the first delivery despite its name.
    raw = raw_of({(DAY, 1): later, (DAY, 2): first}, hours={(DAY, 1): 23, (DAY, 2): 5})
    result = build(raw)
    assert sorted(result.events["source_file"].str[-8:]) == ["02.jsonl"] * 3
    assert result.conservation.dropped_by == {"duplicate": 2}
    conflict = result.quarantine.iloc[0]
    assert (conflict["reason"], conflict["source_file"], conflict["line_number"]) == (
        "conflicting_resend",
        "clickstream_2024-01-03_01.jsonl",
        3,
    )
    assert conflict["detail"] == (
        "differs in event_time, page from the first delivery, clickstream_2024-01-03_02.jsonl line 2"
    )
    assert result.conservation.balanced
    assert result.conservation.rows_in == 6


def test_results_do_not_depend_on_row_order_and_reruns_agree():
    raw = raw_of(
        {
            (DAY, 1): [event(event_id="a"), event(event_id="b"), "[]", event(event_id="a", page="/z")],
            (DAY, 2): [event(event_id="b"), event(event_id="c", event_time=iso(DAY, 0))],
            (DAY + dt.timedelta(days=1), 1): [event(event_id="d", event_time=iso(DAY, 0)), event(page=3)],
        }
    )
    expected = build(raw)
    shuffled = build(raw.sample(frac=1, random_state=3))
    pd.testing.assert_frame_equal(expected.events, shuffled.events)
    pd.testing.assert_frame_equal(expected.quarantine, shuffled.quarantine)
    assert expected.conservation == shuffled.conservation
    assert expected.events["event_id"].tolist() == ["c", "d", "a", "b"]  # by time, ties in delivery order


def test_empty_input_gives_empty_frames_with_the_layout():
    result = build(raw_of({}))
    assert result.events.empty
    assert has_layout(result.events, EVENT_COLUMNS)
    assert result.quarantine.empty
    assert has_layout(result.quarantine, QUARANTINE_COLUMNS)
    assert result.conservation.balanced
    assert result.conservation.rows_in == 0
    assert (result.new_fields, result.rejected_share_by_delivery_day, result.late_events) == ({}, {}, 0)


# --- properties: every raw line is accounted once, and the union of partitions is the deduplicated input

BASE = dt.date(2024, 3, 1)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, float, list[tuple[int, int, int, str, dict | str]]]:
    """A late limit, a break share, and lines (delivery day, file, hour, kind, value) over a week."""
    limit = draw(st.integers(0, 2))
    share = draw(st.sampled_from([0.3, 0.6, 1.0]))
    originals = [
        event(
            event_id=f"e{i}",
            event_time=iso(BASE + dt.timedelta(days=draw(st.integers(0, 4))), draw(st.integers(0, 86_390))),
            customer_id=draw(st.none() | st.integers(1, 3)),
            page=f"/p{i}",
        )
        for i in range(draw(st.integers(1, 8)))
    ]
    hours = {(d, f): draw(st.integers(0, 23)) for d in range(7) for f in range(2)}
    lines = []
    for _ in range(draw(st.integers(1, 24))):
        day, file = draw(st.integers(0, 6)), draw(st.integers(0, 1))
        kind = draw(st.sampled_from(["original", "original", "changed", "malformed", "violation"]))
        value: dict | str = draw(st.sampled_from(originals))
        if kind == "changed":
            value = value | draw(
                st.sampled_from([{"page": "/changed"}, {"event_time": value["event_time"][:-4] + "999Z"}])
            )
        elif kind == "malformed":
            value = json.dumps(value)[:-1]
        elif kind == "violation":
            value = value | {"customer_id": "1"}
        lines.append((day, file, hours[(day, file)], kind, value))
    return limit, share, lines


def expected_outcomes(limit: int, share: float, lines: list) -> dict[tuple[str, int], tuple]:
    """Per (file, line): ("parse",) | ("kept", day) | ("dropped", day) | ("quarantined", day, reason)."""
    placed, numbers = [], Counter()
    for day, file, hour, kind, value in lines:
        name = f"clickstream_{(BASE + dt.timedelta(days=day)).isoformat()}_{file:02d}.jsonl"
        numbers[name] += 1
        placed.append(((hour, day, name, numbers[name]), day, kind, value))
    placed.sort(key=lambda p: (p[0][1], p[0][0], p[0][2], p[0][3]))  # ingested_at: day, then hour
    per_day = Counter(day for _, day, _, _ in placed)
    bad = Counter(day for _, day, kind, _ in placed if kind in ("malformed", "violation"))
    outcome: dict[tuple[str, int], tuple] = {}
    first_seen: dict[tuple[int, str], dict] = {}
    for (_, a, name, number), _, kind, value in placed:
        key = (name, number)
        if kind == "malformed":
            outcome[key] = ("parse",)
            continue
        if kind == "violation":
            outcome[key] = ("quarantined", a, "wrong_type")
            continue
        e = (dt.date.fromisoformat(value["event_time"][:10]) - BASE).days
        in_range = a - limit <= e <= a
        owner = e if in_range else a
        if bad[a] / per_day[a] > share:
            outcome[key] = ("quarantined", owner, "contract_broken")
        elif not in_range:
            outcome[key] = ("quarantined", owner, "too_late" if e < a - limit else "from_the_future")
        elif (owner, value["event_id"]) not in first_seen:
            first_seen[(owner, value["event_id"])] = value
            outcome[key] = ("kept", owner)
        elif first_seen[(owner, value["event_id"])] == value:
            outcome[key] = ("dropped", owner)
        else:
            outcome[key] = ("quarantined", owner, "conflicting_resend")
    return outcome


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_every_line_is_accounted_once_and_partitions_add_up(scenario):
    limit, share, lines = scenario
    files: dict[tuple[dt.date, int], list] = {}
    for day, file, _, _, value in lines:
        files.setdefault((BASE + dt.timedelta(days=day), file), []).append(value)
    hours = {(BASE + dt.timedelta(days=d), f): h for d, f, h, _, _ in lines}
    raw = raw_of(files, hours)
    expected = expected_outcomes(limit, share, lines)

    found: dict[tuple[str, int], tuple] = {}
    for delivery_day, rows in raw.groupby("delivery_day"):
        for row in parse_rejects(rows, partition=str(delivery_day), detected_at=PROCESSED).itertuples():
            found[(row.source_file, row.line_number)] = ("parse",)
    dropped, rows_in = Counter(), 0
    for offset in range(-1, 8):  # lines are owned by days 0 to 6
        result = build(raw, BASE + dt.timedelta(days=offset), limit=limit, share=share)
        assert result.conservation.balanced
        assert not result.events["event_id"].duplicated().any()
        for row in result.events.itertuples():
            assert (row.source_file, row.line_number) not in found
            found[(row.source_file, row.line_number)] = ("kept", offset)
        for row in result.quarantine.itertuples():
            assert (row.source_file, row.line_number) not in found
            found[(row.source_file, row.line_number)] = ("quarantined", offset, row.reason)
        dropped[offset] = result.conservation.dropped_by["duplicate"]
        rows_in += result.conservation.rows_in

    # The union of the partitions is the deduplicated valid input, and the rest is where it should be.
    assert found == {key: verdict for key, verdict in expected.items() if verdict[0] != "dropped"}
    assert +dropped == Counter(verdict[1] for verdict in expected.values() if verdict[0] == "dropped")
    assert rows_in + sum(verdict == ("parse",) for verdict in expected.values()) == len(lines)


# --- the simulator's defects, day by day, against its ground-truth ledger


def test_simulated_defects_end_up_with_their_reasons_and_nothing_else_is_rejected():
    first, drift = dt.date(2024, 5, 1), dt.date(2024, 5, 3)
    days = [first + dt.timedelta(days=k) for k in range(3)]
    rates = DefectRates(empty_file=1.0)
    generated = [
        generate_clickstream_day(
            d,
            seed=5,
            events_per_day=5000,
            customer_ids=np.arange(1, 500),
            rates=rates,
            schema_drift_day=drift,
        )
        for d in days
    ]
    frames = []
    for day_data in generated:
        at = dt.datetime.combine(day_data.day, dt.time(23), dt.UTC)
        parsed = [parse_file(name, data, ingested_at=at) for name, data in day_data.files.items()]
        assert sum(not len(f) for f in parsed) == (day_data.ledger["defect"] == "empty_file").sum() == 1
        frames.append(assemble_partition(None, parsed))
    raw = pd.concat(frames, ignore_index=True)
    ledger = pd.concat([g.ledger for g in generated], ignore_index=True)
    ledger = ledger[ledger["line"].notna()]
    defect = {(f, int(n)): (d, detail) for f, n, d, detail in zip(ledger["file"], ledger["line"], ledger["defect"], ledger["detail"], strict=True)}  # fmt: skip

    outcome: dict[tuple[str, int], tuple] = {}
    for day_data in generated:
        rows = raw[raw["delivery_day"] == day_data.day.isoformat()]
        for row in parse_rejects(
            rows, partition=day_data.day.isoformat(), detected_at=PROCESSED
        ).itertuples():
            outcome[(row.source_file, row.line_number)] = ("parse", row.reason, None)
    results = {}
    for offset in range(-3, 3):
        day = first + dt.timedelta(days=offset)
        results[day] = result = build(raw, day, limit=3, share=0.5)
        assert result.conservation.balanced
        for row in result.events.itertuples():
            outcome[(row.source_file, row.line_number)] = ("kept", row.event_time.date(), row.lateness_days)
        for row in result.quarantine.itertuples():
            outcome[(row.source_file, row.line_number)] = ("quarantined", row.reason, row.detail)

    expected_reason = {
        "malformed_json": ("parse", "malformed_json"),
        "wrong_type": ("quarantined", "wrong_type"),
        "null_required": ("quarantined", "null_required_field"),
        "unknown_currency": ("quarantined", "unknown_currency"),
        "negative_amount": ("quarantined", "negative_amount"),
        "resent_event_id": ("quarantined", "conflicting_resend"),
    }
    drift_file = raw["delivery_day"] == drift.isoformat()
    for (file, number), (kind, *rest) in [*outcome.items()]:
        if file.startswith(f"clickstream_{drift.isoformat()}") and kind != "parse":
            assert (kind, rest[0]) == ("quarantined", "missing_required_field")
            assert rest[1].startswith("device is missing (probably renamed to device_type)")
            continue
        ledgered = defect.get((file, number))
        if ledgered is None:
            assert kind == "kept", (file, number, kind, rest)  # no false rejections
            assert rest[1] == 0, (file, number, kind, rest)
        elif ledgered[0] == "late_event":
            assert (kind, str(rest[0])) == ("kept", ledgered[1])
            assert rest[1] > 0
        elif ledgered[0] == "exact_duplicate":
            raise AssertionError(f"an exact duplicate was not dropped: {file} {number}")
        else:
            assert (kind, rest[0]) == expected_reason[ledgered[0]], (file, number, ledgered)
    # Exact duplicates are the lines no partition shows: dropped, and counted as such.
    unseen = set(zip(raw["source_file"], raw["line_number"], strict=True)) - set(outcome)
    duplicates = {
        k
        for k, (d, _) in defect.items()
        if d == "exact_duplicate" and not k[0].startswith(f"clickstream_{drift}")
    }
    assert unseen == duplicates
    assert sum(r.conservation.dropped_by["duplicate"] for r in results.values()) == len(duplicates)

    drift_lines = int((drift_file & raw["parse_error"].isna()).sum())
    assert results[drift].new_fields == {"device_type": drift_lines, "referrer": drift_lines}
    assert results[drift].rejected_share_by_delivery_day[drift.isoformat()] == 1.0
    assert results[first].new_fields == {}


def test_an_event_before_the_first_partition_is_quarantined_by_its_delivery_day():
    lines = [
        event(event_id="yesterday", event_time=iso(DAY - dt.timedelta(days=1))),
        event(event_id="today", event_time=iso(DAY)),
    ]
    raw = raw_of({(DAY, 1): lines})
    options = {"late_limit_days": 2, "rates": RATES, "contract_break_share": 0.5, "processed_at": PROCESSED}
    result = build_events(raw, DAY, first_day=DAY, **options)
    assert result.events["event_id"].tolist() == ["today"]
    assert result.quarantine["reason"].tolist() == ["before_first_partition"]
    assert result.quarantine["detail"].iloc[0].endswith(f"before the first partition {DAY}")
    assert result.conservation.balanced
    assert result.conservation.rows_in == 2
    # Without a first partition, the day before owns it (and keeps it).
    assert build_events(raw, DAY - dt.timedelta(days=1), **options).events["event_id"].tolist() == [
        "yesterday"
    ]


def test_nothing_ingested_yet_gives_an_empty_partition():
    result = build(pd.DataFrame())  # what the tier returns when no raw partition exists at all
    assert result.events.empty
    assert has_layout(result.events, EVENT_COLUMNS)
    assert result.quarantine.empty
    assert result.conservation.rows_in == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries(), st.integers(1, 7), st.randoms(use_true_random=False))
def test_batches_of_lines_in_any_order_give_the_same_partitions(scenario, size, random):
    limit, share, lines = scenario
    files: dict[tuple[dt.date, int], list] = {}
    for day, file, _, _, value in lines:
        files.setdefault((BASE + dt.timedelta(days=day), file), []).append(value)
    raw = raw_of(files, {(BASE + dt.timedelta(days=d), f): h for d, f, h, _, _ in lines})
    batches = [raw.iloc[start : start + size] for start in range(0, len(raw), size)]
    random.shuffle(batches)
    for offset in range(-1, 8):
        day = BASE + dt.timedelta(days=offset)
        whole = build(raw, day, limit=limit, share=share)
        batched = build_events(
            iter(batches),
            day,
            late_limit_days=limit,
            rates=RATES,
            contract_break_share=share,
            processed_at=PROCESSED,
        )
        pd.testing.assert_frame_equal(batched.events, whole.events)
        pd.testing.assert_frame_equal(batched.quarantine, whole.quarantine)
        assert batched.conservation == whole.conservation
        assert batched.new_fields == whole.new_fields
        assert batched.lines_by_delivery_day == whole.lines_by_delivery_day
        assert batched.rejected_share_by_delivery_day == whole.rejected_share_by_delivery_day
        assert batched.late_events == whole.late_events


def test_batches_of_simulated_days_give_the_same_partition_as_one_frame():
    first = dt.date(2024, 5, 1)
    frames = []
    for k in range(3):
        traffic = generate_clickstream_day(
            first + dt.timedelta(days=k),
            seed=11,
            events_per_day=400,
            customer_ids=np.arange(1, 50),
            schema_drift_day=first + dt.timedelta(days=1),
        )
        frames += [parse_file(name, data, ingested_at=PROCESSED) for name, data in traffic.files.items()]
    raw = assemble_partition(None, frames)
    options = {"late_limit_days": 3, "rates": RATES, "contract_break_share": 0.05, "processed_at": PROCESSED}
    whole = build_events(raw, first, first_day=first, **options)
    batched = build_events(
        (raw.iloc[i : i + 97] for i in range(0, len(raw), 97)), first, first_day=first, **options
    )
    assert len(whole.events) > 300
    assert len(whole.quarantine) > 0
    pd.testing.assert_frame_equal(batched.events, whole.events)
    pd.testing.assert_frame_equal(batched.quarantine, whole.quarantine)
    assert batched.conservation == whole.conservation
    assert batched.new_fields == whole.new_fields


def test_no_batches_at_all_give_empty_frames_with_the_layout():
    result = build_events(
        iter([]), DAY, late_limit_days=3, rates=RATES, contract_break_share=0.5, processed_at=PROCESSED
    )
    assert has_layout(result.events, EVENT_COLUMNS)
    assert result.events.empty
    assert result.quarantine.empty
    assert result.conservation.rows_in == 0


# --- dedupe by 64-bit id hashes: a collision never merges two distinct ids


def _constant_hash(ids) -> np.ndarray:
    return np.zeros(len(ids), np.uint64)  # every id collides with every other


def _hash_by_length(ids) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.utf8_length(ids), 0), dtype=np.uint64)


@pytest.mark.parametrize("hash_ids", [id_hashes, _constant_hash, _hash_by_length])
def test_later_deliveries_follow_the_id_text_whatever_the_hash(hash_ids):
    ids = pa.array(["a", "bb", "a", "cc", None, "bb", "dd", None, "a", "e"])
    candidates = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])  # delivery order: rows from last to first
    later, first = later_deliveries(ids, candidates, hash_ids)
    # Rows in delivery order: e(9) a(8) None(7) dd(6) bb(5) None(4) cc(3) a(2) bb(1) a(0)
    assert later.tolist() == [False, False, False, False, False, True, False, True, True, True]
    assert first.tolist() == [7, 8, 5, 8]  # None(4) -> None(7), a(2) -> a(8), bb(1) -> bb(5), a(0) -> a(8)


def test_later_deliveries_of_no_candidates():
    later, first = later_deliveries(pa.array(["a", "a"]), np.array([], np.int64))
    assert (later.tolist(), first.tolist()) == ([], [])


def test_id_hashes_are_64_bit_in_row_order():
    ids = pa.chunked_array([[f"id-{k}" for k in range(3000)], [f"id-{k}" for k in range(3000)] + [None]])
    hashes = id_hashes(ids)
    assert hashes.dtype == np.uint64
    assert len(hashes) == 6001
    assert (hashes[:3000] == hashes[3000:6000]).all()
    assert len(np.unique(hashes[:3000])) == 3000


@pytest.mark.parametrize("hash_ids", [_constant_hash, _hash_by_length])
def test_colliding_id_hashes_give_the_same_partition(monkeypatch, hash_ids):
    later = [
        event(event_id="a"),  # a duplicate
        event(event_id="b", page="/y", event_time=iso(DAY, 43_201)),  # a conflicting re-send
        event(event_id="cc"),  # new, same length as "dd": collides under both hashes
        event(event_id="dd", page="/z"),
    ]
    first = [event(event_id="a"), event(event_id="b", page="/x"), event(event_id="e")]
    raw = raw_of({(DAY, 1): later, (DAY, 2): first}, hours={(DAY, 1): 23, (DAY, 2): 5})
    expected = build(raw)
    assert sorted(expected.events["event_id"]) == ["a", "b", "cc", "dd", "e"]
    monkeypatch.setattr(events_module, "id_hashes", hash_ids)
    collided = build(raw)
    pd.testing.assert_frame_equal(collided.events, expected.events)
    pd.testing.assert_frame_equal(collided.quarantine, expected.quarantine)
    assert collided.conservation == expected.conservation
    assert collided.conservation.dropped_by == {"duplicate": 1}


def test_rates_are_looked_up_per_currency_and_missing_where_unknown():
    currency = pd.Series(["EUR", None, "USD", "XXX", "GBP", "USD"], dtype="str")
    rates = _rates_of(currency, RATES)
    np.testing.assert_array_equal(rates.to_numpy(), [1.0, np.nan, 0.9, np.nan, 1.15, 0.9])
    pd.testing.assert_series_equal(rates, currency.map(RATES).astype("float64"))

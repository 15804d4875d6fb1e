"""Clickstream files into raw rows: line splitting, parse checks, arrival times and partition assembly."""

import datetime as dt
import hashlib
import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.ingestion.clickstream_files import (
    RAW_EVENT_COLUMNS,
    RAW_EVENTS_ASSET,
    arrival_times,
    assemble_partition,
    capture_day,
    delivery_day,
    parse_file,
    parse_rejects,
)
from de_assets.transformation.quarantine import QUARANTINE_COLUMNS

NAME = "clickstream_2024-01-03_01.jsonl"
AT = dt.datetime(2024, 1, 3, 22, 0, tzinfo=dt.UTC)
LATER = dt.datetime(2024, 1, 4, 6, 0, tzinfo=dt.UTC)


def parse(data: bytes, name: str = NAME, at: dt.datetime = AT) -> pd.DataFrame:
    return parse_file(name, data, ingested_at=at)


def values(series: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in series]


def has_layout(frame: pd.DataFrame, columns: dict[str, str]) -> bool:
    return list(frame.columns) == list(columns) and frame.dtypes.equals(frame.astype(columns).dtypes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clickstream_2024-01-03_01.jsonl", dt.date(2024, 1, 3)),
        ("clickstream_2024-02-29_late-batch.jsonl", dt.date(2024, 2, 29)),
        ("clickstream_2024-12-31_.jsonl", dt.date(2024, 12, 31)),
        ("clickstream_2023-02-29_01.jsonl", None),  # not a leap year
        ("clickstream_2024-13-01_01.jsonl", None),
        ("clickstream_2024-1-03_01.jsonl", None),
        ("clickstream_2024-01-03.jsonl", None),
        ("clickstream_2024-01-03_01.json", None),
        ("clickstream_2024-01-03_01.jsonl.tmp", None),
        (".clickstream_2024-01-03_01.jsonl", None),
        ("orders_2024-01-03_01.jsonl", None),
        (
            "clickstream_\uff12\uff10\uff12\uff14-01-03_01.jsonl",
            None,
        ),  # full-width digits: \d to re, not to us
    ],
)
def test_delivery_day(name, expected):
    assert delivery_day(name) == expected


def test_lines_are_kept_exactly_and_checked_only_for_parseability():
    lines = [
        b'{"event_id":"a","x":1}',
        b"",
        b"   ",
        b'{"event_id":"b"',  # truncated
        b"[1, 2]",
        b'"text"',
        b'{"amount": NaN}',
        b'{"amount": -Infinity}',
        b"\xff\xfe{}",
        b'{"page":"caf\xc3\xa9"}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
    ]
    frame = parse(b"\n".join(lines) + b"\n")
    assert has_layout(frame, RAW_EVENT_COLUMNS)
    assert frame["line_number"].tolist() == list(range(1, len(lines) + 1))
    errors = values(frame["parse_error"])
    assert errors == [
        None,
        "empty_line",
        "empty_line",
        "malformed_json",
        "not_an_object",
        "not_an_object",
        "malformed_json",
        "malformed_json",
        "invalid_encoding",
        None,
        "malformed_json",
    ]
    assert frame["parse_detail"].isna().tolist() == [e is None for e in errors]
    assert frame.loc[0, "payload"] == '{"event_id":"a","x":1}'
    assert frame.loc[8, "payload"] == "\\xff\\xfe{}"
    assert frame.loc[9, "payload"] == '{"page":"café"}'
    assert set(frame["delivery_day"]) == {"2024-01-03"}
    assert set(frame["file_sha256"]) == {hashlib.sha256(b"\n".join(lines) + b"\n").hexdigest()}
    assert set(frame["ingested_at"]) == {pd.Timestamp(AT)}


@pytest.mark.parametrize(
    ("data", "payloads"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"{}", ["{}"]),
        (b"{}\n{}", ["{}", "{}"]),
        (b"{}\r\n{}\r\n", ["{}", "{}"]),
        (b"\xef\xbb\xbf{}\n", ["{}"]),
        (b"{}\n\n", ["{}", ""]),
        (b'{"a":"x\ry"}\n', ['{"a":"x\ry"}']),  # a lone CR is not a line end (and makes bad JSON)
    ],
)
def test_line_splitting(data, payloads):
    frame = parse(data)
    assert frame["payload"].tolist() == payloads
    assert has_layout(frame, RAW_EVENT_COLUMNS)


def test_a_name_that_is_not_a_delivery_is_refused_and_times_must_be_aware():
    with pytest.raises(ValueError, match="not a clickstream delivery"):
        parse(b"{}", name="notes.txt")
    with pytest.raises(ValueError, match="timezone"):
        parse(b"{}", at=dt.datetime(2024, 1, 3))


def expected_reason(line: bytes) -> str | None:
    """The parse verdict on one line, from the definition."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_encoding"
    if not text.strip(" \t\r\n"):
        return "empty_line"
    try:
        value = json.loads(text, parse_constant=lambda name: json.loads("x"))  # NaN, Infinity: not JSON
    except (ValueError, RecursionError):
        return "malformed_json"
    return None if isinstance(value, dict) else "not_an_object"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
json_lines = json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8"))
lines = (json_lines | st.binary(max_size=30)).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, max_size=8), st.booleans(), st.booleans())
def test_any_bytes_give_one_row_per_line(chunks, final_newline, crlf):
    ending = b"\r\n" if crlf else b"\n"
    data = ending.join(chunks) + (ending if final_newline and chunks else b"")
    frame = parse(data)
    content = data.removeprefix(b"\xef\xbb\xbf")
    expected = content.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    expected = [line.removesuffix(b"\r") for line in expected]
    assert frame["payload"].tolist() == [line.decode("utf-8", errors="backslashreplace") for line in expected]
    errors = values(frame["parse_error"])
    assert errors == [expected_reason(line) for line in expected]
    assert frame["line_number"].tolist() == list(range(1, len(expected) + 1))


def test_arrival_times_survive_a_rerun_but_not_a_rewrite():
    first = parse(b"{}\n", at=AT)
    other = parse(b"{}\n", name="clickstream_2024-01-03_02.jsonl", at=LATER)
    previous = assemble_partition(None, [first, other])
    files = {
        NAME: hashlib.sha256(b"{}\n").hexdigest(),  # same content
        "clickstream_2024-01-03_02.jsonl": hashlib.sha256(b"{}\n{}\n").hexdigest(),  # rewritten
        "clickstream_2024-01-03_03.jsonl": "0" * 64,  # new
    }
    assert arrival_times(previous, files) == {
        NAME: AT,
        "clickstream_2024-01-03_02.jsonl": None,
        "clickstream_2024-01-03_03.jsonl": None,
    }
    assert arrival_times(None, {NAME: "x"}) == {NAME: None}


def test_assemble_keeps_removed_files_and_replaces_rewritten_ones():
    kept = parse(b'{"a":1}\n{"a":2}\n', name="clickstream_2024-01-03_01.jsonl", at=LATER)
    rewritten = parse(b'{"b":1}\n', name="clickstream_2024-01-03_02.jsonl", at=AT)
    emptied = parse(b'{"c":1}\n', name="clickstream_2024-01-03_03.jsonl", at=AT)
    previous = assemble_partition(None, [kept, rewritten, emptied])
    assert previous["source_file"].tolist() == [
        "clickstream_2024-01-03_02.jsonl",
        "clickstream_2024-01-03_03.jsonl",
        "clickstream_2024-01-03_01.jsonl",
        "clickstream_2024-01-03_01.jsonl",
    ]  # by ingested_at first

    current = [
        parse(b'{"b":2}\n{"b":3}\n', name="clickstream_2024-01-03_02.jsonl", at=LATER),
        parse(b"", name="clickstream_2024-01-03_03.jsonl", at=LATER),
    ]
    assembled = assemble_partition(previous, current)
    assert has_layout(assembled, RAW_EVENT_COLUMNS)
    assert list(zip(assembled["source_file"], assembled["payload"], strict=True)) == [
        ("clickstream_2024-01-03_01.jsonl", '{"a":1}'),
        ("clickstream_2024-01-03_01.jsonl", '{"a":2}'),
        ("clickstream_2024-01-03_02.jsonl", '{"b":2}'),
        ("clickstream_2024-01-03_02.jsonl", '{"b":3}'),
    ]
    assert assemble_partition(previous, current).equals(assemble_partition(assembled, current))
    assert has_layout(assemble_partition(None, []), RAW_EVENT_COLUMNS)
    assert assemble_partition(None, []).empty


def test_parse_rejects_point_at_the_raw_lines():
    frame = parse(b'{}\n{"x":\n\n[]\n')
    rejects = parse_rejects(frame, partition="2024-01-03", detected_at=LATER)
    assert has_layout(rejects, QUARANTINE_COLUMNS)
    assert rejects["line_number"].tolist() == [2, 3, 4]
    assert rejects["reason"].tolist() == ["malformed_json", "empty_line", "not_an_object"]
    assert set(rejects["asset"]) == set(rejects["raw_asset"]) == {RAW_EVENTS_ASSET}
    assert set(rejects["raw_partition"]) == set(rejects["partition"]) == {"2024-01-03"}
    assert set(rejects["source_file"]) == {NAME}
    assert rejects["detail"].notna().all()
    assert parse_rejects(parse(b"{}\n"), partition="2024-01-03", detected_at=LATER).empty


@settings(max_examples=150, deadline=None)
@given(st.lists(lines, max_size=10), st.booleans(), st.booleans(), st.integers(1, 40))
def test_chunked_parsing_gives_the_rows_of_one_chunk(chunks, final_newline, bom, chunk_bytes):
    data = (
        (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(chunks) + (b"\n" if final_newline and chunks else b"")
    )
    whole = parse_file(NAME, data, ingested_at=AT, chunk_bytes=len(data) + 1)
    chunked = parse_file(NAME, data, ingested_at=AT, chunk_bytes=chunk_bytes)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    # and both agree with the definition, line by line
    content = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if content[-1] == b"":
        content.pop()
    assert values(chunked["parse_error"]) == [expected_reason(line) for line in content]
    assert chunked["line_number"].tolist() == list(range(1, len(content) + 1))


def test_capture_day_gives_the_rows_of_parsing_the_files_together_and_empties_the_dict():
    unchanged, rewritten, new = b'{"a":1}\n', b'{"b":2}\n\xff\n', b'{"c":3}\n[]\n'
    removed = "clickstream_2024-01-03_04.jsonl"
    previous = assemble_partition(
        None,
        [
            parse(unchanged, name="clickstream_2024-01-03_01.jsonl", at=AT),
            parse(b'{"b":1}\n', name="clickstream_2024-01-03_02.jsonl", at=AT),
            parse(b'{"d":4}\n', name=removed, at=AT),
        ],
    )
    files = {
        "clickstream_2024-01-03_03.jsonl": new,  # listed before the older files: the order must not matter
        "clickstream_2024-01-03_01.jsonl": unchanged,
        "clickstream_2024-01-03_02.jsonl": rewritten,
        "clickstream_2024-01-03_05.jsonl": b"",
    }
    arrived = arrival_times(
        previous, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    )
    expected = assemble_partition(
        previous, [parse(data, name=name, at=arrived[name] or LATER) for name, data in files.items()]
    )
    pairs = list(files.items())
    capture = capture_day(previous, files, now=LATER, chunk_bytes=3)
    pd.testing.assert_frame_equal(capture.frame, expected, check_exact=True)
    assert files == {}  # each file's bytes were released once parsed
    # Files read lazily, one at a time (as ingestion reads the landing folder), give the same rows.
    lazily = capture_day(previous, (pair for pair in pairs), now=LATER, chunk_bytes=3)
    pd.testing.assert_frame_equal(lazily.frame, expected, check_exact=True)
    assert (capture.files, capture.new_or_rewritten_files, capture.empty_files) == (4, 3, 1)
    assert capture.frame["source_file"].tolist() == [
        "clickstream_2024-01-03_01.jsonl",  # first arrival kept
        removed,  # kept from the earlier capture
        "clickstream_2024-01-03_02.jsonl",
        "clickstream_2024-01-03_02.jsonl",
        "clickstream_2024-01-03_03.jsonl",
        "clickstream_2024-01-03_03.jsonl",
    ]
    with pytest.raises(ValueError, match="chunk_bytes"):
        parse_file(NAME, b"{}", ingested_at=AT, chunk_bytes=0)

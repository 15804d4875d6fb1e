"""Sessions: a visitor's events split at pauses of more than 30 minutes."""

import datetime as dt
import itertools

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.transformation.events import EVENT_COLUMNS
from de_assets.transformation.sessions import SESSION_COLUMNS, sessionise

DAY = dt.date(2024, 1, 3)
MIDNIGHT = pd.Timestamp("2024-01-03T00:00Z")


def events_frame(rows: list[dict]) -> pd.DataFrame:
    """Events with the columns sessionise reads; the rest of the layout filled with plain values."""
    filled = []
    for i, row in enumerate(rows):
        filled.append(
            {
                "event_id": f"e{i}",
                "event_type": "page_view",
                "session_id": "s1",
                "customer_id": None,
                "page": "/",
                "device": "mobile",
                "amount": None,
                "currency": None,
                "amount_eur": None,
                "extra_fields": None,
                "source_file": "clickstream_2024-01-03_01.jsonl",
                "line_number": i + 1,
                "delivery_day": "2024-01-03",
                "ingested_at": MIDNIGHT,
                "processed_at": MIDNIGHT,
                "lateness_days": 0,
                **row,
                "event_time": MIDNIGHT + pd.Timedelta(seconds=row["at"]),
            }
        )
    frame = pd.DataFrame(filled, columns=[*EVENT_COLUMNS, "at"]).drop(columns="at")
    return frame.astype(EVENT_COLUMNS)


def test_a_pause_of_more_than_thirty_minutes_starts_a_new_session():
    events = events_frame(
        [
            {"at": 0},
            {"at": 1800},  # exactly 30 minutes: same session
            {"at": 3600.000001},  # 30 minutes and a microsecond: a new one
            {"at": 3700, "event_type": "purchase", "amount": 10.0, "currency": "USD", "amount_eur": 9.0},
            {"at": 3800, "event_type": "purchase", "amount": 5.0, "currency": "EUR", "amount_eur": 5.0},
        ]
    )
    result = sessionise(events, DAY)
    sessions = result.sessions
    assert list(sessions.columns) == list(SESSION_COLUMNS)
    assert sessions.dtypes.equals(sessions.astype(SESSION_COLUMNS).dtypes)
    assert sessions["events"].tolist() == [2, 3]
    assert sessions["duration_seconds"].tolist() == [1800.0, 199.999999]
    assert sessions["purchases"].tolist() == [0, 2]
    assert sessions["revenue_eur"].tolist() == [0.0, 14.0]
    assert sessions["converted"].tolist() == [False, True]
    assert sessions["started_at"].tolist() == [MIDNIGHT, MIDNIGHT + pd.Timedelta(seconds=3600.000001)]
    assert set(sessions["session_day"]) == {"2024-01-03"}
    assert result.conservation.balanced
    assert result.conservation.rows_in == result.conservation.rows_out == 5


def test_known_customers_are_followed_across_source_sessions_and_anonymous_visitors_are_not():
    events = events_frame(
        [
            {"at": 0, "customer_id": 7, "session_id": "a", "device": "tablet"},
            {"at": 60, "customer_id": 7, "session_id": "b", "device": "mobile"},
            {"at": 30, "session_id": "a"},  # anonymous, same source session id as the customer's
            {"at": 90, "session_id": "c"},
        ]
    )
    sessions = sessionise(events, DAY).sessions.set_index("visitor")
    assert sorted(sessions.index) == ["customer:7", "session:a", "session:c"]
    assert sessions.loc["customer:7", "events"] == 2
    assert sessions.loc["customer:7", "first_session_id"] == "a"
    assert sessions.loc["customer:7", "device"] == "tablet"
    assert sessions.loc["customer:7", "customer_id"] == 7
    assert pd.isna(sessions.loc["session:a", "customer_id"])


def test_session_keys_are_stable_and_distinct():
    events = events_frame([{"at": 0}, {"at": 4000}, {"at": 10, "session_id": "s2"}])
    first = sessionise(events, DAY).sessions
    again = sessionise(events.sample(frac=1, random_state=1), DAY).sessions
    pd.testing.assert_frame_equal(first, again)
    assert first["session_key"].is_unique
    assert first["session_key"].str.fullmatch("[0-9a-f]{32}").all()
    later = events_frame([{"at": 1}, {"at": 4000}, {"at": 10, "session_id": "s2"}])
    assert sessionise(later, DAY).sessions["session_key"].tolist()[1:] == first["session_key"].tolist()[1:]


def test_no_events_no_sessions():
    result = sessionise(events_frame([]), DAY)
    assert result.sessions.empty
    assert list(result.sessions.columns) == list(SESSION_COLUMNS)
    assert result.conservation.balanced
    assert result.conservation.rows_in == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 86_399), st.sampled_from(["s1", "s2", "s3"]), st.none() | st.integers(1, 3)),
        max_size=40,
    )
)
def test_sessions_cover_each_event_once_and_split_exactly_at_long_pauses(rows):
    events = events_frame([{"at": at, "session_id": s, "customer_id": c} for at, s, c in rows])
    result = sessionise(events, DAY)
    assert result.conservation.balanced
    assert result.sessions["events"].sum() == len(events)
    # Independently: per visitor, sorted times, a new session at each gap over 30 minutes.
    expected = []
    visitors: dict[str, list[int]] = {}
    for at, session, customer in rows:
        visitors.setdefault(f"customer:{customer}" if customer else f"session:{session}", []).append(at)
    for visitor, times in visitors.items():
        times.sort()
        start = times[0]
        count = 1
        for previous, current in itertools.pairwise(times):
            if current - previous > 1800:
                expected.append((visitor, start, previous, count))
                start, count = current, 0
            count += 1
        expected.append((visitor, start, times[-1], count))
    found = [
        (row.visitor, int((row.started_at - MIDNIGHT).total_seconds()), int((row.ended_at - MIDNIGHT).total_seconds()), row.events)
        for row in result.sessions.itertuples()
    ]  # fmt: skip
    assert sorted(found) == sorted(expected)

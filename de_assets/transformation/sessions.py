"""Sessions of one event day: a visitor's events with no gap of more than ``gap`` between them.

The source's own ``session_id`` is not trusted as the session: apps mint a new one per tab or
restart, so a known customer is followed across them. The visitor is the customer when known and
the source session otherwise. Sessions are built per events partition, so one that runs over
midnight is counted as two, one per day: a day's sessions never change when the next day arrives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.quality.conservation import Conservation
from de_assets.transformation.event_contract import PURCHASE

SESSION_COLUMNS: dict[str, str] = {
    "session_key": "str",  # hash of visitor and start: stable across re-runs of the same events
    "session_day": "str",
    "customer_id": "Int64",
    "visitor": "str",  # "customer:<id>" or "session:<source session id>"
    "first_session_id": "str",
    "started_at": "datetime64[us, UTC]",
    "ended_at": "datetime64[us, UTC]",
    "duration_seconds": "float64",
    "events": "int64",
    "purchases": "int64",
    "revenue_eur": "float64",  # sum of the purchases' amount_eur (0 without any)
    "device": "str",  # of the first event
    "converted": "bool",  # has a purchase
}

# Two fixed 16-character SipHash keys: 128 bits keep collisions out of reach for any realistic volume.
_HASH_KEYS = ("de_assets:sess:1", "de_assets:sess:2")
# The event columns a session is built from; with the id (a sort key) all :func:`sessionise` reads.
_USED = ["customer_id", "session_id", "event_time", "event_type", "amount_eur", "device"]
EVENT_COLUMNS_USED = ["event_id", *_USED]


@dataclass(frozen=True)
class SessionsResult:
    """Sessions of a day; ``conservation`` counts events: every event in exactly one session.

    ``rows_in`` is the number of events and ``rows_out`` the sum of the sessions' ``events``, so the
    identity ``rows_in == rows_out`` (nothing dropped or quarantined) says no event was lost or
    counted twice.
    """

    sessions: pd.DataFrame
    conservation: Conservation


def _session_key(visitor: pd.Series, started_at: pd.Series) -> pd.Series:
    """32 hex digits from visitor and start; pandas' hashing is SipHash with a given key, so stable."""
    micros = (started_at - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    text = (visitor + "|" + micros.astype("str")).to_numpy(object)
    halves = [pd.util.hash_array(text, hash_key=key, categorize=False) for key in _HASH_KEYS]
    digits = np.column_stack(halves).astype(">u8").tobytes().hex().encode("ascii")
    return pd.Series(np.frombuffer(digits, dtype="S32").astype(str), index=visitor.index, dtype="str")


def _sort_codes(values: pd.Series) -> np.ndarray:
    """Codes that sort as ``sort_values`` sorts ``values`` (ascending, missing values last)."""
    codes, uniques = pd.factorize(values, sort=True)
    return np.where(codes < 0, len(uniques), codes)


def sessionise(
    events: pd.DataFrame, day: dt.date, *, gap: dt.timedelta = dt.timedelta(minutes=30)
) -> SessionsResult:
    """Group the events of ``day`` (an events partition) into visitor sessions."""
    customer = events["customer_id"]
    visitor = pd.Series(
        np.where(
            customer.notna(),
            "customer:" + customer.astype("str"),
            "session:" + events["session_id"].astype("str"),
        ),
        index=events.index,
        dtype="str",
    )
    # The order from the sort keys alone, then only the columns sessions need: sorting the whole frame
    # copied every column of a partition's events (ids, pages, lineage) to read a few of them.
    order = np.lexsort([_sort_codes(key) for key in (events["event_id"], events["event_time"], visitor)])
    ordered = events[_USED].assign(visitor=visitor).take(order).reset_index(drop=True)
    times = ordered["event_time"]
    new_visitor = ordered["visitor"].ne(ordered["visitor"].shift())
    pause = times.diff() > pd.Timedelta(gap)
    number = (new_visitor | pause).cumsum().to_numpy()

    purchase = ordered["event_type"].eq(PURCHASE)
    grouped = ordered.assign(
        purchase=purchase, revenue=ordered["amount_eur"].where(purchase, 0.0).fillna(0.0)
    ).groupby(number, sort=True)
    sessions = pd.DataFrame(
        {
            "customer_id": grouped["customer_id"].first(),
            "visitor": grouped["visitor"].first(),
            "first_session_id": grouped["session_id"].first(),
            "started_at": grouped["event_time"].min(),
            "ended_at": grouped["event_time"].max(),
            "events": grouped.size(),
            "purchases": grouped["purchase"].sum(),
            "revenue_eur": grouped["revenue"].sum(),
            "device": grouped["device"].first(),
        }
    ).reset_index(drop=True)
    sessions["session_key"] = _session_key(sessions["visitor"], sessions["started_at"])
    sessions["session_day"] = day.isoformat()
    sessions["duration_seconds"] = (sessions["ended_at"] - sessions["started_at"]).dt.total_seconds()
    sessions["converted"] = sessions["purchases"] > 0
    sessions = sessions[list(SESSION_COLUMNS)].astype(SESSION_COLUMNS)
    return SessionsResult(
        sessions=sessions.sort_values(["started_at", "session_key"], ignore_index=True),
        conservation=Conservation(rows_in=len(events), rows_out=int(sessions["events"].sum()), quarantined=0),
    )

"""Customer features as of the end of a day, point-in-time correct.

Features for day D use only what was known at the end of D, so a backfill of D months later
reproduces exactly what a model would have seen that day, however much late data arrived since:

* **orders** in the version that stood at the end of D. Rows are captured by ``updated_at`` window,
  so the captures of windows up to D are what the pipeline knew by then. Orders created on C with
  ``C + lookahead <= D`` are final in ``transformation/orders`` (every window they read is <= D);
  the younger ones are rebuilt with the transformation's own :func:`build_orders` from the raw
  capture windows up to D only: later updates, deletes and quarantine outcomes do not leak back.
* **events** that happened on or before D *and had arrived* by D: ``transformation/events`` rows
  with ``delivery_day <= D`` (the first delivery of an event is the one kept).
* **sessions** of those events: for an event day E with ``E + late_days <= D`` every delivery it can
  ever have arrived by D, so the stored ``transformation/sessions`` partition is exact; the last
  ``late_days`` days are re-sessionised from the events known at D.
* **accounts** created in the last days, from the raw customer captures up to D (closed after D
  still counts as open on D), rebuilt with :func:`build_customers`.

Windows: ``_7d``, ``_30d`` and ``_90d`` cover D-6..D, D-29..D and D-89..D. A customer is a row of
day D when they have a non-cancelled order in D-90..D, an event in D-30..D, or an account created in
D-7..D: one day more than any rule looks at, so a customer's last row before dropping out shows the
lapse (segment ``churned``) instead of the segment they had before.

Keyed by the customer's keyed token (the same token as ``transformation/customers``); no source id,
no PII.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from de_assets.security.pseudonymise import PiiKey, tokens
from de_assets.transformation.customers import build_customers
from de_assets.transformation.orders import build_orders
from de_assets.transformation.sessions import sessionise

ORDER_DAYS = 90  # the longest order window; orders of one more day keep a lapsing customer for a day
VISIT_DAYS = 30  # the longest events and sessions window
NEW_ACCOUNT_DAYS = 7  # an account this young is "new"
WINDOWS = (7, 30, 90)
CANCELLED = "cancelled"

FEATURE_COLUMNS: dict[str, str] = {
    "feature_day": "str",
    "customer_token": "str",
    "as_of": "datetime64[us, UTC]",
    "new_account": "bool",
    "recency_days": "Int64",
    **{f"orders_{n}d": "int64" for n in WINDOWS},
    **{f"revenue_eur_{n}d": "float64" for n in WINDOWS},
    "sessions_7d": "int64",
    "sessions_30d": "int64",
    "events_7d": "int64",
    "events_30d": "int64",
    "preferred_device": "str",
    "pii_key_fingerprint": "str",
}


@dataclass(frozen=True)
class FeatureSources:
    """Everything one run reads, for all its days; each day takes its own slice.

    ``orders``: ``transformation/orders`` covering creation days D-90..D; ``raw_orders`` and
    ``raw_customers``: raw capture windows covering the days to rebuild; ``events`` and ``sessions``:
    the transformation tables covering D-30..D.
    """

    orders: pd.DataFrame
    raw_orders: pd.DataFrame
    raw_customers: pd.DataFrame
    events: pd.DataFrame
    sessions: pd.DataFrame


@dataclass(frozen=True)
class FeatureSettings:
    order_lookahead_days: int
    customer_lookahead_days: int
    late_days: int
    rates: Mapping[str, float]
    key: PiiKey
    first_day: dt.date | None = None


def utc_days(values: pd.Series) -> np.ndarray:
    """UTC day of each timestamp as datetime64[D]."""
    if values.empty:
        return np.array([], dtype="datetime64[D]")
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")


def _days_ago(day: dt.date, codes: np.ndarray) -> np.ndarray:
    return (np.datetime64(day, "D") - codes).astype("int64")


def _known_captures(raw: pd.DataFrame, first: dt.date, day: dt.date) -> pd.DataFrame:
    """The raw capture windows first..day: what the pipeline had captured by the end of ``day``."""
    if raw.empty:
        return raw
    window = raw["window_day"].astype("str")
    return raw[(window >= first.isoformat()) & (window <= day.isoformat())]


def orders_as_of(
    orders: pd.DataFrame,
    raw_orders: pd.DataFrame,
    day: dt.date,
    settings: FeatureSettings,
    processed_at: dt.datetime,
) -> pd.DataFrame:
    """Valid orders created on day-ORDER_DAYS..day, each in the version that stood at the end of ``day``."""
    lookahead = settings.order_lookahead_days
    oldest = day - dt.timedelta(days=ORDER_DAYS)
    young = max(oldest, day - dt.timedelta(days=lookahead - 1)) if lookahead > 0 else day + dt.timedelta(1)
    frames = []
    if not orders.empty:
        created = utc_days(orders["created_at"])
        final = (created >= np.datetime64(oldest, "D")) & (created < np.datetime64(young, "D"))
        frames.append(orders[final])
    rebuilt_from = max(young, settings.first_day or young)  # no partition (so no rows) before the first
    known = _known_captures(raw_orders, rebuilt_from, day)
    if not known.empty:
        for offset in range((day - rebuilt_from).days + 1):
            built = build_orders(
                known,
                rebuilt_from + dt.timedelta(days=offset),
                lookahead_days=lookahead,
                rates=settings.rates,
                processed_at=processed_at,
                first_day=settings.first_day,
            )
            frames.append(built.orders)
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return orders.iloc[0:0] if len(orders.columns) else pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def new_accounts_as_of(
    raw_customers: pd.DataFrame, day: dt.date, settings: FeatureSettings, processed_at: dt.datetime
) -> pd.DataFrame:
    """customer_token and created day of the valid, open accounts created on day-NEW_ACCOUNT_DAYS..day."""
    oldest = max(day - dt.timedelta(days=NEW_ACCOUNT_DAYS), settings.first_day or dt.date.min)
    known = _known_captures(raw_customers, oldest, day)
    frames = []
    if not known.empty:
        for offset in range((day - oldest).days + 1):
            built = build_customers(
                known,
                oldest + dt.timedelta(days=offset),
                lookahead_days=settings.customer_lookahead_days,
                key=settings.key,
                processed_at=processed_at,
                first_day=settings.first_day,
            )
            frames.append(built.customers[["customer_token", "created_at"]])
    if not frames:
        return pd.DataFrame({"customer_token": pd.Series(dtype="str"), "days_ago": pd.Series(dtype="int64")})
    accounts = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            "customer_token": accounts["customer_token"],
            "days_ago": _days_ago(day, utc_days(accounts["created_at"])),
        }
    )


def events_as_of(events: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """Events of day-VISIT_DAYS..day that had arrived by the end of ``day``."""
    if events.empty:
        return events
    happened = utc_days(events["event_time"])
    oldest = np.datetime64(day - dt.timedelta(days=VISIT_DAYS), "D")
    known = (
        (happened >= oldest)
        & (happened <= np.datetime64(day, "D"))
        & (events["delivery_day"].astype("str") <= day.isoformat()).to_numpy(dtype=bool)
    )
    return events[known]


def sessions_as_of(
    sessions: pd.DataFrame, known_events: pd.DataFrame, day: dt.date, late_days: int
) -> pd.DataFrame:
    """Sessions of day-VISIT_DAYS..day built from the events known at the end of ``day``."""
    settled_before = day - dt.timedelta(days=late_days)  # event days whose every delivery is <= day
    oldest = (day - dt.timedelta(days=VISIT_DAYS)).isoformat()
    frames = []
    if not sessions.empty:
        session_day = sessions["session_day"].astype("str")
        frames.append(sessions[(session_day >= oldest) & (session_day <= settled_before.isoformat())])
    if not known_events.empty:
        event_days = utc_days(known_events["event_time"])
        start = max(settled_before + dt.timedelta(days=1), day - dt.timedelta(days=VISIT_DAYS))
        for offset in range((day - start).days + 1):
            event_day = start + dt.timedelta(days=offset)
            on_day = known_events[event_days == np.datetime64(event_day, "D")]
            if len(on_day):
                frames.append(sessionise(on_day, event_day).sessions)
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame({"customer_id": pd.Series(dtype="Int64"), "session_day": pd.Series(dtype="str")})
    return pd.concat(frames, ignore_index=True)


def _counts(token: pd.Series, days_ago: np.ndarray, windows: tuple[int, ...], prefix: str) -> pd.DataFrame:
    frame = pd.DataFrame({"customer_token": token.to_numpy(), "days_ago": days_ago})
    return pd.DataFrame(
        {f"{prefix}_{n}d": frame[frame["days_ago"] < n].groupby("customer_token").size() for n in windows}
    )


def _preferred_device(token: pd.Series, device: pd.Series) -> pd.Series:
    """Each customer's most frequent device (ties: the first in alphabetical order)."""
    frame = pd.DataFrame({"customer_token": token.to_numpy(), "device": device.to_numpy()}).dropna()
    if frame.empty:
        return pd.Series(dtype="str", name="preferred_device")
    counted = frame.groupby(["customer_token", "device"]).size().rename("n").reset_index()
    counted = counted.sort_values(["customer_token", "n", "device"], ascending=[True, False, True])
    return (
        counted.drop_duplicates("customer_token")
        .set_index("customer_token")["device"]
        .rename("preferred_device")
    )


def customer_features(
    sources: FeatureSources, day: dt.date, settings: FeatureSettings, processed_at: dt.datetime
) -> pd.DataFrame:
    """One row per customer known at the end of ``day`` (see the module docstring)."""
    key = settings.key

    def token_of(ids: pd.Series) -> pd.Series:
        return tokens(key, ids.astype("Int64").astype("str"), "customer")

    orders = orders_as_of(sources.orders, sources.raw_orders, day, settings, processed_at)
    if len(orders):
        orders = orders[orders["status"].astype("str") != CANCELLED]
    order_token = token_of(orders["customer_id"]) if len(orders) else pd.Series(dtype="str")
    order_ago = _days_ago(day, utc_days(orders["created_at"])) if len(orders) else np.array([], "int64")
    amount = orders["amount_eur"].to_numpy(dtype="float64") if len(orders) else np.array([], "float64")

    events = events_as_of(sources.events, day)
    events = events[events["customer_id"].notna()] if len(events) else events
    event_token = token_of(events["customer_id"]) if len(events) else pd.Series(dtype="str")
    event_ago = _days_ago(day, utc_days(events["event_time"])) if len(events) else np.array([], "int64")

    # A customer's sessions depend on their own events only: anonymous events need no re-sessionising.
    sessions = sessions_as_of(sources.sessions, events, day, settings.late_days)
    sessions = sessions[sessions["customer_id"].notna()]
    session_token = token_of(sessions["customer_id"]) if len(sessions) else pd.Series(dtype="str")
    session_ago = (
        (np.datetime64(day, "D") - sessions["session_day"].to_numpy(dtype="datetime64[D]")).astype("int64")
        if len(sessions)
        else np.array([], "int64")
    )

    accounts = new_accounts_as_of(sources.raw_customers, day, settings, processed_at)

    members = pd.Index(
        pd.concat(
            [
                pd.Series(order_token, dtype="str"),
                pd.Series(event_token, dtype="str"),
                accounts["customer_token"],
            ],
            ignore_index=True,
        ).unique(),
        name="customer_token",
    ).sort_values()

    by_order = pd.DataFrame(
        {"customer_token": order_token.to_numpy(), "days_ago": order_ago, "amount": amount}
    )
    table = pd.DataFrame(index=members)
    table["new_account"] = members.isin(
        accounts.loc[accounts["days_ago"] < NEW_ACCOUNT_DAYS, "customer_token"]
    )
    table["recency_days"] = by_order.groupby("customer_token")["days_ago"].min()
    table = table.join(_counts(order_token, order_ago, WINDOWS, "orders"))
    for n in WINDOWS:
        within = by_order[by_order["days_ago"] < n]
        table[f"revenue_eur_{n}d"] = within.groupby("customer_token")["amount"].sum()
    table = table.join(_counts(session_token, session_ago, (7, 30), "sessions"))
    table = table.join(_counts(event_token, event_ago, (7, 30), "events"))
    if len(events):  # an events table never stored reads as a frame without columns
        in_month = event_ago < VISIT_DAYS
        table = table.join(_preferred_device(event_token[in_month], events["device"][in_month]))

    counts = [c for c, dtype in FEATURE_COLUMNS.items() if dtype in ("int64", "float64")]
    for column in counts:
        if column not in table:
            table[column] = 0
    table[counts] = table[counts].fillna(0)
    for n in WINDOWS:
        table[f"revenue_eur_{n}d"] = table[f"revenue_eur_{n}d"].astype("float64").round(2)
    if "preferred_device" not in table:
        table["preferred_device"] = None
    table = table.reset_index()
    table["feature_day"] = day.isoformat()
    table["as_of"] = pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")
    table["pii_key_fingerprint"] = key.fingerprint
    return table[list(FEATURE_COLUMNS)].astype(FEATURE_COLUMNS)

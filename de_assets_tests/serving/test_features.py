"""serving/customer_features: point in time, windows, membership and schema on a crafted shop history.

The history goes through the pipeline's own functions (raw captures and clickstream lines, then
build_orders, build_customers, build_events and sessionise), so the sources have the exact layout the
assets read. ``backfill`` holds every transformation partition built with all data present, as a
backfill months later sees them; ``known_at(D)`` holds what the pipeline had at the end of D.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field

import pandas as pd
import pytest

from de_assets.quality.models import CustomerFeaturesModel
from de_assets.security.pseudonymise import PiiKey
from de_assets.serving.features import FEATURE_COLUMNS, FeatureSettings, FeatureSources, customer_features
from de_assets.serving.segments import assign_segments
from de_assets.transformation.events import build_events
from de_assets.transformation.orders import build_orders
from de_assets.transformation.sessions import sessionise
from de_assets_tests.transformation.captures import (
    CUSTOMER_DTYPES,
    DAY0,
    ORDER_DTYPES,
    at,
    capture_frame,
    day,
    tombstone,
    version,
)
from de_assets_tests.transformation.clickstream_lines import event, iso, raw_of

RATES = {"EUR": 1.0, "USD": 0.5}
KEY = PiiKey(bytes(range(32)))
LATE_DAYS = 3
SETTINGS = FeatureSettings(
    order_lookahead_days=2,
    customer_lookahead_days=2,
    late_days=LATE_DAYS,
    rates=RATES,
    key=KEY,
    first_day=DAY0,
)
PROCESSED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def token(customer_id: int) -> str:
    """The documented token scheme, computed here with hmac alone."""
    purpose = hmac.new(KEY.secret, b"de_assets token purpose:customer", hashlib.sha256).digest()
    return hmac.new(purpose, str(customer_id).encode(), hashlib.sha256).hexdigest()


def captured(window: int) -> dt.datetime:
    return at(window + 1, 0, 5)  # each window is captured just after it closes


@dataclass
class History:
    """A shop and clickstream history in day offsets from DAY0 (the first partition)."""

    orders: list[dict] = field(default_factory=list)
    customers: list[dict] = field(default_factory=list)
    files: dict[tuple[dt.date, int], list[dict]] = field(default_factory=dict)
    emails: dict[int, str] = field(default_factory=dict)
    _events: int = 0

    def order(self, order_id: int, customer_id: int, created: int, amount: float = 10.0, **content) -> None:
        row = {"customer_id": customer_id, "status": "paid", "amount": amount, "currency": "EUR", **content}
        stamp = at(created, 10)
        self.orders.append(version("order_id", order_id, stamp, stamp, created, captured(created), **row))

    def change(self, order_id: int, customer_id: int, created: int, on: int, **content) -> None:
        """A later version of an order, captured in the window of the day it changed."""
        row = {"customer_id": customer_id, "status": "paid", "amount": 10.0, "currency": "EUR", **content}
        self.orders.append(
            version("order_id", order_id, at(created, 10), at(on, 15), on, captured(on), **row)
        )

    def delete(self, order_id: int, created: int, on: int) -> None:
        self.orders.append(tombstone("order_id", order_id, at(created, 10), on, captured(on)))

    def account(self, customer_id: int, created: int) -> None:
        email = f"user{customer_id}@example.com"
        self.emails[customer_id] = email
        stamp = at(created, 9)
        content = {"full_name": f"User {customer_id}", "email": email, "country": "DE"}
        self.customers.append(
            version("customer_id", customer_id, stamp, stamp, created, captured(created), **content)
        )

    def visit(self, customer_id: int | None, happened: int, delivered: int | None = None, **fields) -> None:
        """One page view at noon plus 2 h per earlier event of the customer that day (own session)."""
        self._events += 1
        same_day = sum(
            1
            for lines in self.files.values()
            for line in lines
            if line["customer_id"] == customer_id and line["event_time"].startswith(day(happened).isoformat())
        )
        line = event(
            event_id=f"e{self._events}",
            event_time=iso(day(happened), 43_200 - 7_200 * same_day),
            customer_id=customer_id,
            session_id=f"s{self._events}",
            **fields,
        )
        delivery = day(happened if delivered is None else delivered)
        self.files.setdefault((delivery, 1), []).append(line)

    def customer_ids(self) -> set[int]:
        visitors = {line["customer_id"] for lines in self.files.values() for line in lines}
        return (
            {r["customer_id"] for r in self.orders if "customer_id" in r}
            | set(self.emails)
            | (visitors - {None})
        )

    def sources(self, known_at: int | None = None) -> FeatureSources:
        """The transformation tables the assets read: all data, or only what had landed by ``known_at``."""
        last = known_at if known_at is not None else 10_000

        def windows(rows: list[dict]) -> list[dict]:
            return [r for r in rows if r["window_day"] <= day(last).isoformat()]

        raw_orders = capture_frame(windows(self.orders), ORDER_DTYPES)
        raw_customers = capture_frame(windows(self.customers), CUSTOMER_DTYPES)
        raw_events = raw_of({k: v for k, v in self.files.items() if k[0] <= day(last)})
        created_days = sorted(
            {r["created_at"].date() for r in self.orders if r["window_day"] <= day(last).isoformat()}
        )
        orders = pd.concat(
            [
                build_orders(
                    raw_orders, d, lookahead_days=2, rates=RATES, processed_at=PROCESSED, first_day=DAY0
                ).orders
                for d in created_days
            ],
            ignore_index=True,
        )
        event_days = sorted(
            {
                dt.date.fromisoformat(line["event_time"][:10])
                for lines in self.files.values()
                for line in lines
            }
        )
        events, sessions = [], []
        for event_day in event_days:
            built = build_events(
                raw_events,
                event_day,
                late_limit_days=LATE_DAYS,
                rates=RATES,
                contract_break_share=0.5,
                processed_at=PROCESSED,
                first_day=DAY0,
            ).events
            if len(built):
                events.append(built)
                sessions.append(sessionise(built, event_day).sessions)
        return FeatureSources(
            orders=orders,
            raw_orders=raw_orders,
            raw_customers=raw_customers,
            events=pd.concat(events, ignore_index=True),
            sessions=pd.concat(sessions, ignore_index=True),
        )


# --- the history -------------------------------------------------------------------------------------

LATE = 41  # customer 11 visits on 40 (on time) and 41 (delivered on 43); 12 only on 41, late
VERSIONS = 60  # orders of 61 (amount raised), 62 (cancelled) and 63 (deleted) created that day
DEVICES = 80  # preferred device of 71, 72, 73 as of that day
WINDOWS = 100  # the edges of the 7/30/90-day windows as of that day


def history() -> History:
    h = History()
    # (a) late delivery
    h.visit(11, LATE - 1)
    h.visit(11, LATE, delivered=LATE + 2)
    h.visit(12, LATE, delivered=LATE + 2)
    h.visit(None, LATE, delivered=LATE + 1)  # anonymous: never a feature row
    # (b), (c) versions after the day
    h.order(6101, 61, VERSIONS, amount=10.0, currency="USD")
    h.change(6101, 61, VERSIONS, VERSIONS + 1, amount=30.0, currency="USD")
    h.order(6201, 62, VERSIONS, amount=8.0)
    h.change(6201, 62, VERSIONS, VERSIONS + 1, amount=8.0, status="cancelled")
    h.order(6301, 63, VERSIONS, amount=4.0)
    h.delete(6301, VERSIONS, VERSIONS + 2)
    # (d) window edges: one order per customer, N days before WINDOWS
    for customer, ago in ((21, 6), (22, 7), (23, 29), (24, 30), (25, 89), (26, 90), (27, 91)):
        h.order(customer * 100, customer, WINDOWS - ago, amount=float(ago))
    h.order(2801, 28, WINDOWS, amount=10.0)  # rebuilt from the raw windows (look-ahead still open)
    h.order(2802, 28, WINDOWS - 1, amount=99.0, status="cancelled")
    h.order(2803, 28, WINDOWS - 3, amount=20.0, currency="USD")  # 10 EUR
    h.order(2804, 28, WINDOWS - 10, amount=5.0)
    h.order(2805, 28, WINDOWS - 50, amount=7.0)
    for ago in (6, 7, 29, 30):
        h.visit(31, WINDOWS - ago)
    h.visit(32, WINDOWS - 30)
    h.visit(33, WINDOWS - 31)
    for customer, ago in ((41, 6), (42, 7), (43, 8)):
        h.account(customer, WINDOWS - ago)
    # (e) preferred device
    for device in ("mobile", "desktop", "mobile", "desktop"):
        h.visit(71, DEVICES - 1, device=device)
    h.visit(72, DEVICES - 30, device="desktop")  # outside the 30 days: does not count
    h.visit(72, DEVICES - 1, device="mobile")
    for device in ("tablet", "desktop", "tablet", "tablet"):
        h.visit(73, DEVICES - 2, device=device)
    # (f) lapsing customers
    h.order(5101, 51, 5)
    h.visit(52, 20)
    h.account(53, 30)
    return h


@pytest.fixture(scope="module")
def shop() -> History:
    return history()


@pytest.fixture(scope="module")
def backfill(shop: History) -> FeatureSources:
    return shop.sources()


def features_of(sources: FeatureSources, offset: int) -> pd.DataFrame:
    return customer_features(sources, day(offset), SETTINGS, PROCESSED)


def row(features: pd.DataFrame, customer_id: int) -> dict | None:
    rows = features[features["customer_token"] == token(customer_id)].to_dict("records")
    assert len(rows) <= 1
    return rows[0] if rows else None


def test_an_event_counts_only_from_the_day_it_arrived(backfill):
    before, on_time, arrived = (features_of(backfill, d) for d in (LATE, LATE + 1, LATE + 2))
    for features in (before, on_time):
        assert (row(features, 11)["events_7d"], row(features, 11)["sessions_7d"]) == (1, 1)
        assert row(features, 12) is None
    assert (row(arrived, 11)["events_7d"], row(arrived, 11)["sessions_7d"]) == (2, 2)
    assert (row(arrived, 12)["events_7d"], row(arrived, 12)["sessions_30d"]) == (1, 1)


def test_an_order_keeps_the_version_that_stood_at_the_end_of_the_day(backfill):
    on_day, next_day, final = (features_of(backfill, d) for d in (VERSIONS, VERSIONS + 1, VERSIONS + 2))
    # 10 USD at 0.5 on the day; raised to 30 USD the day after.
    assert row(on_day, 61)["revenue_eur_7d"] == pytest.approx(5.0)
    assert row(next_day, 61)["revenue_eur_7d"] == pytest.approx(15.0)
    assert row(final, 61)["revenue_eur_7d"] == pytest.approx(15.0)
    # Cancelled the day after: counted on its day only.
    assert (row(on_day, 62)["orders_7d"], row(on_day, 62)["revenue_eur_7d"]) == (1, pytest.approx(8.0))
    assert row(next_day, 62) is None
    assert row(final, 62) is None


def test_an_order_deleted_after_the_day_still_counts_on_the_day(backfill):
    on_day, next_day, deleted = (features_of(backfill, d) for d in (VERSIONS, VERSIONS + 1, VERSIONS + 2))
    assert row(on_day, 63)["orders_7d"] == 1
    assert row(next_day, 63)["orders_7d"] == 1
    assert row(deleted, 63) is None


def test_window_edges(backfill):
    features = features_of(backfill, WINDOWS)
    # ago -> (orders_7d, orders_30d, orders_90d); each order's amount is its age in EUR.
    for customer, ago, counts in (
        (21, 6, (1, 1, 1)),
        (22, 7, (0, 1, 1)),
        (23, 29, (0, 1, 1)),
        (24, 30, (0, 0, 1)),
        (25, 89, (0, 0, 1)),
        (26, 90, (0, 0, 0)),  # kept one day past the 90-day window, with nothing in it
    ):
        got = row(features, customer)
        assert (got["orders_7d"], got["orders_30d"], got["orders_90d"]) == counts, customer
        revenue = (got["revenue_eur_7d"], got["revenue_eur_30d"], got["revenue_eur_90d"])
        assert revenue == pytest.approx(tuple(float(ago) * n for n in counts)), customer
        assert got["recency_days"] == ago, customer  # 90 too: the model allows 0..90
    assert row(features, 27) is None
    multi = row(features, 28)
    assert (multi["orders_7d"], multi["orders_30d"], multi["orders_90d"]) == (2, 3, 4)
    revenue = (multi["revenue_eur_7d"], multi["revenue_eur_30d"], multi["revenue_eur_90d"])
    assert revenue == pytest.approx((20.0, 25.0, 32.0))
    assert multi["recency_days"] == 0
    visits = row(features, 31)
    assert (visits["events_7d"], visits["events_30d"], visits["sessions_7d"], visits["sessions_30d"]) == (
        1,
        3,
        1,
        3,
    )
    edge = row(features, 32)  # one event 30 days ago: a row with nothing in any window
    assert (edge["events_30d"], edge["sessions_30d"], edge["orders_90d"]) == (0, 0, 0)
    assert pd.isna(edge["preferred_device"])
    assert pd.isna(edge["recency_days"])
    assert row(features, 33) is None
    assert row(features, 41)["new_account"]
    assert not row(features, 42)["new_account"]
    assert row(features, 43) is None


def test_preferred_device_is_the_most_frequent_of_the_month_ties_alphabetical(backfill):
    features = features_of(backfill, DEVICES)
    assert row(features, 71)["preferred_device"] == "desktop"  # 2 desktop, 2 mobile
    assert row(features, 72)["preferred_device"] == "mobile"  # the desktop visit is 30 days old
    assert row(features, 73)["preferred_device"] == "tablet"


@pytest.mark.parametrize(
    ("customer", "last_active", "window", "segment_before"),
    [
        (51, 5, 90, "at_risk"),  # an order
        (52, 20, 30, "at_risk"),  # a visit
        (53, 30, 7, "new"),  # an account opened
    ],
)
def test_a_customer_drops_out_one_day_after_every_window_is_empty(
    backfill, customer, last_active, window, segment_before
):
    rows = {}
    for offset in (window - 1, window, window + 1):
        features = features_of(backfill, last_active + offset)
        features = features.assign(segment=assign_segments(features))
        rows[offset] = row(features, customer)
    assert rows[window - 1]["segment"] == segment_before
    assert rows[window]["segment"] == "churned"
    assert rows[window + 1] is None


@pytest.mark.parametrize(
    "offset", [LATE - 1, LATE, LATE + 1, LATE + 2, VERSIONS, VERSIONS + 1, DEVICES, WINDOWS]
)
def test_a_backfill_reproduces_what_was_known_at_the_end_of_the_day(shop, backfill, offset):
    then = features_of(shop.sources(known_at=offset), offset)
    later = features_of(backfill, offset)
    pd.testing.assert_frame_equal(then, later)
    assert len(later) > 0


def test_columns_hold_tokens_never_source_ids_or_emails(shop, backfill):
    features = pd.concat([features_of(backfill, d) for d in (LATE + 2, VERSIONS, DEVICES, WINDOWS)])
    assert list(features.columns) == list(FEATURE_COLUMNS)
    assert {c: str(t) for c, t in features.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in FEATURE_COLUMNS.items()
    }
    CustomerFeaturesModel.validate(features)
    assert features["customer_token"].str.fullmatch(r"[0-9a-f]{64}").all()
    ids = shop.customer_ids()
    assert set(features["customer_token"]) <= {token(i) for i in ids}
    assert features["pii_key_fingerprint"].eq(KEY.fingerprint).all()
    forbidden = {str(i) for i in ids} | set(shop.emails.values())
    assert not [c for c in features.columns if "id" in c.split("_") or "email" in c]
    for column in features.select_dtypes(include=["str", "object"]).columns:
        assert not set(features[column].dropna()) & forbidden, column
    assert features.select_dtypes(include=["str", "object"]).columns.tolist() == [
        "feature_day",
        "customer_token",
        "preferred_device",
        "pii_key_fingerprint",
    ]


def test_a_day_before_any_clickstream_was_stored_gives_the_order_customers(backfill):
    # The asset reads never-materialised upstream tables as frames without columns (as daily_kpis
    # handles): with no events or sessions table yet, the order customers still get their rows.
    nothing = pd.DataFrame()
    no_clickstream = FeatureSources(
        backfill.orders, backfill.raw_orders, backfill.raw_customers, nothing, nothing
    )
    features = features_of(no_clickstream, WINDOWS)
    assert list(features.columns) == list(FEATURE_COLUMNS)
    multi = row(features, 28)
    assert (multi["orders_30d"], multi["events_30d"], multi["sessions_30d"]) == (3, 0, 0)
    assert pd.isna(multi["preferred_device"])
    assert row(features, 31) is None  # a visitor only
    CustomerFeaturesModel.validate(features)


def test_a_day_without_any_source_gives_no_rows():
    nothing = pd.DataFrame()
    features = features_of(FeatureSources(nothing, nothing, nothing, nothing, nothing), WINDOWS)
    assert features.empty
    assert list(features.columns) == list(FEATURE_COLUMNS)

"""The serving stage through Dagster on the simulator: KPIs, trend charts, reverse ETL, point in time.

Expectations are recomputed in plain Python from the transformation tables the run stored, and from
the shop database read with sqlite3.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from de_assets.definitions import MAIN_JOB, REPLAY_JOB, build_definitions
from de_assets.serving.assets import CUSTOMER_FEATURES, DAILY_KPIS
from de_assets.serving.segments import SEGMENTS
from de_assets.settings import HOME, Settings, load_settings
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import CUSTOMERS, EVENTS, ORDERS, SESSIONS

TODAY = dt.date(2026, 11, 22)
PNG = b"\x89PNG\r\n\x1a\n"
HEX64 = re.compile(r"[0-9a-f]{64}")


def _days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


class Home:
    """One DE_ASSETS_HOME with its definitions, instance and stores."""

    def __init__(self, path: Path, start: dt.date, traffic: dict) -> None:
        self.settings: Settings = load_settings(
            {HOME: str(path), "DE_ASSETS_START_DATE": start.isoformat()}, today=TODAY
        )
        self.definitions = build_definitions(self.settings)
        self.instance = dg.DagsterInstance.ephemeral()
        self.hot = HotStore(self.settings.hot_url.value)
        self.traffic = traffic

    def run(self, job: str, first: dt.date, last: dt.date) -> dg.ExecuteInProcessResult:
        result = self.definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            run_config={"resources": {"simulation": {"config": self.traffic}}} if job == MAIN_JOB else {},
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
        )
        assert result.success
        return result

    def read(self, key: dg.AssetKey, days: list[str]) -> pd.DataFrame:
        _states, frame = self.hot.load(TableRef.for_asset_key(key, "day"), days)
        return frame

    def shop(self, query: str) -> list[tuple]:
        conn = sqlite3.connect(sa.make_url(self.settings.source_db_url.value).database)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()

    def segment_tables(self) -> tuple[list[tuple], list[tuple]]:
        return (
            self.shop("SELECT * FROM customer_segments ORDER BY customer_id"),
            self.shop("SELECT * FROM customer_segments_syncs ORDER BY computed_for_day"),
        )

    def token(self, customer_id: int) -> str:
        """The documented token scheme over the key file's key, with hmac alone."""
        secret = bytes.fromhex(self.settings.pii_key_file.read_text().strip())
        purpose = hmac.new(secret, b"de_assets token purpose:customer", hashlib.sha256).digest()
        return hmac.new(purpose, str(customer_id).encode(), hashlib.sha256).hexdigest()


# --- one range through the main job, then the same range again -------------------------------------------

START = dt.date(2026, 11, 1)
FIRST, LAST = dt.date(2026, 11, 2), dt.date(2026, 11, 4)
DAYS = _days(FIRST, LAST)
SMALL = {"orders_per_day": 300, "events_per_day": 1_000, "seed": 3}


@dataclass
class Ran:
    home: Home
    metadata: dict[str, dict]  # daily_kpis partition -> metadata of the first run
    rerun_metadata: dict[str, dict]
    segments_after_first: tuple[list[tuple], list[tuple]]
    segments_after_rerun: tuple[list[tuple], list[tuple]]


def _kpi_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == DAILY_KPIS:
            found[materialization.partition] = materialization.metadata
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Ran:
    home = Home(tmp_path_factory.mktemp("home"), START, SMALL)
    first = home.run(MAIN_JOB, FIRST, LAST)
    after_first = home.segment_tables()
    rerun = home.run(MAIN_JOB, FIRST, LAST)
    return Ran(home, _kpi_metadata(first), _kpi_metadata(rerun), after_first, home.segment_tables())


def _expected_kpis(home: Home, day: str) -> dict[str, dict[str, float]]:
    customers = home.read(CUSTOMERS, _days(START, LAST))
    country = dict(zip(customers["customer_id"].astype(int), customers["country"], strict=True))

    def country_of(customer_id: object) -> str:
        return "unknown" if pd.isna(customer_id) else country.get(int(customer_id), "unknown")

    figures: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    buyers: dict[str, set] = defaultdict(set)
    for order in home.read(ORDERS, [day]).to_dict("records"):
        assert order["created_at"].date().isoformat() == day
        where = figures[country_of(order["customer_id"])]
        if order["status"] == "cancelled":
            where["cancelled_orders"] += 1
        else:
            where["orders"] += 1
            where["revenue_eur"] += order["amount_eur"]
            buyers[country_of(order["customer_id"])].add(order["customer_id"])
    for session in home.read(SESSIONS, [day]).to_dict("records"):
        where = figures[country_of(session["customer_id"])]
        where["sessions"] += 1
        where["converted_sessions"] += bool(session["converted"])
    for event in home.read(EVENTS, [day]).to_dict("records"):
        where = figures[country_of(event["customer_id"])]
        where["events"] += 1
        where["late_events"] += event["lateness_days"] > 0
    for where_name, where in figures.items():
        where["customers"] = len(buyers[where_name])
    return figures


def test_daily_kpis_equal_a_recount_of_the_stored_transformation_tables(ran):
    home = ran.home
    kpis = home.read(DAILY_KPIS, DAYS)
    assert sorted(set(kpis["kpi_day"])) == DAYS
    for day in DAYS:
        expected = _expected_kpis(home, day)
        rows = kpis[kpis["kpi_day"] == day].to_dict("records")
        assert sorted(r["country"] for r in rows) == sorted(expected)
        assert "unknown" in expected  # anonymous visitors
        assert len(expected) > 2  # and several countries
        for row in rows:
            want = expected[row["country"]]
            for column in ("orders", "cancelled_orders", "customers", "sessions", "converted_sessions"):
                assert row[column] == want[column], (day, row["country"], column)
            assert (row["events"], row["late_events"]) == (want["events"], want["late_events"])
            assert row["revenue_eur"] == pytest.approx(want["revenue_eur"], abs=0.006)
            for ratio, numerator, denominator in (
                ("conversion_rate", "converted_sessions", "sessions"),
                ("late_event_share", "late_events", "events"),
                ("average_order_value_eur", "revenue_eur", "orders"),
            ):
                if want[denominator]:
                    tolerance = 0.006 if ratio == "average_order_value_eur" else 1e-9
                    assert row[ratio] == pytest.approx(want[numerator] / want[denominator], abs=tolerance)
                else:
                    assert pd.isna(row[ratio]), (day, row["country"], ratio)
    # The simulator delivers some events late: the KPI is not trivially zero.
    assert kpis["late_events"].sum() > 0


def test_each_kpi_partition_carries_its_trend_chart(ran):
    reports = Path(ran.home.settings.reports_dir.value).resolve()
    for metadata in (ran.metadata, ran.rerun_metadata):
        assert sorted(metadata) == DAYS
    for day in DAYS:
        markdown = ran.rerun_metadata[day]["trend"].value
        found = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
        assert found, markdown[:80]
        embedded = base64.b64decode(found.group(1))
        assert embedded.startswith(PNG)
        path = Path(ran.rerun_metadata[day]["trend_file"].value)
        assert path.is_file()
        assert path.resolve().is_relative_to(reports)
        assert day in path.name
        assert path.read_bytes() == embedded  # the file of the last run is the picture it embedded
        assert ran.metadata[day]["trend"].value.startswith("![")


def test_segments_reach_the_shop_keyed_by_its_own_customer_ids(ran):
    home = ran.home
    segments, syncs = ran.segments_after_first
    shop_ids = {row[0] for row in home.shop("SELECT customer_id FROM customers")}
    ids = [row[0] for row in segments]
    assert ids
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)
    assert set(ids) <= shop_ids
    assert not any(HEX64.fullmatch(str(i)) for i in ids)
    assert {row[1] for row in segments} <= set(SEGMENTS)
    assert [row[0] for row in syncs] == DAYS
    # Every customer of the newest day's features, resolved through the customers dimension (whose
    # tokens follow the documented scheme), holds the segment the rules give for that day.
    customers = home.read(CUSTOMERS, _days(START, LAST))
    by_token = dict(zip(customers["customer_token"], customers["customer_id"].astype(int), strict=True))
    assert all(home.token(i) == t for t, i in by_token.items())
    expected = {}
    for feature in home.read(CUSTOMER_FEATURES, [DAYS[-1]]).to_dict("records"):
        if feature["customer_token"] not in by_token:
            continue
        if feature["new_account"]:
            segment = "new"
        elif feature["orders_30d"] > 0:
            segment = "active"
        elif feature["orders_90d"] > 0 or feature["sessions_30d"] > 0:
            segment = "at_risk"
        else:
            segment = "churned"
        expected[by_token[feature["customer_token"]]] = segment
    # Three days in, nobody has lapsed: the newest day covers everyone ever synced, and every account
    # of the simulated shop is younger than a week (the rules themselves are tested in test_segments).
    assert {row[0]: row[1] for row in segments} == expected
    assert set(expected.values()) == {"new"}


def test_running_the_same_range_again_leaves_the_shops_segments_as_they_were(ran):
    assert ran.segments_after_first[0]
    assert ran.segments_after_rerun == ran.segments_after_first


# --- point in time, end to end ------------------------------------------------------------------------

PIT_FIRST, PIT_LAST = dt.date(2026, 11, 10), dt.date(2026, 11, 13)
PIT_TRAFFIC = {"orders_per_day": 200, "events_per_day": 800, "seed": 5}


def _features(home: Home, day: str) -> pd.DataFrame:
    frame = home.read(CUSTOMER_FEATURES, [day])
    return frame.sort_values("customer_token", ignore_index=True)


def test_a_late_backfill_reproduces_the_features_each_day_had(tmp_path):
    """Day by day, as the schedule and the propagation sensor would: each day's lifecycle, then a replay
    of every earlier transformation partition with what has landed by then. A backfill of the whole
    range afterwards, with all late data present, must give every day the features it had."""
    home = Home(tmp_path, PIT_FIRST, PIT_TRAFFIC)
    days = _days(PIT_FIRST, PIT_LAST)
    snapshots = {}
    for day in days:
        home.run(MAIN_JOB, dt.date.fromisoformat(day), dt.date.fromisoformat(day))
        home.run(REPLAY_JOB, PIT_FIRST, dt.date.fromisoformat(day))
        snapshots[day] = _features(home, day)
    events = home.read(EVENTS, days)
    # Late data did arrive after the days it belongs to, so the test is not vacuous.
    assert (events["lateness_days"] > 0).sum() > 0
    late_delivery_days = set(events.loc[events["lateness_days"] > 0, "delivery_day"])
    assert late_delivery_days & set(days[1:])
    home.run(REPLAY_JOB, PIT_FIRST, PIT_LAST)
    for day in days:
        assert len(snapshots[day]) > 0
        pd.testing.assert_frame_equal(_features(home, day), snapshots[day], obj=day)

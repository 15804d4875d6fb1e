"""The propagation sensor: the mapping alone, then real ingestion runs, sensor ticks and the runs it asks for."""

import datetime as dt
import itertools

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from de_assets.definitions import build_definitions
from de_assets.generation.assets import CLICKSTREAM_LANDING, SHOP_DATABASE
from de_assets.ingestion.assets import (
    CHANGED_DAYS,
    RAW_CUSTOMERS,
    RAW_EVENTS,
    RAW_EVENTS_REJECTED,
    RAW_ORDERS,
)
from de_assets.orchestration import propagation
from de_assets.orchestration.partitions import RANGE_END, RANGE_START, daily_partitions
from de_assets.orchestration.propagation import (
    SENSOR_NAME,
    Landing,
    PlannedRun,
    build_propagation_sensor,
    contiguous,
    plan_runs,
    read_landings,
)
from de_assets.serving.assets import CUSTOMER_FEATURES, CUSTOMER_SEGMENTS, DAILY_KPIS
from de_assets.settings import HOME, load_settings
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef
from de_assets.transformation.assets import (
    CUSTOMERS,
    CUSTOMERS_REJECTED,
    EVENTS,
    EVENTS_REJECTED,
    ORDERS,
    ORDERS_REJECTED,
    QUARANTINE,
    SESSIONS,
)
from de_assets_tests.transformation.clickstream_lines import event, iso, line

TODAY = dt.date(2026, 11, 22)
START = dt.date(2026, 11, 10)
LATE_DAYS = 3


def _day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


KEYS = [_day(i) for i in range(12)]
# Every serving asset reads orders, customers and the clickstream: it follows any raw landing.
SERVING = {DAILY_KPIS, CUSTOMER_FEATURES, CUSTOMER_SEGMENTS}


# The mapping, without Dagster runs.


def test_a_capture_requests_exactly_its_changed_creation_days_within_the_partitions():
    landing = Landing(RAW_ORDERS, _day(5), changed_days=("2026-11-01", _day(0), _day(1), _day(5)))
    assert plan_runs([landing], KEYS, LATE_DAYS) == [
        PlannedRun((RAW_ORDERS,), _day(0), _day(1)),
        PlannedRun((RAW_ORDERS,), _day(5), _day(5)),
    ]


def test_a_capture_that_changed_nothing_requests_nothing():
    assert plan_runs([Landing(RAW_CUSTOMERS, _day(3), changed_days=())], KEYS, LATE_DAYS) == []


def test_a_capture_without_the_metadata_requests_its_own_day():
    assert plan_runs([Landing(RAW_ORDERS, _day(4))], KEYS, LATE_DAYS) == [
        PlannedRun((RAW_ORDERS,), _day(4), _day(4))
    ]


def test_a_delivery_requests_the_days_whose_late_events_it_can_carry_clipped_at_the_first():
    assert plan_runs([Landing(RAW_EVENTS, _day(6))], KEYS, LATE_DAYS) == [
        PlannedRun((RAW_EVENTS,), _day(3), _day(6))
    ]
    assert plan_runs([Landing(RAW_EVENTS, _day(1))], KEYS, LATE_DAYS) == [
        PlannedRun((RAW_EVENTS,), _day(0), _day(1))
    ]
    assert plan_runs([Landing(RAW_EVENTS, "2026-12-25")], KEYS, LATE_DAYS) == []


def test_raw_assets_with_the_same_range_share_a_run_and_others_get_their_own():
    landings = [
        Landing(RAW_EVENTS, _day(2)),
        Landing(RAW_ORDERS, _day(2), changed_days=(_day(0), _day(1), _day(2))),
        Landing(RAW_CUSTOMERS, _day(2), changed_days=(_day(2),)),
        Landing(RAW_EVENTS_REJECTED, _day(9)),  # follows raw_events: nothing of its own
    ]
    assert plan_runs(landings, KEYS, LATE_DAYS) == [
        PlannedRun((RAW_EVENTS, RAW_ORDERS), _day(0), _day(2)),
        PlannedRun((RAW_CUSTOMERS,), _day(2), _day(2)),
    ]


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30))
def test_contiguous_spans_cover_exactly_the_positions_and_never_touch(positions):
    spans = contiguous(positions)
    covered = [at for first, last in spans for at in range(first, last + 1)]
    assert covered == sorted(set(positions))
    assert all(next_first > last + 1 for (_, last), (next_first, _) in itertools.pairwise(spans))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([RAW_ORDERS, RAW_CUSTOMERS, RAW_EVENTS]),
            st.integers(min_value=0, max_value=len(KEYS) - 1),
            st.sets(st.integers(min_value=-3, max_value=len(KEYS) + 2), max_size=5),
        ),
        max_size=8,
    )
)
def test_every_changeable_partition_is_requested_once_per_raw_asset(raw_landings):
    landings = [
        Landing(raw, KEYS[at], changed_days=tuple(_day(d) for d in days) if raw != RAW_EVENTS else None)
        for raw, at, days in raw_landings
    ]
    expected: dict[dg.AssetKey, list[str]] = {}
    for raw, at, days in raw_landings:
        if raw == RAW_EVENTS:
            wanted = {KEYS[i] for i in range(max(0, at - LATE_DAYS), at + 1)}
        else:
            wanted = {_day(d) for d in days} & set(KEYS)
        expected.setdefault(raw, []).extend(wanted)
    requested: dict[dg.AssetKey, list[str]] = {}
    for run in plan_runs(landings, KEYS, LATE_DAYS):
        days = KEYS[KEYS.index(run.first) : KEYS.index(run.last) + 1]
        for raw in run.sources:
            requested.setdefault(raw, []).extend(days)
    assert {raw: sorted(days) for raw, days in requested.items()} == {
        raw: sorted(set(days)) for raw, days in expected.items() if days
    }


def test_reading_pages_through_every_raw_materialization_and_resumes_where_it_stopped(monkeypatch):
    monkeypatch.setattr(propagation, "PAGE_SIZE", 2)  # pages end at different places per asset
    instance = dg.DagsterInstance.ephemeral()

    def land(keys: list[dg.AssetKey]) -> list[Landing]:
        landed = []
        for at, key in enumerate(keys):
            changed = None if key == RAW_EVENTS else (KEYS[at], KEYS[0])
            metadata = {} if changed is None else {CHANGED_DAYS: dg.MetadataValue.json(list(changed))}
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, partition=KEYS[at], metadata=metadata)
            )
            landed.append(Landing(key, KEYS[at], changed))
        return landed

    first = land([RAW_EVENTS, RAW_EVENTS, RAW_ORDERS, RAW_EVENTS, RAW_CUSTOMERS, RAW_EVENTS, RAW_ORDERS])
    landings, through = read_landings(instance, 0)
    assert sorted(map(repr, landings)) == sorted(map(repr, first))
    assert read_landings(instance, through) == ([], through)
    later = land([RAW_CUSTOMERS, RAW_EVENTS, RAW_EVENTS])
    landings, _ = read_landings(instance, through)
    assert sorted(map(repr, landings)) == sorted(map(repr, later))


# Real runs against a real instance.

TRAFFIC = {"orders_per_day": 200, "events_per_day": 300, "seed": 7, "defect_scale": 0.0}
SOURCES = [SHOP_DATABASE, CLICKSTREAM_LANDING]
RAW = [RAW_ORDERS, RAW_CUSTOMERS, RAW_EVENTS, RAW_EVENTS_REJECTED]


class Pipeline:
    """A home, the project's assets plus the sensor, an instance, and helpers to run and read them."""

    def __init__(self, home) -> None:
        self.settings = load_settings({HOME: str(home), "DE_ASSETS_START_DATE": _day(0)}, today=TODAY)
        base = build_definitions(self.settings)
        self.sensor = build_propagation_sensor(
            daily_partitions(self.settings.start_date), late_days=LATE_DAYS, minimum_interval_seconds=30
        )
        self.definitions = dg.Definitions(
            assets=base.assets, resources=base.resources, executor=base.executor, sensors=[self.sensor]
        )
        dg.Definitions.validate_loadable(self.definitions)
        self.job = self.definitions.resolve_implicit_global_asset_job_def()
        self.instance = dg.DagsterInstance.ephemeral()
        self.hot = HotStore(self.settings.hot_url.value)
        self.cursor: str | None = None

    def run(self, selection: list[dg.AssetKey], day: str, **kwargs) -> dg.ExecuteInProcessResult:
        return self.job.execute_in_process(
            instance=self.instance,
            asset_selection=selection,
            partition_key=day,
            raise_on_error=False,
            **kwargs,
        )

    def tick(self) -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.definitions, sensor_name=SENSOR_NAME
        )
        result = self.sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            self.cursor = result.cursor
        return result

    def execute(self, request: dg.RunRequest) -> None:
        result = self.job.execute_in_process(
            instance=self.instance, asset_selection=request.asset_selection, tags=request.tags
        )
        assert result.success

    def read(self, key: dg.AssetKey, days: list[str]) -> pd.DataFrame:
        return self.hot.load(TableRef.for_asset_key(key, "day"), days)[1]


def _days_of(request: dg.RunRequest) -> list[str]:
    return KEYS[KEYS.index(request.tags[RANGE_START]) : KEYS.index(request.tags[RANGE_END]) + 1]


def _source_orders(settings, where: str, **params) -> pd.DataFrame:
    engine = sa.create_engine(settings.source_db_url.value)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(
                sa.text(f"SELECT order_id, status, created_at FROM orders {where}"), conn, params=params
            )
    finally:
        engine.dispose()
    frame["day"] = pd.to_datetime(frame["created_at"]).dt.strftime("%Y-%m-%d")
    return frame


def _assert_orders_match_the_source(pipeline: Pipeline, days: list[str]) -> None:
    source = _source_orders(pipeline.settings, "")
    source = source[source["day"].isin(days)]
    table = pipeline.read(ORDERS, days)
    assert len(source) > 0
    pd.testing.assert_frame_equal(
        table[["order_id", "status"]].sort_values("order_id", ignore_index=True),
        source[["order_id", "status"]].sort_values("order_id", ignore_index=True),
        check_dtype=False,
    )


@pytest.fixture
def pipeline(tmp_path):
    return Pipeline(tmp_path)


def test_captures_propagate_to_the_creation_days_they_changed_historical_ones_included(pipeline):
    first_days = [_day(0), _day(1)]
    for day in first_days:
        assert pipeline.run(
            [*SOURCES, *RAW], day, run_config={"resources": {"simulation": {"config": TRAFFIC}}}
        ).success
    result = pipeline.tick()
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests  # orders, customers (created on both days) and events share the range
    assert _days_of(request) == first_days
    assert set(request.asset_selection) == {
        ORDERS,
        ORDERS_REJECTED,
        CUSTOMERS,
        CUSTOMERS_REJECTED,
        EVENTS,
        EVENTS_REJECTED,
        SESSIONS,
        QUARANTINE,
        *SERVING,
    }
    assert pipeline.read(ORDERS, first_days).empty
    pipeline.execute(request)
    _assert_orders_match_the_source(pipeline, first_days)
    assert isinstance(pipeline.tick(), dg.SkipReason)  # nothing new since

    # A failed capture stores nothing and triggers nothing.
    broken = {
        "resources": {"shop": {"config": {"url": f"sqlite:///{pipeline.settings.home}/missing/shop.sqlite"}}}
    }
    assert not pipeline.run([RAW_ORDERS], _day(2), run_config=broken).success
    assert isinstance(pipeline.tick(), dg.SkipReason)

    # The third day updates orders created on the first two: those partitions are rebuilt.
    day = _day(2)
    assert pipeline.run(SOURCES, day, run_config={"resources": {"simulation": {"config": TRAFFIC}}}).success
    assert pipeline.run([RAW_ORDERS], day).success
    window = _source_orders(
        pipeline.settings,
        "WHERE updated_at >= :start AND updated_at < :end",
        start=dt.datetime.fromisoformat(day),
        end=dt.datetime.fromisoformat(_day(3)),
    )
    expected = sorted(set(window["day"]) & set(KEYS))
    assert set(first_days) & set(expected), "the traffic must update orders of earlier days"
    before = pipeline.cursor
    result = pipeline.tick()
    assert isinstance(result, dg.SensorResult)
    requested = sorted(d for request in result.run_requests for d in _days_of(request))
    assert requested == expected
    assert all(
        set(r.asset_selection) == {ORDERS, ORDERS_REJECTED, QUARANTINE, *SERVING} for r in result.run_requests
    )
    # Re-evaluating the same window (cursor not stored yet) asks for the same run keys: deduplicated.
    pipeline.cursor = before
    assert [r.run_key for r in pipeline.tick().run_requests] == [r.run_key for r in result.run_requests]
    stale = pipeline.read(ORDERS, first_days)
    for request in result.run_requests:
        pipeline.execute(request)
    _assert_orders_match_the_source(pipeline, expected)
    changed = stale.merge(pipeline.read(ORDERS, first_days), on="order_id", suffixes=("_before", "_after"))
    assert (changed["status_before"] != changed["status_after"]).any()


def _deliver(pipeline: Pipeline, day: str, events: list[dict]) -> None:
    folder = pipeline.settings.home / "landing"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"clickstream_{day}_01.jsonl").write_text("".join(line(e) + "\n" for e in events))
    assert pipeline.run([RAW_EVENTS, RAW_EVENTS_REJECTED], day).success


def test_a_delivery_with_a_late_event_rebuilds_the_day_the_event_belongs_to(pipeline):
    day, next_day = START + dt.timedelta(days=4), START + dt.timedelta(days=5)
    _deliver(pipeline, day.isoformat(), [event(event_id="on-time", event_time=iso(day))])
    [request] = pipeline.tick().run_requests
    assert _days_of(request) == [_day(1), _day(2), _day(3), _day(4)]
    assert set(request.asset_selection) == {EVENTS, EVENTS_REJECTED, SESSIONS, QUARANTINE, *SERVING}
    pipeline.execute(request)
    assert list(pipeline.read(EVENTS, [day.isoformat()])["event_id"]) == ["on-time"]

    _deliver(
        pipeline,
        next_day.isoformat(),
        [
            event(event_id="next", event_time=iso(next_day)),
            event(event_id="late", event_time=iso(day, 80_000)),
        ],
    )
    [request] = pipeline.tick().run_requests
    assert day.isoformat() in _days_of(request)
    assert _days_of(request) == [_day(2), _day(3), _day(4), _day(5)]
    pipeline.execute(request)
    events = pipeline.read(EVENTS, [day.isoformat(), next_day.isoformat()])
    by_id = events.set_index("event_id")
    assert sorted(by_id.index) == ["late", "next", "on-time"]
    assert by_id.loc["late", "lateness_days"] == 1
    assert pd.Timestamp(by_id.loc["late", "event_time"]).date() == day
    sessions = pipeline.read(SESSIONS, [day.isoformat()])
    assert len(sessions) > 0

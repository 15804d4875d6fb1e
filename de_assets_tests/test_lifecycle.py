"""Generation → ingestion → transformation through Dagster, scored against the ground-truth ledger.

A few days of simulated traffic with every defect turned on (scaled up so each kind occurs), and a
schema drift on the last day. The outputs are read back from the tiers and compared with the ledger:
every injected defect must be caught and no valid record rejected.
"""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from de_assets.definitions import MAIN_JOB, REPLAY_JOB, build_definitions
from de_assets.generation.ledger import read_ledger
from de_assets.ingestion.assets import RAW_EVENTS, RAW_EVENTS_REJECTED, RAW_ORDERS
from de_assets.quality.scorecard import score
from de_assets.settings import HOME, load_settings
from de_assets.storage.cold import ColdStore
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

TODAY = dt.date(2026, 11, 22)
START = dt.date(2026, 11, 9)
FIRST, LAST = dt.date(2026, 11, 12), dt.date(2026, 11, 16)
DRIFT = LAST
TRAFFIC = {
    "orders_per_day": 400,
    "events_per_day": 3_000,
    "seed": 11,
    "defect_scale": 3.0,
    "schema_drift_day": DRIFT.isoformat(),
}


def _days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


class Lifecycle:
    def __init__(self, home) -> None:
        self.settings = load_settings(
            {HOME: str(home), "DE_ASSETS_START_DATE": START.isoformat()}, today=TODAY
        )
        self.definitions = build_definitions(self.settings)
        self.instance = dg.DagsterInstance.ephemeral()
        self.hot = HotStore(self.settings.hot_url.value)
        self.cold = ColdStore(self.settings.cold_url.value)

    def run(
        self, job: str, first: dt.date, last: dt.date, traffic: dict | None = None
    ) -> dg.ExecuteInProcessResult:
        config = {"resources": {"simulation": {"config": traffic}}} if traffic else {}
        return self.definitions.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            run_config=config,
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
            raise_on_error=False,
        )

    def read(self, key: dg.AssetKey, days: list[str]) -> pd.DataFrame:
        store = self.hot if key in (ORDERS, CUSTOMERS, EVENTS, SESSIONS, QUARANTINE) else self.cold
        _states, frame = store.load(TableRef.for_asset_key(key, "day"), days)
        return frame


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    life = Lifecycle(tmp_path_factory.mktemp("home"))
    main = life.run(MAIN_JOB, FIRST, LAST, TRAFFIC)
    # Late events of the first days belong to days before them: replay picks them up from the raw zone.
    replay = life.run(REPLAY_JOB, START, FIRST - dt.timedelta(days=1))
    life.results = (main, replay)
    return life


def test_the_main_job_and_the_replay_succeed_with_every_blocking_check_passing(lifecycle):
    for result in lifecycle.results:
        assert result.success, [e.message for e in result.get_step_failure_events()]
        for check in result.get_asset_check_evaluations():
            if check.check_name.startswith("pandera") or check.check_name == "conservation":
                assert check.passed, (check.asset_key, check.check_name, check.metadata)


def test_every_injected_defect_is_caught_and_no_valid_record_rejected(lifecycle):
    days = _days(START, LAST)
    ledger = read_ledger(lifecycle.settings.ledger_dir.value)
    quarantine = lifecycle.read(QUARANTINE, days)
    raw_events = lifecycle.read(RAW_EVENTS, _days(FIRST, LAST))
    card = score(
        ledger,
        quarantine,
        lifecycle.read(EVENTS, days),
        lifecycle.read(ORDERS, days),
        lifecycle.read(CUSTOMERS, days),
        set(raw_events["source_file"]),
    )
    print("\n" + card.as_markdown())
    missed = card.by_defect[card.by_defect["caught"] < card.by_defect["injected"]]
    assert missed.empty, missed
    assert card.false_rejections.empty, card.false_rejections.head(20)
    # The scale makes every defect kind occur, so the score is not vacuous.
    assert set(card.by_defect["defect"]) >= {"malformed_json", "late_event", "hard_delete", "negative_amount"}


def test_quarantine_unions_every_stage_and_points_at_the_raw_zone(lifecycle):
    days = _days(START, LAST)
    quarantine = lifecycle.read(QUARANTINE, days)
    stages = [
        lifecycle.read(key, days)
        for key in (RAW_EVENTS_REJECTED, ORDERS_REJECTED, CUSTOMERS_REJECTED, EVENTS_REJECTED)
    ]
    assert len(quarantine) == sum(len(s) for s in stages) > 0
    assert set(quarantine["asset"]) == {
        "ingestion/raw_events",
        "transformation/orders",
        "transformation/customers",
        "transformation/events",
    }
    assert quarantine["raw_asset"].notna().all()
    assert quarantine["raw_partition"].notna().all()
    assert "payload" not in quarantine.columns


def test_drift_day_breaks_the_contract_of_its_own_delivery_only(lifecycle):
    main, _ = lifecycle.results
    evaluations = {(c.asset_key, c.check_name): c for c in main.get_asset_check_evaluations()}
    contract = evaluations[(EVENTS, "data_contract")]
    assert not contract.passed
    assert contract.severity == dg.AssetCheckSeverity.ERROR
    drift = evaluations[(EVENTS, "schema_drift")]
    assert not drift.passed
    assert "referrer" in str(drift.metadata)
    events = lifecycle.read(EVENTS, _days(START, LAST))
    assert not (events["delivery_day"] == DRIFT.isoformat()).any()
    assert (events["delivery_day"] == (DRIFT - dt.timedelta(days=1)).isoformat()).sum() > 0


def test_replaying_after_the_broken_delivery_leaves_earlier_partitions_unchanged(lifecycle):
    earlier = _days(FIRST, DRIFT - dt.timedelta(days=1))
    before = {key: lifecycle.read(key, earlier) for key in (EVENTS, SESSIONS)}
    # Partitions before the drift day read the drift day's raw partition through their look-ahead.
    result = lifecycle.run(REPLAY_JOB, FIRST, DRIFT)
    assert result.success
    for key, frame in before.items():
        after = lifecycle.read(key, earlier)
        columns = [c for c in frame.columns if c != "processed_at"]
        pd.testing.assert_frame_equal(
            frame[columns].sort_values(columns[0], ignore_index=True),
            after[columns].sort_values(columns[0], ignore_index=True),
        )


def test_raw_capture_is_append_only_across_re_runs(lifecycle):
    day = _days(FIRST, FIRST)
    before = lifecycle.read(RAW_ORDERS, day)
    # Later days updated some of the first day's orders at the source; re-capturing the first window
    # must keep every version it had (a later update moves a row out of the window at the source).
    result = lifecycle.definitions.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=lifecycle.instance,
        asset_selection=[RAW_ORDERS],
        partition_key=day[0],
        raise_on_error=False,
    )
    assert result.success
    after = lifecycle.read(RAW_ORDERS, day)
    assert len(after) >= len(before)
    key = ["order_id", "updated_at", "op"]
    kept = before[key].merge(after[key], how="left", indicator=True)
    assert (kept["_merge"] == "both").all()


def test_a_partition_failing_its_blocking_checks_leaves_the_tables_untouched(lifecycle, monkeypatch):
    """Write-audit-publish: a bad events output is audited in memory and never stored or passed on."""
    import de_assets.transformation.assets as transformation_assets

    # Days whose look-ahead ends before the drift day, so the only ERROR is the planted one.
    first, bad_day = START, START + dt.timedelta(days=1)
    days = _days(first, bad_day)
    before = {key: lifecycle.read(key, days) for key in (EVENTS, SESSIONS, EVENTS_REJECTED)}
    build_events = transformation_assets.build_events

    def corrupted(raw, day, **options):
        result = build_events(raw, day, **options)
        if day == bad_day:  # a bug that loses event ids: the pandera model must stop it
            result.events.loc[result.events.index[:5], "event_id"] = None
        return result

    monkeypatch.setattr(transformation_assets, "build_events", corrupted)
    result = lifecycle.run(REPLAY_JOB, first, bad_day)
    assert not result.success
    failed = [
        c
        for c in result.get_asset_check_evaluations()
        if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert [(c.asset_key, c.check_name) for c in failed] == [(EVENTS, "pandera_events")]
    assert failed[0].metadata["num_failures"].value >= 5
    stored = {e.asset_key for e in result.get_asset_materialization_events()}
    assert stored.isdisjoint({EVENTS, EVENTS_REJECTED, SESSIONS, QUARANTINE})  # orders still went ahead
    assert len(before[EVENTS]) > 0
    assert len(before[SESSIONS]) > 0
    for key, frame in before.items():
        pd.testing.assert_frame_equal(frame, lifecycle.read(key, days))


def test_each_partition_records_its_own_figures_for_the_control_charts(lifecycle):
    main, _ = lifecycle.results
    recorded = {}
    for event in main.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        recorded[(materialization.asset_key, materialization.partition)] = materialization.metadata
    orders = lifecycle.read(ORDERS, _days(FIRST, LAST))
    revenue = orders.groupby(orders["created_at"].dt.strftime("%Y-%m-%d"))["amount_eur"].sum()
    for day in _days(FIRST, LAST):
        assert recorded[(ORDERS, day)]["revenue_eur"].value == pytest.approx(revenue.get(day, 0.0))
    evaluations = {(c.asset_key, c.check_name): c for c in main.get_asset_check_evaluations()}
    by_partition = evaluations[(ORDERS, "row_count_anomaly")].metadata["partitions"].value
    counts = orders["created_at"].dt.strftime("%Y-%m-%d").value_counts()
    assert {day: entry["value"] for day, entry in by_partition.items()} == {
        day: float(counts.get(day, 0)) for day in _days(FIRST, LAST)
    }

"""Check factories: pandera results (PII masked), conservation, thresholds, drift, SPC and metric history.

No ``from __future__ import annotations`` here: this module defines Dagster assets with annotated
context parameters, which Dagster must resolve at definition time.
"""

import json
import math
import re

import dagster as dg
import pandas as pd
import pytest

from de_assets.quality import models
from de_assets.quality.checks import (
    MASK,
    SPC_WINDOW,
    ControlLimits,
    column_schema,
    conservation_check_result,
    control_limits,
    drift_check_result,
    metric_history,
    pandera_check_result,
    pandera_check_spec,
    spc_check_result,
    threshold_check_result,
)
from de_assets.quality.conservation import Conservation
from de_assets_tests.quality import frames
from de_assets_tests.quality.frames import EMAIL, FULL_NAME, floats, naive, text

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN
SECRET_PHONE = "+44 20 7946 0958"


def _all_text(result: dg.AssetCheckResult) -> str:
    """Everything the result would put in the event log, as text."""
    parts = [result.description or "", result.check_name or ""]
    for key, value in (result.metadata or {}).items():
        parts += [key, json.dumps(value.value, default=str), str(value)]
    return "\n".join(parts)


def _md_rows(result: dg.AssetCheckResult) -> list[list[str]]:
    lines = result.metadata["failure_sample"].value.strip().splitlines()[2:]  # header and rule
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))] for line in lines]


# --- pandera ---------------------------------------------------------------------------------------


def test_spec_name_is_stable_and_blocking_by_default():
    spec = pandera_check_spec(models.RawOrdersModel, dg.AssetKey(["ingestion", "raw_orders"]))
    assert spec.name == "pandera_raw_orders"
    assert spec.asset_key == dg.AssetKey(["ingestion", "raw_orders"])
    assert spec.blocking is True
    assert "RawOrdersModel" in spec.description
    assert pandera_check_spec(models.SessionsModel, dg.AssetKey("s"), blocking=False).blocking is False
    assert pandera_check_spec(models.QuarantineModel, dg.AssetKey("q")).name == "pandera_quarantine"


def test_good_frame_passes_with_rows_checked():
    result = pandera_check_result(
        models.OrdersModel, frames.orders(), check_name="c", asset_key=dg.AssetKey("o")
    )
    assert result.passed
    assert result.check_name == "c"
    assert result.asset_key == dg.AssetKey("o")
    assert result.metadata["rows_checked"].value == 2


def test_empty_frame_with_the_dtypes_passes_with_zero_rows():
    result = pandera_check_result(models.EventsModel, frames.events().iloc[:0], check_name="c")
    assert result.passed
    assert result.metadata["rows_checked"].value == 0


def test_failure_counts_faults_by_column_and_check():
    bad = frames.orders()
    bad.loc[0, "amount"] = -1.0
    bad.loc[1, "status"] = "refunded"
    result = pandera_check_result(models.OrdersModel, bad, check_name="c")
    assert not result.passed
    assert result.severity == ERROR
    assert result.metadata["num_failures"].value == 2
    by_check = {(r["column"], r["check"]): r["count"] for r in result.metadata["failures_by_check"].value}
    assert by_check[("amount", "greater_than_or_equal_to(0)")] == 1
    assert len(by_check) == 2
    shown = {(row[1], row[3], row[4]) for row in _md_rows(result)}
    assert ("amount", "-1.0", "0") in shown
    assert ("status", "refunded", "1") in shown


@pytest.mark.parametrize("frame", [pd.DataFrame(), frames.orders().drop(columns=["amount", "status"])])
def test_missing_columns_are_a_failure_not_a_crash(frame):
    result = pandera_check_result(models.OrdersModel, frame, check_name="c")
    assert not result.passed
    missing = {
        r["count"] for r in result.metadata["failures_by_check"].value if r["check"] == "column_in_dataframe"
    }
    assert missing == {12 if frame.empty else 2}


def test_wrong_dtypes_are_a_failure_not_a_crash():
    frame = frames.sessions().astype({"events": "str", "ended_at": "str"})
    result = pandera_check_result(models.SessionsModel, frame, check_name="c")
    assert not result.passed
    checks = {(r["column"], r["check"]) for r in result.metadata["failures_by_check"].value}
    assert ("events", "dtype('int64')") in checks


def test_sample_is_capped_and_shows_every_kind_of_fault():
    bad = pd.concat([frames.orders()] * 20, ignore_index=True)  # 40 rows: order_id duplicated
    bad["status"] = "lost"
    result = pandera_check_result(models.OrdersModel, bad, check_name="c", sample_size=5)
    rows = _md_rows(result)
    assert len(rows) == 5
    assert {row[1] for row in rows} == {"order_id", "status"}
    assert result.metadata["num_failures"].value == 80


def test_pii_never_reaches_the_metadata_of_a_raw_customers_failure():
    bad = frames.raw_customers().assign(phone=text(SECRET_PHONE, None))  # a column the model does not know
    bad["updated_at"] = naive(None, None)  # dataframe-level check: reports every column of the row
    bad.loc[1, "email"] = EMAIL
    bad = pd.concat([bad, bad.iloc[[0]]], ignore_index=True).astype({"customer_id": "str"})
    result = pandera_check_result(models.RawCustomersModel, bad, check_name="c", sample_size=100)
    assert not result.passed
    text_ = _all_text(result)
    for secret in (EMAIL, FULL_NAME, SECRET_PHONE, "ada.lovelace"):
        assert secret not in text_
    shown = {(row[1], row[3]) for row in _md_rows(result)}
    assert ("email", MASK) in shown
    assert ("phone", MASK) in shown
    assert ("window_day", "2024-01-01") in shown  # masking is by column, not everything


def test_pii_in_the_index_is_masked():
    bad = frames.raw_customers().assign(updated_at=naive(None, None)).set_index(text(EMAIL, "x@example.org"))
    result = pandera_check_result(models.RawCustomersModel, bad, check_name="c")
    assert not result.passed
    assert EMAIL not in _all_text(result)
    assert "x@example.org" not in _all_text(result)


def test_an_unhashed_value_in_a_token_column_is_masked():
    bad = frames.customers()
    bad.loc[0, "email_token"] = EMAIL  # pseudonymisation skipped: the raw address fails the hex check
    result = pandera_check_result(models.CustomersModel, bad, check_name="c")
    assert not result.passed
    assert EMAIL not in _all_text(result)
    assert ("email_token", MASK) in {(row[1], row[3]) for row in _md_rows(result)}


def test_pii_in_event_extra_fields_is_masked_in_a_dataframe_check():
    bad = frames.events()
    bad["extra_fields"] = text(None, json.dumps({"contact": EMAIL}))
    bad["amount"] = floats(None, None)  # purchase without amount: every column of that row is reported
    result = pandera_check_result(models.EventsModel, bad, check_name="c")
    assert not result.passed
    assert "ada.lovelace" not in _all_text(result)


def test_a_check_pattern_with_pipes_keeps_the_markdown_table_intact():
    bad = frames.raw_orders()
    bad.loc[0, "window_day"] = "2024-13-01"
    rows = _md_rows(pandera_check_result(models.RawOrdersModel, bad, check_name="c"))
    assert len(rows) == 1
    assert len(rows[0]) == 5


def test_column_schema_lists_types_constraints_descriptions_and_pii_tags():
    schema = column_schema(models.RawCustomersModel)
    columns = {column.name: column for column in schema.columns}
    assert schema.columns[0].name == "customer_id"  # the model's own columns before inherited ones
    assert set(columns) == set(models.RawCustomersModel.to_schema().columns)
    assert columns["email"].tags == {"pii": "true"}
    assert columns["country"].tags == {}
    assert columns["email"].constraints.nullable is True
    assert columns["captured_at"].type == "datetime64[us, UTC]"
    assert columns["captured_at"].constraints.nullable is False
    assert columns["created_at"].type == "datetime64 (naive)"
    assert columns["customer_id"].type == "int64"
    assert columns["full_name"].type == "str"
    assert "upsert rows need updated_at" in schema.constraints.other
    assert all(column.description for column in schema.columns)


def test_column_schema_marks_unique_columns_and_table_rules():
    orders = {c.name: c for c in column_schema(models.OrdersModel).columns}
    assert orders["order_id"].constraints.unique is True
    assert orders["customer_id"].type == "Int64"
    assert orders["amount"].constraints.other == ["greater_than_or_equal_to(0)"]
    raw_events = column_schema(models.RawEventsModel)
    assert "unique (source_file, line_number)" in raw_events.constraints.other
    # the schema is valid asset metadata
    assert dg.MetadataValue.table_schema(raw_events).schema == raw_events


# --- conservation, thresholds, drift ----------------------------------------------------------------


def test_conservation_passes_when_every_partition_balances():
    result = conservation_check_result(
        "conservation",
        {
            "2024-01-01": Conservation(10, 7, 1, {"duplicates": 2}),
            "2024-01-02": Conservation(5, 5, 0),
        },
    )
    assert result.passed
    assert result.metadata["rows_in"].value == 15
    assert result.metadata["rows_out"].value == 12
    assert result.metadata["rows_dropped"].value == 2
    assert result.metadata["rows_quarantined"].value == 1
    assert result.metadata["dropped_duplicates"].value == 2
    assert result.metadata["unbalanced_partitions"].value == {}


def test_conservation_fails_with_error_naming_the_unbalanced_partition():
    result = conservation_check_result(
        "conservation",
        {"2024-01-01": Conservation(10, 10, 0), "2024-01-02": Conservation(5, 3, 1)},
    )
    assert not result.passed
    assert result.severity == ERROR
    assert result.metadata["rows_unaccounted"].value == 1
    assert list(result.metadata["unbalanced_partitions"].value) == ["2024-01-02"]
    assert result.metadata["unbalanced_partitions"].value["2024-01-02"]["unaccounted"] == 1


def test_conservation_errors_in_two_partitions_cannot_cancel_out():
    result = conservation_check_result(
        "conservation",
        {"2024-01-01": Conservation(10, 11, 0), "2024-01-02": Conservation(5, 4, 0)},
    )
    assert result.metadata["rows_unaccounted"].value == 0
    assert not result.passed


def test_conservation_of_no_partitions_passes():
    assert conservation_check_result("conservation", {}).passed


@pytest.mark.parametrize(
    ("rejected", "total", "passed", "severity"),
    [
        (0, 100, True, None),
        (1, 100, False, WARN),
        (5, 100, False, WARN),
        (6, 100, False, ERROR),
        (0, 0, True, None),
    ],
)
def test_threshold_check(rejected, total, passed, severity):
    result = threshold_check_result(
        "contract", rejected=rejected, total=total, threshold_share=0.05, what="lines"
    )
    assert result.passed is passed
    if severity is not None:
        assert result.severity == severity
    assert result.metadata["share"].value == pytest.approx(rejected / total if total else 0.0)
    assert "lines" in result.description


@pytest.mark.parametrize(("rejected", "total", "share"), [(2, 1, 0.1), (-1, 5, 0.1), (1, 5, 1.5)])
def test_threshold_check_refuses_impossible_counts(rejected, total, share):
    with pytest.raises(ValueError, match=r"must|need"):
        threshold_check_result("contract", rejected=rejected, total=total, threshold_share=share, what="x")


def test_drift_warns_listing_new_fields_with_counts():
    result = drift_check_result("schema_drift", {"referrer": 3, "device_type": 12, "never": 0})
    assert not result.passed
    assert result.severity == WARN
    assert result.metadata["new_fields"].value == {"device_type": 12, "referrer": 3}
    assert "referrer (3)" in result.description
    assert drift_check_result("schema_drift", {}).passed


# --- statistical process control --------------------------------------------------------------------

# Worked by hand: mean 5, squared deviations 9+1+1+1+0+0+4+16 = 32, sample variance 32/7.
HISTORY = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
SIGMA = math.sqrt(32 / 7)


def test_control_limits_use_the_sample_standard_deviation():
    limits = control_limits(HISTORY)
    assert limits is not None
    assert limits.mean == pytest.approx(5.0)
    assert limits.sigma == pytest.approx(SIGMA)
    assert limits.lower == pytest.approx(5.0 - 3 * SIGMA)
    assert limits.upper == pytest.approx(5.0 + 3 * SIGMA)
    two = control_limits(HISTORY, sigmas=2.0)
    assert two == ControlLimits(two.mean, two.sigma, 5.0 - 2 * two.sigma, 5.0 + 2 * two.sigma)


def test_control_limits_need_enough_finite_points():
    assert control_limits(HISTORY[:6]) is None
    assert control_limits([*HISTORY[:6], math.nan, math.inf]) is None
    assert control_limits(HISTORY[:6], min_points=6) is not None
    with pytest.raises(ValueError, match="min_points"):
        control_limits(HISTORY, min_points=1)


def _days(start: int, values: list[float]) -> dict[str, float]:
    return {f"2024-01-{start + i:02d}": v for i, v in enumerate(values)}


def test_spc_passes_a_value_within_limits_and_reports_them():
    result = spc_check_result(
        "row_count_anomaly", "dagster/row_count", {"2024-01-09": 6.0}, _days(1, HISTORY)
    )
    assert result.passed
    entry = result.metadata["partitions"].value["2024-01-09"]
    assert entry["mean"] == pytest.approx(5.0)
    assert entry["upper"] == pytest.approx(5.0 + 3 * SIGMA)
    assert entry["history_points"] == 8
    assert result.metadata["value"].value == 6.0
    assert result.metadata["lower"].value == pytest.approx(5.0 - 3 * SIGMA)


def test_spc_warns_on_a_value_outside_the_limits():
    result = spc_check_result(
        "row_count_anomaly", "rows", {"2024-01-09": 5.0 + 3 * SIGMA + 0.01}, _days(1, HISTORY)
    )
    assert not result.passed
    assert result.severity == WARN
    assert result.metadata["out_of_control"].value == ["2024-01-09"]


def test_spc_with_too_little_history_passes_with_a_note():
    result = spc_check_result("row_count_anomaly", "rows", {"2024-01-04": 1000.0}, _days(1, HISTORY[:3]))
    assert result.passed
    assert "too little history" in result.description
    assert "note" in result.metadata["partitions"].value["2024-01-04"]


def test_spc_ignores_later_partitions_and_uses_only_the_latest_window():
    # 10 wild early days, then 30 days alternating 10/12 (mean 11, sample sigma ~1.017), then wild later days
    early = {f"2023-12-{day:02d}": 1000.0 for day in range(1, 11)}
    steady = {f"2024-01-{day:02d}": 10.0 + 2 * (day % 2) for day in range(1, 31)}
    later = {"2024-02-01": 5000.0, "2024-02-02": 9000.0}
    assert len(steady) == SPC_WINDOW
    history = {**early, **steady, **later}
    within = spc_check_result("c", "m", {"2024-01-31": 11.0}, history)
    assert within.passed
    assert within.metadata["mean"].value == pytest.approx(11.0)
    outside = spc_check_result("c", "m", {"2024-01-31": 16.0}, history)
    assert not outside.passed  # with the early days included, 16 would be well within the limits


def test_spc_takes_this_runs_values_over_recorded_history_for_earlier_partitions():
    recorded = _days(1, HISTORY)  # 2024-01-01 .. 2024-01-08
    run = {"2024-01-08": 1000.0, "2024-01-09": 6.0}  # 01-08 recomputed by this run
    result = spc_check_result("c", "m", run, recorded)
    report = result.metadata["partitions"].value
    assert report["2024-01-08"]["mean"] == pytest.approx(sum(HISTORY[:7]) / 7)
    assert report["2024-01-08"]["in_control"] is False
    expected_mean = (sum(HISTORY[:7]) + 1000.0) / 8
    assert report["2024-01-09"]["mean"] == pytest.approx(expected_mean)
    assert "value" not in result.metadata  # flat numbers only for a single partition


# --- metric history from a real instance -----------------------------------------------------------

DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01")


class MetricConfig(dg.Config):
    rows: float | None = None
    label: str | None = None


@dg.asset(partitions_def=DAILY)
def measured(context: dg.AssetExecutionContext, config: MetricConfig) -> dg.Output[int]:
    metadata: dict[str, object] = {}
    if config.rows is not None:
        metadata["rows"] = int(config.rows) if config.rows.is_integer() else config.rows
    if config.label is not None:
        metadata["rows"] = config.label
    return dg.Output(0, metadata=metadata)


def _materialize(instance: dg.DagsterInstance, partition: str, **config: object) -> None:
    result = dg.materialize(
        [measured],
        partition_key=partition,
        instance=instance,
        resources={"io_manager": dg.InMemoryIOManager()},
        run_config={"ops": {"measured": {"config": config}}},
    )
    assert result.success


def test_metric_history_reads_the_latest_numeric_value_per_partition():
    instance = dg.DagsterInstance.ephemeral()
    _materialize(instance, "2024-01-01", rows=10)
    _materialize(instance, "2024-01-02", rows=20.5)
    _materialize(instance, "2024-01-03", rows=30)
    _materialize(instance, "2024-01-02", rows=21)  # re-materialised: the latest value wins
    _materialize(instance, "2024-01-04")  # no entry: no history for that day
    _materialize(instance, "2024-01-05", rows=50)
    _materialize(instance, "2024-01-05", label="fifty")  # latest entry not numeric: the older value stands
    history = metric_history(instance, measured.key, "rows")
    assert history == {"2024-01-01": 10.0, "2024-01-02": 21.0, "2024-01-03": 30.0, "2024-01-05": 50.0}
    assert metric_history(instance, measured.key, "other") == {}
    assert metric_history(instance, dg.AssetKey("never"), "rows") == {}
    # pages through the cursor; the limit counts materializations read, newest first
    assert metric_history(instance, measured.key, "rows", page_size=2) == history
    newest_four = {"2024-01-05": 50.0, "2024-01-02": 21.0}  # 05 (text), 05, 04 (none), 02
    assert metric_history(instance, measured.key, "rows", limit=4, page_size=3) == newest_four


# --- the write-audit-publish pattern end to end -----------------------------------------------------

RAW_ORDERS = dg.AssetKey("raw_orders")
SPEC = pandera_check_spec(models.RawOrdersModel, RAW_ORDERS)
BAD_DAY = "2024-01-02"


class RecordingIOManager(dg.IOManager):
    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], object] = {}

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self.stored[(context.asset_key.to_user_string(), context.asset_partition_key)] = obj

    def load_input(self, context: dg.InputContext) -> object:
        return self.stored[(context.asset_key.to_user_string(), context.asset_partition_key)]


@dg.asset(key=RAW_ORDERS, partitions_def=DAILY, check_specs=[SPEC], output_required=False)
def raw_orders(context: dg.AssetExecutionContext):
    frame = frames.raw_orders()
    if context.partition_key == BAD_DAY:
        frame.loc[0, "op"] = "merge"
    check = pandera_check_result(models.RawOrdersModel, frame, check_name=SPEC.name, asset_key=RAW_ORDERS)
    yield check
    if check.passed:
        yield dg.Output(frame)


DOWNSTREAM_RUNS: list[str] = []


@dg.asset(partitions_def=DAILY)
def order_count(context: dg.AssetExecutionContext, raw_orders: pd.DataFrame) -> int:
    DOWNSTREAM_RUNS.append(context.partition_key)
    return len(raw_orders)


def test_a_failed_blocking_check_publishes_nothing_and_stops_downstream():
    DOWNSTREAM_RUNS.clear()
    io_manager = RecordingIOManager()
    instance = dg.DagsterInstance.ephemeral()

    def run(partition: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [raw_orders, order_count],
            partition_key=partition,
            instance=instance,
            resources={"io_manager": io_manager},
            raise_on_error=False,
        )

    good = run("2024-01-01")
    assert good.success
    assert [e.passed for e in good.get_asset_check_evaluations()] == [True]
    assert set(io_manager.stored) == {("raw_orders", "2024-01-01"), ("order_count", "2024-01-01")}

    bad = run(BAD_DAY)
    assert not bad.success
    (evaluation,) = bad.get_asset_check_evaluations()
    assert evaluation.check_name == "pandera_raw_orders"
    assert not evaluation.passed
    assert evaluation.severity == ERROR
    assert set(io_manager.stored) == {("raw_orders", "2024-01-01"), ("order_count", "2024-01-01")}
    assert DOWNSTREAM_RUNS == ["2024-01-01"]
    published = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_ORDERS, asset_partitions=[BAD_DAY]), limit=10
    )
    assert published.records == []

"""transformation/orders: ownership, versions, deletes, validation and conservation of one creation day."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from de_assets.quality.models import OrdersModel, QuarantineModel
from de_assets.transformation.orders import build_orders
from de_assets_tests.transformation.captures import (
    ORDER_DTYPES,
    PROCESSED_AT,
    at,
    capture_frame,
    check_partitions,
    day,
    expected_partitions,
    histories,
    simulate_shop,
    tombstone,
    version,
)

RATES = {"EUR": 1.0, "USD": 0.5, "GBP": 1.25}
STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled")
VALID = {"customer_id": 7, "status": "paid", "amount": 10.0, "currency": "USD"}


def order(order_id, created, updated, window, captured, **changes):
    return version("order_id", order_id, created, updated, window, captured, **{**VALID, **changes})


def build(rows, partition=0, lookahead=2, rates=RATES):
    raw = rows if isinstance(rows, pd.DataFrame) else capture_frame(rows, ORDER_DTYPES)
    return build_orders(raw, day(partition), lookahead_days=lookahead, rates=rates, processed_at=PROCESSED_AT)


def by_reason(result):
    return dict(zip(result.quarantine["source_key"], result.quarantine["reason"], strict=True))


def test_latest_version_with_duplicates_counted_once():
    rows = [
        order(1, at(0, 9), at(0, 9), 0, at(1, 0), status="placed"),
        order(1, at(0, 9), at(0, 9), 1, at(2, 0), status="placed"),  # the same version captured again
        order(1, at(0, 9), at(1, 8), 1, at(2, 0), status="shipped", amount=12.345),
        order(2, at(0, 10), at(0, 10), 0, at(1, 0), currency="GBP", customer_id=8),
    ]
    result = build(rows)
    orders = result.orders.set_index("order_id")
    assert orders.loc[1, "status"] == "shipped"
    assert orders.loc[1, "versions_seen"] == 3
    assert orders.loc[1, "captured_at"] == pd.Timestamp("2024-01-03", tz="UTC")
    assert orders.loc[1, "amount_eur"] == pytest.approx(6.17)  # 12.345 * 0.5 = 6.1725
    assert orders.loc[2, "fx_rate_to_eur"] == 1.25
    assert orders.loc[2, "amount_eur"] == pytest.approx(12.5)
    assert orders.loc[2, "customer_id"] == 8
    assert result.conservation.dropped_by == {"duplicate": 1, "superseded": 1, "deleted": 0}
    c = result.conservation
    assert (c.rows_in, c.rows_out, c.quarantined) == (4, 2, 0)
    OrdersModel.validate(result.orders)


OUTPUT_DTYPES = {
    "order_id": "int64",
    "customer_id": "Int64",
    "status": "str",
    "amount": "float64",
    "currency": "str",
    "fx_rate_to_eur": "float64",
    "amount_eur": "float64",
    "created_at": "datetime64[us, UTC]",
    "updated_at": "datetime64[us, UTC]",
    "versions_seen": "int64",
    "captured_at": "datetime64[us, UTC]",
    "processed_at": "datetime64[us, UTC]",
}


def test_output_columns_and_dtypes():
    result = build([order(1, at(0), at(0), 0, at(1))])
    assert set(result.orders.columns) == set(OrdersModel.to_schema().columns)
    assert {name: str(dtype) for name, dtype in result.orders.dtypes.items()} == OUTPUT_DTYPES
    assert list(result.orders.columns) == list(OUTPUT_DTYPES)
    assert result.orders.loc[0, "processed_at"] == pd.Timestamp(PROCESSED_AT)


def test_a_hash_collision_never_merges_two_versions(monkeypatch):
    rows = [
        order(1, at(0), at(0, 13), 0, at(1, 1), status="paid"),
        order(1, at(0), at(0, 13), 0, at(1, 2), status="paid"),
        order(1, at(0), at(0, 13), 0, at(1, 3), status="cancelled"),
        order(2, at(0), at(0), 0, at(1)),
    ]
    expected = build(rows)
    colliding = lambda frame, index: pd.Series(np.zeros(len(frame), np.uint64))  # noqa: E731
    monkeypatch.setattr(pd.util, "hash_pandas_object", colliding)
    result = build(rows)
    pd.testing.assert_frame_equal(result.orders, expected.orders)
    assert result.conservation == expected.conservation
    assert result.conservation.dropped_by == {"duplicate": 1, "superseded": 1, "deleted": 0}
    assert result.orders["status"].tolist() == ["cancelled", "paid"]


def test_tie_on_updated_at_goes_to_the_latest_capture():
    rows = [
        order(1, at(0), at(0, 13), 0, at(1, 3), status="paid"),
        order(1, at(0), at(0, 13), 0, at(1, 1), status="cancelled"),
    ]
    result = build(rows)
    assert result.orders["status"].tolist() == ["paid"]
    assert result.conservation.dropped_by["superseded"] == 1


def test_a_deleted_order_is_gone_and_its_rows_are_accounted():
    rows = [
        order(1, at(0), at(0), 0, at(1), status="placed"),
        order(1, at(0), at(1), 1, at(2), status="paid"),
        order(1, at(0), at(1), 1, at(2, 1), status="paid"),
        tombstone("order_id", 1, at(0), 2, at(3)),
        tombstone("order_id", 1, at(0), 2, at(3, 1)),
        order(2, at(0), at(0), 0, at(1), amount=-1.0),  # deleted later: never quarantined
        tombstone("order_id", 2, at(0), 1, at(2)),
    ]
    result = build(rows)
    assert result.orders.empty
    assert result.quarantine.empty
    # order 1: placed superseded, paid deleted, its repeat a duplicate, two tombstones = 1 deleted + 1 duplicate
    assert result.conservation.dropped_by == {"duplicate": 2, "superseded": 1, "deleted": 4}
    assert result.conservation.rows_in == 7
    assert result.conservation.balanced


def test_rules_in_order_with_every_failure_in_the_detail():
    rows = [
        order(1, at(0), at(0), 0, at(1), customer_id=None),
        order(2, at(0), at(0), 0, at(1), status="lost", amount=-5.0),
        order(3, at(0), at(0), 0, at(1), amount=-5.0, currency="XXQ"),
        order(4, at(0), at(0), 0, at(1), currency="US$"),
        order(5, at(0, 12), at(0, 11), 0, at(1)),
        order(6, at(0), at(0), 0, at(1), status=None, customer_id=None, currency="EU"),
        order(7, at(0), at(0), 0, at(1), status=" "),
        order(8, at(0), at(0), 0, at(1), customer_id=123_456),  # a closed account's id is valid
    ]
    result = build(rows)
    assert by_reason(result) == {
        "1": "missing_customer",
        "2": "invalid_value",
        "3": "negative_amount",
        "4": "unknown_currency",
        "5": "updated_before_created",
        "6": "missing_required_field",
        "7": "missing_required_field",
    }
    details = dict(zip(result.quarantine["source_key"], result.quarantine["detail"], strict=True))
    assert details["3"] == (
        "negative_amount: amount is negative; unknown_currency: currency has no rate in the reference table"
    )
    assert details["6"].count(";") == 2
    assert "missing_customer" in details["6"]
    assert "unknown_currency" in details["6"]
    assert "EU" not in details["6"].replace("EUR", "")  # rule names only, no values
    assert result.orders["order_id"].tolist() == [8]
    q = result.quarantine
    assert set(q["asset"]) == {"transformation/orders"}
    assert set(q["partition"]) == {"2024-01-01"}
    assert set(q["raw_asset"]) == {"ingestion/raw_orders"}
    assert set(q["source_table"]) == {"orders"}
    assert set(q["raw_partition"]) == {"2024-01-01"}
    QuarantineModel.validate(q)
    assert (result.conservation.rows_out, result.conservation.quarantined) == (1, 7)


def test_a_rejected_order_quarantines_its_latest_version_once_and_points_at_its_window():
    rows = [
        order(1, at(0), at(0), 0, at(1), amount=5.0),
        order(1, at(0), at(1), 1, at(2), amount=-5.0),
        order(1, at(0), at(1), 2, at(3), amount=-5.0),
    ]
    result = build(rows)
    assert result.quarantine[["source_key", "reason", "raw_partition"]].values.tolist() == [
        ["1", "negative_amount", "2024-01-02"]
    ]
    assert result.conservation.dropped_by == {"duplicate": 1, "superseded": 1, "deleted": 0}


def test_changes_beyond_the_lookahead_belong_to_their_window_and_are_quarantined():
    rows = [
        order(1, at(0), at(0), 0, at(1), status="placed"),
        order(1, at(0), at(3), 3, at(4), status="delivered"),
        tombstone("order_id", 1, at(0), 4, at(5)),
    ]
    created_day = build(rows, partition=0, lookahead=2)
    assert created_day.orders["status"].tolist() == ["placed"]
    assert created_day.conservation.rows_in == 1
    window_3 = build(rows, partition=3, lookahead=2)
    assert window_3.orders.empty
    assert window_3.quarantine[["reason", "partition", "raw_partition", "source_key"]].values.tolist() == [
        ["beyond_lookahead", "2024-01-04", "2024-01-04", "1"]
    ]
    assert window_3.conservation.rows_in == window_3.conservation.quarantined == 1
    assert build(rows, partition=4, lookahead=2).quarantine["reason"].tolist() == ["beyond_lookahead"]
    assert build(rows, partition=0, lookahead=4).orders.empty  # a longer lookahead sees the delete


def test_rows_without_created_at_or_captured_before_creation_go_to_their_window():
    rows = [
        order(1, None, at(1), 1, at(2)),
        order(2, at(2, 6), at(1, 6), 1, at(2)),  # captured in window 1, created on day 2
        order(3, at(2, 6), at(2, 6), 1, at(2)),
    ]
    result = build(rows, partition=1)
    assert by_reason(result) == {
        "1": "missing_required_field",
        "2": "updated_before_created",
        "3": "from_the_future",
    }
    assert result.conservation.rows_in == 3
    assert build(rows, partition=2).conservation.rows_in == 0


@pytest.mark.parametrize("column", ["currency", "status", "customer_id", "updated_at", "amount"])
def test_a_column_missing_from_the_capture_quarantines_instead_of_failing(column):
    raw = capture_frame([order(1, at(0), at(0), 0, at(1)), order(2, at(0), at(0), 0, at(1))], ORDER_DTYPES)
    result = build(raw.drop(columns=[column]))
    assert result.orders.empty
    assert result.quarantine["reason"].tolist() == ["missing_required_field"] * 2
    assert all(f"{column} absent from the capture" in d for d in result.quarantine["detail"])
    assert result.conservation.balanced


def test_missing_created_at_or_key_column_quarantines_every_row_of_the_window():
    raw = capture_frame([order(1, at(0), at(0), 0, at(1)), order(2, at(0), at(0), 1, at(2))], ORDER_DTYPES)
    no_created = build(raw.drop(columns=["created_at"]), partition=0)
    assert no_created.quarantine["source_key"].tolist() == ["1"]
    assert no_created.conservation.rows_in == 1
    no_key = build(raw.drop(columns=["order_id"]), partition=0)
    assert no_key.quarantine["reason"].tolist() == ["missing_required_field"] * 2
    assert no_key.quarantine["source_key"].isna().all()


def test_a_value_of_the_wrong_type_is_quarantined_as_wrong_type():
    raw = capture_frame([order(1, at(0), at(0), 0, at(1)), order(2, at(0), at(0), 0, at(1))], ORDER_DTYPES)
    raw["amount"] = pd.Series(["12.50", "twelve"], dtype="str")
    result = build(raw)
    assert result.orders["amount"].tolist() == [12.5]
    assert by_reason(result) == {"2": "wrong_type"}


def test_empty_inputs_give_empty_typed_frames():
    for raw in (pd.DataFrame(), capture_frame([], ORDER_DTYPES)):
        result = build(raw)
        assert result.orders.empty
        assert result.quarantine.empty
        assert result.conservation.rows_in == 0
        OrdersModel.validate(result.orders)


def test_rows_of_other_partitions_and_windows_are_ignored():
    rows = [order(1, at(5), at(5), 5, at(6)), order(2, at(0), at(0), 0, at(1))]
    assert build(rows, partition=1).conservation.rows_in == 0
    with pytest.raises(ValueError, match="lookahead_days"):
        build(rows, lookahead=-1)


# --- property: the union of the partitions is the latest valid non-deleted version ---------------

CONTENT = ["customer_id", "status", "amount", "currency"]
_orders = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from([7, 8, None]),
        "status": st.sampled_from([*STATUSES, "lost"]),
        "amount": st.sampled_from([0.0, 12.5, 99.99, 1234.565, -3.0]),
        "currency": st.sampled_from(["EUR", "USD", "GBP", "XXQ"]),
    }
)


def first_failure(row):
    if row["customer_id"] is None:
        return "missing_customer"
    if row["status"] not in STATUSES:
        return "invalid_value"
    if row["amount"] < 0:
        return "negative_amount"
    if row["currency"] not in RATES:
        return "unknown_currency"
    if row["updated_at"] < row["created_at"]:
        return "updated_before_created"
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories("order_id", _orders))
def test_partitions_hold_exactly_the_latest_valid_versions(history):
    lookahead, rows = history
    expected = expected_partitions(rows, "order_id", lookahead, CONTENT, first_failure)
    union, _ = check_partitions(
        lambda raw, d: build_orders(raw, d, lookahead_days=lookahead, rates=RATES, processed_at=PROCESSED_AT),
        "orders",
        rows,
        ORDER_DTYPES,
        expected,
    )
    union = union.set_index("order_id")
    assert sorted(union.index) == sorted(expected.kept)
    for order_id, row in expected.kept.items():
        got = union.loc[order_id]
        for column in CONTENT:
            assert got[column] == row[column] or (pd.isna(got[column]) and row[column] is None), column
        assert got["updated_at"] == pd.Timestamp(row["updated_at"], tz="UTC")
        assert got["captured_at"] == pd.Timestamp(row["captured_at"])
        assert got["versions_seen"] == expected.versions_seen[order_id]
        assert abs(got["amount_eur"] - row["amount"] * RATES[row["currency"]]) <= 0.005 + 1e-9
        assert got["amount_eur"] * 100 == pytest.approx(round(got["amount_eur"] * 100))


# --- the simulated shop --------------------------------------------------------------------------

REASON_OF_DEFECT = {
    "negative_amount": "negative_amount",
    "unknown_currency": "unknown_currency",
    "null_required": "missing_customer",
}


def test_simulated_shop_defects_are_quarantined_and_nothing_else(tmp_path):
    shop = simulate_shop(tmp_path)
    lookahead = len(shop.days)
    results = [build(shop.raw_orders, partition=d, lookahead=lookahead) for d in range(len(shop.days))]
    assert all(r.conservation.balanced for r in results)
    assert sum(r.conservation.rows_in for r in results) == len(shop.raw_orders)
    orders = pd.concat([r.orders for r in results], ignore_index=True)
    quarantine = pd.concat([r.quarantine for r in results], ignore_index=True)
    OrdersModel.validate(orders)
    QuarantineModel.validate(quarantine)

    ledger = shop.ledger[shop.ledger["table"] == "orders"]
    deleted = set(ledger.loc[ledger["defect"] == "hard_delete", "key"].astype(int))
    defects = ledger[(ledger["defect"] != "hard_delete") & ~ledger["key"].astype(int).isin(deleted)]
    assert deleted
    assert set(defects["defect"]) == set(REASON_OF_DEFECT)
    expected = {(int(k), REASON_OF_DEFECT[d]) for k, d in zip(defects["key"], defects["defect"], strict=True)}
    assert set(zip(quarantine["source_key"].astype(int), quarantine["reason"], strict=True)) == expected
    assert deleted.isdisjoint(orders["order_id"])
    assert deleted.isdisjoint(quarantine["source_key"].astype(int))
    # Every other source row is published, in its final state.
    final = shop.final_orders[~shop.final_orders["order_id"].isin([k for k, _ in expected])]
    assert len(orders) == len(final)
    published = orders.set_index("order_id").loc[final["order_id"]]
    assert published["status"].tolist() == final["status"].tolist()
    assert (published["updated_at"].dt.tz_localize(None) == final["updated_at"].to_numpy()).all()
    assert published["customer_id"].isna().sum() == 0
    assert sum(r.conservation.dropped_by["duplicate"] for r in results) > 0
    assert np.isclose(published["amount"].to_numpy(), final["amount"].to_numpy()).all()


def test_rows_created_before_the_first_partition_go_to_their_window():
    rows = [
        order(1, at(0), at(1), 1, at(2)),  # created on day 0, before the first partition (day 1)
        order(2, at(1), at(1), 1, at(2)),
        order(3, at(0), at(3), 3, at(4)),  # beyond the lookahead anyway: that reason stays
    ]
    first = build_orders(
        capture_frame(rows, ORDER_DTYPES),
        day(1),
        lookahead_days=2,
        rates=RATES,
        processed_at=PROCESSED_AT,
        first_day=day(1),
    )
    assert first.orders["order_id"].tolist() == [2]
    assert by_reason(first) == {"1": "before_first_partition"}
    assert first.quarantine["detail"].str.endswith("created before the first partition 2024-01-02").all()
    assert first.conservation.balanced
    assert first.conservation.rows_in == 2
    assert by_reason(build(rows, partition=3)) == {"3": "beyond_lookahead"}
    with pytest.raises(ValueError, match="before the first partition"):
        build_orders(
            capture_frame(rows, ORDER_DTYPES),
            day(0),
            lookahead_days=2,
            rates=RATES,
            processed_at=PROCESSED_AT,
            first_day=day(1),
        )

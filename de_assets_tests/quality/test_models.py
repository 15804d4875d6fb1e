"""Each pandera model accepts what the pipeline produces and rejects every kind of fault it names."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa
import pytest

from de_assets.quality import models
from de_assets.transformation.quarantine import QUARANTINE_COLUMNS, Reason, empty_quarantine
from de_assets_tests.quality import frames
from de_assets_tests.quality.frames import GOOD, floats, hex64, ints, naive, nullable_ints, text, utc

UTC = "datetime64[us, UTC]"
NAIVE = "datetime64[us]"
# The dtypes of the brief, spelled out independently of the models.
EXPECTED_DTYPES: dict[type, dict[str, str]] = {
    models.RawOrdersModel: {
        "order_id": "int64", "customer_id": "Int64", "status": "str", "amount": "float64", "currency": "str",
        "created_at": NAIVE, "updated_at": NAIVE, "op": "str", "captured_at": UTC, "window_day": "str",
    },
    models.RawCustomersModel: {
        "customer_id": "int64", "full_name": "str", "email": "str", "country": "str", "created_at": NAIVE,
        "updated_at": NAIVE, "op": "str", "captured_at": UTC, "window_day": "str",
    },
    models.RawEventsModel: {
        "delivery_day": "str", "source_file": "str", "line_number": "int64", "file_sha256": "str",
        "ingested_at": UTC, "payload": "str", "parse_error": "str", "parse_detail": "str",
    },
    models.OrdersModel: {
        "order_id": "int64", "customer_id": "Int64", "status": "str", "amount": "float64", "currency": "str",
        "fx_rate_to_eur": "float64", "amount_eur": "float64", "created_at": UTC, "updated_at": UTC,
        "versions_seen": "int64", "captured_at": UTC, "processed_at": UTC,
    },
    models.CustomersModel: {
        "customer_id": "int64", "customer_token": "str", "email_token": "str", "name_token": "str",
        "country": "str", "created_at": UTC, "updated_at": UTC, "versions_seen": "int64", "captured_at": UTC,
        "processed_at": UTC, "pii_key_fingerprint": "str",
    },
    models.EventsModel: {
        "event_id": "str", "event_time": UTC, "event_type": "str", "session_id": "str", "customer_id": "Int64",
        "page": "str", "device": "str", "amount": "float64", "currency": "str", "amount_eur": "float64",
        "extra_fields": "str", "source_file": "str", "line_number": "int64", "delivery_day": "str",
        "ingested_at": UTC, "processed_at": UTC, "lateness_days": "int64",
    },
    models.SessionsModel: {
        "session_key": "str", "session_day": "str", "customer_id": "Int64", "visitor": "str",
        "first_session_id": "str", "started_at": UTC, "ended_at": UTC, "duration_seconds": "float64",
        "events": "int64", "purchases": "int64", "revenue_eur": "float64", "device": "str", "converted": "bool",
    },
    models.QuarantineModel: QUARANTINE_COLUMNS,
}  # fmt: skip

Mutation = Callable[[pd.DataFrame], pd.DataFrame]


def _failure_cases(model: type[pa.DataFrameModel], frame: pd.DataFrame) -> pd.DataFrame:
    with pytest.raises(pa_errors.SchemaErrors) as raised:
        model.validate(frame, lazy=True)
    return raised.value.failure_cases


def _set(column: str, values: pd.Series) -> Mutation:
    return lambda frame: frame.assign(**{column: values})


def _set_at(column: str, row: int, value: object) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        changed = frame.copy()
        changed.loc[row, column] = value
        return changed

    return mutate


def _drop(column: str) -> Mutation:
    return lambda frame: frame.drop(columns=column)


def _duplicate_first_row(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[0]]], ignore_index=True)


def _extra_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(surprise=1)


# (model, fault, mutation, the column the failure names, a text in the failing check's name)
FAULTS: list[tuple[type, str, Mutation, str, str]] = [
    (models.RawOrdersModel, "unknown op", _set_at("op", 0, "merge"), "op", "isin"),
    (models.RawOrdersModel, "upsert without updated_at", _set("updated_at", naive(None, None)), "op",
     "upsert rows need updated_at"),
    (models.RawOrdersModel, "window_day not a day", _set_at("window_day", 0, "2024-1-1"), "window_day", "str_fullmatch"),
    (models.RawOrdersModel, "window_day with a newline", _set_at("window_day", 0, "2024-01-01\n"), "window_day",
     "str_fullmatch"),
    (models.RawOrdersModel, "window_day month 13", _set_at("window_day", 0, "2024-13-01"), "window_day", "str_fullmatch"),
    (models.RawOrdersModel, "order_id float", _set("order_id", floats(11.0, 12.0)), "order_id", "dtype"),
    (models.RawOrdersModel, "captured_at naive", _set("captured_at", naive("2024-01-02", "2024-01-02")), "captured_at",
     "dtype"),
    (models.RawOrdersModel, "captured_at in ns", _set("captured_at", utc("2024-01-02", "2024-01-02").astype(
        "datetime64[ns, UTC]")), "captured_at", "dtype"),
    (models.RawOrdersModel, "captured_at null", _set("captured_at", utc("2024-01-02", None)), "captured_at",
     "not_nullable"),
    (models.RawOrdersModel, "created_at aware", _set("created_at", utc("2024-01-01", None)), "created_at", "dtype"),
    (models.RawOrdersModel, "op missing", _drop("op"), "RawOrdersModel", "column_in_dataframe"),
    (models.RawCustomersModel, "customer_id text", _set("customer_id", text("7", "8")), "customer_id", "dtype"),
    (models.RawCustomersModel, "unknown op", _set_at("op", 1, "erase"), "op", "isin"),
    (models.RawCustomersModel, "upsert without updated_at", _set("updated_at", naive(None, None)), "op",
     "upsert rows need updated_at"),
    (models.RawCustomersModel, "email missing", _drop("email"), "RawCustomersModel", "column_in_dataframe"),
    (models.RawEventsModel, "line seen twice", _duplicate_first_row, "line_number", "multiple_fields_uniqueness"),
    (models.RawEventsModel, "line number 0", _set_at("line_number", 0, 0), "line_number", "greater_than_or_equal_to"),
    (models.RawEventsModel, "upper-case hash", _set_at("file_sha256", 0, hex64("file").upper()), "file_sha256",
     "str_fullmatch"),
    (models.RawEventsModel, "short hash", _set_at("file_sha256", 0, "abc"), "file_sha256", "str_fullmatch"),
    (models.RawEventsModel, "unknown parse error", _set_at("parse_error", 1, "oops"), "parse_error", "isin"),
    (models.RawEventsModel, "null payload", _set("payload", text("{}", None)), "payload", "not_nullable"),
    (models.RawEventsModel, "ingested_at Etc/UTC", _set("ingested_at", utc("2024-01-01", "2024-01-01").dt.tz_convert(
        "Etc/UTC")), "ingested_at", "dtype"),
    (models.OrdersModel, "order twice", _duplicate_first_row, "order_id", "field_uniqueness"),
    (models.OrdersModel, "customer_id null", _set("customer_id", nullable_ints(7, None)), "customer_id", "not_nullable"),
    (models.OrdersModel, "unknown status", _set_at("status", 0, "refunded"), "status", "isin"),
    (models.OrdersModel, "negative amount", _set_at("amount", 0, -1.0), "amount", "greater_than_or_equal_to"),
    (models.OrdersModel, "zero fx rate", _set_at("fx_rate_to_eur", 0, 0.0), "fx_rate_to_eur", "greater_than"),
    (models.OrdersModel, "negative amount_eur", _set_at("amount_eur", 1, -0.5), "amount_eur", "greater_than_or_equal_to"),
    (models.OrdersModel, "bad currency", _set_at("currency", 0, "EURO"), "currency", "str_fullmatch"),
    (models.OrdersModel, "updated before created", _set("updated_at", utc("2024-01-01 08:00", "2024-01-01 11:00")),
     "updated_at", "updated_at before created_at"),
    (models.OrdersModel, "no versions", _set_at("versions_seen", 0, 0), "versions_seen", "greater_than_or_equal_to"),
    (models.OrdersModel, "created_at naive", _set("created_at", naive("2024-01-01", "2024-01-01")), "created_at", "dtype"),
    (models.OrdersModel, "extra column", _extra_column, "OrdersModel", "column_in_schema"),
    (models.OrdersModel, "processed_at missing", _drop("processed_at"), "OrdersModel", "column_in_dataframe"),
    (models.CustomersModel, "customer twice", _duplicate_first_row, "customer_id", "field_uniqueness"),
    (models.CustomersModel, "token not hex", _set_at("email_token", 0, "z" * 64), "email_token", "str_fullmatch"),
    (models.CustomersModel, "name token short", _set_at("name_token", 0, "ab"), "name_token", "str_fullmatch"),
    (models.CustomersModel, "lower-case country", _set_at("country", 0, "gb"), "country", "str_fullmatch"),
    (models.CustomersModel, "fingerprint of 15", _set_at("pii_key_fingerprint", 0, "0123456789abcde"),
     "pii_key_fingerprint", "str_fullmatch"),
    (models.CustomersModel, "updated before created", _set("updated_at", utc("2023-12-31", "2024-01-03 09:00")),
     "updated_at", "updated_at before created_at"),
    (models.CustomersModel, "extra email column", lambda f: f.assign(email="x@example.com"), "CustomersModel",
     "column_in_schema"),
    (models.EventsModel, "event twice", _duplicate_first_row, "event_id", "field_uniqueness"),
    (models.EventsModel, "unknown type", _set_at("event_type", 0, "click"), "event_type", "isin"),
    (models.EventsModel, "purchase without amount", _set("amount", floats(None, None)), "event_type",
     "purchase without amount or currency"),
    (models.EventsModel, "purchase without currency", _set("currency", text(None, None)), "event_type",
     "purchase without amount or currency"),
    (models.EventsModel, "negative amount", _set_at("amount", 1, -3.0), "amount", "greater_than_or_equal_to"),
    (models.EventsModel, "negative lateness", _set_at("lateness_days", 0, -1), "lateness_days",
     "greater_than_or_equal_to"),
    (models.EventsModel, "null device", _set("device", text("mobile", None)), "device", "not_nullable"),
    (models.EventsModel, "customer_id float", _set("customer_id", floats(None, 7.0)), "customer_id", "dtype"),
    (models.SessionsModel, "session twice", _duplicate_first_row, "session_key", "field_uniqueness"),
    (models.SessionsModel, "ends before start", _set("ended_at", utc("2024-01-01 09:00", "2024-01-01 12:00")),
     "ended_at", "ended_at before started_at"),
    (models.SessionsModel, "no events", _set("events", ints(0, 1)), "events", "greater_than_or_equal_to"),
    (models.SessionsModel, "more purchases than events", _set("purchases", ints(3, 0)), "purchases",
     "more purchases than events"),
    (models.SessionsModel, "negative revenue", _set_at("revenue_eur", 0, -1.0), "revenue_eur",
     "greater_than_or_equal_to"),
    (models.SessionsModel, "converted as text", _set("converted", text("yes", "no")), "converted", "dtype"),
    (models.QuarantineModel, "unknown reason", _set_at("reason", 0, "bad_vibes"), "reason", "isin"),
    (models.QuarantineModel, "points nowhere", _set("source_table", text(None, None)), "asset",
     "points at neither a file nor a table"),
    (models.QuarantineModel, "line number 0", _set("line_number", nullable_ints(0, None)), "line_number",
     "greater_than_or_equal_to"),
    (models.QuarantineModel, "detected_at naive", _set("detected_at", naive("2024-01-03", "2024-01-03")), "detected_at",
     "dtype"),
]  # fmt: skip


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_model_accepts_a_frame_with_the_produced_dtypes(model):
    frame = GOOD[model]()
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == EXPECTED_DTYPES[model]
    model.validate(frame, lazy=True)


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_model_declares_exactly_the_expected_columns_each_documented(model):
    columns = model.to_schema().columns
    assert set(columns) == set(EXPECTED_DTYPES[model])
    assert all(column.description for column in columns.values())


@pytest.mark.parametrize("model", list(GOOD), ids=lambda m: m.__name__)
def test_model_accepts_an_empty_frame_with_its_dtypes(model):
    model.validate(GOOD[model]().iloc[:0], lazy=True)


@pytest.mark.parametrize(
    ("model", "mutate", "column", "check"),
    [
        pytest.param(m, mutate, column, check, id=f"{m.__name__}: {fault}")
        for m, fault, mutate, column, check in FAULTS
    ],
)
def test_model_rejects_the_fault(model, mutate, column, check):
    cases = _failure_cases(model, mutate(GOOD[model]()))
    named = cases[(cases["column"] == column) & cases["check"].str.contains(check, regex=False)]
    assert len(named) > 0, cases[["column", "check", "failure_case"]].to_string()


def test_every_model_has_a_fault_case():
    assert {fault[0] for fault in FAULTS} == set(GOOD)


def test_raw_models_keep_columns_a_source_added():
    models.RawOrdersModel.validate(frames.raw_orders().assign(discount=[0.0, None]), lazy=True)
    models.RawEventsModel.validate(frames.raw_events().assign(extra=["a", "b"]), lazy=True)


def test_tombstone_rows_may_be_all_null_but_keep_their_key_and_capture():
    tombstone = frames.raw_orders().iloc[[1]]
    assert tombstone.drop(columns=["order_id", "op", "captured_at", "window_day"]).isna().all().all()
    models.RawOrdersModel.validate(tombstone, lazy=True)


def test_quarantine_model_matches_the_shared_layout_including_the_empty_frame():
    assert list(models.QuarantineModel.to_schema().columns) == list(QUARANTINE_COLUMNS)
    models.QuarantineModel.validate(empty_quarantine(), lazy=True)


def test_reason_codes_are_the_quarantine_module_s():
    assert set(models.REASONS) == {reason.value for reason in Reason}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (models.RawOrdersModel, set()),
        (models.RawCustomersModel, {"full_name", "email"}),
        (models.RawEventsModel, {"payload", "parse_detail"}),
        (models.OrdersModel, set()),
        (models.CustomersModel, {"customer_token", "email_token", "name_token"}),
        (models.EventsModel, {"extra_fields"}),
        (models.SessionsModel, set()),
        (models.QuarantineModel, set()),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_pii_columns_are_listed_and_exist(model, expected):
    assert models.pii_columns(model) == expected
    assert expected <= set(model.to_schema().columns)


def test_int64_and_nullable_int64_are_interchangeable_for_pandera():
    """Documented leniency: pandera compares integer width, not numpy vs nullable."""
    orders = frames.orders().assign(customer_id=ints(7, 8), order_id=nullable_ints(11, 13))
    models.OrdersModel.validate(orders, lazy=True)

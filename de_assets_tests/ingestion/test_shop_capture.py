"""The append-only capture: versions once each, re-runs that add nothing, tombstones once per deletion."""

import datetime as dt
import io
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from de_assets.generation import shop_db
from de_assets.generation.defects import Defect, DefectRates
from de_assets.generation.ledger import read_ledger
from de_assets.generation.simulator import SimulationParams, simulate_shop_day
from de_assets.ingestion.shop_capture import CAPTURED_AT_DTYPE, merge_capture, tombstones
from de_assets.ingestion.source_reader import existing_keys, fetch_window, read_only_engine

DAY0 = dt.date(2024, 3, 1)
WALL0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SOURCE = ["order_id", "customer_id", "status", "amount", "currency", "created_at", "updated_at"]


def window(day):
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1)


def parquet_round_trip(frame):
    """What the cold tier gives back: the capture written to Parquet and read again."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


def as_tuples(frame, columns):
    """Rows as plain tuples (values as text, nulls as None), comparable in sets."""
    rows = frame[columns].astype(object).itertuples(index=False)
    return [tuple(None if pd.isna(v) else str(v) for v in row) for row in rows]


def versions(frame):
    """The upsert rows' source columns as tuples."""
    return as_tuples(frame.loc[frame["op"] == "upsert"], SOURCE)


class Capture:
    """The raw zone of one table: partitions stored as Parquet bytes, captured like the asset does."""

    def __init__(self, url, table="orders", key="order_id"):
        self.url, self.table, self.key = url, table, key
        self.partitions: dict[str, bytes] = {}
        self.clock = itertools.count(1)
        self.results = []

    def now(self):
        return WALL0 + dt.timedelta(seconds=next(self.clock))

    def load(self, day):
        data = self.partitions.get(day.isoformat())
        return None if data is None else pd.read_parquet(io.BytesIO(data))

    def store(self, day, frame):
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        self.partitions[day.isoformat()] = buffer.getvalue()

    def everything(self):
        frames = [pd.read_parquet(io.BytesIO(b)) for b in self.partitions.values()]
        return pd.concat(frames, ignore_index=True) if frames else None

    def run(self, day):
        """Capture ``day``'s window, then reconcile keys over every stored partition."""
        previous = self.load(day)
        with read_only_engine(self.url) as engine:
            fetched = fetch_window(engine, self.table, *window(day))
            result = merge_capture(
                previous, fetched, key=self.key, window_day=day.isoformat(), captured_at=self.now()
            )
            others = [
                pd.read_parquet(io.BytesIO(b)) for d, b in self.partitions.items() if d != day.isoformat()
            ]
            captured = pd.concat([*others, result.frame], ignore_index=True)
            present = existing_keys(engine, self.table, captured[self.key].unique())
            deleted = tombstones(
                captured, present, key=self.key, window_day=day.isoformat(), detected_at=self.now()
            )
        if previous is not None:  # append-only: every stored row survives the re-run as it was
            assert len(result.frame) == len(previous) + result.new_versions
            assert_contains(result.frame, previous)
        frame = pd.concat([result.frame, deleted], ignore_index=True)
        self.store(day, frame)
        self.results.append(result)
        return result


def assert_contains(frame, rows):
    """Every row of ``rows`` (all columns) is in ``frame``."""
    columns = ["op", "captured_at", "window_day", *SOURCE]
    assert set(as_tuples(rows, columns)) <= set(as_tuples(frame, columns))


def latest_state(capture):
    """The rule of shop_capture's docstring, written out: last version by (updated_at, captured_at),
    unless a tombstone was captured after it."""
    upserts = capture[capture["op"] == "upsert"].sort_values(["updated_at", "captured_at"])
    last = upserts.groupby("order_id").tail(1).set_index("order_id")
    deleted_at = capture[capture["op"] == "delete"].groupby("order_id")["captured_at"].max()
    alive = [k for k in last.index if k not in deleted_at.index or last.at[k, "captured_at"] > deleted_at[k]]
    return last.loc[sorted(alive)].reset_index()


# --- against a simulated shop ------------------------------------------------------------------------


def source_versions(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.select(shop_db.orders), conn)
    finally:
        engine.dispose()
    frame["customer_id"] = frame["customer_id"].astype("Int64")
    return frame.assign(op="upsert")


def test_capturing_a_simulated_shop_window_by_window(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    params = SimulationParams(
        orders_per_day=300, events_per_day=0, rates=DefectRates(test_order_deleted=0.05)
    )
    days = [DAY0 + dt.timedelta(days=i) for i in range(6)]
    capture = Capture(url)
    observed = set()

    def run_all(span):
        for day in span:
            capture.run(day)
        observed.update(versions(source_versions(url)))

    for day in days[:3]:
        simulate_shop_day(url, str(tmp_path / "ledger"), day, params)
    run_all(days[:3])
    first = capture.everything()
    moved = first.loc[first["window_day"] == days[0].isoformat(), ["order_id", "updated_at"]]

    for day in days[3:]:
        simulate_shop_day(url, str(tmp_path / "ledger"), day, params)
    run_all(days)
    everything = capture.everything()

    # Every version seen at the source is captured exactly once, under the day of its updated_at.
    captured = versions(everything)
    assert len(captured) == len(set(captured))
    assert set(captured) == observed
    upserts = everything[everything["op"] == "upsert"]
    assert (upserts["updated_at"].dt.strftime("%Y-%m-%d") == upserts["window_day"]).all()
    assert everything["captured_at"].dtype == CAPTURED_AT_DTYPE

    # Rows updated on later days left day 0's window at the source, yet stay in day 0's capture.
    now = source_versions(url).set_index("order_id")["updated_at"]
    left = moved[moved["order_id"].map(now).dt.date > days[0]]
    assert len(left) > 50
    day0 = capture.load(days[0])
    assert set(map(tuple, left.to_numpy().tolist())) <= set(
        map(tuple, day0[["order_id", "updated_at"]].to_numpy().tolist())
    )

    # Captured keys the source no longer has became tombstones, once each, and the ledger agrees.
    ledger = read_ledger(tmp_path / "ledger")
    is_hard_delete = (ledger["defect"] == Defect.HARD_DELETE) & (ledger["table"] == "orders")
    hard_deleted = set(ledger.loc[is_hard_delete, "key"].astype(int))
    deletes = everything[everything["op"] == "delete"]
    assert deletes["order_id"].is_unique
    assert set(deletes["order_id"]) == set(upserts["order_id"]) - set(now.index)
    assert len(deletes) > 0
    assert set(deletes["order_id"]) <= hard_deleted

    # A re-run of every window over an unchanged source adds nothing, tombstones included.
    before = len(everything)
    capture.results.clear()
    for day in days:
        capture.run(day)
    assert [r.new_versions for r in capture.results] == [0] * len(days)
    assert len(capture.everything()) == before
    latest = latest_state(capture.everything())
    source = source_versions(url).sort_values("order_id", ignore_index=True)
    assert latest["order_id"].tolist() == source["order_id"].tolist()
    assert versions(latest) == versions(source)


# --- merge_capture -----------------------------------------------------------------------------------


def orders_frame(rows):
    frame = pd.DataFrame(rows, columns=SOURCE)
    return frame.astype(
        {
            "order_id": "int64",
            "customer_id": "Int64",
            "status": "str",
            "amount": "float64",
            "currency": "str",
            "created_at": "datetime64[us]",
            "updated_at": "datetime64[us]",
        }
    )


T = pd.Timestamp("2024-03-01 08:00")
ROWS = [
    (3, None, "paid", 1.5, "EUR", T, T),
    (1, 7, "placed", 2.0, None, T, T + pd.Timedelta(hours=1)),
]


def test_first_capture_appends_every_row_sorted_with_its_metadata():
    result = merge_capture(
        None, orders_frame(ROWS), key="order_id", window_day="2024-03-01", captured_at=WALL0
    )
    assert (result.new_versions, result.already_captured) == (2, 0)
    frame = result.frame
    assert frame["order_id"].tolist() == [1, 3]
    assert list(frame.columns) == [*SOURCE, "op", "captured_at", "window_day"]
    assert frame["op"].tolist() == ["upsert", "upsert"]
    assert frame["window_day"].tolist() == ["2024-03-01"] * 2
    assert (frame["captured_at"] == pd.Timestamp(WALL0)).all()
    assert frame["captured_at"].dtype == CAPTURED_AT_DTYPE
    assert frame["order_id"].dtype == np.int64
    assert frame["customer_id"].dtype == "Int64"


def test_a_rerun_is_robust_to_the_dtypes_a_parquet_read_back_gives():
    fetched = orders_frame(ROWS)
    first = merge_capture(None, fetched, key="order_id", window_day="2024-03-01", captured_at=WALL0).frame
    later = WALL0 + dt.timedelta(days=1)
    loose = first.astype(
        {
            "order_id": "Int64",
            "customer_id": "float64",
            "status": "object",
            "currency": "object",
            "created_at": "datetime64[ns]",
            "updated_at": "datetime64[ns]",
            "captured_at": "datetime64[ns, UTC]",
        }
    )
    for previous in (parquet_round_trip(first), loose):
        again = merge_capture(previous, fetched, key="order_id", window_day="2024-03-01", captured_at=later)
        assert (again.new_versions, again.already_captured) == (0, 2)
        pd.testing.assert_frame_equal(again.frame, first)


def test_changed_content_is_a_new_version_and_old_rows_keep_their_capture_time():
    fetched = orders_frame(ROWS)
    first = merge_capture(None, fetched, key="order_id", window_day="2024-03-01", captured_at=WALL0).frame
    changed = fetched.copy()
    changed.loc[changed["order_id"] == 1, "currency"] = "USD"  # was null: null-safe comparison
    changed.loc[changed["order_id"] == 3, "updated_at"] = T + pd.Timedelta(hours=2)
    later = WALL0 + dt.timedelta(hours=1)
    result = merge_capture(first, changed, key="order_id", window_day="2024-03-01", captured_at=later)
    assert (result.new_versions, result.already_captured) == (2, 0)
    frame = result.frame
    assert frame["order_id"].tolist() == [1, 1, 3, 3]
    assert frame["captured_at"].tolist() == [pd.Timestamp(WALL0), pd.Timestamp(later)] * 2
    assert frame["currency"].isna().tolist() == [True, False, False, False]
    pd.testing.assert_frame_equal(frame.iloc[[0, 2]].reset_index(drop=True), first)


def test_columns_of_one_side_only_are_unioned():
    fetched = orders_frame(ROWS)
    stored = merge_capture(None, fetched, key="order_id", window_day="2024-03-01", captured_at=WALL0).frame
    stored = stored.assign(legacy="x")  # a column the source has since dropped
    # ... and one it has since added.
    grown = fetched.assign(channel=fetched["order_id"].map({1: "web"}).astype("str"))
    later = WALL0 + dt.timedelta(hours=1)
    result = merge_capture(stored, grown, key="order_id", window_day="2024-03-01", captured_at=later)
    # Order 1 now has a channel: a value never captured. Order 3's is null, as it always was.
    assert (result.new_versions, result.already_captured) == (1, 1)
    frame = result.frame
    assert list(frame.columns) == [*SOURCE, "channel", "legacy", "op", "captured_at", "window_day"]
    assert frame["order_id"].tolist() == [1, 1, 3]
    assert frame["channel"].isna().tolist() == [True, False, True]
    assert frame["channel"].iloc[1] == "web"
    assert frame["legacy"].isna().tolist() == [False, True, False]
    kept = frame.iloc[[0, 2]].drop(columns="channel").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, stored[kept.columns])


def test_rows_outside_the_window_and_naive_capture_times_are_refused():
    fetched = orders_frame(ROWS)
    with pytest.raises(ValueError, match="outside window 2024-03-02"):
        merge_capture(None, fetched, key="order_id", window_day="2024-03-02", captured_at=WALL0)
    with pytest.raises(ValueError, match="timezone-aware"):
        merge_capture(
            None, fetched, key="order_id", window_day="2024-03-01", captured_at=WALL0.replace(tzinfo=None)
        )
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        merge_capture(None, fetched, key="order_id", window_day="20240301", captured_at=WALL0)


def test_an_empty_fetch_keeps_the_layout():
    empty = merge_capture(None, orders_frame([]), key="order_id", window_day="2024-03-01", captured_at=WALL0)
    assert (empty.new_versions, len(empty.frame)) == (0, 0)
    assert list(empty.frame.columns) == [*SOURCE, "op", "captured_at", "window_day"]
    assert empty.frame["captured_at"].dtype == CAPTURED_AT_DTYPE


# --- tombstones --------------------------------------------------------------------------------------


def captured_orders():
    fetched = orders_frame(ROWS)
    return merge_capture(None, fetched, key="order_id", window_day="2024-03-01", captured_at=WALL0).frame


def test_a_vanished_key_gets_one_tombstone_with_its_created_at():
    captured = captured_orders()
    found = WALL0 + dt.timedelta(days=1)
    dead = tombstones(captured, np.array([1]), key="order_id", window_day="2024-03-02", detected_at=found)
    assert dead["order_id"].tolist() == [3]
    assert dead["created_at"].tolist() == [T]
    assert dead["op"].tolist() == ["delete"]
    assert dead["captured_at"].tolist() == [pd.Timestamp(found)]
    assert dead["window_day"].tolist() == ["2024-03-02"]
    assert dead[["customer_id", "status", "amount", "currency", "updated_at"]].isna().all().all()
    assert list(dead.columns) == list(captured.columns)
    assert dict(dead.dtypes) == dict(captured.dtypes)
    # Found again by a later reconciliation: already recorded.
    both = pd.concat([captured, dead], ignore_index=True)
    again = tombstones(both, np.array([1]), key="order_id", window_day="2024-03-03", detected_at=found)
    assert again.empty
    assert dict(again.dtypes) == dict(captured.dtypes)


def test_a_key_reinserted_after_its_tombstone_can_be_deleted_again():
    captured = captured_orders()
    dead = tombstones(captured, np.array([1]), key="order_id", window_day="2024-03-01", detected_at=WALL0)
    reborn = orders_frame(
        [(3, 8, "placed", 9.0, "EUR", T + pd.Timedelta(hours=3), T + pd.Timedelta(hours=3))]
    )
    later = WALL0 + dt.timedelta(hours=1)
    log = pd.concat([captured, dead], ignore_index=True)
    log = merge_capture(log, reborn, key="order_id", window_day="2024-03-01", captured_at=later).frame
    assert tombstones(log, np.array([1, 3]), key="order_id", window_day="2024-03-01", detected_at=later).empty
    final = WALL0 + dt.timedelta(hours=2)
    dead_again = tombstones(log, np.array([1]), key="order_id", window_day="2024-03-01", detected_at=final)
    assert dead_again["order_id"].tolist() == [3]
    assert dead_again["created_at"].tolist() == [T + pd.Timedelta(hours=3)]


def test_tombstones_alone_yield_no_tombstones():
    dead = tombstones(
        captured_orders(), np.array([]), key="order_id", window_day="2024-03-02", detected_at=WALL0
    )
    assert dead["order_id"].tolist() == [1, 3]
    assert tombstones(dead, np.array([]), key="order_id", window_day="2024-03-02", detected_at=WALL0).empty


# --- property: any history, captured in any order, any number of times --------------------------------

SPAN_DAYS = 3
KEYS = st.integers(1, 3)  # few keys: updates, deletes and re-inserts of the same row
# How far the source's clock moves before a write ("midnight" puts the write exactly on it).
ADVANCE = st.sampled_from(["0us", "1s", "5h", "midnight"])
UPSERT = st.tuples(st.just("upsert"), KEYS, ADVANCE)
STEPS = st.one_of(
    UPSERT,
    UPSERT,  # twice as likely as the others: histories need versions
    st.tuples(st.just("delete"), KEYS, st.none()),
    # The window of the source's current day (a capture of an unfinished day), or any window.
    st.tuples(st.just("capture"), st.sampled_from(["today", *range(SPAN_DAYS)]), st.none()),
)


class Shop:
    """A source whose state the test knows independently of the code under test."""

    def __init__(self, url):
        self.rows: dict[int, dict] = {}
        self.clock = pd.Timestamp(DAY0)
        self.last_write = self.clock - pd.Timedelta("1us")
        self.writes = 0
        self.engine = sa.create_engine(url)
        shop_db.ensure_schema(self.engine)

    def tick(self, step):
        if step == "midnight":
            self.clock = self.clock.normalize() + pd.Timedelta(days=1)
        else:
            self.clock += pd.Timedelta(step)

    def upsert(self, key):
        # Every write gets a fresh updated_at (a row may land exactly on midnight), as an OLTP system
        # stamps it: re-inserting a deleted key can never recreate an already captured version.
        if self.clock <= self.last_write:
            self.clock = self.last_write + pd.Timedelta("1us")
        self.last_write = self.clock
        if self.clock >= pd.Timestamp(DAY0) + pd.Timedelta(days=SPAN_DAYS):
            return
        now = self.clock.to_pydatetime()
        row = self.rows.get(key) or {
            "order_id": key,
            "customer_id": None,
            "currency": "EUR",
            "created_at": now,
        }
        self.writes += 1
        row = {**row, "status": f"status {self.writes % 3}", "amount": float(self.writes), "updated_at": now}
        with self.engine.begin() as conn:
            conn.execute(sa.delete(shop_db.orders).where(shop_db.orders.c.order_id == key))
            conn.execute(shop_db.orders.insert().values(row))
        self.rows[key] = row

    def delete(self, key):
        with self.engine.begin() as conn:
            conn.execute(sa.delete(shop_db.orders).where(shop_db.orders.c.order_id == key))
        self.rows.pop(key, None)

    def in_window(self, day):
        start, end = (pd.Timestamp(b) for b in window(day))
        rows = [r for r in self.rows.values() if start <= r["updated_at"] < end]
        return {version_of(r) for r in rows}


def version_of(row):
    values = [row[c] for c in SOURCE]
    return tuple(
        None if v is None else str(pd.Timestamp(v) if isinstance(v, dt.datetime) else v) for v in values
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEPS, min_size=6, max_size=20), final_order=st.permutations(range(SPAN_DAYS)))
def test_any_history_captured_in_any_order_keeps_every_version_once(steps, final_order):
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'shop.sqlite'}"
        shop = Shop(url)
        capture = Capture(url)
        observed = set()
        try:
            for action, arg, advance in steps:
                if action == "capture":
                    day = shop.clock.date() if arg == "today" else DAY0 + dt.timedelta(days=arg)
                    observed |= shop.in_window(day)
                    capture.run(day)
                elif action == "upsert":
                    shop.tick(advance)
                    shop.upsert(arg)
                else:
                    shop.delete(arg)
            for d in final_order:
                day = DAY0 + dt.timedelta(days=d)
                observed |= shop.in_window(day)
                capture.run(day)
        finally:
            shop.engine.dispose()
        everything = capture.everything()
    captured = versions(everything)
    assert sorted(captured, key=str) == sorted(observed, key=str)  # each version once, none missing
    upserts = everything[everything["op"] == "upsert"]
    assert (upserts["updated_at"].dt.strftime("%Y-%m-%d") == upserts["window_day"]).all()
    # A deletion is recorded once: between two tombstones of a key, the key was captured alive again.
    ops = everything.sort_values("captured_at", kind="mergesort").groupby("order_id")["op"]
    assert not ops.agg(lambda o: ((o == "delete") & (o.shift() == "delete")).any()).any()
    assert sorted(versions(latest_state(everything)), key=str) == sorted(
        map(version_of, shop.rows.values()), key=str
    )

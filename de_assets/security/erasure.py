"""The right to be forgotten: erase one customer everywhere we hold data, and keep them out.

:func:`forget_customer` first puts the customer's keyed token on the **suppression list** (so that no
ingestion, replay or backfill running meanwhile brings them back), then rewrites every partition that
holds them, each atomically (a Parquet partition is replaced by a rename; a hot partition in one
transaction):

* the raw zone: ``raw_orders`` and ``raw_customers`` rows of the customer id, ``raw_events`` lines
  whose payload names it (found as text, so lines that failed to parse are found too);
* quarantine records pointing at those rows or lines (``*_rejected``, ``quarantine``);
* the transformation tables (orders, customers, events, sessions) and ``customer_features`` (by token);
* the segments reverse ETL wrote into the shop (``customer_segments``), through its own connection.

Aggregates (``daily_kpis``) hold no customer and stay. The sources themselves (the shop, the landing
files) still hold the customer: ingestion drops every row and line of a suppressed token
(:func:`suppressed`), counted as ``suppressed`` in its metadata, so they never re-enter.

An erasure log entry records, keyed by the token (never the id), what was removed where. The
suppression list and the log live in the cold tier (``security/``), which every stage can read
without taking the hot tier's lock.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from de_assets.security.pseudonymise import PiiKey, tokens
from de_assets.storage.cold import ColdStore
from de_assets.storage.tier import PartitionState, TableRef
from de_assets.storage.tiering import TieredStore

SUPPRESSION_LIST = TableRef("security", "suppressed_customers")
ERASURE_LOG = TableRef("security", "erasure_log")
# A customer id in a JSON line, as a number or (a wrong type, still the person) as a string.
_PAYLOAD_CUSTOMER = re.compile(r'"customer_id"\s*:\s*"?\s*(-?[0-9]+)')


def customer_token(key: PiiKey, customer_id: int) -> str:
    """The customer's keyed token, as ``transformation/customers`` holds it."""
    return str(tokens(key, pd.Series([str(int(customer_id))]), "customer").iloc[0])


# --- suppression list -------------------------------------------------------------------------------


def suppression_list(cold: ColdStore) -> frozenset[str]:
    """The tokens of every forgotten customer."""
    states, frame = cold.load(SUPPRESSION_LIST, [None])
    if states[None] is not PartitionState.PRESENT or frame.empty:
        return frozenset()
    return frozenset(frame["customer_token"].astype("str"))


def suppress(cold: ColdStore, token: str, now: dt.datetime) -> None:
    """Add ``token`` to the suppression list (idempotent)."""
    if token in suppression_list(cold):
        return
    row = pd.DataFrame(
        {
            "customer_token": pd.Series([token], dtype="str"),
            "suppressed_at": pd.Series([now], dtype="datetime64[us, UTC]"),
        }
    )
    _append(cold, SUPPRESSION_LIST, row)


def _append(cold: ColdStore, table: TableRef, rows: pd.DataFrame) -> None:
    """Add ``rows`` to a small unpartitioned cold table (rewritten whole, atomically)."""
    states, frame = cold.load(table, [None])
    kept = frame if states[None] is PartitionState.PRESENT and len(frame) else None
    cold.write(table, {None: pd.concat([f for f in (kept, rows) if f is not None], ignore_index=True)})


def payload_customer_ids(payload: pd.Series) -> pd.Series:
    """The customer id each raw JSON line names (null when none), read as text."""
    found = payload.astype("str").str.extract(_PAYLOAD_CUSTOMER, expand=False)
    return pd.to_numeric(found, errors="coerce").astype("Int64")


def suppressed(ids: pd.Series, token_list: frozenset[str], key: PiiKey | None) -> np.ndarray:
    """Which rows belong to a suppressed customer (``ids``: customer ids, nullable)."""
    if not token_list or key is None or ids.empty:
        return np.zeros(len(ids), dtype=bool)
    known = ids.notna().to_numpy()
    mask = np.zeros(len(ids), dtype=bool)
    if known.any():
        mask[known] = (
            tokens(key, ids[known].astype("Int64").astype("str"), "customer").isin(token_list).to_numpy()
        )
    return mask


def rekey(cold: ColdStore, old: PiiKey, new: PiiKey, candidate_ids: Iterable[int]) -> tuple[int, int]:
    """Re-key the suppression list and the erasure log after a key rotation.

    Tokens cannot be reversed, so each old token is matched by tokenising ``candidate_ids`` (every id
    the sources still hold: a forgotten customer can only come back from there) with the old key.
    Returns (tokens re-keyed, tokens left as they were because no source holds their customer).
    """
    ids = pd.Series(sorted({int(i) for i in candidate_ids}), dtype="int64")
    by_old = dict(
        zip(
            tokens(old, ids.astype("str"), "customer"),
            tokens(new, ids.astype("str"), "customer"),
            strict=True,
        )
    )
    rekeyed = unmatched = 0
    for table in (SUPPRESSION_LIST, ERASURE_LOG):
        states, frame = cold.load(table, [None])
        if states[None] is not PartitionState.PRESENT or frame.empty:
            continue
        mapped = frame["customer_token"].map(by_old)
        if table == SUPPRESSION_LIST:
            rekeyed, unmatched = int(mapped.notna().sum()), int(mapped.isna().sum())
        frame["customer_token"] = mapped.fillna(frame["customer_token"]).astype("str")
        cold.write(table, {None: frame})
    return rekeyed, unmatched


def customer_ids_in_sources(source_url: str, landing_root: str) -> set[int]:
    """Every customer id the shop (read through the read-only connection) and the landing files hold."""
    from de_assets.generation.landing import LandingFolder
    from de_assets.ingestion.source_reader import SourceUnavailableError, read_only_engine

    ids: set[int] = set()
    try:
        with read_only_engine(source_url) as engine, engine.connect() as conn:
            for table in ("customers", "orders"):
                rows = conn.execute(sa.text(f"SELECT DISTINCT customer_id FROM {table}"))
                ids |= {int(i) for (i,) in rows if i is not None}
    except SourceUnavailableError:
        pass  # no shop yet: nothing can come back from it
    folder = LandingFolder(landing_root)
    for entry in folder.list("clickstream_"):
        if entry.refused is None:
            lines = pd.Series(folder.read(entry.name).decode("utf-8", "replace").splitlines(), dtype="str")
            ids |= {int(i) for i in payload_customer_ids(lines).dropna()}
    return ids


class Suppression:
    """The suppression list as an ingestion step applies it: read once per step; the key is loaded only
    when the list is not empty, so a pipeline that never forgot anyone pays nothing."""

    def __init__(self, cold: ColdStore, load_key: Callable[[], PiiKey]) -> None:
        self.tokens = suppression_list(cold)
        self._key = load_key() if self.tokens else None

    def rows(self, customer_ids: pd.Series) -> np.ndarray:
        """Which captured rows (by their customer id) belong to a forgotten customer."""
        return suppressed(customer_ids, self.tokens, self._key)

    def lines(self, payload: pd.Series) -> np.ndarray:
        """Which raw clickstream lines name a forgotten customer (parsable or not)."""
        if not self.tokens:
            return np.zeros(len(payload), dtype=bool)
        return suppressed(payload_customer_ids(payload), self.tokens, self._key)


# --- erasure ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erased:
    asset: str
    partition: str
    tier: str
    rows: int


@dataclass
class ErasureRecord:
    customer_token: str
    requested_at: dt.datetime
    erased: list[Erased] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.erased)


Selector = Callable[[pd.DataFrame], np.ndarray]


def _rewrite_cold(cold: ColdStore, table: TableRef, select: Selector, record: ErasureRecord) -> pd.DataFrame:
    """Drop the selected rows of every partition of a cold table; returns the rows dropped."""
    dropped = []
    for partition, state in sorted(cold.partitions(table).items()):
        if state is not PartitionState.PRESENT:
            continue
        frame = cold.read(table, [partition])
        mask = select(frame) if len(frame) else np.zeros(0, dtype=bool)
        if mask.any():
            cold.write(table, {partition: frame[~mask].reset_index(drop=True)})
            record.erased.append(Erased(table.qualified_name, partition, "cold", int(mask.sum())))
            dropped.append(frame[mask])
    return pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame()


def _rewrite_hot(
    store: TieredStore, table: TableRef, select: Selector, record: ErasureRecord
) -> pd.DataFrame:
    """The same for a hot table, writing each partition back to whichever tier holds it."""
    dropped = []
    for partition, state in sorted(store.hot.partitions(table).items()):
        if state not in (PartitionState.PRESENT, PartitionState.TIERED):
            continue
        frame = store.read(table, [partition])
        mask = select(frame) if len(frame) else np.zeros(0, dtype=bool)
        if not mask.any():
            continue
        kept = {partition: frame[~mask].reset_index(drop=True)}
        if state is PartitionState.TIERED:
            store.cold.write(table, kept)  # the record keeps saying "tiered": one copy, rewritten in place
        else:
            store.hot.write(table, kept)
        where = "cold" if state is PartitionState.TIERED else "hot"
        record.erased.append(Erased(table.qualified_name, partition, where, int(mask.sum())))
        dropped.append(frame[mask])
    return pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame()


def _column_is(column: str, values: Iterable[object]) -> Selector:
    wanted = list(values)

    def select(frame: pd.DataFrame) -> np.ndarray:
        if column not in frame or not wanted:
            return np.zeros(len(frame), dtype=bool)
        return frame[column].astype("str").isin([str(v) for v in wanted]).to_numpy()

    return select


def _lines_in(lines: pd.DataFrame) -> Selector:
    """Records pointing at any of ``lines`` (source_file, line_number)."""
    wanted = set(zip(lines.get("source_file", []), lines.get("line_number", []), strict=True))

    def select(frame: pd.DataFrame) -> np.ndarray:
        if not wanted or "source_file" not in frame:
            return np.zeros(len(frame), dtype=bool)
        pairs = zip(frame["source_file"], frame["line_number"], strict=True)
        return np.fromiter(((f, n) in wanted for f, n in pairs), dtype=bool, count=len(frame))

    return select


def _from_table(table: str, keys: list[int]) -> Selector:
    """Quarantine records of source rows of ``table`` with these keys."""
    by_key = _column_is("source_key", keys)

    def select(frame: pd.DataFrame) -> np.ndarray:
        if "source_table" not in frame:
            return np.zeros(len(frame), dtype=bool)
        return frame["source_table"].eq(table).to_numpy(dtype=bool, na_value=False) & by_key(frame)

    return select


def _either(*selectors: Selector) -> Selector:
    def select(frame: pd.DataFrame) -> np.ndarray:
        mask = np.zeros(len(frame), dtype=bool)
        for one in selectors:
            mask |= one(frame)
        return mask

    return select


def _key(path: str) -> TableRef:
    stage, name = path.split("/")
    return TableRef(stage, name, "day")


def forget_customer(
    customer_id: int,
    *,
    key: PiiKey,
    hot: TieredStore,
    cold: ColdStore,
    segments: sa.Engine | None,
    now: dt.datetime,
) -> ErasureRecord:
    """Erase ``customer_id`` everywhere (see the module docstring); returns what was removed where."""
    token = customer_token(key, customer_id)
    suppress(cold, token, now)  # first: nothing running meanwhile can bring the customer back
    record = ErasureRecord(token, now)
    this = _column_is("customer_id", [customer_id])
    orders = _rewrite_cold(cold, _key("ingestion/raw_orders"), this, record)
    _rewrite_cold(cold, _key("ingestion/raw_customers"), this, record)

    def in_payload(frame: pd.DataFrame) -> np.ndarray:
        return (payload_customer_ids(frame["payload"]) == customer_id).fillna(False).to_numpy(dtype=bool)

    lines = _rewrite_cold(cold, _key("ingestion/raw_events"), in_payload, record)
    for name in ("transformation/customers", "transformation/events", "transformation/sessions"):
        _rewrite_hot(hot, _key(name), this, record)
    clean_orders = _rewrite_hot(hot, _key("transformation/orders"), this, record)
    order_ids = {int(i) for frame in (orders, clean_orders) if len(frame) for i in frame["order_id"].dropna()}
    rejected = _either(
        _lines_in(lines),
        _from_table("customers", [customer_id]),
        _from_table("orders", sorted(order_ids)),
    )
    for name in (
        "ingestion/raw_events_rejected",
        "transformation/orders_rejected",
        "transformation/customers_rejected",
        "transformation/events_rejected",
    ):
        _rewrite_cold(cold, _key(name), rejected, record)
    _rewrite_hot(hot, _key("transformation/quarantine"), rejected, record)
    _rewrite_hot(hot, _key("serving/customer_features"), _column_is("customer_token", [token]), record)
    if segments is not None:
        record.erased += _forget_segment(segments, customer_id)
    _log(cold, record)
    return record


def _forget_segment(engine: sa.Engine, customer_id: int) -> list[Erased]:
    from de_assets.serving.reverse_etl import SEGMENTS_TABLE, segments_table

    with engine.begin() as conn:
        if not sa.inspect(conn).has_table(SEGMENTS_TABLE):
            return []
        deleted = conn.execute(
            sa.delete(segments_table).where(segments_table.c.customer_id == int(customer_id))
        ).rowcount
    return [Erased(f"shop.{SEGMENTS_TABLE}", "-", "source", int(deleted))] if deleted else []


def _log(cold: ColdStore, record: ErasureRecord) -> None:
    entry = pd.DataFrame(
        {
            "customer_token": pd.Series([record.customer_token], dtype="str"),
            "requested_at": pd.Series([record.requested_at], dtype="datetime64[us, UTC]"),
            "rows_erased": pd.Series([record.rows], dtype="int64"),
            "erased": pd.Series([json.dumps([asdict(item) for item in record.erased])], dtype="str"),
        }
    )
    _append(cold, ERASURE_LOG, entry)


def erasure_log(cold: ColdStore) -> pd.DataFrame:
    states, frame = cold.load(ERASURE_LOG, [None])
    return frame if states[None] is PartitionState.PRESENT else pd.DataFrame()

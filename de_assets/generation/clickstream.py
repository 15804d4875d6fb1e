"""Simulated clickstream: one delivery day of JSON-lines batch files, with ledgered defects.

Everything is vectorised (numpy for traffic and defects, pyarrow compute for the JSON text) and a
pure function of ``(seed, day, parameters)``: the same inputs give byte-identical files. The traffic
and the defects draw from separate random streams, so changing the rates keeps the sessions.

Traffic: ``events_per_day`` genuine events in sessions of a few events close in time; about 30% of
sessions are anonymous (``customer_id`` null, which is valid). Lines are delivered in arrival order,
split into ``batches`` files of (nearly) equal line counts named after the delivery day.

Defects: each record carries at most one defect, and every defective line has exactly one ledger row
(``file`` and 1-based ``line``); lines without one are valid events of the delivery day. A row-level
rate gives ``round(rate * events_per_day)`` records, except for late events, which are whole sessions
(the largest total of randomly chosen sessions not above the target).

* in place, on disjoint sets of genuine events: late (moved 1-3 days back, still delivered today),
  null required field, malformed JSON, wrong JSON type, unknown currency, negative amount. The
  purchase-only defects take purchases first and turn other events into purchases only if needed;
* extra lines copied from clean events and delivered after the original (the ledger points at the
  copy): exact duplicates, and re-sent event ids with a changed ``event_time`` or ``page``;
* per file: an extra zero-byte batch (chance ``rates.empty_file`` per day), and schema drift from
  ``schema_drift_day`` on (``referrer`` added, ``device`` renamed), ledgered with ``line`` null.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from de_assets.generation.defects import Defect, DefectRates
from de_assets.generation.landing import LandingFolder
from de_assets.generation.ledger import LEDGER_COLUMNS

CLICKSTREAM_SYSTEM = "clickstream"
_SEED_TAG = 0xC11C  # keeps the clickstream's random stream apart from other systems' for a seed and day

EVENT_TYPES = ("page_view", "search", "add_to_cart", "purchase")
PAGE_VIEW, SEARCH, ADD_TO_CART, PURCHASE = range(4)
# Drawn per event; a purchase without an earlier add_to_cart in its session becomes a page view.
_EVENT_TYPE_WEIGHTS = (0.6, 0.2, 0.14, 0.06)
DEVICES = ("mobile", "desktop", "tablet")
_DEVICE_WEIGHTS = (0.6, 0.33, 0.07)
CURRENCIES = ("EUR", "USD", "GBP")
_CURRENCY_WEIGHTS = (0.6, 0.25, 0.15)
_BAD_CURRENCIES = ("XXQ", "EU", "EURO", "UKP")  # none of them is an ISO 4217 code
REQUIRED_FIELDS = ("event_id", "event_time", "event_type", "session_id")
_WRONG_TYPES = ("customer_id is a string", "event_time is a number", "amount is a string")
_MALFORMED = ("truncated line", "missing closing brace")
DRIFT_NEW_FIELD = "referrer"
DRIFT_RENAMED_FIELD = ("device", "device_type")
_REFERRERS = (
    None,
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://t.co/",
    "https://mail.example.com/",
)

# Every page an event can show, addressed by index. All text values in this module are plain ASCII
# without quotes or backslashes, so the JSON renderer has nothing to escape.
_CATEGORIES = ("shoes", "jackets", "bags", "hats", "socks", "sale")
_SEARCH_TERMS = ("red+shoes", "rain+jacket", "backpack", "wool+hat", "gift", "running+socks", "linen")
_PRODUCTS = 2000
_HOME, _CART, _CHECKOUT, _FIRST_CATEGORY = 0, 1, 2, 3
_FIRST_SEARCH = _FIRST_CATEGORY + len(_CATEGORIES)
_FIRST_PRODUCT = _FIRST_SEARCH + len(_SEARCH_TERMS)
_PAGES = (
    "/",
    "/cart",
    "/checkout",
    *(f"/category/{c}" for c in _CATEGORIES),
    *(f"/search?q={t}" for t in _SEARCH_TERMS),
    *(f"/product/{i}" for i in range(1, _PRODUCTS + 1)),
)

_DAY_MS = 86_400_000
_MEAN_SESSION_EVENTS = 6
_MEAN_GAP_MS = 40_000
# Relative traffic per hour of the (UTC) day: quiet nights, busy evenings.
_HOURLY = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 7, 8, 7, 7, 7, 7, 8, 9, 10, 10, 9, 6, 4], float)

_Rows = dict[str, np.ndarray]
"""One line per position: ``src`` is the genuine event a line carries (its id), the rest its fields."""


@dataclass(frozen=True)
class ClickstreamDay:
    """One delivery day: ``files`` maps file name to JSON-lines bytes, in delivery order.

    ``events`` counts genuine events, i.e. the distinct event ids generated for the day
    (``events_per_day``), including late events and events damaged in place, excluding the exact
    duplicate and re-sent copies; the files hold ``events`` lines plus one line per copy.
    ``ledger`` has the columns of :data:`~de_assets.generation.ledger.LEDGER_COLUMNS`, ``day`` and
    ``system`` filled in, sorted by file and line.
    """

    day: dt.date
    files: dict[str, bytes]
    ledger: pd.DataFrame
    events: int


@dataclass(frozen=True)
class _Injected:
    """Lines (positions in :data:`_Rows`) that got ``defect``; ``ref`` are the originals of copies."""

    rows: np.ndarray
    defect: Defect
    detail: np.ndarray | str
    ref: np.ndarray | None = None


def clickstream_file_prefix(day: dt.date) -> str:
    return f"clickstream_{day.isoformat()}_"


def generate_clickstream_day(
    day: dt.date,
    *,
    seed: int,
    events_per_day: int,
    customer_ids: np.ndarray,
    rates: DefectRates = DefectRates(),  # noqa: B008 - frozen dataclass, safe as a default
    batches: int = 4,
    schema_drift_day: dt.date | None = None,
) -> ClickstreamDay:
    """Generate the clickstream files delivered on ``day`` and the ledger of their defects."""
    customers = np.asarray(customer_ids)
    if customers.ndim != 1 or (customers.size and not np.issubdtype(customers.dtype, np.integer)):
        raise ValueError("customer_ids must be a one-dimensional array of integers")
    if seed < 0 or events_per_day < 0 or batches < 1:
        raise ValueError("seed and events_per_day must be >= 0 and batches >= 1")
    traffic_seed, defect_seed = np.random.SeedSequence([seed, day.toordinal(), _SEED_TAG]).spawn(2)
    rng = np.random.default_rng(defect_seed)
    day_ms = (day - dt.date(1970, 1, 1)).days * _DAY_MS

    rows, ids, session_ids = _traffic(np.random.default_rng(traffic_seed), day_ms, events_per_day, customers)
    id_fragments, session_fragments = (
        _fragments("event_id", ids, begin="{"),
        _fragments("session_id", session_ids),
    )
    injected, duplicated, resent = _damage(rng, rows, rates, day_ms)
    rows, copies = _copies(rng, rows, day_ms, duplicated, resent)
    injected += copies

    total = len(rows["src"])
    order = np.lexsort((rows["is_copy"], rows["arrival"]))  # an original before its copy on ties
    n_files = min(batches, total)
    bounds = np.arange(n_files + 1) * total // max(n_files, 1)
    empty_at = int(rng.integers(0, n_files + 1)) if rng.random() < rates.empty_file else None
    names = [
        f"{clickstream_file_prefix(day)}{i + 1:02d}.jsonl" for i in range(n_files + (empty_at is not None))
    ]
    batch_names = np.array([name for i, name in enumerate(names) if i != empty_at], dtype=object)
    drift = schema_drift_day is not None and day >= schema_drift_day
    rendered = {
        batch_names[b]: _render(
            {k: v[order[bounds[b] : bounds[b + 1]]] for k, v in rows.items()},
            id_fragments,
            session_fragments,
            drift,
        )
        for b in range(n_files)
    }

    position = np.empty(total, np.int64)
    position[order] = np.arange(total)
    batch = np.searchsorted(bounds, position, side="right") - 1
    file_rows = [
        (name, defect, detail)
        for name in (batch_names if drift else [])
        for defect, detail in (
            (Defect.SCHEMA_DRIFT_NEW_FIELD, f"new field {DRIFT_NEW_FIELD}"),
            (Defect.SCHEMA_DRIFT_RENAMED_FIELD, "{} renamed to {}".format(*DRIFT_RENAMED_FIELD)),
        )
    ]
    if empty_at is not None:
        file_rows.append((names[empty_at], Defect.EMPTY_FILE, "zero-byte batch file"))
    ledger = _ledger(injected, rows, ids, batch_names[batch], position - bounds[batch] + 1, file_rows)
    ledger["day"], ledger["system"] = day.isoformat(), CLICKSTREAM_SYSTEM
    files = {name: rendered.get(name, b"") for name in names}
    return ClickstreamDay(day=day, files=files, ledger=ledger, events=events_per_day)


def land_clickstream_day(landing: LandingFolder, day_data: ClickstreamDay) -> list[str]:
    """Land a day's files atomically, replacing (never duplicating) the files landed for it before.

    New files are written first and stale ones removed after, so a reader never sees a day with fewer
    files than both the old and the new delivery have; returns the paths written.
    """
    paths = [landing.write_atomic(name, data) for name, data in day_data.files.items()]
    for stale in landing.list(clickstream_file_prefix(day_data.day)):
        if stale.name not in day_data.files:
            landing.remove(stale.name)
    return paths


def _traffic(
    rng: np.random.Generator, day_ms: int, n: int, customers: np.ndarray
) -> tuple[_Rows, pa.Array, pa.Array]:
    """Clean genuine events in sessions, with their event ids and session ids (hex strings)."""
    lengths = rng.geometric(1 / _MEAN_SESSION_EVENTS, size=n)
    sessions = int(np.searchsorted(np.cumsum(lengths), n)) + 1 if n else 0
    lengths = lengths[:sessions]
    if sessions:
        lengths[-1] -= lengths.sum() - n
    session = np.repeat(np.arange(sessions), lengths)
    first = np.cumsum(lengths) - lengths  # each session's first event

    gaps = rng.exponential(_MEAN_GAP_MS, size=n).astype(np.int64)
    gaps[first] = 0
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], lengths)
    hour = rng.choice(24, size=sessions, p=_HOURLY / _HOURLY.sum())
    start = day_ms + hour * 3_600_000 + rng.integers(0, 3_600_000, size=sessions)
    last_ms = day_ms + _DAY_MS - 1
    start = np.maximum(day_ms, np.minimum(start, last_ms - offset[first + lengths - 1]))
    t_ms = np.minimum(start[session] + offset, last_ms)

    etype = rng.choice(4, size=n, p=_EVENT_TYPE_WEIGHTS)
    etype[first] = PAGE_VIEW
    carts = np.cumsum(etype == ADD_TO_CART)
    etype[(etype == PURCHASE) & (carts == np.repeat(carts[first], lengths))] = PAGE_VIEW
    kind = rng.random(n)
    page = np.select(
        [etype == SEARCH, etype == ADD_TO_CART, etype == PURCHASE, kind < 0.2, kind < 0.35],
        [_FIRST_SEARCH + rng.integers(0, len(_SEARCH_TERMS), n), _CART, _CHECKOUT, _HOME,
         _FIRST_CATEGORY + rng.integers(0, len(_CATEGORIES), n)],
        _FIRST_PRODUCT + rng.integers(0, _PRODUCTS, n),
    )  # fmt: skip
    anonymous = (rng.random(sessions) < 0.3) | (customers.size == 0)
    customer = customers[rng.integers(0, customers.size, sessions)] if customers.size else np.zeros(sessions)
    rows = {
        "src": np.arange(n),
        "t_ms": t_ms,
        "anonymous": anonymous[session],
        "customer": customer[session].astype(np.int64),
        "session": session,
        "etype": etype,
        "page": page,
        "device": rng.choice(len(DEVICES), size=sessions, p=_DEVICE_WEIGHTS)[session],
        "referrer": rng.integers(0, len(_REFERRERS), sessions)[session],
        "cents": np.maximum(100, np.round(np.exp(rng.normal(3.8, 0.7, n)) * 100)).astype(np.int64),
        "currency": rng.choice(len(CURRENCIES), size=n, p=_CURRENCY_WEIGHTS),
        "arrival": np.minimum(t_ms + rng.exponential(2_000, n).astype(np.int64), last_ms),
        "is_copy": np.zeros(n, np.int8),
        "null_field": np.full(n, -1),  # index into REQUIRED_FIELDS
        "wrong": np.full(n, -1),  # index into _WRONG_TYPES
        "malformed": np.full(n, -1),  # index into _MALFORMED
        "cut": np.zeros(n),  # where a truncated line stops, as a fraction of its second half
    }
    return rows, _hex_strings(rng, n, 16), _hex_strings(rng, sessions, 10)


def _hex_strings(rng: np.random.Generator, count: int, nbytes: int) -> pa.Array:
    """``count`` random hex strings of ``2 * nbytes`` characters."""
    data = np.frombuffer(rng.bytes(count * nbytes), np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    text = np.column_stack([digits[data >> 4], digits[data & 15]]).ravel()
    offsets = np.arange(count + 1, dtype=np.int32) * (2 * nbytes)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _damage(
    rng: np.random.Generator, rows: _Rows, rates: DefectRates, day_ms: int
) -> tuple[list[_Injected], np.ndarray, np.ndarray]:
    """Damage disjoint sets of genuine events in place; returns them and the clean sources of copies."""
    n = len(rows["src"])
    names = ("event_unknown_currency", "event_negative_amount", "event_null_required", "malformed_json",
             "wrong_type", "exact_duplicate", "resent_event_id")  # fmt: skip
    n_cur, n_neg, *counts = (round(getattr(rates, name) * n) for name in names)

    # Late events: whole sessions moved one to three days back, arriving at any time of the day.
    session = rows["session"]
    lengths = np.bincount(session)
    shuffled = rng.permutation(lengths.size)
    late_sessions = shuffled[np.cumsum(lengths[shuffled]) <= round(rates.late_event * n)]
    late_by = np.zeros(lengths.size, np.int64)
    late_by[late_sessions] = rng.integers(1, 4, late_sessions.size)
    late = np.flatnonzero(late_by[session])
    rows["t_ms"] -= late_by[session] * _DAY_MS
    rows["arrival"][late] = day_ms + rng.integers(0, _DAY_MS, late.size)
    late_days = (rows["t_ms"][late] // _DAY_MS).astype("datetime64[D]").astype(str).astype(object)
    injected = [_Injected(late, Defect.LATE_EVENT, late_days)]

    pool = np.flatnonzero(late_by[session] == 0)
    if n_cur + n_neg + sum(counts) > pool.size:
        raise ValueError(f"the defect rates need more records than the {pool.size} events that are not late")
    # Purchase-only defects take purchases first and make purchases of other events only if needed.
    rank = rng.random(pool.size) + (rows["etype"][pool] != PURCHASE)
    chosen = pool[np.argsort(rank, kind="stable")[: n_cur + n_neg]]
    rows["etype"][chosen], rows["page"][chosen] = PURCHASE, _CHECKOUT
    unknown, negative = chosen[:n_cur], chosen[n_cur:]
    bad = rng.integers(0, len(_BAD_CURRENCIES), n_cur)
    rows["currency"][unknown] = len(CURRENCIES) + bad
    rows["cents"][negative] *= -1
    injected.append(_Injected(unknown, Defect.UNKNOWN_CURRENCY, np.array(_BAD_CURRENCIES, object)[bad]))
    injected.append(_Injected(negative, Defect.NEGATIVE_AMOUNT, _money(rows["cents"][negative])))

    clean = np.ones(n, bool)
    clean[late], clean[chosen] = False, False
    nulls, malformed, wrong, duplicated, resent = np.split(
        rng.permutation(np.flatnonzero(clean)), np.cumsum(counts)
    )[:5]
    field = rng.integers(0, len(REQUIRED_FIELDS), nulls.size)
    rows["null_field"][nulls] = field
    injected.append(
        _Injected(nulls, Defect.NULL_REQUIRED, np.char.add(np.array(REQUIRED_FIELDS)[field], " is null"))
    )
    variant = rng.integers(0, len(_MALFORMED), malformed.size)
    rows["malformed"][malformed] = variant
    rows["cut"][malformed] = rng.random(malformed.size)
    injected.append(_Injected(malformed, Defect.MALFORMED_JSON, np.array(_MALFORMED, object)[variant]))
    # Only purchases have an amount to give the wrong type.
    variant = rng.integers(0, np.where(rows["etype"][wrong] == PURCHASE, 3, 2))
    rows["wrong"][wrong] = variant
    injected.append(_Injected(wrong, Defect.WRONG_TYPE, np.array(_WRONG_TYPES, object)[variant]))
    return injected, duplicated, resent


def _copies(
    rng: np.random.Generator, rows: _Rows, day_ms: int, duplicated: np.ndarray, resent: np.ndarray
) -> tuple[_Rows, list[_Injected]]:
    """Append exact duplicates and changed re-sends of clean events, arriving after the original."""
    n, last_ms = len(rows["src"]), day_ms + _DAY_MS - 1
    sources = np.concatenate([duplicated, resent])
    copies = {k: v[sources] for k, v in rows.items()}
    copies["is_copy"][:] = 1
    delay = np.concatenate(
        [rng.exponential(1_800_000, duplicated.size), rng.exponential(300_000, resent.size)]
    )
    copies["arrival"] = np.minimum(copies["arrival"] + 1 + delay.astype(np.int64), last_ms)

    again = slice(duplicated.size, None)
    shift = rng.integers(1_000, 10_000, resent.size)
    shift = np.where(copies["t_ms"][again] + shift <= last_ms, shift, -shift)  # stay on the day
    moved = rng.random(resent.size) < 0.7  # the others show a different product page
    copies["t_ms"][again] += np.where(moved, shift, 0)
    page = rng.integers(0, _PRODUCTS, resent.size)
    page = np.where(_FIRST_PRODUCT + page == copies["page"][again], (page + 1) % _PRODUCTS, page)
    copies["page"][again] = np.where(moved, copies["page"][again], _FIRST_PRODUCT + page)
    seconds = np.char.add(np.char.add("event_time moved by ", (shift / 1000).astype(str)), " s")
    return {k: np.concatenate([rows[k], copies[k]]) for k in rows}, [
        _Injected(n + np.arange(duplicated.size), Defect.EXACT_DUPLICATE, "identical copy", duplicated),
        _Injected(n + duplicated.size + np.arange(resent.size), Defect.RESENT_EVENT_ID,
                  np.where(moved, seconds, "page changed"), resent),
    ]  # fmt: skip


def _money(cents: np.ndarray, point: str = ".") -> np.ndarray:
    """``-1250`` → ``"-12.50"``, as a numpy string array."""
    whole, fraction = np.abs(cents) // 100, np.abs(cents) % 100
    padded = np.char.add(np.where(fraction < 10, "0", ""), fraction.astype(str))  # np.char.zfill fails on []
    return np.char.add(
        np.char.add(np.where(cents < 0, "-", ""), whole.astype(str)), np.char.add(point, padded)
    )


def _ledger(
    injected: list[_Injected],
    rows: _Rows,
    ids: pa.Array,
    file: np.ndarray,
    line: np.ndarray,
    file_rows: list[tuple[str, Defect, str]],
) -> pd.DataFrame:
    """Ledger rows of the line-level defects (``file``/``line`` give each line's place) and file-level ones."""
    frames = [pd.DataFrame(file_rows, columns=["file", "defect", "detail"])]
    for part in injected:
        detail = np.broadcast_to(np.asarray(part.detail, object), part.rows.shape)
        if part.ref is not None:
            detail = (
                detail
                + "; original: "
                + file[part.ref]
                + " line "
                + line[part.ref].astype(str).astype(object)
            )
        key = pc.take(ids, pa.array(rows["src"][part.rows])).to_numpy(zero_copy_only=False)
        key[rows["null_field"][part.rows] == REQUIRED_FIELDS.index("event_id")] = None
        columns = {
            "defect": part.defect,
            "key": key,
            "file": file[part.rows],
            "line": line[part.rows],
            "detail": detail,
        }
        frames.append(pd.DataFrame(columns))
    ledger = pd.concat(frames, ignore_index=True).reindex(columns=LEDGER_COLUMNS)
    ledger = ledger.astype({c: "str" for c in LEDGER_COLUMNS if c != "line"} | {"line": "Int64"})
    return ledger.sort_values(["file", "line", "defect"], na_position="first", ignore_index=True)


def _fragments(
    name: str, values: pa.Array | Sequence[str | None], *, quote: bool = True, begin: str = "", end: str = ""
) -> pa.Array:
    """``"name":"value"`` per value (``"name":null`` for nulls), then one ``"name":null`` at the end.

    Lines are assembled by taking one fragment per field, so each text is formatted only once per
    distinct value. ``begin`` opens the line before its first field, ``end`` closes it after its last.
    """
    start = f'{begin}"{name}":'
    mark = '"' if quote else ""
    values = pa.concat_arrays([pa.array(values, pa.string()), pa.nulls(1, pa.string())])
    return pc.fill_null(
        pc.binary_join_element_wise(start + mark, values, mark + end, ""), f"{start}null{end}"
    )


def _render(rows: _Rows, event_ids: pa.Array, session_ids: pa.Array, drift: bool) -> bytes:
    """The JSON lines of ``rows`` in order, each ending with a newline.

    ``event_ids`` and ``session_ids`` are the fragments of the day's ids (:func:`_fragments`).
    """

    def take(fragments: pa.Array, index: np.ndarray, null: np.ndarray | bool = False) -> pa.Array:
        return pc.take(fragments, np.where(null, len(fragments) - 1, index))

    def patch(fragments: pa.Array, mask: np.ndarray, values: pa.Array) -> pa.Array:
        return pc.replace_with_mask(fragments, pa.array(mask), values) if mask.any() else fragments

    null_field, wrong, purchase = rows["null_field"], rows["wrong"], rows["etype"] == PURCHASE
    stamp = pa.array(rows["t_ms"]).cast(pa.timestamp("ms")).cast(pa.string())  # "2024-01-03 12:34:56.789"
    iso = pc.binary_join_element_wise(pc.utf8_replace_slice(stamp, 10, 11, "T"), "Z", "")
    event_time = _fragments("event_time", iso)[:-1]
    odd = (null_field == 1) | (wrong == 1)  # null, or a number of milliseconds
    event_time = patch(
        event_time,
        odd,
        _fragments(
            "event_time",
            pa.array(np.where(null_field[odd] == 1, None, rows["t_ms"][odd].astype(str))),
            quote=False,
        )[:-1],
    )
    customer = pa.array(rows["customer"]).cast(pa.string())
    odd = rows["anonymous"] | (wrong == 0)  # null when anonymous, or a string
    as_string = pc.if_else(rows["anonymous"][odd], "anonymous", customer.filter(odd))
    customer_id = _fragments("customer_id", customer, quote=False)[:-1]
    customer_id = patch(
        customer_id,
        odd,
        pc.if_else(wrong[odd] == 0, _fragments("customer_id", as_string)[:-1], '"customer_id":null'),
    )
    amount = _money(rows["cents"][purchase])
    as_string = wrong[purchase] == 2  # "12,50" instead of 12.50
    amount = pc.if_else(
        as_string,
        _fragments("amount", _money(rows["cents"][purchase], ","))[:-1],
        _fragments("amount", amount, quote=False)[:-1],
    )
    last = {"end": "}\n"} if not drift else {}
    fields = [
        take(event_ids, rows["src"], null_field == 0),
        event_time,
        customer_id,
        take(session_ids, rows["session"], null_field == 3),
        take(_fragments("event_type", EVENT_TYPES), rows["etype"], null_field == 2),
        take(_fragments("page", _PAGES), rows["page"]),
        take(_fragments(DRIFT_RENAMED_FIELD[drift], DEVICES), rows["device"]),
        patch(take(_fragments("amount", ()), np.zeros(len(purchase), np.int64)), purchase, amount),
        take(_fragments("currency", CURRENCIES + _BAD_CURRENCIES, **last), rows["currency"], ~purchase),
    ]
    if drift:
        fields.append(take(_fragments(DRIFT_NEW_FIELD, _REFERRERS, end="}\n"), rows["referrer"]))
    return _concatenated(pc.binary_join_element_wise(*fields, ","), rows["malformed"], rows["cut"])


def _concatenated(lines: pa.Array, malformed: np.ndarray, cut: np.ndarray) -> bytes:
    """All ``lines`` back to back, the malformed ones cut short (their newline kept).

    A malformed line stops anywhere in its second half (``cut`` is the fraction of it kept) or just
    before its closing brace. Arrow keeps the strings contiguous between the first and last offset,
    so the result is that byte range less the dropped tail of each malformed line.
    """
    if not len(lines):
        return b""
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], width)[lines.offset : lines.offset + len(lines) + 1].astype(
        np.int64
    )
    broken = np.flatnonzero(malformed >= 0)
    start, end = offsets[broken], offsets[broken + 1] - 1  # each line without its newline
    half = (end - start) // 2
    keep = np.where(
        malformed[broken] == 1,
        end - start - 1,
        half + (cut[broken] * (end - start - 1 - half)).astype(np.int64),
    )
    data = memoryview(lines.buffers()[2])
    segments = zip(np.r_[offsets[0], end].tolist(), np.r_[start + keep, offsets[-1]].tolist(), strict=True)
    return b"".join(data[a:b] for a, b in segments)

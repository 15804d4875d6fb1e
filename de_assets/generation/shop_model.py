"""The shop's operational data as a pure function of (seed, day, volumes): no database here.

Every row's whole life is drawn when it is created: an order's status timeline (paid, shipped,
delivered or cancelled, and for test orders a hard delete), a customer's e-mail change and account
closure. A day of traffic is then "the rows created that day, plus the events of earlier rows that
fall on that day". Because lives are fixed at creation, re-generating any day, in any order, gives
the same database as generating the days in sequence: the state of a row is its last event that
falls on a generated day.

Ids are ``day_number * ID_BLOCK + seq`` (day_number counts from :data:`ID_EPOCH`), so a day's ids
are known without asking the database, and they rise with time like a sequence would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from de_assets.generation.defects import Defect, DefectRates
from de_assets.generation.ledger import ledger_frame

ID_EPOCH = dt.date(2000, 1, 1)
ID_BLOCK = 100_000_000
# Longest an order's timeline runs after creation (delivery or a test-order delete), in days.
ORDER_WINDOW_DAYS = 10
# Customers change e-mail or close their account within this many days of signing up.
CUSTOMER_WINDOW_DAYS = 30
# Orders come from customers who signed up within this many days (plus the day's new ones).
RETURNING_WINDOW_DAYS = 30

CURRENCIES = np.array(["EUR", "USD", "GBP"])
UNKNOWN_CURRENCIES = np.array(["XXQ", "EU", "US$"])
COUNTRIES = np.array(["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL", "SE", "IE"])
FIRST_NAMES = np.array(
    ["Ada", "Alan", "Grace", "Linus", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
)
LAST_NAMES = np.array(
    [
        "Lovelace",
        "Turing",
        "Hopper",
        "Torvalds",
        "Dijkstra",
        "Liskov",
        "Knuth",
        "Allen",
        "Thompson",
        "Perlman",
    ]
)
EMAIL_DOMAINS = np.array(["example.com", "example.org", "example.net"])

ORDER_EVENTS = ("placed", "paid", "shipped", "delivered", "cancelled")
_US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class DayPlan:
    """What was (or will be) generated for one day: enough to redraw any of its rows."""

    day: dt.date
    seed: int
    customers: int
    orders: int
    rates: DefectRates = field(default_factory=DefectRates)

    def __post_init__(self) -> None:
        if self.customers < 0 or self.orders < 0:
            raise ValueError(
                f"volumes must not be negative, got {self.customers} customers, {self.orders} orders"
            )
        if max(self.customers, self.orders) >= ID_BLOCK:
            raise ValueError(f"at most {ID_BLOCK - 1:,} customers or orders per day")
        if self.day < ID_EPOCH:
            raise ValueError(f"days before {ID_EPOCH} cannot be simulated (ids count from it)")


def customers_for_orders(orders_per_day: int) -> int:
    """New sign-ups per day for a given order volume (one in five orders is a new customer's first)."""
    return max(1, orders_per_day // 5)


def _rng(plan: DayPlan, stream: str) -> np.random.Generator:
    tag = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng(np.random.SeedSequence([plan.seed, plan.day.toordinal(), tag]))


def day_start(day: dt.date) -> np.datetime64:
    return np.datetime64(day.isoformat(), "us")


def ids_for(day: dt.date, count: int) -> np.ndarray:
    return (day - ID_EPOCH).days * ID_BLOCK + np.arange(1, count + 1, dtype=np.int64)


def day_of_id(ids: np.ndarray) -> np.ndarray:
    """The creation day (as days since the epoch) encoded in an id."""
    return ids // ID_BLOCK


def _times_within_day(rng: np.random.Generator, day: dt.date, count: int) -> np.ndarray:
    offsets = np.sort(rng.integers(0, _US_PER_DAY, size=count))
    return day_start(day) + offsets.astype("timedelta64[us]")


def _days(times: np.ndarray) -> np.ndarray:
    """Calendar day (numpy datetime64[D]) of each timestamp; NaT stays NaT."""
    return times.astype("datetime64[D]")


def _on_generated(times: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """Whether each event falls on a generated day (NaT: no such event → False)."""
    return ~np.isnat(times) & np.isin(_days(times), generated)


def as_day_array(days: Iterable[dt.date]) -> np.ndarray:
    return np.array(sorted({np.datetime64(d.isoformat(), "D") for d in days}), dtype="datetime64[D]")


# ---------------------------------------------------------------------------------------------
# customers


@dataclass(frozen=True)
class CustomerLives:
    """Every customer created on a plan's day, with the events of their life."""

    frame: pd.DataFrame  # customer_id, full_name, email, email_changed, country, created_at
    email_changed_at: np.ndarray  # datetime64[us], NaT where the e-mail never changes
    closed_at: np.ndarray  # datetime64[us], NaT where the account stays open
    null_email: np.ndarray  # bool: the NULL_REQUIRED defect


def customer_lives(plan: DayPlan) -> CustomerLives:
    rng, rates = _rng(plan, "customer"), plan.rates
    n = plan.customers
    ids = ids_for(plan.day, n)
    created = _times_within_day(rng, plan.day, n)
    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), n)]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), n)]
    domain = EMAIL_DOMAINS[rng.integers(0, len(EMAIL_DOMAINS), n)]
    id_text = ids.astype(str)
    email = np.char.add(np.char.add(np.char.add(np.char.lower(first), "."), id_text), "@")
    email_v1 = np.char.add(email, domain)
    email_v2 = np.char.add(np.char.add(email, "mail."), domain)
    null_email = rng.random(n) < rates.null_required
    changes = (rng.random(n) < 0.05) & ~null_email
    change_after = rng.integers(_US_PER_DAY, CUSTOMER_WINDOW_DAYS * _US_PER_DAY, n).astype("timedelta64[us]")
    email_changed_at = np.where(changes, created + change_after, np.datetime64("NaT", "us"))
    closes = rng.random(n) < rates.account_closed
    close_after = rng.integers(_US_PER_DAY, CUSTOMER_WINDOW_DAYS * _US_PER_DAY, n).astype("timedelta64[us]")
    closed_at = np.where(closes, created + close_after, np.datetime64("NaT", "us"))
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "full_name": np.char.add(np.char.add(first, " "), last),
            "email": pd.array(email_v1, dtype="str"),
            "email_changed": pd.array(email_v2, dtype="str"),
            "country": COUNTRIES[rng.integers(0, len(COUNTRIES), n)],
            "created_at": created,
        }
    )
    frame.loc[null_email, ["email", "email_changed"]] = None
    return CustomerLives(frame, email_changed_at, closed_at, null_email)


def customer_rows(lives: CustomerLives, generated: np.ndarray) -> pd.DataFrame:
    """Customers as stored once every generated day has happened (closed accounts left out)."""
    changed = _on_generated(lives.email_changed_at, generated)
    closed = _on_generated(lives.closed_at, generated)
    frame = lives.frame
    out = frame[["customer_id", "full_name", "email", "country", "created_at"]].copy()
    out["email"] = frame["email"].where(~changed, frame["email_changed"])
    out["updated_at"] = np.where(changed, lives.email_changed_at, frame["created_at"].to_numpy())
    return out[~closed].reset_index(drop=True)


def customer_ledger(lives: CustomerLives) -> pd.DataFrame:
    ids = lives.frame["customer_id"].to_numpy()[lives.null_email]
    return _ledger_rows(Defect.NULL_REQUIRED, "customers", ids, "email is null")


# ---------------------------------------------------------------------------------------------
# orders


@dataclass(frozen=True)
class OrderLives:
    frame: pd.DataFrame  # order_id, customer_id, amount, currency, created_at
    events: dict[str, np.ndarray]  # ORDER_EVENTS → datetime64[us] (NaT: never happens)
    deleted_at: np.ndarray  # test orders: hard-deleted then; NaT otherwise
    defects: pd.DataFrame  # ledger rows injected at creation


def order_lives(plan: DayPlan, customer_pool: np.ndarray | None) -> OrderLives:
    """The day's orders, placed by customers drawn from ``customer_pool``.

    With ``customer_pool=None`` the customers are not drawn (customer_id is null): enough to replay
    the orders' lives, which come from their own random stream.
    """
    rng, rates = _rng(plan, "order"), plan.rates
    n = plan.orders
    ids = ids_for(plan.day, n)
    placed = _times_within_day(rng, plan.day, n)
    if customer_pool is None:
        customer = np.zeros(n, np.int64)
    elif n and not len(customer_pool):
        raise ValueError(f"no customers exist on {plan.day} to place {n} orders")
    else:
        customer = customer_pool[_rng(plan, "buyer").integers(0, max(1, len(customer_pool)), n)]
    amount = np.round(rng.lognormal(3.5, 0.8, n), 2)
    currency = CURRENCIES[rng.choice(len(CURRENCIES), n, p=[0.6, 0.3, 0.1])]

    def after(low_days: float, high_days: float) -> np.ndarray:
        low, high = int(low_days * _US_PER_DAY), int(high_days * _US_PER_DAY)
        return rng.integers(low, high, n).astype("timedelta64[us]")

    nat = np.datetime64("NaT", "us")
    cancelled = rng.random(n) < 0.04
    paid = placed + after(1 / 1440, 0.25)
    shipped = paid + after(0.5, 3)
    delivered = shipped + after(1, 5)
    events = {
        "placed": placed,
        "paid": np.where(cancelled, nat, paid),
        "shipped": np.where(cancelled, nat, shipped),
        "delivered": np.where(cancelled, nat, delivered),
        "cancelled": np.where(cancelled, placed + after(0.01, 1.5), nat),
    }
    test_order = rng.random(n) < rates.test_order_deleted
    deleted_at = np.where(test_order, placed + after(1, 2), nat)

    # One creation defect per order at most, drawn from disjoint slices of one uniform number.
    u = rng.random(n)
    negative = u < rates.negative_amount
    unknown = (u >= rates.negative_amount) & (u < rates.negative_amount + rates.unknown_currency)
    bound = rates.negative_amount + rates.unknown_currency
    null_customer = (u >= bound) & (u < bound + rates.null_required)
    amount = np.where(negative, -amount, amount)
    currency = np.where(unknown, UNKNOWN_CURRENCIES[rng.integers(0, len(UNKNOWN_CURRENCIES), n)], currency)
    frame = pd.DataFrame(
        {
            "order_id": ids,
            "customer_id": pd.array(np.where(null_customer, 0, customer), dtype="Int64"),
            "amount": amount,
            "currency": pd.array(currency, dtype="str"),
            "created_at": placed,
        }
    )
    frame.loc[null_customer | (customer_pool is None), "customer_id"] = pd.NA
    defects = pd.concat(
        [
            _ledger_rows(Defect.NEGATIVE_AMOUNT, "orders", ids[negative], "amount below zero"),
            _ledger_rows(Defect.UNKNOWN_CURRENCY, "orders", ids[unknown], "currency not in ISO 4217"),
            _ledger_rows(Defect.NULL_REQUIRED, "orders", ids[null_customer], "customer_id is null"),
        ],
        ignore_index=True,
    )
    return OrderLives(frame, events, deleted_at, defects)


def order_state(lives: OrderLives, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(status, updated_at) of every order: its last event that falls on a generated day."""
    status = np.full(len(lives.frame), "placed", dtype=object)
    updated = lives.events["placed"].copy()
    for name in ORDER_EVENTS[1:]:
        times = lives.events[name]
        applies = _on_generated(times, generated) & (times > updated)
        status[applies] = name
        updated[applies] = times[applies]
    return status, updated


def order_rows(lives: OrderLives, generated: np.ndarray) -> pd.DataFrame:
    """Orders as stored once every generated day has happened (deleted test orders left out)."""
    status, updated = order_state(lives, generated)
    out = lives.frame.copy()
    out.insert(2, "status", pd.array(status, dtype="str"))
    out["updated_at"] = updated
    return out[~_on_generated(lives.deleted_at, generated)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# a day of changes to earlier rows


@dataclass(frozen=True)
class DayChanges:
    """What a day does to rows created on earlier days."""

    order_updates: pd.DataFrame  # order_id, status, updated_at
    order_deletes: np.ndarray
    customer_updates: pd.DataFrame  # customer_id, email, updated_at
    customer_deletes: np.ndarray
    ledger: pd.DataFrame  # HARD_DELETE rows


def changes_on(
    day: dt.date,
    earlier_customers: Iterable[CustomerLives],
    earlier_orders: Iterable[OrderLives],
    generated_days: Iterable[dt.date],
) -> DayChanges:
    """Events of earlier rows that fall on ``day``, with each row's resulting state."""
    generated = as_day_array(generated_days)
    today = np.datetime64(day.isoformat(), "D")
    updates, deletes = [], []
    for lives in earlier_orders:
        on_day = np.zeros(len(lives.frame), bool)
        for name in ORDER_EVENTS[1:]:
            on_day |= ~np.isnat(lives.events[name]) & (_days(lives.events[name]) == today)
        deleted = _on_generated(lives.deleted_at, generated)
        status, updated = order_state(lives, generated)
        keep = on_day & ~deleted
        updates.append(
            pd.DataFrame(
                {
                    "order_id": lives.frame["order_id"].to_numpy()[keep],
                    "status": status[keep],
                    "updated_at": updated[keep],
                }
            )
        )
        deletes.append(
            lives.frame["order_id"].to_numpy()[
                ~np.isnat(lives.deleted_at) & (_days(lives.deleted_at) == today)
            ]
        )
    customer_updates, customer_deletes = [], []
    for lives in earlier_customers:
        ids = lives.frame["customer_id"].to_numpy()
        closes_today = ~np.isnat(lives.closed_at) & (_days(lives.closed_at) == today)
        closed = _on_generated(lives.closed_at, generated)
        changes_today = ~np.isnat(lives.email_changed_at) & (_days(lives.email_changed_at) == today) & ~closed
        customer_updates.append(
            pd.DataFrame(
                {
                    "customer_id": ids[changes_today],
                    "email": lives.frame["email_changed"].to_numpy()[changes_today],
                    "updated_at": lives.email_changed_at[changes_today],
                }
            )
        )
        customer_deletes.append(ids[closes_today])
    order_deletes = np.concatenate(deletes) if deletes else np.empty(0, np.int64)
    gone_customers = np.concatenate(customer_deletes) if customer_deletes else np.empty(0, np.int64)
    ledger = pd.concat(
        [
            _ledger_rows(Defect.HARD_DELETE, "orders", order_deletes, "test order deleted"),
            _ledger_rows(Defect.HARD_DELETE, "customers", gone_customers, "account closed"),
        ],
        ignore_index=True,
    )
    return DayChanges(
        order_updates=_concat(updates, ["order_id", "status", "updated_at"]),
        order_deletes=order_deletes,
        customer_updates=_concat(customer_updates, ["customer_id", "email", "updated_at"]),
        customer_deletes=gone_customers,
        ledger=ledger,
    )


def customer_pool(
    day: dt.date, earlier: Iterable[CustomerLives], new: CustomerLives, generated_days: Iterable[dt.date]
) -> np.ndarray:
    """Customers who can order on ``day``: recent sign-ups still open at the day's end, and the day's new ones."""
    end_of_day = day_start(day + dt.timedelta(days=1))
    generated = as_day_array(generated_days)
    pools = []
    for lives in [*earlier, new]:
        open_ = (
            np.isnat(lives.closed_at)
            | ~_on_generated(lives.closed_at, generated)
            | (lives.closed_at >= end_of_day)
        )
        pools.append(lives.frame["customer_id"].to_numpy()[open_])
    return np.concatenate(pools) if pools else np.empty(0, np.int64)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns})


def _ledger_rows(defect: Defect, table: str, keys: np.ndarray, detail: str) -> pd.DataFrame:
    n = len(keys)
    return ledger_frame(
        {
            "defect": [defect.value] * n,
            "table": [table] * n,
            "key": [str(k) for k in keys],
            "detail": [detail] * n,
        },
        length=n,
    )

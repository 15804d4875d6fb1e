"""One simulated day across every source system, as used by the CLI and the generation assets."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from de_assets.generation import shop_db
from de_assets.generation import shop_model as model
from de_assets.generation.clickstream import (
    CLICKSTREAM_SYSTEM,
    generate_clickstream_day,
    land_clickstream_day,
)
from de_assets.generation.defects import DefectRates
from de_assets.generation.landing import LandingFolder
from de_assets.generation.ledger import write_ledger

SHOP_SYSTEM = "shop"


@dataclass(frozen=True)
class SimulationParams:
    """How much traffic a day has and how dirty it is; with the day, this fully determines the data."""

    seed: int = 42
    orders_per_day: int = 5_000
    events_per_day: int = 20_000
    rates: DefectRates = field(default_factory=DefectRates)
    clickstream_batches: int = 4
    schema_drift_day: dt.date | None = None

    def __post_init__(self) -> None:
        if self.orders_per_day < 0 or self.events_per_day < 0:
            raise ValueError("orders_per_day and events_per_day must not be negative")
        if self.clickstream_batches < 1:
            raise ValueError("clickstream_batches must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise ValueError("seed must be a non-negative 64-bit integer")

    def plan(self, day: dt.date) -> model.DayPlan:
        customers = model.customers_for_orders(self.orders_per_day) if self.orders_per_day else 0
        return model.DayPlan(
            day=day, seed=self.seed, customers=customers, orders=self.orders_per_day, rates=self.rates
        )


@dataclass(frozen=True)
class ShopDaySummary:
    day: dt.date
    customers_created: int
    orders_created: int
    orders_updated: int
    orders_deleted: int
    customers_updated: int
    customers_deleted: int
    defects: int
    customer_pool: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ClickstreamDaySummary:
    day: dt.date
    files: list[str]
    lines: int
    defects: int


def _window(plans: dict[dt.date, model.DayPlan], day: dt.date, days: int) -> list[model.DayPlan]:
    return [plans[d] for d in (day - dt.timedelta(days=k) for k in range(days, 0, -1)) if d in plans]


def _recent_customers(
    plans: dict[dt.date, model.DayPlan], day: dt.date
) -> dict[dt.date, model.CustomerLives]:
    """Lives of the customers who signed up on the simulated days before ``day`` that still matter."""
    days = max(model.CUSTOMER_WINDOW_DAYS, model.RETURNING_WINDOW_DAYS)
    return {p.day: model.customer_lives(p) for p in _window(plans, day, days)}


def _customer_pool(
    plans: dict[dt.date, model.DayPlan],
    day: dt.date,
    recent: dict[dt.date, model.CustomerLives],
    new: model.CustomerLives,
) -> np.ndarray:
    returning = [recent[p.day] for p in _window(plans, day, model.RETURNING_WINDOW_DAYS)]
    return model.customer_pool(day, returning, new, plans)


def simulate_shop_day(
    source_db_url: str, ledger_dir: str, day: dt.date, params: SimulationParams
) -> ShopDaySummary:
    """Write ``day`` into the shop database (replacing what it wrote before) and its ledger."""
    plan = params.plan(day)
    with shop_db.source_engine(source_db_url) as engine:
        shop_db.ensure_schema(engine)
        with engine.begin() as conn:
            plans = shop_db.load_plans(conn)
            plans[day] = plan
            generated = model.as_day_array(plans)
            new_customers = model.customer_lives(plan)
            recent = _recent_customers(plans, day)
            earlier_customers = [recent[p.day] for p in _window(plans, day, model.CUSTOMER_WINDOW_DAYS)]
            pool = _customer_pool(plans, day, recent, new_customers)
            new_orders = model.order_lives(plan, pool)
            earlier_orders = [
                model.order_lives(p, None) for p in _window(plans, day, model.ORDER_WINDOW_DAYS)
            ]
            changes = model.changes_on(day, earlier_customers, earlier_orders, plans)
            customer_rows = model.customer_rows(new_customers, generated)
            order_rows = model.order_rows(new_orders, generated)
            shop_db.apply_day(
                conn,
                plan,
                customer_rows,
                order_rows,
                changes.order_updates,
                changes.order_deletes,
                changes.customer_updates,
                changes.customer_deletes,
            )
    ledger = pd.concat(
        [model.customer_ledger(new_customers), new_orders.defects, changes.ledger], ignore_index=True
    )
    write_ledger(ledger_dir, day, SHOP_SYSTEM, ledger)
    return ShopDaySummary(
        day=day,
        customers_created=len(customer_rows),
        orders_created=len(order_rows),
        orders_updated=len(changes.order_updates),
        orders_deleted=len(changes.order_deletes),
        customers_updated=len(changes.customer_updates),
        customers_deleted=len(changes.customer_deletes),
        defects=len(ledger),
        customer_pool=pool,
    )


def simulate_clickstream_day(
    landing: LandingFolder, ledger_dir: str, day: dt.date, params: SimulationParams, customer_ids: np.ndarray
) -> ClickstreamDaySummary:
    """Deliver ``day``'s clickstream batches into the landing folder (replacing that day's files)."""
    delivery = generate_clickstream_day(
        day,
        seed=params.seed,
        events_per_day=params.events_per_day,
        customer_ids=customer_ids,
        rates=params.rates,
        batches=params.clickstream_batches,
        schema_drift_day=params.schema_drift_day,
    )
    files = land_clickstream_day(landing, delivery)
    write_ledger(ledger_dir, day, CLICKSTREAM_SYSTEM, delivery.ledger)
    lines = sum(content.count(b"\n") for content in delivery.files.values())
    return ClickstreamDaySummary(day=day, files=files, lines=lines, defects=len(delivery.ledger))


def shop_customer_pool(source_db_url: str, day: dt.date) -> np.ndarray:
    """Customers able to browse on ``day`` as the shop database knows them (for the clickstream)."""
    with shop_db.source_engine(source_db_url) as engine:
        shop_db.ensure_schema(engine)
        with engine.connect() as conn:
            plans = shop_db.load_plans(conn)
    if day not in plans:
        return np.empty(0, np.int64)
    return _customer_pool(plans, day, _recent_customers(plans, day), model.customer_lives(plans[day]))

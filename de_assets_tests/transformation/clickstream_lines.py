"""Clickstream lines and raw frames for the events tests: write events as JSON, ingest them for real."""

import datetime as dt
import json
from typing import Any

import pandas as pd

from de_assets.ingestion.clickstream_files import assemble_partition, parse_file
from de_assets.transformation.events import EventsResult, build_events

DAY = dt.date(2024, 1, 3)
RATES = {"EUR": 1.0, "USD": 0.9, "GBP": 1.15}
PROCESSED = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


def iso(day: dt.date, second: int = 43_200) -> str:
    moment = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=second)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "e1",
        "event_time": iso(DAY),
        "customer_id": 7,
        "session_id": "s1",
        "event_type": "page_view",
        "page": "/",
        "device": "mobile",
        "amount": None,
        "currency": None,
    }
    return {k: v for k, v in (base | fields).items() if v is not ...}  # ... removes a field


def purchase(**fields: Any) -> dict[str, Any]:
    return event(
        **({"event_type": "purchase", "page": "/checkout", "amount": 12.5, "currency": "USD"} | fields)
    )


def line(value: dict[str, Any] | str) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def raw_of(
    files: dict[tuple[dt.date, int], list[dict[str, Any] | str]], hours: dict | None = None
) -> pd.DataFrame:
    """Raw rows of files keyed (delivery day, number); ingested at the hour given (default 20 + number)."""
    frames = []
    for (day, number), lines in files.items():
        name = f"clickstream_{day.isoformat()}_{number:02d}.jsonl"
        hour = (hours or {}).get((day, number), 20 + number)
        at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(hours=hour)
        data = "".join(line(v) + "\n" for v in lines).encode()
        frames.append(parse_file(name, data, ingested_at=at))
    return assemble_partition(None, frames)


def build(raw: pd.DataFrame, day: dt.date = DAY, *, limit: int = 3, share: float = 0.5) -> EventsResult:
    return build_events(
        raw, day, late_limit_days=limit, rates=RATES, contract_break_share=share, processed_at=PROCESSED
    )


def has_layout(frame: pd.DataFrame, columns: dict[str, str]) -> bool:
    return list(frame.columns) == list(columns) and frame.dtypes.equals(frame.astype(columns).dtypes)

"""The ground-truth ledger: one row per injected defect, stored beside the sources.

Layout: ``<ledger_dir>/day=YYYY-MM-DD/<system>.parquet``, one file per day and source system, so
re-generating a day replaces exactly its rows. Columns (see :data:`LEDGER_COLUMNS`):

* ``day``: the day of traffic that injected it (YYYY-MM-DD);
* ``system``: ``shop`` or ``clickstream``;
* ``defect``: a :class:`~de_assets.generation.defects.Defect` value;
* ``table``: source table (``orders``, ``customers``) for the shop, else null;
* ``key``: the record's key (order/customer id, event id) where it has one;
* ``file``/``line``: landing file name and 1-based line for clickstream defects;
* ``detail``: free text (the bad value, the late event's own day, ...).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LEDGER_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("system", pa.string()),
        ("defect", pa.string()),
        ("table", pa.string()),
        ("key", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("detail", pa.string()),
    ]
)
LEDGER_COLUMNS = LEDGER_SCHEMA.names


def ledger_frame(rows: dict[str, object] | None = None, length: int = 0) -> pd.DataFrame:
    """An empty (or column-wise filled) ledger frame with the ledger's columns in order."""
    data = {name: (rows or {}).get(name, [None] * length) for name in LEDGER_COLUMNS}
    return pd.DataFrame(data, columns=LEDGER_COLUMNS)


def write_ledger(ledger_dir: str | Path, day: dt.date, system: str, entries: pd.DataFrame) -> Path:
    """Atomically replace the ledger of ``system`` for ``day``."""
    unknown = set(entries.columns) - set(LEDGER_COLUMNS)
    if unknown:
        raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
    folder = Path(ledger_dir) / f"day={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{system}.parquet"
    frame = entries.reindex(columns=LEDGER_COLUMNS)
    frame["day"] = day.isoformat()
    frame["system"] = system
    table = pa.Table.from_pandas(frame, schema=LEDGER_SCHEMA, preserve_index=False)
    temporary = folder / f"_tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, target)
    return target


def read_ledger(ledger_dir: str | Path, days: list[dt.date] | None = None) -> pd.DataFrame:
    """All ledger rows (of the given days), sorted; an empty ledger frame when there are none."""
    root = Path(ledger_dir)
    wanted = None if days is None else {f"day={d.isoformat()}" for d in days}
    files = sorted(
        p
        for p in root.glob("day=*/*.parquet")
        if not p.name.startswith("_") and (wanted is None or p.parent.name in wanted)
    )
    if not files:
        return ledger_frame()
    tables = [pq.read_table(p, schema=LEDGER_SCHEMA) for p in files]
    return pa.concat_tables(tables).to_pandas().reset_index(drop=True)


def ledger_days(ledger_dir: str | Path) -> list[dt.date]:
    """Days that have a ledger, i.e. days the simulator has generated."""
    root = Path(ledger_dir)
    return sorted(
        dt.date.fromisoformat(p.name.removeprefix("day=")) for p in root.glob("day=*") if p.is_dir()
    )

"""Every piece of text a run left on disk, read by file type, for tests that search it for values that
must not be there (PII outside the raw zone, secrets anywhere).

Searching raw bytes is not enough: SQLite spreads long values over pages, DuckDB and Parquet compress
them, and Dagster stores its snapshots zlib-compressed. So SQLite, DuckDB and Parquet files are read
through their own readers (every table, every column, cast to text) and compressed blobs are
inflated; any other file is searched as bytes.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from urllib.parse import quote

import duckdb
import pyarrow.parquet as pq

SQLITE_HEADER = b"SQLite format 3\x00"
PARQUET_MAGIC = b"PAR1"
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of a DuckDB database file

Texts = Iterator[tuple[str, str]]  # (where, text)


def decoded(value: object) -> str:
    """A stored value as text; a compressed blob (zlib or gzip) inflated first."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        with suppress(zlib.error):  # not compressed: searched as it is
            raw = zlib.decompress(raw, wbits=zlib.MAX_WBITS | 32)
        return raw.decode("utf-8", errors="replace")
    return str(value)


def sqlite_texts(path: Path, where: str, tables: Iterable[str] | None = None) -> Texts:
    """Every value of every table (or of ``tables``), plus the schema, as one text per table."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if tables is None:
            yield (
                f"{where}:sqlite_master",
                "\n".join(
                    decoded(value) for row in conn.execute("SELECT * FROM sqlite_master") for value in row
                ),
            )
        else:
            names = [name for name in names if name in set(tables)]
        for name in names:
            cursor = conn.execute(f'SELECT * FROM "{name}"')
            header = [column[0] for column in cursor.description]
            values = [decoded(value) for row in cursor for value in row if value is not None]
            yield f"{where}:{name}", "\n".join([*header, *values])


def duckdb_texts(path: Path, where: str) -> Texts:
    """Every table and view of every schema (catalog tables included), plus the catalog itself."""
    with duckdb.connect(str(path), read_only=True) as conn:
        for catalog in ("duckdb_tables()", "duckdb_views() WHERE NOT internal", "duckdb_columns()"):
            rows = conn.sql(f"SELECT * FROM {catalog}").fetchall()
            yield f"{where}:{catalog}", "\n".join(decoded(v) for row in rows for v in row if v is not None)
        tables = conn.sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database()"
        ).fetchall()
        for schema, table in tables:
            relation = conn.sql(f'SELECT * FROM "{schema}"."{table}"')
            values = [decoded(v) for row in relation.fetchall() for v in row if v is not None]
            yield f"{where}:{schema}.{table}", "\n".join([*relation.columns, *values])


def parquet_texts(path: Path, where: str) -> Texts:
    """Every value of every column, and the file's key-value metadata."""
    table = pq.read_table(path)
    values = [decoded(v) for column in table.columns for v in column.to_pylist() if v is not None]
    metadata = [decoded(k) + "=" + decoded(v) for k, v in (table.schema.metadata or {}).items()]
    yield where, "\n".join([*table.column_names, *metadata, *values])


def file_texts(path: Path, where: str) -> Texts:
    with path.open("rb") as file:
        head = file.read(16)
    if head.startswith(SQLITE_HEADER):
        yield from sqlite_texts(path, where)
    elif head.startswith(PARQUET_MAGIC):
        yield from parquet_texts(path, where)
    elif head[8:12] == DUCKDB_MAGIC:
        yield from duckdb_texts(path, where)
    else:
        yield where, decoded(path.read_bytes())


def tree_texts(root: Path, *, skip: Callable[[Path], bool] = lambda _: False) -> Texts:
    """The texts of every file under the folder ``root`` except those ``skip`` says; ``where`` is the
    path relative to ``root``."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not skip(path):
            yield from file_texts(path, str(path.relative_to(root)))


def spellings(value: str) -> set[str]:
    """How a value can be written into text: as is, escaped in JSON, percent-encoded in a URL
    (lower-cased: the search ignores case)."""
    return {form.lower() for form in (value, json.dumps(value)[1:-1], quote(value, safe=""))}


def found(needles: Iterable[str], texts: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Which needles each text holds (any spelling, ignoring case); texts holding none are left out."""
    forms = {needle: spellings(needle) for needle in needles}
    hits: dict[str, list[str]] = {}
    for where, text in texts:
        lowered = text.lower()
        present = sorted(n for n, spelled in forms.items() if any(s in lowered for s in spelled))
        if present:
            hits.setdefault(where, []).extend(present)
    return hits

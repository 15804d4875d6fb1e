"""Embedded (file) databases need their folder to exist before the first connection."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

_FILE_DATABASE_BACKENDS = {"sqlite", "duckdb"}


def ensure_database_folder(url: str | sa.URL) -> None:
    """Create the parent folder of a SQLite/DuckDB file URL; other URLs are left alone."""
    parsed = sa.make_url(url)
    database = parsed.database
    # ":memory:", "md:..." and "file:" URIs are not plain paths.
    if parsed.get_backend_name() in _FILE_DATABASE_BACKENDS and database and ":" not in database:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

"""Validation of names that end up in SQL statements or storage paths.

Values are always bound as parameters; names cannot be, so every table, schema and column name is
checked against a strict pattern here and then quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Partition keys become folder names and bound values: dates, hours and simple static keys.
_PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


class UnsafeNameError(ValueError):
    """A name that could escape its place in a SQL statement or a storage path."""


def safe_identifier(name: object, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier (letters, digits, underscore; at most 63)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise UnsafeNameError(
            f"refusing {what} {name!r}: expected letters, digits and underscores, starting with a "
            "letter or underscore, at most 63 characters"
        )
    return name


def safe_column_names(columns: object, what: str = "column") -> list[str]:
    """Validate every column name of a frame; they must be unique strings."""
    names = [safe_identifier(c, what) for c in columns]  # type: ignore[attr-defined]
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        dupes = sorted({n for n in lowered if lowered.count(n) > 1})
        raise UnsafeNameError(f"refusing duplicate {what} names (case-insensitive): {dupes}")
    return names


def safe_partition_key(key: object) -> str:
    """Return ``key`` if it can be used as a folder name and a bound value without escaping."""
    if not isinstance(key, str) or not _PARTITION_KEY.fullmatch(key) or ".." in key:
        raise UnsafeNameError(
            f"refusing partition key {key!r}: expected letters, digits and . _ : + - "
            "(no path separators, no '..'), at most 128 characters"
        )
    return key

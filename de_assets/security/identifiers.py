"""Validation of names that end up in SQL statements or storage paths.

Values are always bound as parameters; names cannot be, so every table, schema and column name is
checked against a strict pattern here and then quoted by SQLAlchemy's identifier preparer.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Partition keys become folder names and bound values: dates, hours and simple static keys.
_PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
# Landed files: visible plain names that cannot leave their folder.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")


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


def _path_component(value: object, pattern: re.Pattern[str], what: str, expected: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise UnsafeNameError(f"refusing {what} {value!r}: expected {expected}")
    return value


def safe_partition_key(key: object) -> str:
    """Return ``key`` if it can be used as a folder name and a bound value without escaping."""
    return _path_component(
        key,
        _PARTITION_KEY,
        "partition key",
        "letters, digits and . _ : + - (no path separators, no '..'), at most 128 characters",
    )


def safe_file_name(name: object, what: str = "file name") -> str:
    """Return ``name`` if it is a plain, visible file name that cannot leave its folder."""
    return _path_component(
        name,
        _FILE_NAME,
        what,
        "letters, digits and . _ - (no path separators, no '..', not starting with '.'), at most 255 characters",
    )

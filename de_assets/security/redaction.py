"""Locations shown to people (metadata, logs, errors) never carry a password."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa


def redact_sqlalchemy_url(url: str) -> str:
    """The URL with its password masked; unparseable input is masked whole."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def redact_url(url: str) -> str:
    """An fsspec/HTTP-style URL or a local path with any user:password@ part removed."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class RedactedRepr:
    """Mixin for Dagster resources: their repr and str never show a secret.

    A step receives its resources initialised, with every ``EnvVar`` resolved; one careless
    ``log.info(f"{resource}")`` or an error message built from one would otherwise print a key or a
    password. Pydantic builds both repr and str from ``__repr_args__``, so masking there covers both.
    """

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()  # shown as *** when set
    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ()  # shown with the password masked

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            if name in self.SECRET_FIELDS and value:
                value = "***"
            elif name in self.DATABASE_URL_FIELDS and isinstance(value, str) and value:
                value = redact_sqlalchemy_url(value)
            yield name, value

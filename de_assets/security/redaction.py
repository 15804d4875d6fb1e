"""Locations shown to people (metadata, logs, errors) never carry a password."""

from __future__ import annotations

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

"""Which pseudonymisation key the stored tokens were made with, kept next to the data.

Every pseudonymised output carries its key's fingerprint, but a step that starts with a lost or
swapped key would silently make new tokens that join to nothing. So the warehouse records the
fingerprint of the key in use (table ``security.pii_keys`` in the hot tier: one row per key, the
current one and those retired by a rotation) and every step that makes tokens checks its key against
it before it writes anything: another key is a clear error, never new tokens.

A rotation (:func:`rotate`) retires the current fingerprint and registers the new one; the data are
then re-keyed by replaying every partition from the raw zone (``de-assets rotate-pii-key``).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from de_assets.security.pseudonymise import PiiKey
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef

REGISTRY = TableRef("security", "pii_keys")
CURRENT, RETIRED = "current", "retired"


class PiiKeyMismatchError(RuntimeError):
    """The key at hand is not the key the stored tokens were made with."""


def _frame(rows: list[tuple[str, str, dt.datetime]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fingerprint": pd.Series([r[0] for r in rows], dtype="str"),
            "status": pd.Series([r[1] for r in rows], dtype="str"),
            "since": pd.Series([r[2] for r in rows], dtype="datetime64[us, UTC]"),
        }
    )


def registered(store: HotStore) -> pd.DataFrame:
    """Every key fingerprint the warehouse has known, with its status and since when."""
    _, frame = store.load(REGISTRY, [None])
    return frame if len(frame.columns) else _frame([])


def _current(frame: pd.DataFrame) -> pd.Series | None:
    current = frame[frame["status"] == CURRENT]
    return None if current.empty else current.iloc[-1]


def current_fingerprint(store: HotStore) -> str | None:
    """The fingerprint of the key the stored tokens are made with; None before any token was stored."""
    current = _current(registered(store))
    return None if current is None else str(current["fingerprint"])


def verify(store: HotStore, key: PiiKey, *, now: dt.datetime) -> bool:
    """Raise :class:`PiiKeyMismatchError` unless ``key`` is the registered key; registers it when the
    warehouse has none yet (returns True then)."""
    frame = registered(store)
    current = _current(frame)
    if current is None:
        store.write(REGISTRY, {None: _frame([(key.fingerprint, CURRENT, now)])})
        return True
    if current["fingerprint"] == key.fingerprint:
        return False
    retired = set(frame.loc[frame["status"] == RETIRED, "fingerprint"])
    which = "a key retired by an earlier rotation" if key.fingerprint in retired else "an unknown key"
    raise PiiKeyMismatchError(
        f"the pseudonymisation key in use (fingerprint {key.fingerprint}) is {which}: the stored tokens were "
        f"made with the key of fingerprint {current['fingerprint']} (since {current['since']:%Y-%m-%d %H:%M} "
        "UTC). Nothing was written. Restore that key (DE_ASSETS_PII_KEY, or the key file in the home), or "
        "re-key the data with `de-assets rotate-pii-key` (README, 'Rotating the pseudonymisation key')."
    )


def rotate(store: HotStore, old: PiiKey, new: PiiKey, *, now: dt.datetime) -> None:
    """Retire ``old`` (which must be the registered key) and register ``new`` as the current key."""
    if old.fingerprint == new.fingerprint:
        raise ValueError("the new pseudonymisation key is the key already in use")
    verify(store, old, now=now)
    frame = registered(store)
    rows = [
        (fingerprint, RETIRED if status == CURRENT else status, since)
        for fingerprint, status, since in frame[["fingerprint", "status", "since"]].itertuples(index=False)
        if fingerprint != new.fingerprint
    ]
    store.write(REGISTRY, {None: _frame([*rows, (new.fingerprint, CURRENT, now)])})

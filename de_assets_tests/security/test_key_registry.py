"""A lost or swapped pseudonymisation key is detected before any token is made, and rotation re-keys."""

import datetime as dt
import hashlib
import hmac
import secrets
import sqlite3

import duckdb
import pytest

from de_assets.cli import NEW_PII_KEY, main
from de_assets.security.erasure import customer_token, erasure_log, suppression_list
from de_assets.security.key_registry import (
    CURRENT,
    RETIRED,
    PiiKeyMismatchError,
    current_fingerprint,
    registered,
    rotate,
    verify,
)
from de_assets.security.pseudonymise import PiiKey
from de_assets.security.resources import PiiKeyResource
from de_assets.storage.cold import ColdStore
from de_assets.storage.hot import HotStore
from de_assets.storage.tier import TableRef

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def _key() -> PiiKey:
    return PiiKey.from_text(secrets.token_hex(32))


@pytest.fixture
def store(tmp_path):
    return HotStore(f"duckdb:///{tmp_path / 'hot.duckdb'}")


def test_the_first_key_is_registered_and_then_only_that_key_passes(store):
    first, other = _key(), _key()
    assert current_fingerprint(store) is None
    assert verify(store, first, now=NOW) is True
    assert verify(store, first, now=NOW) is False
    with pytest.raises(
        PiiKeyMismatchError, match=rf"{other.fingerprint}\) is an unknown key.*{first.fingerprint}"
    ):
        verify(store, other, now=NOW)
    assert current_fingerprint(store) == first.fingerprint


def test_rotation_retires_the_old_key_which_is_then_refused_by_name(store):
    old, new = _key(), _key()
    verify(store, old, now=NOW)
    rotate(store, old, new, now=NOW)
    frame = registered(store).set_index("fingerprint")["status"].to_dict()
    assert frame == {old.fingerprint: RETIRED, new.fingerprint: CURRENT}
    assert verify(store, new, now=NOW) is False
    with pytest.raises(PiiKeyMismatchError, match="retired by an earlier rotation"):
        verify(store, old, now=NOW)


def test_rotation_needs_the_current_key_and_a_different_new_one(store):
    current, stranger, new = _key(), _key(), _key()
    verify(store, current, now=NOW)
    with pytest.raises(PiiKeyMismatchError):
        rotate(store, stranger, new, now=NOW)
    with pytest.raises(ValueError, match="already in use"):
        rotate(store, current, current, now=NOW)
    assert current_fingerprint(store) == current.fingerprint


def test_a_lost_key_file_is_an_error_not_a_new_key(tmp_path, store):
    key_file = tmp_path / "secrets" / "pii.key"
    resource = PiiKeyResource(key_file=str(key_file), registry_url=str(store._url))
    first = resource.load()  # creates the key file and registers it
    key_file.unlink()
    with pytest.raises(PiiKeyMismatchError, match="is missing"):
        resource.load()
    assert not key_file.exists()  # no random replacement was made
    with pytest.raises(PiiKeyMismatchError):
        PiiKeyResource(key=secrets.token_hex(32), key_file=str(key_file), registry_url=str(store._url)).load()
    assert current_fingerprint(store) == first.fingerprint


def _last_days(today: dt.date, n: int) -> list[dt.date]:
    return [today - dt.timedelta(days=k) for k in range(n, 0, -1)]


def _customer_tokens(home) -> dict[int, tuple[str, str]]:
    with duckdb.connect(str(home / "hot" / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.sql(
            "SELECT customer_id, customer_token, pii_key_fingerprint FROM transformation.customers"
        ).fetchall()
    return {int(c): (t, f) for c, t, f in rows}


def _token(key: PiiKey, value: str) -> str:
    purpose = hmac.new(key.secret, b"de_assets token purpose:customer", hashlib.sha256).digest()
    return hmac.new(purpose, value.encode(), hashlib.sha256).hexdigest()


def test_rotate_pii_key_rekeys_every_partition_and_the_old_key_stops_working(tmp_path, monkeypatch, capsys):
    today = dt.datetime.now(dt.UTC).date()
    monkeypatch.setenv("DE_ASSETS_HOME", str(tmp_path))
    monkeypatch.setenv("DE_ASSETS_START_DATE", (today - dt.timedelta(days=2)).isoformat())
    for name in ("DE_ASSETS_PII_KEY", "DE_ASSETS_HOT_URL", "DE_ASSETS_SOURCE_DB_URL", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--days", "2", "--orders-per-day", "60", "--events-per-day", "200"]) == 0
    key_file = tmp_path / "secrets" / "pii.key"
    old = PiiKey.from_text(key_file.read_text())
    before = _customer_tokens(tmp_path)
    assert before
    assert {f for _, f in before.values()} == {old.fingerprint}

    with sqlite3.connect(tmp_path / "source" / "shop.sqlite") as conn:
        (forgotten,) = conn.execute("SELECT customer_id FROM orders ORDER BY order_id LIMIT 1").fetchone()
    assert main(["forget", str(forgotten)]) == 0

    assert main(["rotate-pii-key"]) == 2  # no new key given: a plain error
    new_text = secrets.token_hex(32)
    monkeypatch.setenv(NEW_PII_KEY, new_text)
    capsys.readouterr()
    assert main(["rotate-pii-key"]) == 0
    assert new_text not in capsys.readouterr().out
    new = PiiKey.from_text(new_text)
    after = _customer_tokens(tmp_path)
    assert set(after) == set(before) - {forgotten}
    assert all(after[c] == (_token(new, str(c)), new.fingerprint) for c in after)
    assert PiiKey.from_text(key_file.read_text()) == new
    retired = tmp_path / "secrets" / f"pii.key.retired-{old.fingerprint}"
    assert PiiKey.from_text(retired.read_text()) == old
    assert retired.stat().st_mode & 0o077 == 0
    assert key_file.stat().st_mode & 0o077 == 0

    # The forgotten customer stays suppressed under the new key: re-ingestion leaves them out.
    cold = ColdStore(str(tmp_path / "cold"))
    assert suppression_list(cold) == {customer_token(new, forgotten)}
    assert erasure_log(cold)["customer_token"].tolist() == [customer_token(new, forgotten)]
    assert main(["run", "--days", "2", "--orders-per-day", "60", "--events-per-day", "200"]) == 0
    raw = cold.read(TableRef("ingestion", "raw_orders", "day"), [d.isoformat() for d in _last_days(today, 2)])
    assert len(raw)
    assert forgotten not in set(raw["customer_id"].dropna().astype("int64"))

    # A deployment still holding the old key fails clearly instead of making old-key tokens again.
    monkeypatch.delenv(NEW_PII_KEY)
    monkeypatch.setenv("DE_ASSETS_PII_KEY", old.secret.hex())
    capsys.readouterr()
    assert main(["replay", "--days", "1"]) == 1
    assert "retired by an earlier rotation" in capsys.readouterr().err
    assert _customer_tokens(tmp_path) == after

"""Keyed pseudonymisation: HMAC tokens, key handling that never leaks the key, a private key file."""

import base64
import hashlib
import hmac
import os
import stat

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.security.pseudonymise import PiiKey, load_or_create_key_file, tokens

HEX_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
KEY = PiiKey.from_text(HEX_KEY)
OTHER = PiiKey.from_text("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")


def hmac_token(secret: bytes, value: str, purpose: str) -> str:
    purpose_key = hmac.new(secret, b"de_assets token purpose:" + purpose.encode(), hashlib.sha256).digest()
    return hmac.new(purpose_key, value.encode(), hashlib.sha256).hexdigest()


def test_key_text_forms():
    assert KEY.secret == bytes.fromhex(HEX_KEY)
    raw = os.urandom(32)
    assert PiiKey.from_text(base64.b64encode(raw).decode()).secret == raw
    plain = "correct horse battery staple, and then some"
    assert PiiKey.from_text(plain).secret == plain.encode()
    assert PiiKey.from_text(f"  {HEX_KEY}\n") == KEY


@pytest.mark.parametrize("short", ["", "hunter2pw", "x" * 31, "ab" * 15])
def test_short_keys_are_refused_without_echoing_them(short):
    with pytest.raises(ValueError, match="too short") as error:
        PiiKey.from_text(short)
    if short:
        assert short not in str(error.value)


def test_repr_and_fingerprint_never_show_the_key():
    expected = hmac.new(KEY.secret, b"de_assets key fingerprint", hashlib.sha256).hexdigest()[:16]
    assert KEY.fingerprint == expected
    for text in (repr(KEY), str(KEY), f"{KEY}", repr([KEY])):
        assert HEX_KEY not in text
        assert repr(KEY.secret) not in text
        assert KEY.secret.hex()[:16] not in text
    assert expected in repr(KEY)
    assert KEY.fingerprint != OTHER.fingerprint


def test_tokens_are_keyed_hmacs_namespaced_by_purpose():
    values = pd.Series(["ada@example.com", None, "ada@example.com", "grace@example.org"], index=[5, 6, 7, 8])
    result = tokens(KEY, values, "email")
    assert str(result.dtype) == "str"
    assert result.index.tolist() == [5, 6, 7, 8]
    assert pd.isna(result[6])
    assert result[5] == result[7] == hmac_token(KEY.secret, "ada@example.com", "email")
    assert result[5] != hashlib.sha256(b"ada@example.com").hexdigest()  # not a plain hash
    assert result[5] != hmac.new(KEY.secret, b"ada@example.com", hashlib.sha256).hexdigest()
    assert tokens(OTHER, values, "email")[5] != result[5]
    assert tokens(KEY, values, "name")[5] != result[5]
    assert tokens(KEY, pd.Series([], dtype="str"), "email").empty


def test_purpose_must_be_an_identifier():
    with pytest.raises(ValueError, match="purpose"):
        tokens(KEY, pd.Series(["a"]), "e-mail:")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=30))
def test_equal_values_equal_tokens_and_only_those(values):
    series = pd.Series(values, dtype="str")
    result = tokens(KEY, series, "customer")
    assert result.str.fullmatch(r"[0-9a-f]{64}").all()
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            assert (result.iloc[i] == result.iloc[j]) == (a == b)
        assert result.iloc[i] == hmac_token(KEY.secret, a, "customer")


def test_tokens_of_many_values_are_all_made():
    # How long 200,000 tokens take is measured by benchmarks/bench_hot_paths.py, not here.
    values = pd.Series([f"customer.{i}@example.com" for i in range(200_000)], dtype="str")
    result = tokens(KEY, values, "email")
    assert result.notna().all()
    assert result.nunique() == len(values)


def test_key_file_created_private_then_reused(tmp_path, monkeypatch):
    path = tmp_path / "keys" / "pii.key"
    old_umask = os.umask(0)  # the most permissive umask must not widen the mode
    try:
        key, created = load_or_create_key_file(path)
    finally:
        os.umask(old_umask)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert key == PiiKey.from_text(path.read_text())
    again, created_again = load_or_create_key_file(path)
    assert (again, created_again) == (key, False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pii.key"]  # no temporary file left


def test_key_file_is_never_opened_with_a_wider_mode(tmp_path, monkeypatch):
    modes = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            modes.append(mode)
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    load_or_create_key_file(tmp_path / "pii.key")
    assert modes == [0o600]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "pii.key"
    path.write_text(HEX_KEY)
    path.chmod(mode)
    with pytest.raises(PermissionError, match="chmod 600") as error:
        load_or_create_key_file(path)
    assert HEX_KEY not in str(error.value)
    assert path.read_text() == HEX_KEY  # left as it was, never replaced


def test_short_key_in_a_file_is_refused_without_echoing_it(tmp_path):
    path = tmp_path / "pii.key"
    path.write_text("tooshort")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="too short") as error:
        load_or_create_key_file(path)
    assert "tooshort" not in str(error.value)


def test_binary_key_file_error_does_not_quote_bytes(tmp_path):
    path = tmp_path / "pii.key"
    path.write_bytes(b"\xff\xfe" + b"k" * 40)
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not UTF-8") as error:
        load_or_create_key_file(path)
    assert "xff" not in str(error.value)

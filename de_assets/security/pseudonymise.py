"""Keyed pseudonymisation: PII becomes HMAC-SHA-256 tokens that still join, but cannot be reversed.

Why a keyed HMAC and never a plain or salted hash: the inputs have little entropy. Every e-mail
address, name or customer id of a known shape can be enumerated, so ``sha256(email)`` is reversed
by hashing candidate addresses until one matches, and a salt stored next to the data (it must be,
for tokens to stay joinable) does not stop that. An HMAC needs the secret key for every guess:
without the key nobody, including someone holding every output table, can test a candidate.

The key is kept out of the data and the code (an environment variable or a 0600 file); only its
:attr:`PiiKey.fingerprint` is stored, so a table shows which key made its tokens and a key rotation
is visible. Losing the key means existing tokens can no longer be reproduced for new data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MIN_KEY_CHARS = 32
_FINGERPRINT_MESSAGE = b"de_assets key fingerprint"
_PURPOSE_PREFIX = b"de_assets token purpose:"
_PURPOSE = re.compile(r"[a-z][a-z0-9_]*")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


@dataclass(frozen=True, repr=False)
class PiiKey:
    """The secret pseudonymisation key; it never shows in a repr, a log line or an error."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS // 2:
            raise ValueError(f"a pseudonymisation key needs at least {MIN_KEY_CHARS // 2} bytes")

    @classmethod
    def from_text(cls, text: str) -> PiiKey:
        """A key given as hex, base64 or plain text of at least 32 characters (surrounding spaces ignored).

        Hex is tried first, then strict base64, then the text's UTF-8 bytes. Errors say what is wrong
        with the key but never repeat it.
        """
        text = text.strip()
        if len(text) < MIN_KEY_CHARS:
            raise ValueError(
                f"pseudonymisation key too short: {len(text)} characters, at least {MIN_KEY_CHARS} "
                "needed (e.g. 64 hex characters from `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        if _HEX.fullmatch(text):
            return cls(bytes.fromhex(text))
        try:
            return cls(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            return cls(text.encode("utf-8"))

    @property
    def fingerprint(self) -> str:
        """16 hex characters identifying the key; safe to store because it reveals nothing about it."""
        return hmac.new(self.secret, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"PiiKey(fingerprint={self.fingerprint})"


def tokens(key: PiiKey, values: pd.Series, purpose: str) -> pd.Series:
    """HMAC-SHA-256 token (64 hex characters) of each value; nulls stay null.

    ``purpose`` (e.g. ``"customer"``, ``"email"``) derives a separate key per kind of value, so equal
    text in two columns never gets the same token and tokens of one kind cannot be joined to another.
    Values are tokenised as their text (``str``), each distinct value once. The scheme, stable
    across releases because stored tokens depend on it::

        purpose_key = HMAC-SHA-256(key, b"de_assets token purpose:" + purpose)
        token = HMAC-SHA-256(purpose_key, value as UTF-8).hexdigest()
    """
    if not _PURPOSE.fullmatch(purpose):
        raise ValueError(f"purpose must be a lower-case identifier, got {purpose!r}")
    purpose_key = hmac.new(key.secret, _PURPOSE_PREFIX + purpose.encode(), hashlib.sha256).digest()
    keyed = hmac.new(purpose_key, digestmod=hashlib.sha256)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    digests = []
    for value in uniques:
        mac = keyed.copy()
        mac.update(str(value).encode("utf-8"))
        digests.append(mac.hexdigest())
    lookup = pd.array([*digests, None], dtype="str")  # code -1 (null) picks the trailing None
    return pd.Series(lookup[codes], index=values.index, name=values.name, dtype="str")


def load_or_create_key_file(path: Path) -> tuple[PiiKey, bool]:
    """The key in ``path``, or a new random 32-byte key written there (mode 0600); True when created.

    The new file is written under a temporary name with mode 0600 from the start (``os.open``) and
    then linked into place, so the key is never readable by others, never seen half-written, and a
    key another process created at the same moment is kept rather than overwritten. An existing key
    file that group or others can access is refused: the key may already have leaked.
    """
    try:
        return _read_key_file(path), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # the umask can only take bits away; make the mode exact
        os.write(descriptor, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        os.link(temporary, path)  # fails if the file appeared meanwhile: never replace a key
        created = True
    except FileExistsError:
        created = False
    finally:
        temporary.unlink()
    return _read_key_file(path), created


def _read_key_file(path: Path) -> PiiKey:
    with path.open("rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"pseudonymisation key file {path} is not a regular file")
        if status.st_mode & 0o077:
            raise PermissionError(
                f"pseudonymisation key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(status.st_mode):04o}); run `chmod 600 {path}` and consider the key "
                "compromised if others could read it"
            )
        content = handle.read()
    try:
        return PiiKey.from_text(content.decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError included; its message would quote key bytes
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else str(error)
        raise ValueError(f"pseudonymisation key file {path}: {reason}") from None


def replace_key_file(path: Path, new: PiiKey, *, retired_suffix: str) -> Path:
    """Put ``new`` in the key file ``path`` (mode 0600), keeping the old file as ``path.retired-<suffix>``.

    The old key stays on disk on purpose: tokens made with it (exports, logs elsewhere) can only be
    matched with it. Delete it once nothing needs them.
    """
    retired = path.with_name(f"{path.name}.retired-{retired_suffix}")
    os.replace(path, retired)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, (new.secret.hex() + "\n").encode("ascii"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return retired

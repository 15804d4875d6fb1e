"""The pseudonymisation key as a Dagster resource.

The key comes from ``DE_ASSETS_PII_KEY`` (passed as ``EnvVar``, so it never shows in run config or
the UI). Without it, the embedded default uses a random key file in the home folder (mode 0600),
created on first use and announced once in the step's log.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import ClassVar

import dagster as dg
from pydantic import Field

from de_assets.security.key_registry import PiiKeyMismatchError, current_fingerprint, verify
from de_assets.security.pseudonymise import PiiKey, load_or_create_key_file
from de_assets.security.redaction import RedactedRepr
from de_assets.storage.hot import HotStore


class PiiKeyResource(RedactedRepr, dg.ConfigurableResource):
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("key",)
    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ("registry_url",)

    key: str = Field(default="", description="The key itself (give it as EnvVar); empty uses key_file")
    key_file: str = Field(description="Key file used (and created, mode 0600) when no key is given")
    registry_url: str = Field(
        default="",
        description="Hot tier URL whose key registry the key is checked against (empty: no check)",
    )

    def load(self, log: dg.DagsterLogManager | None = None) -> PiiKey:
        """The key, checked against the warehouse's registry: a lost or swapped key fails here, before
        any token is made (:class:`de_assets.security.key_registry.PiiKeyMismatchError`)."""
        if self.key:
            key = PiiKey.from_text(self.key)
        elif self.registry_url and not Path(self.key_file).exists():
            # A lost key file must not be replaced by a new random key while tokens made with the old
            # one are stored: that would silently start a second, unjoinable set of tokens.
            fingerprint = current_fingerprint(HotStore(self.registry_url))
            if fingerprint is not None:
                raise PiiKeyMismatchError(
                    f"the pseudonymisation key file {self.key_file} is missing, but the stored tokens were made "
                    f"with the key of fingerprint {fingerprint}. Restore that file (or set DE_ASSETS_PII_KEY); "
                    "a new key would make tokens that join to nothing."
                )
            key = self._key_file(log)
        else:
            key = self._key_file(log)
        if self.registry_url:
            registered = verify(HotStore(self.registry_url), key, now=dt.datetime.now(dt.UTC))
            if registered and log is not None:
                log.info(f"registered pseudonymisation key {key.fingerprint} in the warehouse")
        return key

    def _key_file(self, log: dg.DagsterLogManager | None) -> PiiKey:
        key, created = load_or_create_key_file(Path(self.key_file))
        if created and log is not None:
            log.warning(
                f"DE_ASSETS_PII_KEY is not set: created a random pseudonymisation key in {self.key_file} "
                f"(fingerprint {key.fingerprint}). Back it up: without it, tokens cannot be reproduced."
            )
        return key

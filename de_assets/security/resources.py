"""The pseudonymisation key as a Dagster resource.

The key comes from ``DE_ASSETS_PII_KEY`` (passed as ``EnvVar``, so it never shows in run config or
the UI). Without it, the embedded default uses a random key file in the home folder (mode 0600),
created on first use and announced once in the step's log.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from de_assets.security.pseudonymise import PiiKey, load_or_create_key_file


class PiiKeyResource(dg.ConfigurableResource):
    key: str = Field(default="", description="The key itself (give it as EnvVar); empty uses key_file")
    key_file: str = Field(description="Key file used (and created, mode 0600) when no key is given")

    def load(self, log: dg.DagsterLogManager | None = None) -> PiiKey:
        if self.key:
            return PiiKey.from_text(self.key)
        key, created = load_or_create_key_file(Path(self.key_file))
        if created and log is not None:
            log.warning(
                f"DE_ASSETS_PII_KEY is not set: created a random pseudonymisation key in {self.key_file} "
                f"(fingerprint {key.fingerprint}). Back it up: without it, tokens cannot be reproduced."
            )
        return key

"""The local Dagster instance: the directory dagster reads its configuration (pools!) from."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import dagster as dg
import yaml

INSTANCE_CONFIG = "dagster.yaml"
# The production profile's instance: storage on PostgreSQL, every value from the environment.
PRODUCTION_INSTANCE_CONFIG = "dagster.production.yaml"


def instance_config_text(production: bool = False) -> str:
    name = PRODUCTION_INSTANCE_CONFIG if production else INSTANCE_CONFIG
    return resources.files("de_assets.orchestration").joinpath(name).read_text()


def prepare_dagster_home(
    home: Path, environ: Mapping[str, str] | None = None, production: bool = False
) -> Path:
    """The DAGSTER_HOME to use, with our instance configuration in it.

    An existing ``$DAGSTER_HOME`` is respected; if its dagster.yaml does not limit pools, a warning
    says so, because concurrent runs could then block each other on the embedded databases.
    ``production``: a DAGSTER_HOME without a dagster.yaml gets the production one (PostgreSQL storage).
    """
    chosen = (os.environ if environ is None else environ).get("DAGSTER_HOME")
    target = Path(chosen).expanduser().resolve() if chosen else home / "dagster_home"
    target.mkdir(parents=True, exist_ok=True)
    config = target / INSTANCE_CONFIG
    if not chosen or not config.exists():
        ours = instance_config_text(production)
        if not config.exists() or config.read_text() != ours:
            config.write_text(ours)
    else:
        loaded = yaml.safe_load(config.read_text()) or {}
        limit = ((loaded.get("concurrency") or {}).get("pools") or {}).get("default_limit")
        if limit is None:
            warnings.warn(
                f"{config} sets no concurrency.pools.default_limit: runs may block each other on the "
                f"embedded databases; copy de_assets/orchestration/{INSTANCE_CONFIG} there",
                stacklevel=2,
            )
    return target


def local_instance(home: Path, production: bool = False) -> dg.DagsterInstance:
    """A persistent instance under the prepared DAGSTER_HOME (history shared with `de-assets dev`)."""
    return dg.DagsterInstance.from_config(str(prepare_dagster_home(home, production=production)))

"""One tick of the alert sensor over the instance of a home that `de-assets run` used, as the daemon
would evaluate it (so alerts and webhook posts are made for whatever the runs left)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from de_assets.definitions import build_definitions
from de_assets.orchestration.alerts import ALERT_WEBHOOK, SENSOR_NAME
from de_assets.settings import build_resources, load_settings


def tick_alert_sensor(home: Path) -> None:
    """Settings come from the environment, as for the run itself."""
    settings = load_settings()
    sensor = build_definitions(settings).resolve_sensor_def(SENSOR_NAME)
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        resources = {ALERT_WEBHOOK: build_resources(settings)[ALERT_WEBHOOK]}
        sensor(dg.build_sensor_context(instance=instance, resources=resources))

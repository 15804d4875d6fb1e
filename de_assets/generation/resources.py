"""Dagster resources for the simulated source systems and the simulator's knobs."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import dagster as dg
from pydantic import Field

from de_assets.generation.defects import DefectRates
from de_assets.generation.landing import LandingFolder
from de_assets.generation.simulator import SimulationParams
from de_assets.security.redaction import RedactedRepr


class ShopDatabaseResource(RedactedRepr, dg.ConfigurableResource):
    """The shop's operational database (any SQLAlchemy URL)."""

    DATABASE_URL_FIELDS: ClassVar[tuple[str, ...]] = ("url",)

    url: str = Field(description="SQLAlchemy URL of the shop database")


class LandingFolderResource(dg.ConfigurableResource):
    """The folder where clickstream files land (a local path or an fsspec URL)."""

    root: str = Field(description="Landing folder path or fsspec URL")

    def folder(self) -> LandingFolder:
        return LandingFolder(self.root)


class DefectLedgerResource(dg.ConfigurableResource):
    """Where the simulator writes its ground-truth ledger of injected defects."""

    folder: str = Field(description="Local folder of the defect ledger")


class SimulationResource(dg.ConfigurableResource):
    """Traffic volume and dirtiness; with the day, these determine the generated data exactly."""

    seed: int = Field(
        default=SimulationParams.seed, ge=0, description="Random seed: same seed and day, same data"
    )
    orders_per_day: int = Field(default=SimulationParams.orders_per_day, ge=0)
    events_per_day: int = Field(default=SimulationParams.events_per_day, ge=0)
    defect_scale: float = Field(
        default=1.0, ge=0, description="Multiplies every defect rate; 0 gives clean data"
    )
    clickstream_batches: int = Field(default=SimulationParams.clickstream_batches, ge=1, le=96)
    schema_drift_day: str | None = Field(
        default=None, description="YYYY-MM-DD from which clickstream events carry the drifted schema"
    )

    def params(self) -> SimulationParams:
        drift = None
        if self.schema_drift_day:
            try:
                drift = dt.date.fromisoformat(self.schema_drift_day)
            except ValueError:
                raise ValueError(
                    f"schema_drift_day must be YYYY-MM-DD, got {self.schema_drift_day!r}"
                ) from None
        return SimulationParams(
            seed=self.seed,
            orders_per_day=self.orders_per_day,
            events_per_day=self.events_per_day,
            rates=DefectRates().scaled(self.defect_scale),
            clickstream_batches=self.clickstream_batches,
            schema_drift_day=drift,
        )

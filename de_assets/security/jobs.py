"""The right to be forgotten as a Dagster job: the same code ``de-assets forget`` runs."""

import datetime as dt
from contextlib import ExitStack

import dagster as dg
from pydantic import Field

from de_assets.orchestration.pools import HOT_TIER_POOL
from de_assets.security.erasure import forget_customer
from de_assets.settings import COLD, HOT
from de_assets.storage.cold import ColdStore
from de_assets.storage.tiering import TieredStore

FORGET_JOB = "forget_job"


class ForgetConfig(dg.Config):
    customer_id: int = Field(description="The shop's id of the customer to erase")


@dg.op(
    pool=HOT_TIER_POOL,
    required_resource_keys={HOT, COLD, "pii_key", "segments_db"},
    description="Erases one customer from every tier (raw zone, quarantine, transformation, features, the "
    "segments in the shop) and adds their token to the suppression list. Dagster keeps this run's config "
    "(the customer id) in its run history: where that is not acceptable, run `de-assets forget ID`, which "
    "runs the same code without a run record.",
)
def forget_customer_op(context: dg.OpExecutionContext, config: ForgetConfig) -> None:
    hot = getattr(context.resources, HOT).build_store()
    cold = getattr(context.resources, COLD).build_store()
    if not isinstance(hot, TieredStore) or not isinstance(cold, ColdStore):
        raise TypeError("erasure needs the tiered hot store and the cold store")
    with ExitStack() as stack:
        shop = context.resources.segments_db
        segments = stack.enter_context(shop.writer()) if shop.exists() else None
        record = forget_customer(
            config.customer_id,
            key=context.resources.pii_key.load(context.log),
            hot=hot,
            cold=cold,
            segments=segments,
            now=dt.datetime.now(dt.UTC),
        )
    for item in record.erased:
        context.log.info(f"erased {item.rows} rows of {item.asset} partition {item.partition} ({item.tier})")
    context.add_output_metadata(
        {"customer_token": record.customer_token, "rows_erased": record.rows, "places": len(record.erased)}
    )


@dg.job(
    name=FORGET_JOB, description="Right to be forgotten: erase one customer everywhere (config: customer_id)."
)
def forget_job() -> None:
    forget_customer_op()

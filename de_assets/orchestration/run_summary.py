"""A short account of a finished run for the terminal: rows per stage, quarantine, checks, where it all is.

Figures come from the materialization metadata the assets record anyway (``dagster/row_count``,
``rows_quarantined``, the reverse ETL's ``inserted`` / ``updated``...), summed over the partitions of
the run, so the summary says nothing the Dagster UI would not show for the same run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from de_assets.security.redaction import redact_sqlalchemy_url, redact_url
from de_assets.settings import Settings

STAGES = ("generation", "ingestion", "transformation", "serving")
ROW_COUNT = "dagster/row_count"
# Per-asset figures shown next to the row count, when an asset records them.
_FIGURES = ("rows_quarantined", "inserted", "updated", "unchanged", "skipped_newer_day")


@dataclass
class AssetFigures:
    partitions: set[str] = field(default_factory=set)
    rows: int | None = None
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    job: str
    first: str
    last: str
    run_id: str
    success: bool
    assets: dict[dg.AssetKey, AssetFigures]
    checks_passed: int
    checks_failed: list[str]  # "asset:check (SEVERITY)"
    failed_steps: list[str]


def _root_cause(error: object) -> str:
    """The innermost error's message: Dagster wraps a step's exception in its own."""
    if error is None:
        return "unknown error"
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return str(getattr(error, "message", error)).strip()


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarise(
    job: str,
    first: str,
    last: str,
    result: dg.ExecuteInProcessResult | dg.JobExecutionResult,
) -> RunSummary:
    assets: dict[dg.AssetKey, AssetFigures] = defaultdict(AssetFigures)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        figures = assets[materialization.asset_key]
        if materialization.partition:
            figures.partitions.add(materialization.partition)
        values = {name: entry.value for name, entry in materialization.metadata.items()}
        rows = _as_int(values.get(ROW_COUNT))
        if rows is not None:
            figures.rows = (figures.rows or 0) + rows
        for name in _FIGURES:
            number = _as_int(values.get(name))
            if number is not None:
                figures.extra[name] = figures.extra.get(name, 0) + number
            elif name == "skipped_newer_day" and name in values:
                figures.extra[name] = figures.extra.get(name, 0) + 1  # days skipped
    checks = result.get_asset_check_evaluations()
    failures = []
    for failure in result.get_step_failure_events():
        failures.append(f"{failure.step_key}: {_root_cause(failure.step_failure_data.error)}")
    return RunSummary(
        job=job,
        first=first,
        last=last,
        run_id=result.run_id,
        success=result.success,
        assets=dict(assets),
        checks_passed=sum(1 for c in checks if c.passed),
        checks_failed=[
            f"{c.asset_key.to_user_string()}:{c.check_name} ({c.severity.value})"
            for c in checks
            if not c.passed
        ],
        failed_steps=failures,
    )


def _stage(key: dg.AssetKey) -> str:
    return key.path[0] if len(key.path) > 1 else "other"


def _figures_text(figures: AssetFigures) -> str:
    parts = [] if figures.rows is None else [f"{figures.rows:,} rows"]
    extra = figures.extra
    if extra.get("rows_quarantined"):
        parts.append(f"{extra['rows_quarantined']:,} quarantined")
    if {"inserted", "updated"} & extra.keys():
        parts.append(
            f"{extra.get('inserted', 0):,} inserted, {extra.get('updated', 0):,} updated, "
            f"{extra.get('unchanged', 0):,} unchanged in the shop"
        )
    if extra.get("skipped_newer_day"):
        parts.append(f"{extra['skipped_newer_day']} day(s) not synced: a newer day was synced already")
    return ", ".join(parts) or "materialized"


def format_summary(summary: RunSummary) -> Iterable[str]:
    """The lines to print, in lifecycle order."""
    status = "succeeded" if summary.success else "FAILED"
    yield f"{summary.job} over {summary.first}..{summary.last} {status} (run {summary.run_id})"
    order = {stage: i for i, stage in enumerate(STAGES)}
    keys = sorted(summary.assets, key=lambda k: (order.get(_stage(k), len(order)), k.to_user_string()))
    for key in keys:
        figures = summary.assets[key]
        days = len(figures.partitions)
        where = f"{days} day{'s' if days != 1 else ''}" if days else ""
        yield f"  {key.to_user_string():<40} {_figures_text(figures)}" + (f"  [{where}]" if where else "")
    total = summary.checks_passed + len(summary.checks_failed)
    yield f"  checks: {summary.checks_passed} of {total} passed"


def format_problems(summary: RunSummary) -> Iterable[str]:
    """Failed checks and steps, for the error stream."""
    for failed in summary.checks_failed:
        yield f"  check failed: {failed}"
    for step in summary.failed_steps:
        yield f"  step failed: {step}"


def output_locations(settings: Settings) -> list[str]:
    """Where a user finds what the lifecycle produced (secrets in URLs redacted)."""
    return [
        f"  hot tier (tables):   {redact_sqlalchemy_url(settings.hot_url.value)}",
        f"  cold tier (Parquet): {redact_url(settings.cold_url.value)}  (raw zone, *_rejected)",
        f"  shop segments:       {redact_sqlalchemy_url(settings.segments_db_url.value)}  "
        "(tables customer_segments, customer_segments_syncs)",
        f"  KPI charts:          {settings.reports_dir.value}/daily_kpis/trend_<day>.png",
        f"  alerts:              {settings.alerts_file}",
    ]

"""Asset-check factories: plain functions that turn a quality measurement into a Dagster check result.

Assets validate their output in memory and publish it only when the blocking checks pass
(write-audit-publish), so these functions take frames and counts, not asset keys to load. Anything they
put in metadata ends up in the Dagster event log, which cannot be erased later: values of PII columns
(per the model) and of columns the model does not know are masked before they get there.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa

from de_assets.quality.conservation import Conservation
from de_assets.quality.models import pii_columns

MASK = "***"
SPC_WINDOW = 30
"""Earlier partitions (at most) that set a partition's control limits."""
_SHOWN_CHARS = 80
# Checks whose failure case is a column name or a dtype, never a value from the data.
_STRUCTURAL_CHECKS = frozenset({"column_in_schema", "column_in_dataframe"})
_SAMPLE_COLUMNS = ["schema_context", "column", "check", "failure_case", "index"]

ModelType = type[pa.DataFrameModel]


# --- pandera ---------------------------------------------------------------------------------------


def pandera_check_name(model: ModelType) -> str:
    """``pandera_<model name without "Model", snake_case>``, e.g. ``pandera_raw_orders``."""
    base = model.__name__.removesuffix("Model")
    return "pandera_" + re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def pandera_check_spec(
    model: ModelType, asset_key: dg.AssetKey, *, blocking: bool = True
) -> dg.AssetCheckSpec:
    """The spec an asset declares for :func:`pandera_check_result` of ``model`` (same name)."""
    what = (model.Config.description or "").rstrip(".")
    return dg.AssetCheckSpec(
        pandera_check_name(model),
        asset=asset_key,
        blocking=blocking,
        description=f"{what}: pandera model `{model.__name__}` (dtypes, nullability, uniqueness and value "
        "rules), validated in memory before the data is stored.",
    )


def pandera_check_result(
    model: ModelType,
    frame: pd.DataFrame,
    *,
    check_name: str,
    asset_key: dg.AssetKey | None = None,
    sample_size: int = 20,
) -> dg.AssetCheckResult:
    """Validate ``frame`` lazily against ``model``: ERROR with counts and a PII-masked sample on failure.

    Missing columns, wrong dtypes and an empty frame are reported as failures (or a pass), never raised.
    """
    try:
        model.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as error:
        cases = error.failure_cases
        by_check = (
            cases.fillna({"column": ""})
            .groupby(["column", "check"], sort=True)
            .size()
            .reset_index(name="count")
        )
        sample = _masked_sample(cases, model, sample_size)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            check_name=check_name,
            asset_key=asset_key,
            description=f"{len(cases)} failure cases in {len(by_check)} (column, check) pairs",
            metadata={
                "rows_checked": len(frame),
                "num_failures": len(cases),
                "failures_by_check": dg.MetadataValue.json(by_check.to_dict(orient="records")),
                "failure_sample": dg.MetadataValue.md(sample.to_markdown(index=False)),
            },
        )
    return dg.AssetCheckResult(
        passed=True, check_name=check_name, asset_key=asset_key, metadata={"rows_checked": len(frame)}
    )


def _masked_sample(cases: pd.DataFrame, model: ModelType, size: int) -> pd.DataFrame:
    """Up to ``size`` failure cases, round-robin over (column, check) so every kind of fault shows.

    A value is shown only when it comes from a column the model declares and does not mark as PII, or
    when it is a column name or dtype; a dataframe-level check reports every column of a failing row,
    unknown ones included, and a failing check may print a value in its error.
    """
    rank = cases.groupby(["column", "check"], sort=False, dropna=False).cumcount()
    sample = cases.assign(_rank=rank).sort_values("_rank", kind="stable").head(size)
    visible = set(model.to_schema().columns) - pii_columns(model)
    rows = []
    for case in sample[_SAMPLE_COLUMNS].itertuples(index=False):
        structural = case.check in _STRUCTURAL_CHECKS or str(case.check).startswith("dtype(")
        value = case.failure_case if structural or case.column in visible else _masked(case.failure_case)
        rows.append(
            {
                "schema_context": case.schema_context,
                "column": case.column,
                "check": _shown(case.check),
                "failure_case": _shown(value),
                "index": _shown(case.index) if _is_row_number(case.index) else MASK,
            }
        )
    return pd.DataFrame(rows, columns=_SAMPLE_COLUMNS)


def _masked(value: object) -> object:
    """The masked failure case; an error keeps its type (``TypeError(***)``), a bare flag stays."""
    if isinstance(value, bool) or value is None:
        return value
    error = re.match(r"^([A-Za-z_]\w*(Error|Exception))\(", str(value))
    return f"{error.group(1)}({MASK})" if error else MASK


def _is_row_number(index: object) -> bool:
    """Row positions (numpy or Python integers) are shown; any other index could be a value."""
    return (
        index is None
        or pd.api.types.is_integer(index)
        or (pd.api.types.is_float(index) and math.isnan(index))
    )


def _shown(value: object) -> str:
    """Shortened, with pipes escaped, so a regex in a check name cannot break the markdown table."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    text = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def column_schema(model: ModelType) -> dg.TableSchema:
    """The model's columns, types, descriptions and constraints, for ``dagster/column_schema`` metadata.

    PII columns carry the tag ``pii: true``; a model's own columns come before inherited ones.
    """
    schema = model.to_schema()
    pii = pii_columns(model)
    own = [name for name in vars(model).get("__annotations__", {}) if name in schema.columns]
    names = own + [name for name in schema.columns if name not in own]
    columns = []
    for name in names:
        column = schema.columns[name]
        columns.append(
            dg.TableColumn(
                name,
                type=_type_name(column.dtype),
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    unique=column.unique,
                    other=[check.error or check.name for check in column.checks],
                ),
                tags={"pii": "true"} if name in pii else None,
            )
        )
    table_rules = [f"unique ({', '.join(schema.unique)})"] if schema.unique else []
    table_rules += [check.error or check.name for check in schema.checks]
    return dg.TableSchema(
        columns, constraints=dg.TableConstraints(other=table_rules) if table_rules else None
    )


def _type_name(dtype: object) -> str:
    """The pandas dtype a column holds; pandera names ``str`` ``string[pyarrow]`` and any naive timestamp ns."""
    text = str(dtype)
    if text.startswith("str"):
        return "str"
    if text.startswith("datetime64[") and "," not in text:
        return "datetime64 (naive)"
    return text


# --- conservation, thresholds, drift ----------------------------------------------------------------


def conservation_check_result(
    check_name: str, per_partition: Mapping[str, Conservation]
) -> dg.AssetCheckResult:
    """ERROR when any partition lost or invented rows; balance is per partition, so errors cannot cancel out."""
    total = sum(per_partition.values(), Conservation(0, 0, 0))
    unbalanced = {
        partition: {**counts.as_metadata(), "unaccounted": counts.unaccounted}
        for partition, counts in sorted(per_partition.items())
        if not counts.balanced
    }
    description = (
        f"{len(unbalanced)} of {len(per_partition)} partitions unbalanced: {', '.join(unbalanced)}"
        if unbalanced
        else f"rows in = out + dropped + quarantined in all {len(per_partition)} partitions"
    )
    return dg.AssetCheckResult(
        passed=not unbalanced,
        severity=dg.AssetCheckSeverity.ERROR,
        check_name=check_name,
        description=description,
        metadata={
            **total.as_metadata(),
            "rows_unaccounted": total.unaccounted,
            "partitions": len(per_partition),
            "unbalanced_partitions": dg.MetadataValue.json(unbalanced),
        },
    )


def threshold_check_result(
    check_name: str, *, rejected: int, total: int, threshold_share: float, what: str
) -> dg.AssetCheckResult:
    """A data contract: pass when nothing was rejected, WARN up to ``threshold_share``, ERROR above."""
    if not 0 <= rejected <= total:
        raise ValueError(f"need 0 <= rejected <= total, got rejected={rejected}, total={total}")
    if not 0.0 <= threshold_share <= 1.0:
        raise ValueError(f"threshold_share must be a fraction between 0 and 1, got {threshold_share}")
    share = rejected / total if total else 0.0
    over = share > threshold_share
    return dg.AssetCheckResult(
        passed=rejected == 0,
        severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
        check_name=check_name,
        description=f"{rejected} of {total} {what} rejected ({share:.2%}; "
        f"{'above' if over else 'within'} the {threshold_share:.2%} threshold)",
        metadata={"rejected": rejected, "total": total, "share": share, "threshold_share": threshold_share},
    )


def drift_check_result(check_name: str, new_fields: Mapping[str, int]) -> dg.AssetCheckResult:
    """WARN when records carried fields the contract does not know (kept aside, not dropped silently)."""
    seen = {name: count for name, count in sorted(new_fields.items()) if count > 0}
    listed = ", ".join(f"{name} ({count})" for name, count in seen.items())
    return dg.AssetCheckResult(
        passed=not seen,
        severity=dg.AssetCheckSeverity.WARN,
        check_name=check_name,
        description=f"unknown fields appeared: {listed}" if seen else "no unknown fields",
        metadata={"new_fields": dg.MetadataValue.json(seen), "new_field_count": len(seen)},
    )


# --- statistical process control --------------------------------------------------------------------


@dataclass(frozen=True)
class ControlLimits:
    """Shewhart limits: ``mean ± sigmas * sigma`` of the history (sample standard deviation)."""

    mean: float
    sigma: float
    lower: float
    upper: float

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper  # False for NaN: an unmeasurable value is out of control


def control_limits(
    history: Sequence[float], *, sigmas: float = 3.0, min_points: int = 7
) -> ControlLimits | None:
    """Limits from the finite values of ``history``, or None when fewer than ``min_points`` remain.

    Sigma is the sample standard deviation (``statistics.stdev``, n - 1): the history is a sample of
    the process, and with few points the population formula would make the limits too tight.
    """
    if min_points < 2:
        raise ValueError("min_points must be at least 2 for a standard deviation")
    points = [float(value) for value in history if math.isfinite(value)]
    if len(points) < min_points:
        return None
    mean = statistics.fmean(points)
    sigma = statistics.stdev(points)
    return ControlLimits(mean, sigma, mean - sigmas * sigma, mean + sigmas * sigma)


def spc_check_result(
    check_name: str,
    metric: str,
    values: Mapping[str, float],
    history_by_partition: Mapping[str, float],
) -> dg.AssetCheckResult:
    """WARN when a partition's ``metric`` leaves the control limits of the partitions before it.

    Partition keys sort as dates. Each partition of ``values`` is compared with the up to
    :data:`SPC_WINDOW` latest earlier partitions, taking this run's value where the run recomputed one
    (it supersedes the recorded history). Too little history is a pass with a note, not an alarm.
    """
    known = {**history_by_partition, **values}
    ordered = sorted(known)
    report: dict[str, dict[str, object]] = {}
    outside, short = [], []
    for partition in sorted(values):
        value = float(values[partition])
        earlier = [known[key] for key in ordered if key < partition][-SPC_WINDOW:]
        limits = control_limits(earlier)
        entry: dict[str, object] = {"value": _finite(value), "history_points": len(earlier)}
        if limits is None:
            short.append(partition)
            entry["note"] = "too little history for control limits"
        else:
            in_control = limits.contains(value)
            entry.update(
                mean=limits.mean,
                sigma=limits.sigma,
                lower=limits.lower,
                upper=limits.upper,
                in_control=in_control,
            )
            if not in_control:
                outside.append(partition)
        report[partition] = entry
    metadata: dict[str, object] = {
        "metric": metric,
        "partitions": dg.MetadataValue.json(report),
        "out_of_control": dg.MetadataValue.json(outside),
    }
    if len(report) == 1:  # flat numbers let the UI plot a partition's value and limits across runs
        (entry,) = report.values()
        metadata.update(
            {k: entry[k] for k in ("value", "mean", "lower", "upper") if entry.get(k) is not None}
        )
    return dg.AssetCheckResult(
        passed=not outside,
        severity=dg.AssetCheckSeverity.WARN,
        check_name=check_name,
        description=_spc_description(metric, outside, short, len(values)),
        metadata=metadata,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _spc_description(metric: str, outside: list[str], short: list[str], checked: int) -> str:
    if outside:
        return f"{metric} outside the control limits in {', '.join(outside)}"
    note = f"; too little history for {', '.join(short)}" if short else ""
    return f"{metric} within the control limits in {checked - len(short)} of {checked} partitions{note}"


def metric_history(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    metric: str,
    *,
    limit: int = 200,
    page_size: int = 100,
) -> dict[str, float]:
    """The latest recorded numeric value of materialization metadata ``metric``, per partition.

    Reads at most ``limit`` materializations, newest first, ``page_size`` per event-log query, through
    the instance's public API. Materializations without the entry (or with a non-numeric one) are skipped.
    """
    found: dict[str, float] = {}
    cursor: str | None = None
    read = 0
    while read < limit:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key), limit=min(page_size, limit - read), cursor=cursor
        )
        for record in page.records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition is None:
                continue
            if materialization.partition not in found:
                value = _number(materialization.metadata.get(metric))
                if value is not None:
                    found[materialization.partition] = value
        read += len(page.records)
        if not page.has_more or not page.records:
            break
        cursor = page.cursor
    return found


def _number(entry: object) -> float | None:
    if isinstance(entry, dg.IntMetadataValue | dg.FloatMetadataValue) and entry.value is not None:
        value = float(entry.value)
        return value if math.isfinite(value) else None
    return None


def for_asset(key: dg.AssetKey, result: dg.AssetCheckResult) -> dg.AssetCheckResult:
    """``result`` for the asset ``key``: a multi-asset step must say which of its assets a check is on."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=result.check_name,
        passed=result.passed,
        severity=result.severity,
        metadata=result.metadata,
        description=result.description,
    )

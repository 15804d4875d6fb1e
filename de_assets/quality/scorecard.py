"""Scores the pipeline's outputs against the simulator's ground-truth ledger.

For each injected defect the ledger says where it is (file and line, or table and key). A defect is
*caught* when it ended where it should: rejected with the matching reason, dropped as a duplicate,
routed to the partition of the day it happened, or (hard deletes) absent from the clean table. A
*false rejection* is a quarantine record that no ledgered defect explains. Used by the integration
tests and reported in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from de_assets.generation.defects import Defect
from de_assets.transformation.quarantine import Reason

# The reasons that count as catching each ledgered defect, per source system.
LINE_REASONS: dict[str, set[str]] = {
    Defect.MALFORMED_JSON: {Reason.MALFORMED_JSON},
    Defect.WRONG_TYPE: {Reason.WRONG_TYPE},
    Defect.NULL_REQUIRED: {Reason.NULL_REQUIRED_FIELD, Reason.MISSING_REQUIRED_FIELD},
    Defect.UNKNOWN_CURRENCY: {Reason.UNKNOWN_CURRENCY},
    Defect.NEGATIVE_AMOUNT: {Reason.NEGATIVE_AMOUNT},
    Defect.RESENT_EVENT_ID: {Reason.CONFLICTING_RESEND},
}
ROW_REASONS: dict[tuple[str, str], set[str]] = {
    ("orders", Defect.NEGATIVE_AMOUNT): {Reason.NEGATIVE_AMOUNT},
    ("orders", Defect.UNKNOWN_CURRENCY): {Reason.UNKNOWN_CURRENCY},
    ("orders", Defect.NULL_REQUIRED): {Reason.MISSING_CUSTOMER, Reason.NULL_REQUIRED_FIELD},
    ("customers", Defect.NULL_REQUIRED): {Reason.MISSING_REQUIRED_FIELD, Reason.NULL_REQUIRED_FIELD},
}
# Whole files rejected for a broken contract are explained by the file-level drift ledger rows.
DRIFT_REASONS = {Reason.MISSING_REQUIRED_FIELD, Reason.CONTRACT_BROKEN}


@dataclass(frozen=True)
class Scorecard:
    by_defect: pd.DataFrame  # system, defect, injected, caught (of which by_contract), recall
    false_rejections: pd.DataFrame  # quarantine rows no ledger row explains
    valid_rejected_share: float  # false rejections / records without a defect that were rejected

    @property
    def recall(self) -> float:
        injected = int(self.by_defect["injected"].sum())
        return float(self.by_defect["caught"].sum() / injected) if injected else 1.0

    def as_markdown(self) -> str:
        lines = [
            "| system | defect | injected | caught | of which held back by a broken contract | recall |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in self.by_defect.itertuples():
            lines.append(
                f"| {row.system} | {row.defect} | {row.injected} | {row.caught} | {row.by_contract} "
                f"| {row.recall:.1%} |"
            )
        lines.append(f"\nOverall recall {self.recall:.2%}; false rejections: {len(self.false_rejections)}.")
        return "\n".join(lines)


def _line_key(frame: pd.DataFrame, file: str = "source_file", line: str = "line_number") -> pd.Series:
    return frame[file].astype("str") + ":" + frame[line].astype("Int64").astype("str")


def score(
    ledger: pd.DataFrame,
    quarantine: pd.DataFrame,
    events: pd.DataFrame,
    orders: pd.DataFrame,
    customers: pd.DataFrame,
    raw_event_files: set[str],
) -> Scorecard:
    """Compare outputs (all partitions) with the ledger; ``raw_event_files``: files with lines in raw_events."""
    rejected_lines = quarantine.dropna(subset=["source_file", "line_number"])
    line_reasons = rejected_lines.assign(_k=_line_key(rejected_lines)).groupby("_k")["reason"].agg(set)
    table_rows = quarantine.dropna(subset=["source_table", "source_key"])
    row_reasons = table_rows.groupby(["source_table", "source_key"])["reason"].agg(set)
    event_at = pd.Series(
        events["event_time"].dt.strftime("%Y-%m-%d").to_numpy(), index=_line_key(events).to_numpy()
    )
    event_ids = set(events["event_id"])
    present = {
        "orders": set(orders["order_id"].astype(str)),
        "customers": set(customers["customer_id"].astype(str)),
    }
    deleted = ledger[ledger["defect"] == Defect.HARD_DELETE]
    deleted_keys = set(zip(deleted["table"], deleted["key"], strict=True))

    caught, by_contract = [], []
    for row in ledger.itertuples(index=False):
        defect, key = row.defect, row.key
        contract = False
        if row.system == "clickstream":
            if pd.isna(row.line):
                ok = _file_defect_caught(defect, row.file, raw_event_files, quarantine)
            else:
                where = f"{row.file}:{int(row.line)}"
                # A line of a delivery that broke the contract is quarantined for that before its own
                # defect can be judged: held back with a reason, it counts as caught (reported apart).
                contract = bool(line_reasons.get(where, set()) & DRIFT_REASONS)
                if contract:
                    ok = True
                elif defect == Defect.EXACT_DUPLICATE:
                    ok = where not in event_at.index and where not in line_reasons.index and key in event_ids
                elif defect == Defect.LATE_EVENT:
                    ok = event_at.get(where) == row.detail
                else:
                    ok = bool(line_reasons.get(where, set()) & LINE_REASONS.get(defect, set()))
        elif defect == Defect.HARD_DELETE:
            ok = key not in present[row.table]
        elif (row.table, key) in deleted_keys:
            ok = key not in present[row.table]  # deleted before it could be judged: gone either way
        else:
            ok = bool(row_reasons.get((row.table, key), set()) & ROW_REASONS.get((row.table, defect), set()))
        caught.append(ok)
        by_contract.append(contract)
    scored = ledger.assign(caught=caught, by_contract=by_contract)
    by_defect = (
        scored.groupby(["system", "defect"])
        .agg(injected=("caught", "size"), caught=("caught", "sum"), by_contract=("by_contract", "sum"))
        .reset_index()
    )
    by_defect["recall"] = by_defect["caught"] / by_defect["injected"]

    explained_lines = set(_line_key(ledger.dropna(subset=["line"]), "file", "line"))
    drift_files = set(ledger.loc[ledger["defect"] == Defect.SCHEMA_DRIFT_RENAMED_FIELD, "file"])
    explained_rows = set(zip(ledger["table"].astype(str), ledger["key"].astype(str), strict=True))
    is_line = quarantine["source_file"].notna() & quarantine["line_number"].notna()
    line_ok = _line_key(quarantine).isin(explained_lines) | (
        quarantine["source_file"].isin(drift_files) & quarantine["reason"].isin(DRIFT_REASONS)
    )
    row_ok = pd.Series(
        [
            (t, k) in explained_rows
            for t, k in zip(quarantine["source_table"], quarantine["source_key"], strict=True)
        ],
        index=quarantine.index,
        dtype=bool,
    )
    false = quarantine[~((is_line & line_ok) | (~is_line & row_ok))]
    total_rejected = max(len(quarantine), 1)
    return Scorecard(by_defect, false.reset_index(drop=True), len(false) / total_rejected)


def _file_defect_caught(defect: str, file: str, ingested: set[str], quarantine: pd.DataFrame) -> bool:
    if defect == Defect.EMPTY_FILE:
        return file not in ingested  # it holds no line: nothing may come out of it
    if defect == Defect.SCHEMA_DRIFT_RENAMED_FIELD:
        rows = quarantine[quarantine["source_file"] == file]
        return bool(len(rows)) and rows["reason"].isin(DRIFT_REASONS).any()
    return file in ingested  # a new field is accepted and kept: ingesting the file is right

"""serving/customer_segments rules: each rule and the precedence between them."""

import pandas as pd
import pytest

from de_assets.serving.segments import SEGMENTS, assign_segments

# (new_account, orders_30d, orders_90d, sessions_30d) -> segment, as the module docstring reads.
CASES = [
    ((True, 0, 0, 0), "new"),
    ((True, 2, 3, 5), "new"),  # new beats active
    ((True, 0, 1, 0), "new"),  # new beats at_risk
    ((False, 1, 1, 0), "active"),
    ((False, 3, 7, 4), "active"),  # active beats at_risk (visits too)
    ((False, 0, 2, 0), "at_risk"),  # ordered in 90 days, not in 30
    ((False, 0, 2, 6), "at_risk"),
    ((False, 0, 0, 1), "at_risk"),  # browsing without buying
    ((False, 0, 0, 0), "churned"),
]


def features(rows: list[tuple[bool, int, int, int]], index: list[int] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "new_account": pd.Series([r[0] for r in rows], dtype="bool"),
            "orders_7d": pd.Series([min(r[1], 1) for r in rows], dtype="int64"),
            "orders_30d": pd.Series([r[1] for r in rows], dtype="int64"),
            "orders_90d": pd.Series([r[2] for r in rows], dtype="int64"),
            "sessions_7d": pd.Series([0] * len(rows), dtype="int64"),
            "sessions_30d": pd.Series([r[3] for r in rows], dtype="int64"),
        },
    ).set_axis(index if index is not None else range(len(rows)))


@pytest.mark.parametrize(("row", "segment"), CASES, ids=[f"{s}-{r}" for r, s in CASES])
def test_each_rule_and_its_precedence(row, segment):
    assert list(assign_segments(features([row]))) == [segment]


def test_a_frame_keeps_its_index_and_each_row_its_own_segment():
    rows = [row for row, _ in CASES]
    index = [100 + 7 * i for i in range(len(rows))]
    segments = assign_segments(features(rows, index))
    assert list(segments.index) == index
    assert segments.name == "segment"
    assert list(segments) == [segment for _, segment in CASES]
    assert set(segments) == set(SEGMENTS)


def test_no_rows_give_no_segments():
    assert assign_segments(features([])).empty

"""Customer segments from the features of a day: rules a marketer can read and the shop can act on.

The first rule that holds gives the segment:

1. ``new``: the account was opened in the last 7 days (D-6..D), whatever it did since;
2. ``active``: at least one non-cancelled order in the last 30 days;
3. ``at_risk``: an order in the last 90 days but none in 30, or visits in the last 30 days without
   any order in 90 (browsing, not buying);
4. ``churned``: none of the above: no order in 90 days and no visit in 30.

Features keep a customer one day past every window (see :mod:`de_assets.serving.features`), so the
last segment a lapsing customer gets is ``churned``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEW, ACTIVE, AT_RISK, CHURNED = "new", "active", "at_risk", "churned"
SEGMENTS = (NEW, ACTIVE, AT_RISK, CHURNED)


def assign_segments(features: pd.DataFrame) -> pd.Series:
    """The segment of each feature row (same index)."""
    conditions = [
        features["new_account"].to_numpy(dtype=bool),
        features["orders_30d"].to_numpy() > 0,
        (features["orders_90d"].to_numpy() > 0) | (features["sessions_30d"].to_numpy() > 0),
    ]
    chosen = np.select(conditions, [NEW, ACTIVE, AT_RISK], default=CHURNED)
    return pd.Series(chosen, index=features.index, dtype="str", name="segment")

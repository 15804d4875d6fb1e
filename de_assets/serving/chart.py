"""The KPI trend as a picture: revenue (bars) and conversion rate (line) over the recent days.

Rendered with matplotlib (no display needed) to PNG bytes, which the asset writes as a
report file and embeds in its materialization metadata so the Dagster UI shows it.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

TREND_DAYS = 30


def _highest(values: np.ndarray, default: float) -> float:
    return float(np.nanmax(values)) if np.isfinite(values).any() else default


def trend_png(totals: pd.DataFrame, title: str) -> bytes:
    """PNG of ``totals`` (index: day; columns revenue_eur and conversion_rate), oldest day first."""
    days = [str(day)[5:] for day in totals.index]  # MM-DD keeps 30 labels readable
    # A bare Figure draws through Agg without pyplot's global state: safe in any thread, no display.
    figure = Figure(figsize=(8, 3.2), dpi=80)
    revenue_axis = figure.subplots()
    positions = list(range(len(days)))
    revenue = totals["revenue_eur"].to_numpy(dtype=float, na_value=float("nan"))
    rates = totals["conversion_rate"].to_numpy(dtype=float, na_value=float("nan"))
    revenue_axis.bar(positions, revenue, color="#4C78A8", label="revenue (EUR)")
    # Headroom above the highest bar and point, for the legend.
    revenue_axis.set_ylim(bottom=0, top=max(_highest(revenue, 1.0) * 1.35, 1.0))
    revenue_axis.set_ylabel("revenue (EUR)")
    revenue_axis.set_xticks(positions, days, rotation=60, fontsize=7)
    revenue_axis.set_xlim(-0.6, len(days) - 0.4)  # days without figures keep their place on the axis
    rate_axis = revenue_axis.twinx()
    rate_axis.plot(positions, rates, color="#F58518", marker="o", markersize=3, label="conversion rate")
    rate_axis.set_ylim(bottom=0, top=max(_highest(rates, 0.1) * 1.35, 0.01))
    rate_axis.yaxis.set_major_formatter(PercentFormatter(1.0))
    rate_axis.set_ylabel("conversion rate")
    revenue_axis.set_title(title, fontsize=10)
    handles = revenue_axis.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    revenue_axis.legend(handles=handles, loc="upper left", fontsize=7, ncols=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows ``png`` inline (the Dagster UI renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"

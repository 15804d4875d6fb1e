"""The KPI trend as a picture: revenue (bars) and conversion rate (line) over the recent days.

Rendered with matplotlib (no display needed) to PNG bytes, which the asset writes as a
report file and embeds in its materialization metadata so the Dagster UI shows it.
"""

from __future__ import annotations

import base64
import io

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

TREND_DAYS = 30


def trend_png(totals: pd.DataFrame, title: str) -> bytes:
    """PNG of ``totals`` (index: day; columns revenue_eur and conversion_rate), oldest day first."""
    days = [str(day)[5:] for day in totals.index]  # MM-DD keeps 30 labels readable
    # A bare Figure draws through Agg without pyplot's global state: safe in any thread, no display.
    figure = Figure(figsize=(8, 3.2), dpi=80)
    revenue_axis = figure.subplots()
    positions = range(len(days))
    revenue_axis.bar(
        positions, totals["revenue_eur"].to_numpy(dtype=float), color="#4C78A8", label="revenue (EUR)"
    )
    revenue_axis.set_ylabel("revenue (EUR)")
    revenue_axis.set_xticks(list(positions), days, rotation=60, fontsize=7)
    rate_axis = revenue_axis.twinx()
    rate_axis.plot(
        list(positions),
        totals["conversion_rate"].to_numpy(dtype=float, na_value=float("nan")),
        color="#F58518",
        marker="o",
        markersize=3,
        label="conversion rate",
    )
    rate_axis.set_ylim(bottom=0)
    rate_axis.yaxis.set_major_formatter(PercentFormatter(1.0))
    rate_axis.set_ylabel("conversion rate")
    revenue_axis.set_title(title, fontsize=10)
    handles = revenue_axis.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    revenue_axis.legend(handles=handles, loc="upper left", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows ``png`` inline (the Dagster UI renders data URIs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"

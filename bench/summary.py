"""Pure helpers of the benchmark reports: medians, ratios, percentile summaries and
Markdown tables (no I/O; unit-tested)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from vxlab.stats import percentile


def median(values: Sequence[float]) -> float:
    """The median; 0.0 for no values."""
    return float(statistics.median(values)) if values else 0.0


def ratio(value: float | None, base: float | None, *, digits: int = 3) -> float | None:
    """value / base rounded, None when either is missing or base is 0."""
    if value is None or base is None or base == 0:
        return None
    return round(value / base, digits)


def dist(values: Sequence[float], *, scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of `values` (times `scale`); only n for no values."""
    if not values:
        return {"n": 0}
    v = [x * scale for x in values]
    return {"n": len(v), "p50": round(percentile(v, 50), digits), "p90": round(percentile(v, 90), digits),
            "p99": round(percentile(v, 99), digits), "max": round(max(v), digits),
            "mean": round(statistics.fmean(v), digits)}


def cell(value: Any) -> str:
    """A value as a table cell: None -> '–', floats without trailing noise."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    if not header:
        raise ValueError("header: a table needs at least one column")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if len(r) != len(header):
            raise ValueError(f"rows: a row has {len(r)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cell(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


def verdict(value: float | None, target: float, *, at_most: bool) -> str:
    """'met' / 'not met' / 'n/a' for a value against a target bound."""
    if value is None:
        return "n/a"
    ok = value <= target if at_most else value >= target
    return "met" if ok else "not met"

"""Measured statements for the leaderboard page: does each benchmark discriminate?

Everything here is computed from run records — nothing is assumed. For every benchmark:
the gap between the upper bound (``joint``) and the lower bound (``seqft``) on the headline
metric, and which methods differ from ``seqft`` by more than the seed spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HEADLINE: dict[str, tuple[str, str]] = {
    "mnist-fmnist": ("acc", "class-incremental accuracy"),
    "rotated-mnist": ("acc", "domain-incremental accuracy"),
    "split-mnist": ("til_acc", "task-incremental accuracy (CIL shown too; it does not separate at CPU scale)"),
    "split-fmnist": ("til_acc", "task-incremental accuracy (CIL shown too; it does not separate at CPU scale)"),
}
MIN_GAP_POINTS = 20.0


def _values(records: Iterable[Mapping[str, Any]], benchmark: str, label: str, metric: str) -> list[float]:
    out = []
    for r in records:
        if r.get("benchmark") != benchmark or r.get("label") != label or r.get("status") != "ok":
            continue
        block = r.get("til_metrics") if metric.startswith("til_") else r.get("metrics")
        value = (block or {}).get(metric.removeprefix("til_"))
        if value is not None:
            out.append(100.0 * float(value))
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def discrimination_lines(records: Sequence[Mapping[str, Any]], benchmarks: Sequence[str],
                         labels: Sequence[str], lower: str = "seqft", upper: str = "joint") -> list[str]:
    """One paragraph per benchmark, in Markdown bullet lines."""
    lines: list[str] = []
    for benchmark in benchmarks:
        metric, description = HEADLINE.get(benchmark, ("acc", "accuracy"))
        low, high = _values(records, benchmark, lower, metric), _values(records, benchmark, upper, metric)
        if not low or not high:
            lines.append(f"- **{benchmark}**: no {lower}/{upper} records yet.")
            continue
        (lm, ls), (hm, hs) = _mean_std(low), _mean_std(high)
        gap = hm - lm
        verdict = "discriminates" if gap >= MIN_GAP_POINTS else f"does NOT reach the {MIN_GAP_POINTS:.0f}-point gap"
        lines.append(f"- **{benchmark}** — headline: {description}. {upper} − {lower} = {gap:+.1f} points "
                     f"({hm:.1f} ± {hs:.1f} vs {lm:.1f} ± {ls:.1f}): {verdict}.")
        above, within, unknown = [], [], []
        for label in labels:
            if label in (lower, upper):
                continue
            values = _values(records, benchmark, label, metric)
            if not values:
                continue
            m, s = _mean_std(values)
            diff = m - lm
            text = f"{label} {diff:+.1f}"
            if len(values) < 2 or len(low) < 2:
                unknown.append(text)
            else:
                (above if abs(diff) > s + ls else within).append(text)
        if above:
            lines.append(f"  - differs from {lower} by more than the seed spread (|Δ| > std₁ + std₂): "
                         + ", ".join(above))
        if within:
            lines.append(f"  - within the seed spread of {lower}: " + ", ".join(within))
        if unknown:
            lines.append("  - fewer than 2 seeds, spread unknown: " + ", ".join(unknown))
    return lines

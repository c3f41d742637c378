"""Does each benchmark discriminate? Measured from run records for the leaderboard page.

A benchmark *discriminates* between continual-learning methods when, on its headline metric
(class-incremental or task-incremental accuracy, in points = %):

1. the **gap** between the upper bound (``joint``) and the lower bound (``seqft``) — the
   difference of their means over seeds — is at least :data:`MIN_GAP_POINTS`; and
2. at least :data:`MIN_RESOLVED_SHARE` of the **merge-family rows** differ from the lower
   bound: the paired t-interval (95 %, :mod:`mergecl.bench.reporting.stats`) of
   ``row − seqft`` over the seeds both have excludes 0, in either direction.

Counting: the merge rows are the rows whose family is ``"merge"`` and that have at least one
successful value on the benchmark's headline metric; a tuned row (``"<label> (tuned)"``) is a
row of its own, counted separately from its default row. A row sharing a single seed with the
lower bound has no interval and counts as not resolved. Everything is computed from records.

A benchmark run in two parameterisations (full fine-tuning and a LoRA tier) is assessed once
per *tier*: each tier's merge rows against that tier's own lower and upper bounds
(``seqft-lora`` and ``joint-lora`` for the LoRA rows), never across tiers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.reporting.stats import INTERVAL_METHOD, PairedDifference
from mergecl.bench.reporting.tables import (
    METRIC_TITLES,
    as_records,
    cell_stats,
    order_rows,
    paired_points,
    render_rows,
    row_name,
)

MIN_GAP_POINTS = 15.0
"""Smallest upper − lower bound gap (points) of a benchmark that discriminates."""
MIN_RESOLVED_SHARE = 0.5
"""Smallest share of merge rows whose paired interval against the lower bound excludes 0."""
MERGE_FAMILY = "merge"


@dataclass(frozen=True)
class RowComparison:
    """One merge row against the lower bound: ``difference`` = row − lower bound (points),
    None when they share no seed."""

    row: str
    difference: PairedDifference | None

    @property
    def resolved(self) -> bool:
        return self.difference is not None and self.difference.resolved


@dataclass(frozen=True)
class Discrimination:
    """The two tests of the module docstring on one benchmark (means in points)."""

    benchmark: str
    metric: str
    lower: str
    upper: str
    lower_mean: float | None
    upper_mean: float | None
    merges: tuple[RowComparison, ...]

    @property
    def gap(self) -> float | None:
        if self.lower_mean is None or self.upper_mean is None:
            return None
        return self.upper_mean - self.lower_mean

    @property
    def gap_ok(self) -> bool:
        return self.gap is not None and self.gap >= MIN_GAP_POINTS

    @property
    def n_resolved(self) -> int:
        return sum(comparison.resolved for comparison in self.merges)

    @property
    def share_ok(self) -> bool:
        return bool(self.merges) and self.n_resolved >= MIN_RESOLVED_SHARE * len(self.merges)

    @property
    def discriminates(self) -> bool:
        return self.gap_ok and self.share_ok

    def reasons(self) -> list[str]:
        """Why the benchmark does not discriminate (empty when it does)."""
        reasons = []
        if self.lower_mean is None or self.upper_mean is None:
            absent = [name for name, mean in ((self.upper, self.upper_mean),
                                              (self.lower, self.lower_mean)) if mean is None]
            reasons.append(f"no {' and no '.join(absent)} results: the gap cannot be measured")
        elif not self.gap_ok:
            reasons.append(f"{self.upper} − {self.lower} gap {self.gap:+.1f} points < "
                           f"{MIN_GAP_POINTS:g}")
        if not self.merges:
            reasons.append("no merge-family rows with results")
        elif not self.share_ok:
            reasons.append(f"only {self.n_resolved} of {len(self.merges)} merge rows differ from "
                           f"{self.lower}, fewer than half")
        return reasons

    def verdict(self) -> str:
        if self.discriminates:
            return "discriminates"
        return f"does not discriminate ({'; '.join(self.reasons())})"


TIER_TITLES = {"full": "", "lora": " (LoRA)"}


def tiers(records: Iterable[RunRecord], benchmark: str) -> list[str]:
    """The parameterisations with records on ``benchmark``: ``full`` first."""
    found = {record.parameterisation for record in as_records(records) if record.benchmark == benchmark}
    return [tier for tier in TIER_TITLES if tier in found]


def tier_bounds(records: Iterable[RunRecord], tier: str, families: Mapping[str, str],
                lower: str, upper: str) -> tuple[str, str]:
    """The lower- and upper-bound rows of ``tier``: ``lower``/``upper`` for full fine-tuning,
    else the default (untuned) rows of the tier whose family is lower-/upper-bound."""
    if tier == "full":
        return lower, upper
    labels = list(dict.fromkeys(r.label for r in as_records(records)
                                if r.parameterisation == tier and r.variant == "default"))

    def find(family: str, fallback: str) -> str:
        return next((label for label in labels if families.get(label) == family), fallback)

    return find("lower-bound", f"{lower}-{tier}"), find("upper-bound", f"{upper}-{tier}")


def assess(records: Iterable[RunRecord], benchmark: str, metric: str, families: Mapping[str, str],
           *, lower: str = "seqft", upper: str = "joint",
           row_order: Sequence[str] = (), tier: str | None = None) -> Discrimination:
    """:class:`Discrimination` of ``benchmark`` on ``metric`` (``acc`` or ``til_acc``) from
    ``records``; ``families`` maps a row's label (a tuned row: its base label) to its family,
    ``lower``/``upper`` name the bound rows, ``row_order`` orders the merge rows. With ``tier``
    (``full`` or ``lora``) only that parameterisation's records count, against the tier's own
    bounds (:func:`tier_bounds`), and the benchmark is named ``"<benchmark> (LoRA)"``."""
    records = as_records(records)
    name = benchmark
    if tier is not None:
        records = [r for r in records if r.parameterisation == tier]
        lower, upper = tier_bounds(records, tier, families, lower, upper)
        name = benchmark + TIER_TITLES[tier]
    by_row: dict[str, list[RunRecord]] = defaultdict(list)
    family: dict[str, str | None] = {}
    for record in records:
        if record.benchmark == benchmark:
            by_row[row_name(record)].append(record)
            family[row_name(record)] = families.get(record.row_label)

    def mean(row: str) -> float | None:
        stats = cell_stats(by_row.get(row, ()), metric)
        return 100.0 * stats.mean if stats.n else None

    merges = tuple(
        RowComparison(row, paired_points(by_row[row], by_row.get(lower, ()), metric))
        for row in order_rows(by_row, (), row_order)
        if family[row] == MERGE_FAMILY and cell_stats(by_row[row], metric).n)
    return Discrimination(name, metric, lower, upper, mean(lower), mean(upper), merges)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _named(comparisons: Iterable[RowComparison]) -> str:
    return ", ".join(f"{c.row} ({c.difference.mean:+.1f})" if c.difference else c.row
                     for c in comparisons)


def discrimination_section(assessments: Sequence[Discrimination]) -> list[str]:
    """The leaderboard page's section body (Markdown lines): how it is decided, one table row
    per benchmark and, per benchmark, which merge rows differ from the lower bound."""
    if not assessments:
        return ["No benchmarks."]
    lower = assessments[0].lower
    lines = [
        f"A benchmark discriminates when, on its headline metric, (1) the upper − lower bound gap "
        f"(difference of their means over seeds) is at least {MIN_GAP_POINTS:g} points and (2) at "
        f"least half of the merge-family rows differ from the lower bound ({lower}): the paired "
        f"interval of row − {lower} ({INTERVAL_METHOD}) excludes 0, in either direction. Counted: "
        "the merge-family rows with results on the benchmark; a tuned row counts as a row of its "
        "own, separately from its default row; a row sharing one seed with the lower bound has no "
        "interval and counts as not differing. A LoRA tier is assessed on its own, against its own "
        "bounds (seqft-lora, joint-lora).",
        "",
    ]
    headers = ["benchmark", "headline", "upper − lower (points)", f"gap ≥ {MIN_GAP_POINTS:g}",
               "merge rows differing", "≥ half", "verdict"]
    rows = []
    for a in assessments:
        if a.gap is None:
            gap = "not measurable"
        else:
            gap = f"{a.upper} − {a.lower} = {a.gap:+.1f} ({a.upper_mean:.1f} − {a.lower_mean:.1f})"
        resolved = f"{a.n_resolved} of {len(a.merges)}"
        rows.append([a.benchmark, METRIC_TITLES[a.metric], gap, _yes(a.gap_ok), resolved,
                     _yes(a.share_ok), a.verdict()])
    lines += [render_rows(headers, rows, "markdown"), ""]
    for a in assessments:
        above = [c for c in a.merges if c.resolved and c.difference.mean > 0]
        below = [c for c in a.merges if c.resolved and c.difference.mean < 0]
        unresolved = [c for c in a.merges if not c.resolved]
        parts = [f"above {a.lower}: {_named(above) or 'none'}",
                 f"below {a.lower}: {_named(below) or 'none'}"]
        if unresolved:
            parts.append(f"interval contains 0 or no interval: {_named(unresolved)}")
        lines.append(f"- **{a.benchmark}** ({METRIC_TITLES[a.metric]}, points vs {a.lower}) — "
                     + "; ".join(parts) + ".")
    return lines

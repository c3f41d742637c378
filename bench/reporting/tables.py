"""Leaderboard tables from run records: pandas frames, Markdown, LaTeX and CSV.

Records are :class:`~mergecl.bench.orchestration.records.RunRecord` models; the fields used here
are ``label``, ``base_label``/``variant`` (a tuned record is its own row, ``"<label> (tuned)"``),
``method``, ``benchmark``, ``seed``, ``status``, ``upper_bound``, ``metrics``, ``til_metrics``
and ``timings.total_s``. Metric values in records are fractions; the human-facing tables show
percentages (percentage points for forgetting and BWT) with one decimal.

Cell rules
----------
* ``"72.1 ± 1.0 (3)"`` — mean ± sample standard deviation (``ddof=1``) over seeds, with the
  number of seeds; one seed gives ``"72.1 (n=1)"`` (no spread can be estimated).
* Only runs with ``status == "ok"`` are averaged; any other status counts as a failure:
  ``"72.1 ± 1.0 (2; 1 failed)"``, or ``"failed 3/3"`` when no run of the cell succeeded.
* ``"—"`` when there is no run, or when the metric does not exist for the runs (e.g. AAA of
  joint training, TIL metrics of a run without task-incremental evaluation).
* The best mean of each metric column (by the displayed, rounded value; ties all marked) is
  bold — highest is best except forgetting (lowest); a column with fewer than two ranked
  results marks nothing. Rows of upper-bound runs (joint training) come last, carry the
  suffix ``" (upper bound)"`` and are never marked best.

Comparisons between two rows are *paired* over seeds (:func:`paired_points`,
:mod:`mergecl.bench.reporting.stats`): runs with the same seed share their class order and data.

:func:`leaderboard_frame` returns the display strings; the numbers behind them travel in
``frame.attrs["summary"]`` (one row per row × benchmark × metric, fractions / seconds) and
the best cells in ``frame.attrs["best"]``, which :func:`render` uses for all three formats.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.reporting.stats import PairedDifference, paired_difference
from tabulate import tabulate

TABLE_METRICS: tuple[str, ...] = (
    "acc", "aaa", "forgetting", "bwt", "til_acc", "til_aaa", "til_forgetting", "til_bwt",
)
"""Metric names: ``metrics.*`` and ``til_metrics.*`` (prefixed ``til_``)."""

DEFAULT_LEADERBOARD_METRICS: tuple[str, ...] = ("acc", "aaa", "forgetting", "til_acc")
LOWER_IS_BETTER: frozenset[str] = frozenset({"forgetting", "til_forgetting"})
WALL_TIME_METRIC = "total_s"
"""Name of the wall-time rows of the summary / CSV (seconds per successful run)."""

WALL_TIME_COLUMN: tuple[str, str] = ("wall time", "s/run")
UPPER_BOUND_SUFFIX = " (upper bound)"
TUNED_SUFFIX = " (tuned)"
MISSING = "—"

METRIC_TITLES: dict[str, str] = {
    "acc": "Acc", "aaa": "AAA", "forgetting": "Forgetting", "bwt": "BWT",
    "til_acc": "TIL Acc", "til_aaa": "TIL AAA", "til_forgetting": "TIL Forgetting",
    "til_bwt": "TIL BWT",
}

TableFormat = Literal["markdown", "latex", "csv"]

_LONG_COLUMNS = [
    "run", "benchmark", "row", "label", "method", "seed", "status", "upper_bound",
    "metric", "value", "total_s",
]
_SUMMARY_COLUMNS = [
    "row", "method", "benchmark", "metric", "unit", "mean", "std", "n", "n_failed",
    "n_runs", "upper_bound", "best",
]


# ------------------------------------------------------------------------------ record access


def as_records(records: Iterable[RunRecord | Mapping[str, Any]]) -> list[RunRecord]:
    """``records`` as a list of :class:`RunRecord`; plain dicts (as the result store returned
    them before it returned models) are validated, which raises on a malformed record."""
    return [record if isinstance(record, RunRecord) else RunRecord.model_validate(record)
            for record in records]


def row_name(record: RunRecord) -> str:
    """The table row of a record: its label, or ``"<base label> (tuned)"`` for a tuned record."""
    if record.variant == "tuned":
        return record.row_label + TUNED_SUFFIX
    return record.label


def metric_value(record: RunRecord, metric: str) -> float | None:
    """A finite metric value (fraction) of an ``ok`` record; None when absent or not ok."""
    if metric not in TABLE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {list(TABLE_METRICS)}")
    if not record.ok:
        return None
    block = record.til_metrics if metric.startswith("til_") else record.metrics
    if block is None:
        return None
    value = getattr(block, metric.removeprefix("til_"))
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def seed_points(records: Iterable[RunRecord], metric: str) -> dict[int, float]:
    """``{seed: value × 100}`` of the ``ok`` records with a value (the latest ``finished_at``
    wins when a seed occurs twice)."""
    latest: dict[int, RunRecord] = {}
    for record in records:
        if metric_value(record, metric) is None:
            continue
        previous = latest.get(record.seed)
        if previous is None or (record.finished_at or "") >= (previous.finished_at or ""):
            latest[record.seed] = record
    return {seed: 100.0 * metric_value(record, metric)  # type: ignore[operator]
            for seed, record in sorted(latest.items())}


def paired_points(a: Iterable[RunRecord], b: Iterable[RunRecord], metric: str) -> PairedDifference | None:
    """Paired difference a − b of ``metric`` in points over the seeds both have (None if none)."""
    return paired_difference(seed_points(a, metric), seed_points(b, metric))


@dataclass(frozen=True)
class CellStats:
    """Mean and sample std (fractions; std NaN for fewer than two values) of one metric over
    the ``n`` successful runs with a value, of ``n_runs`` runs of which ``n_failed`` failed."""

    mean: float
    std: float
    n: int
    n_failed: int
    n_runs: int

    def format(self) -> str:
        return format_cell(self.mean, self.std, self.n, self.n_failed, self.n_runs)


def cell_stats(records: Iterable[RunRecord], metric: str) -> CellStats:
    """:class:`CellStats` of ``metric`` over ``records`` (the runs of one table cell)."""
    records = list(records)
    values = list(seed_points(records, metric).values())
    mean, std = _mean_std([value / 100.0 for value in values])
    n_failed = sum(not record.ok for record in records)
    return CellStats(mean, std, len(values), n_failed, len(records))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    series = pd.Series(values, dtype=float)
    std = float(series.std(ddof=1)) if len(series) > 1 else math.nan
    return float(series.mean()), std


# ------------------------------------------------------------------------------ frames


def records_to_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Long format: one row per run and metric (all of :data:`TABLE_METRICS`).

    Columns: ``run`` (position in ``records``), ``benchmark``, ``row`` (:func:`row_name`),
    ``label``, ``method``, ``seed``, ``status``, ``upper_bound``, ``metric``, ``value``
    (fraction; NaN when the metric is absent or the run did not succeed) and ``total_s`` (the
    run's wall time, NaN when unknown).
    """
    rows: list[dict[str, Any]] = []
    for position, record in enumerate(as_records(records)):
        total_s = record.timings.total_s
        for metric in TABLE_METRICS:
            value = metric_value(record, metric)
            rows.append({
                "run": position, "benchmark": record.benchmark, "row": row_name(record),
                "label": record.label, "method": record.method, "seed": record.seed,
                "status": record.status, "upper_bound": record.upper_bound, "metric": metric,
                "value": math.nan if value is None else value,
                "total_s": math.nan if total_s is None else float(total_s),
            })
    frame = pd.DataFrame(rows, columns=_LONG_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    frame["total_s"] = frame["total_s"].astype(float)
    frame["upper_bound"] = frame["upper_bound"].astype(bool)
    return frame


def _cells(records: Iterable[RunRecord],
           benchmarks: Collection[str] | None) -> dict[tuple[str, str], list[RunRecord]]:
    """``{(row, benchmark): records}`` sorted by row then benchmark."""
    cells: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        if benchmarks is None or record.benchmark in benchmarks:
            cells[(row_name(record), record.benchmark)].append(record)
    return dict(sorted(cells.items()))


def summary_frame(
    records: Iterable[RunRecord],
    metrics: Sequence[str] = TABLE_METRICS,
    benchmarks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per table row × benchmark × metric, plus a :data:`WALL_TIME_METRIC` row per cell.

    Columns: ``row``, ``method``, ``benchmark``, ``metric``, ``unit`` (``fraction`` or ``s``),
    ``mean``, ``std`` (sample, NaN for fewer than two values), ``n`` (successful runs with a
    value), ``n_failed``, ``n_runs``, ``upper_bound``, ``best`` (filled by
    :func:`leaderboard_frame`; False here).
    """
    unknown = [metric for metric in metrics if metric not in TABLE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(TABLE_METRICS)}")
    rows: list[dict[str, Any]] = []
    for (row, benchmark), cell in _cells(as_records(records), benchmarks).items():
        common = {"row": row, "method": cell[0].method, "benchmark": benchmark,
                  "n_runs": len(cell), "upper_bound": any(r.upper_bound for r in cell),
                  "best": False}
        for metric in metrics:
            stats = cell_stats(cell, metric)
            rows.append({**common, "metric": metric, "unit": "fraction", "mean": stats.mean,
                         "std": stats.std, "n": stats.n, "n_failed": stats.n_failed})
        wall = [float(r.timings.total_s) for r in cell if r.ok and r.timings.total_s is not None]
        mean, std = _mean_std(wall)
        rows.append({**common, "metric": WALL_TIME_METRIC, "unit": "s", "mean": mean, "std": std,
                     "n": len(wall), "n_failed": sum(not r.ok for r in cell)})
    return pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)


def format_cell(mean: float, std: float, n: int, n_failed: int, n_runs: int) -> str:
    """Display text of one metric cell (fractions in, percentages out); see module docstring."""
    if n_runs == 0:
        return MISSING
    if n == 0:
        return f"failed {n_failed}/{n_runs}" if n_failed == n_runs else MISSING
    failures = f"; {n_failed} failed" if n_failed else ""
    if n == 1:
        return f"{100 * mean:.1f} (n=1{failures})"
    return f"{100 * mean:.1f} ± {100 * std:.1f} ({n}{failures})"


def order_rows(rows: Iterable[str], upper_bound: Collection[str],
               row_order: Sequence[str] | None = None) -> list[str]:
    """Row names in display order: the rows of ``row_order`` in that order, other rows
    alphabetically, each tuned row right under its default row, upper-bound rows last."""
    rank = {label: position for position, label in enumerate(row_order or ())}

    def key(row: str) -> tuple[Any, ...]:
        base = row.removesuffix(TUNED_SUFFIX)
        return (row in upper_bound, base not in rank, rank.get(base, 0), base, row != base)

    return sorted(set(rows), key=key)


def leaderboard_frame(
    records: Iterable[RunRecord],
    metrics: Sequence[str] = DEFAULT_LEADERBOARD_METRICS,
    benchmarks: Sequence[str] | None = None,
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per table row; columns ``(benchmark, metric)`` plus :data:`WALL_TIME_COLUMN`.

    ``benchmarks`` selects and orders the benchmark columns (default: all, sorted);
    ``method_order`` orders rows (see :func:`order_rows`). The wall-time column is the mean
    seconds per successful run over the shown benchmarks. See the module docstring for the
    cell rules and ``attrs``.
    """
    records = as_records(records)
    summary = summary_frame(records, metrics=metrics, benchmarks=benchmarks)
    shown_benchmarks = list(benchmarks) if benchmarks is not None else sorted(
        summary["benchmark"].unique().tolist())
    columns = [(benchmark, metric) for benchmark in shown_benchmarks for metric in metrics]
    upper = set(summary.loc[summary["upper_bound"], "row"])
    rows = order_rows(summary["row"], upper, method_order)
    display = {row: row + UPPER_BOUND_SUFFIX if row in upper else row for row in rows}

    by_cell = summary.set_index(["row", "benchmark", "metric"])
    wall: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.ok and record.benchmark in shown_benchmarks and record.timings.total_s is not None:
            wall[row_name(record)].append(float(record.timings.total_s))
    table: dict[str, dict[tuple[str, str], str]] = {}
    for row in rows:
        cells: dict[tuple[str, str], str] = {}
        for benchmark, metric in columns:
            if (row, benchmark, metric) in by_cell.index:
                stats = by_cell.loc[(row, benchmark, metric)]
                cells[(benchmark, metric)] = format_cell(
                    stats["mean"], stats["std"], int(stats["n"]), int(stats["n_failed"]),
                    int(stats["n_runs"]))
            else:
                cells[(benchmark, metric)] = MISSING
        seconds = wall.get(row)
        cells[WALL_TIME_COLUMN] = f"{sum(seconds) / len(seconds):.1f}" if seconds else MISSING
        table[display[row]] = cells

    best: list[tuple[str, tuple[str, str]]] = []
    for benchmark, metric in columns:
        candidates = summary[
            (summary["benchmark"] == benchmark) & (summary["metric"] == metric)
            & ~summary["upper_bound"] & (summary["n"] > 0)
        ]
        if len(candidates) < 2:  # a lone result is not "best" of anything
            continue
        shown = (100 * candidates["mean"]).round(1)
        target = shown.min() if metric in LOWER_IS_BETTER else shown.max()
        winners = candidates[shown == target]
        summary.loc[winners.index, "best"] = True
        best.extend((display[row], (benchmark, metric)) for row in winners["row"])

    frame = pd.DataFrame.from_dict(table, orient="index", dtype=object)
    frame = frame.reindex(columns=pd.MultiIndex.from_tuples(
        columns + [WALL_TIME_COLUMN], names=["benchmark", "metric"]))
    frame.index.name = "method"
    frame.attrs["summary"] = summary
    frame.attrs["best"] = best
    return frame


# ------------------------------------------------------------------------------ rendering


def _column_title(column: tuple[str, str]) -> str:
    if column == WALL_TIME_COLUMN:
        return f"{column[0]} ({column[1]})"
    benchmark, metric = column
    return f"{benchmark} {METRIC_TITLES.get(metric, metric)}"


_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "–": "--", "−": "$-$",
    "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "∈": r"$\in$",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters (and ±, —, Δ, ≥, …) escaped."""
    return "".join(_LATEX.get(char, char) for char in text)


def _booktabs(latex_raw: str) -> str:
    """Swap tabulate's ``\\hline`` rules for booktabs' top/mid/bottom rules."""
    lines = latex_raw.splitlines()
    rule_positions = [i for i, line in enumerate(lines) if line.strip() == r"\hline"]
    if len(rule_positions) >= 3:
        lines[rule_positions[0]] = r"\toprule"
        lines[rule_positions[1]] = r"\midrule"
        lines[rule_positions[-1]] = r"\bottomrule"
        for position in rule_positions[2:-1]:
            lines[position] = r"\midrule"
    return "\n".join(lines)


def render_rows(headers: Sequence[str], rows: Sequence[Sequence[str]], fmt: Literal["markdown", "latex"],
                bold: Collection[tuple[int, int]] = ()) -> str:
    """A table of display strings as GitHub Markdown or booktabs LaTeX (needs
    ``\\usepackage{booktabs}``); ``bold`` holds (row index, column index) pairs of ``rows``.
    The first column is left-aligned, the others right-aligned."""
    if fmt == "markdown":
        escape = lambda text: str(text).replace("|", r"\|")  # noqa: E731
        strong = lambda text: f"**{text}**"  # noqa: E731
    elif fmt == "latex":
        escape = latex_escape
        strong = lambda text: rf"\textbf{{{text}}}"  # noqa: E731
    else:
        raise ValueError(f"unknown table format {fmt!r}; use 'markdown' or 'latex'")
    body = [[strong(escape(cell)) if (i, j) in bold else escape(cell) for j, cell in enumerate(row)]
            for i, row in enumerate(rows)]
    alignment = ("left",) + ("right",) * (len(headers) - 1)
    if fmt == "markdown":
        return tabulate(body, headers=[escape(h) for h in headers], tablefmt="github",
                        colalign=alignment, disable_numparse=True)
    return _booktabs(tabulate(body, headers=[escape(h) for h in headers], tablefmt="latex_raw",
                              colalign=alignment, disable_numparse=True))


def render(frame: pd.DataFrame, fmt: TableFormat) -> str:
    """Text of a :func:`leaderboard_frame` as ``markdown`` (GitHub), ``latex`` (booktabs;
    needs ``\\usepackage{booktabs}``) or ``csv`` (the numeric summary, one row per row ×
    benchmark × metric; a frame without ``attrs["summary"]`` is written as displayed)."""
    if fmt == "csv":
        summary = frame.attrs.get("summary")
        if summary is None:
            return frame.to_csv()
        return summary.to_csv(index=False)
    if fmt not in ("markdown", "latex"):
        raise ValueError(f"unknown table format {fmt!r}; use 'markdown', 'latex' or 'csv'")

    best = {(row, tuple(column)) for row, column in frame.attrs.get("best", ())}
    columns = [tuple(column) if isinstance(column, tuple) else (str(column), "")
               for column in frame.columns]
    headers = [frame.index.name or "method"] + [_column_title(column) for column in columns]
    rows: list[list[str]] = []
    bold: set[tuple[int, int]] = set()
    for i, (row_label, values) in enumerate(zip(frame.index, frame.itertuples(index=False))):
        cells = [str(row_label)]
        for j, (column, value) in enumerate(zip(columns, values), start=1):
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(MISSING if missing else str(value))
            if (row_label, column) in best:
                bold.add((i, j))
        rows.append(cells)
    return render_rows(headers, rows, fmt, bold)

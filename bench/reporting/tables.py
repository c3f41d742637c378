"""Leaderboard tables from run records: pandas frames, Markdown, LaTeX and CSV.

Records follow the schema in ``docs/ARCHITECTURE.md``; the fields used here are ``label``,
``method``, ``benchmark``, ``seed``, ``status``, ``upper_bound``, ``metrics``, ``til_metrics``
and ``timings.total_s``. Metric values in records are fractions; the human-facing tables show
percentages (percentage points for forgetting and BWT) with one decimal.

Cell rules (leaderboard)
------------------------
* ``"72.1 ± 1.0 (3)"`` — mean ± sample standard deviation (``ddof=1``) over seeds, with the
  number of seeds; one seed gives ``"72.1 (n=1)"`` (no spread can be estimated).
* Only runs with ``status == "ok"`` are averaged; any other status counts as a failure:
  ``"72.1 ± 1.0 (2; 1 failed)"``, or ``"failed 3/3"`` when no run of the cell succeeded.
* ``"—"`` when there is no run, or when the metric does not exist for the runs (e.g. AAA of
  joint training, TIL metrics of a run without task-incremental evaluation).
* The best mean of each metric column (by the displayed, rounded value; ties all marked) is
  bold — highest is best except forgetting (lowest); a column with fewer than two ranked
  results marks nothing. Rows of upper-bound runs (joint
  training) come last, carry the suffix ``" (upper bound)"`` and are never marked best.

:func:`leaderboard_frame` returns the display strings; the numbers behind them travel in
``frame.attrs["summary"]`` (one row per label × benchmark × metric, fractions / seconds) and
the best cells in ``frame.attrs["best"]``, which :func:`render` uses for all three formats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd
from mergecl.bench.orchestration.store import atomic_write_text
from tabulate import tabulate

TABLE_METRICS: tuple[str, ...] = (
    "acc", "aaa", "forgetting", "bwt", "til_acc", "til_aaa", "til_forgetting", "til_bwt",
)
"""Metric names in the long frame: ``metrics.*`` and ``til_metrics.*`` (prefixed ``til_``)."""

DEFAULT_LEADERBOARD_METRICS: tuple[str, ...] = ("acc", "aaa", "forgetting", "til_acc")
LOWER_IS_BETTER: frozenset[str] = frozenset({"forgetting", "til_forgetting"})
WALL_TIME_METRIC = "total_s"
"""Name of the wall-time rows of the summary / CSV (seconds per successful run)."""

WALL_TIME_COLUMN: tuple[str, str] = ("wall time", "s/run")
UPPER_BOUND_SUFFIX = " (upper bound)"
MISSING = "—"

METRIC_TITLES: dict[str, str] = {
    "acc": "Acc", "aaa": "AAA", "forgetting": "Forgetting", "bwt": "BWT",
    "til_acc": "TIL Acc", "til_aaa": "TIL AAA", "til_forgetting": "TIL Forgetting",
    "til_bwt": "TIL BWT",
}

TableFormat = Literal["markdown", "latex", "csv"]

_LONG_COLUMNS = [
    "run", "benchmark", "label", "method", "seed", "status", "upper_bound",
    "metric", "value", "total_s",
]
_SUMMARY_COLUMNS = [
    "label", "method", "benchmark", "metric", "unit", "mean", "std", "n", "n_failed",
    "n_runs", "upper_bound", "best",
]


def _as_float(value: Any) -> float:
    """A finite or NaN float from a record value (``None``/non-numeric → NaN)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _required(record: Mapping[str, Any], field: str, position: int) -> Any:
    value = record.get(field)
    if value is None:
        raise ValueError(f"record #{position} has no {field!r} field")
    return value


def records_to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Long format: one row per run and metric (all of :data:`TABLE_METRICS`).

    Columns: ``run`` (position in ``records``), ``benchmark``, ``label``, ``method``, ``seed``,
    ``status``, ``upper_bound``, ``metric``, ``value`` (fraction; NaN when the metric is absent
    or the run did not succeed) and ``total_s`` (the run's wall time, NaN when unknown).
    """
    rows: list[dict[str, Any]] = []
    for position, record in enumerate(records):
        label = _required(record, "label", position)
        benchmark = _required(record, "benchmark", position)
        status = record.get("status")
        succeeded = status == "ok"
        timings = record.get("timings") or {}
        sources = {"": record.get("metrics") or {}, "til_": record.get("til_metrics") or {}}
        for metric in TABLE_METRICS:
            prefix = "til_" if metric.startswith("til_") else ""
            value = sources[prefix].get(metric[len(prefix):]) if succeeded else None
            rows.append({
                "run": position,
                "benchmark": str(benchmark),
                "label": str(label),
                "method": str(record.get("method") or label),
                "seed": record.get("seed"),
                "status": str(status),
                "upper_bound": bool(record.get("upper_bound", False)),
                "metric": metric,
                "value": _as_float(value),
                "total_s": _as_float(timings.get("total_s")),
            })
    frame = pd.DataFrame(rows, columns=_LONG_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    frame["total_s"] = frame["total_s"].astype(float)
    frame["upper_bound"] = frame["upper_bound"].astype(bool)
    return frame


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    series = pd.Series(values, dtype=float)
    if series.empty:
        return math.nan, math.nan
    std = float(series.std(ddof=1)) if len(series) > 1 else math.nan
    return float(series.mean()), std


def summary_frame(
    records: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = TABLE_METRICS,
    benchmarks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per label × benchmark × metric, plus a :data:`WALL_TIME_METRIC` row per cell.

    Columns: ``label``, ``method``, ``benchmark``, ``metric``, ``unit`` (``fraction`` or
    ``s``), ``mean``, ``std`` (sample, NaN for fewer than two values), ``n`` (successful runs
    with a value), ``n_failed``, ``n_runs``, ``upper_bound``, ``best`` (filled by
    :func:`leaderboard_frame`; False here).
    """
    unknown = [metric for metric in metrics if metric not in TABLE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(TABLE_METRICS)}")
    long = records_to_frame(records)
    if benchmarks is not None:
        long = long[long["benchmark"].isin(list(benchmarks))]
    rows: list[dict[str, Any]] = []
    for (label, benchmark), cell in long.groupby(["label", "benchmark"], sort=True):
        runs = cell.drop_duplicates("run")
        succeeded = runs["status"] == "ok"
        common = {
            "label": label,
            "method": runs["method"].iloc[0],
            "benchmark": benchmark,
            "n_failed": int((~succeeded).sum()),
            "n_runs": int(len(runs)),
            "upper_bound": bool(runs["upper_bound"].any()),
            "best": False,
        }
        for metric in metrics:
            values = cell.loc[cell["metric"] == metric, "value"].dropna().tolist()
            mean, std = _mean_std(values)
            rows.append({**common, "metric": metric, "unit": "fraction",
                         "mean": mean, "std": std, "n": len(values)})
        wall = runs.loc[succeeded, "total_s"].dropna().tolist()
        mean, std = _mean_std(wall)
        rows.append({**common, "metric": WALL_TIME_METRIC, "unit": "s",
                     "mean": mean, "std": std, "n": len(wall)})
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


def _ordered_labels(
    summary: pd.DataFrame, method_order: Sequence[str] | None
) -> list[tuple[str, bool]]:
    """(label, is_upper_bound): ``method_order`` first, others alphabetically, upper bounds last."""
    is_upper = summary.groupby("label")["upper_bound"].any().to_dict() if len(summary) else {}
    rank = {label: position for position, label in enumerate(method_order or ())}
    ordered = sorted(is_upper, key=lambda label: (
        is_upper[label], label not in rank, rank.get(label, 0), label))
    return [(label, bool(is_upper[label])) for label in ordered]


def leaderboard_frame(
    records: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = DEFAULT_LEADERBOARD_METRICS,
    benchmarks: Sequence[str] | None = None,
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per label; columns ``(benchmark, metric)`` plus :data:`WALL_TIME_COLUMN`.

    ``benchmarks`` selects and orders the benchmark columns (default: all, sorted);
    ``method_order`` orders rows (labels not listed follow alphabetically; upper-bound rows
    always come last). The wall-time column is the mean seconds per successful run over the
    shown benchmarks. See the module docstring for the cell rules and ``attrs``.
    """
    records = list(records)
    summary = summary_frame(records, metrics=metrics, benchmarks=benchmarks)
    shown_benchmarks = list(benchmarks) if benchmarks is not None else sorted(
        summary["benchmark"].unique().tolist())
    columns = [(benchmark, metric) for benchmark in shown_benchmarks for metric in metrics]
    labels = _ordered_labels(summary, method_order)
    display = {label: label + UPPER_BOUND_SUFFIX if upper else label for label, upper in labels}

    by_cell = summary.set_index(["label", "benchmark", "metric"])
    runs = records_to_frame(records).drop_duplicates("run")
    runs = runs[runs["benchmark"].isin(shown_benchmarks) & (runs["status"] == "ok")]
    wall_by_label = runs.groupby("label")["total_s"].mean().to_dict()
    table: dict[str, dict[tuple[str, str], str]] = {}
    for label, _ in labels:
        row: dict[tuple[str, str], str] = {}
        for benchmark, metric in columns:
            if (label, benchmark, metric) in by_cell.index:
                stats = by_cell.loc[(label, benchmark, metric)]
                row[(benchmark, metric)] = format_cell(
                    stats["mean"], stats["std"], int(stats["n"]), int(stats["n_failed"]),
                    int(stats["n_runs"]))
            else:
                row[(benchmark, metric)] = MISSING
        wall_s = wall_by_label.get(label, math.nan)
        row[WALL_TIME_COLUMN] = MISSING if math.isnan(wall_s) else f"{wall_s:.1f}"
        table[display[label]] = row

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
        best.extend((display[label], (benchmark, metric)) for label in winners["label"])

    frame = pd.DataFrame.from_dict(table, orient="index", dtype=object)
    frame = frame.reindex(columns=pd.MultiIndex.from_tuples(
        columns + [WALL_TIME_COLUMN], names=["benchmark", "metric"]))
    frame.index.name = "method"
    frame.attrs["summary"] = summary
    frame.attrs["best"] = best
    return frame


class Separation(NamedTuple):
    """Difference of two labels' means on one benchmark and metric (record units)."""

    difference: float
    """``mean_a - mean_b``."""
    exceeds_spread: bool
    """``|difference| > std_a + std_b``; False when either side has fewer than two seeds."""
    spread: float
    """``std_a + std_b`` (sample stds); NaN when either side has fewer than two seeds."""
    n_a: int
    n_b: int


def separation(
    records: Iterable[Mapping[str, Any]], benchmark: str, metric: str, a: str, b: str
) -> Separation | None:
    """Whether label ``a`` differs from label ``b`` by more than the seed spread.

    Rule (deliberately simple, not a significance test): the difference of the means over
    successful seeds counts as separated when it exceeds the sum of the two sample standard
    deviations. ``None`` when either label has no successful value for the cell.
    """
    summary = summary_frame(records, metrics=(metric,), benchmarks=(benchmark,))
    stats = summary[summary["metric"] == metric].set_index("label")
    if a not in stats.index or b not in stats.index:
        return None
    first, second = stats.loc[a], stats.loc[b]
    if first["n"] == 0 or second["n"] == 0:
        return None
    difference = float(first["mean"] - second["mean"])
    spread = float(first["std"] + second["std"])
    exceeds = bool(not math.isnan(spread) and abs(difference) > spread)
    return Separation(difference, exceeds, spread, int(first["n"]), int(second["n"]))


def significance_note(
    records: Iterable[Mapping[str, Any]],
    reference: str = "seqft",
    metrics: Sequence[str] = ("acc",),
    benchmarks: Sequence[str] | None = None,
) -> list[str]:
    """One line per (benchmark, metric, label ≠ reference) comparing to ``reference``, e.g.
    ``"pnm vs seqft on mnist-fmnist: +12.3 pts (exceeds seed spread)"``.

    Upper-bound labels are left out; benchmarks without the reference give no lines. The
    metric is named in parentheses unless it is ``acc``.
    """
    records = list(records)
    summary = summary_frame(records, metrics=metrics, benchmarks=benchmarks)
    lines: list[str] = []
    for benchmark in (benchmarks or sorted(summary["benchmark"].unique().tolist())):
        cell = summary[summary["benchmark"] == benchmark]
        if reference not in set(cell["label"]):
            continue
        others = [label for label, upper in _ordered_labels(cell, None)
                  if label != reference and not upper]
        for metric in metrics:
            where = "" if metric == "acc" else f" ({metric})"
            for label in others:
                result = separation(records, benchmark, metric, label, reference)
                if result is None:
                    continue
                if math.isnan(result.spread):
                    verdict = "seed spread unknown: fewer than 2 seeds"
                elif result.exceeds_spread:
                    verdict = "exceeds seed spread"
                else:
                    verdict = "within seed spread"
                lines.append(f"{label} vs {reference} on {benchmark}{where}: "
                             f"{100 * result.difference:+.1f} pts ({verdict})")
    return lines


def _column_title(column: tuple[str, str]) -> str:
    if column == WALL_TIME_COLUMN:
        return f"{column[0]} ({column[1]})"
    benchmark, metric = column
    return f"{benchmark} {METRIC_TITLES.get(metric, metric)}"


def _latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "–": "--",
    }
    return "".join(replacements.get(char, char) for char in text)


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


def render(frame: pd.DataFrame, fmt: TableFormat) -> str:
    """Text of a :func:`leaderboard_frame` as ``markdown`` (GitHub), ``latex`` (booktabs;
    needs ``\\usepackage{booktabs}``) or ``csv`` (the numeric summary, one row per label ×
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
    if fmt == "markdown":
        escape = lambda text: str(text).replace("|", r"\|")  # noqa: E731
        bold = lambda text: f"**{text}**"  # noqa: E731
    else:
        escape = _latex_escape
        bold = lambda text: rf"\textbf{{{text}}}"  # noqa: E731

    headers = [escape(frame.index.name or "method")] + [
        escape(_column_title(column)) for column in columns]
    rows = []
    for row_label, values in zip(frame.index, frame.itertuples(index=False)):
        cells = [escape(row_label)]
        for column, value in zip(columns, values):
            text = escape(MISSING if value is None or (isinstance(value, float)
                                                       and math.isnan(value)) else value)
            cells.append(bold(text) if (row_label, column) in best else text)
        rows.append(cells)
    alignment = ("left",) + ("right",) * len(columns)
    if fmt == "markdown":
        return tabulate(rows, headers=headers, tablefmt="github",
                        colalign=alignment, disable_numparse=True)
    return _booktabs(tabulate(rows, headers=headers, tablefmt="latex_raw",
                              colalign=alignment, disable_numparse=True))


def table_notes(reference: str = "seqft") -> list[str]:
    """The legend printed under the Markdown table."""
    return [
        "Cells: mean ± sample standard deviation over seeds (number of seeds), in %; "
        "forgetting and BWT in percentage points.",
        "Best mean per column in bold (forgetting: lowest); upper-bound rows are not ranked.",
        "Failed runs are not averaged and are counted in the cell; — = no result.",
        "Wall time: mean seconds per successful run over the shown benchmarks.",
        f"Differences to {reference!r} count as exceeding the seed spread when "
        "|mean difference| > std_a + std_b (a rule of thumb, not a statistical test).",
    ]


def write_tables(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    stem: str = "leaderboard",
    header_lines: Sequence[str] = (),
    *,
    metrics: Sequence[str] = DEFAULT_LEADERBOARD_METRICS,
    benchmarks: Sequence[str] | None = None,
    method_order: Sequence[str] | None = None,
    reference: str = "seqft",
) -> list[Path]:
    """Write ``<stem>.md`` (header lines, table, notes), ``<stem>.tex`` and ``<stem>.csv``
    atomically into ``out_dir``; return the three paths in that order."""
    records = list(records)
    frame = leaderboard_frame(records, metrics=metrics, benchmarks=benchmarks,
                              method_order=method_order)
    notes = table_notes(reference)
    comparisons = significance_note(records, reference=reference, benchmarks=benchmarks)

    markdown_parts = [*header_lines, "", render(frame, "markdown"), "", "Notes:", ""]
    markdown_parts += [f"- {note}" for note in notes]
    if comparisons:
        markdown_parts += ["", f"Differences to {reference} (Acc):", ""]
        markdown_parts += [f"- {line}" for line in comparisons]
    markdown = "\n".join(markdown_parts).lstrip("\n") + "\n"
    latex = "".join(f"% {line}\n" for line in header_lines) + render(frame, "latex") + "\n"

    out = Path(out_dir)
    return [
        atomic_write_text(out / f"{stem}.md", markdown),
        atomic_write_text(out / f"{stem}.tex", latex),
        atomic_write_text(out / f"{stem}.csv", render(frame, "csv")),
    ]

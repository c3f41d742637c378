"""Figures from run records: accuracy curves, accuracy-matrix heatmaps, merge-coefficient traces.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas —
pyplot and its global state are never touched, so nothing is ever shown and importing this
module does not change the process's matplotlib backend. Every PNG is written atomically.

Records are :class:`~mergecl.bench.orchestration.records.RunRecord` models, one line / panel
per table row (:func:`~mergecl.bench.reporting.tables.row_name`: a tuned record is its own
row). Only records with ``status == "ok"`` are plotted; records whose accuracy matrix is invalid
are skipped with a warning. Accuracies are shown in percent. When the seeds of one row
disagree on the number of tasks (they should not), curves are cut to the shortest and
heatmaps use the most common shape.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import atomic_write_bytes
from mergecl.bench.reporting.metrics import accuracy_curve, accuracy_matrix, summarize_row
from mergecl.bench.reporting.tables import as_records, row_name

COEFFICIENT_KEY = "merge_coefficient"
"""The per-task diagnostic (``diagnostics["per_task"][t]``) every merging method reports its
merge coefficient under (``mergecl.methods.base.MERGE_COEFFICIENT``; not imported: no torch here)."""

MAX_ANNOTATED_TASKS = 15
"""Heatmaps of more tasks than this are not annotated with numbers (they would not fit)."""


def _finite_scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def file_stem(name: str) -> str:
    """The benchmark's part of a figure's file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "benchmark"


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _by_benchmark_and_row(records: Iterable[RunRecord]) -> dict[str, dict[str, list[RunRecord]]]:
    """``{benchmark: {row: [records]}}`` of successful records, both levels sorted."""
    grouped: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.ok:
            grouped[record.benchmark][row_name(record)].append(record)
    return {benchmark: dict(sorted(rows.items()))
            for benchmark, rows in sorted(grouped.items())}


def _is_upper_bound(runs: Sequence[RunRecord]) -> bool:
    return any(record.upper_bound for record in runs)


def _mean_and_std(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Column-wise mean and sample std of ``seeds x points`` (std ``None`` for one seed)."""
    mean = rows.mean(axis=0)
    return mean, rows.std(axis=0, ddof=1) if rows.shape[0] > 1 else None


def _joint_accuracy(record: RunRecord) -> float | None:
    acc = _finite_scalar(record.metrics.acc) if record.metrics is not None else None
    if acc is not None:
        return acc
    try:
        return summarize_row(record.acc_matrix)["acc"]
    except (ValueError, TypeError):
        return None


def _curves(label: str, runs: Sequence[RunRecord]) -> np.ndarray | None:
    """``seeds x tasks`` accuracy curves (fractions), cut to the shortest; None if none valid."""
    curves = []
    for record in runs:
        try:
            curves.append(accuracy_curve(record.acc_matrix))
        except (ValueError, TypeError) as exc:
            warnings.warn(f"skipping {label} seed {record.seed} in curves: {exc}",
                          stacklevel=3)
    if not curves:
        return None
    length = min(len(curve) for curve in curves)
    return np.array([curve[:length] for curve in curves])


def plot_accuracy_curves(records: Iterable[RunRecord], out_dir: str | Path) -> list[Path]:
    """One ``accuracy_curves_<benchmark>.png`` per benchmark: accuracy on the tasks seen so
    far after each task (mean over seeds, shaded ± sample std), one line per row; upper
    bounds (joint training) as dashed horizontal lines at their final accuracy."""
    written: list[Path] = []
    for benchmark, by_label in _by_benchmark_and_row(as_records(records)).items():
        figure = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        drawn = 0
        for label, runs in by_label.items():
            if _is_upper_bound(runs):
                values = [v for v in map(_joint_accuracy, runs) if v is not None]
                if not values:
                    continue
                level, spread = _mean_and_std(100 * np.array([values]).T)
                line = axes.axhline(float(level[0]), linestyle="--", linewidth=1.5,
                                    label=f"{label} (upper bound, n={len(values)})")
                if spread is not None:
                    axes.axhspan(float(level[0] - spread[0]), float(level[0] + spread[0]),
                                 color=line.get_color(), alpha=0.12, linewidth=0)
                drawn += 1
                continue
            curves = _curves(label, runs)
            if curves is None:
                continue
            tasks = np.arange(1, curves.shape[1] + 1)
            mean, std = _mean_and_std(100 * curves)
            (line,) = axes.plot(tasks, mean, marker="o", markersize=3,
                                label=f"{label} (n={curves.shape[0]})")
            if std is not None:
                axes.fill_between(tasks, mean - std, mean + std, color=line.get_color(),
                                  alpha=0.2, linewidth=0)
            drawn += 1
        if not drawn:
            continue
        axes.set_title(benchmark)
        axes.set_xlabel("tasks trained")
        axes.set_ylabel("accuracy on tasks seen so far (%)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        path = Path(out_dir) / f"accuracy_curves_{file_stem(benchmark)}.png"
        written.append(_save(figure, path))
    return written


def _mean_matrix(label: str, runs: Sequence[RunRecord]) -> tuple[np.ndarray, int] | None:
    """Mean accuracy matrix (fractions) over the seeds of the most common shape, and n."""
    matrices = []
    for record in runs:
        raw = record.acc_matrix
        try:
            matrix = accuracy_matrix(raw) if not record.upper_bound else np.atleast_2d(
                np.asarray(raw, dtype=float))
        except (ValueError, TypeError) as exc:
            warnings.warn(f"skipping {label} seed {record.seed} in heatmaps: {exc}",
                          stacklevel=3)
            continue
        if matrix.ndim == 2 and matrix.size and np.all(np.isfinite(matrix)):
            matrices.append(matrix)
    if not matrices:
        return None
    shape = Counter(matrix.shape for matrix in matrices).most_common(1)[0][0]
    same_shape = [matrix for matrix in matrices if matrix.shape == shape]
    return np.mean(same_shape, axis=0), len(same_shape)


def plot_accuracy_heatmaps(records: Iterable[RunRecord], out_dir: str | Path) -> list[Path]:
    """One ``accuracy_heatmaps_<benchmark>.png`` per benchmark: a grid with one heatmap per
    row of its accuracy matrix averaged over seeds (rows: after task i, columns: test
    experience j), annotated in percent; upper bounds (a single row) come last."""
    written: list[Path] = []
    for benchmark, by_label in _by_benchmark_and_row(as_records(records)).items():
        ordered = sorted(by_label.items(), key=lambda item: (_is_upper_bound(item[1]), item[0]))
        panels = []
        for label, runs in ordered:
            result = _mean_matrix(label, runs)
            if result is not None:
                panels.append((label, *result, _is_upper_bound(runs)))
        if not panels:
            continue
        n_columns = min(3, len(panels))
        n_rows = math.ceil(len(panels) / n_columns)
        figure = Figure(figsize=(3.8 * n_columns, 3.4 * n_rows), dpi=100, layout="constrained")
        grid = figure.subplots(n_rows, n_columns, squeeze=False)
        image = None
        for axes, (label, matrix, n_seeds, upper_bound) in zip(grid.flat, panels):
            percent = 100 * matrix
            image = axes.imshow(percent, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            kind = "upper bound, " if upper_bound else ""
            axes.set_title(f"{label} ({kind}n={n_seeds})", fontsize="medium")
            axes.set_xlabel("test experience")
            axes.set_ylabel("after task" if matrix.shape[0] > 1 else "joint")
            axes.set_xticks(range(matrix.shape[1]), [str(j + 1) for j in range(matrix.shape[1])])
            axes.set_yticks(range(matrix.shape[0]), [str(i + 1) for i in range(matrix.shape[0])])
            if max(matrix.shape) <= MAX_ANNOTATED_TASKS:
                for (i, j), value in np.ndenumerate(percent):
                    axes.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                              color="white" if value < 60 else "black")
        for axes in list(grid.flat)[len(panels):]:
            axes.set_visible(False)
        figure.suptitle(f"{benchmark}: accuracy matrix (%), mean over seeds")
        figure.colorbar(image, ax=grid, shrink=0.8, label="accuracy (%)")
        path = Path(out_dir) / f"accuracy_heatmaps_{file_stem(benchmark)}.png"
        written.append(_save(figure, path))
    return written


def coefficient_series(record: RunRecord) -> list[float]:
    """Per-task merge coefficients of one record: ``diagnostics["per_task"][t]["merge_coefficient"]``
    for every task t (NaN where a task has none or a non-finite / non-scalar one); ``[]`` when
    the record has no merge coefficient at all."""
    per_task = record.diagnostics.get("per_task")
    if not isinstance(per_task, list):
        return []
    series = [math.nan] * len(per_task)
    for task, entry in enumerate(per_task):
        if isinstance(entry, Mapping):
            number = _finite_scalar(entry.get(COEFFICIENT_KEY))
            if number is not None:
                series[task] = number
    return series if any(math.isfinite(value) for value in series) else []


def _nan_mean_and_std(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std over seeds ignoring NaN (std NaN where fewer than two values)."""
    counts = np.sum(~np.isnan(rows), axis=0)
    filled = np.where(np.isnan(rows), 0.0, rows)
    mean = np.where(counts > 0, filled.sum(axis=0) / np.maximum(counts, 1), np.nan)
    squares = np.where(np.isnan(rows), 0.0, (rows - mean) ** 2).sum(axis=0)
    std = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), np.nan)
    return mean, std


def plot_coefficient_traces(records: Iterable[RunRecord], out_dir: str | Path) -> list[Path]:
    """One ``coefficient_traces_<benchmark>.png`` per benchmark with any merge coefficient
    (:func:`coefficient_series`): one line per row over tasks (mean over seeds, shaded ±
    sample std). Rows without coefficients are skipped; benchmarks without any get no file."""
    written: list[Path] = []
    for benchmark, by_row in _by_benchmark_and_row(as_records(records)).items():
        figure = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        drawn = 0
        for row, runs in by_row.items():
            traces = [trace for trace in map(coefficient_series, runs) if trace]
            if not traces:
                continue
            length = max(len(trace) for trace in traces)
            values = np.full((len(traces), length), np.nan)
            for line_values, trace in zip(values, traces):
                line_values[: len(trace)] = trace
            mean, std = _nan_mean_and_std(values)
            tasks = np.arange(1, length + 1)
            (line,) = axes.plot(tasks, mean, marker="o", markersize=3,
                                label=f"{row} (n={len(traces)})")
            if np.any(np.isfinite(std)):
                axes.fill_between(tasks, mean - std, mean + std, color=line.get_color(),
                                  alpha=0.2, linewidth=0)
            drawn += 1
        if not drawn:
            continue
        axes.set_title(f"{benchmark}: merge coefficients")
        axes.set_xlabel("task")
        axes.set_ylabel(COEFFICIENT_KEY)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        path = Path(out_dir) / f"coefficient_traces_{file_stem(benchmark)}.png"
        written.append(_save(figure, path))
    return written


def plot_all(records: Iterable[RunRecord], out_dir: str | Path) -> list[Path]:
    """All figures above for ``records``; returns the written PNG paths
    (``accuracy_curves_<b>.png``, ``accuracy_heatmaps_<b>.png``, ``coefficient_traces_<b>.png``;
    ``<b>`` is :func:`file_stem` of the benchmark)."""
    records = as_records(records)
    return [
        *plot_accuracy_curves(records, out_dir),
        *plot_accuracy_heatmaps(records, out_dir),
        *plot_coefficient_traces(records, out_dir),
    ]

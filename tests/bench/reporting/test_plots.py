"""Tests of mergecl.bench.reporting.plots: files are written, are valid PNGs, odd inputs do not crash."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_records import make_record as fake_record
from matplotlib.image import imread
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.reporting.plots import (
    _by_benchmark_and_row,
    coefficient_series,
    plot_accuracy_curves,
    plot_accuracy_heatmaps,
    plot_all,
    plot_coefficient_traces,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_record(label: str, seed: int, benchmark: str = "mnist-fmnist", *, tasks: int = 3,
                status: str = "ok", upper_bound: bool = False,
                per_task: list[dict[str, Any]] | None = None, **fields: Any) -> RunRecord:
    rng = np.random.default_rng(seed)
    if upper_bound:
        matrix = rng.uniform(0.8, 1.0, size=(1, tasks)).tolist()
    else:
        matrix = np.tril(rng.uniform(0.3, 1.0, size=(tasks, tasks))).tolist()
    return fake_record(label, seed, float(np.mean(matrix[-1])), benchmark=benchmark,
                       status=status, upper_bound=upper_bound, acc_matrix=matrix,
                       per_task=per_task or [], **fields)


def coefficients(seed: int, tasks: int = 3) -> list[dict[str, Any]]:
    return [{"merge_coefficient": 0.5 + 0.1 * seed + 0.05 * t, "merge_s": 1.0} for t in range(tasks)]


@pytest.fixture
def records() -> list[RunRecord]:
    return [
        make_record("pnm", 0, per_task=coefficients(0)),
        make_record("pnm", 1, per_task=coefficients(1)),
        make_record("became", 0, per_task=[{"merge_coefficient": 0.3}, {"merge_coefficient": 0.4},
                                           {"merge_coefficient": None}]),
        make_record("seqft", 0),
        make_record("seqft", 1),
        make_record("magmax", 0, status="failed"),
        make_record("joint", 0, upper_bound=True),
        make_record("joint", 1, upper_bound=True),
        make_record("pnm", 0, "split-mnist", tasks=5, per_task=coefficients(0, 5)),
    ]


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_plot_all_writes_valid_pngs(records: list[RunRecord], tmp_path: Path) -> None:
    paths = plot_all(records, tmp_path / "figures")
    assert sorted(p.name for p in paths) == sorted([
        "accuracy_curves_mnist-fmnist.png", "accuracy_curves_split-mnist.png",
        "accuracy_heatmaps_mnist-fmnist.png", "accuracy_heatmaps_split-mnist.png",
        "coefficient_traces_mnist-fmnist.png", "coefficient_traces_split-mnist.png",
    ])
    for path in paths:
        assert_png(path)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)


def test_single_seed_and_failed_records_do_not_crash(tmp_path: Path) -> None:
    records = [make_record("pnm", 0, per_task=coefficients(0)), make_record("x", 0, status="failed"),
               make_record("joint", 0, upper_bound=True)]
    assert len(plot_all(records, tmp_path)) == 3


def test_only_failed_records_write_nothing(tmp_path: Path) -> None:
    assert plot_all([make_record("x", 0, status="failed")], tmp_path) == []
    assert plot_all([], tmp_path) == []


def test_no_coefficients_no_trace_file(tmp_path: Path) -> None:
    records = [make_record("seqft", 0), make_record("seqft", 1)]
    assert plot_coefficient_traces(records, tmp_path) == []
    assert len(plot_accuracy_curves(records, tmp_path)) == 1


def test_invalid_matrix_is_skipped_with_warning(tmp_path: Path) -> None:
    broken = make_record("pnm", 1).model_copy(update={"acc_matrix": [[0.5, 0.1], [0.2]]})
    records = [make_record("pnm", 0), broken]
    with pytest.warns(UserWarning, match="pnm seed 1"):
        paths = plot_accuracy_curves(records, tmp_path)
    assert_png(paths[0])
    with pytest.warns(UserWarning, match="pnm seed 1"):
        paths = plot_accuracy_heatmaps(records, tmp_path)
    assert_png(paths[0])


def test_seeds_with_different_task_counts_still_plot(tmp_path: Path) -> None:
    records = [make_record("pnm", 0, tasks=3), make_record("pnm", 1, tasks=4),
               make_record("pnm", 2, tasks=4)]
    for path in plot_all(records, tmp_path):
        assert_png(path)


def test_coefficient_series_reads_merge_coefficient_only() -> None:
    record = make_record("x", 0, per_task=[
        {"merge_coefficient": 0.5, "alpha": 0.9, "coef_attn": 1.0},
        "not a dict",
        {"merge_coefficient": math.nan, "lambda": 0.2},
        {"merge_coefficient": [0.1, 0.2]},
        {"merge_coefficient": True},
        {"merge_coefficient": 3},
    ])
    series = coefficient_series(record)
    assert len(series) == 6 and series[0] == 0.5 and series[5] == 3.0
    assert all(math.isnan(value) for value in series[1:5])
    # the old per-method keys are not coefficients any more
    assert coefficient_series(make_record("x", 0, per_task=[{"alpha": 0.5}, {"lambda": 0.3}])) == []
    assert coefficient_series(make_record("x", 0)) == []
    assert coefficient_series(make_record("x", 0, diagnostics={"per_task": "oops"})) == []


def test_coefficient_key_is_the_methods_key() -> None:
    from mergecl.bench.reporting.plots import COEFFICIENT_KEY
    from mergecl.methods.base import MERGE_COEFFICIENT

    assert COEFFICIENT_KEY == MERGE_COEFFICIENT == "merge_coefficient"


def test_only_old_coefficient_keys_write_no_trace(tmp_path: Path) -> None:
    records = [make_record("pnm", 0, per_task=[{"alpha": 0.5}] * 3)]
    assert plot_coefficient_traces(records, tmp_path) == []


def test_tuned_rows_and_dict_records_are_plotted(tmp_path: Path) -> None:
    records = [make_record("magmax", 0, per_task=coefficients(0)),
               make_record("magmax", 0, per_task=coefficients(1), tuned_values={"lam": 0.3})]
    grouped = _by_benchmark_and_row(records)
    assert {row: len(runs) for row, runs in grouped["mnist-fmnist"].items()} == {
        "magmax": 1, "magmax (tuned)": 1}
    paths = plot_all([record.to_json_dict() for record in records], tmp_path)
    assert sorted(p.name for p in paths) == [
        "accuracy_curves_mnist-fmnist.png", "accuracy_heatmaps_mnist-fmnist.png",
        "coefficient_traces_mnist-fmnist.png"]
    for path in paths:
        assert_png(path)

"""Tests of mergecl.bench.reporting.plots: files are written, are valid PNGs, odd inputs do not crash."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from mergecl.bench.reporting.plots import (
    coefficient_series,
    plot_accuracy_curves,
    plot_accuracy_heatmaps,
    plot_all,
    plot_coefficient_traces,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_record(label: str, seed: int, benchmark: str = "mnist-fmnist", *, tasks: int = 3,
                status: str = "ok", upper_bound: bool = False,
                per_task: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    if upper_bound:
        matrix = rng.uniform(0.8, 1.0, size=(1, tasks)).tolist()
    else:
        matrix = np.tril(rng.uniform(0.3, 1.0, size=(tasks, tasks))).tolist()
    return {
        "label": label, "method": label, "benchmark": benchmark, "seed": seed,
        "status": status, "upper_bound": upper_bound,
        "acc_matrix": matrix if status == "ok" else None,
        "metrics": {"acc": float(np.mean(matrix[-1]))} if status == "ok" else None,
        "diagnostics": {"per_task": per_task or []},
    }


def alphas(seed: int, tasks: int = 3) -> list[dict[str, Any]]:
    return [{"alpha": 0.5 + 0.1 * seed + 0.05 * t, "loss": 1.0} for t in range(tasks)]


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return [
        make_record("pnm", 0, per_task=alphas(0)),
        make_record("pnm", 1, per_task=alphas(1)),
        make_record("became", 0, per_task=[{"lambda": 0.3}, {"lambda": 0.4, "coef_old": 0.6},
                                           {"lambda": None}]),
        make_record("seqft", 0),
        make_record("seqft", 1),
        make_record("magmax", 0, status="failed"),
        make_record("joint", 0, upper_bound=True),
        make_record("joint", 1, upper_bound=True),
        make_record("pnm", 0, "split-mnist", tasks=5, per_task=alphas(0, 5)),
    ]


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_plot_all_writes_valid_pngs(records: list[dict[str, Any]], tmp_path: Path) -> None:
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
    records = [make_record("pnm", 0, per_task=alphas(0)), make_record("x", 0, status="failed"),
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
    broken = make_record("pnm", 1)
    broken["acc_matrix"] = [[0.5, 0.1], [0.2]]
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


def test_coefficient_series() -> None:
    record = {"diagnostics": {"per_task": [
        {"alpha": 0.5, "coef_attn": 1, "flag": True, "coefficient": [0.1, 0.2]},
        "not a dict",
        {"alpha": math.nan, "merge_coefficient": 0.3, "coefficient_ok": False},
    ]}}
    series = coefficient_series(record)
    assert set(series) == {"alpha", "coef_attn", "merge_coefficient"}
    assert series["alpha"][0] == 0.5 and all(math.isnan(v) for v in series["alpha"][1:])
    assert series["coef_attn"][0] == 1.0
    assert series["merge_coefficient"][2] == 0.3
    assert coefficient_series({"diagnostics": None}) == {}
    assert coefficient_series({}) == {}

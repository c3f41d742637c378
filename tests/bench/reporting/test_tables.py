"""Tests of mergecl.bench.reporting.tables with hand-built records."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from fake_records import make_record as fake_record
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.reporting.tables import (
    MISSING,
    TABLE_METRICS,
    WALL_TIME_COLUMN,
    as_records,
    cell_stats,
    format_cell,
    leaderboard_frame,
    metric_value,
    order_rows,
    paired_points,
    records_to_frame,
    render,
    row_name,
    seed_points,
)

BENCH = "mnist-fmnist"


def make_record(label: str, seed: int, acc: float | None, *, status: str = "ok",
                forgetting: float | None = 0.1, til_acc: float | None = None,
                upper_bound: bool = False, benchmark: str = BENCH,
                total_s: float = 10.0) -> RunRecord:
    return fake_record(label, seed, acc, benchmark=benchmark, method=label.split("_")[0],
                       status=status, aaa=None if upper_bound else acc and acc + 0.05,
                       forgetting=None if upper_bound else forgetting, til_acc=til_acc,
                       upper_bound=upper_bound, total_s=total_s)


@pytest.fixture
def records() -> list[RunRecord]:
    return [
        make_record("seqft", 0, 0.50, forgetting=0.40, total_s=10.0),
        make_record("seqft", 1, 0.52, forgetting=0.42, total_s=20.0),
        make_record("seqft", 2, 0.54, forgetting=0.44, total_s=30.0),
        make_record("pnm_lora", 0, 0.70, forgetting=0.20, til_acc=0.90),
        make_record("pnm_lora", 1, 0.72, forgetting=0.22, til_acc=0.92),
        make_record("pnm_lora", 2, None, status="failed", total_s=999.0),
        make_record("magmax", 0, None, status="failed"),
        make_record("magmax", 1, None, status="failed"),
        make_record("trm", 0, 0.60, forgetting=0.05),
        make_record("joint", 0, 0.95, upper_bound=True),
        make_record("joint", 1, 0.97, upper_bound=True),
        make_record("seqft", 0, 0.30, benchmark="split-mnist"),
    ]


def test_records_to_frame_is_long(records: list[RunRecord]) -> None:
    frame = records_to_frame(records)
    assert len(frame) == len(records) * len(TABLE_METRICS)
    assert set(frame["row"]) == {"seqft", "pnm_lora", "magmax", "trm", "joint"}
    pnm = frame[(frame["label"] == "pnm_lora") & (frame["seed"] == 0)].set_index("metric")
    assert pnm.loc["acc", "value"] == 0.70 and pnm.loc["til_acc", "value"] == 0.90
    assert math.isnan(pnm.loc["bwt", "value"]) and math.isnan(pnm.loc["til_aaa", "value"])
    failed = frame[frame["status"] == "failed"]
    assert failed["value"].isna().all()


def test_dict_records_are_validated_and_malformed_ones_refused() -> None:
    record = make_record("x", 0, 0.5).to_json_dict()
    (converted,) = as_records([record])
    assert isinstance(converted, RunRecord) and converted.metrics.acc == 0.5
    del record["label"]
    with pytest.raises(ValueError, match="label"):
        records_to_frame([record])


def test_format_cell() -> None:
    assert format_cell(0.721, 0.01, 3, 0, 3) == "72.1 ± 1.0 (3)"
    assert format_cell(0.721, 0.01, 2, 1, 3) == "72.1 ± 1.0 (2; 1 failed)"
    assert format_cell(0.721, math.nan, 1, 0, 1) == "72.1 (n=1)"
    assert format_cell(math.nan, math.nan, 0, 3, 3) == "failed 3/3"
    assert format_cell(math.nan, math.nan, 0, 0, 2) == MISSING
    assert format_cell(math.nan, math.nan, 0, 0, 0) == MISSING


def test_leaderboard_cells(records: list[RunRecord]) -> None:
    frame = leaderboard_frame(records, method_order=["seqft", "trm"])
    assert list(frame.index) == ["seqft", "trm", "magmax", "pnm_lora", "joint (upper bound)"]
    assert frame.columns[-1] == WALL_TIME_COLUMN
    assert list(frame.columns[:4]) == [(BENCH, m) for m in ("acc", "aaa", "forgetting", "til_acc")]
    assert frame.loc["seqft", (BENCH, "acc")] == "52.0 ± 2.0 (3)"
    assert frame.loc["seqft", (BENCH, "forgetting")] == "42.0 ± 2.0 (3)"
    assert frame.loc["seqft", (BENCH, "til_acc")] == MISSING
    assert frame.loc["pnm_lora", (BENCH, "acc")] == "71.0 ± 1.4 (2; 1 failed)"
    assert frame.loc["pnm_lora", (BENCH, "til_acc")] == "91.0 ± 1.4 (2; 1 failed)"
    assert frame.loc["magmax", (BENCH, "acc")] == "failed 2/2"
    assert frame.loc["trm", (BENCH, "acc")] == "60.0 (n=1)"
    assert frame.loc["joint (upper bound)", (BENCH, "acc")] == "96.0 ± 1.4 (2)"
    assert frame.loc["joint (upper bound)", (BENCH, "aaa")] == MISSING
    assert frame.loc["trm", ("split-mnist", "acc")] == MISSING
    # wall time: mean over successful runs only (the failed pnm run took 999 s)
    assert frame.loc["seqft", WALL_TIME_COLUMN] == "17.5"  # (10+20+30+10)/4 over benchmarks
    assert frame.loc["pnm_lora", WALL_TIME_COLUMN] == "10.0"
    assert frame.loc["magmax", WALL_TIME_COLUMN] == MISSING


def test_best_marks_and_upper_bound_is_not_ranked(records: list[RunRecord]) -> None:
    frame = leaderboard_frame(records)
    best = set(frame.attrs["best"])
    assert ("pnm_lora", (BENCH, "acc")) in best  # joint's 96.0 is higher but not ranked
    assert ("trm", (BENCH, "forgetting")) in best  # lower is better
    assert ("pnm_lora", (BENCH, "til_acc")) not in best  # only one ranked result
    assert not any(row.endswith("(upper bound)") for row, _ in best)
    assert not any(column == WALL_TIME_COLUMN for _, column in best)
    assert len([1 for _, column in best if column == (BENCH, "acc")]) == 1


def test_ties_on_the_displayed_value_are_all_marked() -> None:
    records = [make_record("a", 0, 0.70001), make_record("b", 0, 0.70004),
               make_record("c", 0, 0.5)]
    best = {row for row, column in leaderboard_frame(records).attrs["best"]
            if column == (BENCH, "acc")}
    assert best == {"a", "b"}


def test_benchmarks_select_and_order_columns(records: list[RunRecord]) -> None:
    frame = leaderboard_frame(records, metrics=("acc",), benchmarks=["split-mnist", BENCH])
    assert list(frame.columns) == [("split-mnist", "acc"), (BENCH, "acc"), WALL_TIME_COLUMN]
    assert frame.loc["seqft", WALL_TIME_COLUMN] == "17.5"
    only = leaderboard_frame(records, metrics=("acc",), benchmarks=["split-mnist"])
    assert only.loc["seqft", WALL_TIME_COLUMN] == "10.0"


def test_unknown_metric_is_refused(records: list[RunRecord]) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        leaderboard_frame(records, metrics=("accuracy",))


def test_markdown(records: list[RunRecord]) -> None:
    text = render(leaderboard_frame(records), "markdown")
    lines = text.splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({line.count("|") for line in lines}) == 1
    assert "mnist-fmnist Acc" in lines[0] and "wall time (s/run)" in lines[0]
    assert "**71.0 ± 1.4 (2; 1 failed)**" in text
    assert "**96.0" not in text
    assert lines[-1].lstrip("| ").startswith("joint (upper bound)")


def test_latex(records: list[RunRecord]) -> None:
    text = render(leaderboard_frame(records), "latex")
    assert text.startswith(r"\begin{tabular}") and text.rstrip().endswith(r"\end{tabular}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) == 1
    assert r"\textbf{71.0 $\pm$ 1.4 (2; 1 failed)}" in text
    assert r"pnm\_lora" in text and "split-mnist" in text
    assert r"\textbackslash" not in text and "±" not in text and "—" not in text
    body = [line for line in text.splitlines() if line.endswith(r"\\")]
    assert len({line.count("&") for line in body}) == 1


def test_csv_is_machine_readable(records: list[RunRecord]) -> None:
    text = render(leaderboard_frame(records), "csv")
    table = pd.read_csv(io.StringIO(text))
    assert {"row", "benchmark", "metric", "mean", "std", "n", "n_failed"} <= set(table.columns)
    assert not table.duplicated(["row", "benchmark", "metric"]).any()
    pnm = table[(table["row"] == "pnm_lora") & (table["metric"] == "acc")].iloc[0]
    assert pnm["mean"] == pytest.approx(0.71)
    assert pnm["std"] == pytest.approx(0.0141421356)
    assert (pnm["n"], pnm["n_failed"], pnm["n_runs"]) == (2, 1, 3)
    assert bool(pnm["best"])
    joint = table[(table["row"] == "joint") & (table["metric"] == "acc")].iloc[0]
    assert bool(joint["upper_bound"]) and not bool(joint["best"])
    wall = table[(table["row"] == "seqft") & (table["metric"] == "total_s")
                 & (table["benchmark"] == BENCH)].iloc[0]
    assert wall["unit"] == "s" and wall["mean"] == pytest.approx(20.0)


def test_render_refuses_unknown_format(records: list[RunRecord]) -> None:
    with pytest.raises(ValueError, match="html"):
        render(leaderboard_frame(records), "html")  # type: ignore[arg-type]


def test_empty_records_give_an_empty_table() -> None:
    frame = leaderboard_frame([])
    assert frame.empty
    assert "method" in render(frame, "markdown")


def test_metric_value_and_seed_points(records: list[RunRecord]) -> None:
    pnm = [r for r in records if r.label == "pnm_lora"]
    assert metric_value(pnm[0], "til_acc") == 0.90 and metric_value(pnm[0], "bwt") is None
    assert metric_value(pnm[2], "acc") is None  # failed
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value(pnm[0], "top5")
    assert seed_points(pnm, "acc") == pytest.approx({0: 70.0, 1: 72.0})
    stats = cell_stats(pnm, "acc")
    assert (stats.n, stats.n_failed, stats.n_runs) == (2, 1, 3)
    assert stats.format() == "71.0 ± 1.4 (2; 1 failed)"


def test_seed_points_keep_the_latest_record_of_a_seed() -> None:
    old = make_record("a", 0, 0.5).model_copy(update={"finished_at": "2026-01-01"})
    new = make_record("a", 0, 0.6).model_copy(update={"finished_at": "2026-02-01"})
    assert seed_points([new, old], "acc") == {0: 60.0}
    assert seed_points([old, new], "acc") == {0: 60.0}


def test_paired_points_pair_by_seed(records: list[RunRecord]) -> None:
    pnm = [r for r in records if r.label == "pnm_lora"]
    seqft = [r for r in records if r.label == "seqft" and r.benchmark == BENCH]
    difference = paired_points(pnm, seqft, "acc")
    # seeds 0 and 1 are shared (pnm's seed 2 failed): differences 20 and 20 points
    assert difference.n == 2 and difference.mean == pytest.approx(20.0)
    assert difference.low == pytest.approx(20.0) and difference.high == pytest.approx(20.0)
    assert difference.resolved
    trm = [r for r in records if r.label == "trm"]
    single = paired_points(trm, seqft, "acc")
    assert single.n == 1 and not single.resolved and "no interval" in single.format()
    assert paired_points([r for r in records if r.label == "magmax"], seqft, "acc") is None


def test_tuned_records_are_their_own_row_under_the_default_row() -> None:
    tuned = fake_record("magmax", 0, 0.7, tuned_values={"lam": 0.3})
    default = fake_record("magmax", 0, 0.6)
    assert (row_name(tuned), row_name(default)) == ("magmax (tuned)", "magmax")
    rows = order_rows(["joint", "magmax (tuned)", "zeta", "magmax", "seqft"], {"joint"},
                      ["seqft", "magmax", "joint"])
    assert rows == ["seqft", "magmax", "magmax (tuned)", "zeta", "joint"]
    frame = leaderboard_frame([default, tuned, fake_record("seqft", 0, 0.4)],
                              metrics=("acc",), method_order=["seqft", "magmax"])
    assert list(frame.index) == ["seqft", "magmax", "magmax (tuned)"]
    assert frame.loc["magmax (tuned)", (BENCH, "acc")] == "70.0 (n=1)"



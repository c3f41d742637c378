"""Tests of mergecl.bench.reporting.report: does a benchmark discriminate? (paired intervals)."""

from __future__ import annotations

import pytest
from fake_records import make_record
from mergecl.bench.reporting.report import (
    MIN_GAP_POINTS,
    assess,
    discrimination_section,
)

FAMILIES = {"seqft": "lower-bound", "joint": "upper-bound", "avg": "merge", "pnm": "merge",
            "magmax": "merge", "ewc": "regulariser"}


def rows(label: str, values: list[float], benchmark: str = "b", **fields) -> list:
    return [make_record(label, seed, value, benchmark=benchmark, **fields)
            for seed, value in enumerate(values)]


def discriminating() -> list:
    """joint − seqft = 40 points; avg +20 (constant: resolved), magmax tuned +12 (resolved),
    magmax +10/−2/+4 (sd 6: interval contains 0); ewc is a regulariser (not counted)."""
    return [*rows("seqft", [0.50, 0.52, 0.54]), *rows("joint", [0.90, 0.92, 0.94]),
            *rows("avg", [0.70, 0.72, 0.74]), *rows("magmax", [0.60, 0.50, 0.58]),
            *rows("magmax", [0.62, 0.64, 0.66], tuned_values={"lam": 0.3}),
            *rows("ewc", [0.45, 0.47, 0.49])]


def test_a_benchmark_that_discriminates() -> None:
    result = assess(discriminating(), "b", "acc", FAMILIES, row_order=["seqft", "avg", "magmax"])
    assert result.gap == pytest.approx(40.0) and result.gap_ok
    assert [c.row for c in result.merges] == ["avg", "magmax", "magmax (tuned)"]
    assert [c.resolved for c in result.merges] == [True, False, True]
    assert result.merges[0].difference.mean == pytest.approx(20.0)
    assert result.n_resolved == 2 and result.share_ok
    assert result.discriminates and result.verdict() == "discriminates"
    assert result.reasons() == []


def test_a_small_gap_and_unresolved_merges_do_not_discriminate() -> None:
    records = [*rows("seqft", [0.80, 0.82, 0.84]), *rows("joint", [0.90, 0.92, 0.94]),
               *rows("avg", [0.85, 0.80, 0.90]), *rows("magmax", [0.81, 0.90]),
               make_record("magmax", 2, None, benchmark="b", status="failed")]
    result = assess(records, "b", "acc", FAMILIES)
    assert result.gap == pytest.approx(10.0) and not result.gap_ok
    assert result.n_resolved == 0 and len(result.merges) == 2 and not result.share_ok
    assert result.verdict() == (
        f"does not discriminate (joint − seqft gap +10.0 points < {MIN_GAP_POINTS:g}; "
        "only 0 of 2 merge rows differ from seqft, fewer than half)")


def test_exactly_half_resolved_is_enough_and_a_gap_of_15_counts() -> None:
    records = [*rows("seqft", [0.50, 0.50]), *rows("joint", [0.65, 0.65]),
               *rows("avg", [0.60, 0.60]), *rows("pnm", [0.55, 0.45])]
    result = assess(records, "b", "acc", FAMILIES)
    assert result.gap == pytest.approx(15.0) and result.gap_ok
    assert (result.n_resolved, len(result.merges)) == (1, 2) and result.discriminates


def test_missing_bounds_and_no_merges_are_reasons() -> None:
    result = assess(rows("ewc", [0.5, 0.6]), "b", "acc", FAMILIES)
    assert result.gap is None and not result.merges
    assert result.verdict() == ("does not discriminate (no joint and no seqft results: the gap "
                                "cannot be measured; no merge-family rows with results)")
    only_avg = assess(rows("avg", [0.5, 0.6]), "b", "acc", FAMILIES)
    assert only_avg.merges[0].difference is None and not only_avg.merges[0].resolved


def test_headline_til_acc_is_read_from_til_metrics() -> None:
    records = [*rows("seqft", [0.2, 0.2], til_acc=0.60), *rows("joint", [0.9, 0.9], til_acc=0.95)]
    assert assess(records, "b", "til_acc", FAMILIES).gap == pytest.approx(35.0)
    assert assess(records, "b", "acc", FAMILIES).gap == pytest.approx(70.0)


def test_section_lists_counts_verdicts_and_rows() -> None:
    good = assess(discriminating(), "b", "acc", FAMILIES, row_order=["seqft", "avg", "magmax"])
    text = "\n".join(discrimination_section([good]))
    lines = text.splitlines()
    assert "tuned row counts as a row of its own" in text
    row = next(line for line in lines if line.startswith("| b "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == ["b", "Acc", "joint − seqft = +40.0 (92.0 − 52.0)", "yes", "2 of 3", "yes",
                     "discriminates"]
    detail = next(line for line in lines if line.startswith("- **b**"))
    assert "above seqft: avg (+20.0), magmax (tuned) (+12.0)" in detail
    assert "below seqft: none" in detail and "no interval: magmax (+4.0)" in detail

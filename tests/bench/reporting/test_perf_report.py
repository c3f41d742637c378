"""Tests of mergecl.bench.reporting.perf_report's leaderboard section (records read as RunRecords)."""

from __future__ import annotations

import json
from pathlib import Path

from fake_records import make_record
from mergecl.bench.reporting.perf_report import REPO, build_report, leaderboard_section


def store(results: Path, records) -> None:
    for record in records:
        path = results / record.benchmark / record.label / f"seed{record.seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record.model_dump(mode="json")))


def timed(label: str, seed: int, **fields):
    record = make_record(label, seed, 0.5, **fields)
    timings = {"total_s": 120.0, "train_s": 60.0, "train_steps": 100, "eval_s": 30.0, "merge_s": 6.0}
    return record.model_copy(update={"timings": record.timings.model_copy(update=timings)})


def test_sums_run_times_and_checks_the_wall_time_target(tmp_path: Path) -> None:
    store(tmp_path, [timed("avg", 0), timed("avg", 1), timed("seqft", 0, benchmark="split-mnist"),
                     make_record("pnm", 0, status="failed", total_s=30.0)])
    (tmp_path / "mnist-fmnist" / "avg" / "seed7.json").write_text("{not json")
    (tmp_path / "leaderboard.md").write_text(
        "# board\n\n- Records: 3 ok\n- Wall time: 30.0 min on Test CPU (this invocation); the "
        "runs' own times sum to 6.5 min.\n")
    lines = leaderboard_section(tmp_path)
    assert lines[0] == "## Default leaderboard wall time"
    assert "- run records: 4 (3 ok) over 2 benchmarks x 3 labels; 1 unreadable" in lines
    assert "- sum of run times (`timings.total_s`): 390 s = 6.5 min = 0.11 h" in lines
    assert ("- where it goes: optimisation steps 3.0 min (300 steps, 600 ms per step and run), "
            "evaluation 1.5 min, merges and their statistics 0.3 min") in lines
    assert any(line.startswith("- `leaderboard.md` says: Wall time: 30.0 min on Test CPU")
               for line in lines)
    assert any("**MISS** (1.50x the target)" in line for line in lines)
    assert "- recorded wall time of the invocation that wrote it: 30.0 min" in lines


def test_tables_only_page_has_no_wall_time(tmp_path: Path) -> None:
    store(tmp_path, [timed("avg", 0)])
    (tmp_path / "leaderboard.md").write_text(
        "# board\n\n- Wall time: none — tables from existing records (no runs in this "
        "invocation); the runs' own times sum to 2.0 min.\n")
    text = "\n".join(leaderboard_section(tmp_path))
    assert "recorded wall time: none" in text and "target" not in text


def test_pages_of_the_previous_format_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "leaderboard.md").write_text(
        "Runs: 192 records (192 ok); sum of run times 152.7 min; this invocation's wall time "
        "12.0 min.\n")
    text = "\n".join(leaderboard_section(tmp_path))
    assert "target: ≤ 20 min on this 2-core machine: met (0.60x the target)" in text


def test_nothing_yet(tmp_path: Path) -> None:
    assert "Not yet generated" in "\n".join(leaderboard_section(tmp_path / "absent"))


def test_report_is_built_from_missing_inputs_and_repo_is_the_repository(tmp_path: Path) -> None:
    text = build_report(tmp_path, tmp_path / "perf.json", tmp_path / "perf_extra.json",
                        tmp_path / "perf.md")
    assert text.startswith("# mergecl performance report")
    assert "No side file" in text and "No `results/perf.json`" in text
    assert (REPO / "pyproject.toml").is_file()  # default results dir: <repository>/results

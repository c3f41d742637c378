"""Tests of mergecl.bench.reporting.leaderboard: the page, built from hand-made records.

The case (seeds 0, 1, 2; values in %):

* ``bench-a`` (headline Acc): seqft 50/52/54, avg 70/72/74 (+20 on every seed), magmax
  60/50/58 (+10/−2/+4: its interval contains 0), magmax tuned (lam=0.3) 62/64/66 (+12), ewc
  45/47/49, joint 90/92/94 → gap 40, 2 of 3 merge rows differ: discriminates.
* ``bench-b`` (headline TIL Acc): seqft 80/82/84, avg 85/80/90, magmax 81/90 + a failed seed 2,
  ewc 82/82 (seed 2 missing), joint 90/92/94 → gap 10, 0 of 2 merge rows differ: does not.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from fake_records import make_record
from mergecl.bench.reporting.leaderboard import (
    BenchmarkSummary,
    tuned_edges,
    tuned_values_text,
    write_leaderboard,
)
from mergecl.bench.reporting.stats import INTERVAL_METHOD

ROW_ORDER = ["seqft", "avg", "magmax", "ewc", "joint"]
FAMILIES = {"seqft": "lower-bound", "avg": "merge", "magmax": "merge", "ewc": "regulariser",
            "joint": "upper-bound"}
BENCHMARKS = [
    BenchmarkSummary(name="bench-a", scenario="class-incremental", headline="acc",
                     description="Split A, 2 experiences x 5 classes", n_experiences=2),
    BenchmarkSummary(name="bench-b", scenario="class-incremental", headline="til_acc",
                     description="Split B", n_experiences=5),
]
MATRIX = [[0.9, 0.0], [0.5, 0.5]]


def bench_a() -> list:
    records = []

    def add(label, values, **fields):
        for seed, value in enumerate(values):
            records.append(make_record(label, seed, value, benchmark="bench-a", acc_matrix=MATRIX,
                                       git_rev="abc1234", versions={"torch": "2.14.1"}, **fields))

    continual = {"aaa": 0.8, "forgetting": 0.1, "bwt": -0.1}
    add("seqft", [0.50, 0.52, 0.54], **continual)
    add("avg", [0.70, 0.72, 0.74], **continual)
    coefficient = [{"merge_coefficient": 0.5}, {"merge_coefficient": 0.4}]
    add("magmax", [0.60, 0.50, 0.58], per_task=coefficient, **continual)
    add("magmax", [0.62, 0.64, 0.66], tuned_values={"lam": 0.3}, per_task=coefficient, **continual)
    add("ewc", [0.45, 0.47, 0.49], **continual)
    for seed, value in enumerate([0.90, 0.92, 0.94]):
        records.append(make_record("joint", seed, value, benchmark="bench-a", upper_bound=True,
                                   acc_matrix=[[value, value]], git_rev="abc1234",
                                   versions={"torch": "2.14.1"}))
    return records


def bench_b() -> list:
    records = []

    def add(label, til_values, **fields):
        for seed, value in enumerate(til_values):
            records.append(make_record(label, seed, 0.3, benchmark="bench-b", til_acc=value,
                                       git_rev="def5678", versions={"torch": "2.15.0"}, **fields))

    add("seqft", [0.80, 0.82, 0.84])
    add("avg", [0.85, 0.80, 0.90])
    add("magmax", [0.81, 0.90])
    records.append(make_record("magmax", 2, None, benchmark="bench-b", status="failed",
                               error="RuntimeError: boom", git_rev="def5678"))
    add("ewc", [0.82, 0.82])  # seed 2 missing
    add("joint", [0.90, 0.92, 0.94], upper_bound=True)
    return records


def records() -> list:
    return bench_a() + bench_b()


def write(out: Path, recs=None, **overrides) -> list[Path]:
    arguments = dict(title="Test board", command="mergecl leaderboard --config t.yaml",
                     benchmarks=BENCHMARKS, row_order=ROW_ORDER, families=FAMILIES, wall_s=600.0,
                     cpu_model="Test CPU 3000", seeds=[0, 1, 2], notes=["a note of the grid"])
    arguments.update(overrides)
    return write_leaderboard(records() if recs is None else recs, out, **arguments)


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> tuple[list[Path], Path]:
    out = tmp_path_factory.mktemp("board")
    return write(out), out


@pytest.fixture(scope="module")
def page(board) -> str:
    return (board[1] / "leaderboard.md").read_text()


# ------------------------------------------------------------------------------ page parsing


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The first Markdown table of ``text``: headers and {row name: {header: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]

    headers = cells(lines[0])
    body = [cells(line) for line in lines[2:]]
    return headers, {row[0]: dict(zip(headers, row)) for row in body}


def plain(cell: str) -> str:
    return cell.strip("*")


# ------------------------------------------------------------------------------ files


def test_writes_page_csv_tex_plots_and_paper_tables(board) -> None:
    paths, out = board
    names = [p.relative_to(out).as_posix() for p in paths]
    assert names[:3] == ["leaderboard.md", "leaderboard.csv", "leaderboard.tex"]
    assert names[-2:] == ["paper/pnm-mini.md", "paper/magmax-mini.md"]
    assert {"plots/accuracy_curves_bench-a.png", "plots/accuracy_heatmaps_bench-a.png",
            "plots/coefficient_traces_bench-a.png"} <= set(names)
    assert all(p.is_file() for p in paths)
    assert "Generated by `mergecl leaderboard --config t.yaml`" in (out / "paper" / "pnm-mini.md").read_text()


def test_header(page: str) -> None:
    header = page.split("\n## ")[0]
    assert header.startswith("# Test board\n")
    assert "`mergecl leaderboard --config t.yaml`" in header
    assert "Git revisions: **2 different**" in header
    assert "`abc1234` (18 records)" in header and "`def5678` (14 records)" in header
    assert "torch 2.14.1 / 2.15.0 (differ between records)" in header
    assert "Seeds: 0, 1, 2 (3 seeds)." in header
    assert "Records: 31 ok, 1 failed, 1 missing" in header
    assert "Wall time: 10.0 min on Test CPU 3000" in header
    assert INTERVAL_METHOD in header
    assert "- Note: a note of the grid" in header


def test_header_without_runs_says_tables_come_from_records(tmp_path: Path) -> None:
    write(tmp_path, recs=bench_a(), wall_s=None, cpu_model=None)
    header = (tmp_path / "leaderboard.md").read_text().split("\n## ")[0]
    assert "Wall time: none — tables from existing records" in header
    assert "Git revision: `abc1234` (all 18 records)." in header


# ------------------------------------------------------------------------------ summary


def test_summary_cells_bold_and_mean_rank_by_hand(page: str) -> None:
    headers, rows = table(section(page, "Summary"))
    assert headers == ["method", "bench-a (Acc)", "bench-b (TIL Acc)", "mean rank"]
    assert list(rows) == ["seqft", "avg", "magmax", "magmax (tuned): lam=0.3", "ewc",
                          "joint (upper bound)"]
    assert rows["avg"]["bench-a (Acc)"] == "**72.0 ± 2.0 (3)**"
    assert rows["magmax"]["bench-b (TIL Acc)"] == "**85.5 ± 6.4 (2; 1 failed)**"
    assert rows["joint (upper bound)"]["bench-a (Acc)"] == "92.0 ± 2.0 (3)"  # never bold
    # bench-a ranks: avg 1, magmax tuned 2, magmax 3, seqft 4, ewc 5;
    # bench-b ranks: magmax 1 (85.5), avg 2 (85.0), seqft and ewc tie at 82.0 → 3.5 each
    ranks = {name: plain(row["mean rank"]) for name, row in rows.items()}
    assert ranks == {"seqft": "3.75", "avg": "1.50", "magmax": "2.00",
                     "magmax (tuned): lam=0.3": "2.00 (1 of 2 benchmarks)", "ewc": "4.25",
                     "joint (upper bound)": "unranked (upper bound)"}
    assert rows["avg"]["mean rank"] == "**1.50**"


# ------------------------------------------------------------------------------ discrimination


def test_discrimination_verdicts(page: str) -> None:
    text = section(page, "Does each benchmark discriminate?")
    assert page.count("## Does each benchmark discriminate?") == 1
    _, rows = table(text)
    a, b = rows["bench-a"], rows["bench-b"]
    assert a["upper − lower (points)"] == "joint − seqft = +40.0 (92.0 − 52.0)"
    assert (a["gap ≥ 15"], a["merge rows differing"], a["≥ half"]) == ("yes", "2 of 3", "yes")
    assert a["verdict"] == "discriminates"
    assert b["upper − lower (points)"] == "joint − seqft = +10.0 (92.0 − 82.0)"
    assert (b["gap ≥ 15"], b["merge rows differing"], b["≥ half"]) == ("no", "0 of 2", "no")
    assert b["verdict"] == ("does not discriminate (joint − seqft gap +10.0 points < 15; only 0 "
                            "of 2 merge rows differ from seqft, fewer than half)")
    assert "a tuned row counts as a row of its own" in text


# ------------------------------------------------------------------------------ benchmark tables


def test_benchmark_section_description_and_plot_links(page: str) -> None:
    a = section(page, "bench-a")
    assert ("Class-incremental, 2 experiences; headline metric: Acc (class-incremental accuracy). "
            "Split A, 2 experiences x 5 classes") in a
    assert "[accuracy curves](plots/accuracy_curves_bench-a.png)" in a
    assert "[accuracy matrices](plots/accuracy_heatmaps_bench-a.png)" in a
    assert "[merge coefficients](plots/coefficient_traces_bench-a.png)" in a
    b = section(page, "bench-b")
    assert "headline metric: TIL Acc (task-incremental accuracy)" in b
    assert "coefficient_traces_bench-b" not in b  # no such plot: no link


def test_bench_a_table(page: str) -> None:
    headers, rows = table(section(page, "bench-a"))
    # no TIL values on bench-a: no TIL column
    assert headers == ["method", "Acc", "AAA", "Forgetting", "BWT", "Δ Acc vs seqft",
                       "Δ Acc vs best (avg)"]
    assert list(rows) == ["seqft", "avg", "magmax", "magmax (tuned): lam=0.3", "ewc",
                          "joint (upper bound)"]
    assert rows["seqft"]["Acc"] == "52.0 ± 2.0 (3)"
    assert rows["avg"]["Acc"] == "**72.0 ± 2.0 (3)**"
    assert rows["seqft"]["Δ Acc vs seqft"] == "reference"
    assert rows["avg"]["Δ Acc vs seqft"] == "+20.0 [+20.0, +20.0] (n=3)"
    # magmax − seqft = +10, −2, +4: mean 4, sd 6, half width 4.302653 · 6 / √3 = 14.9
    assert rows["magmax"]["Δ Acc vs seqft"] == "+4.0 [-10.9, +18.9] (n=3)"
    assert rows["magmax (tuned): lam=0.3"]["Δ Acc vs seqft"] == "+12.0 [+12.0, +12.0] (n=3)"
    assert rows["avg"]["Δ Acc vs best (avg)"] == "best"
    assert rows["seqft"]["Δ Acc vs best (avg)"] == "-20.0 [-20.0, -20.0] (n=3)"
    assert rows["avg"]["AAA"] == "80.0 ± 0.0 (3)"  # every row ties: none is bold
    joint = rows["joint (upper bound)"]
    assert joint["Acc"] == "92.0 ± 2.0 (3)"
    assert joint["AAA"] == joint["Forgetting"] == joint["BWT"] == "—"


def test_bench_b_table_failures_and_tuned_row_absent(page: str) -> None:
    headers, rows = table(section(page, "bench-b"))
    assert headers == ["method", "Acc", "TIL Acc", "Δ TIL Acc vs seqft",
                       "Δ TIL Acc vs best (magmax)"]
    assert "magmax (tuned): lam=0.3" not in rows  # no tuned records on bench-b
    assert rows["magmax"]["TIL Acc"] == "**85.5 ± 6.4 (2; 1 failed)**"
    assert rows["ewc"]["TIL Acc"] == "82.0 ± 0.0 (2)"
    assert rows["magmax"]["Δ TIL Acc vs seqft"].endswith("(n=2)")
    assert rows["joint (upper bound)"]["Δ TIL Acc vs seqft"] == "+10.0 [+10.0, +10.0] (n=3)"


def test_no_table_on_the_page_has_an_empty_column(page: str) -> None:
    blocks = re.split(r"\n\n(?=\|)", page)
    tables = [block for block in blocks if block.startswith("|")]
    assert len(tables) == 4  # summary, discrimination, bench-a, bench-b
    for block in tables:
        headers, rows = table(block)
        for header in headers[1:]:
            assert any(plain(row[header]) not in ("", "—") for row in rows.values()), header


def test_tuned_row_sits_under_its_default_row_with_its_values(page: str) -> None:
    for title in ("Summary", "bench-a"):
        names = list(table(section(page, title))[1])
        assert names.index("magmax (tuned): lam=0.3") == names.index("magmax") + 1


def test_failed_and_missing_runs_are_named(page: str) -> None:
    failed = section(page, "Failed runs")
    assert "1 failed run (benchmark/label/seed: error):" in failed
    assert "- `bench-b/magmax/seed2`: RuntimeError: boom" in failed
    missing = section(page, "Missing runs")
    assert "1 run of the grid without a record" in missing and "- `bench-b/ewc/seed2`" in missing
    assert page.rstrip().endswith("- `bench-b/ewc/seed2`")


# ------------------------------------------------------------------------------ csv and tex


def test_csv_holds_the_numbers_of_the_page(board) -> None:
    frame = pd.read_csv(io.StringIO((board[1] / "leaderboard.csv").read_text()))
    assert list(frame.columns) == ["section", "benchmark", "row", "quantity", "statistic",
                                   "value", "unit"]

    def value(**where) -> float:
        mask = pd.Series(True, index=frame.index)
        for column, wanted in where.items():
            mask &= frame[column].fillna("") == wanted
        (found,) = frame.loc[mask, "value"]
        return float(found)

    assert value(section="benchmark", benchmark="bench-a", row="avg", quantity="acc",
                 statistic="mean") == pytest.approx(72.0)
    assert value(section="benchmark", benchmark="bench-a", row="magmax",
                 quantity="delta_acc_vs_seqft", statistic="high") == pytest.approx(
        4 + 4.302653 * 6 / math.sqrt(3), abs=1e-4)
    assert value(section="summary", row="avg", quantity="mean_rank", statistic="value") == 1.5
    assert value(section="summary", benchmark="bench-b", row="ewc", quantity="rank",
                 statistic="value") == 3.5
    assert value(section="discrimination", benchmark="bench-a", quantity="gap") == pytest.approx(40)
    assert value(section="discrimination", benchmark="bench-b",
                 quantity="merge_rows_differing") == 0
    assert value(section="header", quantity="records_missing") == 1
    assert value(section="benchmark", benchmark="bench-b", row="magmax", quantity="til_acc",
                 statistic="n_failed") == 1
    # a column the page drops has no numbers either
    assert frame[(frame["benchmark"] == "bench-b") & (frame["quantity"] == "aaa")].empty


def test_tex_holds_the_summary_and_per_benchmark_tables(board) -> None:
    tex = (board[1] / "leaderboard.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 3 and tex.count(r"\bottomrule") == 3
    assert "% bench-a: Class-incremental" in tex and "% bench-b: Class-incremental" in tex
    assert r"\textbf{72.0 $\pm$ 2.0 (3)}" in tex
    assert r"$\Delta$ Acc vs seqft" in tex and "±" not in tex and "Δ" not in tex


# ------------------------------------------------------------------------------ edge cases


def test_without_lower_bound_there_is_no_delta_vs_seqft_column(tmp_path: Path) -> None:
    recs = [r for r in bench_a() if r.label not in ("seqft",)]
    write(tmp_path, recs=recs, benchmarks=BENCHMARKS[:1])
    page = (tmp_path / "leaderboard.md").read_text()
    headers, rows = table(section(page, "bench-a"))
    assert "Δ Acc vs seqft" not in headers and "Δ Acc vs best (avg)" in headers
    assert all(cell == "—" for cell in list(rows["seqft"].values())[1:])  # grid row, no records
    assert "no seqft results: the gap cannot be measured" in page


def test_records_outside_the_grid_are_counted_not_shown(tmp_path: Path) -> None:
    extra = [make_record("avg", 7, 0.99, benchmark="bench-a"),
             make_record("avg", 0, 0.99, benchmark="elsewhere")]
    write(tmp_path, recs=bench_a() + extra, benchmarks=BENCHMARKS[:1])
    page = (tmp_path / "leaderboard.md").read_text()
    assert "2 records outside these benchmarks and seeds are not shown" in page
    assert "elsewhere" not in page.split("\n## Summary")[1]
    assert table(section(page, "bench-a"))[1]["avg"]["Acc"] == "**72.0 ± 2.0 (3)**"


def test_refuses_unknown_families(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown families"):
        write(tmp_path, families={**FAMILIES, "avg": "merging"})


def test_tuned_values_text() -> None:
    recs = [make_record("m", s, 0.5, tuned_values={"lam": lam, "variant": "sequential"})
            for s, lam in enumerate([0.3, 0.3, 0.5])]
    assert tuned_values_text(recs) == "lam=0.3/0.5, variant=sequential"
    assert tuned_values_text([make_record("m", 0, 0.5)]) == ""
    # a value chosen at the edge of its search space is marked
    assert tuned_values_text(recs, {"variant"}) == "lam=0.3/0.5, variant=sequential†"


# ------------------------------------------------------------------------------ tuned: edges

EDGE_NOTE = "- **†** at the edge of its search space"


def test_tuned_values_at_the_edge_are_marked_with_a_footnote(tmp_path: Path) -> None:
    out = tmp_path / "results"
    write(out, edges={("bench-a", "magmax (tuned)"): {"lam"}})
    page = (out / "leaderboard.md").read_text()
    for title in ("Summary", "bench-a"):
        block = section(page, title)
        names = list(table(block)[1])
        assert "magmax (tuned): lam=0.3†" in names and "magmax (tuned): lam=0.3" not in names
        assert EDGE_NOTE in block and "`bench/config/tuned/SUMMARY.md`" in block
    assert EDGE_NOTE not in section(page, "bench-b")  # no tuned row there
    # the header names the tuning summary (every configuration tried and its score); a page
    # outside the repository gets no link climbing through the machine's folders
    header = page.split("\n## ")[0]
    assert "`bench/config/tuned/SUMMARY.md` in the mergecl repository" in header
    assert "](" not in header.split("Tuned rows")[1].split("\n")[0]


def test_a_page_inside_the_repository_links_the_tuning_summary() -> None:
    import shutil
    import tempfile

    from mergecl.bench.config.tuned import TUNED_DIR
    from mergecl.bench.orchestration.provenance import REPOSITORY

    scratch = REPOSITORY / ".mergecl-cache"
    scratch.mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=scratch)) / "results"
    try:
        write(out)
        header = (out / "leaderboard.md").read_text().split("\n## ")[0]
        link = re.search(r"\[bench/config/tuned/SUMMARY\.md\]\(([^)]+)\)", header).group(1)
        assert (out / link).resolve() == (TUNED_DIR / "SUMMARY.md").resolve()
        assert not link.startswith("/") and link.count("../") == 3  # .mergecl-cache/tmpX/results
    finally:
        shutil.rmtree(out.parent)


def test_no_edge_no_mark_and_no_footnote(page: str) -> None:
    assert "†" not in page.split("\n## ", 1)[1]
    assert EDGE_NOTE not in page
    assert "`bench/config/tuned/SUMMARY.md` in the mergecl repository" in page.split("\n## ")[0]  # named


def test_no_tuned_rows_no_tuning_link(tmp_path: Path) -> None:
    write(tmp_path, recs=[r for r in records() if r.variant != "tuned"])
    assert "SUMMARY.md" not in (tmp_path / "leaderboard.md").read_text()


def test_tuned_edges_come_from_the_shipped_file_of_the_same_tuning(monkeypatch) -> None:
    from mergecl.bench.config import tuned

    choice = tuned.TunedChoice(params={"lam": 1.5}, tuning_hash="h-shipped", score=0.8,
                               metric="acc", edge=["lam"], protocol="p")
    shipped = {"bench-a": tuned.TunedFile(benchmark="bench-a", generated_by="mergecl tune --all",
                                          choices={"magmax": choice})}
    monkeypatch.setattr(tuned, "load_tuned", shipped.get)
    same = [make_record("magmax", s, 0.6, benchmark="bench-a", tuned_values={"lam": 1.5},
                        tuning_hash="h-shipped") for s in range(2)]
    other = make_record("magmax", 0, 0.6, benchmark="bench-b", tuned_values={"lam": 1.5},
                        tuning_hash="h-shipped")  # no tuned file for bench-b
    stale = make_record("magmax", 0, 0.6, benchmark="bench-a", tuned_values={"lam": 1.5},
                        tuning_hash="h-older")  # values of another tuning: not described
    assert tuned_edges(same + [other, make_record("magmax", 0, 0.5, benchmark="bench-a")]) == {
        ("bench-a", "magmax (tuned)"): frozenset({"lam"})}
    assert tuned_edges([stale]) == {}


def test_a_headline_without_values_leaves_no_empty_summary_column(tmp_path: Path) -> None:
    no_til = bench_a()  # judged on TIL Acc, which none of these records has
    benchmark = BENCHMARKS[0].model_copy(update={"headline": "til_acc"})
    write(tmp_path, recs=no_til, benchmarks=[benchmark])
    page = (tmp_path / "leaderboard.md").read_text()
    headers, rows = table(section(page, "Summary"))
    assert headers == ["method", "mean rank"]  # no bench-a (TIL Acc) column, no ranks
    assert rows["joint (upper bound)"]["mean rank"] == "unranked (upper bound)"
    _, verdicts = table(section(page, "Does each benchmark discriminate?"))
    assert verdicts["bench-a"]["upper − lower (points)"] == "not measurable"
    assert verdicts["bench-a"]["merge rows differing"] == "0 of 0"


def test_no_records_at_all(tmp_path: Path) -> None:
    paths = write(tmp_path, recs=[], wall_s=None)
    page = (tmp_path / "leaderboard.md").read_text()
    assert "Records: 0 ok, 0 failed, 30 missing" in page
    assert "No records for this benchmark." in section(page, "bench-a")
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.tex",
                                       "pnm-mini.md", "magmax-mini.md"]


def test_best_mean_rank_needs_every_benchmark(tmp_path: Path) -> None:
    # the tuned row (84 %) is first on bench-a, its only benchmark: mean rank 1.00, not bold;
    # over both benchmarks avg (2, 2) and magmax (3, 1) tie for the best mean rank, 2.00
    recs = [r.model_copy(update={"tuned_values": {"lam": 0.9}, "metrics": r.metrics.model_copy(
        update={"acc": r.metrics.acc + 0.2})}) if r.variant == "tuned" else r for r in records()]
    write(tmp_path, recs=recs)
    _, rows = table(section((tmp_path / "leaderboard.md").read_text(), "Summary"))
    assert rows["magmax (tuned): lam=0.9"]["mean rank"] == "1.00 (1 of 2 benchmarks)"
    assert rows["avg"]["mean rank"] == rows["magmax"]["mean rank"] == "**2.00**"


def test_stale_plots_are_not_linked(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "coefficient_traces_bench-b.png").write_bytes(b"old")
    write(tmp_path, recs=bench_b(), benchmarks=BENCHMARKS[1:])
    links = section((tmp_path / "leaderboard.md").read_text(), "bench-b")
    assert "coefficient_traces" not in links and "accuracy_curves_bench-b.png" in links


def test_a_lora_tier_is_compared_and_assessed_against_its_own_bounds(tmp_path):
    records = []

    def add(label, values, parameterisation="full", **fields):
        for seed, value in enumerate(values):
            records.append(make_record(label, seed, value, benchmark="bench-a", acc_matrix=MATRIX,
                                       parameterisation=parameterisation, **fields))

    add("seqft", [0.50, 0.52, 0.54])
    add("avg", [0.70, 0.72, 0.74])                                  # +20 vs seqft
    add("joint", [0.90, 0.92, 0.94], upper_bound=True)
    add("seqft-lora", [0.40, 0.41, 0.42], "lora")
    add("avg-lora", [0.45, 0.46, 0.47], "lora")                     # +5 vs seqft-lora
    add("joint-lora", [0.60, 0.62, 0.64], "lora", upper_bound=True)  # gap 21
    families = {**FAMILIES, "seqft-lora": "lower-bound", "avg-lora": "merge", "joint-lora": "upper-bound"}
    order = ["seqft", "avg", "joint", "seqft-lora", "avg-lora", "joint-lora"]
    expected = [("bench-a", label, seed) for label in order for seed in range(3)]
    write_leaderboard(records, tmp_path, title="t", command="c", benchmarks=BENCHMARKS[:1],
                      row_order=order, families=families, wall_s=None, cpu_model=None,
                      seeds=[0, 1, 2], expected=expected)
    page = (tmp_path / "leaderboard.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| ")}
    assert "Δ Acc vs seqft (LoRA rows: vs seqft-lora)" in page
    assert "+5.0 [+5.0, +5.0]" in rows["avg-lora"] and "+20.0 [+20.0, +20.0]" in rows["avg"]
    discrimination = next(line for line in page.splitlines() if line.startswith("| bench-a (LoRA)"))
    assert "joint-lora − seqft-lora = +21.0" in discrimination and "1 of 1" in discrimination
    assert "Records: 18 ok, 0 failed, 0 missing" in page

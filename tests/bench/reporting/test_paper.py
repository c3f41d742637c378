"""The papers' tables: reported numbers, cells, orderings, and the paper configs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from fake_records import make_record
from mergecl.bench.reporting.paper import (
    MINI_BENCHMARKS,
    MINI_TABLES,
    PAPER_TABLES,
    REPORTED,
    aggregate,
    mini_table,
    ordering_report,
    paper_table,
    related_table,
)

METHODS_MD = Path(__file__).resolve().parents[3] / "docs" / "methods.md"  # the reference the code cites
CONFIG_DIR = Path(__file__).resolve().parents[3] / "bench" / "config" / "grids" / "paper"


def rec(label, benchmark, seed, acc, aaa=None, status="ok", finished_at="2026-01-01T00:00:00Z",
        **fields):
    return make_record(label, seed, acc, benchmark=benchmark, method=label.split("-")[0],
                       status=status, aaa=aaa, finished_at=finished_at, **fields)


# ------------------------------------------------------------------------------ reported data


def _methods_md() -> str:
    return METHODS_MD.read_text()  # in the repository: never skipped


def test_pnm_reported_table_equals_methods_md():
    text = _methods_md()
    section = text.split("## Reported numbers", 1)[1]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "method"
    table = REPORTED["pnm"]
    assert tuple(header[1:]) == table.columns
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert tuple(r[0] for r in rows) == table.rows
    for row in rows:
        for column, cell in zip(header[1:], row[1:]):
            assert table.value(row[0], column) == pytest.approx(float(cell), abs=1e-9), (row[0], column)
    assert "secondary reading" in table.source and "2505.22389" in table.source


def test_other_reported_figures_equal_methods_md():
    text = " ".join(_methods_md().split())
    cl = re.search(r"ImageNet-R/10 against CL methods \(Acc / AAA\): (.*?)\. ", text).group(1)
    pairs = re.findall(r"([A-Za-z][A-Za-z0-9&\- ]*?) (\d+\.\d+) / (\d+\.\d+)", cl)
    table = REPORTED["pnm-inr10"]
    assert tuple(name.strip() for name, _, _ in pairs) == table.rows
    for name, acc, aaa in pairs:
        assert table.value(name.strip(), "Acc") == float(acc)
        assert table.value(name.strip(), "AAA") == float(aaa)

    trm = re.search(r"CIFAR-100/10 (\d+\.\d+), CIFAR-100/20 (\d+\.\d+), Cars/10 (\d+\.\d+)", text).groups()
    assert [REPORTED["trm"].value("TRM", c) for c in ("C100-10", "C100-20", "Cars-10")] == [float(v) for v in trm]
    assert REPORTED["trm"].provenance == "aggregator, unchecked"

    c100 = re.search(r"CIFAR-100 5/10/20 tasks (\d+\.\d+)/(\d+\.\d+)/(\d+\.\d+)", text).groups()
    inr = re.search(r"ImageNet-R 10/20 tasks (\d+\.\d+)/(\d+\.\d+)", text).groups()
    became = REPORTED["became"]
    assert [became.value("BECAME", c) for c in ("C100-5", "C100-10", "C100-20", "INR-10", "INR-20")] == [
        float(v) for v in c100 + inr]
    assert became.provenance == "citing papers"


def test_magmax_numbers_are_never_invented():
    table = REPORTED["magmax"]
    assert table.rows == ("MagMax", "Average", "Random mix", "TIES", "SeqFT")
    assert table.columns == tuple(f"{d}-{n}" for d in ("C100", "INR") for n in (5, 10, 20, 50))
    assert all(table.value(r, c) is None for r in table.rows for c in table.columns)
    out = paper_table("magmax", [])
    body = [ln for ln in out.splitlines() if ln.startswith("| ") and "method" not in ln]
    assert len(body) == 5
    for line in body:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))][2:]
        assert all(c == r"n/r \| —" for c in cells), line
    assert "the original uses a frozen CLIP text head; mergecl uses a linear head" in out


def test_layout_labels_and_benchmarks():
    pnm, magmax = PAPER_TABLES["pnm"], PAPER_TABLES["magmax"]
    assert [labels[0] for labels in pnm.rows.values()] == [
        "seqft-lora", "avg-lora", "dare-lora", "coma-lora", "pnm-lora", "pnm-mergeonly-lora", "pnm-gauss-lora"]
    assert [b for b, _ in pnm.columns.values()] == [
        "imagenet-r-10", "imagenet-r-20", "imagenet-a-10", "domainnet-5", "cifar100-10", "cub200-10"]
    assert [labels[0] for labels in magmax.rows.values()] == ["magmax", "avg-task-arith", "random-mix", "ties", "seqft"]
    assert [b for b, _ in magmax.columns.values()] == [f"{d}-{n}" for d in ("cifar100", "imagenet-r")
                                                         for n in (5, 10, 20, 50)]
    for paper in ("pnm", "magmax"):
        for row, labels in PAPER_TABLES[paper].rows.items():  # a row shows its own labels only
            assert MINI_TABLES[paper].rows[row] == labels
    assert MINI_TABLES["pnm"].rows["P&M — full FT"] == ("pnm",)  # the label says what ran
    assert all("full FT" in row or all(label.endswith("-lora") for label in labels)
               for row, labels in MINI_TABLES["pnm"].rows.items())
    for paper in ("pnm", "magmax"):
        assert sorted(set(MINI_TABLES[paper].columns.values())) == sorted(
            (b, m) for b in MINI_BENCHMARKS for m in ("acc", "aaa"))


# ------------------------------------------------------------------------------ tables


def test_paper_table_without_records_shows_reported_and_dash():
    out = paper_table("pnm", [])
    assert r"79.95 \| —" in out and r"65.72 \| —" in out and r"74.09 \| —" in out
    assert "± " not in out.split("Cells:")[0]
    assert "via secondary reading" in out
    assert "LoRA-P&M" in out and r"85.29 \| —" in out  # the ImageNet-R/10 comparison list
    text = paper_table("pnm", [], fmt="text")
    assert "79.95 | —" in text
    latex = paper_table("pnm", [], fmt="latex")
    assert r"\begin{tabular}" in latex and r"79.95 \textbar{} ---" in latex and r"P\&M (LoRA)" in latex
    assert all(ln.startswith(("%", "\\", " ")) or not ln for ln in latex.splitlines())


def test_paper_table_with_records_mean_std_over_seeds():
    records = [rec("pnm-lora", "imagenet-r-10", s, a, aaa=a + 0.05) for s, a in enumerate((0.78, 0.785, 0.775))]
    records += [
        rec("pnm-lora", "imagenet-r-10", 3, 0.10, status="failed"),         # failed: ignored
        rec("coma-lora", "cifar100-10", 0, 0.5, finished_at="2026-01-01"),  # superseded by the rerun below
        rec("coma-lora", "cifar100-10", 0, 0.7, finished_at="2026-02-01"),
        rec("pnm-lora", "split-mnist", 0, 0.99),                            # other benchmark: not in table
    ]
    out = paper_table("pnm", records)
    assert r"79.95 \| 78.0 ± 0.5 (3)" in out
    assert r"86.95 \| 70.0 (1)" in out
    assert r"85.29 \| 83.0 ± 0.5 (3)" in out  # AAA in the comparison list
    aaa = paper_table("pnm", records, metric="aaa")
    assert r"n/r \| 83.0 ± 0.5 (3)" in aaa  # the paper's main table reports Acc only


def test_aggregate_uses_sample_std_and_skips_missing_metrics():
    records = [rec("a", "b", s, v) for s, v in enumerate((0.1, 0.2, 0.6))]
    records.append(rec("a", "b", 9, None, status="failed"))
    stat = aggregate(records, "a", "b", "acc")
    values = [10.0, 20.0, 60.0]
    mean = sum(values) / 3
    assert stat.n == 3 and stat.mean == pytest.approx(mean)
    assert stat.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2))
    assert aggregate(records, "a", "b", "aaa") is None
    assert aggregate(records, "zzz", "b") is None


def test_unknown_paper_format_and_metric_refused():
    for call in (lambda: paper_table("became", []), lambda: mini_table("trm", []),
                 lambda: ordering_report("foo", [])):
        with pytest.raises(ValueError, match="accepted: pnm, magmax"):
            call()
    with pytest.raises(ValueError, match="accepted: markdown, latex"):
        paper_table("pnm", [], fmt="html")
    with pytest.raises(ValueError, match="accepted: acc, aaa"):
        paper_table("pnm", [], metric="top5")
    with pytest.raises(ValueError, match="accepted: pnm-inr10, trm, became"):
        related_table("pnm", [])


def test_related_tables_carry_provenance():
    out = related_table("trm", [rec("trm", "cifar100-10", 0, 0.7), rec("trm", "cifar100-10", 1, 0.72)])
    assert r"80.50 \| 71.0 ± 1.4 (2)" in out and r"70.40 \| n/a" in out
    assert "aggregator, unchecked" in out
    assert "citing papers" in related_table("became", [])


def test_mini_table_ours_only():
    records = [rec("magmax", "split-mnist", s, a, aaa=0.9) for s, a in enumerate((0.5, 0.6))]
    out = mini_table("magmax", records)
    assert "split-mnist Acc" in out and "rotated-mnist AAA" in out
    assert "55.0 ± 7.1 (2)" in out and "90.0 ± 0.0 (2)" in out
    assert r"\|" not in out.split("Cells:")[0]  # no reported column
    assert mini_table("pnm", [], fmt="latex").count(r"\\") == 15  # header + 7 LoRA + 7 full-FT rows


# ------------------------------------------------------------------------------ orderings


def _lines(report, benchmark, start):
    return [ln for ln in report if ln.startswith(start) and f" {benchmark}: " in ln]


def test_ordering_report_magmax_claims():
    records = []
    for seed in range(3):
        records += [
            rec("magmax", "split-mnist", seed, 0.90 + 0.001 * seed),
            rec("avg-task-arith", "split-mnist", seed, 0.80 + 0.001 * seed),
            rec("random-mix", "split-mnist", seed, 0.85 + 0.001 * seed),   # contradicts Average > Random mix
            rec("seqft", "split-mnist", seed, 0.895 - 0.1 * (seed - 1)),   # noisy: inconclusive
        ]
    report = ordering_report("magmax", records)
    ok = _lines(report, "split-mnist", "[reproduced]")
    bad = _lines(report, "split-mnist", "[contradicted]")
    unsure = _lines(report, "split-mnist", "[inconclusive]")
    assert any("MagMax > Average" in ln and "+10.00 [+10.00, +10.00] (n=3)" in ln for ln in ok)
    assert any("MagMax > Random mix" in ln for ln in ok)
    assert len(bad) == 1 and "Average > Random mix" in bad[0] and "-5.00" in bad[0]
    assert len(unsure) == 1 and "MagMax > SeqFT" in unsure[0]
    assert len(_lines(report, "split-fmnist", "[missing]")) == 4
    assert ("split-mnist: 2 reproduced, 1 contradicted, 1 inconclusive, 0 missing (of 4 orderings)"
            in report)


def test_ordering_report_pnm_follows_reported_inr10_order():
    reported = REPORTED["pnm"]
    labels = {row: PAPER_TABLES["pnm"].rows[row][0] for row in reported.rows}
    same = [rec(labels[r], "mnist-fmnist", s, reported.value(r, "INR-10") / 100) for r in reported.rows
            for s in (0, 1)]
    report = ordering_report("pnm", same, benchmarks=["mnist-fmnist"])
    assert len(_lines(report, "mnist-fmnist", "[reproduced]")) == 21
    assert "P&M (LoRA) (79.95) > CoMA (79.34)" in report[0]
    reversed_ = [rec(labels[r], "mnist-fmnist", 0, 1 - reported.value(r, "INR-10") / 100) for r in reported.rows]
    report = ordering_report("pnm", reversed_, benchmarks=["mnist-fmnist"])
    lines = _lines(report, "mnist-fmnist", "[inconclusive]")
    assert len(lines) == 21 and all("no interval" in ln for ln in lines)  # one seed: no interval


# ------------------------------------------------------------------------------ configs

from mergecl.bench.config.run_config import RunConfig  # noqa: E402

RUN_FIELDS = set(RunConfig.model_fields)
METHOD_NAMES = {"seqft", "joint", "avg", "coma", "dare", "pnm", "magmax", "ties", "random-mix", "became",
                "trm", "ewc", "lwf", "task-arithmetic"}


def _load(name):
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    assert {"methods", "benchmarks", "seeds", "preset", "set"} <= set(data)
    assert set(data) <= {"methods", "benchmarks", "seeds", "preset", "set", "title"}
    assert data["seeds"] == [0, 1, 2]
    assert set(data["set"]) <= RUN_FIELDS
    for entry in data["methods"]:
        assert set(entry) <= {"label", "method", "set"} and entry["method"] in METHOD_NAMES
        assert set(entry.get("set", {})) <= RUN_FIELDS
    return data


@pytest.mark.parametrize("paper", ["pnm", "magmax"])
def test_configs_match_layouts(paper):
    full, mini = _load(paper), _load(f"{paper}-mini")
    labels = [labels[0] for labels in PAPER_TABLES[paper].rows.values()]
    for data in (full, mini):
        assert [m["label"] for m in data["methods"]] == labels
    assert full["benchmarks"] == [b for b, _ in PAPER_TABLES[paper].columns.values()]
    assert full["preset"] == "paper" and mini["preset"] == "default"
    assert mini["benchmarks"] == list(MINI_BENCHMARKS)
    assert set(mini["set"]) == {"parameterisation"}
    assert [m.get("set") for m in mini["methods"]] == [m.get("set") for m in full["methods"]]


def test_pnm_config_is_the_paper_setup():
    data = _load("pnm")
    s = data["set"]
    assert s["backbone"] == "vit_base_patch16_224.augreg2_in21k_ft_in1k" and s["weights"] == "hf"
    assert (s["parameterisation"], s["lora_rank"], s["lora_targets"]) == ("lora", 10, ["qkv"])
    assert (s["optimizer"], s["lr"], s["head_lr"], s["batch_size"], s["epochs"], s["image_size"]) == (
        "adamw", 1e-3, 1e-2, 256, 10, 224)
    methods = {m["label"]: m for m in data["methods"]}
    assert methods["pnm-lora"]["set"]["params"]["perturbation"] == "task-vector"
    assert methods["pnm-mergeonly-lora"]["set"]["params"]["perturbation"] == "none"
    assert methods["pnm-gauss-lora"]["set"]["params"]["perturbation"] == "gaussian"
    assert _load("pnm-mini")["set"] == {"parameterisation": "lora"}


def test_magmax_config_is_the_paper_setup():
    s = _load("magmax")["set"]
    assert (s["parameterisation"], s["optimizer"], s["lr"], s["weight_decay"], s["batch_size"]) == (
        "full", "adamw", 1e-5, 0.1, 128)
    assert (s["scheduler"], s["warmup_steps"], s["grad_clip"], s["epochs"], s["image_size"]) == (
        "cosine", 500, 1.0, 10, 224)
    methods = {m["label"]: m for m in _load("magmax")["methods"]}
    assert methods["magmax"]["set"]["params"] == {"lam": 0.5, "variant": "sequential"}
    assert methods["avg-task-arith"] == {"label": "avg-task-arith", "method": "task-arithmetic"}


@pytest.mark.parametrize("name", ["pnm", "magmax", "pnm-mini", "magmax-mini"])
def test_paper_configs_expand_into_valid_runs(name):
    """Every run of every paper grid resolves and validates (data presence aside)."""
    from mergecl.bench.config.grid_config import expand_grid, parse_grid
    from mergecl.bench.config.validation import validate_grid

    runs = expand_grid(parse_grid(_load(name)))
    validate_grid(runs, check_data=False)
    assert len(runs) == len(_load(name)["methods"]) * len(_load(name)["benchmarks"]) * 3


def test_mini_pnm_lora_rows_show_only_lora_runs():
    """A full fine-tuning record never appears in a "P&M (LoRA)" cell; it has its own row."""
    records = [rec("pnm", "mnist-fmnist", s, 0.8 + s / 100, aaa=0.9) for s in range(3)]
    table = mini_table("pnm", records)
    lora_row = next(line for line in table.splitlines() if line.startswith("| P&M (LoRA)"))
    full_row = next(line for line in table.splitlines() if line.startswith("| P&M — full FT"))
    assert "81.0 ± 1.0" not in lora_row and "81.0 ± 1.0" in full_row


def test_tuned_records_never_fill_the_papers_rows():
    """The papers' rows are the methods' defaults: a tuned record of the same label is left out."""
    records = [rec("magmax", "split-mnist", s, 0.5) for s in range(2)]
    records += [rec("magmax", "split-mnist", s, 0.9, variant="tuned", base_label="magmax",
                    tuned_values={"lam": 0.3}) for s in range(2)]
    assert aggregate(records, "magmax", "split-mnist").mean == pytest.approx(50.0)
    assert "50.0 ± 0.0 (2)" in mini_table("magmax", records)

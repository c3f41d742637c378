"""The papers' tables: reported numbers beside ours, in the papers' layouts.

* :data:`REPORTED` — every published figure mergecl quotes, as data, each table with its
  source and provenance (secondary reading, aggregator, citing papers). Numbers that are not
  recorded in ``docs/methods.md`` are ``None`` and print as ``n/r``; none is ever filled in here.
* :data:`PAPER_TABLES` — the P&M and MagMax tables: paper row → mergecl method label(s),
  paper column → (mergecl benchmark, metric).
* :func:`paper_table` — the paper's layout, each cell ``reported | ours``.
* :data:`MINI_TABLES`, :func:`mini_table`, :func:`ordering_report` — the same rows on the
  offline benchmarks, where only *orderings* can be compared with the papers.

"Ours" is always measured from run records (:class:`~mergecl.bench.orchestration.records.RunRecord`
of the default variant; tuned records have rows of their own on the leaderboard, not here): the
mean ± sample standard deviation (ddof = 1) over seeds of ``record.metrics.<metric> × 100`` among
records with ``status == "ok"``; one record per seed (the latest ``finished_at`` wins).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.reporting.tables import as_records, seed_points
from tabulate import tabulate

__all__ = [
    "ReportedTable",
    "TableLayout",
    "Stat",
    "REPORTED",
    "PAPER_TABLES",
    "RELATED_TABLES",
    "MINI_TABLES",
    "MINI_BENCHMARKS",
    "METRICS",
    "FORMATS",
    "aggregate",
    "paper_table",
    "related_table",
    "mini_table",
    "ordering_report",
]

METRICS: tuple[str, ...] = ("acc", "aaa", "forgetting", "bwt")
METRIC_NAMES = {"acc": "Acc", "aaa": "AAA", "forgetting": "Forgetting", "bwt": "BWT"}
FORMATS: tuple[str, ...] = ("markdown", "latex", "text")
MINI_BENCHMARKS: tuple[str, ...] = ("mnist-fmnist", "split-mnist", "split-fmnist", "rotated-mnist")
MISSING = "—"
NOT_RECORDED = "n/r"
NOT_IN_HARNESS = "n/a"


# ------------------------------------------------------------------------------ reported data


@dataclass(frozen=True)
class ReportedTable:
    """Published figures (%, as printed) with where they come from."""

    key: str
    title: str
    source: str
    provenance: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    values: Mapping[tuple[str, str], float | None]
    """(row, column) → value; ``None`` = not recorded here (printed ``n/r``)."""
    metric: str = "acc"
    column_metrics: Mapping[str, str] = field(default_factory=dict)

    def value(self, row: str, column: str) -> float | None:
        if row not in self.rows or column not in self.columns:
            raise KeyError(f"{self.key}: no cell ({row!r}, {column!r})")
        return self.values.get((row, column))

    def metric_of(self, column: str) -> str:
        return self.column_metrics.get(column, self.metric)


def _grid(rows: Sequence[str], columns: Sequence[str], data: Sequence[Sequence[float | None]]):
    assert len(rows) == len(data) and all(len(r) == len(columns) for r in data)
    return {(r, c): v for r, line in zip(rows, data) for c, v in zip(columns, line)}


_PNM_ROWS = ("LoRA (SeqFT)", "Model Averaging", "DARE", "CoMA", "P&M (LoRA)",
             "ablation: LoRA-M (merge only)", "ablation: LoRA-M + Gaussian noise")
_PNM_COLUMNS = ("INR-10", "INR-20", "INA-10", "DN*-5", "C100-10", "CUB-10")
_PNM_VALUES = (
    (65.72, 56.35, 44.41, 71.81, 72.58, 64.82),
    (76.90, 74.64, 54.54, 81.84, 87.52, 74.87),
    (75.09, 66.03, 55.87, 80.58, 87.28, 76.57),
    (79.34, 75.60, 53.24, 83.98, 86.95, 74.65),
    (79.95, 76.37, 56.57, 84.71, 88.45, 78.29),
    (78.35, 74.26, 56.16, 81.28, 86.57, 74.98),
    (78.48, 74.13, 49.51, 83.00, 85.83, 74.09),
)
_PNM_CL_ROWS = ("full fine-tuning", "L2P", "CODA-Prompt", "InfLoRA", "SD-LoRA", "LoRA", "LoRA-P&M")
_PNM_CL_VALUES = ((60.57, 72.31), (71.26, 76.13), (74.05, 78.14), (74.75, 80.67), (77.34, 82.04),
                  (65.72, 76.14), (79.95, 85.29))
_MAGMAX_ROWS = ("MagMax", "Average", "Random mix", "TIES", "SeqFT")
_MAGMAX_COLUMNS = ("C100-5", "C100-10", "C100-20", "C100-50", "INR-5", "INR-10", "INR-20", "INR-50")

REPORTED: dict[str, ReportedTable] = {
    t.key: t
    for t in [
        ReportedTable(
            key="pnm",
            title="P&M (Qiu et al., NeurIPS 2025), class-incremental",
            source="P&M paper (arXiv 2505.22389), main results table, via secondary reading "
                   "(docs/methods.md: \"from a secondary reading of the P&M paper\"); not checked against the PDF",
            provenance="secondary reading",
            rows=_PNM_ROWS, columns=_PNM_COLUMNS, values=_grid(_PNM_ROWS, _PNM_COLUMNS, _PNM_VALUES),
        ),
        ReportedTable(
            key="pnm-inr10",
            title="P&M paper, ImageNet-R/10 against CL methods",
            source="P&M paper (arXiv 2505.22389), ImageNet-R/10 comparison with CL methods, via secondary "
                   "reading (docs/methods.md); not checked against the PDF",
            provenance="secondary reading",
            rows=_PNM_CL_ROWS, columns=("Acc", "AAA"),
            values=_grid(_PNM_CL_ROWS, ("Acc", "AAA"), _PNM_CL_VALUES),
            metric="acc", column_metrics={"Acc": "acc", "AAA": "aaa"},
        ),
        ReportedTable(
            key="magmax",
            title="MagMax (Marczak et al., ECCV 2024), class-incremental",
            source="MagMax paper (arXiv 2407.06322): docs/methods.md records its setup but no numbers, so every "
                   "reported cell is n/r (not recorded here) — take them from the paper, never guess",
            provenance="not recorded",
            rows=_MAGMAX_ROWS, columns=_MAGMAX_COLUMNS,
            values={(r, c): None for r in _MAGMAX_ROWS for c in _MAGMAX_COLUMNS},
        ),
        ReportedTable(
            key="trm",
            title="TRM (Wang & Deng, arXiv 2605.08311), figures quoted by an aggregator",
            source="TRM (arXiv 2605.08311) figures quoted by an aggregator (aggregator, unchecked against "
                   "the paper, whose text beyond the abstract is not public)",
            provenance="aggregator, unchecked",
            rows=("TRM",), columns=("C100-10", "C100-20", "Cars-10"),
            values=_grid(("TRM",), ("C100-10", "C100-20", "Cars-10"), ((80.5, 78.6, 70.4),)),
        ),
        ReportedTable(
            key="became",
            title="BECAME (Li et al., ICML 2025) with pretrained models, figures from citing papers",
            source="BECAME (arXiv 2504.02666) with pretrained models, figures from citing papers (not from "
                   "the BECAME paper, which trains from scratch, task-incremental)",
            provenance="citing papers",
            rows=("BECAME",), columns=("C100-5", "C100-10", "C100-20", "INR-10", "INR-20"),
            values=_grid(("BECAME",), ("C100-5", "C100-10", "C100-20", "INR-10", "INR-20"),
                         ((80.9, 75.2, 73.5, 79.8, 78.7),)),
        ),
    ]
}


# ------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class TableLayout:
    """A paper table in mergecl terms."""

    paper: str
    title: str
    reported: str | None
    """Key into :data:`REPORTED` (``None``: ours only)."""
    rows: Mapping[str, tuple[str, ...]]
    """Paper row → mergecl label(s); the first label with ``ok`` records is used; () = not in mergecl."""
    columns: Mapping[str, tuple[str | None, str]]
    """Paper column → (mergecl benchmark or None if not in mergecl, metric)."""
    notes: tuple[str, ...] = ()


_PNM_LABELS = {
    "LoRA (SeqFT)": ("seqft-lora",),
    "Model Averaging": ("avg-lora",),
    "DARE": ("dare-lora",),
    "CoMA": ("coma-lora",),
    "P&M (LoRA)": ("pnm-lora",),
    "ablation: LoRA-M (merge only)": ("pnm-mergeonly-lora",),
    "ablation: LoRA-M + Gaussian noise": ("pnm-gauss-lora",),
}
_PNM_BENCHMARKS = {
    "INR-10": "imagenet-r-10", "INR-20": "imagenet-r-20", "INA-10": "imagenet-a-10",
    "DN*-5": "domainnet-5", "C100-10": "cifar100-10", "CUB-10": "cub200-10",
}
_MAGMAX_LABELS = {
    "MagMax": ("magmax",),
    "Average": ("avg-task-arith",),
    "Random mix": ("random-mix",),
    "TIES": ("ties",),
    "SeqFT": ("seqft",),
}
_MAGMAX_BENCHMARKS = {
    **{f"C100-{n}": f"cifar100-{n}" for n in (5, 10, 20, 50)},
    **{f"INR-{n}": f"imagenet-r-{n}" for n in (5, 10, 20, 50)},
}

_PNM_NOTES = (
    "The paper places LoRA (rank 10) on the attention key and value projections; timm fuses q, k, v in "
    "one `qkv` Linear; pnm.yaml targets `qkv` with lora_kv_only, which keeps the adapter's query rows at zero.",
    "DN*-5: the paper trains 5 epochs per task on DomainNet; pnm.yaml trains 10 on every benchmark "
    "(run domainnet-5 with --set epochs=5 to match). mergecl's domainnet-5 is class-incremental over "
    "all domains' images (bench/paper_datasets.py).",
    "ImageNet-R/-A use a seeded 80/20 split per class (split seed 0), not a shipped file list.",
)
_MAGMAX_NOTES = (
    "the original uses a frozen CLIP text head; mergecl uses a linear head",
    "The original fully fine-tunes the CLIP ViT-B/16 image encoder; magmax.yaml uses timm's "
    "vit_base_patch16_clip_224.openai.",
    "Baselines as in the MagMax code: average (λ = 1/T, label avg-task-arith), random mix (λ = 1), "
    "TIES (top-20 %, λ = 0.55).",
)

PAPER_TABLES: dict[str, TableLayout] = {
    "pnm": TableLayout(
        paper="pnm", title=REPORTED["pnm"].title, reported="pnm", rows=_PNM_LABELS,
        columns={c: (b, "acc") for c, b in _PNM_BENCHMARKS.items()}, notes=_PNM_NOTES),
    "magmax": TableLayout(
        paper="magmax", title=REPORTED["magmax"].title, reported="magmax", rows=_MAGMAX_LABELS,
        columns={c: (b, "acc") for c, b in _MAGMAX_BENCHMARKS.items()}, notes=_MAGMAX_NOTES),
}

RELATED_TABLES: dict[str, TableLayout] = {
    "pnm-inr10": TableLayout(
        paper="pnm", title=REPORTED["pnm-inr10"].title, reported="pnm-inr10",
        rows={"full fine-tuning": ("seqft",), "L2P": (), "CODA-Prompt": (), "InfLoRA": (), "SD-LoRA": (),
              "LoRA": ("seqft-lora",), "LoRA-P&M": ("pnm-lora",)},
        columns={"Acc": ("imagenet-r-10", "acc"), "AAA": ("imagenet-r-10", "aaa")},
        notes=("L2P, CODA-Prompt, InfLoRA and SD-LoRA are not implemented in mergecl (n/a).",)),
    "trm": TableLayout(
        paper="trm", title=REPORTED["trm"].title, reported="trm", rows={"TRM": ("trm",)},
        columns={"C100-10": ("cifar100-10", "acc"), "C100-20": ("cifar100-20", "acc"), "Cars-10": (None, "acc")},
        notes=("mergecl's TRM is a reconstruction from the abstract (docs/methods.md); Cars is not in mergecl.",)),
    "became": TableLayout(
        paper="became", title=REPORTED["became"].title, reported="became", rows={"BECAME": ("became",)},
        columns={"C100-5": ("cifar100-5", "acc"), "C100-10": ("cifar100-10", "acc"),
                 "C100-20": ("cifar100-20", "acc"), "INR-10": ("imagenet-r-10", "acc"),
                 "INR-20": ("imagenet-r-20", "acc")},
        notes=("The citing papers' exact setups are not recorded here; compare with care.",)),
}

_MINI_NOTE = ("Mini edition: the paper's rows on mergecl's offline benchmarks under the default protocol. "
              "The numbers are not comparable with the paper's; compare orderings (ordering_report).")


_SHORT_NAMES = {"pnm": "P&M", "magmax": "MagMax"}


# The P&M paper's rows are LoRA runs; the mini edition shows them from LoRA runs only, and the
# same methods' full fine-tuning runs in rows of their own whose label says so.
_MINI_FULL_FT = {"seqft-lora": "seqft", "avg-lora": "avg", "dare-lora": "dare", "coma-lora": "coma",
                 "pnm-lora": "pnm", "pnm-mergeonly-lora": "pnm-mergeonly", "pnm-gauss-lora": "pnm-gauss"}
_MINI_FULL_FT_NOTE = ("Rows marked \"full FT\" are the same methods in the full fine-tuning "
                      "parameterisation; the paper's rows are LoRA runs.")


def _mini_rows(paper: str) -> dict[str, tuple[str, ...]]:
    rows: dict[str, tuple[str, ...]] = {}
    for row, labels in PAPER_TABLES[paper].rows.items():
        rows[row] = tuple(labels)
        full = tuple(_MINI_FULL_FT[label] for label in labels if label in _MINI_FULL_FT)
        if full:
            rows[f"{row.replace(' (LoRA)', '')} — full FT"] = full
    return rows


def _mini_layout(paper: str) -> TableLayout:
    columns = {f"{b} {METRIC_NAMES[m]}": (b, m) for b in MINI_BENCHMARKS for m in ("acc", "aaa")}
    title = f"{_SHORT_NAMES[paper]} table rows, mini edition (offline benchmarks, ours only)"
    notes = (_MINI_NOTE, _MINI_FULL_FT_NOTE) if paper == "pnm" else (_MINI_NOTE,)
    return TableLayout(paper=paper, title=title, reported=None, rows=_mini_rows(paper),
                       columns=columns, notes=notes)


MINI_TABLES: dict[str, TableLayout] = {p: _mini_layout(p) for p in PAPER_TABLES}


# ------------------------------------------------------------------------------ aggregation


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof = 1; ``None`` for a single seed) in %, over ``n`` seeds."""

    mean: float
    std: float | None
    n: int

    def format(self, digits: int = 1) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f} ({self.n})"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def _label_records(records: Iterable[RunRecord], label: str, benchmark: str) -> list[RunRecord]:
    """The default-variant records of ``label`` on ``benchmark`` (the papers' rows are the
    methods' own defaults; tuned records are never shown here)."""
    return [r for r in records if r.label == label and r.benchmark == benchmark and r.variant == "default"]


def aggregate(records: Iterable[RunRecord], label: str, benchmark: str, metric: str = "acc") -> Stat | None:
    """Mean ± sample std over seeds of ``metrics[metric] × 100`` of the ``ok`` records of
    ``label`` on ``benchmark``; ``None`` when there are none."""
    _check_metric(metric)
    values = list(seed_points(_label_records(as_records(records), label, benchmark), metric).values())
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def _row_stat(records: Sequence[RunRecord], labels: Sequence[str], benchmark: str | None,
              metric: str) -> tuple[Stat | None, str | None]:
    """The first of ``labels`` with records; returns (stat, label used)."""
    if benchmark is None:
        return None, None
    for label in labels:
        stat = aggregate(records, label, benchmark, metric)
        if stat is not None:
            return stat, label
    return None, None


# ------------------------------------------------------------------------------ rendering


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "|": r"\textbar{}", "±": r"$\pm$", "—": "---", "λ": r"$\lambda$", "×": r"$\times$",
          "*": r"$^{*}$", "…": r"\dots{}"}


def _cell_text(text: str, fmt: str) -> str:
    if fmt == "markdown":
        return text.replace("|", r"\|")
    if fmt == "latex":
        return "".join(_LATEX.get(ch, ch) for ch in text)
    return text


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]], fmt: str) -> str:
    tablefmt = {"markdown": "github", "latex": "latex_raw", "text": "simple"}[fmt]
    return tabulate([[_cell_text(c, fmt) for c in row] for row in rows],
                    headers=[_cell_text(h, fmt) for h in headers], tablefmt=tablefmt,
                    disable_numparse=True, stralign="left")


def _prose(lines: Sequence[str], fmt: str) -> list[str]:
    if fmt == "latex":
        return [f"% {line}" for line in lines]
    return list(lines)


def _heading(text: str, fmt: str) -> str:
    return {"markdown": f"### {text}", "latex": f"% {text}", "text": text}[fmt]


def _reported_text(reported: ReportedTable | None, row: str, column: str, metric: str) -> str:
    if reported is None or row not in reported.rows or column not in reported.columns:
        return NOT_RECORDED
    if reported.metric_of(column) != metric:
        return NOT_RECORDED
    value = reported.value(row, column)
    return NOT_RECORDED if value is None else f"{value:.2f}"


def _layout_table(layout: TableLayout, records: Sequence[RunRecord], fmt: str,
                  metric: str | None, with_reported: bool) -> str:
    reported = REPORTED[layout.reported] if (with_reported and layout.reported) else None
    headers = ["method", "mergecl label", *layout.columns]
    body = []
    for row, labels in layout.rows.items():
        line = [row, ", ".join(labels) if labels else NOT_IN_HARNESS]
        for column, (benchmark, column_metric) in layout.columns.items():
            m = metric or column_metric
            if not labels or benchmark is None:
                ours = NOT_IN_HARNESS
            else:
                stat, _ = _row_stat(records, labels, benchmark, m)
                ours = stat.format() if stat else MISSING
            line.append(f"{_reported_text(reported, row, column, m)} | {ours}" if with_reported else ours)
        body.append(line)
    return _render(headers, body, fmt)


def _legend(with_reported: bool) -> str:
    ours = ("ours = mean ± sample std over seeds (number of seeds), %, from records with status \"ok\"; "
            f"\"{MISSING}\" = no record; \"{NOT_IN_HARNESS}\" = not in mergecl")
    if with_reported:
        return f"Cells: reported | ours. {ours}; \"{NOT_RECORDED}\" = not recorded here."
    return f"Cells: {ours}."


def _block(layout: TableLayout, records: Sequence[RunRecord], fmt: str, metric: str | None) -> list[str]:
    reported = REPORTED[layout.reported] if layout.reported else None
    metric_text = METRIC_NAMES[metric] if metric else " / ".join(
        dict.fromkeys(METRIC_NAMES[m] for _, m in layout.columns.values()))
    lines = [_heading(f"{layout.title} ({metric_text}, %)", fmt), "",
             _layout_table(layout, records, fmt, metric, with_reported=reported is not None), ""]
    prose = [_legend(reported is not None)]
    if reported is not None:
        prose.append(f"Reported: {reported.source} [{reported.provenance}].")
    prose += [f"Note: {note}" for note in layout.notes]
    return lines + _prose(prose, fmt)


def _unknown(kind: str, name: str, accepted: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; accepted: {', '.join(accepted)}")


def paper_table(paper: str, records: Iterable[RunRecord] = (), fmt: str = "markdown",
                metric: str = "acc") -> str:
    """The paper's table (``pnm`` or ``magmax``), each cell ``reported | ours``, then sources and notes.

    For P&M, the paper's ImageNet-R/10 comparison with CL methods follows the main table.
    ``metric`` other than ``acc`` shows ours for that metric and ``n/r`` where the paper's
    number is for another metric.
    """
    if paper not in PAPER_TABLES:
        raise _unknown("paper", paper, PAPER_TABLES)
    _check_fmt(fmt)
    _check_metric(metric)
    records = as_records(records)
    lines = _block(PAPER_TABLES[paper], records, fmt, metric)
    if paper == "pnm":
        lines += [""] + _block(RELATED_TABLES["pnm-inr10"], records, fmt, None)
    return "\n".join(lines) + "\n"


def related_table(key: str, records: Iterable[RunRecord] = (), fmt: str = "markdown") -> str:
    """Other reported figures (``pnm-inr10``, ``trm``, ``became``) beside ours, with provenance."""
    if key not in RELATED_TABLES:
        raise _unknown("table", key, RELATED_TABLES)
    _check_fmt(fmt)
    return "\n".join(_block(RELATED_TABLES[key], as_records(records), fmt, None)) + "\n"


def mini_table(paper: str, records: Iterable[RunRecord] = (), fmt: str = "markdown") -> str:
    """The paper's rows on the offline benchmarks, Acc and AAA, ours only (mean ± std (n))."""
    if paper not in MINI_TABLES:
        raise _unknown("paper", paper, MINI_TABLES)
    _check_fmt(fmt)
    return "\n".join(_block(MINI_TABLES[paper], as_records(records), fmt, None)) + "\n"


# ------------------------------------------------------------------------------ orderings


_MAGMAX_CLAIM = ("MagMax paper's claim (qualitative; its numbers are not recorded here): "
                 "MagMax > Average > Random mix, and MagMax > SeqFT")


def _claimed_pairs(paper: str) -> tuple[list[tuple[str, str]], str]:
    """(better row, worse row) pairs whose order the paper reports, and where the order comes from."""
    if paper == "pnm":
        reported = REPORTED["pnm"]
        column = "INR-10"
        ranked = sorted(reported.rows, key=lambda r: -(reported.value(r, column) or -math.inf))
        pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]
                 if reported.value(a, column) != reported.value(b, column)]
        order = " > ".join(f"{r} ({reported.value(r, column):.2f})" for r in ranked)
        return pairs, f"P&M paper's {column} order: {order} [{reported.provenance}]"
    pairs = [("MagMax", "Average"), ("Average", "Random mix"), ("MagMax", "Random mix"), ("MagMax", "SeqFT")]
    return pairs, _MAGMAX_CLAIM


def _seed_values(records: Sequence[RunRecord], labels: Sequence[str], benchmark: str,
                 metric: str) -> tuple[dict[int, float], str | None]:
    """{seed: metric × 100} of the first of ``labels`` with ``ok`` records (newest per seed)."""
    for label in labels:
        values = seed_points(_label_records(records, label, benchmark), metric)
        if values:
            return values, label
    return {}, None


VERDICTS = ("reproduced", "contradicted", "inconclusive")


def ordering_report(paper: str, records: Iterable[RunRecord], metric: str = "acc",
                    benchmarks: Sequence[str] = MINI_BENCHMARKS, rows: str = "paper") -> list[str]:
    """For every pair of rows the paper orders, whether our records reproduce that order.

    One line per (benchmark, pair), with a verdict from the paired difference over seeds
    (:mod:`mergecl.bench.reporting.stats`): ``[reproduced]`` (the 95 % interval of
    better − worse lies above 0), ``[contradicted]`` (below 0), ``[inconclusive]`` (it contains
    0, or fewer than two shared seeds), or ``[missing]``. Ends with one count line per
    benchmark. Everything is measured from ``records``.
    """
    from mergecl.bench.reporting.stats import INTERVAL_METHOD, paired_difference

    if paper not in MINI_TABLES:
        raise _unknown("paper", paper, MINI_TABLES)
    _check_metric(metric)
    records = as_records(records)
    layout = MINI_TABLES[paper]
    pairs, origin = _claimed_pairs(paper)
    if rows not in ("paper", "full-ft"):
        raise ValueError(f"rows must be paper or full-ft, not {rows!r}")
    row_labels = dict(layout.rows)
    if rows == "full-ft":  # each paper row by its method's full fine-tuning twin
        row_labels = {row: tuple(_MINI_FULL_FT.get(label, label) for label in labels)
                      for row, labels in layout.rows.items()}
        origin += " — compared on the full fine-tuning runs of the same methods"
    lines = [f"Ordering check ({paper}, {METRIC_NAMES[metric]}): {origin}.",
             f"Measured on mergecl records; verdicts from the {INTERVAL_METHOD} of better − worse."]
    summaries = []
    for benchmark in benchmarks:
        counts = dict.fromkeys((*VERDICTS, "missing"), 0)
        for better, worse in pairs:
            va, la = _seed_values(records, row_labels[better], benchmark, metric)
            vb, lb = _seed_values(records, row_labels[worse], benchmark, metric)
            claim = f"{better} > {worse}"
            difference = paired_difference(va, vb) if va and vb else None
            if difference is None:
                absent = [", ".join(row_labels[r]) for r, v in ((better, va), (worse, vb)) if not v]
                why = f"no ok records for {' and '.join(absent)}" if absent else "no shared seeds"
                lines.append(f"[missing] {benchmark}: {claim} — {why}")
                counts["missing"] += 1
                continue
            verdict = difference.verdict()
            counts[verdict] += 1
            lines.append(f"[{verdict}] {benchmark}: {claim} — ours {la} vs {lb}: paired difference "
                         f"{difference.format(2)} points")
        summaries.append(f"{benchmark}: {counts['reproduced']} reproduced, {counts['contradicted']} "
                         f"contradicted, {counts['inconclusive']} inconclusive, {counts['missing']} "
                         f"missing (of {len(pairs)} orderings)")
    return lines + ["Summary:"] + summaries

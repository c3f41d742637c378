"""The leaderboard page: ``leaderboard.md`` (+ ``.csv``, ``.tex``), its plots and the paper mini tables.

:func:`write_leaderboard` turns the run records of one grid into

* ``leaderboard.md`` — header (command, date, git revisions, library versions, seeds, record
  counts, wall time, statistics method, notes); ``## Summary`` (headline metric per benchmark
  and mean rank); ``## Does each benchmark discriminate?`` (:mod:`.report`); one section per
  benchmark (its plots and one table: Acc, AAA, Forgetting, BWT, TIL Acc, paired differences
  to the lower bound and to the best row); failed and missing runs;
* ``leaderboard.csv`` — every number of the page, long format (one number per line);
* ``leaderboard.tex`` — the summary and per-benchmark tables (booktabs);
* ``plots/`` (:func:`.plots.plot_all`) and ``paper/pnm-mini.md``, ``paper/magmax-mini.md``.

Rows: the default rows in ``row_order`` (rows with records but not listed follow,
alphabetically), each tuned row (``record.variant == "tuned"``, ``"<base label> (tuned)"``,
with its tuned values) right under its default row, upper-bound rows last (marked, never
ranked or bold). Every number is computed from the records.

A tuned value chosen at the edge of its search space (the shipped tuned file's ``edge``,
:mod:`mergecl.bench.config.tuned`, for the tuning record the row's records name) is marked
:data:`EDGE_MARK`, with a footnote under the table; when there are tuned rows the header links
``bench/config/tuned/SUMMARY.md`` (every configuration tuning evaluated, with its score).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import atomic_write_text
from mergecl.bench.reporting import paper, plots, report
from mergecl.bench.reporting.stats import INTERVAL_METHOD, PairedDifference
from mergecl.bench.reporting.tables import (
    LOWER_IS_BETTER,
    METRIC_TITLES,
    MISSING,
    TUNED_SUFFIX,
    UPPER_BOUND_SUFFIX,
    as_records,
    cell_stats,
    order_rows,
    paired_points,
    render_rows,
    row_name,
)
from pydantic import BaseModel, ConfigDict

Family = Literal["merge", "regulariser", "lower-bound", "upper-bound"]
FAMILIES: tuple[str, ...] = get_args(Family)
BENCHMARK_METRICS: tuple[str, ...] = ("acc", "aaa", "forgetting", "bwt", "til_acc")
"""The metric columns of a benchmark's table (a column without any value is dropped)."""
PLOT_KINDS: tuple[tuple[str, str], ...] = (
    ("accuracy_curves", "accuracy curves"), ("accuracy_heatmaps", "accuracy matrices"),
    ("coefficient_traces", "merge coefficients"))
PAPERS: tuple[str, ...] = ("pnm", "magmax")
EDGE_MARK = "†"
"""Marks a tuned value chosen at the edge of its search space (the best may lie beyond it)."""
TUNED_SUMMARY_PATH = "bench/config/tuned/SUMMARY.md"
REFERENCE = "reference"
BEST = "best"
UNRANKED = "unranked"


class BenchmarkSummary(BaseModel):
    """What the page says about a benchmark; ``headline`` is the metric it is judged on:
    class-incremental (or domain-incremental) Acc, or task-incremental Acc (``til_acc``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scenario: Literal["class-incremental", "domain-incremental"]
    headline: Literal["acc", "til_acc"]
    description: str
    n_experiences: int


# ------------------------------------------------------------------------------ numbers


@dataclass(frozen=True)
class _Number:
    section: str
    benchmark: str
    row: str
    quantity: str
    statistic: str
    value: float
    unit: str


class _Numbers:
    """Every number the page shows, in the units it shows them, unrounded (→ the CSV)."""

    def __init__(self) -> None:
        self.items: list[_Number] = []

    def add(self, section: str, benchmark: str, row: str, quantity: str, statistic: str,
            value: float | int | None, unit: str) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.items.append(_Number(section, benchmark, row, quantity, statistic,
                                      round(float(value), 6), unit))

    def cell(self, section: str, benchmark: str, row: str, metric: str, records: Sequence[RunRecord]) -> str:
        """The display text of one metric cell; the numbers it shows are recorded."""
        stats = cell_stats(records, metric)
        text = stats.format()
        if text == MISSING:
            return text
        unit = "%" if metric in ("acc", "aaa", "til_acc") else "points"
        if stats.n:
            self.add(section, benchmark, row, metric, "mean", 100 * stats.mean, unit)
            self.add(section, benchmark, row, metric, "std", 100 * stats.std, unit)
        self.add(section, benchmark, row, metric, "n", stats.n, "seeds")
        self.add(section, benchmark, row, metric, "n_failed", stats.n_failed, "seeds")
        return text

    def difference(self, benchmark: str, row: str, quantity: str,
                   difference: PairedDifference | None) -> str:
        if difference is None:
            return MISSING
        for statistic in ("mean", "low", "high"):
            value = getattr(difference, statistic)
            self.add("benchmark", benchmark, row, quantity, statistic,
                     value if math.isfinite(value) else None, "points")
        self.add("benchmark", benchmark, row, quantity, "n", difference.n, "seeds")
        return difference.format()

    def csv(self) -> str:
        frame = pd.DataFrame([item.__dict__ for item in self.items],
                             columns=list(_Number.__dataclass_fields__))
        return frame.to_csv(index=False)


# ------------------------------------------------------------------------------ rows

Table = tuple[list[str], list[list[str]], set[tuple[int, int]]]
"""Headers, rows of display strings, and the (row, column) cells shown in bold."""


def _without_empty_columns(headers: list[str], body: list[list[str]],
                           bold: set[tuple[int, int]]) -> Table:
    """The table without the columns (after the first) where every cell is "—"."""
    keep = [0] + [j for j in range(1, len(headers)) if any(row[j] != MISSING for row in body)]
    position = {j: k for k, j in enumerate(keep)}
    return ([headers[j] for j in keep], [[row[j] for j in keep] for row in body],
            {(i, position[j]) for i, j in bold if j in position})



@dataclass(frozen=True)
class _Row:
    name: str
    tuned: bool
    family: str | None
    upper: bool

    def display(self, values: str = "") -> str:
        text = self.name + (UPPER_BOUND_SUFFIX if self.upper else "")
        return f"{text}: {values}" if values else text


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def tuned_values_text(records: Iterable[RunRecord], edge: Collection[str] = ()) -> str:
    """``"lam=0.3, variant=sequential"`` from the records' ``tuned_values`` (a key whose value
    differs between the records lists its values: ``"lam=0.3/0.5"``); a key in ``edge`` (chosen
    at the edge of its search space) is marked :data:`EDGE_MARK`: ``"lam=1.5†"``."""
    values: dict[str, list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.seed):
        for key, value in sorted((record.tuned_values or {}).items()):
            text = _value_text(value)
            if text not in values[key]:
                values[key].append(text)
    return ", ".join(f"{key}={'/'.join(texts)}{EDGE_MARK if key in edge else ''}"
                     for key, texts in values.items())


def tuned_edges(records: Iterable[RunRecord]) -> dict[tuple[str, str], frozenset[str]]:
    """{(benchmark, row name): the tuned parameters chosen at the edge of their search space},
    from the shipped tuned files (``bench/config/tuned/<benchmark>.yaml``). Only a tuned record
    whose ``tuning_hash`` is the shipped choice's is marked: values from another tuning are not
    described by the shipped file."""
    from mergecl.bench.config import tuned

    shipped: dict[str, Any] = {}
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        if record.variant != "tuned" or not record.tuning_hash:
            continue
        if record.benchmark not in shipped:
            shipped[record.benchmark] = tuned.load_tuned(record.benchmark)
        file = shipped[record.benchmark]
        choice = file.choices.get(record.base_label or "") if file is not None else None
        if choice is not None and choice.tuning_hash == record.tuning_hash:
            edges[(record.benchmark, row_name(record))].update(choice.edge)
    return {key: frozenset(names) for key, names in edges.items() if names}


def edge_footnote() -> str:
    """The footnote under a table with a value marked :data:`EDGE_MARK` (a ``- **`` line, so
    that the README's copy of the summary table carries it too)."""
    return (f"- **{EDGE_MARK}** at the edge of its search space: the best value may lie beyond "
            f"the values tried (every configuration tried and its validation score: "
            f"`{TUNED_SUMMARY_PATH}`).")


# ------------------------------------------------------------------------------ the page


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt_mean_rank(mean: float, k: int, total: int) -> str:
    return f"{mean:.2f}" + (f" ({k} of {total} benchmarks)" if k < total else "")


class _Page:
    def __init__(self, records: list[RunRecord], *, benchmarks: Sequence[BenchmarkSummary],
                 row_order: Sequence[str], families: Mapping[str, str], seeds: Sequence[int],
                 plots: Sequence[Path], expected: Sequence[tuple[str, str, int]] | None = None,
                 edges: Mapping[tuple[str, str], Collection[str]] | None = None) -> None:
        self.records = records
        self.edges = dict(edges or {})
        self.marked: set[str] = set()  # the tables (by title) where a value is marked at an edge
        self.summary_link: str | None = TUNED_SUMMARY_PATH  # from the page to it: set by write_leaderboard
        self.expected = list(expected) if expected is not None else None
        self.benchmarks = list(benchmarks)
        self.row_order = list(row_order)
        self.families = families
        self.seeds = list(seeds)
        self.plots = {path.name: path for path in plots}
        self.numbers = _Numbers()
        self.cells: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        for record in records:
            self.cells[(row_name(record), record.benchmark)].append(record)
        names = {row_name(r) for r in records} | set(self.row_order)
        upper = {name for name in names if self._family(name) == "upper-bound"}
        upper |= {row_name(r) for r in records if r.upper_bound}
        self.rows = [_Row(name, name.endswith(TUNED_SUFFIX), self._family(name), name in upper)
                     for name in order_rows(names, upper, self.row_order)]
        self.lower = next((r.name for r in self.rows if r.family == "lower-bound" and not r.tuned),
                          "seqft")
        self.upper = next((r.name for r in self.rows if r.upper), "joint")
        self.tier = {row_name(r): r.parameterisation for r in records}

    def lower_of(self, row: _Row) -> str:
        """The row a row's Δ is taken against: the lower bound of its own parameterisation."""
        tier = self.tier.get(row.name, "full")
        if tier == "full":
            return self.lower
        return report.tier_bounds(self.records, tier, self.families, self.lower, self.upper)[0]

    def tier_title(self, name: str) -> str:
        tier = self.tier.get(name, "full")
        return {"lora": "LoRA"}.get(tier, tier)

    def _family(self, name: str) -> str | None:
        return self.families.get(name.removesuffix(TUNED_SUFFIX))

    def runs(self, row: _Row, benchmark: str) -> list[RunRecord]:
        return self.cells.get((row.name, benchmark), [])

    def values_text(self, row: _Row, benchmark: str, table: str) -> str:
        """A tuned row's values on ``benchmark``, edge values marked (noted for ``table``)."""
        edge = self.edges.get((benchmark, row.name), frozenset())
        text = tuned_values_text(self.runs(row, benchmark), edge)
        if EDGE_MARK in text:
            self.marked.add(table)
        return text

    # ---------------------------------------------------------------- header

    def expected_missing(self) -> list[tuple[str, str, int]]:
        """(benchmark, row, seed) of the grid without a record: every default row of
        ``row_order`` × benchmark × seed, and the seeds of a tuned row on a benchmark where it
        has records."""
        present = {(r.benchmark, row_name(r), r.seed) for r in self.records}
        if self.expected is not None:
            expected = [key for key in self.expected if not key[1].endswith(TUNED_SUFFIX)]
        else:
            expected = [(b.name, label, seed) for b in self.benchmarks for label in self.row_order
                        for seed in self.seeds]
        expected += [(b.name, row.name, seed) for b in self.benchmarks for row in self.rows
                     if row.tuned and self.runs(row, b.name) for seed in self.seeds]
        return [key for key in expected if key not in present]

    def header(self, *, title: str, command: str, wall_s: float | None, cpu_model: str | None,
               notes: Sequence[str], dropped: int) -> list[str]:
        add = self.numbers.add
        ok = sum(r.ok for r in self.records)
        failed = len(self.records) - ok
        missing = len(self.expected_missing())
        for quantity, value in (("records_ok", ok), ("records_failed", failed),
                                ("records_missing", missing), ("seeds", len(self.seeds))):
            add("header", "", "", quantity, "count", value, "count")
        revisions = Counter(r.git_rev or "unrecorded" for r in self.records)
        if not revisions:
            git = "Git revision: — (no records)."
        elif len(revisions) == 1:
            git = f"Git revision: `{next(iter(revisions))}` (all {len(self.records)} records)."
        else:
            git = (f"Git revisions: **{len(revisions)} different** — the records come from several "
                   "code versions: " + ", ".join(f"`{rev}` ({n} records)"
                                                 for rev, n in revisions.most_common()) + ".")
        versions: dict[str, list[str]] = defaultdict(list)
        for record in self.records:
            for library, version in record.versions.items():
                if version not in versions[library]:
                    versions[library].append(version)
        libraries = ", ".join(
            f"{library} {' / '.join(found)}" + (" (differ between records)" if len(found) > 1 else "")
            for library, found in versions.items()) or "not recorded"
        run_s = sum(float(r.timings.total_s or 0.0) for r in self.records)
        add("header", "", "", "sum_of_run_times", "value", run_s / 60, "min")
        if wall_s is not None:
            add("header", "", "", "wall_time", "value", wall_s / 60, "min")
            wall = (f"Wall time: {wall_s / 60:.1f} min on {cpu_model or 'an unrecorded CPU'} "
                    f"(this invocation); the runs' own times sum to {run_s / 60:.1f} min.")
        else:
            wall = ("Wall time: none — tables from existing records (no runs in this invocation); "
                    f"the runs' own times sum to {run_s / 60:.1f} min.")
        grid = len(self.row_order) * len(self.benchmarks) * len(self.seeds)
        shape = (f"{len(self.row_order)} rows × {len(self.benchmarks)} benchmarks × {len(self.seeds)} "
                 f"seeds = {grid} runs")
        if self.expected is not None and len(self.expected) != grid:
            shape = (f"{len(self.row_order)} rows on {len(self.benchmarks)} benchmarks (some rows on "
                     f"some benchmarks only) × {len(self.seeds)} seeds = {len(self.expected)} runs")
        lines = [
            f"# {title}", "",
            f"Generated by `{command}` on {_dt.date.today().isoformat()}.", "",
            f"- {git}",
            f"- Libraries: {libraries}.",
            f"- Seeds: {', '.join(map(str, self.seeds))} ({len(self.seeds)} seeds).",
            f"- Records: {ok} ok, {failed} failed, {missing} missing (the grid: {shape}, plus "
            "the seeds of tuned rows)"
            + (f"; {dropped} records outside these benchmarks and seeds are not shown." if dropped
               else "."),
            f"- {wall}",
            f"- Paired statistics: {INTERVAL_METHOD}. A Δ cell is the mean paired difference "
            "(points) over the seeds both rows have, [95 % interval], (n seeds); one shared seed "
            "gives no interval.",
            "- Cells: mean ± sample std over seeds (number of seeds), in %; Forgetting and BWT in "
            "percentage points; \"k failed\" counts failed seeds; — = no result or the metric does "
            "not exist for the row. Best continual value per column in bold; upper-bound rows are "
            "shown, never ranked or bold.",
        ]
        if any(row.tuned and any(self.runs(row, b.name) for b in self.benchmarks)
               for row in self.rows):
            lines.append(
                "- Tuned rows (`<label> (tuned): values`): hyper-parameters selected on the "
                "validation split by `mergecl tune`; every configuration evaluated and its "
                f"validation score: {self._summary_reference()}. {EDGE_MARK}: "
                "chosen at the edge of its search space.")
        lines += [f"- Note: {note}" for note in notes]
        return lines

    def _summary_reference(self) -> str:
        if self.summary_link is None:  # a page outside the repository
            return f"`{TUNED_SUMMARY_PATH}` in the mergecl repository"
        return f"[{TUNED_SUMMARY_PATH}]({self.summary_link})"

    # ---------------------------------------------------------------- best values

    def _ranked(self, benchmark: str, metric: str) -> dict[str, float]:
        """Displayed (rounded) means of the continual rows with a value, by row name."""
        shown = {}
        for row in self.rows:
            stats = cell_stats(self.runs(row, benchmark), metric)
            if not row.upper and stats.n:
                shown[row.name] = round(100 * stats.mean, 1)
        return shown

    def _best(self, benchmark: str, metric: str, minimum: int = 2) -> set[str]:
        """The rows with the best displayed value (ties all; none when all are equal or
        fewer than ``minimum`` rows have a value)."""
        shown = self._ranked(benchmark, metric)
        if len(shown) < minimum:
            return set()
        target = (min if metric in LOWER_IS_BETTER else max)(shown.values())
        winners = {name for name, value in shown.items() if value == target}
        return winners if len(winners) < len(shown) else set()  # all equal: none is best

    # ---------------------------------------------------------------- summary

    def summary(self) -> Table:
        ranks: dict[str, list[float]] = defaultdict(list)
        ranked_benchmarks = 0
        for b in self.benchmarks:
            shown = self._ranked(b.name, b.headline)
            if not shown:
                continue
            ranked_benchmarks += 1
            series = pd.Series(shown).rank(method="average", ascending=False)
            for name, rank in series.items():
                ranks[name].append(float(rank))
                self.numbers.add("summary", b.name, name, "rank", "value", rank, "rank")
        columns = [b for b in self.benchmarks
                   if any(self.runs(row, b.name) for row in self.rows)]
        headers = ["method"] + [f"{b.name} ({METRIC_TITLES[b.headline]})" for b in columns]
        headers.append("mean rank")
        # bold: the lowest mean rank among the rows ranked on every ranked benchmark
        best_rank = min((sum(v) / len(v) for v in ranks.values() if len(v) == ranked_benchmarks),
                        default=None)
        body: list[list[str]] = []
        bold: set[tuple[int, int]] = set()
        best = {b.name: self._best(b.name, b.headline) for b in columns}
        for i, row in enumerate(self.rows):
            values = {self.values_text(row, b.name, "summary") for b in columns
                      if self.runs(row, b.name)} if row.tuned else set()
            cells = [row.display(values.pop() if len(values) == 1 else "")]
            for j, b in enumerate(columns, start=1):
                cells.append(self.numbers.cell("summary", b.name, row.name, b.headline,
                                               self.runs(row, b.name)))
                if row.name in best[b.name]:
                    bold.add((i, j))
            if row.upper:
                cells.append(f"{UNRANKED} (upper bound)")
            elif ranks.get(row.name):
                mean = sum(ranks[row.name]) / len(ranks[row.name])
                self.numbers.add("summary", "", row.name, "mean_rank", "value", mean, "rank")
                self.numbers.add("summary", "", row.name, "mean_rank", "n", len(ranks[row.name]),
                                 "benchmarks")
                cells.append(_fmt_mean_rank(mean, len(ranks[row.name]), ranked_benchmarks))
                if (best_rank is not None and len(ranks[row.name]) == ranked_benchmarks
                        and math.isclose(mean, best_rank)):
                    bold.add((i, len(cells) - 1))
            else:
                cells.append(MISSING)
            body.append(cells)
        return _without_empty_columns(headers, body, bold)

    # ---------------------------------------------------------------- one benchmark

    def benchmark_table(self, b: BenchmarkSummary) -> Table:
        rows = [row for row in self.rows if self.runs(row, b.name) or not row.tuned]
        headline = METRIC_TITLES[b.headline]
        columns: list[tuple[str, list[str]]] = []
        bold_columns: dict[int, set[str]] = {}
        for metric in BENCHMARK_METRICS:
            texts = [self.numbers.cell("benchmark", b.name, row.name, metric, self.runs(row, b.name))
                     for row in rows]
            if any(text != MISSING for text in texts):
                bold_columns[len(columns) + 1] = self._best(b.name, metric)
                columns.append((METRIC_TITLES[metric], texts))

        texts = []
        references = {self.lower_of(row) for row in rows if self.runs(row, b.name)}
        for row in rows:
            lower = self.lower_of(row)
            if row.name in references and lower == row.name:
                texts.append(REFERENCE)
            else:
                texts.append(self.numbers.difference(
                    b.name, row.name, f"delta_{b.headline}_vs_{lower}",
                    paired_points(self.runs(row, b.name), self.cells.get((lower, b.name), []),
                                  b.headline)))
        if any(text not in (MISSING, REFERENCE) for text in texts):
            others = sorted(references - {self.lower})
            title = f"Δ {headline} vs {self.lower}"
            if others:
                title += " (" + ", ".join(f"{self.tier_title(name)} rows: vs {name}" for name in others) + ")"
            columns.append((title, texts))

        shown = self._ranked(b.name, b.headline)
        if shown:
            target = max(shown.values())
            best = next(row.name for row in rows if shown.get(row.name) == target)
            best_runs = self.cells[(best, b.name)]
            texts = [BEST if row.name == best else self.numbers.difference(
                b.name, row.name, f"delta_{b.headline}_vs_best",
                paired_points(self.runs(row, b.name), best_runs, b.headline)) for row in rows]
            if any(text not in (MISSING, BEST) for text in texts):
                columns.append((f"Δ {headline} vs best ({best})", texts))

        headers = ["method"] + [title for title, _ in columns]
        body, bold = [], set()
        for i, row in enumerate(rows):
            values = self.values_text(row, b.name, b.name) if row.tuned else ""
            body.append([row.display(values)] + [texts[i] for _, texts in columns])
            for j, winners in bold_columns.items():
                if row.name in winners:
                    bold.add((i, j))
        return _without_empty_columns(headers, body, bold)

    def plot_links(self, b: BenchmarkSummary) -> str:
        """Links to the benchmark's figures written by this call (never to stale files)."""
        links = []
        for stem, title in PLOT_KINDS:
            path = self.plots.get(f"{stem}_{plots.file_stem(b.name)}.png")
            if path is not None:
                links.append(f"[{title}]({path.parent.name}/{path.name})")
        return "Plots: " + ", ".join(links) + "." if links else "Plots: none (no successful runs)."

    def describe(self, b: BenchmarkSummary) -> str:
        kind = ("task-incremental accuracy" if b.headline == "til_acc"
                else f"{b.scenario.split('-')[0]}-incremental accuracy")
        return (f"{b.scenario.capitalize()}, {b.n_experiences} experiences; headline metric: "
                f"{METRIC_TITLES[b.headline]} ({kind}). {b.description}")

    # ---------------------------------------------------------------- failures

    def failures(self) -> list[str]:
        failed = sorted((r for r in self.records if not r.ok),
                        key=lambda r: (r.benchmark, r.label, r.seed))
        lines = ["## Failed runs", ""]
        if not failed:
            lines.append("None.")
        else:
            lines.append(f"{_count(len(failed), 'failed run')} (benchmark/label/seed: error):")
            lines.append("")
            lines += [f"- `{r.benchmark}/{r.label}/seed{r.seed}`: {r.error or 'no error recorded'}"
                      for r in failed]
        missing = self.expected_missing()
        lines += ["", "## Missing runs", ""]
        if not missing:
            lines.append("None: every run of the grid has a record.")
        else:
            lines.append(f"{_count(len(missing), 'run')} of the grid without a record "
                         "(benchmark/row/seed):")
            lines.append("")
            lines += [f"- `{benchmark}/{row}/seed{seed}`" for benchmark, row, seed in missing]
        return lines


def _tex(title: str, table: Table) -> str:
    headers, body, bold = table
    return f"% {title}\n" + render_rows(headers, body, "latex", bold) + "\n"


def _check(benchmarks: Sequence[BenchmarkSummary], families: Mapping[str, str]) -> None:
    unknown = {label: family for label, family in families.items() if family not in FAMILIES}
    if unknown:
        raise ValueError(f"unknown families {unknown}; accepted: {', '.join(FAMILIES)}")
    names = [b.name for b in benchmarks]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmarks listed twice: {names}")


def _paper_pages(records: list[RunRecord], out_dir: Path, command: str) -> list[Path]:
    paths = []
    for name in PAPERS:
        lines = [f"# CPU mini edition of the {name} paper table", "",
                 f"Generated by `{command}` from the records in `{out_dir}`.", "",
                 paper.mini_table(name, records, fmt="markdown"), "",
                 "## Orderings of the paper, measured here", ""]
        lines += [f"- {line}" for line in paper.ordering_report(name, records)]
        paths.append(atomic_write_text(out_dir / "paper" / f"{name}-mini.md", "\n".join(lines) + "\n"))
    return paths


def _summary_link(out_dir: Path) -> str | None:
    """The link from the page in ``out_dir`` to the shipped tuning summary (None for a page
    outside the repository: it names the file instead)."""
    from mergecl.bench.config.tuned import TUNED_DIR, TUNED_SUMMARY
    from mergecl.bench.orchestration.provenance import repository_link

    return repository_link(TUNED_DIR / TUNED_SUMMARY, out_dir)


def write_leaderboard(
    records: Sequence[RunRecord],
    out_dir: Path,
    *,
    title: str,
    command: str,
    benchmarks: Sequence[BenchmarkSummary],
    row_order: Sequence[str],
    families: Mapping[str, str],
    wall_s: float | None,
    cpu_model: str | None,
    seeds: Sequence[int],
    notes: Sequence[str] = (),
    expected: Sequence[tuple[str, str, int]] | None = None,
    edges: Mapping[tuple[str, str], Collection[str]] | None = None,
) -> list[Path]:
    """Write the leaderboard page of ``records`` into ``out_dir`` (see the module docstring).

    ``benchmarks`` orders the benchmark sections; ``row_order`` the default rows (labels);
    ``families`` maps a row's label to ``merge``, ``regulariser``, ``lower-bound`` (seqft) or
    ``upper-bound`` (joint); ``wall_s`` is this invocation's wall time (None: tables written
    from existing records) and ``cpu_model`` the machine's CPU; ``seeds`` the grid's seeds;
    ``notes`` are printed in the header; ``expected`` lists the grid's (benchmark, label, seed)
    runs when rows do not all run on every benchmark (default: every row × benchmark × seed);
    ``edges`` maps (benchmark, tuned row name) to its parameters chosen at the edge of their
    search space (default: :func:`tuned_edges`, from the shipped tuned files).
    Only records of these benchmarks and seeds are shown.

    Returns the written paths: ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.tex``,
    the plots, then ``paper/pnm-mini.md`` and ``paper/magmax-mini.md``.
    """
    _check(benchmarks, families)
    out_dir = Path(out_dir)
    names = {b.name for b in benchmarks}
    every = as_records(records)
    shown = [r for r in every if r.benchmark in names and r.seed in set(seeds)]
    plot_paths = plots.plot_all(shown, out_dir / "plots")
    page = _Page(shown, benchmarks=benchmarks, row_order=row_order, families=families,
                 seeds=seeds, plots=plot_paths, expected=expected,
                 edges=tuned_edges(shown) if edges is None else edges)
    page.summary_link = _summary_link(out_dir)

    lines = page.header(title=title, command=command, wall_s=wall_s, cpu_model=cpu_model,
                        notes=notes, dropped=len(every) - len(shown))
    summary = page.summary()
    lines += ["", "## Summary", "",
              "Headline metric of each benchmark; mean rank over the benchmarks where the row has "
              "results (rank among the continual rows present on a benchmark, by the displayed "
              "mean; ties share the average rank; upper-bound rows unranked).", "",
              render_rows(*summary[:2], "markdown", summary[2])]
    if "summary" in page.marked:
        lines += ["", edge_footnote()]

    assessments = [report.assess(shown, b.name, b.headline, families, lower=page.lower,
                                 upper=page.upper, row_order=row_order, tier=tier)
                   for b in benchmarks for tier in (report.tiers(shown, b.name) or [None])]
    for a in assessments:
        add = page.numbers.add
        add("discrimination", a.benchmark, page.lower, a.metric, "mean", a.lower_mean, "%")
        add("discrimination", a.benchmark, page.upper, a.metric, "mean", a.upper_mean, "%")
        add("discrimination", a.benchmark, "", "gap", "value", a.gap, "points")
        add("discrimination", a.benchmark, "", "merge_rows", "count", len(a.merges), "rows")
        add("discrimination", a.benchmark, "", "merge_rows_differing", "count", a.n_resolved, "rows")
    lines += ["", "## Does each benchmark discriminate?", "", *report.discrimination_section(assessments)]

    tex = [f"% {title}: tables of leaderboard.md (needs \\usepackage{{booktabs}})", "",
           _tex("Summary", summary)]
    for b in benchmarks:
        lines += ["", f"## {b.name}", "", page.describe(b), "", page.plot_links(b), ""]
        if not any(page.runs(row, b.name) for row in page.rows):
            lines.append("No records for this benchmark.")
            continue
        table = page.benchmark_table(b)
        lines.append(render_rows(*table[:2], "markdown", table[2]))
        if b.name in page.marked:
            lines += ["", edge_footnote()]
        tex.append(_tex(f"{b.name}: {page.describe(b)}", table))
    lines += ["", *page.failures()]

    paths = [
        atomic_write_text(out_dir / "leaderboard.md", "\n".join(lines) + "\n"),
        atomic_write_text(out_dir / "leaderboard.csv", page.numbers.csv()),
        atomic_write_text(out_dir / "leaderboard.tex", "\n".join(tex)),
    ]
    return paths + plot_paths + _paper_pages(shown, out_dir, command)


def write_grid_leaderboard(out_dir: str | Path, runs: Sequence[Any], grid: Any, command: str,
                           wall_s: float | None) -> list[Path]:
    """The page of a grid (``mergecl leaderboard``): the grid's records from the store at
    ``out_dir``, its benchmarks' summaries and its rows' families, then :func:`write_leaderboard`."""
    from mergecl.bench.config.validation import method_class
    from mergecl.bench.orchestration.provenance import cpu_model
    from mergecl.bench.orchestration.store import ResultStore
    from mergecl.bench.streams.benchmarks import get_benchmark

    wanted = {(cfg.benchmark, cfg.label, cfg.seed) for cfg in runs}
    records = [r for r in ResultStore(out_dir).records() if (r.benchmark, r.label, r.seed) in wanted]
    experiences = {cfg.benchmark: cfg.n_experiences for cfg in runs}
    summaries = []
    for name in grid.benchmarks:
        spec = get_benchmark(name)
        summaries.append(BenchmarkSummary(
            name=name, scenario=spec.scenario, headline=spec.headline, description=spec.description,
            n_experiences=experiences.get(name) or spec.default_experiences))
    families = {entry.label: method_class(entry.method).family for entry in grid.methods}
    return write_leaderboard(
        records, Path(out_dir), title=grid.title or "mergecl leaderboard", command=command,
        benchmarks=summaries, row_order=[entry.label for entry in grid.methods], families=families,
        wall_s=wall_s, cpu_model=cpu_model(), seeds=list(grid.seeds),
        expected=[(cfg.benchmark, cfg.label, cfg.seed) for cfg in runs if cfg.variant == "default"])

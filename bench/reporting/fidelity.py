"""The fidelity report: the labels whose implementation was fixed, before → after.

    python -m mergecl.bench.reporting.fidelity --before results/fidelity/before \
        --after results/fidelity --committed 22ef3ba

reads the *before* records from ``--before`` — a result store (the pre-fix code rerun on the
same machine as the fix) or a git revision whose ``results/`` holds committed records — and the
*after* records from the result store ``--after`` (the fixed code rerun under the same
protocol, ``bench/config/grids/fidelity.yaml``), and writes ``results/fidelity.md``: per label
and benchmark the accuracies before and after with their paired difference over seeds, P&M's
α per task, TRM's accuracy on the task just learned, and which of the papers' orderings
reproduce before and after. ``--committed`` adds a column with the records committed at a git
revision (written on another machine: the same code gives different floating-point results on
a different CPU, which is why *before* is rerun here). Every number comes from the records.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mergecl.bench.orchestration.provenance import REPOSITORY
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import ResultStore, atomic_write_text
from mergecl.bench.reporting.paper import ordering_report
from mergecl.bench.reporting.stats import INTERVAL_METHOD, paired_difference

FIXES = {
    "pnm": "P&M: the perturbation's chain-rule gradient (1 + s)·∇L(θ + sΔ); new head rows unperturbed",
    "pnm-stopgrad": "P&M with the old gradient (no (1 + s) factor) but new head rows unperturbed",
    "pnm-gauss": "Gaussian ablation: new head rows unperturbed",
    "pnm-mergeonly": "no perturbation: unchanged by the fixes (a reproducibility check)",
    "magmax": "head rows taken as trained (not λ-scaled)",
    "magmax-head-merge": "the old head rule (λ-scaled old rows) on the fixed code",
    "ties": "whole-model top-k trimming, majority sign rule, head as trained (λ = 0.55)",
    "ties-lam1": "the same with λ = 1",
    "random-mix": "head rows taken as trained",
    "avg-task-arith": "head rows taken as trained (now the task-arithmetic method)",
    "trm": "consistency only where it cannot conflict, hinge floors, no-forgetting acceptance",
    "trm-protect-always": "ablation: the no-forgetting acceptance on class-incremental streams too",
    "seqft": "unchanged (a reproducibility check)",
}


def git_records(revision: str, benchmarks: Sequence[str]) -> list[RunRecord]:
    """The records committed at ``revision`` under results/<benchmark>/."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "results/"],
                             cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.split()
    records = []
    for path in listing:
        parts = path.split("/")
        if len(parts) == 4 and parts[1] in benchmarks and parts[3].startswith("seed"):
            text = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPOSITORY,
                                  capture_output=True, text=True, check=True).stdout
            records.append(RunRecord.model_validate(json.loads(text)))
    return records


def load_records(source: str, benchmarks: Sequence[str]) -> list[RunRecord]:
    """Records from a result-store directory, or from a git revision's committed results."""
    if Path(source).is_dir():
        return [r for r in ResultStore(source).records() if r.benchmark in benchmarks]
    return git_records(source, benchmarks)


def _describe(source: str, records: Sequence[RunRecord]) -> str:
    revisions = ", ".join(sorted({r.git_rev or "?" for r in records}))
    cpus = ", ".join(sorted({r.host.cpu_model or "?" for r in records}))
    where = f"the result store `{source}`" if Path(source).is_dir() else f"the records committed at `{source}`"
    return f"{where} (code at git {revisions}; run on {cpus})"


def _by_seed(records: Sequence[RunRecord], benchmark: str, label: str) -> dict[int, RunRecord]:
    return {r.seed: r for r in records if r.ok and r.benchmark == benchmark and r.label == label}


def _stat(values: Sequence[float]) -> str:
    if not values:
        return "—"
    array = 100 * np.asarray(values)
    spread = f" ± {array.std(ddof=1):.1f}" if len(array) > 1 else ""
    return f"{array.mean():.1f}{spread} ({len(array)})"


def _alphas(record: RunRecord) -> str:
    values = [task.get("merge_coefficient", task.get("alpha")) for task in record.diagnostics.get("per_task", [])]
    return "(" + ", ".join(f"{v:.2f}" for v in values if v is not None) + ")"


def build_report(before: Sequence[RunRecord], after: Sequence[RunRecord], command: str,
                 sources: tuple[str, str], benchmarks: Sequence[str],
                 committed: tuple[str, Sequence[RunRecord]] | None = None) -> str:
    labels = list(dict.fromkeys(r.label for r in after))
    lines = [
        "# Fidelity: what the method fixes changed",
        "",
        f"Generated by `{command}`.",
        "",
        f"- **Before**: the code of the first leaderboard, from {_describe(sources[0], before)}.",
        f"- **After**: the fixed code, from {_describe(sources[1], after)}, written by "
        "`mergecl leaderboard --config bench/config/grids/fidelity.yaml --out results/fidelity`.",
        "- Both under the first leaderboard's protocol (preset `v1`: full fine-tuning of "
        "EfficientNet-Lite0 at 32 px, the same data, seeds and budgets).",
        f"- Δ = after − before, paired by seed ({INTERVAL_METHOD}); accuracies in %, mean ± std (seeds).",
        "- Labels only in *after* are ablations that isolate one fix.",
    ]
    if committed:
        lines.append(f"- *committed*: {_describe(*committed)} — the same code as *before* on another "
                     "CPU; its distance from *before* is the size of cross-machine numerical noise.")
    lines.append("")
    for benchmark in benchmarks:
        extra = " committed |" if committed else ""
        lines += [f"## {benchmark} (final average accuracy, class-incremental where it applies)", "",
                  f"| label | what changed |{extra} before | after | Δ after − before |",
                  "|---|---|---|---|---|" + ("---|" if committed else "")]
        for label in labels:
            b, a = _by_seed(before, benchmark, label), _by_seed(after, benchmark, label)
            if not a:
                continue
            delta = paired_difference({s: 100 * r.metrics.acc for s, r in a.items()},
                                      {s: 100 * r.metrics.acc for s, r in b.items()}) if b else None
            cell = ""
            if committed:
                c = _by_seed(committed[1], benchmark, label)
                cell = f" {_stat([r.metrics.acc for r in c.values()])} |"
            lines.append(f"| {label} | {FIXES.get(label, '')} |{cell} {_stat([r.metrics.acc for r in b.values()])} | "
                         f"{_stat([r.metrics.acc for r in a.values()])} | "
                         f"{delta.format(1) if delta else '—'} |")
        lines.append("")
    lines += ["## P&M's α per task (seeds in order)", "", "| benchmark | label | before | after |",
              "|---|---|---|---|"]
    for benchmark in benchmarks:
        for label in ("pnm", "pnm-stopgrad", "pnm-mergeonly", "pnm-gauss"):
            b, a = _by_seed(before, benchmark, label), _by_seed(after, benchmark, label)
            if a:
                lines.append(f"| {benchmark} | {label} | {' '.join(_alphas(r) for _, r in sorted(b.items())) or '—'} | "
                             f"{' '.join(_alphas(r) for _, r in sorted(a.items()))} |")
    lines += ["", "## TRM: accuracy on the task just learned (mean of the diagonal R[t][t], %)", "",
              "| benchmark | before | after | seqft (after) |", "|---|---|---|---|"]
    for benchmark in benchmarks:
        def diagonal(records: dict[int, RunRecord]) -> str:
            return _stat([float(np.mean(np.diag(np.asarray(r.acc_matrix)))) for r in records.values()])

        lines.append(f"| {benchmark} | {diagonal(_by_seed(before, benchmark, 'trm'))} | "
                     f"{diagonal(_by_seed(after, benchmark, 'trm'))} | {diagonal(_by_seed(after, benchmark, 'seqft'))} |")
    rerun = set(labels)
    combined_after = list(after) + [r for r in before if r.label not in rerun]
    lines += ["", "## The papers' orderings, before and after", "",
              "Verdicts per claimed pair (a > b) from the paired interval of a − b over seeds. *After* "
              "uses the rerun labels and, for labels not rerun (their code did not change: avg, coma, "
              "dare, joint, …), the *before* records.", ""]
    for paper in ("magmax", "pnm"):
        for name, records in (("before", before), ("after", combined_after)):
            summary = [line for line in ordering_report(paper, records, benchmarks=benchmarks)
                       if line.split(":")[0] in benchmarks]
            lines.append(f"- **{paper}, {name}**: " + "; ".join(summary))
    lines += ["", "### Orderings in detail (after)", ""]
    for paper in ("magmax", "pnm"):
        lines += [f"- {line}" for line in ordering_report(paper, combined_after, benchmarks=benchmarks)
                  if line.startswith("[")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mergecl.bench.reporting.fidelity")
    parser.add_argument("--before", required=True,
                        help="result store (directory) or git revision of the before records")
    parser.add_argument("--committed", help="git revision of committed records to show beside (optional)")
    parser.add_argument("--after", required=True, help="result store of the rerun")
    parser.add_argument("--benchmarks", nargs="*", default=["mnist-fmnist", "rotated-mnist"])
    parser.add_argument("--output", default=str(REPOSITORY / "results" / "fidelity.md"))
    args = parser.parse_args(argv)
    after = load_records(args.after, args.benchmarks)
    before = load_records(args.before, args.benchmarks)
    committed = (args.committed, git_records(args.committed, args.benchmarks)) if args.committed else None
    command = "python -m mergecl.bench.reporting.fidelity " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = build_report(before, after, command, (args.before, args.after), args.benchmarks, committed)
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

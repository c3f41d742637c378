"""Write ``results/perf.md`` from the performance suite's outputs (``make bench``).

Inputs (all optional; what is missing is said so in the report):

* ``results/perf.json`` -- pytest-benchmark's JSON of ``pytest tests/benchmarks
  --benchmark-enable`` (the suite's conftest points ``--benchmark-json`` there by default);
* ``results/perf_extra.json`` -- the suite's side file: every ratio with its target and status,
  memory probes, the machine, the command line and the suite's wall time;
* the leaderboard's run records ``results/<benchmark>/<label>/seed*.json`` (read with the result
  store as :class:`~mergecl.bench.orchestration.records.RunRecord`; ``timings``) and
  ``results/leaderboard.md`` (its "Wall time" line).

Every figure of the suite is a ratio against a baseline timed in the same run (the machine is
shared); absolute seconds appear only as context.

Usage: ``python -m mergecl.bench.reporting.perf_report [--results DIR] [--json FILE] [--extra FILE] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mergecl.bench.orchestration.records import RunRecord
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[2]
SUITE_COMMAND = ".venv/bin/python -m pytest tests/benchmarks --benchmark-enable -q"
REPORT_COMMAND = ".venv/bin/python -m mergecl.bench.reporting.perf_report"
STATUS_MARK = {"pass": "pass", "miss": "**MISS**", "info": "-"}


def _load_json(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as exc:
        return None, f"{path} could not be read ({exc})"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_value(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit.strip() == "x":
        return f"{value:.3f}x"
    return f"{value:.2f}{unit}"


def _fmt_target(entry: dict) -> str:
    if entry.get("target") is None:
        return ""
    op = "≤" if entry.get("op") == "<=" else "≥"
    unit = entry.get("unit", "x")
    target = entry["target"]
    return f"{op} {target:g}{'x' if unit.strip() == 'x' else unit}"


def _load(entry: dict) -> str:
    """1-minute load average when recorded, and the contention probe at the test's start."""
    parts = []
    if entry.get("load_avg"):
        parts.append(f"{entry['load_avg'][0]:.1f}")
    if entry.get("contention_at_test_start") is not None:
        parts.append(f"probe {entry['contention_at_test_start']:.2g}")
    return " / ".join(parts)


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _when(iso: str | None) -> str:
    if not iso:
        return "unknown time"
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------- sections
def machine_section(extra: dict | None, bench: dict | None) -> list[str]:
    lines = ["## Machine", ""]
    machine = (extra or {}).get("machine") or {}
    if not machine and bench:
        info = bench.get("machine_info") or {}
        machine = {"cores": (info.get("cpu") or {}).get("count"), "cpu": (info.get("cpu") or {}).get("brand_raw"),
                   "python": info.get("python_version")}
    if not machine:
        machine = {"cores": os.cpu_count()}
        lines.append("(no measurements yet: machine of this report shown)")
    lines.append(f"- cores: {machine.get('cores')}; torch threads: {machine.get('torch_threads', 'n/a')}; "
                 f"OpenMP wait policy: {machine.get('omp_wait_policy', 'n/a')}")
    if machine.get("cpu"):
        lines.append(f"- CPU: {machine['cpu']}; memory: {machine.get('memory_gib', 'n/a')} GiB")
    lines.append(f"- python {machine.get('python', 'n/a')}, torch {machine.get('torch', 'n/a')}, "
                 f"git {machine.get('git_rev', 'n/a')}")
    if extra:
        lines.append(f"- load average (1, 5, 15 min) at start {extra.get('load_avg_start')}, "
                     f"at end {extra.get('load_avg_end')}")
        for when, probe in (extra.get("contention") or {}).items():
            lines.append(
                f"- contention probe ({when}): a small parallel op takes {probe.get('op_us_2_threads')} µs "
                f"with 2 threads vs {probe.get('op_us_1_thread')} µs with 1 "
                f"(ratio {probe.get('two_over_one')}; ~0.5-0.7 on an idle machine -- far above 1 "
                "means other processes hold the cores and every OpenMP region may wait for a "
                "descheduled thread)")
    return lines + [""]


def ratio_sections(extra: dict | None) -> list[str]:
    if not extra or not extra.get("records"):
        return ["## Ratios vs targets", "", ("No side file (`results/perf_extra.json`): run "
                f"`{SUITE_COMMAND}` first."), ""]
    records = extra["records"]
    targeted = [(k, v) for k, v in sorted(records.items()) if v.get("target") is not None]
    info = [(k, v) for k, v in sorted(records.items()) if v.get("target") is None]
    misses = [k for k, v in targeted if v.get("status") == "miss"]
    lines = ["## Ratios vs targets", "",
             f"{len(targeted) - len(misses)} of {len(targeted)} targets of the suite met"
             + (f"; missed: {', '.join(misses)}." if misses else ".")
             + " The default leaderboard's wall-time target is checked at the end of this page.",
             ("Value = ratio of the lower quartiles of two interleaved series (variants timed in "
             "turns; on a shared machine noise only adds time, in bursts, and the lower quartile "
             "stays on the clean samples). The notes give a bootstrap 95 % interval, flagged "
             "inconclusive when it contains the target, and the ratio of medians. Column load: "
             "1-minute load average when the figure was recorded / contention probe when its "
             "test began (2-thread / 1-thread time of a small parallel op; ~0.5 idle, >> 1 "
             "contended -- such rows are noise-dominated)."), ""]
    rows = [(key, v["title"], _fmt_value(v["value"], v.get("unit", "x")), _fmt_target(v),
             STATUS_MARK.get(v.get("status"), v.get("status")), _load(v), v.get("baseline", ""),
             v.get("note", ""))
            for key, v in targeted]
    lines += _table(["key", "measurement", "value", "target", "status", "load", "baseline", "notes"],
                    rows)
    if info:
        lines += ["", "## Other measurements (no target)", ""]
        rows = [(key, v["title"], _fmt_value(v["value"], v.get("unit", "x")), _load(v),
                 v.get("baseline", ""), v.get("note", "")) for key, v in info]
        lines += _table(["key", "measurement", "value", "load", "baseline", "notes"], rows)
    profile = None
    for v in records.values():
        profile = (v.get("details") or {}).get("profile") or profile
    if profile:
        lines += ["", "### Where one strategy experience spends its time (cProfile, self time)", ""]
        rows = [(area, f"{sec:.3f}", f"{sec / profile['wall_s']:.1%}" if profile.get("wall_s") else "")
                for area, sec in profile.get("self_seconds_by_area", {}).items()]
        lines += _table(["area", "self s", "share of wall"], rows)
        top = profile.get("top_avalanche_and_mergecl") or []
        if top:
            lines += ["", "Costliest Avalanche / mergecl functions (cumulative, includes callees):", ""]
            lines += _table(["function", "calls", "cum s", "self s"],
                            [(t["function"], t["calls"], t["cum_s"], t["self_s"]) for t in top[:8]])
    return lines + [""]


def benchmark_section(bench: dict | None, error: str | None) -> list[str]:
    lines = ["## pytest-benchmark rounds (absolute seconds, context only)", ""]
    if error:
        return lines + [error, ""]
    if not bench or not bench.get("benchmarks"):
        return lines + [("No `results/perf.json`: it is written by the suite with `--benchmark-enable` "
                        f"(`{SUITE_COMMAND}`)."), ""]
    lines.append(f"From `perf.json` written {_when(bench.get('datetime'))}; one round = one "
                 "interleaved round of the test's variants (the ratios come from inside the rounds).")
    lines.append("")
    rows = []
    for b in bench["benchmarks"]:
        stats = b.get("stats") or {}
        rows.append((b.get("group") or "", b.get("name", ""), stats.get("rounds", ""),
                     f"{stats.get('min', float('nan')):.2f}", f"{stats.get('median', float('nan')):.2f}",
                     f"{stats.get('max', float('nan')):.2f}"))
    lines += _table(["group", "benchmark", "rounds", "min s", "median s", "max s"], rows)
    return lines + [""]


LEADERBOARD_TARGET_MIN = 20


def _leaderboard_records(results: Path) -> tuple[list[RunRecord], int]:
    """The run records of the result store at ``results`` and how many could not be read."""
    from mergecl.bench.orchestration.store import ResultStore

    records: list[RunRecord] = []
    unreadable = len(list(results.glob("*/*/seed*.json")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable files are counted below instead
        found = ResultStore(results).records() if results.is_dir() else []
    for record in found:
        if isinstance(record, RunRecord):  # the store returns models
            records.append(record)
            continue
        try:  # a store that still returns dicts
            records.append(RunRecord.model_validate(record))
        except ValidationError:
            pass
    return records, max(0, unreadable - len(records))


def _wall_time_line(board: Path) -> str | None:
    """The line of ``leaderboard.md`` that states the invocation's wall time (new page:
    ``- Wall time: 76.8 min on …``; older pages: the line with "sum of run times")."""
    for line in board.read_text().splitlines():
        text = line.strip().lstrip("-* ").lower()
        if text.startswith("wall time") or "sum of run times" in text:
            return line.strip().lstrip("- ").strip()
    return None


def leaderboard_section(results: Path) -> list[str]:
    lines = ["## Default leaderboard wall time", ""]
    records, unreadable = _leaderboard_records(results)
    board = results / "leaderboard.md"
    runs_line = _wall_time_line(board) if board.is_file() else None
    if not records and not board.is_file():
        return lines + [(f"Not yet generated (no run records under `{results}` and no "
                        "`leaderboard.md`); `make leaderboard` writes them."), ""]
    total = sum(float(r.timings.total_s or 0.0) for r in records)
    ok = sum(1 for r in records if r.ok)
    labels = {r.label for r in records}
    benchmarks = {r.benchmark for r in records}
    lines.append(f"- run records: {len(records)} ({ok} ok) over {len(benchmarks)} benchmarks x "
                 f"{len(labels)} labels" + (f"; {unreadable} unreadable" if unreadable else ""))
    lines.append(f"- sum of run times (`timings.total_s`): {total:.0f} s = {total / 60:.1f} min = "
                 f"{total / 3600:.2f} h")
    steps = sum(int(r.timings.train_steps or 0) for r in records)
    phases = {phase: sum(float(getattr(r.timings, phase) or 0.0) for r in records)
              for phase in ("train_s", "eval_s", "merge_s")}
    if steps:
        lines.append(f"- where it goes: optimisation steps {phases['train_s'] / 60:.1f} min "
                     f"({steps} steps, {1e3 * phases['train_s'] / steps:.0f} ms per step and run), "
                     f"evaluation {phases['eval_s'] / 60:.1f} min, merges and their statistics "
                     f"{phases['merge_s'] / 60:.1f} min")
    if not board.is_file():
        lines.append("- `leaderboard.md`: not yet generated")
    elif runs_line is None:
        lines.append("- `leaderboard.md`: no run-time line found")
    else:
        lines.append(f"- `leaderboard.md` says: {runs_line.replace('**', '')}")
        wall = re.search(r"wall time:? ([0-9.]+) min", runs_line, flags=re.IGNORECASE)
        if wall:
            minutes = float(wall.group(1))
            status = "met" if minutes <= LEADERBOARD_TARGET_MIN else "**MISS**"
            lines.append(f"- target: ≤ {LEADERBOARD_TARGET_MIN} min on this 2-core machine: {status} "
                         f"({minutes / LEADERBOARD_TARGET_MIN:.2f}x the target); see README \"Results\" "
                         "for what limits it")
        lines.append(f"- recorded wall time of the invocation that wrote it: {wall.group(1)} min"
                     if wall else "- recorded wall time: none (that `leaderboard.md` was written from "
                     "existing records, e.g. `--tables-only`; the runs' own times are summed above)")
    return lines + [""]


def build_report(results: Path, bench_path: Path, extra_path: Path, out: Path) -> str:
    bench, bench_error = _load_json(bench_path)
    extra, extra_error = _load_json(extra_path)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = ["# mergecl performance report", ""]
    lines.append(f"Generated {_when(now)} by `{REPORT_COMMAND}` from `{_rel(bench_path)}` "
                 f"({'pytest-benchmark, ' + _when(bench.get('datetime')) if bench else 'absent'}) and "
                 f"`{_rel(extra_path)}` ({'suite finished ' + _when(extra.get('finished_at')) if extra else 'absent'}).")
    lines.append("")
    lines.append(f"Regenerate: `make bench`, i.e. `{SUITE_COMMAND}` then `{REPORT_COMMAND}`.")
    if extra:
        minutes = (extra.get("suite_seconds") or 0) / 60
        lines.append(f"The measurements below came from `{extra.get('command')}` "
                     f"(exit status {extra.get('exit_status')}, {minutes:.1f} min"
                     f"{', strict' if extra.get('strict') else ''}).")
    if extra_error:
        lines.append(extra_error)
    lines.append("")
    lines += machine_section(extra, bench)
    lines += ratio_sections(extra)
    lines += benchmark_section(bench, bench_error)
    lines += leaderboard_section(results)
    return "\n".join(lines).rstrip() + "\n"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    default_results = Path(os.environ.get("MERGECL_PERF_DIR") or REPO / "results")
    parser = argparse.ArgumentParser(prog="python -m mergecl.bench.reporting.perf_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=default_results,
                        help="results directory (leaderboard records, perf files); default %(default)s")
    parser.add_argument("--json", type=Path, default=None, help="pytest-benchmark JSON (default RESULTS/perf.json)")
    parser.add_argument("--extra", type=Path, default=None, help="side file (default RESULTS/perf_extra.json)")
    parser.add_argument("--out", type=Path, default=None, help="report to write (default RESULTS/perf.md)")
    args = parser.parse_args(argv)
    results = args.results
    bench_path = args.json or results / "perf.json"
    extra_path = args.extra or results / "perf_extra.json"
    out = args.out or results / "perf.md"
    text = build_report(results, bench_path, extra_path, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

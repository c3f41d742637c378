"""Write ``results/perf.md`` from the performance suite's outputs (``make bench``).

Inputs (all optional; what is missing is said so in the report):

* ``results/perf.json`` -- pytest-benchmark's JSON of ``pytest tests/benchmarks
  --benchmark-enable`` (the suite's conftest points ``--benchmark-json`` there by default);
* ``results/perf_extra.json`` -- the suite's side file: every ratio with its target and status,
  memory probes, the machine, the command line and the suite's wall time;
* the leaderboard's run records ``results/<benchmark>/<label>/seed*.json`` (read with the result
  store as :class:`~mergecl.bench.orchestration.records.RunRecord`; ``timings``) and
  ``results/leaderboard.md`` (its "Wall time" line);
* the first leaderboard's records, committed at git revision ``22ef3ba`` (``--before``; a
  result-store directory works too), for the default grid's optimisation steps before and after
  protocol v2 -- "after" is the current store's records of the default grid
  (``bench/config/grids/leaderboard.yaml``, or ``--grid FILE``) whose config hash is current;
* the tuning records of ``make tune`` (``--tuning DIR``, default ``.mergecl-cache/tuning``:
  ``DIR/tuning/<benchmark>/<label>.json``) and ``bench/config/tuned/SUMMARY.md``;
* the trajectory store (``--trajectories DIR``, default ``$MERGECL_TRAJECTORIES`` or
  ``~/.cache/mergecl/trajectories``) and the feature cache, for their size on disk.

Every figure of the suite is a ratio against a baseline timed in the same run (the machine is
shared); absolute seconds appear only as context. The step counts are weighted with the
suite's step-cost ratios (``6.step_cost.*``: one step of ``frozen_blocks: 5`` on cached features,
full or LoRA, over one full-network step), so "after" reads in full-network steps on any machine.

Usage: ``python -m mergecl.bench.reporting.perf_report [--results DIR] [--json FILE] [--extra FILE]
[--out FILE] [--before REV|DIR] [--grid FILE] [--tuning DIR] [--trajectories DIR]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergecl.bench.orchestration.provenance import REPOSITORY, repository_link
from mergecl.bench.orchestration.records import RunRecord
from pydantic import ValidationError

REPO = REPOSITORY  # the repository root, as this module and its tests name it

SUITE_COMMAND = ".venv/bin/python -m pytest tests/benchmarks --benchmark-enable -q"
REPORT_COMMAND = ".venv/bin/python -m mergecl.bench.reporting.perf_report"
STATUS_MARK = {"pass": "pass", "miss": "**MISS**", "info": "-"}

BEFORE_REVISION = "22ef3ba"
"""The git revision whose committed ``results/`` hold the first (protocol v1) leaderboard."""
BEFORE_STEPS_QUOTED = 32_670
"""The steps of that leaderboard as quoted when protocol v2 was planned (a consistency check)."""
DEFAULT_TUNING = Path(".mergecl-cache/tuning")  # `make tune`'s --out, relative to the repository

STEP_COST_KEYS: dict[tuple[str, int | None], str] = {
    ("full", 5): "6.step_cost.k5",
    ("lora", 5): "6.step_cost.lora_k5",
}
"""Suite records giving one step's cost in full-network steps, by (parameterisation, frozen_blocks);
("full", None) -- the full network -- is 1 by definition."""
ADAMW_PREFIX = "7.adamw."
FAST_CONVS_KEY = "6.step_cost.fast_convs"
ONEDNN_KEY = "6.step_cost.onednn"
ADOPTED_ADAMW = "fused"
"""The AdamW form the training strategy uses (``MergeCLStrategy.make_optimizer``)."""


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
             + " The default leaderboard's wall-time targets are checked further down this page.",
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
LEADERBOARD_STRETCH_MIN = 10


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


def _wall_cpu(line: str) -> str | None:
    """The CPU named in a ``Wall time: X min on <CPU> (this invocation)…`` line."""
    found = re.search(r"wall time:? [0-9.]+ min on (.+?) \(this invocation\)", line, flags=re.IGNORECASE)
    return found.group(1).strip() if found else None


def _met(minutes: float, target: float) -> str:
    return f"{'met' if minutes <= target else '**MISSED**'} ({minutes / target:.2f}x)"


def _moment(iso: str | None) -> _dt.datetime | None:
    if not iso:
        return None
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def records_span_min(records: Sequence[RunRecord]) -> float | None:
    """Minutes from the first record's start to the last one's end (None when not recorded).
    Copies (``copy_of``) carry their source's times and change nothing."""
    starts = [m for m in (_moment(r.started_at) for r in records) if m is not None]
    ends = [m for m in (_moment(r.finished_at) for r in records) if m is not None]
    if not starts or not ends:
        return None
    return (max(ends) - min(starts)).total_seconds() / 60


SHARES_SHOWN = 4


def method_shares(records: Sequence[RunRecord]) -> list[tuple[str, float, float, float]]:
    """[(method, run minutes, share of all run time, merge minutes)], the costliest first."""
    total = sum(float(r.timings.total_s or 0.0) for r in records)
    by: dict[str, list[float]] = {}
    for record in records:
        entry = by.setdefault(record.method, [0.0, 0.0])
        entry[0] += float(record.timings.total_s or 0.0)
        entry[1] += float(record.timings.merge_s or 0.0)
    if total <= 0:
        return []
    return sorted(((method, spent / 60, spent / total, merge / 60) for method, (spent, merge) in by.items()),
                  key=lambda row: (-row[1], row[0]))


def leaderboard_section(results: Path, grid: GridState | None = None) -> list[str]:
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
    shares = method_shares(records)
    if shares:
        lines.append("- largest shares of the run time, by method (all its rows and benchmarks): "
                     + ", ".join(f"{method} {minutes:.1f} min ({share:.0%}; merges {merge:.1f})"
                                 for method, minutes, share, merge in shares[:SHARES_SHOWN]))
    if not board.is_file():
        lines.append("- `leaderboard.md`: not yet generated")
    elif runs_line is None:
        lines.append("- `leaderboard.md`: no run-time line found")
    else:
        lines.append(f"- `leaderboard.md` says: {runs_line.replace('**', '')}")
        wall = re.search(r"wall time:? ([0-9.]+) min", runs_line, flags=re.IGNORECASE)
        if wall:
            minutes = float(wall.group(1))
            lines.append(f"- target: ≤ {LEADERBOARD_TARGET_MIN} min on this 2-core machine: "
                         f"{_met(minutes, LEADERBOARD_TARGET_MIN)}; stretch ≤ "
                         f"{LEADERBOARD_STRETCH_MIN} min: {_met(minutes, LEADERBOARD_STRETCH_MIN)} "
                         "(what limits it: the shares above, and docs/protocol.md, \"Wall time\")")
            cpu = _wall_cpu(runs_line)
            lines.append(f"- CPU of that invocation: {cpu or 'not stated on the page (older format)'}")
            if grid is not None and grid.done:
                span = records_span_min(grid.done)
                if span is not None:
                    fresh = span <= minutes * 1.05 + 1.0
                    lines.append(
                        f"- the default grid's {len(grid.done)} current records were run within "
                        f"{span:.1f} min (first start to last end): "
                        + ("consistent with one invocation" if fresh else
                           "**longer than the invocation's wall time** -- they come from several "
                           "invocations, so that wall time is not one of `make leaderboard` from an "
                           "empty results directory"))
        lines.append(f"- recorded wall time of the invocation that wrote it: {wall.group(1)} min"
                     if wall else "- recorded wall time: none (that `leaderboard.md` was written from "
                     "existing records, e.g. `--tables-only`; the runs' own times are summed above)")
    cpus = Counter(r.host.cpu_model or "not recorded" for r in records)
    if cpus:
        lines.append("- CPU model in the run records (`host.cpu_model`): "
                     + ", ".join(f"{cpu} ({n})" for cpu, n in cpus.most_common()))
    if runs_line is not None and re.search(r"wall time:? [0-9.]+ min", runs_line, flags=re.IGNORECASE):
        lines.append("- caveat: a wall time depends on what the trajectory store and the feature cache "
                     "held when the invocation began (steps read from the store count as *reused* "
                     "below; after `make tune` the store holds the trajectories tuning trained, and "
                     "`make leaderboard` reuses them)")
        lines.append(f"- {store_provenance(records)}")
    return lines + [""]


def store_provenance(records: list[RunRecord]) -> str:
    """Whether the records' runs trained every stored state they read (the store held none of
    them when the grid began) or read some trained before, e.g. by ``make tune``.

    A stored state is a (trajectory key, task) pair: ``trajectory.tasks`` are the tasks a run
    read or wrote, ``trajectory.trained_here`` those it trained itself. A record with several
    keys (an independent-regime post-hoc run: task 0 is on the sequential key) cannot be split
    by task and is counted apart."""
    used: set[tuple[str, int]] = set()
    trained: set[tuple[str, int]] = set()
    mixed = 0
    for record in records:
        use = record.trajectory
        if use is None:
            continue
        if "," in use.key:
            mixed += 1
            continue
        used.update((use.key, task) for task in use.tasks)
        trained.update((use.key, task) for task in use.trained_here)
    if not used:
        return "trajectory store: the records read no stored state"
    before = len(used - trained)
    text = (f"trajectory store: the runs used {len(used)} stored states (trajectory key, task); "
            f"{len(used & trained)} were trained by runs among these records"
            + (" -- every one: the store held none of them when the grid began (a cold store)"
               if before == 0 else
               f", {before} were in the store before them (trained by another invocation, e.g. "
               "`make tune`)"))
    if mixed:
        text += f"; {mixed} record(s) with several trajectory keys not counted"
    return text


# ----------------------------------------------------------------------------- steps before/after
@dataclass
class GridState:
    """The default grid's runs and what the result store holds of them."""

    expected: int = 0
    done: list[RunRecord] = field(default_factory=list)   # ok, config hash current
    failed: int = 0
    stale: int = 0
    missing: int = 0
    unchecked_tuned: int = 0  # tuned records counted without shipped values to check them against
    note: str | None = None
    error: str | None = None
    benchmarks: list[str] = field(default_factory=list)


def default_grid_config(path: Path | None = None) -> Any:
    """The grid to compare: ``path`` (YAML) or the packaged default leaderboard grid."""
    import yaml
    from mergecl.bench.config.grid_config import default_grid, parse_grid

    return parse_grid(yaml.safe_load(path.read_text()) if path is not None else default_grid())


def grid_state(results: Path, grid: Any = None) -> GridState:
    """Match the grid's runs (``expand_grid``) against the store at ``results``: a run counts as
    done when its record is ok and carries the run's current config hash. Without shipped tuned
    values (``tuned: true`` before `make tune`), the tuned rows cannot be expanded: their records
    (``<label>-tuned`` of a done default run) are counted unchecked, and the page says so."""
    from mergecl.bench.config.grid_config import expand_grid
    from mergecl.bench.config.run_config import ConfigError
    from mergecl.bench.orchestration.store import ResultStore, RunKey

    state = GridState()
    try:
        grid = grid if grid is not None else default_grid_config()
        state.benchmarks = list(grid.benchmarks)
        try:
            runs = expand_grid(grid)
        except ConfigError as err:
            runs = expand_grid(grid, tuned=False)
            if grid.tuned:
                state.note = f"tuned rows not expanded: {err}"
    except Exception as err:  # noqa: BLE001 - the page says what is missing instead of crashing
        state.error = f"the grid could not be expanded ({type(err).__name__}: {err})"
        return state
    state.expected = len(runs)
    store = ResultStore(results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cfg in runs:
            record = store.read(RunKey.of(cfg)) if results.is_dir() else None
            if record is None:
                state.missing += 1
            elif record.config_hash != cfg.digest():
                state.stale += 1
            elif not record.ok:
                state.failed += 1
            else:
                state.done.append(record)
        if state.note is not None and results.is_dir():
            done_keys = {(r.benchmark, r.label, r.seed) for r in state.done}
            for record in store.records(benchmarks=state.benchmarks):
                if (record.ok and record.variant == "tuned" and record.base_label is not None
                        and record.label == f"{record.base_label}-tuned"
                        and (record.benchmark, record.base_label, record.seed) in done_keys):
                    state.done.append(record)
                    state.unchecked_tuned += 1
    return state


def load_before(source: str | Path) -> tuple[list[RunRecord], str]:
    """The records of the "before" leaderboard: a result-store directory, or the records committed
    at a git revision under ``results/<benchmark>/<label>/seed*.json`` (``fidelity.git_records``).
    Returns (records, description); raises ``RuntimeError`` with the reason when unreadable."""
    from mergecl.bench.orchestration.store import ResultStore
    from mergecl.bench.reporting.fidelity import REPOSITORY, git_records

    if Path(source).is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(ResultStore(source).records()), f"the result store `{source}`"
    try:
        listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", str(source), "results/"],
                                 cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout
        benchmarks = sorted({p.split("/")[1] for p in listing.split()
                             if len(p.split("/")) == 4 and p.split("/")[3].startswith("seed")})
        records = git_records(str(source), benchmarks)
    except (OSError, subprocess.CalledProcessError, ValueError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise RuntimeError(f"the records at git revision `{source}` could not be read: "
                           f"{detail.strip()}") from None
    return records, f"the records committed at git `{source}`"


def _setting_of(record: RunRecord) -> tuple[str, int | None]:
    frozen = (record.config or {}).get("frozen_blocks")
    return record.parameterisation, int(frozen) if frozen is not None else None


def _setting_name(setting: tuple[str, int | None]) -> str:
    kind, frozen = setting
    return f"{kind}, " + ("full network" if frozen is None else f"frozen_blocks={frozen}")


def step_costs(extra: dict | None) -> dict[tuple[str, int | None], dict[str, Any]]:
    """{(parameterisation, frozen_blocks): {"ratio", "key", "ci95", "status"}} -- one step's cost
    in full-network steps, from the suite's side file; the full network is 1 by definition."""
    costs: dict[tuple[str, int | None], dict[str, Any]] = {
        ("full", None): {"ratio": 1.0, "key": None, "ci95": None, "status": "definition"}}
    records = (extra or {}).get("records") or {}
    for setting, key in STEP_COST_KEYS.items():
        entry = records.get(key)
        if entry and entry.get("value") is not None and not math.isnan(entry["value"]):
            costs[setting] = {"ratio": float(entry["value"]), "key": key,
                              "ci95": (entry.get("summary") or {}).get("ci95"),
                              "status": entry.get("status")}
    return costs


def step_totals(records: Sequence[RunRecord], costs: dict) -> dict[str, Any]:
    """Runs, steps trained and reused, and steps trained in full-network-step equivalents
    (None when a setting's cost was not measured), overall and by setting."""
    by: dict[tuple[str, int | None], dict[str, int]] = {}
    for record in records:
        row = by.setdefault(_setting_of(record), {"runs": 0, "train": 0, "reused": 0})
        row["runs"] += 1
        row["train"] += int(record.timings.train_steps or 0)
        row["reused"] += int(record.timings.reused_steps or 0)
    equivalents: float | None = 0.0
    unweighted = []
    for setting, row in by.items():
        if setting in costs:
            row["equivalents"] = row["train"] * costs[setting]["ratio"]
            equivalents = None if equivalents is None else equivalents + row["equivalents"]
        elif row["train"]:
            unweighted.append(setting)
            equivalents = None
    return {"runs": sum(r["runs"] for r in by.values()), "train": sum(r["train"] for r in by.values()),
            "reused": sum(r["reused"] for r in by.values()), "equivalents": equivalents,
            "by_setting": by, "unweighted": unweighted,
            "benchmarks": dict(sorted(Counter(r.benchmark for r in records).items()))}


def _steps_row(name: str, totals: dict) -> list[Any]:
    equivalents = totals["equivalents"]
    return [name, totals["runs"], f"{totals['train']:,}", f"{totals['reused']:,}",
            f"{equivalents:,.0f}" if equivalents is not None else "n/a"]


def _smoke_note(extra: dict | None) -> str:
    cap = (extra or {}).get("rounds_cap")
    return (f" **The suite ran with MERGECL_PERF_ROUNDS={cap} (a smoke check): these ratios are "
            "not measurements.**" if cap else "")


def steps_section(before: tuple[list[RunRecord], str] | str, grid: GridState,
                  extra: dict | None, results: Path) -> list[str]:
    """Item 1: the default grid's optimisation steps before and after, raw and step-cost weighted."""
    lines = ["## Default grid: optimisation steps before and after protocol v2", "",
             ("Step counts are deterministic (same grid, same data, same seeds: same steps on any "
              "machine). *Trained*: steps a run took itself (`timings.train_steps`); *reused*: "
              "trained states read from the trajectory store instead (`timings.reused_steps`; a "
              "record copied from an identical run, `copy_of`, counts its steps as reused). "
              "*Full-network-step equivalents*: trained steps weighted by what one step of their "
              "setting costs in full-network steps, measured in the same suite run (below), so "
              "the comparison holds on a machine of any speed."), ""]
    costs = step_costs(extra)
    rows = []
    notes: list[str] = []
    before_totals = None
    if isinstance(before, str):
        notes.append(f"- before: not available -- {before}")
    else:
        records, described = before
        before_totals = step_totals(records, costs)
        rows.append(_steps_row(f"before: {described}", before_totals))
    after_totals = None
    if grid.error:
        notes.append(f"- after: not available -- {grid.error}")
    elif not grid.done:
        notes.append(f"- after: not yet measured -- the store `{results}` holds no current record of "
                     f"the default grid (0 of its {grid.expected} runs done; {grid.stale} stale, "
                     f"{grid.failed} failed, {grid.missing} missing): `make leaderboard` writes them")
    else:
        after_totals = step_totals(grid.done, costs)
        partial = (f"{len(grid.done) - grid.unchecked_tuned} of {grid.expected} runs"
                   + (f" + {grid.unchecked_tuned} tuned" if grid.unchecked_tuned else ""))
        rows.append(_steps_row(f"after: the grid's current records in `{_shown(results)}` ({partial})",
                               after_totals))
    if rows:
        if before_totals and after_totals:
            eq = ("n/a" if before_totals["equivalents"] is None or after_totals["equivalents"] is None
                  or not before_totals["equivalents"]
                  else f"{after_totals['equivalents'] / before_totals['equivalents']:.3f}x")
            train = (f"{after_totals['train'] / before_totals['train']:.3f}x"
                     if before_totals["train"] else "n/a")
            rows.append(["after / before", "", train, "", eq])
        lines += _table(["records", "runs", "steps trained", "steps reused",
                         "full-network-step equivalents"], rows)
        lines.append("")
    lines += notes
    if before_totals is not None:
        benchmarks = ", ".join(f"{b} ({n})" for b, n in before_totals["benchmarks"].items())
        check = ""
        if not isinstance(before, str) and before[1].endswith(f"`{BEFORE_REVISION}`"):
            check = ("; equal to the figure quoted when protocol v2 was planned"
                     if before_totals["train"] == BEFORE_STEPS_QUOTED else
                     f"; **differs from the {BEFORE_STEPS_QUOTED:,} quoted when protocol v2 was planned**")
        lines.append(f"- before: {before_totals['train']:,} steps trained over {benchmarks} runs{check}")
    if after_totals is not None:
        for setting, row in sorted(after_totals["by_setting"].items(), key=lambda kv: str(kv[0])):
            cost = costs.get(setting)
            weight = (f"x {cost['ratio']:.3f} (`{cost['key']}`)" if cost and cost["key"] else
                      "x 1 (full network)" if cost else "no measured step cost")
            lines.append(f"- after, {_setting_name(setting)}: {row['runs']} runs, {row['train']:,} "
                         f"steps trained {weight}, {row['reused']:,} reused")
        benchmarks = ", ".join(f"{b} ({n})" for b, n in after_totals["benchmarks"].items())
        lines.append(f"- after, by benchmark (runs): {benchmarks}")
        incomplete = grid.expected - (len(grid.done) - grid.unchecked_tuned)
        if incomplete:
            lines.append(f"- **partial**: {incomplete} of the grid's {grid.expected} runs have no "
                         f"current record ({grid.stale} stale, {grid.failed} failed, {grid.missing} "
                         "missing); the after figures grow when they run")
        if grid.note:
            lines.append(f"- {grid.note}"
                         + (f"; {grid.unchecked_tuned} tuned records found and counted" if
                            grid.unchecked_tuned else ""))
        missing_costs = after_totals["unweighted"]
        if missing_costs:
            lines.append("- full-network-step equivalents: n/a -- no step-cost ratio for "
                         + ", ".join(_setting_name(s) for s in missing_costs)
                         + f" in the side file (`{SUITE_COMMAND}` measures "
                         + ", ".join(f"`{k}`" for k in STEP_COST_KEYS.values()) + ")")
    return lines + [""]


def _ci(entry: dict) -> str:
    ci = (entry.get("summary") or {}).get("ci95")
    return f" [95% CI {ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""


def step_cost_section(extra: dict | None) -> list[str]:
    """Items 3 and 4: one step's cost vs a full-network step, and AdamW's step variants."""
    lines = ["## What one optimisation step costs (same-run interleaved ratios)", ""]
    records = (extra or {}).get("records") or {}
    k5 = records.get(STEP_COST_KEYS[("full", 5)])
    lora = records.get(STEP_COST_KEYS[("lora", 5)])
    if not k5 and not lora:
        lines.append(f"Not measured: the side file has no `6.step_cost.*` records (run `{SUITE_COMMAND}`).")
    else:
        q25 = ((k5 or lora).get("details") or {}).get("q25_step_s") or {}
        lines.append("Batch 64, 32 px, channels_last, 1 thread (the leaderboard's setting: one thread "
                     "per run, two runs at a time); bare optimisation steps on the same batches, the "
                     "settings in turns; ratio of lower quartiles." + _smoke_note(extra))
        lines.append("")
        if q25.get("full"):
            lines.append(f"- full-network step (protocol v1's: torch's convolutions, AdamW's default "
                         f"form) on this machine: {q25['full'] * 1e3:.0f} ms "
                         "(context only; the ratios below are what carries to another machine)")
        shortcuts = records.get(FAST_CONVS_KEY)
        onednn = records.get(ONEDNN_KEY)
        for entry, name, unit in (
                (k5, "frozen_blocks=5 step on cached features (full parameterisation)", "a full-network step"),
                (lora, "LoRA frozen_blocks=5 step on cached features", "a full-network step"),
                (shortcuts, "the convolution shortcuts (bench/training/fast_convs.py) in that step",
                 "the same step with torch's convolutions"),
                (onednn, "the shortcuts' matrix products by oneDNN (methods/matmul.py) in that step",
                 "the same step with torch's F.linear (MKL)")):
            if entry:
                target = (f"; target {_fmt_target(entry)}: {STATUS_MARK.get(entry.get('status'), entry.get('status'))}"
                          if entry.get("target") is not None else "")
                lines.append(f"- {name}: {_fmt_value(entry['value'], 'x')} {unit}"
                             f"{_ci(entry)}{target}")
    adamw = {k[len(ADAMW_PREFIX):]: v for k, v in sorted(records.items()) if k.startswith(ADAMW_PREFIX)}
    lines.append("")
    if not adamw:
        lines.append("AdamW step variants: not measured (no `7.adamw.*` records in the side file).")
        return lines + [""]
    details = next(iter(adamw.values())).get("details") or {}
    per_step = details.get("q25_step_s") or {}
    lines.append(f"AdamW's step on the frozen_blocks=5 trainable parameters ({details.get('tensors')} "
                 f"tensors, {(details.get('floats') or 0) / 1e6:.2f} M floats, 1 thread), each variant "
                 f"vs torch's default ({details.get('default_implementation', 'n/a')}) in turns. "
                 f"The training strategy runs AdamW {ADOPTED_ADAMW}=True (bench/training/strategy.py), "
                 "adopted on these figures.")
    lines.append("")
    rows = []
    for key, entry in adamw.items():
        name = key.removesuffix("_over_default")
        ci = (entry.get("summary") or {}).get("ci95")
        verdict = ("faster (interval below 1)" if ci and ci[1] < 1 else
                   "slower (interval above 1)" if ci and ci[0] > 1 else "no clear difference")
        rows.append([f"{name}=True", _fmt_value(entry["value"], "x"),
                     f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a",
                     f"{per_step[name] * 1e3:.2f}" if per_step.get(name) else "", verdict])
    lines += _table(["variant", "step / default step", "95% CI", "ms per step", "verdict"], rows)
    lines.append("")
    unavailable = details.get("unavailable") or {}
    for name, why in unavailable.items():
        lines.append(f"- {name}=True: not available in this torch on CPU ({why})")
    faster = [(e["value"], k.removesuffix("_over_default")) for k, e in adamw.items()
              if ((e.get("summary") or {}).get("ci95") or [1, 1])[1] < 1]
    if faster:
        value, best = min(faster)
        lines.append(f"- winner: **{best}=True**, {value:.3f}x the default AdamW step")
        k5_torch = ((k5 or {}).get("details") or {}).get("q25_step_s", {}).get("k5_torch_convs")
        if k5_torch and per_step.get("default"):
            share = per_step["default"] / k5_torch
            lines.append(f"- the default AdamW step is {share:.1%} of a frozen_blocks=5 training step "
                         f"with torch's convolutions (same run), so {best}=True saves about "
                         f"{(1 - value) * share:.1%} of each such step")
    else:
        lines.append("- winner: none -- no variant is faster than torch's default beyond the noise")
    return lines + [""]


# ----------------------------------------------------------------------------- tuning, storage
def tuning_records(directory: Path) -> tuple[list[Any], int]:
    """Tuning records under ``directory`` (``make tune``'s ``--out``: ``DIR/tuning/<benchmark>/
    <label>.json``; ``DIR/<benchmark>/<label>.json`` when DIR is that ``tuning`` folder itself),
    and how many files could not be read as one."""
    from mergecl.bench.orchestration.tuning import TUNING_DIR, TuningRecord

    base = directory / TUNING_DIR if (directory / TUNING_DIR).is_dir() else directory
    found, unreadable = [], 0
    for path in sorted(base.glob("*/*.json")):
        try:
            found.append(TuningRecord.model_validate_json(path.read_text()))
        except (OSError, ValueError):
            unreadable += 1
    return found, unreadable


def tuning_section(directory: Path, summary: Path, out: Path) -> list[str]:
    lines = ["## Tuning cost (`make tune`, i.e. `mergecl tune --all`)", ""]
    if summary.is_file():
        link = repository_link(summary, out.resolve().parent)
        reference = f"[{_shown(summary)}]({link})" if link else f"`{_shown(summary)}`"
        lines.append(f"Every configuration tuned and its validation score: {reference}.")
    else:
        lines.append(f"`{_shown(summary)}` not yet generated (`make tune` writes it).")
    lines.append("")
    records, unreadable = tuning_records(directory) if directory.is_dir() else ([], 0)
    if not records:
        what = "does not exist" if not directory.is_dir() else "holds no tuning record"
        lines.append(f"No tuning cost to report: `{_shown(directory)}` {what} (`make tune` writes "
                     f"`{DEFAULT_TUNING}/tuning/<benchmark>/<label>.json`; pass `--tuning DIR` for "
                     "another directory)" + (f"; {unreadable} unreadable files" if unreadable else "")
                     + ".")
        return lines + [""]
    rows = []
    total = {"rows": 0, "runs": 0, "train": 0, "reused": 0, "seconds": 0.0}
    for benchmark in sorted({r.benchmark for r in records}):
        part = [r for r in records if r.benchmark == benchmark]
        row = {"rows": len(part), "runs": sum(r.cost.runs for r in part),
               "train": sum(r.cost.train_steps for r in part),
               "reused": sum(r.cost.reused_steps for r in part),
               "seconds": sum(r.cost.total_s for r in part)}
        for key in total:
            total[key] += row[key]
        rows.append([benchmark, row["rows"], row["runs"], f"{row['train']:,}", f"{row['reused']:,}",
                     f"{row['seconds'] / 60:.1f}"])
    rows.append(["total", total["rows"], total["runs"], f"{total['train']:,}", f"{total['reused']:,}",
                 f"{total['seconds'] / 60:.1f}"])
    lines.append(f"From the tuning records in `{_shown(directory)}` (`TuningRecord.cost`)"
                 + (f"; {unreadable} unreadable files skipped" if unreadable else "") + ". Run time "
                 "is the runs' own times summed (two runs at a time: about half of it in wall time); "
                 "tuning runs under the default preset (frozen_blocks=5).")
    lines.append("")
    lines += _table(["benchmark", "tuned rows", "runs", "steps trained", "steps reused",
                     "run time (min)"], rows)
    return lines + [""]


def storage_section(trajectories: Path | None) -> list[str]:
    """Item 5: the trajectory store's (and the feature cache's) size on disk."""
    from mergecl.bench.caches import cache_dir, directory_size
    from mergecl.bench.training.trajectories import TrajectoryStore

    lines = ["## Caches on disk", ""]
    try:
        store = TrajectoryStore(trajectories)
        size = store.size()
        where = f"`{_shown(store.root)}`"
        if not Path(store.root).is_dir():
            lines.append(f"- trajectory store {where}: absent (empty; `make leaderboard` fills it)")
        else:
            lines.append(f"- trajectory store {where} (`mergecl trajectories`): {size['bytes'] / 2**20:.1f} "
                         f"MiB in {size['files']} files -- {size['trajectories']} trajectories, "
                         f"{size['steps']} trained states")
    except Exception as err:  # noqa: BLE001 - say what could not be read
        lines.append(f"- trajectory store: could not be read ({type(err).__name__}: {err})")
    try:
        features = cache_dir("features")
        total, files = directory_size(features)
        lines.append(f"- feature cache `{_shown(features)}` (frozen prefix features): "
                     + (f"{total / 2**20:.1f} MiB in {files} files" if features.is_dir() else "absent"))
    except Exception as err:  # noqa: BLE001
        lines.append(f"- feature cache: could not be read ({type(err).__name__}: {err})")
    return lines + [""]


def build_report(results: Path, bench_path: Path, extra_path: Path, out: Path, *,
                 before: str | Path = BEFORE_REVISION, grid: Any = None,
                 tuning: Path | None = None, trajectories: Path | None = None,
                 tuned_summary: Path | None = None) -> str:
    """The page. ``grid``: a ``GridConfig`` (default: the packaged default grid); ``tuning``: the
    tuning directory (default ``<repo>/.mergecl-cache/tuning``); ``trajectories``: the trajectory
    store (default ``$MERGECL_TRAJECTORIES`` or ``~/.cache/mergecl/trajectories``)."""
    from mergecl.bench.config.tuned import TUNED_DIR, TUNED_SUMMARY

    bench, bench_error = _load_json(bench_path)
    extra, extra_error = _load_json(extra_path)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = ["# mergecl performance report", ""]
    lines.append(f"Generated {_when(now)} by `{REPORT_COMMAND}` from `{_shown(bench_path)}` "
                 f"({'pytest-benchmark, ' + _when(bench.get('datetime')) if bench else 'absent'}) and "
                 f"`{_shown(extra_path)}` ({'suite finished ' + _when(extra.get('finished_at')) if extra else 'absent'}).")
    lines.append("")
    lines.append(f"Regenerate: `make bench`, i.e. `{SUITE_COMMAND}` then `{REPORT_COMMAND}`.")
    if extra:
        minutes = (extra.get("suite_seconds") or 0) / 60
        lines.append(f"The measurements below came from `{extra.get('command')}` "
                     f"(exit status {extra.get('exit_status')}, {minutes:.1f} min"
                     f"{', strict' if extra.get('strict') else ''}).{_smoke_note(extra)}")
    if extra_error:
        lines.append(extra_error)
    lines.append("")
    lines += machine_section(extra, bench)
    lines += ratio_sections(extra)
    lines += benchmark_section(bench, bench_error)
    state = grid_state(results, grid)
    try:
        before_records: tuple[list[RunRecord], str] | str = load_before(before)
    except RuntimeError as err:
        before_records = str(err)
    lines += leaderboard_section(results, state)
    lines += steps_section(before_records, state, extra, results)
    lines += step_cost_section(extra)
    lines += tuning_section(tuning if tuning is not None else REPO / DEFAULT_TUNING,
                            tuned_summary if tuned_summary is not None else TUNED_DIR / TUNED_SUMMARY,
                            out)
    lines += storage_section(trajectories)
    return "\n".join(lines).rstrip() + "\n"


def _shown(path: Path | str) -> str:
    """A path as the page shows it: relative to the repository when inside it; a store outside
    it (a cache under the user's home, a scratch disk) by its role, not the machine's path."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(REPO))
    except ValueError:
        home = Path.home().resolve()
        try:
            return "~/" + str(resolved.relative_to(home))
        except ValueError:
            return "(a directory outside the repository and the home folder)"


def main(argv: Sequence[str] | None = None) -> int:
    default_results = Path(os.environ.get("MERGECL_PERF_DIR") or REPO / "results")
    parser = argparse.ArgumentParser(prog="python -m mergecl.bench.reporting.perf_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=default_results,
                        help="results directory (leaderboard records, perf files); default %(default)s")
    parser.add_argument("--json", type=Path, default=None, help="pytest-benchmark JSON (default RESULTS/perf.json)")
    parser.add_argument("--extra", type=Path, default=None, help="side file (default RESULTS/perf_extra.json)")
    parser.add_argument("--out", type=Path, default=None, help="report to write (default RESULTS/perf.md)")
    parser.add_argument("--before", default=BEFORE_REVISION,
                        help="the first leaderboard's records: a git revision (its committed results/) "
                        "or a result-store directory; default %(default)s")
    parser.add_argument("--grid", type=Path, default=None,
                        help="grid YAML whose runs are 'after' (default: the packaged default grid)")
    parser.add_argument("--tuning", type=Path, default=REPO / DEFAULT_TUNING,
                        help="tuning directory (`mergecl tune --out`); default %(default)s")
    parser.add_argument("--trajectories", type=Path, default=None,
                        help="trajectory store (default $MERGECL_TRAJECTORIES or ~/.cache/mergecl/trajectories)")
    args = parser.parse_args(argv)
    results = args.results
    bench_path = args.json or results / "perf.json"
    extra_path = args.extra or results / "perf_extra.json"
    out = args.out or results / "perf.md"
    try:
        grid = default_grid_config(args.grid) if args.grid is not None else None
    except Exception as err:  # noqa: BLE001 - the message names the file
        parser.error(f"--grid {args.grid}: {err}")
    text = build_report(results, bench_path, extra_path, out, before=args.before, grid=grid,
                        tuning=args.tuning, trajectories=args.trajectories)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

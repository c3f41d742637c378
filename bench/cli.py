"""The ``mergecl`` command.

    mergecl run --method M --benchmark B --seed S [--preset P] [--out DIR] [--set key=value ...]
    mergecl leaderboard [--config FILE.yaml] [--preset P] [--out DIR] [--workers N] [--executor E]
    mergecl table [--out DIR] [--paper pnm|magmax] [--format markdown|latex|csv]
    mergecl plot [--out DIR]
    mergecl methods | mergecl benchmarks | mergecl data prepare | mergecl new-method NAME

Every input is validated before any training; refused input writes nothing and exits 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mergecl.bench.config.run_config import ConfigError, load_yaml, parse_overrides

DEFAULT_OUT = "results"
DEFAULT_TUNING_OUT = ".mergecl-cache/tuning"
"""``mergecl tune``'s store (as ``make tune``): its runs are scaffolding, not results; what ships
is ``bench/config/tuned/``."""


def _common_run_options(parser: argparse.ArgumentParser, out: str = DEFAULT_OUT,
                        out_help: str = "result store directory") -> None:
    parser.add_argument("--preset", default=None, help="quick | default | paper")
    parser.add_argument("--out", default=out, help=f"{out_help} (default: {out})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set lr=1e-3 --set params.epsilon=0.5")
    parser.add_argument("--data-root", default=None, help="dataset root (else $MERGECL_DATA, then packaged data)")
    parser.add_argument("--download", action="store_true", help="allow torchvision to download MNIST/FMNIST")
    parser.add_argument("--plugins", action="append", default=[], metavar="FILE.py",
                        help="register the MergeMethod subclasses defined in this file")
    parser.add_argument("--logger", dest="loggers", action="append", default=[],
                        choices=["tensorboard", "wandb", "csv", "text"],
                        help="attach an Avalanche logger (repeatable; writes under <out>/logs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (local executor)")
    parser.add_argument("--threads-per-run", type=int, default=None, help="torch threads per run")
    parser.add_argument("--no-wait", action="store_true", help="SLURM: return once the job array is submitted")
    parser.add_argument("--executor", default="local", choices=["local", "ray", "slurm"])
    parser.add_argument("--address", default=None, help="Ray cluster address (e.g. auto)")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--time-min", type=int, default=None, help="SLURM time limit per run (minutes)")
    parser.add_argument("--gpus-per-node", type=int, default=None)
    parser.add_argument("--cpus-per-task", type=int, default=None)
    parser.add_argument("--mem-gb", type=float, default=None)
    parser.add_argument("--array-parallelism", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mergecl", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one method on one benchmark and seed")
    run.add_argument("--method", required=True)
    run.add_argument("--benchmark", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--label", default=None, help="name of this variant in tables (default: method)")
    _common_run_options(run)

    board = sub.add_parser("leaderboard", help="run the missing runs of a grid, then write tables and plots")
    board.add_argument("--config", default=None, help="grid YAML (default: the packaged leaderboard)")
    _common_run_options(board)
    _executor_options(board)
    board.add_argument("--no-tables", action="store_true", help="only run; write no tables or plots")
    board.add_argument("--tables-only", action="store_true",
                       help="run nothing; write tables and plots from the grid's existing records")

    board.add_argument("--tuned", action="store_true",
                       help="add each tunable row's tuned twin (values from bench/config/tuned/)")

    tune = sub.add_parser("tune", help="select hyper-parameters on the validation split, the same "
                          "budget for every method (see bench/orchestration/tuning.py)")
    tune.add_argument("--config", default=None, help="grid YAML (default: the packaged leaderboard)")
    tune.add_argument("--method", dest="labels", action="append", default=[], metavar="LABEL",
                      help="tune only this row (repeatable)")
    tune.add_argument("--benchmark", dest="tune_benchmarks", action="append", default=[], metavar="NAME",
                      help="tune only on this benchmark (repeatable)")
    tune.add_argument("--all", action="store_true", help="every tunable row and benchmark of the grid, "
                      "then ship the choices as bench/config/tuned/<benchmark>.yaml")
    _common_run_options(tune, DEFAULT_TUNING_OUT, "store of the tuning runs and of their records "
                        "(<out>/tuning/); the choices ship as bench/config/tuned/")
    _executor_options(tune)

    table = sub.add_parser("table", help="tables from existing records")
    table.add_argument("--out", default=DEFAULT_OUT)
    table.add_argument("--paper", default=None, help="print a paper's table layout (pnm, magmax)")
    table.add_argument("--mini", action="store_true", help="with --paper: the CPU mini edition")
    table.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    table.add_argument("--benchmarks", nargs="*", default=None)

    plot = sub.add_parser("plot", help="plots from existing records")
    plot.add_argument("--out", default=DEFAULT_OUT)

    sub.add_parser("methods", help="list registered methods").add_argument(
        "--plugins", action="append", default=[], metavar="FILE.py")
    sub.add_parser("benchmarks", help="list benchmarks and whether their data is present")

    trajectories = sub.add_parser("trajectories", help="size of the trajectory store (trained states "
                                  "shared between runs), or --clean to empty it")
    trajectories.add_argument("--dir", default=None, help="the store (default: $MERGECL_TRAJECTORIES "
                              "or ~/.cache/mergecl/trajectories)")
    trajectories.add_argument("--clean", action="store_true", help="delete every stored trajectory")

    data = sub.add_parser("data", help="prepare offline datasets")
    data.add_argument("action", choices=["prepare", "status"])
    data.add_argument("--data-root", default=None)
    data.add_argument("--download", action="store_true")

    new = sub.add_parser("new-method", help="scaffold a method plugin and its test")
    new.add_argument("name")
    new.add_argument("--dir", default=".", help="where to write <name>.py and test_<name>.py")
    return parser


# ------------------------------------------------------------------------------ helpers
def _load_plugins(paths: Sequence[str]) -> None:
    from mergecl.methods.registry import UnknownMethodError, load_plugin_file

    for path in paths:
        try:
            load_plugin_file(path)
        except UnknownMethodError as exc:
            raise ConfigError(str(exc)) from None


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = parse_overrides(args.overrides)
    if getattr(args, "loggers", None):
        overrides["loggers"] = list(dict.fromkeys(args.loggers))
        overrides.setdefault("log_dir", str(Path(os.path.abspath(args.out)) / "logs"))
    if args.data_root:
        overrides["data_root"] = args.data_root
    if args.download:
        overrides["download"] = True
    return overrides


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def _records(out: str) -> list:
    from mergecl.bench.orchestration.store import ResultStore

    return ResultStore(out).records()


# ------------------------------------------------------------------------------ commands
def cmd_run(args: argparse.Namespace) -> int:
    from mergecl.bench.config.run_config import resolve_run
    from mergecl.bench.config.validation import validate_run
    from mergecl.bench.orchestration.runner import run_and_store
    from mergecl.bench.orchestration.store import ResultStore, RunKey

    _load_plugins(args.plugins)
    cfg = resolve_run(args.method, args.benchmark, args.seed, args.preset or "default",
                      _cli_overrides(args), label=args.label)
    validate_run(cfg)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc=f"{cfg.label} / {cfg.benchmark} / seed {cfg.seed}", unit="exp", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    status = run_and_store(cfg, args.out, progress=progress, retry_failed=args.retry_failed)
    if bar is not None:
        bar.close()
    record = ResultStore(args.out).read(RunKey.of(cfg))
    path = ResultStore(args.out).path(RunKey.of(cfg))
    if status == "locked":
        print(f"another process is running this run ({path}); nothing done")
        return 0
    if record is None:
        print(f"no record at {path}")
        return 1
    if not record.ok or record.metrics is None:
        print(f"run failed: {record.error} (record: {path})")
        return 1
    shown = ", ".join(f"{k}={v:.4f}" for k, v in record.metrics.model_dump().items() if v is not None)
    print(f"{'already done' if status == 'done' else 'done'}: {cfg.label} on {cfg.benchmark} seed {cfg.seed}: "
          f"{shown} ({record.timings.total_s} s) -> {path}")
    return 0


def _grid_from_args(args: argparse.Namespace):
    from mergecl.bench.config.grid_config import default_grid, parse_grid

    data = load_yaml(args.config) if args.config else default_grid()
    return data, parse_grid(data)


def cmd_leaderboard(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from mergecl.bench.config.grid_config import expand_grid
    from mergecl.bench.config.validation import validate_grid
    from mergecl.bench.reporting.leaderboard import write_grid_leaderboard

    _load_plugins(args.plugins)
    raw, grid = _grid_from_args(args)
    runs = expand_grid(grid, _cli_overrides(args), preset=args.preset, tuned=True if args.tuned else None)
    validate_grid(runs)
    _say(args, f"grid: {len(grid.methods)} methods x {len(grid.benchmarks)} benchmarks x "
               f"{len(grid.seeds)} seeds = {len(runs)} runs, preset {args.preset or grid.preset}")
    if args.tables_only:
        command = "mergecl " + " ".join(shlex.quote(a) for a in argv)
        for path in write_grid_leaderboard(args.out, runs, grid, command, None):
            _say(args, f"wrote {path}")
        return 0
    from mergecl.bench.orchestration.executors import execute

    slurm = _slurm_options(args)
    started = time.perf_counter()
    summary = execute(runs, args.out, executor=args.executor, workers=args.workers,
                      threads_per_run=args.threads_per_run, quiet=args.quiet,
                      ray_address=args.address, slurm=slurm, retry_failed=args.retry_failed)
    wall = time.perf_counter() - started
    _say(args, f"executed: {summary}")
    if not args.no_tables:
        command = "mergecl " + " ".join(shlex.quote(a) for a in argv)
        write_grid_leaderboard(args.out, runs, grid, command, wall)
    return 0


def _slurm_options(args: argparse.Namespace):
    if args.executor != "slurm":
        return None
    from mergecl.bench.orchestration.executors import SlurmOptions

    options = {k: v for k, v in {
        "partition": args.partition, "time_min": args.time_min, "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb,
        "array_parallelism": args.array_parallelism}.items() if v is not None}
    return SlurmOptions(**options, wait=not args.no_wait)


def cmd_tune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from mergecl.bench.config.tuned import TunedChoice, write_tuned
    from mergecl.bench.config.validation import method_class, validate_grid
    from mergecl.bench.orchestration.executors import execute
    from mergecl.bench.orchestration.store import ResultStore
    from mergecl.bench.orchestration.tuning import (
        search_space,
        tunable_entries,
        tuning_plan,
        tuning_record,
        write_tuning_record,
    )

    _load_plugins(args.plugins)
    _, grid = _grid_from_args(args)
    entries = tunable_entries(grid)
    if args.labels:
        unknown = sorted(set(args.labels) - {e.label for e in entries})
        if unknown:
            raise ConfigError(f"--method {unknown}: not a tunable row of the grid; accepted: "
                              f"{', '.join(e.label for e in entries)}")
        entries = [e for e in entries if e.label in args.labels]
    benchmarks = args.tune_benchmarks or grid.tune.benchmarks or grid.benchmarks
    unknown = sorted(set(benchmarks) - set(grid.benchmarks))
    if unknown:
        raise ConfigError(f"--benchmark {unknown}: not in the grid; accepted: {', '.join(grid.benchmarks)}")
    if not args.all and not args.labels:
        raise ConfigError("name the rows to tune with --method LABEL, or tune the whole grid with --all")
    settings = grid.tune
    plan = tuning_plan(grid, settings, entries, benchmarks, _cli_overrides(args), args.preset)
    runs = [cfg for _, cfgs in plan.values() for cfg in cfgs]
    validate_grid(runs)
    _say(args, f"tuning: {len(entries)} rows x {len(benchmarks)} benchmarks, budget {settings.budget} "
               f"({settings.search}), seeds {settings.seeds}: {len(runs)} runs")
    execute(runs, args.out, executor=args.executor, workers=args.workers,
            threads_per_run=args.threads_per_run, quiet=args.quiet, ray_address=args.address,
            slurm=_slurm_options(args), retry_failed=args.retry_failed)
    store = ResultStore(args.out)
    command = "mergecl " + " ".join(shlex.quote(a) for a in argv)
    shipped: dict[str, dict[str, TunedChoice]] = {}
    finished = []
    for (label, benchmark), (cands, cfgs) in plan.items():
        entry = next(e for e in entries if e.label == label)
        record = tuning_record(entry, benchmark, settings, cands, cfgs, store,
                               search_space(entry, method_class(entry.method).Params))
        path = write_tuning_record(args.out, record)
        finished.append(record)
        print(f"{benchmark} / {label}: {record.choice} (validation {record.metric} "
              f"{record.score:.4f}; {record.evaluated} configurations"
              f"{'; at the edge: ' + ', '.join(record.edge) if record.edge else ''}) -> {path}")
        shipped.setdefault(benchmark, {})[label] = TunedChoice(
            params=record.choice, tuning_hash=record.digest(), score=record.score, metric=record.metric,
            edge=record.edge, protocol=record.protocol)
    if args.all:
        from mergecl.bench.config.tuned import TUNED_SUMMARY, tuned_directory
        from mergecl.bench.orchestration.store import atomic_write_text
        from mergecl.bench.orchestration.tuning import tuning_summary

        for benchmark, choices in shipped.items():
            print(f"wrote {write_tuned(benchmark, choices, command)}")
        summary = atomic_write_text(tuned_directory() / TUNED_SUMMARY, tuning_summary(finished, command))
        print(f"wrote {summary}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    records = _records(args.out)
    if args.paper:
        from mergecl.bench.reporting.paper import mini_table, paper_table

        fmt = "markdown" if args.format == "csv" else args.format
        try:
            text = mini_table(args.paper, records, fmt=fmt) if args.mini else paper_table(args.paper, records, fmt=fmt)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(text)
        return 0
    from mergecl.bench.reporting.tables import leaderboard_frame, render

    if not records:
        print(f"no records under {args.out!r}; run `mergecl leaderboard` or `mergecl run` first")
        return 1
    print(render(leaderboard_frame(records, benchmarks=args.benchmarks), args.format))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from mergecl.bench.reporting.plots import plot_all

    for path in plot_all(_records(args.out), Path(args.out) / "plots"):
        print(path)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from mergecl.methods.registry import available, get_method
    from tabulate import tabulate

    _load_plugins(args.plugins)
    from mergecl.methods.base import tunables

    rows = []
    for name in available():
        cls = get_method(name)
        hyper = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items()) or "—"
        spaces = tunables(cls.Params)
        tuned = "; ".join(f"{k} ∈ {v}" for k, v in spaces.items()) or "—"
        rows.append([name, cls.family, cls.timing, cls.paper, "/".join(cls.parameterisations), hyper, tuned])
    print(tabulate(rows, headers=["method", "family", "timing", "paper", "parameterisations",
                                  "hyper-parameters (defaults)", "tunable (search space)"],
                   tablefmt="github"))
    from mergecl.methods.registry import ALIASES

    print("\nAliases (FusionBench's names): " + "; ".join(
        f"{alias} = {method} {params}" for alias, (method, params) in sorted(ALIASES.items())))
    return 0


def cmd_trajectories(args: argparse.Namespace) -> int:
    from mergecl.bench.training.trajectories import TrajectoryStore

    store = TrajectoryStore(args.dir)
    size = store.size()
    print(f"trajectory store {store.root}: {size['trajectories']} trajectories, {size['steps']} "
          f"trained states, {size['bytes'] / 2**20:.1f} MiB")
    if args.clean:
        print(f"deleted {store.clean() / 2**20:.1f} MiB")
    return 0


def cmd_benchmarks(args: argparse.Namespace) -> int:
    from mergecl.bench.streams import datasets as data
    from mergecl.bench.streams.benchmarks import OFFLINE_BENCHMARKS, paper_benchmark_names
    from tabulate import tabulate

    status = {s["name"]: s for s in data.dataset_status()}
    rows = []
    for spec in OFFLINE_BENCHMARKS.values():
        present = all(status.get(d, {}).get("available") for d in spec.datasets)
        rows.append([spec.name, spec.scenario, spec.description, ", ".join(spec.datasets),
                     "yes" if present else "missing: " + "; ".join(
                         str(status.get(d, {}).get("how", "")) for d in spec.datasets if not status.get(d, {}).get("available"))])
    for name in paper_benchmark_names():
        rows.append([name, "class-incremental", "paper scale", name[:-2], "needs --data-root"])
    print(tabulate(rows, headers=["benchmark", "scenario", "description", "datasets", "data present"],
                   tablefmt="github"))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mergecl.bench.streams import datasets as data

    if args.action == "status":
        for row in data.dataset_status(data_root=args.data_root):
            print(row)
        return 0
    report = data.prepare_all(data_root=args.data_root, download=args.download)
    for name, info in report.items():
        print(f"{name}: {info}")
    return 0


def cmd_new_method(args: argparse.Namespace) -> int:
    from mergecl.bench.scaffold import write_scaffold

    for path in write_scaffold(args.name, Path(args.dir)):
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "leaderboard":
            return cmd_leaderboard(args, argv)
        if args.command == "tune":
            return cmd_tune(args, argv)
        handlers = {"table": cmd_table, "plot": cmd_plot, "methods": cmd_methods,
                    "benchmarks": cmd_benchmarks, "data": cmd_data, "new-method": cmd_new_method,
                    "trajectories": cmd_trajectories}
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"mergecl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

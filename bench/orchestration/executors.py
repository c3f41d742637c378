"""Executors: *where* the runs of a grid execute — a local process pool, Ray, or SLURM.

There is one code path for "which runs are missing" (:func:`missing_runs`, i.e. the result
store's one rule) and one for doing and recording a run
(:func:`mergecl.bench.orchestration.runner.run_and_store`, which takes the per-run lock, never
redoes a finished run and writes the record atomically). An executor
only decides in which process ``run_and_store`` is called, so every executor resumes the same
way: rerun the same command and only the missing runs are done. Two executors (or two
machines) working on the same grid and output directory never run one run twice.

``local``
    ``workers`` processes started with ``spawn`` (a fresh interpreter: no inherited torch
    thread pools, no inherited locks); ``workers × threads_per_run ≤`` the usable cores.
    Default: ``workers = min(#missing, cores)``, ``threads_per_run = cores // workers``.
    ``workers=1`` runs everything in this process (easiest to debug).
``ray``
    each missing run is a Ray task with ``num_cpus=threads_per_run`` and one GPU when the
    run's ``device`` is CUDA. ``ray_address=None`` starts (and afterwards stops) a local
    instance; ``"auto"`` or ``"ray://host:10001"`` joins a running cluster. Every node must
    have mergecl installed and see ``out`` at the same path (shared file system).
``slurm``
    the missing runs are one submitit job array (``SlurmOptions``); job logs go to
    ``out/_submitit``. ``SlurmOptions(cluster="local")`` runs the same path on this machine
    through submitit's local executor (tests, dry runs).

Identical runs are run once (all executors): when two rows of a grid have the same benchmark,
seed and config hash — e.g. a tuned row whose chosen values are the method's defaults — only
the first is run, and the others get a copy of its record (their own label and row fields,
``copy_of`` naming the first, zero run time), written when the first has finished.

``run_function`` (all executors) is the run function injected into the workers — a function,
``"module:function"`` or ``"/path/to/file.py:function"`` with the signature of
:func:`mergecl.bench.training.run.run_one` (``(cfg, progress=None) -> RunRecord``); ``None``
(real runs) means ``run_one``. A string is imported inside each worker, so it works across
processes and machines; a function travels by reference (it must be importable there).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mergecl.bench.config.run_config import ConfigError, RunConfig
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import ResultStore, RunKey

ExecutorName = Literal["local", "ray", "slurm"]
EXECUTORS: tuple[str, ...] = ("local", "ray", "slurm")

RAY_MISSING = "--executor ray needs `pip install 'mergecl[ray]'`"
SUBMITIT_MISSING = "--executor slurm needs `pip install 'mergecl[slurm]'`"

RunFunctionSpec = "Callable[..., Any] | str | None"
Payload = tuple[dict[str, Any], str, bool, Any]

__all__ = [
    "EXECUTORS",
    "ExecutionSummary",
    "SlurmOptions",
    "available_cpus",
    "execute",
    "missing_runs",
    "plan_local",
]


# ---------------------------------------------------------------------------- options / summary
@dataclass
class SlurmOptions:
    """Job-array resources for ``executor="slurm"`` (one array task per missing run).

    ``cpus_per_task`` defaults to ``threads_per_run`` (else 1) and becomes each run's torch
    thread count. ``extra`` holds further ``#SBATCH`` options without the dashes
    (``{"account": "abc", "qos": "high"}``); ``setup`` lines run before each task (e.g.
    ``"source /path/.venv/bin/activate"``). ``cluster`` is ``"slurm"``, or ``"local"`` /
    ``"debug"`` to exercise the same path without SLURM. With ``wait=False`` :func:`execute`
    returns once the array is submitted (the job ids are in the summary); rerun later to see
    what is done — the store is the source of truth.
    """

    partition: str | None = None
    time_min: int = 120
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    job_name: str = "mergecl"
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    wait: bool = True

    def check(self) -> None:
        problems = []
        if self.cluster not in ("slurm", "local", "debug"):
            problems.append(
                f"cluster {self.cluster!r} not accepted; expected slurm, local or debug"
            )
        if not isinstance(self.time_min, int) or self.time_min < 1:
            problems.append(
                f"--time-min must be a positive number of minutes (got {self.time_min!r})"
            )
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            problems.append(f"--gpus-per-node must be an integer >= 0 (got {self.gpus_per_node!r})")
        if self.cpus_per_task is not None and (
            not isinstance(self.cpus_per_task, int) or self.cpus_per_task < 1
        ):
            problems.append(f"--cpus-per-task must be an integer >= 1 (got {self.cpus_per_task!r})")
        if self.mem_gb is not None and not (
            isinstance(self.mem_gb, (int, float)) and self.mem_gb > 0
        ):
            problems.append(f"--mem-gb must be a positive number (got {self.mem_gb!r})")
        if self.array_parallelism is not None and (
            not isinstance(self.array_parallelism, int) or self.array_parallelism < 1
        ):
            problems.append(
                f"--array-parallelism must be an integer >= 1 (got {self.array_parallelism!r})"
            )
        if not isinstance(self.extra, dict):
            problems.append(f"extra SLURM parameters must be a mapping (got {self.extra!r})")
        if problems:
            raise ConfigError("bad SLURM options: " + "; ".join(problems))


@dataclass
class ExecutionSummary:
    """What one :func:`execute` call did.

    ``done`` counts runs that already had a record (ok, or failed and not retried) — either
    before the call or because another process finished them meanwhile; ``locked`` runs were
    being run by another process at the time; ``errors`` are runs that ended without a record
    (a worker crash, a killed job); ``pending`` runs were submitted but not waited for.
    """

    executor: str
    total: int
    submitted: int = 0
    ok: int = 0
    failed: int = 0
    done: int = 0
    locked: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    workers: int | None = None
    threads_per_run: int | None = None
    job_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    copied: int = 0

    @property
    def complete(self) -> bool:
        """Every run of the grid has a record (ok or failed)."""
        return self.ok + self.failed + self.done == self.total

    def count(self, status: str) -> None:
        if status not in ("ok", "failed", "done", "locked"):
            raise RuntimeError(f"run_and_store returned unexpected status {status!r}")
        setattr(self, status, getattr(self, status) + 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}

    def __str__(self) -> str:
        parts = [
            f"{self.total} runs",
            f"{self.ok} ok",
            f"{self.failed} failed",
            f"{self.done} already done",
        ]
        if self.locked:
            parts.append(f"{self.locked} running elsewhere")
        if self.pending:
            parts.append(f"{self.pending} submitted, not waited for")
        if self.errors:
            parts.append(f"{len(self.errors)} crashed without a record")
        return f"[{self.executor}] " + ", ".join(parts) + f" in {self.wall_s:.1f}s"


# ---------------------------------------------------------------------------- the store's view
def _unique(cfgs: Sequence[RunConfig]) -> list[RunConfig]:
    """Drop exact duplicates; refuse two different configs for one record path."""
    seen: dict[RunKey, str] = {}
    unique = []
    for cfg in cfgs:
        if not isinstance(cfg, RunConfig):
            raise ConfigError(f"expected RunConfig objects, got {type(cfg).__name__}")
        key, digest = RunKey.of(cfg), cfg.digest()
        if key in seen:
            if seen[key] != digest:
                raise ConfigError(
                    f"two different configurations of {key.benchmark}/{key.label}/seed{key.seed} "
                    "in one grid; give the variants distinct labels"
                )
            continue
        seen[key] = digest
        unique.append(cfg)
    return unique


def identical_runs(cfgs: Sequence[RunConfig]) -> dict[RunKey, RunConfig]:
    """{key of a run: the earlier run of ``cfgs`` it is identical to} — the same benchmark,
    seed and config hash (the label and the row's description are not hashed)."""
    first: dict[tuple[str, int, str], RunConfig] = {}
    copies: dict[RunKey, RunConfig] = {}
    for cfg in cfgs:
        identity = (cfg.benchmark, cfg.seed, cfg.digest())
        if identity in first:
            copies[RunKey.of(cfg)] = first[identity]
        else:
            first[identity] = cfg
    return copies


def copy_record(cfg: RunConfig, source: RunRecord) -> RunRecord:
    """``source``'s results under ``cfg``'s row: its identity fields, ``copy_of`` the source's
    label, no run time of its own (the steps count as reused)."""
    from mergecl.bench.orchestration.records import Timings

    reused = (source.timings.train_steps or 0) + source.timings.reused_steps
    return source.model_copy(update={
        "label": cfg.label or cfg.method, "config": cfg.model_dump(mode="json"),
        "preset": cfg.preset, "variant": cfg.variant, "base_label": cfg.base_label,
        "tuned_values": cfg.tuned_values, "tuning_hash": cfg.tuning_hash,
        "copy_of": source.label,
        "timings": Timings(train_s=0.0, train_steps=0, reused_steps=reused, eval_s=0.0,
                           merge_s=0.0, total_s=0.0),
    })


def _write_copies(copies: Sequence[tuple[RunConfig, RunConfig]], out: Path,
                  reporter: _Reporter) -> None:
    store = ResultStore(out)
    for cfg, source_cfg in copies:
        source = store.read(RunKey.of(source_cfg))
        if source is None or not source.ok or source.config_hash != cfg.digest():
            reporter.error(cfg, RuntimeError(
                f"not copied: its identical run {source_cfg.label!r} has no finished record"))
            continue
        store.write(copy_record(cfg, source))
        reporter.summary.copied += 1
        reporter.status(cfg, "ok")


def stream_length(cfg: RunConfig) -> int:
    """The number of experiences ``cfg`` trains on: its ``n_experiences``, else its benchmark's
    default (0 for a benchmark the registry does not know, e.g. a plugin's)."""
    if cfg.n_experiences is not None:
        return cfg.n_experiences
    from mergecl.bench.streams.benchmarks import get_benchmark

    try:
        return get_benchmark(cfg.benchmark).default_experiences
    except ConfigError:  # get_benchmark's refusal of a name it does not know
        return 0


def longest_streams_first(cfgs: Sequence[RunConfig]) -> list[RunConfig]:
    """The runs in submission order: the longest streams first, the grid's order otherwise
    (a stable sort). A run's cost grows with its stream, so the long runs start while every
    worker is busy and the short ones fill the workers' tail at the end (in grid order, the
    10-domain stream's DOP runs, the grid's longest, could start last and leave a worker idle)."""
    return sorted(cfgs, key=lambda cfg: -stream_length(cfg))


def missing_runs(
    cfgs: Sequence[RunConfig], out: str | Path, retry_failed: bool = False
) -> list[RunConfig]:
    """The configs (in input order, duplicates once) whose record is missing or stale —
    or failed, with ``retry_failed``. The result store alone decides."""
    unique = _unique(cfgs)
    store = ResultStore(out)
    wanted = [(RunKey.of(cfg), cfg.digest()) for cfg in unique]
    needed = set(store.missing(wanted, retry_failed=retry_failed))
    return [cfg for cfg in unique if RunKey.of(cfg) in needed]


# ---------------------------------------------------------------------------- resources
def available_cpus() -> int:
    """Cores this process may use (CPU affinity / cgroup-restricted sets respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_local(
    n_runs: int,
    workers: int | None = None,
    threads_per_run: int | None = None,
    cpus: int | None = None,
) -> tuple[int, int]:
    """``(workers, threads_per_run)`` for ``n_runs`` runs on ``cpus`` cores; no oversubscription."""
    cpus = cpus or available_cpus()
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be an integer >= 1 (got {workers!r})")
    if threads_per_run is not None and (
        not isinstance(threads_per_run, int) or threads_per_run < 1
    ):
        raise ConfigError(f"--threads-per-run must be an integer >= 1 (got {threads_per_run!r})")
    if workers is None:
        workers = cpus // threads_per_run if threads_per_run else cpus
    workers = max(1, min(workers, n_runs))  # no idle workers
    if threads_per_run is None:
        threads_per_run = max(1, cpus // workers)
    if workers * threads_per_run > cpus:
        raise ConfigError(
            f"--workers {workers} × --threads-per-run {threads_per_run} exceeds the {cpus} "
            f"usable CPU cores; choose workers × threads ≤ {cpus}"
        )
    return workers, threads_per_run


# ---------------------------------------------------------------------------- the worker side
def _load_callable(spec: str) -> Callable[..., dict[str, Any]]:
    """``"pkg.module:func"`` or ``"/path/file.py:func"`` → the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"run_function {spec!r} must look like 'module:function' or 'file.py:function'"
        )
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            name = "mergecl_run_function_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
            module = sys.modules.get(name)
            if module is None:
                spec_obj = importlib.util.spec_from_file_location(name, path)
                if spec_obj is None or spec_obj.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec_obj)
                sys.modules[name] = module
                try:
                    spec_obj.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(target)
        function = getattr(module, attr)
    except (ImportError, AttributeError, OSError) as exc:
        raise ConfigError(f"run_function {spec!r} cannot be loaded: {exc}") from None
    if not callable(function):
        raise ConfigError(f"run_function {spec!r} is not callable")
    return function


def _resolve_run_function(spec: Any) -> Callable[..., Any] | None:
    """A run function from its spec: a callable as is, a string imported, None for run_one."""
    if spec is None or callable(spec):
        return spec
    return _load_callable(spec)


def _run_payload(payload: Payload, progress: Callable[[int, int], None] | None = None) -> str:
    """Worker entry point (any executor): ``run_and_store`` one run; returns its status."""
    cfg, out, retry_failed, run_function = payload
    from mergecl.bench.orchestration import runner

    return runner.run_and_store(cfg, out, run=_resolve_run_function(run_function),
                                progress=progress, retry_failed=retry_failed)


def _init_local_worker(threads: int) -> None:
    """Pool initializer: cap BLAS/OpenMP pools before torch is imported in the worker."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: a pool worker gets SIGTERM when the driver dies (no orphaned runs burning CPU).

    A killed worker leaves no record (records are written atomically at the end of a run) and
    its per-run lock is released by the kernel, so the next invocation simply redoes that run.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - best effort
        pass


# ---------------------------------------------------------------------------- the driver side
def _describe(cfg: RunConfig) -> str:
    return f"{cfg.benchmark}/{cfg.label or cfg.method}/seed{cfg.seed}"


@dataclass
class _Grid:
    """What every executor gets: the missing runs, where their records go, the resource request
    and the run options that travel with each payload."""

    todo: list[RunConfig]
    out: Path
    workers: int | None
    threads_per_run: int | None
    retry_failed: bool
    run_function: Any
    reporter: _Reporter

    def with_threads(self, threads: int) -> list[RunConfig]:
        """The runs with ``threads`` torch threads each."""
        return [cfg.model_copy(update={"threads": threads}) for cfg in self.todo]

    def payload(self, cfg: RunConfig) -> Payload:
        """What a worker gets for ``cfg``: its config (data root made absolute; the root is not
        in the config hash), the store, and the run options."""
        data = cfg.model_dump(mode="json")
        if data.get("data_root") and not os.path.isabs(data["data_root"]):
            data["data_root"] = os.path.abspath(data["data_root"])
        return (data, str(self.out), bool(self.retry_failed), self.run_function)


class _Reporter:
    """Counts statuses into the summary, advances the bar, names failures."""

    def __init__(self, summary: ExecutionSummary, out: Path, bar: Any, quiet: bool) -> None:
        self.summary, self.out, self.bar, self.quiet = summary, out, bar, quiet
        self.locked: list[RunConfig] = []

    def recheck_locked(self, retry_failed: bool) -> None:
        """Runs that were locked by another process and have a record by now count as done."""
        store = ResultStore(self.out)
        for cfg in self.locked:
            status = store.status(RunKey.of(cfg), cfg.digest())
            if status == "done" or (status == "failed" and not retry_failed):
                self.summary.locked -= 1
                self.summary.done += 1
        self.locked = []

    def status(self, cfg: RunConfig, status: str) -> None:
        self.summary.count(status)
        if status == "locked":
            self.locked.append(cfg)
        self.bar.update(1)
        if status == "failed" and not self.quiet:
            record = ResultStore(self.out).read(RunKey.of(cfg))
            self.bar.write(f"failed: {_describe(cfg)}: {record.error if record else 'no record'}")

    def error(self, cfg: RunConfig, exc: BaseException) -> None:
        message = f"{_describe(cfg)}: {type(exc).__name__}: {exc}"
        self.summary.errors.append(message)
        self.bar.update(1)
        if not self.quiet:
            self.bar.write(f"error (no record written): {message}")


def execute(
    cfgs: Sequence[RunConfig],
    out: str | Path,
    executor: ExecutorName = "local",
    workers: int | None = None,
    threads_per_run: int | None = None,
    progress: bool = True,
    quiet: bool = False,
    ray_address: str | None = None,
    slurm: SlurmOptions | None = None,
    retry_failed: bool = False,
    run_function: Callable[..., Any] | str | None = None,
) -> ExecutionSummary:
    """Run the missing runs of ``cfgs`` into the store at ``out``; see the module docstring.

    Configs should have been validated (``bench/config/validation.py``) first; a
    :class:`ConfigError` raised by a run still aborts the grid (queued runs are cancelled).
    """
    if executor not in EXECUTORS:
        raise ConfigError(
            f"executor {executor!r} not accepted; expected one of {', '.join(EXECUTORS)}"
        )
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(os.path.abspath(out))  # workers may start in another directory
    unique = _unique(cfgs)
    missing = missing_runs(unique, out, retry_failed=retry_failed)
    identical = identical_runs(unique)
    copies = [(cfg, identical[RunKey.of(cfg)]) for cfg in missing if RunKey.of(cfg) in identical]
    todo = longest_streams_first([cfg for cfg in missing if RunKey.of(cfg) not in identical])
    summary = ExecutionSummary(executor=executor, total=len(unique), done=len(unique) - len(missing))
    if isinstance(run_function, str):
        _load_callable(run_function)  # fail here, not in every worker
    bar = tqdm(
        total=len(unique),
        initial=summary.done,
        desc=f"runs ({executor})",
        unit="run",
        disable=quiet or not progress,
        dynamic_ncols=True,
    )
    reporter = _Reporter(summary, out, bar, quiet)
    grid = _Grid(todo, out, workers, threads_per_run, retry_failed, run_function, reporter)
    try:
        if todo:
            if executor == "local":
                _execute_local(grid)
            elif executor == "ray":
                _execute_ray(grid, ray_address, quiet)
            else:
                _execute_slurm(grid, slurm or SlurmOptions())
            reporter.recheck_locked(retry_failed)
        if copies:
            _write_copies(copies, out, reporter)
    finally:
        bar.close()
        summary.wall_s = round(time.perf_counter() - t0, 3)
    return summary


def _execute_local(grid: _Grid) -> None:
    reporter = grid.reporter
    workers, threads = plan_local(len(grid.todo), grid.workers, grid.threads_per_run)
    summary = reporter.summary
    summary.workers, summary.threads_per_run = workers, threads
    todo = grid.with_threads(threads)
    summary.submitted = len(todo)

    if workers == 1:
        for cfg in todo:

            def step(done: int, total: int, _cfg: RunConfig = cfg) -> None:
                reporter.bar.set_postfix_str(f"{_describe(_cfg)} experience {done}/{total}")

            status = _run_payload(grid.payload(cfg), progress=step)
            reporter.status(cfg, status)
        return

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_local_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(_run_payload, grid.payload(cfg)): cfg for cfg in todo}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    cfg = futures[future]
                    try:
                        status = future.result()
                    except ConfigError:
                        raise
                    except Exception as exc:  # a worker died: no record; a rerun resumes
                        reporter.error(cfg, exc)
                    else:
                        reporter.status(cfg, status)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _execute_ray(grid: _Grid, address: str | None, quiet: bool) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None

    todo, workers, threads_per_run = grid.todo, grid.workers, grid.threads_per_run
    reporter = grid.reporter
    summary = reporter.summary
    if threads_per_run is not None and threads_per_run < 1:
        raise ConfigError(f"--threads-per-run must be an integer >= 1 (got {threads_per_run!r})")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1 (got {workers!r})")
    started_here = False
    if not ray.is_initialized():
        options: dict[str, Any]
        if address:  # an existing cluster: its own settings apply
            options = {"address": address}
            if quiet and not address.startswith("ray://"):
                options["log_to_driver"] = False
        else:  # a local instance for this grid only
            options = {
                "include_dashboard": False,
                "num_cpus": available_cpus(),
                "log_to_driver": not quiet,
            }
        try:
            ray.init(**options)
        except ConnectionError as exc:
            raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        started_here = True
    try:
        if threads_per_run is None and not address and started_here:
            _, threads_per_run = plan_local(
                len(todo), workers, None, int(ray.cluster_resources().get("CPU", 1))
            )
        if threads_per_run is not None:
            todo = grid.with_threads(threads_per_run)
        summary.workers, summary.threads_per_run = workers, threads_per_run
        task = ray.remote(_run_payload)
        limit = workers or len(todo)
        queue = list(todo)
        running: dict[Any, RunConfig] = {}

        def submit(cfg: RunConfig) -> None:
            gpus = 1 if cfg.device.startswith("cuda") else 0
            ref = task.options(
                num_cpus=cfg.threads, num_gpus=gpus, name=f"mergecl:{_describe(cfg)}"
            ).remote(grid.payload(cfg))
            running[ref] = cfg
            summary.submitted += 1

        while queue or running:
            while queue and len(running) < limit:
                submit(queue.pop(0))
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                cfg = running.pop(ref)
                try:
                    status = ray.get(ref)
                except Exception as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, ConfigError) or isinstance(exc, ConfigError):
                        for other in running:
                            ray.cancel(other)
                        raise ConfigError(
                            str(cause if isinstance(cause, ConfigError) else exc)
                        ) from None
                    reporter.error(cfg, exc)
                else:
                    reporter.status(cfg, status)
    finally:
        if started_here:
            ray.shutdown()


def _execute_slurm(grid: _Grid, options: SlurmOptions) -> None:
    options.check()
    try:
        import submitit
    except ImportError:
        raise ConfigError(SUBMITIT_MISSING) from None
    if options.cluster == "slurm" and (
        shutil.which("sbatch") is None or shutil.which("srun") is None
    ):
        raise ConfigError(
            "--executor slurm: `sbatch`/`srun` not found; run this on a SLURM login node"
        )

    reporter, workers = grid.reporter, grid.workers
    summary = reporter.summary
    cpus = options.cpus_per_task or grid.threads_per_run or 1
    threads = grid.threads_per_run or cpus
    todo = grid.with_threads(threads)
    summary.workers, summary.threads_per_run = options.array_parallelism or workers, threads

    folder = grid.out / "_submitit"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    except RuntimeError as exc:
        raise ConfigError(f"--executor slurm: {exc}") from None
    parameters: dict[str, Any] = {
        "name": options.job_name,
        "timeout_min": options.time_min,
        "cpus_per_task": cpus,
        "gpus_per_node": options.gpus_per_node,
        "tasks_per_node": 1,
        "nodes": 1,
        "mem_gb": options.mem_gb,
        "slurm_partition": options.partition,
        "slurm_array_parallelism": options.array_parallelism or workers,
        "slurm_additional_parameters": dict(options.extra) or None,
        "slurm_setup": list(options.setup) or None,
    }
    try:
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    except (NameError, AssertionError, ValueError) as exc:
        raise ConfigError(f"bad SLURM options: {exc}") from None
    payloads = [grid.payload(cfg) for cfg in todo]
    jobs = executor.map_array(_run_payload, payloads)
    summary.submitted = len(jobs)
    summary.job_ids = [str(job.job_id) for job in jobs]
    if not options.wait:
        summary.pending = len(jobs)
        return
    for job, cfg in zip(jobs, todo, strict=True):
        try:
            status = job.result()
        except Exception as exc:  # FailedJobError / UncompletedJobError (killed, timed out)
            text = str(exc)
            if isinstance(exc, ConfigError) or "mergecl.bench.config.run_config.ConfigError" in text:
                for other in jobs:
                    if not other.done():
                        other.cancel(check=False)
                raise ConfigError(f"{_describe(cfg)}: {text}") from None
            reporter.error(cfg, exc)
        else:
            reporter.status(cfg, status)

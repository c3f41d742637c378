"""Run one (method × benchmark × seed): build the stream, model and strategy, train, evaluate.

After every experience the model is evaluated on **all** test experiences, which gives the
full class-incremental accuracy matrix R[i][j] and, from the same forward passes, the
task-incremental one. ``joint`` trains once on the union of the stream and yields one row.

:func:`validate_run` checks everything that can be checked before training (method, its
hyper-parameters, parameterisation, benchmark, data) and raises :class:`ConfigError`.
:func:`run_and_store` runs under the store's per-run lock and writes the record atomically;
a run that crashes is recorded as ``failed`` with the reason.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import resource
import subprocess
import traceback
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch
from mergecl.bench.config.run_config import ConfigError, RunConfig
from mergecl.bench.orchestration.store import ResultStore, RunKey, config_hash
from mergecl.bench.streams.benchmarks import BuiltBenchmark, build_benchmark, get_benchmark
from pydantic import ValidationError
from torch import Tensor

ProgressCallback = Callable[[int, int], None]


# ---------------------------------------------------------------------------- validation
def method_class(cfg: RunConfig):
    from mergecl.methods.registry import UnknownMethodError, get_method

    try:
        return get_method(cfg.method)
    except UnknownMethodError as exc:
        raise ConfigError(str(exc)) from None


def method_params(cfg: RunConfig):
    cls = method_class(cfg)
    try:
        return cls.Params(**cfg.params)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
        )
        accepted = ", ".join(f"{k}={v.default!r}" for k, v in cls.Params.model_fields.items()) or "none"
        raise ConfigError(
            f"bad params for method {cfg.method!r}: {problems}. Accepted params (defaults): {accepted}"
        ) from None


def validate_run(cfg: RunConfig, check_data: bool = True) -> None:
    """Refuse anything that would fail later, before any training starts."""
    cls = method_class(cfg)
    method_params(cfg)
    if cfg.parameterisation not in cls.parameterisations:
        raise ConfigError(
            f"method {cfg.method!r} does not support parameterisation {cfg.parameterisation!r}; "
            f"accepted: {', '.join(cls.parameterisations)}")
    spec = get_benchmark(cfg.benchmark)
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device {cfg.device!r} not accepted; use cpu or cuda[:N]")
    if check_data:
        check_data_available(spec, cfg)


def check_data_available(spec: Any, cfg: RunConfig) -> None:
    if spec.offline:
        from mergecl.bench.streams import datasets as data

        for dataset in spec.datasets:
            try:
                data.resolve_root(dataset, cfg.data_root, download=cfg.download)
            except ValueError as exc:
                raise ConfigError(f"benchmark {cfg.benchmark!r}: {exc}") from None
    else:
        from mergecl.bench.streams.paper_datasets import check_root

        if not cfg.data_root:
            raise ConfigError(f"benchmark {cfg.benchmark!r} needs --data-root pointing at your copy of the data")
        for dataset in spec.datasets:
            try:
                check_root(dataset, cfg.data_root)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------------------- provenance
@lru_cache(maxsize=1)
def git_revision() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    # "-dirty": tracked code or config differs from HEAD. The result store (results/) does not
    # count: a leaderboard run writes records and tables there while it runs.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)results"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("torch", "avalanche-lib", "timm", "peft", "mergecl"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: ``5`` → ``/proc/self/clear_refs``
    resets ``VmHWM`` to the current RSS). Pool workers run many runs; without the reset every
    record would carry the worker's high-water mark so far. False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB since the last :func:`reset_peak_rss`
    (``VmHWM``), or over its lifetime (``ru_maxrss``) where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- building
def _task_batches(built: BuiltBenchmark, cfg: RunConfig):
    def batches(task: int, max_samples: int | None = None, batch_size: int | None = None) -> Iterable[tuple[Tensor, Tensor]]:
        size = batch_size or cfg.batch_size
        if built.train_tensors is not None:
            x, y = built.train_tensors[task]
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + task)
            order = torch.randperm(len(y), generator=gen)
            if max_samples is not None:
                order = order[:max_samples]
            for start in range(0, len(order), size):
                idx = order[start:start + size]
                yield x[idx], y[idx]
            return
        from torch.utils.data import DataLoader

        dataset = built.train_stream[task].dataset.eval()
        seen = 0
        for batch in DataLoader(dataset, batch_size=size, shuffle=False):
            x, y = batch[0], batch[1]
            if max_samples is not None and seen + len(y) > max_samples:
                x, y = x[: max_samples - seen], y[: max_samples - seen]
            seen += len(y)
            yield x, y
            if max_samples is not None and seen >= max_samples:
                return

    return batches


def build_model(cfg: RunConfig, n_classes: int):
    from mergecl.bench.training.models import build_backbone

    return build_backbone(
        cfg.backbone, num_classes=n_classes, weights=cfg.weights, image_size=cfg.image_size,
        head_init=cfg.head_init, channels_last=cfg.channels_last, freeze_bn=cfg.freeze_bn,
    )


def build_space_for(cfg: RunConfig, model: torch.nn.Module):
    from mergecl.bench.training.models import default_lora_targets
    from mergecl.methods.parameterisation import build_space

    targets = cfg.lora_targets or default_lora_targets(cfg.backbone)
    return build_space(model, cfg.parameterisation, targets=targets, rank=cfg.lora_rank,
                       alpha=cfg.lora_alpha, kv_only=cfg.lora_kv_only,
                       generator=torch.Generator().manual_seed(cfg.seed + 777))


def _union_stream(built: BuiltBenchmark):
    """One training experience holding every experience's training data (for ``joint``)."""
    if built.train_tensors is not None:
        from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark

        x = torch.cat([t[0] for t in built.train_tensors])
        y = torch.cat([t[1] for t in built.train_tensors])
        scenario = tensors_benchmark(train_tensors=[(x, y)], test_tensors=[(x[:1], y[:1])],
                                     task_labels=[0], complete_test_set_only=False)
        return scenario.train_stream, [(x, y)]
    from avalanche.benchmarks import benchmark_from_datasets

    datasets = [exp.dataset for exp in built.train_stream]
    union = datasets[0].concat(datasets[1]) if len(datasets) > 1 else datasets[0]
    for extra in datasets[2:]:
        union = union.concat(extra)
    return benchmark_from_datasets(train=[union]).train_stream, None


# ---------------------------------------------------------------------------- one run
def run_one(cfg: RunConfig, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train and evaluate one run; return its record (status ``ok``). Exceptions propagate."""
    from mergecl.bench.reporting.metrics import summarize, summarize_row
    from mergecl.bench.training.strategy import AccuracyCollector, MergeCLStrategy
    from mergecl.methods.base import MethodContext

    started_at, t_start = _now(), perf_counter()
    validate_run(cfg)
    reset_peak_rss()  # peak_rss_mb: this run's peak, not the (pool) process's so far
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cls, params = method_class(cfg), method_params(cfg)

    built = build_benchmark(cfg)
    model = build_model(cfg, built.n_classes).to(cfg.device)
    space = build_space_for(cfg, model)
    context = MethodContext(
        space=space, classes_per_experience=tuple(map(tuple, built.classes_per_experience)),
        n_classes=built.n_classes, scenario=built.scenario, loss_mask=cfg.loss_mask,
        head_rule=cfg.head_rule, max_steps_per_experience=cfg.max_steps_per_exp,
        batches=_task_batches(built, cfg), generator=torch.Generator().manual_seed(cfg.seed + 12345),
    )
    method = cls(params, context)
    task_incremental = built.scenario == "class-incremental"
    collector = AccuracyCollector(built.classes_per_experience, built.n_classes, task_incremental)
    n_exp = built.n_experiences

    train_stream, train_tensors = built.train_stream, built.train_tensors
    loss_classes = built.classes_per_experience
    if cls.upper_bound:
        train_stream, train_tensors = _union_stream(built)
        loss_classes = [sorted({c for group in built.classes_per_experience for c in group})]

    strategy = MergeCLStrategy(
        model=model, parameter_groups=lambda: space.parameter_groups(cfg.lr, cfg.head_lr), config=cfg,
        classes_per_experience=loss_classes, n_classes=built.n_classes, train_tensors=train_tensors,
        test_tensors=built.test_tensors, plugins=[method, *method.extra_plugins(), collector],
        generator=torch.Generator().manual_seed(cfg.seed),
    )

    cil_rows: list[list[float]] = []
    til_rows: list[list[float]] = []
    eval_seconds = 0.0
    n_train = len(train_stream)
    for i, experience in enumerate(train_stream):
        strategy.train(experience)
        seen_task = n_exp - 1 if cls.upper_bound else i
        collector.start_row(context.seen_classes(seen_task))
        t_eval = perf_counter()
        strategy.eval(built.test_stream)
        eval_seconds += perf_counter() - t_eval
        cil, til = collector.row(n_exp)
        cil_rows.append(cil)
        if til is not None:
            til_rows.append(til)
        if progress:
            progress(i + 1, n_train)

    if cls.upper_bound:
        metrics = summarize_row(cil_rows[0])
        til_metrics = summarize_row(til_rows[0]) if til_rows else None
    else:
        metrics = summarize(cil_rows)
        til_metrics = summarize(til_rows) if til_rows else None
    total = perf_counter() - t_start
    return {
        **record_identity(cfg),
        "paper": cls.paper,
        "scenario": built.scenario,
        "class_order": built.class_order,
        "classes_per_experience": built.classes_per_experience,
        "upper_bound": bool(cls.upper_bound),
        "acc_matrix": cil_rows,
        "til_acc_matrix": til_rows or None,
        "metrics": metrics,
        "til_metrics": til_metrics,
        "diagnostics": {**method.diagnostics(), **({"benchmark": built.info} if built.info else {})},
        "timings": {
            "train_s": round(strategy.train_seconds, 3),
            "train_steps": strategy.train_steps,
            "eval_s": round(eval_seconds, 3),
            "merge_s": round(method.merge_seconds, 3),
            "total_s": round(total, 3),
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": library_versions(),
        "git_rev": git_revision(),
        "host": {"cpus": os.cpu_count(), "threads": cfg.threads},
        "started_at": started_at,
        "finished_at": _now(),
        "status": "ok",
        "error": None,
    }


def record_identity(cfg: RunConfig) -> dict[str, Any]:
    """The fields that say which run a record is, shared by every record writer: who ran what
    (method, label, benchmark, seed, preset, parameterisation), the resolved config and its hash
    (a record whose hash differs from the requested config's is stale)."""
    return {
        "method": cfg.method, "label": cfg.label, "benchmark": cfg.benchmark, "seed": cfg.seed,
        "preset": cfg.preset, "parameterisation": cfg.parameterisation,
        "config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg.hashable()),
    }


def failed_record(cfg: RunConfig, error: BaseException, started_at: str, elapsed: float) -> dict[str, Any]:
    tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
    return {
        **record_identity(cfg),
        "upper_bound": False, "acc_matrix": None, "til_acc_matrix": None, "metrics": None,
        "til_metrics": None, "diagnostics": {}, "timings": {"total_s": round(elapsed, 3)},
        "peak_rss_mb": round(peak_rss_mb(), 1), "versions": library_versions(),
        "git_rev": git_revision(), "started_at": started_at, "finished_at": _now(),
        "status": "failed", "error": f"{type(error).__name__}: {error}", "traceback": tail,
    }


def run_key(cfg: RunConfig) -> RunKey:
    return RunKey(cfg.benchmark, cfg.label or cfg.method, cfg.seed)


def run_and_store(cfg: RunConfig | dict[str, Any], out: str | Path, progress: ProgressCallback | None = None,
                  retry_failed: bool = False) -> str:
    """Run ``cfg`` unless its record is done; write the record atomically under a per-run lock.

    Returns ``"done"`` (already there), ``"locked"`` (another process runs it), ``"ok"`` or
    ``"failed"``.
    """
    if isinstance(cfg, dict):
        cfg = RunConfig(**cfg)
    store = ResultStore(out)
    key = run_key(cfg)
    digest = config_hash(cfg.hashable())
    status = store.status(key, digest)
    if status == "done" or (status == "failed" and not retry_failed):
        return "done"
    lock = store.try_lock(key)
    if lock is None:
        return "locked"
    with lock:
        status = store.status(key, digest)  # another process may have finished meanwhile
        if status == "done" or (status == "failed" and not retry_failed):
            return "done"
        started_at, t0 = _now(), perf_counter()
        try:
            record = run_one(cfg, progress=progress)
        except ConfigError:
            raise
        except Exception as exc:  # recorded, never silently averaged in
            record = failed_record(cfg, exc, started_at, perf_counter() - t0)
        store.write(record)
        return str(record["status"])

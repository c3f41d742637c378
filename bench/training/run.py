"""Run one configuration: build the stream, the model and the strategy, train, merge, evaluate.

After every experience the model is evaluated on **all** test experiences, which gives the
full class-incremental accuracy matrix R[i][j] and, from the same forward passes, the
task-incremental one. ``joint`` trains once on the union of the stream and yields one row.
The result is a :class:`~mergecl.bench.orchestration.records.RunRecord`. The config is
trusted: it was validated once, before the grid started (``bench/config/validation.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from time import perf_counter

import numpy as np
import torch
from mergecl.bench.config.run_config import RunConfig, config_hash
from mergecl.bench.orchestration import provenance
from mergecl.bench.orchestration.records import (
    SCHEMA_VERSION,
    Host,
    Metrics,
    RunRecord,
    Timings,
    TrajectoryUse,
    ValidationSplit,
)
from mergecl.bench.streams.benchmarks import BuiltBenchmark, build_benchmark
from mergecl.bench.training.trajectories import TrajectoryPlan, TrajectoryStore
from torch import Tensor

ProgressCallback = Callable[[int, int], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- building
def task_batches(built: BuiltBenchmark, cfg: RunConfig):
    """``batches(task, max_samples, batch_size)``: a task's training data in a seeded order (the
    methods' statistics — Fisher, GPM bases, TRM's objectives — read it)."""

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
    """The backbone of ``cfg``, its convolutions switched to the exact shortcuts where their
    feature maps allow (:mod:`mergecl.bench.training.fast_convs`)."""
    from mergecl.bench.training.fast_convs import use_fast_convolutions
    from mergecl.bench.training.models import build_backbone

    model = build_backbone(
        cfg.backbone, num_classes=n_classes, weights=cfg.weights, image_size=cfg.image_size,
        head_init=cfg.head_init, channels_last=cfg.channels_last, freeze_bn=cfg.freeze_bn,
    )
    use_fast_convolutions(model)
    return model


def build_space_for(cfg: RunConfig, model: torch.nn.Module):
    from mergecl.bench.training.fast_convs import use_fast_convolutions
    from mergecl.bench.training.models import default_lora_targets
    from mergecl.methods.parameterisation import build_space

    targets = cfg.lora_targets or default_lora_targets(cfg.backbone)
    space = build_space(model, cfg.parameterisation, targets=targets, rank=cfg.lora_rank,
                        alpha=cfg.lora_alpha, kv_only=cfg.lora_kv_only,
                        generator=torch.Generator().manual_seed(cfg.seed + 777))
    use_fast_convolutions(model)  # LoRA's own 1×1 convolutions (lora_A, lora_B), made just now
    return space


def union_stream(built: BuiltBenchmark):
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


def run_one(cfg: RunConfig, progress: ProgressCallback | None = None) -> RunRecord:
    """Train and evaluate one run; return its record (status ``ok``). Exceptions propagate."""
    from mergecl.bench.config.validation import method_class
    from mergecl.bench.reporting.metrics import summarize, summarize_row
    from mergecl.bench.training.evaluation import AccuracyCollector
    from mergecl.bench.training.strategy import MergeCLStrategy
    from mergecl.methods.base import MethodContext

    started_at, t_start = provenance.now(), perf_counter()
    provenance.reset_peak_rss()  # peak_rss_mb: this run's peak, not the (pool) process's so far
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    cls = method_class(cfg.method)
    params = cls.Params(**cfg.params)

    built = build_benchmark(cfg)
    model = build_model(cfg, built.n_classes).to(cfg.device)
    if cfg.frozen_blocks is not None:
        built = frozen_prefix_features(cfg, model, built)
    space = build_space_for(cfg, model)
    context = MethodContext(
        space=space, classes_per_experience=tuple(map(tuple, built.classes_per_experience)),
        n_classes=built.n_classes, scenario=built.scenario, loss_mask=cfg.loss_mask,
        head_rule=cfg.head_rule, max_steps_per_experience=cfg.max_steps_per_exp,
        batches=task_batches(built, cfg), generator=torch.Generator().manual_seed(cfg.seed + 12345),
    )
    method = cls(params, context)
    task_incremental = built.scenario == "class-incremental"
    collector = AccuracyCollector(built.classes_per_experience, built.n_classes, task_incremental)
    n_exp = built.n_experiences

    train_stream, train_tensors = built.train_stream, built.train_tensors
    loss_classes = built.classes_per_experience
    if cls.upper_bound:
        train_stream, train_tensors = union_stream(built)
        loss_classes = [sorted({c for group in built.classes_per_experience for c in group})]

    trajectory = None
    if cfg.trajectories != "off" and not cls.upper_bound:
        store = TrajectoryStore(None if cfg.trajectories == "auto" else cfg.trajectories)
        trajectory = TrajectoryPlan.for_run(cfg, store, n_exp, timing=cls.timing,
                                            train_from=method.train_from,
                                            plain_first_task=method.plain_first_task)
    evaluator = None
    if cfg.loggers:
        from pathlib import Path

        from mergecl.bench.training.evaluation import avalanche_evaluator

        log_dir = Path(cfg.log_dir or "logs") / cfg.benchmark / (cfg.label or cfg.method) / f"seed{cfg.seed}"
        evaluator = avalanche_evaluator(cfg.loggers, log_dir, f"{cfg.label}-{cfg.benchmark}-seed{cfg.seed}")
    try:
        strategy = MergeCLStrategy(
            model=model, parameter_groups=lambda: space.parameter_groups(cfg.lr, cfg.head_lr), config=cfg,
            evaluator=evaluator,
            classes_per_experience=loss_classes, n_classes=built.n_classes, train_tensors=train_tensors,
            test_tensors=built.test_tensors, plugins=[method, *method.extra_plugins(), collector],
            generator=torch.Generator().manual_seed(cfg.seed), space=space, trajectory=trajectory,
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

        validation = None
        if built.validation_tensors is not None:
            val_cil, val_til = collector.evaluate_tensors(
                model, built.validation_tensors, cfg.eval_batch_size, context.seen_classes(n_exp - 1))
            validation = ValidationSplit(
                **built.validation, row=val_cil, til_row=val_til, acc=float(np.mean(val_cil)),
                til_acc=float(np.mean(val_til)) if val_til is not None else None)
        summary = summarize_row if cls.upper_bound else summarize
        metrics = summary(cil_rows[0] if cls.upper_bound else cil_rows)
        til_metrics = (summary(til_rows[0] if cls.upper_bound else til_rows) if til_rows else None)
        return RunRecord(
            **record_identity(cfg),
            schema_version=SCHEMA_VERSION,
            paper=cls.paper,
            scenario=built.scenario,
            class_order=built.class_order,
            classes_per_experience=built.classes_per_experience,
            upper_bound=bool(cls.upper_bound),
            acc_matrix=cil_rows,
            til_acc_matrix=til_rows or None,
            metrics=Metrics(**metrics),
            til_metrics=Metrics(**til_metrics) if til_metrics else None,
            validation=validation,
            diagnostics={**method.diagnostics(), **({"benchmark": built.info} if built.info else {})},
            trajectory=TrajectoryUse(
                key=",".join(trajectory.keys()), regime=cls.timing if cls.timing == "post-hoc" else "first-task",
                tasks=sorted(trajectory.used), trained_here=sorted(trajectory.trained_here),
            ) if trajectory is not None else None,
            timings=Timings(train_s=round(strategy.train_seconds, 3), train_steps=strategy.train_steps,
                            reused_steps=strategy.reused_steps,
                            eval_s=round(eval_seconds, 3), merge_s=round(method.merge_seconds, 3),
                            total_s=round(perf_counter() - t_start, 3)),
            peak_rss_mb=round(provenance.peak_rss_mb(), 1),
            versions=provenance.library_versions(),
            git_rev=provenance.git_revision(),
            host=Host(cpus=provenance.cpus(), threads=cfg.threads, cpu_model=provenance.cpu_model()),
            started_at=started_at,
            finished_at=provenance.now(),
            status="ok",
        )
    finally:
        if evaluator is not None:
            from mergecl.bench.training.evaluation import close_loggers

            close_loggers(evaluator)  # the text log's file, the W&B run, ...


def frozen_prefix_features(cfg: RunConfig, model, built: BuiltBenchmark) -> BuiltBenchmark:
    """Cut the backbone's frozen prefix off ``model`` and give the benchmark its features
    (computed once per image and cached by content; ``bench/training/features.py``)."""
    from mergecl.bench.streams.benchmarks import with_tensors
    from mergecl.bench.training.features import featurize_pairs, prefix_digest
    from mergecl.bench.training.models import split_frozen_prefix

    prefix = split_frozen_prefix(model, cfg.frozen_blocks)
    prefix_id = prefix_digest(prefix, {"backbone": cfg.backbone, "weights": cfg.weights,
                                       "image_size": cfg.image_size, "frozen_blocks": cfg.frozen_blocks,
                                       "channels_last": cfg.channels_last})
    train = featurize_pairs(prefix, built.train_tensors or [], prefix_id)
    test = featurize_pairs(prefix, built.test_tensors or [], prefix_id)
    validation = (featurize_pairs(prefix, built.validation_tensors, prefix_id)
                  if built.validation_tensors is not None else None)
    return with_tensors(built, train, test, validation)


def record_identity(cfg: RunConfig) -> dict:
    """The fields that say which run a record is, shared by every record writer: who ran what
    (method, label, benchmark, seed, preset, parameterisation), the resolved config and its hash
    (a record whose hash differs from the requested config's is stale)."""
    return {
        "method": cfg.method, "label": cfg.label or cfg.method, "benchmark": cfg.benchmark,
        "seed": cfg.seed, "preset": cfg.preset, "parameterisation": cfg.parameterisation,
        "config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg.hashable()),
        "variant": cfg.variant, "base_label": cfg.base_label, "tuned_values": cfg.tuned_values,
        "tuning_hash": cfg.tuning_hash,
    }

"""Registry of continual-learning benchmarks as Avalanche streams.

Offline benchmarks (MNIST / Fashion-MNIST from ``mergecl.bench.streams.datasets``) are built from cached tensors:
each experience's images are sub-sampled per class with the run's seed, then handed to
Avalanche's ``tensors_benchmark`` so the strategy and plugins see ordinary Avalanche streams.
The same tensors are kept beside the stream (``BuiltBenchmark.train_tensors``) so that the
strategy can batch them without per-sample Python work (see ``bench/training/strategy.py``).

Paper-scale benchmarks (``imagenet-r-10``, ``cifar100-10``, …) come from
``mergecl.bench.streams.paper_datasets`` and load images lazily from the user's data root.

The class order of every class-incremental stream is a seeded permutation and is recorded in
the run record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mergecl.bench.config.run_config import ConfigError, RunConfig

if TYPE_CHECKING:
    from torch import Tensor

Scenario = Literal["class-incremental", "domain-incremental"]
TensorPair = tuple["Tensor", "Tensor"]


@dataclass
class BuiltBenchmark:
    """A benchmark instance for one run (one seed)."""

    name: str
    scenario: Scenario
    n_classes: int
    class_order: list[int]
    classes_per_experience: list[list[int]]
    train_stream: Any
    test_stream: Any
    train_tensors: list[TensorPair] | None = None
    test_tensors: list[TensorPair] | None = None
    validation_tensors: list[TensorPair] | None = None
    """Held out of each task's training pool (``validation_fraction``); never trained on."""
    validation: dict[str, Any] | None = None
    """The split's identity: fraction, sizes per task, a hash of the held-out indices."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_experiences(self) -> int:
        return len(self.classes_per_experience)


Headline = Literal["acc", "til_acc"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A registered benchmark: what it is, its data, and its headline metric (the one the
    leaderboard ranks and tests for discrimination: class-incremental Acc, or task-incremental
    Acc where class-incremental accuracy cannot separate methods at CPU scale)."""

    name: str
    scenario: Scenario
    description: str
    datasets: tuple[str, ...]
    default_experiences: int
    build: Callable[[RunConfig], BuiltBenchmark]
    offline: bool = True
    headline: Headline = "acc"
    classes: int | None = None
    """Classes of a class-incremental stream (its experience count must divide them)."""
    fixed_experiences: bool = False

    def check(self, n_experiences: int | None) -> None:
        """Refuse an experience count this benchmark cannot build (before any training)."""
        if n_experiences is None:
            return
        if self.fixed_experiences and n_experiences != self.default_experiences:
            raise ConfigError(f"{self.name} has exactly {self.default_experiences} experiences; "
                              f"got n_experiences={n_experiences}")
        if self.classes is not None and self.classes % n_experiences:
            valid = [d for d in range(1, self.classes + 1) if self.classes % d == 0]
            raise ConfigError(f"{self.name}: n_experiences={n_experiences} does not divide "
                              f"{self.classes} classes; accepted: {valid}")


def _subsample_per_class(y: Tensor, per_class: int | None, generator: Any) -> Tensor:
    """Indices of up to ``per_class`` examples of every class, chosen with ``generator``."""
    import torch

    if per_class is None:
        return torch.arange(len(y))
    chosen = []
    for cls in torch.unique(y).tolist():
        idx = torch.nonzero(y == cls).flatten()
        perm = idx[torch.randperm(len(idx), generator=generator)]
        chosen.append(perm[:per_class])
    return torch.sort(torch.cat(chosen)).values


def _load_split(dataset: str, split: str, cfg: RunConfig) -> TensorPair:
    from mergecl.bench.streams import datasets as data

    root = data.resolve_root(dataset, cfg.data_root, download=cfg.download)
    x, y = data.load_tensors(dataset, split, root, image_size=cfg.image_size, channels=1)
    return x, y.long()


def _avalanche_stream(train: list[TensorPair], test: list[TensorPair]) -> Any:
    from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark

    return tensors_benchmark(
        train_tensors=[(x, y) for x, y in train],
        test_tensors=[(x, y) for x, y in test],
        task_labels=[0] * len(train),
        complete_test_set_only=False,
    )


def class_order_for(n_classes: int, seed: int) -> list[int]:
    return np.random.RandomState(seed).permutation(n_classes).tolist()


def _class_incremental(
    name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
    n_experiences: int, cfg: RunConfig, class_order: list[int] | None = None,
) -> BuiltBenchmark:
    import torch

    n_classes = int(max(y_train.max(), y_test.max()).item()) + 1
    if n_classes % n_experiences:
        valid = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        raise ConfigError(
            f"{name}: n_experiences={n_experiences} does not divide {n_classes} classes; accepted: {valid}"
        )
    order = class_order if class_order is not None else class_order_for(n_classes, cfg.seed)
    per_exp = n_classes // n_experiences
    groups = [sorted(order[i * per_exp:(i + 1) * per_exp]) for i in range(n_experiences)]
    gen = torch.Generator().manual_seed(cfg.seed)
    keep_train = _subsample_per_class(y_train, cfg.train_per_class, gen)
    keep_test = _subsample_per_class(y_test, cfg.test_per_class, gen)
    x_train, y_train = x_train[keep_train], y_train[keep_train]
    x_test, y_test = x_test[keep_test], y_test[keep_test]
    train, test = [], []
    for classes in groups:
        cls = torch.tensor(classes)
        tr = torch.isin(y_train, cls)
        te = torch.isin(y_test, cls)
        train.append((x_train[tr].contiguous(), y_train[tr].contiguous()))
        test.append((x_test[te].contiguous(), y_test[te].contiguous()))
    return BuiltBenchmark(
        name=name, scenario="class-incremental", n_classes=n_classes, class_order=order,
        classes_per_experience=groups, train_stream=None, test_stream=None,
        train_tensors=train, test_tensors=test,
    )


def with_tensors(built: BuiltBenchmark, train: list[TensorPair], test: list[TensorPair],
                 validation: list[TensorPair] | None = None) -> BuiltBenchmark:
    """The same benchmark over other tensors of the same samples (e.g. a frozen prefix's
    features), its Avalanche streams rebuilt over them."""
    from dataclasses import replace

    return _finish(replace(built, train_tensors=list(train), test_tensors=list(test),
                           validation_tensors=list(validation) if validation is not None
                           else built.validation_tensors))


def hold_out_validation(built: BuiltBenchmark, fraction: float, seed: int) -> BuiltBenchmark:
    """Move a seeded, class-stratified ``fraction`` of each task's training pool into a
    validation set (⌊fraction·n_c + ½⌋ samples of a class with n_c ≥ 2 samples, at least one);
    the rest is the training set. Recorded: the sizes and a hash of the held-out indices."""
    import hashlib

    import torch

    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {fraction!r}")
    train, validation, digest, sizes = [], [], hashlib.sha256(), []
    for task, (x, y) in enumerate(built.train_tensors or []):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * task + 17)
        held = []
        for cls in torch.unique(y).tolist():
            members = torch.nonzero(y == cls).flatten()
            if len(members) < 2:
                continue
            count = max(1, min(len(members) - 1, int(fraction * len(members) + 0.5)))
            held.append(members[torch.randperm(len(members), generator=generator)[:count]])
        held_out = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
        keep = torch.ones(len(y), dtype=torch.bool)
        keep[held_out] = False
        train.append((x[keep].contiguous(), y[keep].contiguous()))
        validation.append((x[held_out].contiguous(), y[held_out].contiguous()))
        digest.update(f"task{task}:".encode())
        digest.update(held_out.numpy().tobytes())
        sizes.append(int(len(held_out)))
    from dataclasses import replace

    identity = {"fraction": fraction, "sizes": sizes, "indices_sha256": digest.hexdigest()}
    return _finish(replace(built, train_tensors=train, validation_tensors=validation,
                           validation=identity))


def _finish(built: BuiltBenchmark) -> BuiltBenchmark:
    scenario = _avalanche_stream(built.train_tensors or [], built.test_tensors or [])
    built.train_stream = scenario.train_stream
    built.test_stream = scenario.test_stream
    return built


def _split(dataset: str, name: str) -> Callable[[RunConfig], BuiltBenchmark]:
    def build(cfg: RunConfig) -> BuiltBenchmark:
        x_tr, y_tr = _load_split(dataset, "train", cfg)
        x_te, y_te = _load_split(dataset, "test", cfg)
        return _finish(_class_incremental(name, x_tr, y_tr, x_te, y_te, cfg.n_experiences or 5, cfg))

    return build


def _build_mnist_fmnist(cfg: RunConfig) -> BuiltBenchmark:
    """MNIST (classes 0-9) then Fashion-MNIST (classes 10-19) as one 20-class stream."""
    import torch

    parts = {}
    for split in ("train", "test"):
        xm, ym = _load_split("mnist", split, cfg)
        xf, yf = _load_split("fashion-mnist", split, cfg)
        parts[split] = (torch.cat([xm, xf]), torch.cat([ym, yf + 10]))
    n_exp = cfg.n_experiences or 2
    if n_exp != 2:
        raise ConfigError(f"mnist-fmnist has exactly 2 experiences (MNIST, Fashion-MNIST); got n_experiences={n_exp}")
    rng = np.random.RandomState(cfg.seed)
    order = rng.permutation(10).tolist() + (rng.permutation(10) + 10).tolist()
    built = _class_incremental("mnist-fmnist", *parts["train"], *parts["test"], 2, cfg, class_order=order)
    return _finish(built)


def rotation_angles(n_experiences: int, step: float = 30.0) -> list[float]:
    return [step * i for i in range(n_experiences)]


def _rotate(x: Tensor, angle: float) -> Tensor:
    from torchvision.transforms.functional import InterpolationMode, rotate

    if angle == 0:
        return x.clone()
    return rotate(x, angle, interpolation=InterpolationMode.BILINEAR)


def _rotated_mnist(name: str, default_experiences: int, step: float):
    """Domain-incremental: the same 10 digits under rotations ``0, step, 2·step, …`` per experience.

    Every experience draws its own per-class subset of the training set (seeded), so domains
    do not share images.
    """

    def build(cfg: RunConfig) -> BuiltBenchmark:
        import torch

        n_exp = cfg.n_experiences or default_experiences
        x_tr, y_tr = _load_split("mnist", "train", cfg)
        x_te, y_te = _load_split("mnist", "test", cfg)
        angles = rotation_angles(n_exp, step)
        train, test = [], []
        for i, angle in enumerate(angles):
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + i)
            tr = _subsample_per_class(y_tr, cfg.train_per_class, gen)
            te = _subsample_per_class(y_te, cfg.test_per_class, gen)
            train.append((_rotate(x_tr[tr], angle).contiguous(), y_tr[tr].contiguous()))
            test.append((_rotate(x_te[te], angle).contiguous(), y_te[te].contiguous()))
        built = BuiltBenchmark(
            name=name, scenario="domain-incremental", n_classes=10,
            class_order=list(range(10)), classes_per_experience=[list(range(10))] * n_exp,
            train_stream=None, test_stream=None, train_tensors=train, test_tensors=test,
            info={"angles": angles},
        )
        return _finish(built)

    build.__doc__ = _rotated_mnist.__doc__
    return build


OFFLINE_BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec("split-mnist", "class-incremental", "MNIST, 5 experiences x 2 classes",
                      ("mnist",), 5, _split("mnist", "split-mnist"), headline="til_acc", classes=10),
        BenchmarkSpec("split-fmnist", "class-incremental", "Fashion-MNIST, 5 experiences x 2 classes",
                      ("fashion-mnist",), 5, _split("fashion-mnist", "split-fmnist"),
                      headline="til_acc", classes=10),
        BenchmarkSpec("mnist-fmnist", "class-incremental",
                      "MNIST then Fashion-MNIST as one 20-class stream, 2 experiences x 10 classes",
                      ("mnist", "fashion-mnist"), 2, _build_mnist_fmnist, fixed_experiences=True),
        BenchmarkSpec("rotated-mnist", "domain-incremental",
                      "MNIST digits under rotations 0/30/60/90/120 degrees, 5 experiences",
                      ("mnist",), 5, _rotated_mnist("rotated-mnist", 5, 30.0)),
        # ten domains from 0 to 180 degrees: the longer stream on which the merges separate at
        # CPU scale (docs/protocol.md); 180 degrees makes a 6 look like a 9.
        BenchmarkSpec("rotated-mnist-10", "domain-incremental",
                      "MNIST digits under rotations 0/20/40/.../180 degrees, 10 experiences",
                      ("mnist",), 10, _rotated_mnist("rotated-mnist-10", 10, 20.0)),
    ]
}

_PAPER_NAME = re.compile(r"^(?P<dataset>[a-z0-9-]+?)-(?P<n>\d+)$")


PAPER_DATASET_NAMES: tuple[str, ...] = ("imagenet-r", "imagenet-a", "cub200", "cifar100", "domainnet")
"""The datasets of ``bench/streams/paper_datasets.py`` (listed here so that naming them needs
no torch import; tests/bench/streams/test_benchmarks.py checks the two agree)."""


def _paper_spec(name: str) -> BenchmarkSpec | None:
    match = _PAPER_NAME.match(name)
    if not match or match["dataset"] not in PAPER_DATASET_NAMES:
        return None
    from mergecl.bench.streams.paper_datasets import build_paper_benchmark

    dataset, n_exp = match["dataset"], int(match["n"])

    def build(cfg: RunConfig) -> BuiltBenchmark:
        if not cfg.data_root:
            raise ConfigError(f"benchmark {name!r} needs --data-root (or data_root=...) pointing at your copy")
        paper = build_paper_benchmark(dataset, cfg.data_root, cfg.n_experiences or n_exp, cfg.seed,
                                      image_size=cfg.image_size)
        return BuiltBenchmark(
            name=name, scenario="class-incremental", n_classes=paper.n_classes,
            class_order=list(paper.class_order), classes_per_experience=paper.classes_per_experience,
            train_stream=paper.benchmark.train_stream, test_stream=paper.benchmark.test_stream,
        )

    return BenchmarkSpec(name, "class-incremental", f"{dataset}, {n_exp} experiences (paper scale)",
                         (dataset,), n_exp, build, offline=False)


def paper_benchmark_names() -> list[str]:
    return [f"{name}-N" for name in PAPER_DATASET_NAMES]


def get_benchmark(name: str) -> BenchmarkSpec:
    if name in OFFLINE_BENCHMARKS:
        return OFFLINE_BENCHMARKS[name]
    spec = _paper_spec(name)
    if spec is not None:
        return spec
    accepted = sorted(OFFLINE_BENCHMARKS) + paper_benchmark_names()
    raise ConfigError(f"unknown benchmark {name!r}; accepted: {', '.join(accepted)} (N = number of experiences)")


def build_benchmark(cfg: RunConfig) -> BuiltBenchmark:
    """The benchmark of ``cfg``, with its validation split held out (``validation_fraction``)."""
    built = get_benchmark(cfg.benchmark).build(cfg)
    if cfg.validation_fraction > 0:
        if built.train_tensors is None:
            raise ConfigError(f"validation_fraction needs an in-memory benchmark; {cfg.benchmark!r} "
                              "streams images from disk (accepted: validation_fraction: 0)")
        built = hold_out_validation(built, cfg.validation_fraction, cfg.seed)
    return built

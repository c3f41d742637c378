"""A tiny in-memory class-incremental benchmark (Gaussian blobs, 2 classes per experience) as
a :class:`~mergecl.bench.streams.benchmarks.BuiltBenchmark`, for driving the real strategy and
``run_one`` in milliseconds instead of on MNIST."""

from __future__ import annotations

import torch
from mergecl.bench.streams.benchmarks import BuiltBenchmark

N_FEATURES = 4


def blobs(classes: list[int], per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` points around a fixed centre per class (centre c: 3·e_{c mod 4})."""
    x, y = [], []
    for c in classes:
        centre = torch.zeros(N_FEATURES)
        centre[c % N_FEATURES] = 3.0
        x.append(centre + torch.randn(per_class, N_FEATURES, generator=generator))
        y.append(torch.full((per_class,), c, dtype=torch.long))
    return torch.cat(x), torch.cat(y)


def toy_benchmark(n_experiences: int = 2, per_class: int = 8, seed: int = 0) -> BuiltBenchmark:
    from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark

    generator = torch.Generator().manual_seed(seed)
    classes = [[2 * e, 2 * e + 1] for e in range(n_experiences)]
    train = [blobs(c, per_class, generator) for c in classes]
    test = [blobs(c, per_class // 2, generator) for c in classes]
    scenario = tensors_benchmark(train_tensors=train, test_tensors=test, task_labels=[0] * n_experiences,
                                 complete_test_set_only=False)
    return BuiltBenchmark(name="toy", scenario="class-incremental", n_classes=2 * n_experiences,
                          class_order=list(range(2 * n_experiences)), classes_per_experience=classes,
                          train_stream=scenario.train_stream, test_stream=scenario.test_stream,
                          train_tensors=train, test_tensors=test)


class TinyClassifier(torch.nn.Module):
    """Linear body + linear head (``head``: what the parameter spaces treat as the classifier)."""

    def __init__(self, n_classes: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Linear(N_FEATURES, 8)
        self.head = torch.nn.Linear(8, n_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def train_method(method_cls, params: dict | None = None, n_experiences: int = 2, seed: int = 0,
                 **config) -> tuple[list[dict[str, torch.Tensor]], object, object]:
    """Train ``method_cls`` with the real strategy (plain SGD, loss on the current classes) over
    the toy stream; returns the model's full state after each experience, the method and the
    strategy (its ``plugins`` hold the method's extra plugins)."""
    from mergecl.bench.config.run_config import RunConfig
    from mergecl.bench.training.strategy import MergeCLStrategy
    from mergecl.methods.base import MethodContext
    from mergecl.methods.parameterisation import FullSpace

    built = toy_benchmark(n_experiences, seed=seed)
    model = TinyClassifier(built.n_classes, seed)
    space = FullSpace(model)
    context = MethodContext(space=space, classes_per_experience=tuple(map(tuple, built.classes_per_experience)),
                            n_classes=built.n_classes, scenario="class-incremental")
    method = method_cls(method_cls.Params(**(params or {})), context)
    cfg = RunConfig(**{"method": method_cls.name, "benchmark": "toy", "seed": seed, "batch_size": 4,
                       "epochs": 2, "optimizer": "sgd", "momentum": 0.0, "lr": 0.1, "head_lr": 0.1,
                       "channels_last": False, **config})
    strategy = MergeCLStrategy(
        model=model, parameter_groups=lambda: space.parameter_groups(cfg.lr, cfg.head_lr), config=cfg,
        classes_per_experience=built.classes_per_experience, n_classes=built.n_classes,
        train_tensors=built.train_tensors, test_tensors=built.test_tensors,
        plugins=[method, *method.extra_plugins()], space=space)
    states = []
    for experience in built.train_stream:
        strategy.train(experience)
        states.append({n: p.detach().clone() for n, p in model.state_dict().items()})
    return states, method, strategy

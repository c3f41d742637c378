"""Run FusionBench's continual merges (the test-only reference, PyPI ``fusion-bench``) on plain
``nn.Module`` models, without its CLI, data or logging: a stand-in Fabric, model pool and
program are all its ``run()`` methods need. Used by the oracle tests of OPCM, DOP, C-TA and
C-TIES; a missing ``fusion-bench`` is a failure, not a skip (it is in the ``test`` extra)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from torch import nn


class Fabric:
    device = "cpu"
    world_size = 1
    is_global_zero = True
    _loggers: list = []

    def log(self, *args, **kwargs) -> None:
        pass

    def to_device(self, value):
        return value


class ModelPool:
    def __init__(self, pretrained: nn.Module, models: list[nn.Module]) -> None:
        self.pretrained = pretrained
        self.models = {f"task{i}": model for i, model in enumerate(models)}
        self.model_names = list(self.models)

    def load_pretrained_model(self) -> nn.Module:
        return copy.deepcopy(self.pretrained)

    def load_model(self, name: str) -> nn.Module:
        return copy.deepcopy(self.models[name])


def run(algorithm, pretrained: nn.Module, models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """The merged model's state dict after FusionBench's ``algorithm.run`` over ``models`` in order."""
    algorithm.fabric = Fabric()
    algorithm._program = SimpleNamespace(taskpool=SimpleNamespace(_test_datasets={}, _is_setup=False))
    merged = algorithm.run(ModelPool(pretrained, models))
    return {name: value.detach().clone() for name, value in merged.state_dict().items()}


def linear_models(tasks: int, seed: int = 0, scale: float = 0.05) -> tuple[nn.Module, list[nn.Module]]:
    """A small model of Linear layers and ``tasks`` fine-tuned versions of it."""
    generator = torch.Generator().manual_seed(seed)
    pretrained = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6))
    with torch.no_grad():
        for parameter in pretrained.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    models = []
    for _ in range(tasks):
        model = copy.deepcopy(pretrained)
        with torch.no_grad():
            for parameter in model.parameters():
                # low-rank-ish task vectors, as fine-tuning produces, plus a little noise
                if parameter.dim() == 2:
                    left = torch.randn(parameter.shape[0], 2, generator=generator)
                    right = torch.randn(2, parameter.shape[1], generator=generator)
                    parameter.add_(scale * left @ right)
                parameter.add_(scale * 0.2 * torch.randn(parameter.shape, generator=generator))
        models.append(model)
    return pretrained, models


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}

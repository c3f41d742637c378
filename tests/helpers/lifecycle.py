"""Drive a method plugin through the merge life-cycle on a tiny model with chosen trained states.

``simulate`` calls the plugin's own ``before_training_exp`` / ``after_training_exp`` hooks (the
shared base: start points, head masks, loading the merged state) and replaces the training in
between by a known displacement, so that a test can compare the merged model with the
method's formula written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from mergecl.methods.base import MethodContext
from mergecl.methods.parameterisation import FullSpace
from torch import nn

CLASSES = [[0, 1], [2, 3]]
N_CLASSES = 4


class ZeroHeadClassifier(nn.Module):
    """Linear body + a zero-initialised linear head (the harness's default head)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.fc = nn.Linear(3, N_CLASSES)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(torch.tanh(self.body(x)))


def make_space(seed: int = 0, classes=None, scenario: str = "class-incremental",
               loss_mask: str = "current", batches=None, generator_seed: int = 99):
    torch.manual_seed(seed)
    model = ZeroHeadClassifier()
    space = FullSpace(model)
    ctx = MethodContext(space=space, classes_per_experience=classes or CLASSES, n_classes=N_CLASSES,
                        scenario=scenario, batches=batches,
                        loss_mask=loss_mask,
                        generator=torch.Generator().manual_seed(generator_seed))
    return model, space, ctx


def displacement(space: FullSpace, task: int, scale: float = 1.0, loss_mask: str = "current",
                 classes=None) -> dict[str, torch.Tensor]:
    """A fixed pseudo-training step of task ``task``: every body entry moves; head rows move only
    for the classes the task's loss trains (all rows with ``loss_mask='none'``)."""
    g = torch.Generator().manual_seed(1000 + task)
    out = {}
    trained_rows = torch.zeros(N_CLASSES, dtype=torch.bool)
    trained_rows[(classes or CLASSES)[task]] = True
    if loss_mask == "none":
        trained_rows[:] = True
    for name, value in space.effective_state().items():
        step = scale * torch.randn(value.shape, generator=g)
        if name in space.head_names:
            step = step * trained_rows.view(-1, *([1] * (value.dim() - 1)))
        out[name] = step
    return out


def simulate(plugin, space: FullSpace, n_tasks: int,
             train: Callable[[int, dict], dict] | None = None) -> list[dict]:
    """Run ``n_tasks`` tasks; task t's trained state is ``train(t, start)`` (default: start +
    :func:`displacement`). Returns per task {"start", "trained", "merged", "diagnostics"}."""
    strategy = SimpleNamespace(model=space.model, experience=None)
    out = []
    for task in range(n_tasks):
        strategy.experience = SimpleNamespace(current_experience=task)
        plugin.before_training_exp(strategy)
        start = space.effective_state()
        trained = (train or (lambda t, s: {n: s[n] + d for n, d in displacement(space, t).items()}))(task, start)
        space.load_effective_state(trained)
        plugin.after_training_exp(strategy)
        out.append({"start": start, "trained": trained, "merged": space.effective_state(),
                    "diagnostics": dict(plugin.per_task[-1])})
    return out

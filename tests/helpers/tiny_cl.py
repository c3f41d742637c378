"""Shared test scaffolding for the data-using merge methods (BECAME, TRM): a two-task
class-incremental problem on in-memory tensors, the method context over it, and a strategy
stand-in that calls the plugin hooks in :class:`mergecl.bench.training.strategy.MergeCLStrategy`'s order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import torch
from mergecl.methods.base import MethodContext
from torch import nn

N_CLASSES = 4
CLASSES = [[0, 1], [2, 3]]

TaskData = list[tuple[torch.Tensor, torch.Tensor]]


def make_context(space, data: TaskData, loss_mask: str = "current",
                 generator: torch.Generator | None = None, classes: list[list[int]] | None = None,
                 scenario: str = "class-incremental") -> MethodContext:
    """A :class:`MethodContext` whose ``batches(task, max_samples, batch_size)`` reads ``data``."""

    def batches(task: int, max_samples: int | None = None,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = data[task]
        n = len(y) if max_samples is None else min(max_samples, len(y))
        size = batch_size or 8
        for start in range(0, n, size):
            yield x[start:min(start + size, n)], y[start:min(start + size, n)]

    extra = {"generator": generator} if generator is not None else {}
    return MethodContext(space=space, classes_per_experience=classes or CLASSES, n_classes=N_CLASSES,
                         scenario=scenario, batches=batches,
                         loss_mask=loss_mask,
                         **extra)


class FakeStrategy:
    """The hook order of mergecl.bench.training.strategy.MergeCLStrategy.training_epoch, on in-memory data:
    fresh optimiser per experience, masked loss over the current task's classes."""

    def __init__(self, model: nn.Module, space, data: TaskData, *, epochs: int = 1,
                 batch_size: int = 4, optimizer: str = "adam", lr: float = 0.05,
                 loss_classes: list[list[int]] | None = None) -> None:
        self.model, self.space, self.data = model, space, data
        self.loss_classes = loss_classes or CLASSES
        self.train_epochs, self.batch_size = epochs, batch_size
        self.kind, self.lr = optimizer, lr
        self.optimizer_resets = 0

    def make_optimizer(self) -> None:
        params = list(self.space.trainable_parameters().values())
        self.optimizer = (torch.optim.Adam(params, lr=self.lr) if self.kind == "adam"
                          else torch.optim.SGD(params, lr=self.lr))
        self.optimizer_resets += 1

    def train_exp(self, method, task: int, after_step: Callable[[int], None] | None = None,
                  before_merge: Callable[[], None] | None = None) -> None:
        self.experience = SimpleNamespace(current_experience=task)
        x, y = self.data[task]
        self.dataloader = [(x[i:i + self.batch_size], y[i:i + self.batch_size])
                           for i in range(0, len(y), self.batch_size)]
        self.make_optimizer()
        self.model.train()
        method.before_training_exp(self)
        offsets = torch.full((N_CLASSES,), float("-inf"))
        offsets[self.loss_classes[task]] = 0.0
        step = 0
        for _ in range(self.train_epochs):
            for xb, yb in self.dataloader:
                self.optimizer.zero_grad()
                method.before_forward(self)
                loss = nn.functional.cross_entropy(self.model(xb) + offsets, yb)
                loss.backward()
                method.after_backward(self)
                method.before_update(self)
                self.optimizer.step()
                method.after_update(self)
                step += 1
                if after_step is not None:
                    after_step(step)
        if before_merge is not None:
            before_merge()
        method.after_training_exp(self)

"""The Avalanche training strategy every run uses, and the accuracy-matrix collector.

``MergeCLStrategy`` is Avalanche's ``SupervisedTemplate`` with what a fair comparison needs and
nothing per-method:

* a fresh optimiser per experience with two learning rates (backbone, head), optional cosine
  schedule with warm-up and gradient clipping;
* the training loss restricted to the current experience's logits (``loss_mask: current``),
  to the classes seen so far (``seen``) or to none (``none``);
* batches cut straight from the experience's tensors when the benchmark provides them
  (offline benchmarks), instead of a per-sample Python data loader; Avalanche's loaders
  otherwise;
* a non-finite loss stops the run with :class:`NonFiniteLossError` naming the step;
* ``train_seconds`` / ``train_steps`` count optimisation steps only (data loading excluded).

The accuracy matrices are collected by ``bench/training/evaluation.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from mergecl.methods.base import loss_class_indices, planned_steps
from torch import Tensor, nn


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class TensorBatches:
    """Mini-batches ``[x, y, task_label]`` cut from in-memory tensors (seeded shuffle)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[list[Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            yield [xb, yb, torch.zeros(len(yb), dtype=torch.long)]


def _cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _fused_supported(groups: list[dict[str, Any]]) -> bool:
    """torch's fused AdamW takes floating-point parameters on CPU or CUDA only."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
               for group in groups for p in group["params"])


class MergeCLStrategy(SupervisedTemplate):
    """SupervisedTemplate with two-rate fresh optimisers, loss masking and fast tensor batches."""

    def __init__(
        self,
        *,
        model: nn.Module,
        parameter_groups: Callable[[], list[dict]],
        config: Any,
        classes_per_experience: Sequence[Sequence[int]],
        n_classes: int,
        train_tensors: Sequence[tuple[Tensor, Tensor]] | None = None,
        test_tensors: Sequence[tuple[Tensor, Tensor]] | None = None,
        plugins: Sequence[SupervisedPlugin] = (),
        generator: torch.Generator | None = None,
        space: Any = None,
        trajectory: Any = None,
        evaluator: EvaluationPlugin | None = None,
    ) -> None:
        self.config = config
        self._parameter_groups = parameter_groups
        placeholder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        if evaluator is None:  # no Avalanche metrics or loggers: the records hold the results
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                evaluator = EvaluationPlugin(loggers=[])
        super().__init__(
            model=model,
            optimizer=placeholder,
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=config.batch_size,
            train_epochs=config.epochs,
            eval_mb_size=config.eval_batch_size,
            device=config.device,
            plugins=list(plugins),
            evaluator=evaluator,
            eval_every=-1,
        )
        self.classes_per_experience = [list(c) for c in classes_per_experience]
        self.n_classes = n_classes
        self.train_tensors = list(train_tensors) if train_tensors is not None else None
        self.test_tensors = list(test_tensors) if test_tensors is not None else None
        self.generator = generator or torch.Generator().manual_seed(config.seed)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.train_seconds = 0.0
        self.train_steps = 0
        self.reused_steps = 0
        self.experience_steps = 0
        self._loss_offsets: Tensor | None = None
        self.space = space
        self.trajectory = trajectory  # a TrajectoryPlan: tasks trained once, shared through the store

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self, **kwargs: Any) -> None:
        cfg = self.config
        groups = self._parameter_groups()
        if cfg.optimizer == "adamw":
            # fused: torch's one-kernel AdamW, the same update as its default for-loop form (equal
            # up to float rounding); 0.37x the default's time on the frozen_blocks: 5 parameters
            # (results/perf.md, 7.adamw.fused_over_default), so adopted
            self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay,
                                               fused=_fused_supported(groups))
        else:
            self.optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scheduler = None
        if cfg.scheduler == "cosine":
            steps = max(1, planned_steps(cfg.epochs, len(self.dataloader), cfg.max_steps_per_exp))
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, _cosine_with_warmup(steps, cfg.warmup_steps))

    def check_model_and_optimizer(self, **kwargs: Any) -> None:
        self.model = self.model_adaptation()
        self.make_optimizer()

    def optimizer_step(self) -> None:
        if self.config.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    # ------------------------------------------------------------------ data
    def _tensors_for(self, experience: Any) -> tuple[Tensor, Tensor] | None:
        stream = getattr(getattr(experience, "origin_stream", None), "name", None)
        index = int(experience.current_experience)
        table = {"train": self.train_tensors, "test": self.test_tensors}.get(stream or "")
        if table is None or index >= len(table):
            return None
        return table[index]

    def make_train_dataloader(self, **kwargs: Any) -> None:
        tensors = self._tensors_for(self.experience)
        if tensors is None:
            super().make_train_dataloader(**kwargs)
            return
        self.dataloader = TensorBatches(*tensors, batch_size=self.train_mb_size, shuffle=True,
                                        generator=self.generator)

    def make_eval_dataloader(self, **kwargs: Any) -> None:
        tensors = self._tensors_for(self.experience)
        if tensors is None:
            super().make_eval_dataloader(**kwargs)
            return
        self.dataloader = TensorBatches(*tensors, batch_size=self.eval_mb_size, shuffle=False)

    # ------------------------------------------------------------------ loss
    def _loss_classes(self) -> list[int] | None:
        return loss_class_indices(self.classes_per_experience, int(self.experience.current_experience),
                                  self.config.loss_mask)

    def _before_training_exp(self, **kwargs: Any) -> None:
        classes = self._loss_classes()
        if classes is None or len(classes) == self.n_classes:
            self._loss_offsets = None
        else:
            offsets = torch.full((self.n_classes,), float("-inf"), device=self.device)
            offsets[classes] = 0.0
            self._loss_offsets = offsets
        self.experience_steps = 0
        super()._before_training_exp(**kwargs)

    def forward(self) -> Tensor:
        x = self.mb_x
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def criterion(self) -> Tensor:
        if not self.is_training:
            return self._make_empty_loss()
        logits = self.mb_output
        if self._loss_offsets is not None:
            logits = logits + self._loss_offsets
        return self._criterion(logits, self.mb_y)

    # ------------------------------------------------------------------ trajectory store
    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        """Train the experience — or, when the run's trajectory plan covers it, read its trained
        state from the store (training it first, under the step's lock, if nobody has yet)."""
        task = int(experience.current_experience)
        slot = self.trajectory.slots.get(task) if self.trajectory is not None else None
        if slot is None:
            super()._train_exp(experience, eval_streams, **kwargs)
            return
        from mergecl.bench.training.trajectories import TrajectoryStep, capture_rng, restore_rng

        key, _ = slot
        store = self.trajectory.store
        with store.lock(key, task):
            step = store.load(key, task)
            if step is not None:  # replay: the model and the random streams as after training
                self.space.load_training_state(step.state)
                self.space.set_generator_state(restore_rng(step.rng, self.generator))
                self.reused_steps += step.steps
                self.trajectory.used.append(task)
                return
            steps, seconds = self.train_steps, self.train_seconds
            super()._train_exp(experience, eval_streams, **kwargs)
            store.save(key, task, TrajectoryStep(
                self.space.training_state(), capture_rng(self.generator, self.space.generator_state()),
                self.train_steps - steps, self.train_seconds - seconds))
            self.trajectory.used.append(task)
            self.trajectory.trained_here.append(task)

    # ------------------------------------------------------------------ loop
    def training_epoch(self, **kwargs: Any) -> None:
        limit = self.config.max_steps_per_exp
        for self.mbatch in self.dataloader:  # noqa: B020 - Avalanche reads strategy.mbatch
            if self._stop_training or (limit is not None and self.experience_steps >= limit):
                break
            self._unpack_minibatch()
            started = perf_counter()
            self._before_training_iteration(**kwargs)
            self.optimizer.zero_grad(set_to_none=True)
            self.loss = self._make_empty_loss()
            self._before_forward(**kwargs)
            self.mb_output = self.forward()
            self._after_forward(**kwargs)
            self.loss += self.criterion()
            self._before_backward(**kwargs)
            if not torch.isfinite(self.loss).all():
                raise NonFiniteLossError(
                    f"training loss became {self.loss.item()} at step {self.train_steps + 1} "
                    f"(experience {self.experience.current_experience})")
            self.backward()
            self._after_backward(**kwargs)
            self._before_update(**kwargs)
            self.optimizer_step()
            self._after_update(**kwargs)
            self._after_training_iteration(**kwargs)
            self.train_seconds += perf_counter() - started
            self.train_steps += 1
            self.experience_steps += 1

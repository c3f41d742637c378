"""The merge life-cycle every method shares, on Avalanche's plugin hooks.

For task t (one Avalanche experience) the base plugin

1. ``before_training_exp`` — chooses the starting point (``train_from``: the merged model
   θ̂_{t-1} — the default —, the previous *trained* weights θ*_{t-1} as MagMax does, or the
   pretrained θ₀), restarts the LoRA adapter, snapshots the start state, then calls
   :meth:`MergeMethod.on_task_start`;
2. lets subclasses act per optimisation step through the ordinary Avalanche hooks
   (``before_forward``, ``after_backward``, …);
3. ``after_training_exp`` — reads the trained state θ*_t, builds the head masks (the shared
   head rule of METHODS.md), calls :meth:`MergeMethod.merge`, loads the merged state for
   evaluation and records per-task diagnostics and the merge time.

Methods that train from unmerged weights but evaluate merged ones (MagMax) keep θ*_t and
swap it back in at the next task's start: the model always holds the merged weights between
experiences, so evaluation needs no extra hook.

All maths is in :mod:`mergecl.methods.merging`; a subclass only chooses which pure function to call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, ClassVar, Literal

import torch
from avalanche.core import SupervisedPlugin
from mergecl.methods.parameterisation import ParameterSpace
from pydantic import BaseModel, ConfigDict
from torch import Tensor

StateDict = dict[str, Tensor]
BatchFactory = Callable[..., Iterable[tuple[Tensor, Tensor]]]


class MethodParams(BaseModel):
    """Hyper-parameters of a method; subclasses add typed, range-checked fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class MethodContext:
    """What a method may know about the run besides the strategy."""

    space: ParameterSpace
    classes_per_experience: list[list[int]]
    n_classes: int
    scenario: str
    head_rule: str = "merge-old-rows"
    batches: BatchFactory | None = None  # batches(experience, max_samples=None, batch_size=None)
    seed: int = 0
    config: Any = None
    generator: torch.Generator = field(default_factory=torch.Generator)

    def seen_classes(self, task: int) -> list[int]:
        """Classes of experiences 0..task."""
        seen: set[int] = set()
        for classes in self.classes_per_experience[: task + 1]:
            seen.update(classes)
        return sorted(seen)

    def new_classes(self, task: int) -> list[int]:
        before = set(self.seen_classes(task - 1)) if task > 0 else set()
        return sorted(set(self.classes_per_experience[task]) - before)

    def class_mask(self, task: int) -> Tensor:
        mask = torch.zeros(self.n_classes, dtype=torch.bool)
        mask[self.seen_classes(task)] = True
        return mask

    def task_batches(self, task: int, max_samples: int | None = None,
                     batch_size: int | None = None) -> Iterable[tuple[Tensor, Tensor]]:
        if self.batches is None:
            raise RuntimeError("this method needs task data after training, but the runner gave none")
        return self.batches(task, max_samples=max_samples, batch_size=batch_size)


def head_masks(space: ParameterSpace, ctx: MethodContext, task: int) -> dict[str, Tensor]:
    """Bool masks over the head: True = merged, False = taken as trained (METHODS.md head rule)."""
    rule = ctx.head_rule
    if rule == "merge-all":
        return {}
    masks: dict[str, Tensor] = {}
    params = space.parameters_by_name()
    new = ctx.new_classes(task)
    for name in space.head_names:
        shape = params[name].shape
        if rule == "keep-trained":
            masks[name] = torch.zeros(shape, dtype=torch.bool)
        elif rule == "merge-old-rows":
            mask = torch.ones(shape, dtype=torch.bool)
            if new and shape[0] == ctx.n_classes:
                mask[new] = False
            masks[name] = mask
        else:
            raise ValueError(f"unknown head_rule {rule!r}; accepted: merge-old-rows, merge-all, keep-trained")
    return masks


def keep_trained_where_unmasked(merged: StateDict, trained: StateDict, masks: dict[str, Tensor]) -> StateDict:
    """Entries whose mask is False are taken from θ*_t whatever the merge computed there."""
    if not masks:
        return merged
    out = dict(merged)
    for name, mask in masks.items():
        if name in out:
            out[name] = torch.where(mask.to(out[name].device), out[name], trained[name])
    return out


def loss_classes(ctx: MethodContext, task: int) -> Tensor | None:
    """Bool mask of the logits the training loss used at ``task`` (None: all logits)."""
    mode = getattr(ctx.config, "loss_mask", "none") if ctx.config is not None else "none"
    if mode == "none":
        return None
    mask = torch.zeros(ctx.n_classes, dtype=torch.bool)
    mask[ctx.classes_per_experience[task] if mode == "current" else ctx.seen_classes(task)] = True
    return mask


class MergeMethod(SupervisedPlugin):
    """Base class of every method plugin. Subclasses override :meth:`merge` and hooks."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    train_from: ClassVar[Literal["merged", "trained", "pretrained"]] = "merged"
    upper_bound: ClassVar[bool] = False
    parameterisations: ClassVar[tuple[str, ...]] = ("full", "lora")

    def __init__(self, params: MethodParams, context: MethodContext) -> None:
        super().__init__()
        self.params = params
        self.ctx = context
        self.space = context.space
        self.task = -1
        self.pretrained_state: StateDict | None = None
        self.start_state: StateDict | None = None
        self.trained_state: StateDict | None = None
        self.per_task: list[dict[str, Any]] = []
        self.merge_seconds = 0.0

    # ---------------------------------------------------------------- life-cycle
    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.task = int(strategy.experience.current_experience)
        if self.pretrained_state is None and (self.train_from == "pretrained" or self.keeps_pretrained()):
            self.pretrained_state = self.space.effective_state()
        if self.train_from == "trained" and self.trained_state is not None:
            self.space.load_effective_state(self.trained_state)
        elif self.train_from == "pretrained" and self.pretrained_state is not None:
            self.space.load_effective_state(self.pretrained_state)
        self.space.start_task()
        self.start_state = self.space.effective_state()
        self.on_task_start(strategy)

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        started = perf_counter()
        trained = self.space.effective_state()
        masks = head_masks(self.space, self.ctx, self.task)
        was_training = strategy.model.training
        strategy.model.eval()
        try:
            merged, diagnostics = self.merge(strategy, trained, masks)
        finally:
            strategy.model.train(was_training)
        self.space.load_effective_state(keep_trained_where_unmasked(merged, trained, masks))
        if self.train_from == "trained":
            self.trained_state = trained
        elapsed = perf_counter() - started
        self.merge_seconds += elapsed
        self.per_task.append({"task": self.task, "merge_s": round(elapsed, 4), **diagnostics})
        self.start_state = None

    # ---------------------------------------------------------------- for subclasses
    def keeps_pretrained(self) -> bool:
        """Whether θ₀ must be kept (task-vector methods)."""
        return False

    def on_task_start(self, strategy: Any) -> None:
        """Called after the start state is in place, before the first step of a task."""

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict[str, Any]]:
        """Return (merged state, per-task diagnostics). Default: no merge (θ̂_t = θ*_t)."""
        return trained, {}

    def estimate_fisher(self, task: int, max_samples: int, labels: str = "true",
                        chunk_size: int | None = 32) -> StateDict:
        """Diagonal empirical Fisher of the current weights on ``task``'s training data,
        over exactly the mergeable entries, with the logits the training loss used."""
        from mergecl.methods.fisher import diagonal_fisher

        model = self.space.model
        was_training = model.training
        channels_last = getattr(model, "channels_last", False)
        model.eval()
        if channels_last:  # vmap cannot re-layout per-sample inputs
            model.channels_last = False
        try:
            return diagonal_fisher(
                model, self.ctx.task_batches(task, max_samples=max_samples, batch_size=chunk_size),
                self.space.names, labels=labels, class_mask=loss_classes(self.ctx, task),
                chunk_size=chunk_size, max_samples=max_samples)
        finally:
            model.train(was_training)
            if channels_last:
                model.channels_last = True

    def diagnostics(self) -> dict[str, Any]:
        return {"per_task": self.per_task}

    def extra_plugins(self) -> list[SupervisedPlugin]:
        """Further Avalanche plugins this method runs with (EWC, LwF)."""
        return []

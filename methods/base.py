"""The method contract: a typed, frozen context and the merge life-cycle on Avalanche's hooks.

Every method is an Avalanche strategy plugin (:class:`MergeMethod`) over a pure rule that
lives in the method's own module. For task t (one Avalanche experience) the plugin

1. ``before_training_exp`` — puts the training start point in place (``train_from``: the
   merged model θ̂_{t−1} — the default —, the previous *trained* weights θ*_{t−1}, or the
   pretrained θ₀), starts the task in the parameter space (LoRA: a fresh adapter), snapshots
   the start state, records the task's training plan, then calls :meth:`MergeMethod.on_task_start`;
2. lets the subclass act per optimisation step through the ordinary Avalanche hooks
   (``before_forward``, ``after_backward``, …);
3. ``after_training_exp`` — reads the trained state θ*_t, builds the head masks (the shared
   head rule), calls :meth:`MergeMethod.merge` — which returns a :class:`MergeResult` and never
   touches the model —, loads the merged state, calls :meth:`MergeMethod.on_merged` (for
   statistics that must be taken at θ̂_t) and records per-task diagnostics and the merge time.

Methods that train from unmerged weights but evaluate merged ones (MagMax) keep θ*_t and put
it back at the next task's start: between experiences the model always holds θ̂_t, so any
evaluation sees the merged model.

**Timing.** A method declares ``timing``: ``"post-hoc"`` — it consumes a trained trajectory
θ*_1..θ*_T and never shapes its own training (MagMax, TIES, random mix, task arithmetic,
OPCM, DOP; SeqFT is the identity merge of the same trajectory) — or ``"online"`` — its
training depends on its merges (P&M, averaging, CoMA, DARE, BECAME, TRM, EWC, LwF). The
harness's trajectory store trains a post-hoc method's trajectory once for all of them, and
shares the first task's training with every method whose ``plain_first_task`` is true.

**Avalanche without importing it.** :class:`PluginHooks` implements Avalanche's supervised
plugin protocol (the 26 ``before_*``/``after_*`` callbacks, no-ops) so that method modules —
their Params and rules — import without Avalanche (``mergecl methods`` answers at once).
A plugin is registered as a virtual subclass of ``avalanche.core.SupervisedPlugin`` when the
first one is built, so ``isinstance(plugin, SupervisedPlugin)`` holds for users' templates.

**Diagnostics.** Per-task diagnostics use shared key names for shared concepts:
:data:`MERGE_COEFFICIENT` for the coefficient a merge applied (P&M's α, BECAME's λ, the
averaging weight, the λ of merges anchored at θ₀); plots read that key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, ClassVar, Literal

import torch
from mergecl.methods.parameterisation import ParameterSpace
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

StateDict = dict[str, Tensor]
BatchFactory = Callable[..., Iterable[tuple[Tensor, Tensor]]]
Scenario = Literal["class-incremental", "domain-incremental"]
LossMask = Literal["current", "seen", "none"]
HeadRule = Literal["merge-old-rows", "merge-all", "keep-trained"]
Timing = Literal["online", "post-hoc"]
Family = Literal["merge", "regulariser", "lower-bound", "upper-bound"]
TrainFrom = Literal["merged", "trained", "pretrained"]

MERGE_COEFFICIENT = "merge_coefficient"
"""Per-task diagnostic key of the coefficient a merge applied (α, λ or the averaging weight)."""

AVALANCHE_HOOKS: tuple[str, ...] = (
    "before_training", "after_training", "before_training_exp", "after_training_exp",
    "before_train_dataset_adaptation", "after_train_dataset_adaptation",
    "before_training_epoch", "after_training_epoch", "before_training_iteration",
    "after_training_iteration", "before_forward", "after_forward", "before_backward",
    "after_backward", "before_update", "after_update",
    "before_eval", "after_eval", "before_eval_exp", "after_eval_exp",
    "before_eval_dataset_adaptation", "after_eval_dataset_adaptation",
    "before_eval_iteration", "after_eval_iteration", "before_eval_forward", "after_eval_forward",
)
"""The callbacks of Avalanche 0.6's ``SupervisedPlugin`` (tests/methods/test_base.py checks
this list against the installed Avalanche)."""


class PluginHooks:
    """Avalanche's supervised plugin protocol as no-op methods, without importing Avalanche.

    Avalanche calls a plugin's hook ``h`` as ``plugin.h(strategy, **kwargs)`` when the plugin
    has it; subclasses override the ones they need.
    """

    supports_distributed: ClassVar[bool] = False


def _no_op(self: Any, strategy: Any, *args: Any, **kwargs: Any) -> None:
    """Does nothing (an Avalanche callback this plugin does not use)."""


for _hook in AVALANCHE_HOOKS:
    setattr(PluginHooks, _hook, _no_op)
del _hook

_registered_with_avalanche = False


def register_with_avalanche() -> None:
    """Make every :class:`MergeMethod` a virtual subclass of Avalanche's ``SupervisedPlugin``."""
    global _registered_with_avalanche
    if not _registered_with_avalanche:
        from avalanche.core import SupervisedPlugin

        SupervisedPlugin.register(MergeMethod)
        _registered_with_avalanche = True


# -------------------------------------------------------------------------------- the plan


def planned_steps(epochs: int, batches_per_epoch: int, max_steps: int | None = None) -> int:
    """Optimisation steps of one experience: epochs × batches, capped by ``max_steps``.

    The one definition: the strategy's learning-rate schedule and the methods that act on a
    step count (BECAME's stage switch, TRM's checkpoints) all use it."""
    total = max(0, int(epochs)) * max(0, int(batches_per_epoch))
    if max_steps is not None:
        total = min(total, int(max_steps))
    return total


def loss_class_indices(classes_per_experience: Sequence[Sequence[int]], task: int,
                       loss_mask: LossMask) -> list[int] | None:
    """The classes whose logits the training loss of ``task`` uses: the task's own
    (``current``), every class seen so far (``seen``) or all logits (``none`` → None).

    The one definition: the strategy masks its loss with it, methods read it through
    :meth:`MethodContext.loss_classes`."""
    if loss_mask == "none":
        return None
    if loss_mask == "current":
        return sorted(classes_per_experience[task])
    if loss_mask == "seen":
        return sorted({c for group in classes_per_experience[: task + 1] for c in group})
    raise ValueError(f"unknown loss_mask {loss_mask!r}; accepted: current, seen, none")


@dataclass(frozen=True)
class TaskPlan:
    """The training plan of one task: ``steps`` optimisation steps over ``epochs`` epochs of
    ``steps_per_epoch`` batches (``steps`` may be capped below epochs × steps_per_epoch)."""

    steps: int
    epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class MergeResult:
    """What :meth:`MergeMethod.merge` returns: the merged state θ̂_t and per-task diagnostics."""

    state: StateDict
    diagnostics: dict[str, Any] = field(default_factory=dict)


class MethodParams(BaseModel):
    """Hyper-parameters of a method; subclasses add typed, range-checked fields.

    A field whose ``json_schema_extra`` holds ``{"tune": [...]}`` (see :func:`tunable`) is a
    tunable hyper-parameter with that default search space."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def tunable(default: Any, space: Sequence[Any], **kwargs: Any) -> Any:
    """A ``Field`` that is a tunable hyper-parameter with the default search space ``space``."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra["tune"] = list(space)
    return Field(default, json_schema_extra=extra, **kwargs)


def tunables(params_class: type[MethodParams]) -> dict[str, list[Any]]:
    """{field: default search space} of the tunable hyper-parameters of ``params_class``."""
    out: dict[str, list[Any]] = {}
    for name, info in params_class.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "tune" in extra:
            out[name] = list(extra["tune"])  # type: ignore[arg-type]
    return out


# -------------------------------------------------------------------------------- the context


class MethodContext(BaseModel):
    """What a method may know about the run besides the model: the stream's classes, the loss
    it is trained with, the head rule, the step cap, the task data and a seeded generator.

    Frozen and typed; built by the runner (or by :func:`mergecl.plugin` from an Avalanche
    benchmark)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    space: ParameterSpace
    classes_per_experience: tuple[tuple[int, ...], ...]
    n_classes: int = Field(ge=1)
    scenario: Scenario
    loss_mask: LossMask = "current"
    head_rule: HeadRule = "merge-old-rows"
    max_steps_per_experience: int | None = Field(None, ge=1)
    batches: BatchFactory | None = None
    """``batches(task, max_samples=None, batch_size=None)`` → (x, y) training batches of a task."""
    generator: torch.Generator = Field(default_factory=torch.Generator)

    @model_validator(mode="after")
    def _classes_in_range(self) -> MethodContext:
        bad = sorted({c for group in self.classes_per_experience for c in group
                      if not 0 <= c < self.n_classes})
        if bad:
            raise ValueError(f"classes {bad[:5]} are outside [0, {self.n_classes})")
        return self

    def seen_classes(self, task: int) -> list[int]:
        """Classes of experiences 0..task."""
        seen: set[int] = set()
        for classes in self.classes_per_experience[: task + 1]:
            seen.update(classes)
        return sorted(seen)

    def new_classes(self, task: int) -> list[int]:
        """Classes first seen in experience ``task``."""
        before = set(self.seen_classes(task - 1)) if task > 0 else set()
        return sorted(set(self.classes_per_experience[task]) - before)

    def class_mask(self, task: int) -> Tensor:
        """Bool mask of the classes seen up to ``task``."""
        mask = torch.zeros(self.n_classes, dtype=torch.bool)
        mask[self.seen_classes(task)] = True
        return mask

    def loss_classes(self, task: int) -> Tensor | None:
        """Bool mask of the logits the training loss used at ``task`` (None: all logits)."""
        classes = loss_class_indices(self.classes_per_experience, task, self.loss_mask)
        if classes is None:
            return None
        mask = torch.zeros(self.n_classes, dtype=torch.bool)
        mask[classes] = True
        return mask

    def task_batches(self, task: int, max_samples: int | None = None,
                     batch_size: int | None = None) -> Iterable[tuple[Tensor, Tensor]]:
        """Training batches of ``task`` (seeded order), at most ``max_samples`` samples."""
        if self.batches is None:
            raise RuntimeError("this method needs task data after training; build its context "
                               "with batches=… (mergecl.plugin infers them from the benchmark)")
        return self.batches(task, max_samples=max_samples, batch_size=batch_size)

    def task_plan(self, strategy: Any) -> TaskPlan:
        """The training plan of the strategy's current experience."""
        per_epoch = len(strategy.dataloader)
        epochs = int(strategy.train_epochs)
        return TaskPlan(planned_steps(epochs, per_epoch, self.max_steps_per_experience),
                        epochs, per_epoch)


def head_masks(space: ParameterSpace, ctx: MethodContext, task: int) -> dict[str, Tensor]:
    """Bool masks over the head: True = merged, False = taken as trained (the shared head rule:
    rows of classes first seen in ``task`` are taken as trained, docs/methods.md)."""
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


# -------------------------------------------------------------------------------- the plugin


class MergeMethod(PluginHooks):
    """Base class of every method plugin. Subclasses override :meth:`merge` and hooks."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    timing: ClassVar[Timing] = "online"
    family: ClassVar[Family] = "merge"
    """What the method is on the leaderboard: a merge, a regulariser (EWC, LwF), or a bound."""
    keeps_pretrained: ClassVar[bool] = False
    upper_bound: ClassVar[bool] = False
    parameterisations: ClassVar[tuple[str, ...]] = ("full", "lora")

    def __init__(self, params: MethodParams, context: MethodContext) -> None:
        register_with_avalanche()
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} needs {self.Params.__name__}, got {type(params).__name__}")
        self.params = params
        self.ctx = context
        self.space = context.space
        self.task = -1
        self.plan: TaskPlan | None = None
        self.pretrained_state: StateDict | None = None
        self.start_state: StateDict | None = None
        self.trained_state: StateDict | None = None
        self.per_task: list[dict[str, Any]] = []
        self.merge_seconds = 0.0

    # ---------------------------------------------------------------- declarations
    @property
    def train_from(self) -> TrainFrom:
        """Where task t's training starts (derived from the params where a method has a choice)."""
        return "merged"

    @property
    def plain_first_task(self) -> bool:
        """Whether task 0 is trained exactly as plain fine-tuning from θ₀ (no per-step action),
        so that the harness may share it with other methods."""
        return False

    # ---------------------------------------------------------------- life-cycle
    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.task = int(strategy.experience.current_experience)
        if self.pretrained_state is None and (self.train_from == "pretrained" or self.keeps_pretrained):
            self.pretrained_state = self.space.effective_state()
        if self.train_from == "trained" and self.trained_state is not None:
            self.space.load_effective_state(self.trained_state)
        elif self.train_from == "pretrained" and self.pretrained_state is not None:
            self.space.load_effective_state(self.pretrained_state)
        self.space.start_task()
        self.start_state = self.space.effective_state()
        if getattr(strategy, "dataloader", None) is not None:
            self.plan = self.ctx.task_plan(strategy)
        self.on_task_start(strategy)

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        started = perf_counter()
        trained = self.space.effective_state()
        masks = head_masks(self.space, self.ctx, self.task)
        was_training = self.space.model.training
        self.space.model.eval()
        try:
            result = self.merge(trained, masks)
            merged = keep_trained_where_unmasked(result.state, trained, masks)
            self.space.load_effective_state(merged)
            extra = self.on_merged(strategy, merged)
        finally:
            self.space.model.train(was_training)
        if self.train_from == "trained":
            self.trained_state = trained
        elapsed = perf_counter() - started
        self.merge_seconds += elapsed
        self.per_task.append({"task": self.task, "merge_s": round(elapsed, 4),
                              **result.diagnostics, **extra})
        self.start_state = None

    # ---------------------------------------------------------------- for subclasses
    def on_task_start(self, strategy: Any) -> None:
        """Called after the start state is in place, before the first step of a task."""

    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        """The merged state θ̂_t from θ*_t (``trained``) and the head ``masks`` (True = merged);
        must not change the model. Default: no merge (θ̂_t = θ*_t)."""
        return MergeResult(trained)

    def on_merged(self, strategy: Any, merged: StateDict) -> dict[str, Any]:
        """Called with θ̂_t loaded in the model (statistics taken at the merged model);
        returns extra per-task diagnostics."""
        return {}

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
                self.space.names, labels=labels, class_mask=self.ctx.loss_classes(task),
                chunk_size=chunk_size, max_samples=max_samples)
        finally:
            model.train(was_training)
            if channels_last:
                model.channels_last = True

    def diagnostics(self) -> dict[str, Any]:
        return {"per_task": self.per_task}

    def extra_plugins(self) -> list[Any]:
        """Further Avalanche plugins this method runs with (EWC, LwF)."""
        return []


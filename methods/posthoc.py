"""The shared base of post-hoc merges anchored at the pretrained weights θ₀.

MagMax, TIES, random mix, task arithmetic, OPCM and DOP all compute the model used for
inference from the task vectors τ_i = θ*_i − θ₀ of a *trained trajectory* θ*_1 … θ*_T, and
from nothing else:

    θ̂_t = θ₀ + λ_t · τ̂_t,      τ̂_t = fold(τ̂_{t−1}, τ_t)

Each method supplies only its fold — :meth:`AnchoredMerge.combine`, which folds τ_t into a
running state it holds (never a list of T models unless the rule needs one, like TIES) and
returns the merged task vector τ̂_t and the scale λ_t. This base does the rest: θ₀ is
snapshotted before the first task, τ_t is formed, the head is handled, and θ̂_t is assembled.

**Post hoc.** These methods never shape their own training: the trajectory is sequential
fine-tuning (task t from θ*_{t−1}, ``train_from = "trained"``) or, for MagMax's ``ind``
variant, every task from θ₀ (``"pretrained"``). The harness therefore trains that trajectory
once and lets every post-hoc method read it (``timing = "post-hoc"``).

**The head** (``head`` parameter; docs/methods.md, "Head rows in merges anchored at θ₀").
With a zero-initialised classifier, θ₀ + λ·τ turns the rows of old classes into λ·W* while
the rows of new classes are copied as trained — a systematic bias toward the newest classes.
In the papers these methods come from, the head is a frozen zero-shot text head that is never
selected, trimmed or scaled. So by default (``head: trained``) every head row is taken as
trained by the last task whose training loss included its class (the rows of task t's loss
classes are copied from θ*_t; with ``loss_mask: none`` that is every row), and the fold sees
the backbone only. ``head: merge`` is the ablation that reproduces the older rule: the head
is folded and scaled like the backbone, except the rows of classes new in task t.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from mergecl.methods import merging
from mergecl.methods.base import (
    MERGE_COEFFICIENT,
    MergeMethod,
    MergeResult,
    MethodParams,
    StateDict,
)
from pydantic import Field
from torch import Tensor

HeadRule = Literal["trained", "merge"]


class AnchoredMergeParams(MethodParams):
    """Parameters every post-hoc merge anchored at θ₀ shares."""

    head: HeadRule = Field(
        "trained", description="trained: every head row as trained by the last task of its class "
        "(the papers' frozen head); merge: scale old rows like the backbone (ablation)")


class AnchoredMerge(MergeMethod):
    """θ̂_t = θ₀ + λ_t·τ̂_t with τ̂_t folded from the task vectors; subclasses give the fold."""

    timing: ClassVar[str] = "post-hoc"
    keeps_pretrained: ClassVar[bool] = True
    Params: ClassVar[type[MethodParams]] = AnchoredMergeParams

    def __init__(self, params: AnchoredMergeParams, context: Any) -> None:
        super().__init__(params, context)
        self.trained_head: StateDict = {}

    @property
    def train_from(self) -> str:
        return "trained"

    @property
    def plain_first_task(self) -> bool:
        return True

    # ---------------------------------------------------------------- the rule
    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        """Fold ``task_vector`` (τ_task over the entries this merge acts on) into the running
        state; return the merged task vector τ̂_task and the scale λ_task applied to it."""
        raise NotImplementedError

    def merge_diagnostics(self) -> dict[str, Any]:
        """Extra per-task diagnostics of the fold (after :meth:`combine`)."""
        return {}

    # ---------------------------------------------------------------- the life-cycle
    def body_names(self, state: StateDict) -> list[str]:
        """The float entries the fold acts on: all but the head when ``head: trained``."""
        head = set(self.space.head_names) if self.params.head == "trained" else set()
        return [n for n, v in state.items() if n not in head and merging.is_mergeable(v)]

    def record_trained_head(self, trained: StateDict) -> None:
        """Copy the head rows of the classes task ``self.task``'s loss trained from θ*_t."""
        classes = self.ctx.loss_classes(self.task)
        for name in self.space.head_names:
            value = trained[name].detach()
            held = self.trained_head.get(name)
            if held is None or classes is None or value.shape[:1] != classes.shape:
                self.trained_head[name] = value.clone()
            else:
                rows = classes.to(value.device)
                held[rows] = value[rows]

    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.pretrained_state is not None
        pretrained = self.pretrained_state
        names = self.body_names(trained)
        tau = merging.task_vector({n: trained[n] for n in names}, {n: pretrained[n] for n in names})
        merged_tv, scale = self.combine(tau, self.task)
        anchor = {n: pretrained[n] for n in names}
        if self.params.head == "trained":
            self.record_trained_head(trained)
            merged = merging.add_scaled(anchor, merged_tv, scale)
            merged.update({n: v.clone() for n, v in self.trained_head.items()})
        else:
            body_masks = {n: m for n, m in masks.items() if n in anchor}
            merged = merging.add_scaled(anchor, merged_tv, scale, masks=body_masks)
        for name, value in trained.items():  # entries outside the fold (non-float): as trained
            merged.setdefault(name, value)
        return MergeResult(merged, {MERGE_COEFFICIENT: scale, **self.merge_diagnostics()})

"""TRM — Trajectory Regularized Merging: a mergecl RECONSTRUCTION from the abstract only.

Wang, Deng, "Revitalizing the Beginning: Avoiding Storage Dependency for Model Merging in
Continual Learning", arXiv 2605.08311. Only the abstract is public and there is no code:
everything below is mergecl's reconstruction (docs/methods.md, "TRM"), not the authors'
algorithm. Tables label it as such.

Per task t (training starts from θ̂_{t-1}, the only stored model):

* Trajectory. K checkpoints θ^{(1..K)} are kept along task t's training (default: the end of
  each epoch, K ≤ 5; with fewer than 2 epochs, 3 evenly spaced step checkpoints at 1/3, 2/3
  and the end; ``checkpoints: K`` gives K evenly spaced step checkpoints). The last is θ*_t.
  Directions d_j = θ^{(j)} − θ̂_{t-1}. Only the K − 1 intermediate checkpoints are copied
  during training; they are dropped in the merge.
* Augmented subspace: the d_j plus (``use_magmax_direction``) their element-wise
  max-magnitude combination d_MM,k = d_{j,k}, j = argmax_j |d_{j,k}| (ties → later).
* Candidate θ(c) = θ̂_{t-1} + Σ_j c_{g,j}·d_j, one coefficient vector c_g per group of
  tensors (``groups``: ``block`` — stem, each top-level backbone block, what follows the blocks
  ("neck"), the head; ``layer`` — one per tensor; ``global`` — one). Initialised at
  θ(c⁰) = θ*_t (c_{g,K} = 1, others 0).
* Objectives on task t's data only, minimised over c with Adam (``steps``, ``lr``):
      w_align · CE(θ(c); task t)                   task alignment (the training loss's logits)
    + w_consistency · KL(p_{θ̂_{t-1}} ‖ p_{θ(c)})  prediction consistency, on task t's inputs:
          class-incremental — softmax over the classes seen before t (the new classes' logits
          are not constrained); domain-incremental — all classes, only on the samples that
          θ̂_{t-1} classifies correctly; skipped at t = 0
    + w_responsiveness · R(θ(c))                    gradient responsiveness, on a held-out batch:
          ``grad-floor`` (default): R = max(0, ρ·g* − ‖∇_θ CE(θ(c))‖), g* = the gradient norm
          at θ*_t, ρ = ``grad_floor`` — a hinge floor, zero at θ*_t;
          ``entropy``: R = mean max(0, h·log C − H(p_θ(c))), an entropy floor (h =
          ``entropy_floor``, C the allowed logits).
  A weight of 0 switches a term off; all off (or ``steps: 0``) returns θ*_t exactly.
* Constraint (``protect_current_task``, default ``domain-incremental``): no term may be
  minimised by forgetting the task just learned. On a domain-incremental stream every term
  acts on the same classes as task t's loss, so the result is the iterate (c⁰ and every Adam
  iterate) with the lowest total objective among those whose task-t loss on the objective
  samples is at most min(loss(θ̂_{t-1}), loss(θ*_t)); θ̂_{t-1} itself (c = 0) is the fallback
  when none qualifies — the merge never raises the current task's loss above that of the
  better of its two anchors (on those samples). On a class-incremental stream the consistency
  acts on the old classes' logits only, a trade of the new task's fit for the old classes'
  (TRM's purpose), so the final iterate is kept (``always`` applies the rule there too; its
  effect is measured by the ablation row ``trm-protect-always`` of
  bench/config/grids/fidelity.yaml, on mnist-fmnist: results/fidelity.md).
* θ̂_t = θ(c); the checkpoints are dropped after the merge (storage: one model).

Changes from mergecl's first reconstruction (and why): the consistency term was a KL over
all classes on a domain-incremental stream, which pulls the new domain toward the previous
model's wrong answers (rotated-mnist records at 22ef3ba: task t's alignment loss, per_task
objectives_before → _after, rose from 0.06–0.22 to 0.59–2.48 in every merge, t ≥ 2, seeds 0–2); the responsiveness term was −log‖∇CE‖, an unbounded reward
for large gradients, i.e. for a high loss. Both are restated above; the acceptance rule makes
the "no forgetting of task t" requirement hold by construction.

Implementation notes.
* Exactness: θ(c) is evaluated as θ*_t + Σ_j (c_{g,j} − c⁰_{g,j})·d_j, mathematically the
  same candidate, so that at c = c⁰ it is θ*_t bit for bit.
* Entries the head rule takes as trained (mask False) have their directions zeroed: they stay
  at θ*_t in every candidate, during the optimisation as in the result.
* The model is never changed by the merge: candidates are evaluated with
  ``torch.func.functional_call`` on the effective (base-weight) names; in LoRA the adapters'
  B factors are overridden with zeros, so the adapter adds nothing and nothing is counted twice.
* The objective samples (``samples``) are split: the last quarter (at most ``batch_size``)
  is the held-out batch of the responsiveness term, the rest feeds alignment/consistency in
  shuffled mini-batches and the acceptance rule. The gradient norm is over all merged entries.
* Cost: every coefficient step is a forward/backward of the network (``grad-floor`` adds a
  double backward on the held-out batch) plus one evaluation of the iterate on the objective
  samples for the acceptance rule.

Defaults: ``steps`` 30, ``lr`` 0.05, ``samples`` 256, ``w_align`` 1, ``w_consistency`` 1,
``w_responsiveness`` 0.1, ``grad_floor`` 1.0 — mergecl's choices (the paper's are not public);
the default leaderboard preset lowers ``steps``/``samples`` to its CPU budget.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from time import perf_counter
from typing import Any, Literal

import torch
import torch.nn.functional as F
from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MergeResult, MethodParams, StateDict, tunable
from mergecl.methods.magmax import max_magnitude
from pydantic import Field
from torch import Tensor
from torch.func import functional_call

MAX_CHECKPOINTS = 5
_BLOCK = re.compile(r"(?:^|\.)((?:blocks|layers|stages)\.\d+|layer\d+)(?:\.|$)")

# ------------------------------------------------------------------------------ pure helpers


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def checkpoint_steps(total_steps: int, epochs: int, steps_per_epoch: int,
                     count: int | None = None) -> list[int]:
    """Step counts after which a checkpoint is taken (sorted, distinct, last = ``total_steps``).

    ``count`` None and ≥ 2 epochs: the end of each epoch (at most 5, evenly spaced, last
    kept). Otherwise ``count`` (default 3) evenly spaced steps round(j·T/K), j = 1..K.
    """
    if total_steps < 1:
        return []
    if count is None and epochs >= 2:
        ends = sorted({min(e * steps_per_epoch, total_steps) for e in range(1, epochs + 1)} - {0})
        if len(ends) > MAX_CHECKPOINTS:
            ends = [ends[_round_half_up((i + 1) * len(ends) / MAX_CHECKPOINTS) - 1]
                    for i in range(MAX_CHECKPOINTS)]
    else:
        k = count or 3
        ends = [_round_half_up(j * total_steps / k) for j in range(1, k + 1)]
    steps = sorted({s for s in ends if 0 < s <= total_steps} | {total_steps})
    return steps


def coefficient_groups(names: list[str], head_names: list[str],
                       mode: Literal["block", "layer", "global"]) -> tuple[dict[str, int], list[str]]:
    """{tensor name: group index} and the group labels, in first-seen order.

    ``block``: ``head`` for the head's tensors, ``blocks.<i>`` (also ``layers.<i>``,
    ``stages.<i>``, ``layer<i>``) for a top-level block, ``stem`` for tensors before the first
    block, ``neck`` for the other tensors after it. ``layer``: one group per tensor.
    ``global``: one group.
    """
    head = set(head_names)
    labels: list[str] = []
    assignment: dict[str, int] = {}
    seen_block = False
    for name in names:
        if mode == "global":
            label = "all"
        elif mode == "layer":
            label = name
        elif name in head:
            label = "head"
        else:
            match = _BLOCK.search(name)
            if match:
                seen_block = True
                label = match.group(1)
            else:
                label = "neck" if seen_block else "stem"
        if label not in labels:
            labels.append(label)
        assignment[name] = labels.index(label)
    return assignment, labels


def trajectory_directions(start: StateDict, checkpoints: list[StateDict], use_magmax: bool,
                          masks: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], list[str]]:
    """Stacked directions {name: [J, *shape]} and their labels.

    d_j = checkpoint_j − start (j = 1..K; the last checkpoint is θ*_t), then, if ``use_magmax``
    and K ≥ 2, the element-wise max-magnitude combination of the d_j. Entries whose mask is
    False are zeroed in every direction.
    """
    if not checkpoints:
        raise ValueError("need at least one checkpoint (θ*_t)")
    vectors = [merging.task_vector(state, start) for state in checkpoints]
    labels = [f"d{j + 1}" for j in range(len(vectors))]
    if use_magmax and len(vectors) >= 2:
        vectors.append(max_magnitude(vectors[: len(checkpoints)]))
        labels.append("magmax")
    directions: dict[str, Tensor] = {}
    for name in start:
        if not merging.is_mergeable(start[name]):
            continue
        stacked = torch.stack([v[name] for v in vectors])
        mask = (masks or {}).get(name)
        if mask is not None:
            stacked = stacked * mask.to(stacked.device, stacked.dtype)
        directions[name] = stacked
    return directions, labels


def candidate_state(anchor: StateDict, directions: dict[str, Tensor], groups: dict[str, int],
                    offsets: Tensor) -> StateDict:
    """θ = anchor + Σ_j offsets[g(name), j]·d_j for every name of ``directions``.

    With anchor θ*_t and offsets c − c⁰ this is θ(c); offsets = 0 give the anchor exactly.
    Differentiable in ``offsets``.
    """
    out: StateDict = {}
    for name, stacked in directions.items():
        weights = offsets[groups[name]].to(device=stacked.device, dtype=stacked.dtype)
        out[name] = anchor[name] + torch.tensordot(weights, stacked, dims=1)
    return out


def _restricted(logits: Tensor, class_mask: Tensor | None) -> Tensor:
    if class_mask is None:
        return logits
    return logits.masked_fill(~class_mask.to(logits.device), float("-inf"))


def alignment_loss(logits: Tensor, targets: Tensor, class_mask: Tensor | None) -> Tensor:
    """Cross-entropy on the task's data with the training loss's logits."""
    return F.cross_entropy(_restricted(logits, class_mask), targets)


def consistency_loss(logits: Tensor, reference_logits: Tensor, classes: Tensor,
                     weights: Tensor | None = None) -> Tensor:
    """KL(p_ref ‖ p) with both softmaxes over ``classes`` (long indices), averaged over the
    samples with ``weights`` (1 = included; None: all). 0 when no sample is included."""
    classes = classes.to(logits.device)
    log_p = torch.log_softmax(logits[:, classes], dim=1)
    log_ref = torch.log_softmax(reference_logits[:, classes].to(logits.dtype), dim=1)
    per_sample = (log_ref.exp() * (log_ref - log_p)).sum(dim=1)
    if weights is None:
        return per_sample.mean()
    weights = weights.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)




def gradient_norm(loss: Tensor, params: list[Tensor], create_graph: bool) -> Tensor:
    """‖∇_params loss‖ (double-backward-able with ``create_graph``)."""
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    squared = sum(g.square().sum() for g in grads if g is not None)
    return torch.sqrt(torch.as_tensor(squared) + 1e-30)


def gradient_floor_penalty(norm: Tensor, floor: float) -> Tensor:
    """max(0, floor − ‖∇‖): a hinge floor, zero whenever the gradient is at least ``floor``."""
    return torch.relu(floor - norm)


def entropy_floor_penalty(logits: Tensor, class_mask: Tensor | None, floor: float) -> Tensor:
    """mean max(0, floor·log C − H(p)) over the allowed logits (C of them)."""
    logits = _restricted(logits, class_mask)
    allowed = logits.shape[1] if class_mask is None else int(class_mask.sum())
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    entropy = -(p * log_p.masked_fill(p == 0, 0.0)).sum(dim=1)
    return torch.relu(floor * math.log(max(allowed, 1)) - entropy).mean()


# ------------------------------------------------------------------------------ the method


class TRMParams(MethodParams):
    checkpoints: int | None = Field(None, ge=1, le=MAX_CHECKPOINTS,
                                    description="K step checkpoints; None: epoch ends (or 3)")
    use_magmax_direction: bool = True
    groups: Literal["block", "layer", "global"] = "block"
    steps: int = Field(30, ge=0, le=10_000, description="Adam steps over the coefficients")
    lr: float = Field(0.05, gt=0.0, le=10.0)
    batch_size: int = Field(64, ge=1)
    w_align: float = Field(1.0, ge=0.0, description="weight of task alignment (0: off)")
    w_consistency: float = tunable(1.0, [0.0, 0.1, 1.0, 10.0], ge=0.0,
                                   description="weight of prediction consistency (0: off)")
    w_responsiveness: float = tunable(0.1, [0.0, 0.01, 0.1, 1.0], ge=0.0,
                                      description="weight of gradient responsiveness (0: off)")
    responsiveness: Literal["grad-floor", "entropy"] = "grad-floor"
    grad_floor: float = Field(1.0, ge=0.0, le=10.0, description="ρ: floor = ρ·‖∇CE(θ*_t)‖ (grad-floor)")
    entropy_floor: float = Field(0.1, ge=0.0, le=1.0, description="share of log C (entropy mode)")
    samples: int = Field(256, ge=2, description="task-t samples used by the objectives")
    protect_current_task: Literal["domain-incremental", "always", "never"] = Field(
        "domain-incremental", description="where the merge may not raise task t's loss above the "
        "better anchor's (see the module docstring)")


class TRM(MergeMethod):
    name = "trm"
    paper = "Wang & Deng, arXiv 2605.08311 — mergecl reconstruction (abstract only)"
    Params = TRMParams

    def __init__(self, params: TRMParams, context: Any) -> None:
        super().__init__(params, context)
        self.checkpoints: list[StateDict] = []
        self.checkpoint_plan: list[int] = []
        self.steps_done = 0
        self._old_classes: Tensor | None = None
        self._floor = 0.0

    # ------------------------------------------------------------------ trajectory
    def on_task_start(self, strategy: Any) -> None:
        self.checkpoints = []
        self.steps_done = 0
        assert self.plan is not None, "TRM needs the strategy's training plan"
        self.checkpoint_plan = checkpoint_steps(self.plan.steps, self.plan.epochs,
                                                self.plan.steps_per_epoch, self.params.checkpoints)

    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.steps_done += 1
        # the final checkpoint is θ*_t itself, read at merge time
        if self.steps_done in self.checkpoint_plan[:-1]:
            self.checkpoints.append(self.space.effective_state())

    # ------------------------------------------------------------------ objectives
    def _task_data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        xs, ys = [], []
        for x, y in self.ctx.task_batches(self.task, self.params.samples, self.params.batch_size):
            xs.append(x)
            ys.append(y)
        device = next(iter(self.space.parameters_by_name().values())).device
        x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
        held = min(self.params.batch_size, max(1, len(y) // 4)) if len(y) >= 2 else 0
        if held == 0:
            return x, y, x, y
        return x[:-held], y[:-held], x[-held:], y[-held:]

    def _data_terms(self, forward: Callable[[StateDict, Tensor], Tensor], params: StateDict,
                    x: Tensor, y: Tensor, reference: Tensor | None,
                    weights: Tensor | None) -> dict[str, Tensor]:
        """Alignment and consistency on one mini-batch (only the switched-on terms)."""
        p, terms = self.params, {}
        if p.w_align > 0 or (p.w_consistency > 0 and reference is not None):
            logits = forward(params, x)
            if p.w_align > 0:
                terms["alignment"] = alignment_loss(logits, y, self.ctx.loss_classes(self.task))
            if p.w_consistency > 0 and reference is not None:
                terms["consistency"] = consistency_loss(logits, reference, self._old_classes, weights)
        return terms

    def _responsiveness(self, forward: Callable[[StateDict, Tensor], Tensor], params: StateDict,
                        held_x: Tensor, held_y: Tensor, create_graph: bool) -> Tensor:
        class_mask = self.ctx.loss_classes(self.task)
        logits = forward(params, held_x)
        if self.params.responsiveness == "entropy":
            return entropy_floor_penalty(logits, class_mask, self.params.entropy_floor)
        norm = gradient_norm(alignment_loss(logits, held_y, class_mask), list(params.values()),
                             create_graph)
        return gradient_floor_penalty(norm, self._floor)

    def _weighted(self, terms: dict[str, Tensor]) -> Tensor:
        weights = {"alignment": self.params.w_align, "consistency": self.params.w_consistency,
                   "responsiveness": self.params.w_responsiveness}
        return sum(weights[key] * value for key, value in terms.items())

    def _task_loss(self, forward, params: StateDict, x: Tensor, y: Tensor) -> float:
        """Task t's loss (the training loss's logits) on the objective samples, no grad."""
        class_mask = self.ctx.loss_classes(self.task)
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(y), self.params.batch_size):
                part = slice(start, start + self.params.batch_size)
                total += float(alignment_loss(forward(params, x[part]), y[part], class_mask)) \
                    * len(y[part]) / len(y)
        return total

    def _evaluate(self, forward, params: StateDict, data, references, weights) -> dict[str, float]:
        """Switched-on objective values: data terms over all objective samples, R on held-out."""
        x, y, held_x, held_y = data
        sums: dict[str, float] = {}
        with torch.no_grad():
            for start in range(0, len(y), self.params.batch_size):
                part = slice(start, start + self.params.batch_size)
                ref = references[part] if references is not None else None
                w = weights[part] if weights is not None else None
                for key, value in self._data_terms(forward, params, x[part], y[part], ref, w).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(y[part]) / len(y)
        if self.params.w_responsiveness > 0:
            leaves = {n: v.detach().requires_grad_(True) for n, v in params.items()}
            value = self._responsiveness(forward, leaves, held_x, held_y, False)
            sums["responsiveness"] = float(value.detach())
        return {key: round(value, 6) for key, value in sums.items()}

    def _total(self, values: dict[str, float]) -> float:
        weights = {"alignment": self.params.w_align, "consistency": self.params.w_consistency,
                   "responsiveness": self.params.w_responsiveness}
        return sum(weights[key] * value for key, value in values.items())

    # ------------------------------------------------------------------ merge
    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.start_state is not None
        started = perf_counter()
        p = self.params
        states = self.checkpoints + [trained]
        self.checkpoints = []  # storage stays one model: the directions live only in this call
        directions, labels = trajectory_directions(self.start_state, states, p.use_magmax_direction, masks)
        groups, group_labels = coefficient_groups(list(directions), self.space.head_names, p.groups)
        initial = torch.zeros(len(group_labels), len(labels))
        initial[:, len(states) - 1] = 1.0  # θ(c⁰) = θ*_t
        diagnostics: dict[str, Any] = {"checkpoints": len(states), "directions": labels,
                                       "groups": len(group_labels)}
        del states
        self._old_classes = self._consistency_classes()
        use_consistency = p.w_consistency > 0 and self._old_classes is not None
        active = p.w_align > 0 or use_consistency or p.w_responsiveness > 0
        if p.steps == 0 or not active:
            diagnostics.update(steps=0, coefficients=self._mean_coefficients(initial, labels),
                               accepted_step=0, optimise_s=round(perf_counter() - started, 4))
            return MergeResult(dict(trained), diagnostics)

        # Candidates are evaluated without touching the model: functional_call over the
        # effective (base-weight) names, the LoRA adapters overridden with B = 0.
        model = self.space.model
        fixed = {n: v for n, v in self.space.functional_parameters(trained).items()}

        def forward(params: StateDict, x: Tensor) -> Tensor:
            return functional_call(model, {**fixed, **params}, (x,))

        data = self._task_data()
        x, y, held_x, held_y = data
        start = {n: self.start_state[n] for n in directions}
        with torch.no_grad():
            references = torch.cat([forward(start, x[i:i + p.batch_size])
                                    for i in range(0, len(y), p.batch_size)])
        weights = None
        if self.ctx.scenario == "domain-incremental":  # only where θ̂_{t-1} was right
            weights = (references.argmax(dim=1) == y).to(references.dtype)
        if not use_consistency:
            references_for_terms = None
        else:
            references_for_terms = references
        anchor = {n: trained[n].detach() for n in directions}
        protect = (p.protect_current_task == "always" or (
            p.protect_current_task == "domain-incremental" and self.ctx.scenario == "domain-incremental"))
        if p.w_responsiveness > 0 and p.responsiveness == "grad-floor":
            leaves = {n: v.detach().requires_grad_(True) for n, v in anchor.items()}
            logits = forward(leaves, held_x)
            at_trained = gradient_norm(alignment_loss(logits, held_y, self.ctx.loss_classes(self.task)),
                                       list(leaves.values()), False)
            self._floor = p.grad_floor * float(at_trained.detach())
        bound = min(float(alignment_loss(references, y, self.ctx.loss_classes(self.task))),
                    self._task_loss(forward, anchor, x, y))
        offsets = torch.zeros_like(initial, requires_grad=True)
        before = self._evaluate(forward, anchor, data, references_for_terms, weights)
        best = (self._total(before), 0, offsets.detach().clone(), before)
        if protect and self._task_loss(forward, anchor, x, y) > bound:  # θ̂_{t-1} is the better anchor
            best = (math.inf, -1, -initial.clone(), before)  # c = 0 ⇔ offsets = −c⁰
        optimiser = torch.optim.Adam([offsets], lr=p.lr)
        order = torch.randperm(len(y), generator=self.ctx.generator)
        cursor = 0
        for step in range(1, p.steps + 1):
            if cursor >= len(y):
                order, cursor = torch.randperm(len(y), generator=self.ctx.generator), 0
            index = order[cursor:cursor + p.batch_size].to(y.device)
            cursor += p.batch_size
            params = candidate_state(anchor, directions, groups, offsets)
            ref = references_for_terms[index] if references_for_terms is not None else None
            w = weights[index] if weights is not None else None
            terms = self._data_terms(forward, params, x[index], y[index], ref, w)
            if p.w_responsiveness > 0:
                terms["responsiveness"] = self._responsiveness(forward, params, held_x, held_y, True)
            total = self._weighted(terms)
            (gradient,) = torch.autograd.grad(total, [offsets], allow_unused=True)
            offsets.grad = gradient if gradient is not None else torch.zeros_like(offsets)
            optimiser.step()
            if protect:
                with torch.no_grad():
                    iterate = candidate_state(anchor, directions, groups, offsets.detach())
                if self._task_loss(forward, iterate, x, y) <= bound:
                    values = self._evaluate(forward, iterate, data, references_for_terms, weights)
                    if self._total(values) < best[0]:
                        best = (self._total(values), step, offsets.detach().clone(), values)
        if not protect:  # the final iterate
            with torch.no_grad():
                final = candidate_state(anchor, directions, groups, offsets.detach())
            best = (math.nan, p.steps, offsets.detach().clone(),
                    self._evaluate(forward, final, data, references_for_terms, weights))
        _, accepted, chosen, after = best
        with torch.no_grad():
            merged_part = candidate_state(anchor, directions, groups, chosen)
        if accepted == -1:  # fallback: θ̂_{t-1}, evaluate it for the record
            after = self._evaluate(forward, merged_part, data, references_for_terms, weights)
        merged = dict(trained)
        merged.update({n: v.detach() for n, v in merged_part.items()})
        diagnostics.update(
            steps=p.steps, accepted_step=accepted,
            coefficients=self._mean_coefficients(initial + chosen, labels),
            objectives_before=before, objectives_after=after,
            task_loss_bound=round(bound, 6),
            consistency_samples=int(weights.sum()) if weights is not None else len(y),
            optimise_s=round(perf_counter() - started, 4))
        return MergeResult(merged, diagnostics)

    def _consistency_classes(self) -> Tensor | None:
        """Logit indices of the consistency KL: classes seen before t (all if domain-incremental)."""
        if self.task == 0:
            return None
        if self.ctx.scenario == "domain-incremental":
            return torch.arange(self.ctx.n_classes)
        old = self.ctx.seen_classes(self.task - 1)
        return torch.tensor(old, dtype=torch.long) if old else None

    @staticmethod
    def _mean_coefficients(coefficients: Tensor, labels: list[str]) -> dict[str, float]:
        means = coefficients.mean(dim=0)
        return {label: round(float(value), 6) for label, value in zip(labels, means)}

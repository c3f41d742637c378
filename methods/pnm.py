"""P&M — Perturb-and-Merge.

Qiu, Zhang, Qiao, Nie, "Train with Perturbation, Infer after Merging: A Two-Stage Framework for
Continual Learning", NeurIPS 2025, arXiv 2505.22389 (official code: github
qhmiao/P-M-for-Continual-Learning, not reachable from here; docs/methods.md, "P&M").

**Stage 1 (training).** Task t trains from θ̂_{t−1}. At every optimisation step draw
s ∈ {0, +ε, −ε} with probabilities (p₀, p₊, p₋) and train on L(θ + s·Δ(θ)), Δ(θ) = θ − θ̂_{t−1}.
Its gradient is

    ∇_θ L(θ + s·Δ(θ)) = (1 + s)·∇L(θ + sΔ),

and in expectation over s (p = ⅓ each) (1/3)[g + (1+ε)(g + εHΔ) + (1−ε)(g − εHΔ)] + O(ε³)
= ∇L + (2ε²/3)·H·Δ: the gradient of L + (ε²/3)·ΔᵀHΔ, the curvature regulariser along the
task vector that the paper derives — at no extra pass (one forward, one backward per step).

* LoRA: the adapter's output is scaled by 1 + s; Δ is the adapter's delta, so the (1 + s)
  factor comes out of autograd by itself.
* Dense parameters (full fine-tuning; the head in LoRA): the loss is taken at θ + s·Δ —
  written once into a preallocated buffer the parameter points at for that forward/backward
  pass, θ itself never touched — and the gradient left in ``.grad`` is multiplied by 1 + s
  (``gradient: chain``, default). ``gradient: stopgrad`` keeps the gradient at the perturbed
  point without the factor (Δ treated as a constant): the regulariser's gradient is then lost
  to second order — an ablation, and the harness's behaviour before this rule was fixed.
* Entries the merge never scales — head rows of classes new in task t, whose Δ from a zero
  head is no merge direction — are not perturbed (factor 1).

Ablations: ``perturbation: gaussian`` (isotropic noise of norm |s|·‖Δ‖ over the perturbed
entries, gradient taken at the noisy point; the paper's "Gaussian noise" row);
``perturbation: none`` (the merge only: the paper's "LoRA-M").

**Stage 2 (merge).** With Δ_t = θ*_t − θ̂_{t−1}:  θ̂_t = θ̂_{t−1} + α_t·Δ_t, where

    α_t = − Σ_{i≤t} Σ_k F_{i,k}(θ̂_{t−1,k} − θ*_{i,k})Δ_{t,k} / Σ_{i≤t} Σ_k F_{i,k}Δ_{t,k}²

clipped to [0, 1] (1 if the denominator is 0), F_i the diagonal empirical Fisher at θ*_i on
task i's data. The sums run over exactly the entries the merge scales: the same ``masks``
object drives the fit (:meth:`PnMStatistics.alpha`) and the merge (:func:`pnm_merge`).

Defaults and their sources: ε = 0.5 and p₀ = p₊ = p₋ = 1/3 (the paper); ``fisher_samples`` =
256 (mergecl's choice: the paper gives no count; α is a ratio of sums over millions of entries,
so the estimate's noise largely averages out); true-label Fisher (the paper's "empirical
Fisher").

What the paper specifies and what is our reading: the paper perturbs along the task vector
and derives the curvature regulariser; it does not spell out the dense-parameter gradient.
We read the objective literally — L at θ + s·Δ(θ) with Δ depending on θ — which is what its
LoRA form computes, and apply the same derivative to dense parameters. The paper stores
every θ*_i and F_i (its stated limitation); with diagonal F the sums collapse to two running
tensors S = Σ F_i and M = Σ F_i ⊙ θ*_i (``stats: constant``, default; ``stats: list`` keeps
the stored-list form, the test oracle). F_i uses the logits the training loss used
(``loss_mask``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import (
    MERGE_COEFFICIENT,
    MergeMethod,
    MergeResult,
    MethodParams,
    StateDict,
    head_masks,
    tunable,
)
from mergecl.methods.merging import Masks
from pydantic import Field, model_validator
from torch import Tensor

# ------------------------------------------------------------------------------ the merge rule


def _clip_alpha(numerator: float, denominator: float) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        raise ValueError(f"P&M alpha: non-finite sums (numerator {numerator}, "
                         f"denominator {denominator}); check the states and Fishers for NaN/inf")
    if denominator == 0.0:
        return 1.0
    return min(1.0, max(0.0, numerator / denominator))


def pnm_alpha(prev: Mapping[str, Tensor], delta: Mapping[str, Tensor],
              optima: Sequence[Mapping[str, Tensor]], fishers: Sequence[Mapping[str, Tensor]],
              masks: Masks | None = None) -> float:
    """P&M merge coefficient in the paper's stored-list form (oracle for :class:`PnMStatistics`).

    α = −Σ_i Σ_k F_{i,k}(θ̂_{t−1,k} − θ*_{i,k})Δ_k / Σ_i Σ_k F_{i,k}Δ_k², over the masked
    entries of the entries each Fisher covers; clipped to [0, 1]; 1.0 if the denominator is 0.
    Accumulated in float64. ``prev`` = θ̂_{t−1}, ``delta`` = Δ_t = θ*_t − θ̂_{t−1},
    ``optima[i]`` = θ*_i and ``fishers[i]`` = F_i for i ≤ t (so the i = t term is included).
    """
    merging.check_compatible(prev, delta, "delta")
    merging.check_masks(prev, masks)
    if len(optima) != len(fishers):
        raise ValueError(f"got {len(optima)} optima but {len(fishers)} Fishers")
    if len(optima) == 0:
        raise ValueError("pnm_alpha needs at least one (optimum, Fisher) pair, got none")
    for i, (optimum, fisher) in enumerate(zip(optima, fishers)):
        merging.check_fishers(prev, fisher, f"fishers[{i}]")
        for name in fisher:
            if name not in optimum or optimum[name].shape != prev[name].shape:
                raise ValueError(f"optima[{i}] lacks entry {name!r} (or its shape differs)")
    numerator = 0.0
    denominator = 0.0
    for optimum, fisher in zip(optima, fishers):
        for name, fisher_values in fisher.items():
            device = fisher_values.device
            mask = merging.mask_for(masks, name, fisher_values)
            f = merging.selected_float64(fisher_values, mask)
            d = merging.selected_float64(delta[name].to(device), mask)
            start = merging.selected_float64(prev[name].to(device), mask)
            optimum_values = merging.selected_float64(optimum[name].to(device), mask)
            numerator += float((f * (optimum_values - start) * d).sum())
            denominator += float((f * d * d).sum())
    return _clip_alpha(numerator, denominator)


class PnMStatistics:
    """Constant-memory P&M statistics: running ``S = Σ_i F_i`` and ``M = Σ_i F_i ⊙ θ*_i``.

    Two float32 tensors per Fisher-covered entry whatever the number of tasks. Then
    numerator = Σ_k Δ_k(M_k − θ̂_{t−1,k}S_k), denominator = Σ_k Δ_k² S_k (sums in float64 over
    the masked entries), which equals :func:`pnm_alpha`'s stored-list form exactly in exact
    arithmetic. All entries covered by the Fisher are stored; masks apply at :meth:`alpha` time
    (an entry unmasked at task t, e.g. a head row of a new class, is masked at later tasks).
    """

    def __init__(self) -> None:
        self._fisher_sum: StateDict = {}
        self._weighted_optimum_sum: StateDict = {}
        self._num_tasks = 0

    @property
    def num_tasks(self) -> int:
        """Number of (optimum, Fisher) pairs added."""
        return self._num_tasks

    @property
    def names(self) -> list[str]:
        """Entry names covered by the statistics."""
        return list(self._fisher_sum)

    @property
    def fisher_sum(self) -> Mapping[str, Tensor]:
        """S = Σ_i F_i (held tensors; do not modify)."""
        return self._fisher_sum

    @property
    def weighted_optimum_sum(self) -> Mapping[str, Tensor]:
        """M = Σ_i F_i ⊙ θ*_i (held tensors; do not modify)."""
        return self._weighted_optimum_sum

    @property
    def nbytes(self) -> int:
        """Bytes held by S and M."""
        return merging.state_nbytes(self._fisher_sum) + merging.state_nbytes(self._weighted_optimum_sum)

    def add_task(self, optimum: Mapping[str, Tensor], fisher: Mapping[str, Tensor]) -> None:
        """Add task i's optimum θ*_i and diagonal Fisher F_i (same entry names every task)."""
        if len(fisher) == 0:
            raise ValueError("PnMStatistics.add_task: the Fisher is empty")
        merging.check_fishers(optimum, fisher, "fisher")
        if self._num_tasks and set(fisher) != set(self._fisher_sum):
            raise ValueError(
                "PnMStatistics.add_task: Fisher entries differ from earlier tasks' "
                f"(new {sorted(set(fisher) - set(self._fisher_sum))[:5]}, "
                f"missing {sorted(set(self._fisher_sum) - set(fisher))[:5]})"
            )
        for name, fisher_values in fisher.items():
            f = fisher_values.detach().to(torch.float64)
            weighted = f * optimum[name].detach().to(f.device, torch.float64)
            if name in self._fisher_sum:
                s, m = self._fisher_sum[name], self._weighted_optimum_sum[name]
                s.copy_(s.to(torch.float64) + f.to(s.device))
                m.copy_(m.to(torch.float64) + weighted.to(m.device))
            else:
                self._fisher_sum[name] = f.to(torch.float32)
                self._weighted_optimum_sum[name] = weighted.to(torch.float32)
        self._num_tasks += 1

    def alpha(self, prev: Mapping[str, Tensor], delta: Mapping[str, Tensor],
              masks: Masks | None = None) -> float:
        """α_t from the running sums, clipped to [0, 1]; 1.0 if the denominator is 0."""
        if self._num_tasks == 0:
            raise ValueError("PnMStatistics.alpha: no task added yet")
        merging.check_compatible(prev, delta, "delta")
        merging.check_masks(prev, masks)
        for name, s in self._fisher_sum.items():
            if name not in prev or prev[name].shape != s.shape or not merging.is_mergeable(prev[name]):
                raise ValueError(f"PnMStatistics.alpha: entry {name!r} is missing from prev "
                                 "(or its shape/dtype differs)")
        numerator = 0.0
        denominator = 0.0
        for name, s in self._fisher_sum.items():
            device = s.device
            mask = merging.mask_for(masks, name, s)
            fisher_sum = merging.selected_float64(s, mask)
            weighted_sum = merging.selected_float64(self._weighted_optimum_sum[name], mask)
            d = merging.selected_float64(delta[name].to(device), mask)
            start = merging.selected_float64(prev[name].to(device), mask)
            numerator += float((d * (weighted_sum - start * fisher_sum)).sum())
            denominator += float((d * d * fisher_sum).sum())
        return _clip_alpha(numerator, denominator)


def pnm_merge(prev: Mapping[str, Tensor], delta: Mapping[str, Tensor], alpha: float,
              masks: Masks | None = None) -> StateDict:
    """θ̂_{t−1} + α·Δ on masked float entries, θ̂_{t−1} + Δ (= trained) on unmasked ones.

    Non-float entries come from ``delta`` (a task vector carries the trained state's).
    """
    return merging.add_scaled(prev, delta, scale=alpha, masks=masks)


# ------------------------------------------------------------------------------ the plugin


class PnMParams(MethodParams):
    epsilon: float = tunable(0.5, [0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0], ge=0.0, le=10.0,
                             description="perturbation size ε")
    p_zero: float = Field(1 / 3, ge=0.0, le=1.0, description="probability of s = 0")
    p_plus: float = Field(1 / 3, ge=0.0, le=1.0, description="probability of s = +ε")
    p_minus: float = Field(1 / 3, ge=0.0, le=1.0, description="probability of s = −ε")
    perturbation: Literal["task-vector", "gaussian", "none"] = Field(
        "task-vector", description="along Δ (P&M), isotropic noise (ablation) or none (LoRA-M)")
    gradient: Literal["chain", "stopgrad"] = Field(
        "chain", description="chain: (1+s)·∇L(θ+sΔ), the derivative of L(θ+sΔ(θ)); "
        "stopgrad: ∇L(θ+sΔ) (ablation)")
    fisher_samples: int = Field(256, ge=1, description="training samples per Fisher estimate")
    fisher_labels: Literal["true", "model"] = "true"
    stats: Literal["constant", "list"] = "constant"

    @model_validator(mode="after")
    def _probabilities_sum_to_one(self) -> PnMParams:
        total = self.p_zero + self.p_plus + self.p_minus
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"p_zero + p_plus + p_minus must be 1 (got {total:.6f})")
        return self


class PerturbAndMerge(MergeMethod):
    name = "pnm"
    paper = "Qiu et al., NeurIPS 2025, arXiv 2505.22389"
    Params = PnMParams

    def __init__(self, params: PnMParams, context: Any) -> None:
        super().__init__(params, context)
        self.statistics = PnMStatistics()
        self.optima: list[StateDict] = []
        self.fishers: list[StateDict] = []
        self._probs = torch.tensor([params.p_zero, params.p_plus, params.p_minus], dtype=torch.float64)
        self._choices = (0.0, params.epsilon, -params.epsilon)
        self._dense: dict[str, torch.nn.Parameter] = {}  # perturbed dense parameters
        self._dense_start: dict[str, Tensor] = {}  # their θ̂_{t-1}
        self._perturb_masks: dict[str, Tensor] = {}  # True = perturbed (the merge scales it)
        self._perturbed: dict[str, Tensor] = {}  # task-vector: θ + s·Δ, one buffer per tensor
        self._held: dict[str, Tensor] = {}  # θ's storage while the parameter points at θ + s·Δ
        self._saved: dict[str, Tensor] = {}  # gaussian: θ before the noise
        self._gauss_restore: list[tuple[str, torch.nn.Parameter]] = []
        self._factor_set = False
        self._current_s = 0.0
        self.step_draws: list[float] = []

    @property
    def plain_first_task(self) -> bool:
        return self.params.perturbation == "none" or self.params.epsilon == 0

    # ----------------------------------------------------------------- training (stage 1)
    def on_task_start(self, strategy: Any) -> None:
        params = self.space.trainable_parameters()
        names = self.space.head_names if self.space.kind == "lora" else self.space.names
        self._dense = {n: params[n] for n in names if n in params}
        assert self.start_state is not None
        self._dense_start = {n: self.start_state[n] for n in self._dense}
        masks = head_masks(self.space, self.ctx, self.task)
        self._perturb_masks = {n: m for n, m in masks.items() if n in self._dense}
        self._perturbed = {n: torch.empty_like(p) for n, p in self._dense.items()} \
            if self.params.perturbation == "task-vector" else {}
        self._held.clear()
        self._trainable_start = {n: p.detach().clone() for n, p in params.items()} \
            if self.params.perturbation == "gaussian" else {}

    def _draw(self) -> float:
        index = int(torch.multinomial(self._probs, 1, generator=self.ctx.generator))
        return self._choices[index]

    @torch.no_grad()
    def before_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._current_s = 0.0
        if self.params.perturbation == "none" or self.params.epsilon == 0:
            return
        s = self._draw()
        self.step_draws.append(s)
        self._current_s = s
        if s == 0.0:
            return
        if self.params.perturbation == "task-vector":
            # θ + s·(θ − θ̂_{t-1}) = lerp(θ̂_{t-1}, θ, 1 + s) on the entries the merge scales,
            # written once into a preallocated buffer that the parameter points at for this
            # forward/backward pass; θ itself is never touched, so putting it back is exact.
            for name, p in self._dense.items():
                buffer = self._perturbed[name]
                torch.lerp(self._dense_start[name], p, 1.0 + s, out=buffer)
                mask = self._perturb_masks.get(name)
                if mask is not None:
                    torch.where(mask, buffer, p, out=buffer)
                self._held[name] = p.data
                p.data = buffer
            if self.space.kind == "lora":
                self.space.set_adapter_factor(1.0 + s)
                self._factor_set = True
        else:
            self._gaussian(abs(s))

    @torch.no_grad()
    def _gaussian(self, scale: float) -> None:
        """θ ← θ + n, n isotropic noise of norm scale·‖θ − θ_start‖ over the perturbed entries."""
        params = self.space.trainable_parameters()
        masks = {n: m for n, m in self._perturb_masks.items() if n in params}

        def masked(name: str, value: Tensor) -> Tensor:
            return value * masks[name] if name in masks else value

        displacement_sq = sum(float(masked(n, p - self._trainable_start[n]).pow(2).sum())
                              for n, p in params.items())
        noise = {n: masked(n, torch.randn(p.shape, generator=self.ctx.generator).to(p))
                 for n, p in params.items()}
        noise_norm = sum(float(v.pow(2).sum()) for v in noise.values()) ** 0.5
        if noise_norm == 0 or displacement_sq == 0:
            return
        factor = scale * displacement_sq ** 0.5 / noise_norm
        for n, p in params.items():
            self._saved.setdefault(n, torch.empty_like(p)).copy_(p)
            p.add_(noise[n], alpha=factor)
        self._gauss_restore = list(params.items())

    @torch.no_grad()
    def after_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self.params.perturbation == "task-vector":
            for name, weights in self._held.items():
                self._dense[name].data = weights  # the gradient stays in p.grad
            self._held.clear()
            if self._factor_set:
                self.space.set_adapter_factor(1.0)
                self._factor_set = False
            if self.params.gradient == "chain" and self._current_s != 0.0:
                self._chain_rule_factor(self._current_s)
        elif self.params.perturbation == "gaussian":
            for name, p in self._gauss_restore:
                p.copy_(self._saved[name])
            self._gauss_restore = []

    def _chain_rule_factor(self, s: float) -> None:
        """.grad ← (1 + s)·.grad on the perturbed entries of the dense parameters (LoRA
        adapters get the factor from autograd through their output scale)."""
        for name, p in self._dense.items():
            if p.grad is None:
                continue
            mask = self._perturb_masks.get(name)
            if mask is None:
                p.grad.mul_(1.0 + s)
            else:
                p.grad.mul_(torch.where(mask, 1.0 + s, 1.0).to(p.grad.dtype))

    # ----------------------------------------------------------------- merge (stage 2)
    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.start_state is not None
        start = self.start_state
        fisher = self.estimate_fisher(self.task, self.params.fisher_samples, self.params.fisher_labels)
        delta = merging.task_vector(trained, start)
        if self.params.stats == "list":
            self.optima.append(merging.clone_state(trained))
            self.fishers.append(fisher)
            alpha = pnm_alpha(start, delta, self.optima, self.fishers, masks=masks)
        else:
            self.statistics.add_task(trained, fisher)
            alpha = self.statistics.alpha(start, delta, masks=masks)
        merged = pnm_merge(start, delta, alpha, masks=masks)
        draws = self.step_draws
        diagnostics = {
            MERGE_COEFFICIENT: alpha,
            "fitted_entries": merging.masked_numel(delta, masks),
            "stats_mb": round(self.statistics.nbytes / 2**20, 2) if self.params.stats == "constant" else
            round(sum(merging.state_nbytes(s) for s in self.optima + self.fishers) / 2**20, 2),
            "perturbed_steps": sum(1 for d in draws if d != 0.0),
            "steps": len(draws),
        }
        self.step_draws = []
        return MergeResult(merged, diagnostics)

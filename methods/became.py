"""BECAME — Bayesian continual learning with adaptive model merging.

Li, Lu, Dai, Huang, Ding, Lu, "BECAME: BayEsian Continual Learning with Adaptive Model
MErging", ICML 2025, arXiv 2504.02666 (original code built on GPM/NSCL; a fork survives as
github ankur-bohra/BECAME).

Per task t (training starts from θ̂_{t-1}):

1. Stable stage — GPM training: for every projected layer the gradient is taken off the
   stored input subspace U of the earlier tasks, ``g ← g − g·U·Uᵀ``. End point: θ_GP.
2. Plastic stage — training continues from θ_GP without projection, with a fresh optimiser.
   End point: θ̃ (= θ*_t, the trained state).
3. F_t = diagonal Fisher at θ̃ on task t's data (the model's own argmax labels by default).
4. With Δ = θ̃ − θ_GP,

       λ* = Σ_k F_{t,k} Δ_k² / Σ_k (F_{t,k} + F_old,k) Δ_k²      (merging.became_lambda)

   the minimiser of ½λ²ΔᵀF_oldΔ + ½(1 − λ)²ΔᵀF_tΔ; ``use_fisher: false`` → λ = 1/(t+1).
5. θ̂_t = (1 − λ*)·θ_GP + λ*·θ̃.
6. F_old ← F(θ̂_t; task t) + γ·F_old, then U is extended with task t's input subspace at
   θ̂_t (SVD of the layer inputs, energy threshold ε_t = 0.97 + 0.003·t, capped at 1).

Projected layers: in full fine-tuning every ``nn.Linear`` and every 1×1, groups = 1
``nn.Conv2d`` of the backbone whose weight is merged (the classifier head is never
projected); in LoRA the A factors of the adapters on such layers (``g_A ← g_A − g_A·U·Uᵀ``).

Implementation notes (deviations and choices):

* The stage switch is by optimisation steps: with T = epochs × batches per epoch (capped by
  ``max_steps_per_exp``), the stable stage takes round-half-up(stable_fraction·T) steps,
  clamped to [1, T − 1] when T ≥ 2 so each stage gets a step; with T = 1 the only step is
  stable (θ_GP = θ̃, Δ = 0, so θ̂_t = θ̃). The original runs whole epoch budgets per stage.
* Task 0 is also trained in two stages (the original trains it in one). Its coefficient uses
  F_old = F(θ_GP; task 0), computed at the switch. After task 0, F_old = F(θ̂_0; task 0): the
  stable-stage Fisher is used for λ_0 only and not carried on (it would count task 0 twice).
  If task 0 has no switch (T = 1), λ_0 = 1.
* ``project_update: true`` (default) also projects the step the optimiser actually took
  (full FT: W ← W_before + P(W − W_before); LoRA: A ← A − A·U·Uᵀ). GPM's guarantee
  (W·x unchanged for old x ∈ span U) holds for plain SGD with gradient projection alone, but
  not for Adam(W)'s per-entry scaling or weight decay — the harness's default optimiser is
  AdamW. Adam-NSCL, which BECAME's code builds on, likewise projects the Adam update.
* LoRA: at the start of the stable stage the fresh A factors are projected off U, so the
  adapter's output on old inputs is exactly zero and stays zero (B still trains freely).
* Only Linear / 1×1-conv weights are projected (``mergecl.methods.gpm`` supports those): biases, norm
  affine parameters, depth-wise and k×k convolutions train unprojected in the stable stage.
  The original projects every layer of a network trained from scratch.
* F_t, F(θ_GP) and F(θ̂_t) use the logits the training loss used (``loss_mask``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import (
    MERGE_COEFFICIENT,
    MergeMethod,
    MergeResult,
    MethodParams,
    StateDict,
    tunable,
)
from mergecl.methods.gpm import GradientProjector, project_gradient_
from mergecl.methods.merging import Masks
from pydantic import Field
from torch import Tensor, nn

# ------------------------------------------------------------------------------ pure helpers


def became_lambda(delta: Mapping[str, Tensor], fisher_new: Mapping[str, Tensor],
                  fisher_old: Mapping[str, Tensor], masks: Masks | None = None) -> float:
    """BECAME's coefficient λ* = Σ F_t Δ² / Σ (F_t + F_old) Δ² (float64, masked entries).

    ``delta`` = θ̃ − θ_GP. λ* minimises ½λ²ΔᵀF_oldΔ + ½(1 − λ)²ΔᵀF_tΔ and lies in [0, 1].
    When the denominator is 0 the objective is identically 0 (every λ is a minimiser) and
    0.5 — the equal-weight average of the two stages — is returned. Both Fishers must cover
    the same entries.
    """
    merging.check_masks(delta, masks)
    merging.check_fishers(delta, fisher_new, "fisher_new")
    merging.check_fishers(delta, fisher_old, "fisher_old")
    if set(fisher_new) != set(fisher_old):
        raise ValueError(
            "fisher_new and fisher_old cover different entries "
            f"({sorted(set(fisher_new) ^ set(fisher_old))[:5]})"
        )
    numerator = 0.0
    denominator = 0.0
    for name, new_values in fisher_new.items():
        device = new_values.device
        mask = merging.mask_for(masks, name, new_values)
        f_new = merging.selected_float64(new_values, mask)
        f_old = merging.selected_float64(fisher_old[name].to(device), mask)
        d_squared = merging.selected_float64(delta[name].to(device), mask).square()
        numerator += float((f_new * d_squared).sum())
        denominator += float(((f_new + f_old) * d_squared).sum())
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        raise ValueError(f"became_lambda: non-finite sums ({numerator}, {denominator})")
    if denominator == 0.0:
        return 0.5
    return min(1.0, max(0.0, numerator / denominator))



def stable_steps(total_steps: int, stable_fraction: float) -> int:
    """Steps of the stable stage: round-half-up(f·T), in [1, T − 1] when T ≥ 2 (T when T < 2)."""
    if total_steps < 2:
        return max(0, total_steps)
    wanted = math.floor(stable_fraction * total_steps + 0.5)
    return min(total_steps - 1, max(1, wanted))


def energy_threshold(task: int, base: float, increment: float) -> float:
    """GPM's energy threshold for ``task``: base + increment·task, capped at 1."""
    return min(1.0, base + increment * task)


def accumulate_fisher(new: StateDict, old: StateDict | None, gamma: float) -> StateDict:
    """F_new + γ·F_old (F_new alone when there is no F_old); inputs are not modified."""
    if old is None:
        return {name: value.clone() for name, value in new.items()}
    if set(new) != set(old):
        raise ValueError(f"Fishers cover different entries: {sorted(set(new) ^ set(old))[:5]}")
    return {name: value + gamma * old[name] for name, value in new.items()}


def projectable_layers(model: nn.Module, mergeable: list[str], head: list[str]) -> list[str]:
    """Module names of the Linear / 1×1 (groups 1) Conv2d layers whose weight is merged.

    Full fine-tuning: the weight ``<module>.weight`` must be in ``mergeable`` and not in
    ``head``. LoRA: the peft wrapper ``<module>`` of such a layer (its merged entry is
    ``<module>.base_layer.weight``).
    """
    wanted = set(mergeable) - set(head)
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{wrapper}.") for wrapper in names):
            continue  # the base layer inside a LoRA wrapper is reached through the wrapper
        if f"{name}.base_layer.weight" in wanted and hasattr(module, "get_base_layer"):
            layer = module.get_base_layer()
        elif f"{name}.weight" in wanted and not hasattr(module, "get_base_layer"):
            layer = module
        else:
            continue
        if isinstance(layer, nn.Linear) or (
                isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)
                and layer.groups == 1):
            names.append(name)
    return names


@torch.no_grad()
def project_step_(weight: Tensor, before: Tensor, basis: Tensor) -> None:
    """In place: W ← W_before + (W − W_before)(I − U·Uᵀ) along the input dimension."""
    step = weight - before
    project_gradient_(step, basis)
    weight.copy_(before + step)


# ------------------------------------------------------------------------------ the method


class BECAMEParams(MethodParams):
    stable_fraction: float = tunable(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], gt=0.0, lt=1.0,
                                     description="share of the task's steps in the GPM stable stage")
    fisher_samples: int = Field(256, ge=1, description="training samples per Fisher estimate")
    fisher_labels: Literal["model", "true"] = "model"
    energy_threshold: float = Field(0.97, gt=0.0, le=1.0, description="GPM energy ε for task 0")
    threshold_increment: float = Field(0.003, ge=0.0, le=1.0, description="ε increase per task")
    gamma: float = Field(1.0, ge=0.0, le=10.0, description="decay of F_old")
    use_fisher: bool = Field(True, description="False: λ = 1/(t+1), no Fisher")
    gpm_samples: int = Field(128, ge=1, description="inputs per task for the subspace SVD")
    project_update: bool = Field(True, description="also project the optimiser's actual step")


class BECAME(MergeMethod):
    name = "became"
    paper = "Li et al., ICML 2025, arXiv 2504.02666"
    Params = BECAMEParams

    def __init__(self, params: BECAMEParams, context: Any) -> None:
        super().__init__(params, context)
        self.projector = GradientProjector()
        self.layers: list[str] = []
        self._layer_modules: dict[str, nn.Module] = {}
        self.fisher_old: StateDict | None = None   # accumulated Fisher of tasks < t
        self.stable_fisher: StateDict | None = None  # F(θ_GP; task 0), for λ_0 only
        self.gp_state: StateDict | None = None
        self.stage: Literal["stable", "plastic"] = "stable"
        self.total_steps = 0
        self.planned_stable = 0
        self.steps_done = 0
        self.stable_done = 0
        self.fisher_seconds = 0.0
        self._before_step: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def _projecting(self) -> bool:
        return self.stage == "stable" and bool(self.projector.bases)

    def _fisher(self) -> StateDict:
        started = perf_counter()
        fisher = self.estimate_fisher(self.task, self.params.fisher_samples, self.params.fisher_labels)
        self.fisher_seconds += perf_counter() - started
        return fisher

    # ------------------------------------------------------------------ training
    def on_task_start(self, strategy: Any) -> None:
        if not self.layers:
            self.layers = projectable_layers(self.space.model, self.space.names, self.space.head_names)
            if self.layers:
                self.projector.register(self.space.model, self.layers)
                available = dict(self.space.model.named_modules())
                self._layer_modules = {name: available[name] for name in self.layers}
        assert self.plan is not None, "BECAME needs the strategy's training plan"
        self.total_steps = self.plan.steps
        self.planned_stable = stable_steps(self.total_steps, self.params.stable_fraction)
        self.steps_done = 0
        self.stable_done = 0
        self.stage = "stable"
        self.gp_state = None
        self.stable_fisher = None
        self.fisher_seconds = 0.0
        if self.space.kind == "lora" and self.projector.bases:
            self.projector.project_lora_A_weights_(self.space.model)

    @torch.no_grad()
    def after_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._projecting():
            self.projector.project_(self.space.model)

    @torch.no_grad()
    def before_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._projecting() and self.params.project_update and self.space.kind == "full":
            bases = self.projector.bases
            self._before_step = {name: module.weight.detach().clone()
                                 for name, module in self._layer_modules.items() if name in bases}

    @torch.no_grad()
    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._projecting() and self.params.project_update:
            if self.space.kind == "lora":
                self.projector.project_lora_A_weights_(self.space.model)
            else:
                bases = self.projector.bases
                for name, before in self._before_step.items():
                    project_step_(self._layer_modules[name].weight, before, bases[name])
            self._before_step = {}
        self.steps_done += 1
        if self.stage == "stable":
            self.stable_done += 1
            if self.stable_done >= self.planned_stable and self.steps_done < self.total_steps:
                self._switch_to_plastic(strategy)

    def _switch_to_plastic(self, strategy: Any) -> None:
        self.gp_state = self.space.effective_state()
        if self.task == 0 and self.params.use_fisher:
            with torch.enable_grad():
                self.stable_fisher = self._fisher()
        self.stage = "plastic"
        strategy.make_optimizer()

    # ------------------------------------------------------------------ merge
    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        gp = self.gp_state if self.gp_state is not None else trained
        delta = merging.task_vector(trained, gp)
        fisher_old = self.fisher_old if self.task > 0 else self.stable_fisher
        if not self.params.use_fisher:
            lam = 1.0 / (self.task + 1)
        elif fisher_old is None:
            lam = 1.0
        else:
            fisher_new = self._fisher()
            lam = became_lambda(delta, fisher_new, fisher_old, masks=masks)
            del fisher_new
        merged = merging.interpolate(gp, trained, lam, masks=masks)  # unmasked entries: θ̃
        self._stage_steps = (self.stable_done, self.steps_done - self.stable_done)
        self.gp_state = None
        self.stable_fisher = None
        return MergeResult(merged, {MERGE_COEFFICIENT: float(lam)})

    def on_merged(self, strategy: Any, merged: StateDict) -> dict[str, Any]:
        """F(θ̂_t) and task t's input subspace, taken at the merged model (now loaded)."""
        if self.params.use_fisher:
            self.fisher_old = accumulate_fisher(self._fisher(), self.fisher_old if self.task > 0 else None,
                                                self.params.gamma)
        started = perf_counter()
        threshold = energy_threshold(self.task, self.params.energy_threshold,
                                     self.params.threshold_increment)
        dims = self.projector.extend(
            self.space.model, self.ctx.task_batches(self.task, self.params.gpm_samples),
            threshold, max_samples=self.params.gpm_samples) if self.layers else {}
        stable, plastic = self._stage_steps
        return {
            "stable_steps": stable,
            "plastic_steps": plastic,
            "basis_columns": int(sum(dims.values())),
            "projected_layers": len(self.layers),
            "stats_mb": round((self.projector.nbytes + merging.state_nbytes(self.fisher_old or {}))
                              / 2**20, 3),
            "threshold": round(threshold, 6),
            "fisher_s": round(self.fisher_seconds, 4),
            "gpm_s": round(perf_counter() - started, 4),
        }

"""P&M — Perturb-and-Merge.

Qiu, Zhang, Qiao, Nie, "Train with Perturbation, Infer after Merging: A Two-Stage Framework for
Continual Learning", NeurIPS 2025, arXiv 2505.22389.

Stage 1 (training). Task t trains from θ̂_{t-1}. At every optimisation step draw
s ∈ {0, +ε, −ε} with probabilities (p₀, p₊, p₋); the loss and its gradient are taken at
θ + s·Δ, Δ = θ − θ̂_{t-1} (LoRA: the adapter's output scaled by 1 + s); the weights are put
back before the optimiser steps with that gradient. One forward and one backward per step,
exactly as plain training; the perturbed weights are written once into a preallocated buffer
that the parameter points at until the backward pass is done (θ is never modified). Ablation
``perturbation: gaussian`` uses isotropic noise of norm |s|·‖Δ‖ instead; ``perturbation: none``
is the merge-only ablation ("LoRA-M").

Stage 2 (merge). With Δ_t = θ*_t − θ̂_{t-1}:  θ̂_t = θ̂_{t-1} + α_t·Δ_t, where

    α_t = − Σ_{i≤t} Σ_k F_{i,k}(θ̂_{t-1,k} − θ*_{i,k})Δ_{t,k} / Σ_{i≤t} Σ_k F_{i,k}Δ_{t,k}²

clipped to [0, 1] (1 if the denominator is 0), F_i the diagonal empirical Fisher at θ*_i on task
i's data. The sums run over exactly the entries the merge scales: the same ``masks`` object
drives the fit (``PnMStatistics.alpha``) and the merge (``pnm_merge``).

Implementation notes.
* Constant memory (METHODS.md): running S = Σ F_i and M = Σ F_i ⊙ θ*_i replace the paper's
  stored lists; ``stats: list`` keeps the stored-list form (the oracle) for comparison.
* In the LoRA parameterisation the head is a dense trained parameter: it is perturbed by s·Δ
  like in full fine-tuning, the adapters through their output scale.
* F_i uses the logits the training loss used (``loss_mask``), i.e. it approximates the loss
  that task i was trained on, and is estimated from ``fisher_samples`` (256) training samples
  of the task — the paper does not state a sample count; α is a ratio of sums over millions of
  entries, so the estimate's noise largely averages out.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field, model_validator
from torch import Tensor


class PnMParams(MethodParams):
    epsilon: float = Field(0.5, ge=0.0, le=10.0, description="perturbation size ε")
    p_zero: float = Field(1 / 3, ge=0.0, le=1.0)
    p_plus: float = Field(1 / 3, ge=0.0, le=1.0)
    p_minus: float = Field(1 / 3, ge=0.0, le=1.0)
    perturbation: Literal["task-vector", "gaussian", "none"] = "task-vector"
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
        self.statistics = merging.PnMStatistics()
        self.optima: list[StateDict] = []
        self.fishers: list[StateDict] = []
        probs = torch.tensor([params.p_zero, params.p_plus, params.p_minus], dtype=torch.float64)
        self._choices = (0.0, params.epsilon, -params.epsilon)
        self._probs = probs
        self._saved: dict[str, Tensor] = {}  # gaussian ablation: θ before the noise
        self._perturbed: dict[str, Tensor] = {}  # task-vector: θ + s·Δ, one buffer per tensor
        self._held: dict[str, Tensor] = {}  # θ's storage while the parameter points at θ + s·Δ
        self._dense: dict[str, torch.nn.Parameter] = {}
        self._dense_start: dict[str, Tensor] = {}
        self._factor_set = False
        self.step_draws: list[float] = []

    # ----------------------------------------------------------------- training (stage 1)
    def on_task_start(self, strategy: Any) -> None:
        params = self.space.trainable_parameters()
        if self.space.kind == "lora":
            names = [n for n in self.space.head_names if n in params]
        else:
            names = [n for n in self.space.names if n in params]
        self._dense = {n: params[n] for n in names}
        assert self.start_state is not None
        self._dense_start = {n: self.start_state[n] for n in names}
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
        if self.params.perturbation == "none" or self.params.epsilon == 0:
            return
        s = self._draw()
        self.step_draws.append(s)
        if s == 0.0:
            return
        if self.params.perturbation == "task-vector":
            # θ + s·(θ − θ̂_{t-1}) = lerp(θ̂_{t-1}, θ, 1 + s), written once into a preallocated
            # buffer that the parameter points at for this forward/backward pass; θ itself is
            # never touched, so putting it back is exact and costs no copy.
            for name, p in self._dense.items():
                buffer = self._perturbed[name]
                torch.lerp(self._dense_start[name], p, 1.0 + s, out=buffer)
                self._held[name] = p.data
                p.data = buffer
            if self.space.kind == "lora":
                self.space.set_adapter_factor(1.0 + s)
                self._factor_set = True
        else:
            self._gaussian(abs(s))

    @torch.no_grad()
    def _gaussian(self, scale: float) -> None:
        params = self.space.trainable_parameters()
        displacement_sq = sum(float((p - self._trainable_start[n]).pow(2).sum()) for n, p in params.items())
        noise = {n: torch.randn(p.shape, generator=self.ctx.generator).to(p) for n, p in params.items()}
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
        elif self.params.perturbation == "gaussian":
            for name, p in getattr(self, "_gauss_restore", []):
                p.copy_(self._saved[name])
            self._gauss_restore = []

    # ----------------------------------------------------------------- merge (stage 2)
    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.start_state is not None
        start = self.start_state
        fisher = self.estimate_fisher(self.task, self.params.fisher_samples, self.params.fisher_labels)
        delta = merging.task_vector(trained, start)
        if self.params.stats == "list":
            self.optima.append(merging.clone_state(trained))
            self.fishers.append(fisher)
            alpha = merging.pnm_alpha(start, delta, self.optima, self.fishers, masks=masks)
        else:
            self.statistics.add_task(trained, fisher)
            alpha = self.statistics.alpha(start, delta, masks=masks)
        merged = merging.pnm_merge(start, delta, alpha, masks=masks)
        draws = self.step_draws
        diagnostics = {
            "alpha": alpha,
            "fitted_entries": merging.masked_numel(delta, masks),
            "stats_mb": round(self.statistics.nbytes / 2**20, 2) if self.params.stats == "constant" else
            round(sum(merging.state_nbytes(s) for s in self.optima + self.fishers) / 2**20, 2),
            "perturbed_steps": sum(1 for d in draws if d != 0.0),
            "steps": len(draws),
        }
        self.step_draws = []
        return merged, diagnostics

"""OPCM — orthogonal projection-based continual merging (data-free, post hoc).

Tang et al., "Merging Models on the Fly Without Retraining: A Sequential Approach to Scalable
Continual Model Merging", NeurIPS 2025, arXiv 2501.09522; reference implementation FusionBench
``fusion_bench/method/opcm/opcm.py`` (learned from, not copied; tests/methods/test_opcm.py checks
equality with it).

Training (a trajectory, :mod:`mergecl.methods.posthoc`): sequential fine-tuning from θ*_{t−1}
(FusionBench merges independently fine-tuned CLIP models; here the models are the harness's
trajectory, which both families of methods share). With task vectors τ_t = θ*_t − θ₀ the merge
keeps the merged task vector τ̂ and a scale λ:

* t = 0: τ̂_0 = τ_0, λ_0 = 1.
* t ≥ 1, for every weight matrix W: SVD of the previous merged task vector τ̂_{t−1} = U S Vᵀ
  (full matrices); P = Uᵀ τ_t V; zero P's diagonal and its leading r×r block, r the first index
  at which the cumulative share of the singular values, cumsum(S)/ΣS, exceeds α; τ̃_t = U P Vᵀ
  (the new task vector with the merged one's leading directions projected out). Every other
  entry (biases, normalisation parameters): τ̃_t = τ_t.
* λ_t = ‖λ_{t−1}·τ̂_{t−1} + τ̃_t‖ / mean_{i≤t} ‖τ_i‖ and τ̂_t = (λ_{t−1}·τ̂_{t−1} + τ̃_t) / λ_t —
  the merged task vector's norm is the running mean of the task vectors' norms (norms over
  every merged entry).
* θ̂_t = θ₀ + τ̂_t (the merge coefficient reported is 1/λ_t, the weight of the newest task's
  projected vector; ``opcm_lambda`` is λ_t).

Defaults and their sources: α = 0.5 (FusionBench's ``opcm.yaml``); α must lie in (0, 1].

Where the reference is silent or differs, and why:
* Convolutions: FusionBench projects ``nn.Linear`` weights only (CLIP's one convolution, the
  patch embedding, is updated unprojected). EfficientNet's weights are convolutions — 1×1
  pointwise ones are linear maps over channels — so by default (``conv: matrix``) a
  convolution weight out × in × k × k is projected as the out × (in·k·k) matrix;
  ``conv: other`` follows FusionBench (no projection).
* 1-D parameters follow the unprojected rule (as in the reference).
* The head is taken as trained (``head: trained``; in the reference it is a frozen text head).

Memory: θ₀ and the running τ̂ (two model copies) plus one scalar norm per task: streaming.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from mergecl.methods import merging
from mergecl.methods.base import MERGE_COEFFICIENT, tunable
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams
from pydantic import Field
from torch import Tensor

ConvRule = Literal["matrix", "other"]


def split_rank(singular_values: Tensor, alpha: float) -> int:
    """The first index at which cumsum(S)/ΣS exceeds α (0 if none does — e.g. S = 0)."""
    share = singular_values.cumsum(dim=0) / singular_values.sum()
    return int((share > alpha).float().argmax().item())


def project_out(merged_tv: Tensor, task_tv: Tensor, alpha: float) -> Tensor:
    """τ̃ = U·P·Vᵀ with P = Uᵀ·τ·V, P's diagonal and leading r×r block zeroed, U S Vᵀ the full
    SVD of the merged task vector (both m × n matrices)."""
    u, s, vh = torch.linalg.svd(merged_tv, full_matrices=True)
    v = vh.T
    r = split_rank(s, alpha)
    projected = u.T @ task_tv @ v
    projected.diagonal().fill_(0)
    projected[:r, :r] = 0
    return u @ projected @ v.T


def is_matrix(name: str, value: Tensor, conv: ConvRule) -> bool:
    """Weights projected as matrices: 2-D weights, and (``conv: matrix``) convolution kernels."""
    if not name.endswith("weight"):
        return False
    return value.dim() == 2 or (conv == "matrix" and value.dim() > 2)


def vector_norm(state: StateDict) -> float:
    """‖state‖ over all its entries flattened in sorted-name order, in the state's precision
    (the reference's ``state_dict_to_vector`` + ``linalg.norm``)."""
    names = sorted(state)
    return float(torch.linalg.norm(torch.cat([state[name].reshape(-1) for name in names])))


def opcm_update(merged_tv: StateDict | None, task_tv: StateDict, previous_lambda: float,
                norms: list[float], alpha: float, conv: ConvRule = "matrix",
                anchor: StateDict | None = None) -> tuple[StateDict, float]:
    """One OPCM step: (τ̂_t, λ_t) from τ̂_{t−1} (None at the first task), τ_t, λ_{t−1} and the
    norms ‖τ_i‖ of every task so far, τ_t's included.

    With ``anchor`` (θ₀) the step runs in weight space, as the reference does (the merged
    weights θ₀ + τ̂ are formed and differenced again), which reproduces its rounding."""
    if merged_tv is None:
        return merging.clone_state(task_tv), 1.0
    base = anchor if anchor is not None else {n: torch.zeros_like(v) for n, v in task_tv.items()}
    updated: StateDict = {}
    for name, tau in task_tv.items():
        previous = (base[name] + merged_tv[name]) - base[name]
        if is_matrix(name, tau, conv):
            shape = tau.shape
            projected = project_out(previous.reshape(shape[0], -1), tau.reshape(shape[0], -1), alpha)
            updated[name] = base[name] + (previous_lambda * previous + projected.reshape(shape))
        else:
            updated[name] = base[name] + (previous_lambda * previous + tau)
    norm = vector_norm({name: value - base[name] for name, value in updated.items()})
    mean_norm = float(np.mean(norms))
    if norm == 0:
        return {name: value - base[name] for name, value in updated.items()}, 1.0
    rescaled = {name: base[name] + (value - base[name]) * (mean_norm / norm)
                for name, value in updated.items()}
    return {name: value - base[name] for name, value in rescaled.items()}, norm / mean_norm


class OPCMParams(AnchoredMergeParams):
    alpha: float = tunable(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0], gt=0.0, le=1.0,
                           description="singular-value share kept out of the new task vector")
    conv: ConvRule = Field("matrix", description="matrix: project conv kernels as out × in·k·k; "
                           "other: leave them unprojected (FusionBench)")


class OPCM(AnchoredMerge):
    name = "opcm"
    paper = "Tang et al., NeurIPS 2025, arXiv 2501.09522 (FusionBench OPCM)"
    Params = OPCMParams

    def __init__(self, params: OPCMParams, context: Any) -> None:
        super().__init__(params, context)
        self.merged_tv: StateDict | None = None
        self.scale = 1.0
        self.norms: list[float] = []

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        assert self.pretrained_state is not None
        self.norms.append(vector_norm(task_vector))
        anchor = {name: self.pretrained_state[name] for name in task_vector}
        self.merged_tv, self.scale = opcm_update(self.merged_tv, task_vector, self.scale, self.norms,
                                                 self.params.alpha, self.params.conv, anchor)
        return self.merged_tv, 1.0

    def merge_diagnostics(self) -> dict[str, Any]:
        return {MERGE_COEFFICIENT: 1.0 / self.scale, "opcm_lambda": self.scale,
                "mean_task_vector_norm": sum(self.norms) / len(self.norms)}

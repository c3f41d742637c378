"""TIES-Merging of sequentially fine-tuned task vectors, as its references run it.

Yadav, Tam, Choshen, Raffel, Bansal, "TIES-Merging: Resolving Interference When Merging
Models", NeurIPS 2023, arXiv 2306.01708. A baseline of the MagMax paper (Marczak et al.,
ECCV 2024) and, in its continual form, of FusionBench ("C-TIES").

Training (a trajectory, :mod:`mergecl.methods.posthoc`): sequential fine-tuning from θ*_{t−1}.
With task vectors τ_i = θ*_i − θ₀, flattened over the *whole* merged model (every backbone
entry, one vector per task — not per tensor):

1. **trim** — keep, in every τ_i, the entries with |τ_{i,k}| ≥ the k-th smallest magnitude,
   k = d − ⌊top_k·d⌋ (d entries; so ⌊top_k·d⌋ + 1 entries are kept, plus ties), zero the rest;
2. **elect** — γ_k = sign(Σ_i trimmed_{i,k}); entries where that sum is 0 take the sign of
   Σ_k γ_k (the "majority" rule of the reference);
3. **disjoint merge** — over the trimmed entries whose sign agrees with γ_k (> 0 where γ_k > 0,
   < 0 otherwise): their mean (``merge_function: mean``; 0 where none agrees), sum or
   signed maximum.

``mode: list`` (MagMax's baseline, default): θ̂_t = θ₀ + λ·TIES(τ_1, …, τ_t) — the sign
election needs every trimmed task vector, so this keeps the T task vectors.
``mode: continual`` (FusionBench's C-TIES, ``fusion_bench/method/opcm/ties_merging.py``):
θ̂_0 = θ₀ + λ·τ_0, θ̂_t = θ̂_{t−1} + λ·TIES(θ̂_{t−1} − θ₀, τ_t) — a pairwise running merge
holding one merged task vector.

Defaults and their sources: top_k = 0.2 (top-20 %, both references); λ = 0.55 and the disjoint
mean (MagMax's baseline code at CLIP ViT-B/16 scale); FusionBench's C-TIES uses λ = 0.5 and
``merge_function: sum`` (the ``c-ties`` alias). λ = 0.55 was chosen at CLIP scale, not at this
harness's: select λ on validation data (``mergecl tune``; bench/config/tuned/SUMMARY.md).

Where the references are silent: the head is not trimmed or scaled (``head: trained``,
:mod:`mergecl.methods.posthoc`; in both references the head is a frozen text head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import MERGE_COEFFICIENT, tunable
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams
from pydantic import Field
from torch import Tensor

MergeFunction = Literal["mean", "sum", "max"]


def trim_top_k(vectors: Tensor, top_k: float) -> Tensor:
    """Rows of ``vectors`` (n × d) with every entry below the row's top-``top_k`` magnitude
    threshold zeroed: kept where |v| ≥ the (d − ⌊top_k·d⌋)-th smallest |v| of the row."""
    fraction = merging.check_finite_scalar(top_k, "top_k")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top_k must be in (0, 1], got {top_k!r}")
    if vectors.dim() != 2 or vectors.shape[1] == 0:
        raise ValueError(f"trim_top_k needs an n × d matrix with d ≥ 1, got {tuple(vectors.shape)}")
    d = vectors.shape[1]
    k = d - int(d * fraction)
    if k < 1:  # keep everything
        return vectors.clone()
    threshold = vectors.abs().kthvalue(k, dim=1, keepdim=True).values
    return vectors * (vectors.abs() >= threshold)


def elect_sign(trimmed: Tensor) -> Tensor:
    """γ = sign(Σ_i trimmed_i); zeros resolved to the sign of Σ γ (the majority)."""
    sign = torch.sign(trimmed.sum(dim=0))
    majority = torch.sign(sign.sum())
    return torch.where(sign == 0, majority, sign)


def disjoint_merge(trimmed: Tensor, sign: Tensor, merge_function: MergeFunction = "mean") -> Tensor:
    """Aggregate the entries of ``trimmed`` (n × d) whose sign agrees with ``sign`` (d)."""
    agrees = torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * agrees
    if merge_function == "mean":
        counts = (selected != 0).sum(dim=0).to(selected.dtype)
        return selected.sum(dim=0) / counts.clamp(min=1)
    if merge_function == "sum":
        return selected.sum(dim=0)
    if merge_function == "max":
        return selected.abs().max(dim=0).values * sign
    raise ValueError(f"merge_function must be one of mean, sum, max; got {merge_function!r}")


def ties_merge(task_vectors: Sequence[Mapping[str, Tensor]], top_k: float = 0.2,
               merge_function: MergeFunction = "mean") -> StateDict:
    """TIES-Merging of ``task_vectors`` over their float entries flattened into one vector
    each (trim top-k globally, elect sign, disjoint merge); the merged task vector, unscaled.
    Non-float entries come from the last task vector."""
    merging.check_states(task_vectors, "task_vectors")
    last = task_vectors[-1]
    names = [name for name, value in last.items() if merging.is_mergeable(value)]
    out: StateDict = {name: value.detach().clone() for name, value in last.items()
                      if not merging.is_mergeable(value)}
    if not names:
        return out
    flat = torch.stack([merging.flatten_state(tv, names).to(last[names[0]].dtype)
                        for tv in task_vectors])
    trimmed = trim_top_k(flat, top_k)
    merged = disjoint_merge(trimmed, elect_sign(trimmed), merge_function)
    out.update({name: value.clone() for name, value in
                merging.unflatten_state(merged, last, names).items()})
    return out


class TiesParams(AnchoredMergeParams):
    top_k: float = tunable(0.2, [0.1, 0.2, 0.3, 0.5], gt=0.0, le=1.0,
                           description="fraction of entries kept (whole model)")
    lam: float = tunable(0.55, [0.3, 0.55, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5], ge=0.0, le=10.0,
                         description="scale λ of the merged task vector")
    merge_function: MergeFunction = Field("mean", description="disjoint mean, sum or max")
    mode: Literal["list", "continual"] = Field(
        "list", description="list: TIES over all task vectors (MagMax's baseline); "
        "continual: pairwise with the running merge (FusionBench C-TIES)")


class TiesMerge(AnchoredMerge):
    name = "ties"
    paper = "Yadav et al., NeurIPS 2023, arXiv 2306.01708 (baseline in MagMax; C-TIES in FusionBench)"
    Params = TiesParams

    def __init__(self, params: TiesParams, context: Any) -> None:
        super().__init__(params, context)
        self.task_vectors: list[StateDict] = []
        self.running: StateDict | None = None

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        p = self.params
        if p.mode == "list":
            self.task_vectors.append(task_vector)
            return ties_merge(self.task_vectors, p.top_k, p.merge_function), p.lam
        if self.running is None:
            self.running = {n: p.lam * v for n, v in task_vector.items()}
        else:
            increment = ties_merge([self.running, task_vector], p.top_k, p.merge_function)
            for name, value in increment.items():
                self.running[name] = self.running[name] + p.lam * value
        return self.running, 1.0

    def merge_diagnostics(self) -> dict[str, Any]:
        return {MERGE_COEFFICIENT: self.params.lam}



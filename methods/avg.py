"""Continual model averaging ("Model Averaging" row of the P&M paper).

Task t trains from θ̂_{t-1} and

    θ̂_t = (1 − 1/t)·θ̂_{t-1} + (1/t)·θ*_t      (t = 1, 2, …)

so θ̂_t is the running mean of the fine-tuned models (CoMA-style; Marouf et al., ECCV 2024,
with the weight 1/t). Head rows of classes new in task t are taken as trained (the shared
head rule). MagMax's "average" — sequential fine-tuning and θ₀ + (1/t)·Σ τ_i, a merge
anchored at θ₀ — is the ``task-arithmetic`` method. No hyper-parameters.
"""

from __future__ import annotations

from mergecl.methods import merging
from mergecl.methods.base import (
    MERGE_COEFFICIENT,
    MergeMethod,
    MergeResult,
    MethodParams,
    StateDict,
)
from torch import Tensor


class ModelAveraging(MergeMethod):
    name = "avg"
    paper = "continual model averaging (CoMA-style; Model Averaging row of P&M, arXiv 2505.22389)"
    Params = MethodParams

    @property
    def plain_first_task(self) -> bool:
        return True

    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.start_state is not None
        weight = 1.0 / (self.task + 1)
        return MergeResult(merging.interpolate(self.start_state, trained, weight, masks=masks),
                           {MERGE_COEFFICIENT: weight})

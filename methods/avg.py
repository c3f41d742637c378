"""Continual model averaging ("Model Averaging" row of the P&M paper).

``mode: continual`` (default): task t trains from θ̂_{t-1} and
    θ̂_t = (1 − 1/t)·θ̂_{t-1} + (1/t)·θ*_t      (t = 1, 2, …)
so θ̂_t is the running mean of the fine-tuned models.

``mode: task-arithmetic`` — the "average" baseline of the MagMax paper: sequential fine-tuning
from θ*_{t-1} and θ̂_t = θ₀ + (1/t)·Σ_{i≤t} τ_i with τ_i = θ*_i − θ₀ (a running sum is kept).
"""

from __future__ import annotations

from typing import Any, Literal

from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from torch import Tensor


class AveragingParams(MethodParams):
    mode: Literal["continual", "task-arithmetic"] = "continual"


class ModelAveraging(MergeMethod):
    name = "avg"
    paper = "continual model averaging (CoMA-style; Model Averaging row of P&M, arXiv 2505.22389)"
    Params = AveragingParams

    def __init__(self, params: AveragingParams, context: Any) -> None:
        super().__init__(params, context)
        self.task_arithmetic = params.mode == "task-arithmetic"
        self.train_from = "trained" if self.task_arithmetic else "merged"
        self.task_vector_sum: StateDict | None = None

    def keeps_pretrained(self) -> bool:
        return self.task_arithmetic

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        weight = 1.0 / (self.task + 1)
        if not self.task_arithmetic:
            assert self.start_state is not None
            return merging.interpolate(self.start_state, trained, weight, masks=masks), {"coefficient": weight}
        assert self.pretrained_state is not None
        tau = merging.task_vector(trained, self.pretrained_state)
        if self.task_vector_sum is None:
            self.task_vector_sum = tau
        else:
            for name, value in tau.items():
                if merging.is_mergeable(value):
                    self.task_vector_sum[name].add_(value)
        merged = merging.add_scaled(self.pretrained_state, self.task_vector_sum, scale=weight, masks=masks)
        return merged, {"coefficient": weight}

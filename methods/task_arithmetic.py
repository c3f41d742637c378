"""Continual task arithmetic — the "average" baseline of MagMax and FusionBench's "C-TA".

Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023 (arXiv 2212.04089); as a
continual baseline in MagMax (Marczak et al., ECCV 2024) and FusionBench
(``fusion_bench/method/opcm/task_arithmetic.py``).

Training (a trajectory, :mod:`mergecl.methods.posthoc`): sequential fine-tuning from θ*_{t−1}.
With τ_i = θ*_i − θ₀ a running sum is kept and

    θ̂_t = θ₀ + λ_t · Σ_{i≤t} τ_i,   λ_t = λ (``lam``) or 1/t (``lam: null``, the default)

``lam: null`` is MagMax's "average" (the mean task vector); FusionBench's C-TA uses a fixed
λ = 0.3 (the ``c-ta`` alias). The head is taken as trained (``head: trained``).
"""

from __future__ import annotations

from typing import Any

from mergecl.methods import merging
from mergecl.methods.base import tunable
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams


class TaskArithmeticParams(AnchoredMergeParams):
    lam: float | None = tunable(None, [None, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5], ge=0.0, le=10.0,
                                description="scale λ of the summed task vectors; null: 1/t (the mean)")


class TaskArithmetic(AnchoredMerge):
    name = "task-arithmetic"
    paper = "Ilharco et al., ICLR 2023 (continual: MagMax's average; FusionBench C-TA)"
    Params = TaskArithmeticParams

    def __init__(self, params: TaskArithmeticParams, context: Any) -> None:
        super().__init__(params, context)
        self.task_vector_sum: StateDict | None = None

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        if self.task_vector_sum is None:
            self.task_vector_sum = merging.clone_state(task_vector)
        else:
            for name, value in task_vector.items():
                self.task_vector_sum[name].add_(value)
        scale = self.params.lam if self.params.lam is not None else 1.0 / (task + 1)
        return self.task_vector_sum, scale

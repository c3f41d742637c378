"""DARE — drop-and-rescale of the task vector before a continual average.

Yu, Yu, Yu, Huang, Li, "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch", ICML 2024, arXiv 2311.03099 (DARE). As a continual merging baseline
(the P&M paper's "DARE" row): with Δ_t = θ*_t − θ̂_{t-1},

    θ̂_t = θ̂_{t-1} + (1/t)·DARE_p(Δ_t),   DARE_p(Δ) = m ⊙ Δ / (1 − p),  m_k ~ Bernoulli(1 − p)

i.e. model averaging of a randomly sparsified, rescaled task vector (p = 0.5 by default; the
mask is drawn from the run's seeded generator).
"""

from __future__ import annotations

from typing import Any

from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field
from torch import Tensor


class DareParams(MethodParams):
    drop_rate: float = Field(0.5, ge=0.0, lt=1.0, description="probability p of dropping an entry")


class DareMerge(MergeMethod):
    name = "dare"
    paper = "Yu et al., ICML 2024, arXiv 2311.03099 (as a continual-averaging baseline)"
    Params = DareParams

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.start_state is not None
        weight = 1.0 / (self.task + 1)
        delta = merging.task_vector(trained, self.start_state)
        sparse = merging.dare(delta, self.params.drop_rate, self.ctx.generator)
        return merging.add_scaled(self.start_state, sparse, scale=weight, masks=masks), {"coefficient": weight}

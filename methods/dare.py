"""DARE — drop-and-rescale of the task vector before a continual average.

Yu, Yu, Yu, Huang, Li, "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch", ICML 2024, arXiv 2311.03099 (DARE). As a continual merging baseline
(the P&M paper's "DARE" row): with Δ_t = θ*_t − θ̂_{t-1},

    θ̂_t = θ̂_{t-1} + (1/t)·DARE_p(Δ_t),   DARE_p(Δ) = m ⊙ Δ / (1 − p),  m_k ~ Bernoulli(1 − p)

i.e. model averaging of a randomly sparsified, rescaled task vector. p = 0.5 by default:
mergecl's choice (the P&M paper does not state its p); select it on validation data
(``mergecl tune``). The mask is drawn from the run's seeded method generator.
"""

from __future__ import annotations

from collections.abc import Mapping

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
from torch import Tensor


def dare(tv: Mapping[str, Tensor], drop_rate: float,
         generator: torch.Generator | None = None) -> StateDict:
    """Drop each float entry with probability p (exact zero), rescale kept ones by 1/(1 − p).

    ``drop_rate`` p must be in [0, 1). Random draws use ``generator`` (on its own device, then
    moved). Non-float entries are copied.
    """
    p = merging.check_finite_scalar(drop_rate, "drop_rate")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    out: StateDict = {}
    for name, vector in tv.items():
        vector = vector.detach()
        if not merging.is_mergeable(vector):
            out[name] = vector.clone()
            continue
        uniform = torch.rand(vector.shape, generator=generator, device=draw_device)
        keep = (uniform >= p).to(vector.device)
        out[name] = torch.where(keep, vector / (1.0 - p), torch.zeros((), dtype=vector.dtype,
                                                                      device=vector.device))
    return out


class DareParams(MethodParams):
    drop_rate: float = tunable(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9], ge=0.0, lt=1.0,
                               description="probability p of dropping an entry")


class DareMerge(MergeMethod):
    name = "dare"
    paper = "Yu et al., ICML 2024, arXiv 2311.03099 (as a continual-averaging baseline)"
    Params = DareParams

    @property
    def plain_first_task(self) -> bool:
        return True

    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.start_state is not None
        weight = 1.0 / (self.task + 1)
        delta = merging.task_vector(trained, self.start_state)
        sparse = dare(delta, self.params.drop_rate, self.ctx.generator)
        return MergeResult(merging.add_scaled(self.start_state, sparse, scale=weight, masks=masks),
                           {MERGE_COEFFICIENT: weight})

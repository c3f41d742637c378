"""Random mix of task vectors (a baseline of the MagMax paper).

Training as MagMax's (from θ*_{t-1}). Every entry takes the value of a task vector chosen
uniformly at random among τ_1..τ_t (τ_i = θ*_i − θ₀); θ̂_t = θ₀ + λ·τ_RM with λ = 1.

Implementation note: kept as a streaming fold (reservoir sampling, one running τ): at task t
every entry is replaced by τ_t's with probability 1/t, which leaves each entry uniformly
distributed over the t tasks — the list form ``merging.random_mix`` is the test oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field
from torch import Tensor


def random_mix_fold_(running: StateDict, new_tv: Mapping[str, Tensor], task_count: int,
                     generator: torch.Generator | None = None) -> StateDict:
    """In place: each float entry of ``running`` becomes ``new_tv``'s with probability 1/task_count."""
    if task_count < 1:
        raise ValueError(f"task_count must be >= 1 (got {task_count})")
    for name, value in new_tv.items():
        if not merging.is_mergeable(value):
            running[name] = value.detach().clone()
            continue
        take = torch.rand(value.shape, generator=generator) < (1.0 / task_count)
        running[name].copy_(torch.where(take.to(value.device), value.detach(), running[name]))
    return running


class RandomMixParams(MethodParams):
    lam: float = Field(1.0, ge=0.0, le=10.0)


class RandomMix(MergeMethod):
    name = "random-mix"
    paper = "random mix baseline of MagMax (Marczak et al., ECCV 2024)"
    Params = RandomMixParams
    train_from = "trained"

    def __init__(self, params: RandomMixParams, context: Any) -> None:
        super().__init__(params, context)
        self.mix: StateDict | None = None

    def keeps_pretrained(self) -> bool:
        return True

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.pretrained_state is not None
        tau = merging.task_vector(trained, self.pretrained_state)
        if self.mix is None:
            self.mix = tau
        else:
            random_mix_fold_(self.mix, tau, self.task + 1, self.ctx.generator)
        return merging.add_scaled(self.pretrained_state, self.mix, scale=self.params.lam, masks=masks), \
            {"lambda": self.params.lam}

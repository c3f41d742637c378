"""Random mix of task vectors (a baseline of the MagMax paper).

Marczak, Twardowski, Trzciński, Cygert, "MagMax: Leveraging Model Merging for Seamless
Continual Learning", ECCV 2024, arXiv 2407.06322 — the "random mix" baseline of its code.

Training (a trajectory, :mod:`mergecl.methods.posthoc`): sequential fine-tuning from θ*_{t−1}.
Every backbone entry takes the value of a task vector chosen uniformly at random among
τ_1..τ_t (τ_i = θ*_i − θ₀, independently per entry); θ̂_t = θ₀ + λ·τ_RM with λ = 1 (the
MagMax code's value).

Implementation note: a streaming fold (reservoir sampling, one running τ): at task t every
entry is replaced by τ_t's with probability 1/t, which leaves each entry uniformly
distributed over the t tasks (:func:`random_mix`, the list form, is the test oracle). The
draws come from the run's seeded method generator. The head is taken as trained
(``head: trained``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from mergecl.methods import merging
from mergecl.methods.base import tunable
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams
from torch import Tensor


def random_mix(task_vectors: Sequence[Mapping[str, Tensor]],
               generator: torch.Generator | None = None) -> StateDict:
    """Every float entry taken from a task chosen uniformly at random (independently per entry).

    Non-float entries come from the last task vector.
    """
    merging.check_states(task_vectors, "task_vectors")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    out: StateDict = {}
    for name, last in task_vectors[-1].items():
        if not merging.is_mergeable(last):
            out[name] = last.detach().clone()
            continue
        stacked = torch.stack([tv[name].detach().to(last.device, last.dtype)
                               for tv in task_vectors])
        choice = torch.randint(len(task_vectors), tuple(last.shape), generator=generator,
                               device=draw_device).to(last.device)
        out[name] = stacked.gather(0, choice.unsqueeze(0)).squeeze(0)
    return out


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


class RandomMixParams(AnchoredMergeParams):
    lam: float = tunable(1.0, [0.3, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0], ge=0.0, le=10.0,
                         description="scale λ of the mixed task vector")


class RandomMix(AnchoredMerge):
    name = "random-mix"
    paper = "random mix baseline of MagMax (Marczak et al., ECCV 2024)"
    Params = RandomMixParams

    def __init__(self, params: RandomMixParams, context: Any) -> None:
        super().__init__(params, context)
        self.mix: StateDict | None = None

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        if self.mix is None:
            self.mix = merging.clone_state(task_vector)
        else:
            random_mix_fold_(self.mix, task_vector, task + 1, self.ctx.generator)
        return self.mix, self.params.lam

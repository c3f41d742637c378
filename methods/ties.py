"""TIES-Merging of sequentially fine-tuned task vectors (a baseline of the MagMax paper).

Yadav, Tam, Choshen, Raffel, Bansal, "TIES-Merging: Resolving Interference When Merging
Models", NeurIPS 2023, arXiv 2306.01708. Training as MagMax's (from θ*_{t-1}); with
τ_i = θ*_i − θ₀: trim every τ_i to its top-k% magnitudes, elect each entry's sign by the sum
of the trimmed values, average the entries that agree with it (disjoint mean), and
θ̂_t = θ₀ + λ·τ_TIES (top-k = 20 %, λ = 0.55 as in the MagMax code's baseline).

Implementation note: the sign election needs every trimmed task vector, so this baseline keeps
the list of T task vectors (T model copies) — unlike MagMax's streaming fold.
"""

from __future__ import annotations

from typing import Any

from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field
from torch import Tensor


class TiesParams(MethodParams):
    top_k: float = Field(0.2, gt=0.0, le=1.0, description="fraction of entries kept per tensor")
    lam: float = Field(0.55, ge=0.0, le=10.0)


class TiesMerge(MergeMethod):
    name = "ties"
    paper = "Yadav et al., NeurIPS 2023, arXiv 2306.01708 (baseline in MagMax)"
    Params = TiesParams
    train_from = "trained"

    def __init__(self, params: TiesParams, context: Any) -> None:
        super().__init__(params, context)
        self.task_vectors: list[StateDict] = []

    def keeps_pretrained(self) -> bool:
        return True

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.pretrained_state is not None
        self.task_vectors.append(merging.task_vector(trained, self.pretrained_state))
        merged_tv = merging.ties_merge(self.task_vectors, top_k=self.params.top_k)
        return merging.add_scaled(self.pretrained_state, merged_tv, scale=self.params.lam, masks=masks), \
            {"lambda": self.params.lam}

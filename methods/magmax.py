"""MagMax — maximum-magnitude selection of task vectors.

Marczak, Twardowski, Trzciński, Cygert, "MagMax: Leveraging Model Merging for Seamless
Continual Learning", ECCV 2024, arXiv 2407.06322.

Training is sequential fine-tuning from the previous *fine-tuned* weights θ*_{t-1}
(``variant: sequential``) or from θ₀ for every task (``variant: ind``). With task vectors
τ_i = θ*_i − θ₀, every entry takes the task vector of largest magnitude,

    τ_MM,k = τ_{j,k},  j = argmax_i |τ_{i,k}|   (ties → the later task),

and the model used for inference is θ̂_t = θ₀ + λ·τ_MM (λ = 0.5). No data is used.

Implementation notes. The selection is a streaming fold (``merging.max_magnitude_fold_``):
one running τ_MM, θ₀ and the current weights are kept, never a list of task vectors (for
models of ≥ 16.8 M float entries the fold is one ``torch.compile``'d fused pass per tensor,
1.02× the cost of reading each τ once; results/perf.md). The
model holds θ̂_t between tasks (so any evaluation sees the merged model) and θ*_{t-1} is
swapped back in when the next task starts. Head rows of classes new in task t are taken
as trained (shared head rule), the others follow the selection.
"""

from __future__ import annotations

from typing import Any, Literal

from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field
from torch import Tensor


class MagMaxParams(MethodParams):
    lam: float = Field(0.5, ge=0.0, le=10.0, description="scale λ of the selected task vector")
    variant: Literal["sequential", "ind"] = "sequential"


class MagMax(MergeMethod):
    name = "magmax"
    paper = "Marczak et al., ECCV 2024, arXiv 2407.06322"
    Params = MagMaxParams

    def __init__(self, params: MagMaxParams, context: Any) -> None:
        super().__init__(params, context)
        self.train_from = "pretrained" if params.variant == "ind" else "trained"
        self.selection: StateDict | None = None

    def keeps_pretrained(self) -> bool:
        return True

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.pretrained_state is not None
        tau = merging.task_vector(trained, self.pretrained_state)
        if self.selection is None:
            self.selection = tau
        else:
            merging.max_magnitude_fold_(self.selection, tau)
        merged = merging.add_scaled(self.pretrained_state, self.selection, scale=self.params.lam, masks=masks)
        return merged, {"lambda": self.params.lam}

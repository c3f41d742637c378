"""CoMA — continual model averaging with a fixed weight.

Marouf, Roy, Belilovsky, Soatto et al., "Weighted Ensemble Models Are Strong Continual
Learners", ECCV 2024 (CoMA), arXiv 2312.08977. Task t trains from θ̂_{t-1} and

    θ̂_t = (1 − w)·θ̂_{t-1} + w·θ*_t,   w fixed (θ̂_0 = θ*_0)

Default w = 0.5: mergecl's choice for the CPU protocol (the paper tunes it); tunable over
0.1–0.8 (``mergecl tune``).
"""

from __future__ import annotations

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


class CoMAParams(MethodParams):
    weight: float = tunable(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], ge=0.0, le=1.0,
                            description="weight w of the newly trained model")


class CoMA(MergeMethod):
    name = "coma"
    paper = "Marouf et al., ECCV 2024 (CoMA), arXiv 2312.08977"
    Params = CoMAParams

    @property
    def plain_first_task(self) -> bool:
        return True

    def merge(self, trained: StateDict, masks: dict[str, Tensor]) -> MergeResult:
        assert self.start_state is not None
        weight = 1.0 if self.task == 0 else self.params.weight
        return MergeResult(merging.interpolate(self.start_state, trained, weight, masks=masks),
                           {MERGE_COEFFICIENT: weight})

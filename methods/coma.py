"""CoMA — continual model averaging with a fixed weight.

Marouf, Roy, Belilovsky, Soatto et al., "Weighted Ensemble Models Are Strong Continual
Learners", ECCV 2024 (CoMA). Task t trains from θ̂_{t-1} and

    θ̂_t = (1 − w)·θ̂_{t-1} + w·θ*_t,   w fixed (default 0.5).

mergecl's default w = 0.5 is our choice for the CPU protocol (the paper tunes it); the P&M
table's CoMA row is reproduced with this rule.
"""

from __future__ import annotations

from typing import Any

from mergecl.methods import merging
from mergecl.methods.base import MergeMethod, MethodParams, StateDict
from pydantic import Field
from torch import Tensor


class CoMAParams(MethodParams):
    weight: float = Field(0.5, ge=0.0, le=1.0, description="weight w of the newly trained model")


class CoMA(MergeMethod):
    name = "coma"
    paper = "Marouf et al., ECCV 2024 (CoMA), arXiv 2312.08977"
    Params = CoMAParams

    def merge(self, strategy: Any, trained: StateDict, masks: dict[str, Tensor]) -> tuple[StateDict, dict]:
        assert self.start_state is not None
        weight = 1.0 if self.task == 0 else self.params.weight
        return merging.interpolate(self.start_state, trained, weight, masks=masks), {"coefficient": weight}

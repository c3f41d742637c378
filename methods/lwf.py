"""LwF — learning without forgetting, through Avalanche's ``LwFPlugin`` (a classic reference).

Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017. Loss_t = CE +
α·T²·KL(softmax(z_old/T) ‖ softmax(z/T)) over the logits of classes seen before, with the
previous model's outputs as targets. No merge.
"""

from __future__ import annotations

from mergecl.methods.base import MergeMethod, MethodParams
from pydantic import Field


class LwFParams(MethodParams):
    alpha: float = Field(1.0, ge=0.0)
    temperature: float = Field(2.0, gt=0.0)


class LwF(MergeMethod):
    name = "lwf"
    paper = "Li & Hoiem, ECCV 2016 (Avalanche LwFPlugin)"
    Params = LwFParams

    def extra_plugins(self):
        from avalanche.training.plugins import LwFPlugin

        return [LwFPlugin(alpha=self.params.alpha, temperature=self.params.temperature)]

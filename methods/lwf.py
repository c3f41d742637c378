"""LwF — learning without forgetting, through Avalanche's ``LwFPlugin`` (a classic reference).

Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017. Loss_t = CE +
α·T²·KL(softmax(z_old/T) ‖ softmax(z/T)) over the logits of classes seen before, with the
previous model's outputs as targets. No merge.

Defaults α = 1, T = 2 (Avalanche's defaults; the paper's T = 2); α tunable over 0.1–5.
"""

from __future__ import annotations

from typing import Any

from mergecl.methods.base import MergeMethod, MethodParams, tunable
from pydantic import Field


class LwFParams(MethodParams):
    alpha: float = tunable(1.0, [0.1, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0], ge=0.0, description="distillation weight α")
    temperature: float = Field(2.0, gt=0.0)


class LwF(MergeMethod):
    name = "lwf"
    paper = "Li & Hoiem, ECCV 2016 (Avalanche LwFPlugin)"
    Params = LwFParams
    family = "regulariser"

    @property
    def plain_first_task(self) -> bool:
        return True  # no previous model to distil from at the first task

    def extra_plugins(self) -> list[Any]:
        from avalanche.training.plugins import LwFPlugin

        return [LwFPlugin(alpha=self.params.alpha, temperature=self.params.temperature)]

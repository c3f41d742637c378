"""EWC — elastic weight consolidation, through Avalanche's ``EWCPlugin`` (a classic reference).

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
Loss_t = CE + (λ/2)·Σ_i Σ_k F_{i,k}(θ_k − θ*_{i,k})² (``mode: separate``) or the online
variant with decay. No merge. In the ``lora`` parameterisation Avalanche regularises the
trainable parameters only (the fresh adapter and the head), which is a weak constraint —
noted in the leaderboard.
"""

from __future__ import annotations

from typing import Literal

from mergecl.methods.base import MergeMethod, MethodParams
from pydantic import Field


class EWCParams(MethodParams):
    ewc_lambda: float = Field(100.0, ge=0.0)
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = Field(None, ge=0.0, le=1.0)


class EWC(MergeMethod):
    name = "ewc"
    paper = "Kirkpatrick et al., PNAS 2017 (Avalanche EWCPlugin)"
    Params = EWCParams

    def extra_plugins(self):
        from avalanche.training.plugins import EWCPlugin

        decay = self.params.decay_factor if self.params.mode == "online" else None
        if self.params.mode == "online" and decay is None:
            decay = 1.0
        return [EWCPlugin(ewc_lambda=self.params.ewc_lambda, mode=self.params.mode, decay_factor=decay)]

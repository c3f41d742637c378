"""EWC — elastic weight consolidation, through Avalanche's ``EWCPlugin`` (a classic reference).

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017.
The paper writes the penalty (λ/2)·Σ_k F_k(θ_k − θ*_k)²; Avalanche's plugin, which runs here,
adds λ·Σ_i Σ_k F_{i,k}(θ_k − θ*_{i,k})² (no ½: our λ is the paper's λ/2) for ``mode: separate``,
or the online variant with decay. No merge. In the ``lora`` parameterisation Avalanche regularises the
trainable parameters only (the fresh adapter and the head), which is a weak constraint —
noted in the leaderboard.

Default λ = 100 (Avalanche's example value; the paper tunes it per benchmark); tunable over
1–10⁴ (``mergecl tune``).
"""

from __future__ import annotations

from typing import Any, Literal

from mergecl.methods.base import MergeMethod, MethodParams, tunable
from pydantic import Field


class EWCParams(MethodParams):
    ewc_lambda: float = tunable(100.0, [1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0], ge=0.0,
                                description="penalty weight λ")
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = Field(None, ge=0.0, le=1.0)


class EWC(MergeMethod):
    name = "ewc"
    paper = "Kirkpatrick et al., PNAS 2017 (Avalanche EWCPlugin)"
    Params = EWCParams
    family = "regulariser"

    @property
    def plain_first_task(self) -> bool:
        return True  # no penalty before the first importances exist

    def extra_plugins(self) -> list[Any]:
        from avalanche.training.plugins import EWCPlugin

        decay = self.params.decay_factor if self.params.mode == "online" else None
        if self.params.mode == "online" and decay is None:
            decay = 1.0
        return [EWCPlugin(ewc_lambda=self.params.ewc_lambda, mode=self.params.mode, decay_factor=decay)]

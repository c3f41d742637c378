"""Sequential fine-tuning (SeqFT) — the lower bound ("LoRA" row of the P&M paper).

Task t trains from θ̂_{t−1} = θ*_{t−1} and nothing is merged: θ̂_t = θ*_t (docs/methods.md,
"Sequential fine-tuning"). In the ``lora`` parameterisation each task's adapter is folded
into the base weights after the task, and a fresh adapter is trained for the next one.

SeqFT is the identity merge of the sequential fine-tuning trajectory that MagMax, TIES,
random mix and task arithmetic merge post hoc, so it is declared ``post-hoc`` too: the
harness trains that trajectory once for all of them.
"""

from __future__ import annotations

from mergecl.methods.base import MergeMethod, MethodParams


class SeqFT(MergeMethod):
    name = "seqft"
    paper = "lower bound: sequential fine-tuning, no merge"
    Params = MethodParams
    family = "lower-bound"
    timing = "post-hoc"

    @property
    def train_from(self) -> str:
        return "trained"

    @property
    def plain_first_task(self) -> bool:
        return True

"""Sequential fine-tuning (SeqFT) — the lower bound ("LoRA" row of the P&M paper).

Task t trains from θ̂_{t-1} and nothing is merged: θ̂_t = θ*_t (METHODS.md, "Sequential
fine-tuning"). In the ``lora`` parameterisation each task's adapter is folded into the base
weights after the task, and a fresh adapter is trained for the next one.
"""

from __future__ import annotations

from mergecl.methods.base import MergeMethod, MethodParams


class SeqFT(MergeMethod):
    name = "seqft"
    paper = "lower bound: sequential fine-tuning, no merge"
    Params = MethodParams

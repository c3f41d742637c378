"""MagMax — maximum-magnitude selection of task vectors.

Marczak, Twardowski, Trzciński, Cygert, "MagMax: Leveraging Model Merging for Seamless
Continual Learning", ECCV 2024, arXiv 2407.06322 (official code: github danielm1405/magmax).

Training (a trajectory, see :mod:`mergecl.methods.posthoc`): sequential fine-tuning, task t
from the previous *fine-tuned* weights θ*_{t−1} (``variant: sequential``), or every task from
θ₀ (``variant: ind``, FusionBench's "MagMax-Ind"). With task vectors τ_i = θ*_i − θ₀ every
entry takes the task vector of largest magnitude,

    τ_MM,k = τ_{j,k},   j = argmax_{i≤t} |τ_{i,k}|        (ties → the later task, ``>=``)

and the model used for inference is θ̂_t = θ₀ + λ·τ_MM. No data is used.

Defaults and their sources: λ = 0.5 (the MagMax paper's value for CLIP ViT-B/16; select it on
validation data at another scale — ``mergecl tune``); ties to the later task (the official
code's ``>=``); integer and boolean entries are not merged (the official code merges float
parameters only).

Implementation notes.
* Streaming: the selection is a running fold (:func:`max_magnitude_fold_`): one running τ_MM,
  θ₀ and the current weights are held, never a list of task vectors. For states of at least
  :data:`COMPILE_MIN_ENTRIES` float entries the fold is one ``torch.compile``'d fused pass per
  tensor (1.02× the cost of reading each τ once on ViT-B/16-sized states, results/perf.md);
  :func:`max_magnitude` (the list form) is the test oracle.
* The head: every row is taken as trained (``head: trained``, the default of every merge
  anchored at θ₀; :mod:`mergecl.methods.posthoc`), the selection runs over the backbone.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import tunable
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams
from pydantic import Field
from torch import Tensor


def max_magnitude(task_vectors: Sequence[Mapping[str, Tensor]]) -> StateDict:
    """Element-wise entry of largest |τ| over ``task_vectors``; ties go to the later task.

    List form (stacks all task vectors per tensor): the streaming fold's oracle and baseline.
    Non-float entries come from the last task vector.
    """
    merging.check_states(task_vectors, "task_vectors")
    out: StateDict = {}
    for name, last in task_vectors[-1].items():
        if not merging.is_mergeable(last):
            out[name] = last.detach().clone()
            continue
        # Reverse the task order so that argmax's first-maximum rule picks the later task.
        newest_first = torch.stack(
            [tv[name].detach().to(last.device, last.dtype) for tv in reversed(task_vectors)]
        )
        winner = newest_first.abs().argmax(dim=0, keepdim=True)
        out[name] = newest_first.gather(0, winner).squeeze(0)
    return out


FoldBackend = Literal["auto", "eager", "compiled"]
FOLD_BACKENDS: tuple[str, ...] = ("auto", "eager", "compiled")
#: ``backend="auto"`` compiles the fold only for states at least this large (float entries):
#: Inductor's one-off compilation costs seconds, which a small model's fold never earns back.
COMPILE_MIN_ENTRIES = 1 << 24  # 16.8 M (ViT-B/16 has 86.6 M; EfficientNet-Lite0 3.4 M)

_compiled_select: Any = None  # torch.compile'd _select_larger_ (built on first use)
_compile_error: str | None = None  # why compilation failed here (then "auto" stays eager)


def _select_larger_(currents: list[Tensor], incomings: list[Tensor]) -> None:
    """``current ← incoming where |incoming| >= |current|``, for every pair, in place."""
    for current, incoming in zip(currents, incomings):
        current.copy_(torch.where(incoming.abs() >= current.abs(), incoming, current))


def _compiled_fold_kernel() -> Any:
    """:func:`_select_larger_` compiled by ``torch.compile`` (Inductor) into one fused in-place
    pass per entry: τ and τ_MM read once, τ_MM written once. Shapes are specialised, so it is
    compiled once per architecture (and then served from Inductor's on-disk cache)."""
    global _compiled_select
    if _compiled_select is None:
        _compiled_select = torch.compile(_select_larger_, dynamic=False)
    return _compiled_select


def _check_fold_backend(backend: str, where: str) -> None:
    if backend not in FOLD_BACKENDS:
        raise ValueError(f"{where}: backend must be one of {FOLD_BACKENDS}, not {backend!r}")


def max_magnitude_fold_(running: StateDict, new_tv: Mapping[str, Tensor],
                        backend: FoldBackend = "auto") -> StateDict:
    """In place: fold ``new_tv`` into the running τ_MM (``|new| >= |running|`` → new) and return it.

    Modifies the tensors of ``running`` in place; no list and no extra state-sized copy.
    Non-float entries are overwritten with ``new_tv``'s (the newest). ``new_tv`` is not modified.

    ``backend``: ``"eager"`` — ``torch.where(..., out=)`` per entry (three tensor-sized
    temporaries per entry, several passes over memory); ``"compiled"`` — one fused pass per
    entry through ``torch.compile`` (measured 1.02× the cost of merely reading every τ once, vs
    6.7× for eager, on ViT-B/16-sized task vectors — results/perf.md); ``"auto"`` (default) —
    compiled for states of at least :data:`COMPILE_MIN_ENTRIES` float entries when compilation
    works here (``MERGECL_COMPILE=0`` disables it), eager otherwise. All backends give the
    same result bit for bit.
    """
    global _compile_error
    _check_fold_backend(backend, "max_magnitude_fold_")
    merging.check_compatible(running, new_tv, "new_tv")
    currents: list[Tensor] = []
    incomings: list[Tensor] = []
    for name, current in running.items():
        incoming = new_tv[name].detach().to(device=current.device, dtype=current.dtype)
        if not merging.is_mergeable(current):
            current.copy_(incoming)
            continue
        currents.append(current)
        incomings.append(incoming)
    if _use_compiled(backend, sum(t.numel() for t in currents)):
        try:
            _compiled_fold_kernel()(currents, incomings)
            return running
        except Exception as error:  # no C++ compiler, unsupported platform, ...
            # Compilation fails before the kernel runs: ``running`` is still untouched.
            _compile_error = f"{type(error).__name__}: {error}"
            if backend == "compiled":
                raise RuntimeError(f"max_magnitude_fold_: torch.compile is not usable here "
                                   f"({_compile_error}); use backend='eager'") from error
            warnings.warn(f"MagMax fold: torch.compile failed ({_compile_error}); using the "
                          f"eager fold from now on", RuntimeWarning, stacklevel=2)
    for current, incoming in zip(currents, incomings):
        take_new = torch.ge(incoming.abs(), current.abs())
        torch.where(take_new, incoming, current, out=current)
    return running


def _use_compiled(backend: str, entries: int) -> bool:
    if backend == "compiled":
        return True
    if backend == "eager" or _compile_error is not None or entries < COMPILE_MIN_ENTRIES:
        return False
    return os.environ.get("MERGECL_COMPILE", "1") not in ("0", "false", "no")


# --------------------------------------------------------------------------------------------
# the plugin


class MagMaxParams(AnchoredMergeParams):
    lam: float = tunable(0.5, [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.2, 1.5], ge=0.0, le=10.0,
                         description="scale λ of the selected task vector")
    variant: Literal["sequential", "ind"] = Field(
        "sequential", description="sequential: task t trains from θ*_{t-1}; ind: from θ₀")


class MagMax(AnchoredMerge):
    name = "magmax"
    paper = "Marczak et al., ECCV 2024, arXiv 2407.06322"
    Params = MagMaxParams

    def __init__(self, params: MagMaxParams, context: Any) -> None:
        super().__init__(params, context)
        self.selection: StateDict | None = None

    @property
    def train_from(self) -> str:
        return "pretrained" if self.params.variant == "ind" else "trained"

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        if self.selection is None:
            self.selection = merging.clone_state(task_vector)
        else:
            max_magnitude_fold_(self.selection, task_vector)
        return self.selection, self.params.lam

"""State-dict arithmetic for model-merging continual learning (pure tensor maths, no Avalanche).

Methods and the equations implemented (notation of ``/work/shared/METHODS.md``: θ₀ pretrained,
θ*_t trained on task t, θ̂_t merged, τ = θ* − θ₀ a task vector, Δ = θ*_t − θ̂_{t−1}, F diagonal
Fisher, sums over k run over the merged entries):

* Task arithmetic (Ilharco et al., ICLR 2023): ``θ = θ₀ + λ·τ`` — :func:`add_scaled`.
* Model averaging / CoMA: ``θ̂_t = (1 − w)·θ̂_{t−1} + w·θ*_t`` — :func:`interpolate`,
  :func:`average`.
* MagMax (Marczak et al., ECCV 2024, arXiv 2407.06322): ``τ_MM,k = τ_{j,k}``,
  ``j = argmax_i |τ_{i,k}|`` with ties to the later task — :func:`max_magnitude` (list form),
  :func:`max_magnitude_fold_` / :class:`MaxMagnitudeAccumulator` (streaming, one running τ_MM;
  large states are folded by one ``torch.compile``'d fused pass per entry).
* P&M (Qiu et al., NeurIPS 2025, arXiv 2505.22389), merge stage:
  ``α_t = −Σ_i Σ_k F_{i,k}(θ̂_{t−1,k} − θ*_{i,k})Δ_k / Σ_i Σ_k F_{i,k}Δ_k²`` clipped to [0, 1]
  (1 when the denominator is 0), ``θ̂_t = θ̂_{t−1} + α_t·Δ`` — :func:`pnm_alpha` (stored-list
  form, the test oracle), :class:`PnMStatistics` (constant memory: ``S = Σ_i F_i``,
  ``M = Σ_i F_i ⊙ θ*_i``, numerator ``Σ_k Δ_k(M_k − θ̂_{t−1,k}S_k)``, denominator
  ``Σ_k Δ_k² S_k``), :func:`pnm_merge`.
* BECAME (Li et al., ICML 2025, arXiv 2504.02666):
  ``λ* = Σ_k F_{t,k}Δ_k² / Σ_k (F_{t,k} + F_old,k)Δ_k²`` — :func:`became_lambda`.
* DARE (Yu et al., ICML 2024): drop each entry with probability p, rescale the rest by
  1/(1 − p) — :func:`dare`.
* TIES-Merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint mean — :func:`ties_merge`.
* Random mix (MagMax's baseline): every entry from a uniformly random task — :func:`random_mix`.

Conventions (``docs/ARCHITECTURE.md``):

* ``StateDict = dict[str, Tensor]``. Only floating-point entries are merged; integer and bool
  entries are passed through from the newest state given (for a task vector, the newest state
  is the fine-tuned one: :func:`task_vector` carries its non-float entries unchanged).
* ``Masks = Mapping[str, Tensor]`` of bool tensors shaped like their entry. ``True`` = the entry
  is merged (scaled by the merge coefficient, and counted in coefficient fits); ``False`` = the
  entry is taken as trained (copied from the newest state). A name absent from the mapping
  means "all entries merged". Masks may only name floating-point entries of the state.
* Fisher dictionaries may cover a subset of the floating-point entries (e.g. only parameters,
  not float buffers); an entry absent from the Fisher has F = 0 there, i.e. it does not enter
  the coefficient fits.
* Inputs are never modified, except by functions whose names end in ``_`` (documented).
* Mismatched keys or shapes, and other bad input, raise ``ValueError`` naming the bad value.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

StateDict = dict[str, Tensor]
Masks = Mapping[str, Tensor]

__all__ = [
    "StateDict",
    "Masks",
    "is_mergeable",
    "clone_state",
    "state_nbytes",
    "masked_numel",
    "check_masks",
    "task_vector",
    "add_scaled",
    "interpolate",
    "average",
    "max_magnitude",
    "max_magnitude_fold_",
    "FOLD_BACKENDS",
    "MaxMagnitudeAccumulator",
    "pnm_alpha",
    "PnMStatistics",
    "pnm_merge",
    "became_lambda",
    "dare",
    "ties_merge",
    "random_mix",
]


# --------------------------------------------------------------------------------------------
# validation helpers


def is_mergeable(t: Tensor) -> bool:
    """True for floating-point tensors (the only entries a merge touches)."""
    return bool(t.is_floating_point())


def _check_finite_scalar(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a real number, got {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _check_compatible(reference: Mapping[str, Tensor], other: Mapping[str, Tensor],
                      what: str) -> None:
    """Same keys, same shapes, same mergeability as ``reference``; else ValueError."""
    if reference.keys() != other.keys():
        missing = sorted(set(reference) - set(other))
        unexpected = sorted(set(other) - set(reference))
        raise ValueError(
            f"{what}: keys differ from the reference state "
            f"(missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''})"
        )
    for name, ref in reference.items():
        tensor = other[name]
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{what}: entry {name!r} is not a tensor ({type(tensor).__name__})")
        if tensor.shape != ref.shape:
            raise ValueError(
                f"{what}: entry {name!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(ref.shape)}"
            )
        if is_mergeable(tensor) != is_mergeable(ref):
            raise ValueError(
                f"{what}: entry {name!r} has dtype {tensor.dtype}, incompatible with {ref.dtype}"
            )


def _check_states(states: Sequence[Mapping[str, Tensor]], what: str) -> None:
    if len(states) == 0:
        raise ValueError(f"{what}: need at least one state dict, got an empty sequence")
    for index, state in enumerate(states[1:], start=1):
        _check_compatible(states[0], state, f"{what}[{index}]")


def check_masks(state: Mapping[str, Tensor], masks: Masks | None) -> None:
    """Raise ValueError unless every mask names a float entry of ``state``, is bool, same shape."""
    if masks is None:
        return
    for name, mask in masks.items():
        if name not in state:
            raise ValueError(f"mask given for unknown entry {name!r}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"mask for {name!r} must be a bool tensor, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if mask.shape != state[name].shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                             f"expected {tuple(state[name].shape)}")
        if not is_mergeable(state[name]):
            raise ValueError(f"mask given for non-floating entry {name!r} ({state[name].dtype}); "
                             "such entries are never merged")


def _mask_for(masks: Masks | None, name: str, like: Tensor) -> Tensor | None:
    """The mask of ``name`` on ``like``'s device, or None for "all entries merged"."""
    if masks is None or name not in masks:
        return None
    return masks[name].to(device=like.device)


def _check_fishers(reference: Mapping[str, Tensor], fisher: Mapping[str, Tensor],
                   what: str) -> None:
    """A Fisher covers float entries of ``reference`` (same shapes) and is non-negative."""
    for name, values in fisher.items():
        if name not in reference:
            raise ValueError(f"{what}: entry {name!r} is not in the state dict")
        if not isinstance(values, Tensor) or not is_mergeable(values):
            raise ValueError(f"{what}: entry {name!r} must be a floating-point tensor")
        if not is_mergeable(reference[name]):
            raise ValueError(f"{what}: entry {name!r} is a non-floating entry of the state")
        if values.shape != reference[name].shape:
            raise ValueError(f"{what}: entry {name!r} has shape {tuple(values.shape)}, "
                             f"expected {tuple(reference[name].shape)}")
        if bool((values < 0).any()):
            raise ValueError(f"{what}: entry {name!r} has negative values "
                             f"(min {float(values.min())}); a diagonal Fisher is >= 0")


def _selected_float64(tensor: Tensor, mask: Tensor | None) -> Tensor:
    """``tensor`` in float64, restricted to ``mask``'s True entries (flattened) if given."""
    values = tensor.detach().to(torch.float64)
    return values[mask] if mask is not None else values.reshape(-1)


# --------------------------------------------------------------------------------------------
# basic state-dict operations


def clone_state(state: Mapping[str, Tensor]) -> StateDict:
    """A detached deep copy of ``state``."""
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def state_nbytes(state: Mapping[str, Tensor]) -> int:
    """Total bytes held by the tensors of ``state``."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def masked_numel(state: Mapping[str, Tensor], masks: Masks | None = None) -> int:
    """Number of floating-point entries of ``state`` that a merge with ``masks`` scales."""
    check_masks(state, masks)
    total = 0
    for name, tensor in state.items():
        if not is_mergeable(tensor):
            continue
        mask = _mask_for(masks, name, tensor)
        total += tensor.numel() if mask is None else int(mask.sum())
    return total


def task_vector(finetuned: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> StateDict:
    """τ = finetuned − base on float entries; non-float entries are finetuned's, copied."""
    _check_compatible(finetuned, base, "base")
    out: StateDict = {}
    for name, tuned in finetuned.items():
        if is_mergeable(tuned):
            out[name] = (tuned.detach() - base[name].detach().to(tuned.device)).to(tuned.dtype)
        else:
            out[name] = tuned.detach().clone()
    return out


def add_scaled(base: Mapping[str, Tensor], tv: Mapping[str, Tensor], scale: float = 1.0,
               masks: Masks | None = None) -> StateDict:
    """θ₀ + λ·τ on masked float entries, θ₀ + τ on unmasked ones; non-float entries from ``tv``."""
    scale = _check_finite_scalar(scale, "scale")
    _check_compatible(base, tv, "tv")
    check_masks(base, masks)
    out: StateDict = {}
    for name, start in base.items():
        vector = tv[name].detach()
        if not is_mergeable(start):
            out[name] = vector.clone()
            continue
        start = start.detach()
        vector = vector.to(device=start.device, dtype=start.dtype)
        scaled = torch.add(start, vector, alpha=scale)
        mask = _mask_for(masks, name, start)
        out[name] = scaled if mask is None else torch.where(mask, scaled, start + vector)
    return out


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], weight_b: float,
                masks: Masks | None = None) -> StateDict:
    """(1 − w)·a + w·b on masked float entries, ``b`` elsewhere (``b`` is the newest state).

    ``torch.lerp`` is used, which is exact at w = 0 and w = 1.
    """
    weight_b = _check_finite_scalar(weight_b, "weight_b")
    _check_compatible(b, a, "a")
    check_masks(b, masks)
    out: StateDict = {}
    for name, newest in b.items():
        newest = newest.detach()
        if not is_mergeable(newest):
            out[name] = newest.clone()
            continue
        older = a[name].detach().to(device=newest.device, dtype=newest.dtype)
        mixed = torch.lerp(older, newest, weight_b)
        mask = _mask_for(masks, name, newest)
        out[name] = mixed if mask is None else torch.where(mask, mixed, newest)
    return out


def average(states: Sequence[Mapping[str, Tensor]],
            weights: Sequence[float] | None = None) -> StateDict:
    """Σ_i w_i·s_i / Σ_i w_i on float entries (uniform weights by default).

    Weights must be finite, non-negative, and not all zero; they are normalised to sum to 1.
    Sums are accumulated in float64, then cast to the newest (last) state's dtype; non-float
    entries come from the last state.
    """
    _check_states(states, "states")
    if weights is None:
        weights = [1.0] * len(states)
    if len(weights) != len(states):
        raise ValueError(f"weights has {len(weights)} entries for {len(states)} states")
    checked = [_check_finite_scalar(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if any(w < 0 for w in checked):
        raise ValueError(f"weights must be non-negative, got {list(weights)}")
    total_weight = sum(checked)
    if total_weight == 0:
        raise ValueError(f"weights sum to zero: {list(weights)}")
    newest = states[-1]
    out: StateDict = {}
    for name, last in newest.items():
        last = last.detach()
        if not is_mergeable(last):
            out[name] = last.clone()
            continue
        accumulator = torch.zeros(last.shape, dtype=torch.float64, device=last.device)
        for weight, state in zip(checked, states):
            if weight != 0:
                accumulator.add_(state[name].detach().to(last.device, torch.float64),
                                 alpha=weight / total_weight)
        out[name] = accumulator.to(last.dtype)
    return out


# --------------------------------------------------------------------------------------------
# MagMax


def max_magnitude(task_vectors: Sequence[Mapping[str, Tensor]]) -> StateDict:
    """Element-wise entry of largest |τ| over ``task_vectors``; ties go to the later task.

    List form (stacks all task vectors per tensor): the streaming fold's oracle and baseline.
    Non-float entries come from the last task vector.
    """
    _check_states(task_vectors, "task_vectors")
    out: StateDict = {}
    for name, last in task_vectors[-1].items():
        if not is_mergeable(last):
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
    _check_compatible(running, new_tv, "new_tv")
    currents: list[Tensor] = []
    incomings: list[Tensor] = []
    for name, current in running.items():
        incoming = new_tv[name].detach().to(device=current.device, dtype=current.dtype)
        if not is_mergeable(current):
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


class MaxMagnitudeAccumulator:
    """Streaming MagMax: holds one running τ_MM, never a list of task vectors.

    ``add(tv)`` folds one more task vector in (the first is copied); ``result`` is the held
    running dict itself (not a copy: treat it as read-only, or :func:`clone_state` it).
    ``backend`` is passed to :func:`max_magnitude_fold_`.
    """

    def __init__(self, backend: FoldBackend = "auto") -> None:
        _check_fold_backend(backend, "MaxMagnitudeAccumulator")
        self.backend = backend
        self._running: StateDict | None = None
        self._count = 0

    def add(self, tv: Mapping[str, Tensor]) -> None:
        """Fold task vector ``tv`` into the running selection (ties go to ``tv``)."""
        if self._running is None:
            self._running = clone_state(tv)
        else:
            max_magnitude_fold_(self._running, tv, backend=self.backend)
        self._count += 1

    @property
    def count(self) -> int:
        """Number of task vectors folded in so far."""
        return self._count

    @property
    def result(self) -> StateDict:
        """The running τ_MM (the held dict; do not modify)."""
        if self._running is None:
            raise ValueError("MaxMagnitudeAccumulator.result: no task vector has been added")
        return self._running

    @property
    def nbytes(self) -> int:
        """Bytes held by the running τ_MM."""
        return 0 if self._running is None else state_nbytes(self._running)


# --------------------------------------------------------------------------------------------
# P&M


def _clip_alpha(numerator: float, denominator: float) -> float:
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        raise ValueError(f"P&M alpha: non-finite sums (numerator {numerator}, "
                         f"denominator {denominator}); check the states and Fishers for NaN/inf")
    if denominator == 0.0:
        return 1.0
    return min(1.0, max(0.0, numerator / denominator))


def pnm_alpha(prev: Mapping[str, Tensor], delta: Mapping[str, Tensor],
              optima: Sequence[Mapping[str, Tensor]], fishers: Sequence[Mapping[str, Tensor]],
              masks: Masks | None = None) -> float:
    """P&M merge coefficient in the paper's stored-list form (oracle for :class:`PnMStatistics`).

    α = −Σ_i Σ_k F_{i,k}(θ̂_{t−1,k} − θ*_{i,k})Δ_k / Σ_i Σ_k F_{i,k}Δ_k², over the masked
    entries of the entries each Fisher covers; clipped to [0, 1]; 1.0 if the denominator is 0.
    Accumulated in float64. ``prev`` = θ̂_{t−1}, ``delta`` = Δ_t = θ*_t − θ̂_{t−1},
    ``optima[i]`` = θ*_i and ``fishers[i]`` = F_i for i ≤ t (so the i = t term is included).
    """
    _check_compatible(prev, delta, "delta")
    check_masks(prev, masks)
    if len(optima) != len(fishers):
        raise ValueError(f"got {len(optima)} optima but {len(fishers)} Fishers")
    if len(optima) == 0:
        raise ValueError("pnm_alpha needs at least one (optimum, Fisher) pair, got none")
    for i, (optimum, fisher) in enumerate(zip(optima, fishers)):
        _check_fishers(prev, fisher, f"fishers[{i}]")
        for name in fisher:
            if name not in optimum or optimum[name].shape != prev[name].shape:
                raise ValueError(f"optima[{i}] lacks entry {name!r} (or its shape differs)")
    numerator = 0.0
    denominator = 0.0
    for optimum, fisher in zip(optima, fishers):
        for name, fisher_values in fisher.items():
            device = fisher_values.device
            mask = _mask_for(masks, name, fisher_values)
            f = _selected_float64(fisher_values, mask)
            d = _selected_float64(delta[name].to(device), mask)
            start = _selected_float64(prev[name].to(device), mask)
            optimum_values = _selected_float64(optimum[name].to(device), mask)
            numerator += float((f * (optimum_values - start) * d).sum())
            denominator += float((f * d * d).sum())
    return _clip_alpha(numerator, denominator)


class PnMStatistics:
    """Constant-memory P&M statistics: running ``S = Σ_i F_i`` and ``M = Σ_i F_i ⊙ θ*_i``.

    Two float32 tensors per Fisher-covered entry whatever the number of tasks. Then
    numerator = Σ_k Δ_k(M_k − θ̂_{t−1,k}S_k), denominator = Σ_k Δ_k² S_k (sums in float64 over
    the masked entries), which equals :func:`pnm_alpha`'s stored-list form exactly in exact
    arithmetic. All entries covered by the Fisher are stored; masks apply at :meth:`alpha` time
    (an entry unmasked at task t, e.g. a head row of a new class, is masked at later tasks).
    """

    def __init__(self) -> None:
        self._fisher_sum: StateDict = {}
        self._weighted_optimum_sum: StateDict = {}
        self._num_tasks = 0

    @property
    def num_tasks(self) -> int:
        """Number of (optimum, Fisher) pairs added."""
        return self._num_tasks

    @property
    def names(self) -> list[str]:
        """Entry names covered by the statistics."""
        return list(self._fisher_sum)

    @property
    def fisher_sum(self) -> Mapping[str, Tensor]:
        """S = Σ_i F_i (held tensors; do not modify)."""
        return self._fisher_sum

    @property
    def weighted_optimum_sum(self) -> Mapping[str, Tensor]:
        """M = Σ_i F_i ⊙ θ*_i (held tensors; do not modify)."""
        return self._weighted_optimum_sum

    @property
    def nbytes(self) -> int:
        """Bytes held by S and M."""
        return state_nbytes(self._fisher_sum) + state_nbytes(self._weighted_optimum_sum)

    def add_task(self, optimum: Mapping[str, Tensor], fisher: Mapping[str, Tensor]) -> None:
        """Add task i's optimum θ*_i and diagonal Fisher F_i (same entry names every task)."""
        if len(fisher) == 0:
            raise ValueError("PnMStatistics.add_task: the Fisher is empty")
        _check_fishers(optimum, fisher, "fisher")
        if self._num_tasks and set(fisher) != set(self._fisher_sum):
            raise ValueError(
                "PnMStatistics.add_task: Fisher entries differ from earlier tasks' "
                f"(new {sorted(set(fisher) - set(self._fisher_sum))[:5]}, "
                f"missing {sorted(set(self._fisher_sum) - set(fisher))[:5]})"
            )
        for name, fisher_values in fisher.items():
            f = fisher_values.detach().to(torch.float64)
            weighted = f * optimum[name].detach().to(f.device, torch.float64)
            if name in self._fisher_sum:
                s, m = self._fisher_sum[name], self._weighted_optimum_sum[name]
                s.copy_(s.to(torch.float64) + f.to(s.device))
                m.copy_(m.to(torch.float64) + weighted.to(m.device))
            else:
                self._fisher_sum[name] = f.to(torch.float32)
                self._weighted_optimum_sum[name] = weighted.to(torch.float32)
        self._num_tasks += 1

    def alpha(self, prev: Mapping[str, Tensor], delta: Mapping[str, Tensor],
              masks: Masks | None = None) -> float:
        """α_t from the running sums, clipped to [0, 1]; 1.0 if the denominator is 0."""
        if self._num_tasks == 0:
            raise ValueError("PnMStatistics.alpha: no task added yet")
        _check_compatible(prev, delta, "delta")
        check_masks(prev, masks)
        for name, s in self._fisher_sum.items():
            if name not in prev or prev[name].shape != s.shape or not is_mergeable(prev[name]):
                raise ValueError(f"PnMStatistics.alpha: entry {name!r} is missing from prev "
                                 "(or its shape/dtype differs)")
        numerator = 0.0
        denominator = 0.0
        for name, s in self._fisher_sum.items():
            device = s.device
            mask = _mask_for(masks, name, s)
            fisher_sum = _selected_float64(s, mask)
            weighted_sum = _selected_float64(self._weighted_optimum_sum[name], mask)
            d = _selected_float64(delta[name].to(device), mask)
            start = _selected_float64(prev[name].to(device), mask)
            numerator += float((d * (weighted_sum - start * fisher_sum)).sum())
            denominator += float((d * d * fisher_sum).sum())
        return _clip_alpha(numerator, denominator)


def pnm_merge(prev: Mapping[str, Tensor], delta: Mapping[str, Tensor], alpha: float,
              masks: Masks | None = None) -> StateDict:
    """θ̂_{t−1} + α·Δ on masked float entries, θ̂_{t−1} + Δ (= trained) on unmasked ones.

    Non-float entries come from ``delta`` (a task vector carries the trained state's).
    """
    return add_scaled(prev, delta, scale=alpha, masks=masks)


# --------------------------------------------------------------------------------------------
# BECAME


def became_lambda(delta: Mapping[str, Tensor], fisher_new: Mapping[str, Tensor],
                  fisher_old: Mapping[str, Tensor], masks: Masks | None = None) -> float:
    """BECAME's coefficient λ* = Σ F_t Δ² / Σ (F_t + F_old) Δ² (float64, masked entries).

    ``delta`` = θ̃ − θ_GP. λ* minimises ½λ²ΔᵀF_oldΔ + ½(1 − λ)²ΔᵀF_tΔ and lies in [0, 1].
    When the denominator is 0 the objective is identically 0 (every λ is a minimiser) and
    0.5 — the equal-weight average of the two stages — is returned. Both Fishers must cover
    the same entries.
    """
    check_masks(delta, masks)
    _check_fishers(delta, fisher_new, "fisher_new")
    _check_fishers(delta, fisher_old, "fisher_old")
    if set(fisher_new) != set(fisher_old):
        raise ValueError(
            "fisher_new and fisher_old cover different entries "
            f"({sorted(set(fisher_new) ^ set(fisher_old))[:5]})"
        )
    numerator = 0.0
    denominator = 0.0
    for name, new_values in fisher_new.items():
        device = new_values.device
        mask = _mask_for(masks, name, new_values)
        f_new = _selected_float64(new_values, mask)
        f_old = _selected_float64(fisher_old[name].to(device), mask)
        d_squared = _selected_float64(delta[name].to(device), mask).square()
        numerator += float((f_new * d_squared).sum())
        denominator += float(((f_new + f_old) * d_squared).sum())
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        raise ValueError(f"became_lambda: non-finite sums ({numerator}, {denominator})")
    if denominator == 0.0:
        return 0.5
    return min(1.0, max(0.0, numerator / denominator))


# --------------------------------------------------------------------------------------------
# DARE, TIES, random mix


def dare(tv: Mapping[str, Tensor], drop_rate: float,
         generator: torch.Generator | None = None) -> StateDict:
    """Drop each float entry with probability p (exact zero), rescale kept ones by 1/(1 − p).

    ``drop_rate`` p must be in [0, 1). Random draws use ``generator`` (on its own device, then
    moved). Non-float entries are copied.
    """
    p = _check_finite_scalar(drop_rate, "drop_rate")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    out: StateDict = {}
    for name, vector in tv.items():
        vector = vector.detach()
        if not is_mergeable(vector):
            out[name] = vector.clone()
            continue
        uniform = torch.rand(vector.shape, generator=generator, device=draw_device)
        keep = (uniform >= p).to(vector.device)
        out[name] = torch.where(keep, vector / (1.0 - p), torch.zeros((), dtype=vector.dtype,
                                                                      device=vector.device))
    return out


def _kept_count(fraction: float, numel: int) -> int:
    # round() first so that e.g. 0.7 * 10 = 7.000000000000001 keeps 7, not 8.
    return max(1, min(numel, math.ceil(round(fraction * numel, 9))))


def ties_merge(task_vectors: Sequence[Mapping[str, Tensor]], top_k: float = 0.2,
               scale: float = 1.0) -> StateDict:
    """TIES-Merging of task vectors; returns ``scale`` × the merged task vector.

    Per float tensor: (1) trim — in every task vector keep the entries whose |τ| is at least
    the k-th largest, k = ⌈top_k·numel⌉ (ties at the threshold are all kept), zero the rest;
    (2) elect — the sign of the sum of the trimmed values; (3) disjoint mean — the mean of the
    trimmed, non-zero values whose sign equals the elected sign (0 where none does, including
    where the trimmed values sum to exactly 0). Add the result to θ₀ with :func:`add_scaled`.
    Non-float entries come from the last task vector.
    """
    _check_states(task_vectors, "task_vectors")
    fraction = _check_finite_scalar(top_k, "top_k")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top_k must be in (0, 1], got {top_k!r}")
    scale = _check_finite_scalar(scale, "scale")
    out: StateDict = {}
    for name, last in task_vectors[-1].items():
        if not is_mergeable(last):
            out[name] = last.detach().clone()
            continue
        stacked = torch.stack([tv[name].detach().to(last.device, last.dtype)
                               for tv in task_vectors])
        flat = stacked.reshape(len(task_vectors), -1)
        if flat.shape[1] == 0:
            out[name] = last.detach().clone()
            continue
        magnitudes = flat.abs()
        kept = _kept_count(fraction, flat.shape[1])
        threshold = magnitudes.topk(kept, dim=1).values[:, -1:]
        trimmed = torch.where(magnitudes >= threshold, flat, torch.zeros_like(flat))
        elected_sign = torch.sign(trimmed.sum(dim=0))
        agrees = (torch.sign(trimmed) == elected_sign) & (trimmed != 0)
        agreeing_sum = torch.where(agrees, trimmed, torch.zeros_like(trimmed)).sum(dim=0)
        counts = agrees.sum(dim=0).clamp(min=1).to(flat.dtype)
        out[name] = (scale * agreeing_sum / counts).reshape(last.shape)
    return out


def random_mix(task_vectors: Sequence[Mapping[str, Tensor]],
               generator: torch.Generator | None = None) -> StateDict:
    """Every float entry taken from a task chosen uniformly at random (independently per entry).

    Non-float entries come from the last task vector.
    """
    _check_states(task_vectors, "task_vectors")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    out: StateDict = {}
    for name, last in task_vectors[-1].items():
        if not is_mergeable(last):
            out[name] = last.detach().clone()
            continue
        stacked = torch.stack([tv[name].detach().to(last.device, last.dtype)
                               for tv in task_vectors])
        choice = torch.randint(len(task_vectors), tuple(last.shape), generator=generator,
                               device=draw_device).to(last.device)
        out[name] = stacked.gather(0, choice.unsqueeze(0)).squeeze(0)
    return out

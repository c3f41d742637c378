"""Generic state-dict algebra for model merging (pure tensor maths, no Avalanche, no method rules).

Every method module owns its own rule (``methods/magmax.py`` holds MagMax's selection,
``methods/pnm.py`` P&M's coefficient, …); this module holds only what they share:

* task vectors ``τ = θ − θ_base`` — :func:`task_vector`;
* scaled adds ``θ₀ + λ·τ`` (masked) — :func:`add_scaled`;
* interpolation ``(1 − w)·a + w·b`` (masked) — :func:`interpolate`; weighted averages — :func:`average`;
* masks — :func:`check_masks`, :func:`mask_for`, :func:`masked_numel`;
* flattening a state into one vector and back — :func:`flatten_state`, :func:`unflatten_state`
  (for rules that act on the whole model at once, e.g. TIES' global trimming);
* validation helpers that name the bad value (:func:`check_compatible`, :func:`check_states`,
  :func:`check_fishers`, :func:`check_finite_scalar`).

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
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

StateDict = dict[str, Tensor]
Masks = Mapping[str, Tensor]

__all__ = [
    "StateDict",
    "Masks",
    "is_mergeable",
    "check_finite_scalar",
    "check_compatible",
    "check_states",
    "check_masks",
    "check_fishers",
    "mask_for",
    "selected_float64",
    "clone_state",
    "state_nbytes",
    "masked_numel",
    "task_vector",
    "add_scaled",
    "interpolate",
    "average",
    "flatten_state",
    "unflatten_state",
]


# --------------------------------------------------------------------------------------------
# validation helpers


def is_mergeable(t: Tensor) -> bool:
    """True for floating-point tensors (the only entries a merge touches)."""
    return bool(t.is_floating_point())


def check_finite_scalar(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a real number, got {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def check_compatible(reference: Mapping[str, Tensor], other: Mapping[str, Tensor],
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


def check_states(states: Sequence[Mapping[str, Tensor]], what: str) -> None:
    if len(states) == 0:
        raise ValueError(f"{what}: need at least one state dict, got an empty sequence")
    for index, state in enumerate(states[1:], start=1):
        check_compatible(states[0], state, f"{what}[{index}]")


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


def mask_for(masks: Masks | None, name: str, like: Tensor) -> Tensor | None:
    """The mask of ``name`` on ``like``'s device, or None for "all entries merged"."""
    if masks is None or name not in masks:
        return None
    return masks[name].to(device=like.device)


def check_fishers(reference: Mapping[str, Tensor], fisher: Mapping[str, Tensor],
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


def selected_float64(tensor: Tensor, mask: Tensor | None) -> Tensor:
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
        mask = mask_for(masks, name, tensor)
        total += tensor.numel() if mask is None else int(mask.sum())
    return total


def task_vector(finetuned: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> StateDict:
    """τ = finetuned − base on float entries; non-float entries are finetuned's, copied."""
    check_compatible(finetuned, base, "base")
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
    scale = check_finite_scalar(scale, "scale")
    check_compatible(base, tv, "tv")
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
        mask = mask_for(masks, name, start)
        out[name] = scaled if mask is None else torch.where(mask, scaled, start + vector)
    return out


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], weight_b: float,
                masks: Masks | None = None) -> StateDict:
    """(1 − w)·a + w·b on masked float entries, ``b`` elsewhere (``b`` is the newest state).

    ``torch.lerp`` is used, which is exact at w = 0 and w = 1.
    """
    weight_b = check_finite_scalar(weight_b, "weight_b")
    check_compatible(b, a, "a")
    check_masks(b, masks)
    out: StateDict = {}
    for name, newest in b.items():
        newest = newest.detach()
        if not is_mergeable(newest):
            out[name] = newest.clone()
            continue
        older = a[name].detach().to(device=newest.device, dtype=newest.dtype)
        mixed = torch.lerp(older, newest, weight_b)
        mask = mask_for(masks, name, newest)
        out[name] = mixed if mask is None else torch.where(mask, mixed, newest)
    return out


def average(states: Sequence[Mapping[str, Tensor]],
            weights: Sequence[float] | None = None) -> StateDict:
    """Σ_i w_i·s_i / Σ_i w_i on float entries (uniform weights by default).

    Weights must be finite, non-negative, and not all zero; they are normalised to sum to 1.
    Sums are accumulated in float64, then cast to the newest (last) state's dtype; non-float
    entries come from the last state.
    """
    check_states(states, "states")
    if weights is None:
        weights = [1.0] * len(states)
    if len(weights) != len(states):
        raise ValueError(f"weights has {len(weights)} entries for {len(states)} states")
    checked = [check_finite_scalar(w, f"weights[{i}]") for i, w in enumerate(weights)]
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
# flattening (rules over the whole model at once)


def flatten_state(state: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """The entries ``names`` of ``state`` flattened and concatenated, in the order given."""
    if not names:
        raise ValueError("flatten_state: no entries named")
    missing = [name for name in names if name not in state]
    if missing:
        raise ValueError(f"flatten_state: entries {missing[:5]} are not in the state")
    return torch.cat([state[name].detach().reshape(-1) for name in names])


def unflatten_state(vector: Tensor, like: Mapping[str, Tensor], names: Sequence[str]) -> StateDict:
    """Inverse of :func:`flatten_state`: views of ``vector`` shaped like ``like[name]``."""
    total = sum(like[name].numel() for name in names)
    if vector.dim() != 1 or vector.numel() != total:
        raise ValueError(f"unflatten_state: vector has shape {tuple(vector.shape)}, "
                         f"expected ({total},) for the {len(names)} entries")
    out: StateDict = {}
    offset = 0
    for name in names:
        count = like[name].numel()
        out[name] = vector[offset:offset + count].reshape(like[name].shape)
        offset += count
    return out

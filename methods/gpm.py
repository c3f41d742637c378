"""Gradient Projection Memory (Saha, Garg, Roy, "Gradient Projection Memory for Continual
Learning", ICLR 2021), as used by BECAME's stable stage (Li et al., ICML 2025).

For each projected layer the memory holds an orthonormal basis U [d_in, k] of the inputs the
layer saw on earlier tasks. During a new task the weight gradient is projected off that input
subspace,

    g ← g − g·U·Uᵀ                                              (g: [out, d_in])

so that for any old input x ∈ span(U) an SGD step W ← W − η·g leaves W·x unchanged.

Basis update (the paper's energy criterion; R = the layer's input rows stacked as columns,
[d_in, N]):

* first task: R = V·Σ·Wᵀ; keep the smallest k with Σ_{j≤k} σ_j² ≥ ε·‖R‖_F²;
* later tasks: R̂ = R − U·Uᵀ·R; with R̂'s singular values σ̂_j, add the top r left singular
  vectors of R̂, r the smallest with (‖U·Uᵀ·R‖_F² + Σ_{j≤r} σ̂_j²) ≥ ε·‖R‖_F²; then
  re-orthonormalise the new columns against U (k ≤ d_in).

(The released GPM code keeps, for the first task, the number of components whose cumulative
energy is still *below* ε — one fewer than the paper's criterion; this module follows the
paper.) Energies are computed in float64 and compared with a relative tolerance of 1e-10 so
that ε = 1 keeps exactly the numerically non-zero directions.

Layers: ``nn.Linear`` (input flattened over leading dims), ``nn.Conv2d`` with a 1×1 kernel and
groups = 1 (a Linear over channels: rows are the [N·H'·W', C_in] pixels it reads), and a peft
LoRA wrapper of either (the wrapper's input is recorded; the gradients projected are those of
the adapters' A factors — [r, d_in] or [r, d_in, 1, 1] — and of the base weight if it has one).
Biases are not projected (GPM's layers are bias-free): a trained bias changes old responses.
With LoRA, projecting A's gradient keeps ``A·x`` fixed for old x, but ``B`` still changes ``B·A·x``;
to keep the adapter's output on old inputs at zero, start each task with A off the memory
(:meth:`GradientProjector.project_lora_A_weights_`) — calling it after every optimiser step
also makes the guarantee hold for optimisers (Adam) whose steps are not the projected gradient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "collect_layer_inputs",
    "update_basis",
    "project_gradient_",
    "GradientProjector",
    "ENERGY_TOLERANCE",
]

ENERGY_TOLERANCE = 1e-10
"""Relative tolerance on cumulative energies (lets ε = 1 ignore rounding-level directions)."""

DEFAULT_MAX_SAMPLES = 125
"""GPM's representation-matrix size (125 examples per task in the original code)."""


# --------------------------------------------------------------------------------------------
# layer kinds


def _is_lora_wrapper(module: nn.Module) -> bool:
    return hasattr(module, "get_base_layer") and isinstance(getattr(module, "lora_A", None),
                                                            nn.ModuleDict)


def _base_layer(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if _is_lora_wrapper(module) else module


def _check_supported(name: str, module: nn.Module) -> nn.Module:
    """The layer whose input defines the subspace; ValueError for unsupported modules."""
    base = _base_layer(module)
    if isinstance(base, nn.Linear):
        return base
    if isinstance(base, nn.Conv2d):
        if tuple(base.kernel_size) != (1, 1) or base.groups != 1:
            raise ValueError(
                f"module {name!r}: only 1x1 convolutions with groups=1 can be projected "
                f"(got kernel_size={tuple(base.kernel_size)}, groups={base.groups})"
            )
        if base.padding_mode != "zeros" and not isinstance(base.padding, str) \
                and any(base.padding):
            raise ValueError(f"module {name!r}: padding_mode {base.padding_mode!r} with "
                             f"padding {base.padding} is not supported")
        return base
    raise ValueError(f"module {name!r}: unsupported layer type {type(base).__name__} "
                     "(Linear, 1x1 Conv2d, or a peft LoRA wrapper of either)")


def _input_rows(layer: nn.Module, inputs: Tensor) -> Tensor:
    """The layer's input as a 2-D matrix [rows, d_in] (detached)."""
    inputs = inputs.detach()
    if isinstance(layer, nn.Linear):
        return inputs.reshape(-1, layer.in_features)
    if inputs.dim() != 4:
        raise ValueError(f"a Conv2d input must be 4-D [N, C, H, W], got {tuple(inputs.shape)}")
    padding = (0, 0) if isinstance(layer.padding, str) else tuple(layer.padding)
    # A 1x1 kernel reads one pixel per output position: unfold gives exactly those pixels.
    columns = F.unfold(inputs, kernel_size=1, padding=padding, stride=layer.stride)
    return columns.transpose(1, 2).reshape(-1, layer.in_channels)


def _projected_weights(module: nn.Module) -> list[nn.Parameter]:
    """The weights whose gradients GPM projects for a registered module."""
    if _is_lora_wrapper(module):
        return [adapter.weight for adapter in module.lora_A.values()] \
            + [module.get_base_layer().weight]
    return [module.weight]


# --------------------------------------------------------------------------------------------
# activations


def collect_layer_inputs(model: nn.Module, modules: Mapping[str, nn.Module],
                         batches: Iterable[object],
                         max_samples: int | None = DEFAULT_MAX_SAMPLES) -> dict[str, Tensor]:
    """Forward ``batches`` (no grad, current train/eval mode) and capture each module's input.

    Args:
        model: the network to run.
        modules: {name: module inside ``model``} — Linear, 1x1 Conv2d, or LoRA wrappers.
        batches: iterable of x or (x, y, ...) batches; only x is used.
        max_samples: forward at most this many samples (None = all).

    Returns:
        {name: [rows, d_in] tensor}: Linear inputs flattened over leading dims; 1x1 conv inputs
        as the [N·H'·W', C_in] pixels the kernel reads.
    """
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
    if not modules:
        raise ValueError("modules is empty")
    layers = {name: _check_supported(name, module) for name, module in modules.items()}
    captured: dict[str, list[Tensor]] = {name: [] for name in modules}

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs = args[0] if args else next(iter(kwargs.values()))
            captured[name].append(_input_rows(layers[name], inputs))
        return hook

    handles = [module.register_forward_pre_hook(make_hook(name), with_kwargs=True)
               for name, module in modules.items()]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_samples is not None and seen >= max_samples:
                    break
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                if max_samples is not None:
                    inputs = inputs[: max_samples - seen]
                if inputs.shape[0] == 0:
                    continue
                seen += inputs.shape[0]
                model(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
    if seen == 0:
        raise ValueError("batches yielded no samples")
    missing = [name for name, rows in captured.items() if not rows]
    if missing:
        raise ValueError(f"modules {missing[:5]} were not called by the model's forward")
    return {name: torch.cat(rows, dim=0) for name, rows in captured.items()}


# --------------------------------------------------------------------------------------------
# basis


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    return value


def _needed(cumulative: Tensor, target: float) -> int:
    """Smallest count r ≥ 1 with cumulative[r − 1] ≥ target (len(cumulative) if none)."""
    below = int((cumulative < target).sum())
    return min(below + 1, cumulative.numel())


def update_basis(basis: Tensor | None, activations: Tensor, threshold: float) -> Tensor:
    """GPM basis update: extend ``basis`` [d_in, k] with ``activations`` [rows, d_in].

    Returns a new orthonormal basis [d_in, k'] (k ≤ k' ≤ d_in) in ``activations``' dtype and
    device (float32 for non-float activations); the old columns are kept unchanged.
    ``basis`` None (or with 0 columns) is the first task. Inputs are not modified.
    """
    threshold = _check_threshold(threshold)
    if activations.dim() != 2:
        raise ValueError(f"activations must be 2-D [rows, d_in], got {tuple(activations.shape)}")
    d_in = activations.shape[1]
    dtype = activations.dtype if activations.is_floating_point() else torch.float32
    if basis is not None and (basis.dim() != 2 or basis.shape[0] != d_in):
        raise ValueError(f"basis has shape {tuple(basis.shape)}, expected [{d_in}, k]")
    representation = activations.detach().to(torch.float64).T  # [d_in, rows]
    total_energy = float(representation.square().sum())
    target = (threshold - ENERGY_TOLERANCE) * total_energy
    old = None if basis is None or basis.shape[1] == 0 else basis.detach().to(
        device=activations.device, dtype=torch.float64)
    empty = torch.zeros(d_in, 0, dtype=dtype, device=activations.device)
    if total_energy == 0.0 or (old is not None and old.shape[1] >= d_in):
        return empty if old is None else basis.detach().clone()
    if old is None:
        vectors, singular_values, _ = torch.linalg.svd(representation, full_matrices=False)
        keep = _needed(torch.cumsum(singular_values.square(), dim=0), target)
        return vectors[:, :keep].to(dtype).contiguous()
    residual = representation - old @ (old.T @ representation)
    retained_energy = total_energy - float(residual.square().sum())
    if retained_energy >= target:
        return basis.detach().clone()
    vectors, singular_values, _ = torch.linalg.svd(residual, full_matrices=False)
    cumulative = retained_energy + torch.cumsum(singular_values.square(), dim=0)
    added = min(_needed(cumulative, target), d_in - old.shape[1])
    new = vectors[:, :added]
    new = new - old @ (old.T @ new)  # remove rounding-level overlap with the old basis
    new, _ = torch.linalg.qr(new)
    return torch.cat([basis.detach().to(device=activations.device, dtype=dtype),
                      new.to(dtype)], dim=1)


def project_gradient_(grad: Tensor, basis: Tensor) -> Tensor:
    """In place: g ← g − g·U·Uᵀ along the input dimension; returns ``grad``.

    ``grad`` is a Linear weight gradient [out, d_in], a 1x1 conv weight gradient
    [out, d_in, 1, 1], or a LoRA A-factor gradient ([r, d_in] or [r, d_in, 1, 1]);
    ``basis`` U is [d_in, k] with orthonormal columns.
    """
    if grad.dim() == 4:
        if tuple(grad.shape[2:]) != (1, 1):
            raise ValueError(f"only 1x1 conv gradients can be projected, got shape "
                             f"{tuple(grad.shape)}")
    elif grad.dim() != 2:
        raise ValueError(f"gradient must be [out, d_in] or [out, d_in, 1, 1], got "
                         f"{tuple(grad.shape)}")
    if basis.dim() != 2 or basis.shape[0] != grad.shape[1]:
        raise ValueError(f"basis shape {tuple(basis.shape)} does not match the gradient's "
                         f"input dimension {grad.shape[1]}")
    if basis.shape[1] == 0:
        return grad
    matrix = grad.flatten(1)
    u = basis.to(device=grad.device, dtype=grad.dtype)
    grad.sub_(((matrix @ u) @ u.T).view_as(grad))
    return grad


# --------------------------------------------------------------------------------------------
# memory


class GradientProjector:
    """GPM memory: one input-subspace basis per registered module name.

    Usage per task: ``register(model, names)`` once; after every ``loss.backward()`` call
    ``project_(model)`` (before the optimiser step); at the end of the task call
    ``extend(model, batches, threshold)`` to add the task's input subspace.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._bases: dict[str, Tensor] = {}

    @property
    def module_names(self) -> tuple[str, ...]:
        """Registered module names."""
        return tuple(self._names)

    @property
    def bases(self) -> Mapping[str, Tensor]:
        """Read-only view {module name: basis [d_in, k]} (modules without a basis yet absent)."""
        return MappingProxyType(self._bases)

    @property
    def nbytes(self) -> int:
        """Bytes held by the bases."""
        return sum(b.numel() * b.element_size() for b in self._bases.values())

    def dimensions(self) -> dict[str, int]:
        """{module name: k}, the size of each stored subspace (0 before the first extend)."""
        return {name: (self._bases[name].shape[1] if name in self._bases else 0)
                for name in self._names}

    def _modules(self, model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
        available = dict(model.named_modules())
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ValueError(f"modules {unknown[:5]} are not in the model")
        modules = {name: available[name] for name in names}
        for name, module in modules.items():
            _check_supported(name, module)
        return modules

    def register(self, model: nn.Module, names: Iterable[str]) -> None:
        """Add modules (by ``model.named_modules()`` name) to project; ValueError if unsupported."""
        if isinstance(names, str):
            raise ValueError(f"names must be an iterable of module names, not the string {names!r}")
        names = list(names)
        if not names:
            raise ValueError(f"names must be a non-empty iterable of module names, got {names!r}")
        self._modules(model, names)
        for name in names:
            if name not in self._names:
                self._names.append(name)

    def extend(self, model: nn.Module, batches: Iterable[object],
               threshold: float | Mapping[str, float], *,
               max_samples: int | None = DEFAULT_MAX_SAMPLES) -> dict[str, int]:
        """Add the current task's input subspace of every registered module; returns {name: k}.

        ``threshold`` ε is one float or {module name: ε}. Forwards without grad in the model's
        current mode (callers put it in eval).
        """
        if not self._names:
            raise ValueError("GradientProjector.extend: no module registered")
        if isinstance(threshold, Mapping):
            missing = [name for name in self._names if name not in threshold]
            if missing:
                raise ValueError(f"threshold mapping lacks modules {missing[:5]}")
            thresholds = {name: _check_threshold(threshold[name]) for name in self._names}
        else:
            thresholds = dict.fromkeys(self._names, _check_threshold(threshold))
        activations = collect_layer_inputs(model, self._modules(model, self._names), batches,
                                           max_samples=max_samples)
        for name in self._names:
            self._bases[name] = update_basis(self._bases.get(name), activations[name],
                                             thresholds[name])
        return self.dimensions()

    def project_(self, model: nn.Module) -> None:
        """In place: project the ``.grad`` of every registered module's weights off its basis.

        For a LoRA wrapper: every adapter's A factor (and the base weight if it has a grad).
        Weights without ``.grad`` are skipped.
        """
        modules = self._modules(model, [n for n in self._names if n in self._bases])
        for name, module in modules.items():
            for weight in _projected_weights(module):
                if weight.grad is not None:
                    project_gradient_(weight.grad, self._bases[name])

    def project_lora_A_weights_(self, model: nn.Module) -> None:
        """In place: A ← A − A·U·Uᵀ for the LoRA A factors of registered LoRA wrappers.

        Makes the adapter's output on old inputs (in span U) exactly zero — call it when a
        fresh adapter is started and, with optimisers other than plain SGD, after each step.
        Non-LoRA modules are skipped (projecting a dense weight would change old responses).
        """
        modules = self._modules(model, [n for n in self._names if n in self._bases])
        with torch.no_grad():
            for name, module in modules.items():
                if _is_lora_wrapper(module):
                    for adapter in module.lora_A.values():
                        project_gradient_(adapter.weight.data, self._bases[name])

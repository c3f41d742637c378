"""Float32 matrix products on the CPU by oneDNN: the products torch's ``@`` computes, by the
other kernel library torch ships.

torch computes a float32 ``a @ b`` (and ``F.linear``) on the CPU with MKL's sgemm. oneDNN,
which torch already uses for convolutions, has its own matrix-product kernels, reached through
``torch.ops.mkldnn._linear_pointwise`` (the operator torch's compiler emits for frozen linear
layers). On this project's 2-core AMD EPYC (AVX-512) they run the shapes this project multiplies
about twice as fast as MKL's (about 250 against 112 GFLOP/s on one thread; in results/perf.md a
training step takes about 0.8x and a DOP layer merge about 0.6x their time with MKL,
``6.step_cost.onednn`` and ``2.dop.onednn``). Setting ``MKL_ENABLE_INSTRUCTIONS=AVX512`` did not change MKL's figure there. The
choice is fixed, not measured per machine, so that a machine always computes the same numbers;
on a CPU where MKL is the faster library, :func:`torch_matmul` switches back, and results/perf.md
shows the ratio a ``make bench`` measures on that machine.

Not bit-identical to ``@``: the same products, summed in another order, so results differ at
float rounding (tests/methods/test_matmul.py compares against ``@`` and against autograd).
Deterministic: the same inputs give the same bits on the same machine.

Where oneDNN does not apply, torch's own operation runs: another dtype or device, tensors that
are not 2-D, an empty product (a zero dimension), oneDNN missing from the torch build, and under
``torch.func`` transforms (``vmap(grad(...))`` in :mod:`mergecl.methods.fisher`), which have no
rule for the oneDNN operator. Differentiable to any order: the backward pass is made of the same products
(TRM differentiates through a gradient norm).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_enabled = True


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its linear operator, and tells when ``torch.func``
    transforms are active (where the operator has no rule, so torch's own operation runs)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch._C, "_are_functorch_transforms_active"))


_AVAILABLE = onednn_available()


def uses_onednn() -> bool:
    """Whether :func:`linear` and :func:`matmul` run oneDNN now (available and not switched off)."""
    return _AVAILABLE and _enabled


@contextmanager
def torch_matmul() -> Iterator[None]:
    """Within the block, :func:`linear` and :func:`matmul` run torch's own ``F.linear`` / ``@``
    (to time oneDNN against them, or on a CPU where MKL is faster)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _Linear(torch.autograd.Function):
    """x·Wᵀ + b by oneDNN; the backward pass takes the same products (so it is differentiable
    again): ∂x = g·W, ∂W = gᵀ·x, ∂b = Σ_rows g."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = linear(grad, weight.T) if needs_x else None
        grad_weight = linear(grad.T, x.T) if needs_weight else None
        grad_bias = grad.sum(dim=0) if needs_bias else None
        return grad_x, grad_weight, grad_bias


def _runs_onednn(*tensors: Tensor | None) -> bool:
    if not uses_onednn() or torch._C._are_functorch_transforms_active():
        return False
    return all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu"
                             and t.layout == torch.strided) for t in tensors)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` = x·Wᵀ + b for a 2-D ``x`` (N×in) and ``weight`` (out×in),
    by oneDNN where it applies (module docstring); any other input goes to ``F.linear``."""
    if (x.dim() != 2 or weight.dim() != 2 or 0 in x.shape or 0 in weight.shape
            or not _runs_onednn(x, weight, bias)):  # oneDNN has no primitive for an empty product
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D ``a`` (m×k) and ``b`` (k×n), by oneDNN where it applies."""
    if a.dim() != 2 or b.dim() != 2:
        return torch.matmul(a, b)
    return linear(a, b.T)

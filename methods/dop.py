"""DOP — dual orthogonal projection for data-free continual merging (post hoc).

"Continual Model Merging without Data: Dual Projections for Balancing Stability and
Plasticity", NeurIPS 2025 (OpenReview zD5cUX67b9); reference implementation FusionBench
``fusion_bench/method/dop/dop.py`` (learned from, not copied; tests/methods/test_dop.py checks
equality with it).

Training (a trajectory, :mod:`mergecl.methods.posthoc`): sequential fine-tuning from θ*_{t−1}.
θ̂_0 = θ*_0. At task t ≥ 1 the previous merged model (input 0, W₀ᵐ) and the new model
(input 1, W₁ᵐ) are merged weight matrix by weight matrix:

* for each input i, the task vector T_i = W_i − W_pre is decomposed, T_i = U_i S_i V_iᵀ, and its
  leading r_i singular triplets are kept, r_i = the number of singular values before the
  cumulative share cumsum(S)/ΣS first reaches ε (``svd_epsilon``; ``searchsorted``);
* with Δ_i = W − W_i, the loss of input i is the energy of Δ_i in both singular subspaces of T_i,
      L_i(W) = ‖diag(S_i)·U_iᵀ·Δ_i‖²_F + ‖Δ_i·V_i·diag(S_i)‖²_F      (``svd_proj_space: uv``)
  (``u`` or ``v`` keep one of the two terms);
* W starts at the average (W₀ᵐ + W₁ᵐ)/2 and minimises c₀·L₀ + c₁·L₁ by Adam (``lr``,
  ``num_steps``). With ``mgda: true`` the weights are, at every step, the min-norm point of the
  convex hull of the two gradients after dividing each by its loss (MGDA, Sener & Koltun 2018;
  closed form for two objectives, with the reference's 0.999 / 0.001 clamps), smoothed by an
  exponential moving average started at (α, 1 − α) with rate β (``ema``, ``ema_beta``);
  without MGDA they are fixed at (α, 1 − α).
* Every other parameter (biases, normalisation) is the plain average of the two inputs.

Defaults and their sources (FusionBench ``dop.yaml``): lr = 1e-4, num_steps = 200, mgda = true,
α = 0.8, ema = true, β = 0.999, ε = 0.99999, svd_proj_space = uv.

Where the reference is silent or differs, and why:
* Convolutions: the reference optimises ``nn.Linear`` weights only and averages everything else
  (CLIP's patch embedding included). By default (``conv: matrix``) a convolution kernel
  out × in × k × k is optimised as the out × (in·k·k) matrix — EfficientNet's weights are
  convolutions, and a 1×1 one is a linear map over channels; ``conv: average`` follows the
  reference.
* The head is taken as trained (``head: trained``; in the reference it is a frozen text head).
* A weight a task did not change (T_i = 0; e.g. with very few steps, or a weight outside the
  adapted set) has an empty subspace (rank 0) and a zero loss; the reference would divide that
  zero gradient by the zero loss (0/0 → NaN, and the whole merge turns NaN). Here a gradient
  whose loss is 0 is left undivided (zero). With CLIP-scale fine-tuning the case never arises,
  so the results are the reference's wherever it is defined.

Memory: W_pre (θ₀), the previous merged model and the new one; the SVD factors of one layer at
a time. Cost: ``num_steps`` Adam steps per weight matrix and task, each with the two losses'
gradients in closed form (the reference takes three autograd backward passes a step), each side
by the cheaper of its factor and its projector (:func:`cheaper_projectors`; equal up to
rounding), the products by oneDNN (:mod:`mergecl.methods.matmul`; equal up to rounding), MGDA's
inner products divided by the losses instead of the gradients (the same quantities), and torch's
fused Adam kernel (the default form's update, equal up to rounding).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from mergecl.methods import merging
from mergecl.methods.base import MERGE_COEFFICIENT, tunable
from mergecl.methods.matmul import matmul
from mergecl.methods.merging import StateDict
from mergecl.methods.posthoc import AnchoredMerge, AnchoredMergeParams
from pydantic import Field
from torch import Tensor

ProjectionSpace = Literal["uv", "u", "v"]


def leading_subspace(task_vector: Tensor, epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
    """(U_r, S_r, V_r): the singular triplets kept before cumsum(S)/ΣS first reaches ε.

    A zero task vector (a weight this task did not change) has an empty subspace (rank 0)."""
    u, s, vh = torch.linalg.svd(task_vector, full_matrices=False)  # rank ≤ min(m, n): the reduced SVD holds every kept triplet
    v = vh.T
    if not bool(s.sum() > 0):
        return u[:, :0], s[:0], v[:, :0]
    share = s.cumsum(dim=0) / s.sum()
    rank = int(torch.searchsorted(share, min(1.0, epsilon)).item())
    return u[:, :rank], s[:rank], v[:, :rank]


def projection_loss(delta: Tensor, u: Tensor, s: Tensor, v: Tensor, space: ProjectionSpace = "uv") -> Tensor:
    """‖diag(S)·Uᵀ·Δ‖²_F + ‖Δ·V·diag(S)‖²_F (or one of the two)."""
    left = torch.linalg.matrix_norm(torch.diag(s) @ u.T @ delta, ord="fro") ** 2
    right = torch.linalg.matrix_norm(delta @ v @ torch.diag(s), ord="fro") ** 2
    if space == "uv":
        return left + right
    return left if space == "u" else right


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a∘b in one pass (a BLAS dot of the flattened tensors)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def min_norm_weights(g0: Tensor, g1: Tensor) -> tuple[float, float]:
    """The weights (c, 1 − c) of the min-norm point c·g0 + (1 − c)·g1 of the segment [g0, g1]
    (MGDA's two-objective closed form, with the reference's 0.999 / 0.001 clamps; the
    arithmetic in the gradients' precision, as the reference does it)."""
    return min_norm_weights_of_products(_dot(g0, g0), _dot(g0, g1), _dot(g1, g1))


def min_norm_weights_of_products(v11: Tensor, v12: Tensor, v22: Tensor) -> tuple[float, float]:
    """:func:`min_norm_weights` from the inner products v11 = ⟨g0, g0⟩, v12 = ⟨g0, g1⟩,
    v22 = ⟨g1, g1⟩."""
    if v12 >= v11:
        return 0.999, 1 - 0.999
    if v12 >= v22:
        return 0.001, 1 - 0.001
    c = -1.0 * ((v12 - v22) / (v11 + v22 - 2 * v12))
    return float(c), float(1 - c)


def cheaper_projectors(factors: tuple[Tensor, Tensor],
                       shape: tuple[int, int]) -> tuple[Tensor | None, Tensor | None]:
    """Per side, the product that makes the gradient cheaper, or None to keep the factor.

    With Δ m×n and r kept triplets, the left term's gradient A·(Aᵀ·Δ) takes two r·m·n products
    and (A·Aᵀ)·Δ one m·m·n product; the right term's (Δ·B)·Bᵀ two r·m·n and Δ·(B·Bᵀ) one
    m·n·n. So the m×m A·Aᵀ is formed when m < 2r, the n×n B·Bᵀ when n < 2r. For the tall
    matrices of a convolutional backbone (m = 1152, n = 192, r ≈ n) this saves a quarter of the
    products; for a square matrix of full rank it saves half. Once per merge, not per step."""
    a, b = factors
    rows, columns = shape
    rank = a.shape[1]
    left = matmul(a, a.T) if 0 < rank and rows < 2 * rank else None
    right = matmul(b, b.T) if 0 < rank and columns < 2 * rank else None
    return left, right


def projection_loss_and_gradient(delta: Tensor, factors: tuple[Tensor, Tensor],
                                 space: ProjectionSpace = "uv",
                                 projectors: tuple[Tensor | None, Tensor | None] = (None, None),
                                 ) -> tuple[Tensor, Tensor]:
    """(L, ∇_Δ L) of :func:`projection_loss` in closed form, with A = U·diag(S), B = V·diag(S):

        L = ‖Aᵀ·Δ‖²_F + ‖Δ·B‖²_F,      ∇_Δ L = 2·A·(Aᵀ·Δ) + 2·(Δ·B)·Bᵀ

    (the loss is a quadratic form in Δ). Four r·m·n products per call, where autograd's forward
    and backward take about twelve; equal to autograd (tests/methods/test_dop.py). A side whose
    ``projectors`` entry is given (P = A·Aᵀ, Q = B·Bᵀ; :func:`cheaper_projectors`) takes
    L = Σ Δ∘(P·Δ), ∇ = 2·P·Δ (and Σ Δ∘(Δ·Q), 2·Δ·Q) instead: the same quantities in one product."""
    a, b = factors
    left_projector, right_projector = projectors
    terms = []  # (L_side, ½·∇_side) per side
    if space in ("uv", "u"):
        if left_projector is not None:
            projected = matmul(left_projector, delta)
            terms.append((_dot(delta, projected), projected))
        else:
            left = matmul(a.T, delta)
            terms.append((_dot(left, left), matmul(a, left)))
    if space in ("uv", "v"):
        if right_projector is not None:
            projected = matmul(delta, right_projector)
            terms.append((_dot(delta, projected), projected))
        else:
            right = matmul(delta, b)
            terms.append((_dot(right, right), matmul(right, b.T)))
    if not terms:
        return delta.new_zeros(()), torch.zeros_like(delta)
    if len(terms) == 1:
        loss, half_gradient = terms[0]
        return loss, 2 * half_gradient
    (left_loss, left_half), (right_loss, right_half) = terms
    return left_loss + right_loss, left_half.add_(right_half).mul_(2)


def _fused_adam(parameter: Tensor) -> bool:
    """Torch's fused Adam kernel (the default form's update, equal up to rounding, in one pass)
    where torch has it: float32 on the CPU."""
    return parameter.device.type == "cpu" and parameter.dtype == torch.float32


def dop_merge_matrix(pretrained: Tensor, inputs: tuple[Tensor, Tensor], *, lr: float = 1e-4,
                     num_steps: int = 200, mgda: bool = True, ema: bool = True,
                     ema_beta: float = 0.999, alpha: float = 0.8, epsilon: float = 0.99999,
                     space: ProjectionSpace = "uv") -> tuple[Tensor, list[float]]:
    """DOP's merge of one weight matrix; returns it and the final weights (c₀, c₁).

    The reference differentiates the two losses by autograd (three backward passes a step:
    each loss for MGDA, then the weighted sum); the losses are quadratic forms, so each step
    here takes their gradients in closed form (:func:`projection_loss_and_gradient`) and hands
    Adam the weighted sum c₀·∇L₀ + c₁·∇L₁ — the same update, without autograd."""
    weights = [alpha, 1.0 - alpha]
    if torch.equal(inputs[0], inputs[1]):
        # the two models agree (a weight no task changed, e.g. in a frozen block): the start
        # (W + W)/2 = W is each loss's minimum, every gradient is exactly 0 and Adam leaves W
        # unchanged; only the MGDA weights move, towards min_norm_weights(0, 0) = (0.999, 0.001)
        if mgda:
            zero = inputs[0].new_zeros(())
            solution = list(min_norm_weights(zero, zero))
            for _ in range(num_steps):
                weights = ([ema_beta * w + (1 - ema_beta) * x for w, x in zip(weights, solution)]
                           if ema else solution)
        return inputs[0].clone(), weights
    subspaces = [leading_subspace(w - pretrained, epsilon) for w in inputs]
    factors = [(u * s, v * s) for u, s, v in subspaces]
    projectors = [cheaper_projectors(pair, tuple(pretrained.shape)) for pair in factors]
    merged = torch.nn.Parameter((inputs[0] + inputs[1]) / 2)
    optimiser = torch.optim.Adam([merged], lr=lr, fused=_fused_adam(merged))
    for _ in range(num_steps):
        losses, grads = zip(*(projection_loss_and_gradient(merged.data - target, pair, space, sides)
                              for target, pair, sides in zip(inputs, factors, projectors)))
        if mgda:
            # the reference normalises each gradient by its loss before MGDA; here the inner
            # products of the unscaled gradients are divided instead (⟨g0/L0, g1/L1⟩ =
            # ⟨g0, g1⟩/(L0·L1): the same quantities without two scaled copies). A zero loss (the
            # merge already inside that task's subspace constraint, or an empty subspace)
            # leaves its gradient undivided instead of 0/0
            scales = [float(loss) if float(loss) > 0 else 1.0 for loss in losses]
            solution = list(min_norm_weights_of_products(
                _dot(grads[0], grads[0]) / (scales[0] * scales[0]),
                _dot(grads[0], grads[1]) / (scales[0] * scales[1]),
                _dot(grads[1], grads[1]) / (scales[1] * scales[1])))
            if ema:
                weights = [ema_beta * w + (1 - ema_beta) * float(x) for w, x in zip(weights, solution)]
            else:
                weights = solution
        merged.grad = grads[0].mul_(weights[0]).add_(grads[1], alpha=weights[1])
        optimiser.step()
    return merged.detach(), weights


class DOPParams(AnchoredMergeParams):
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="Adam learning rate per layer")
    num_steps: int = tunable(200, [50, 100, 200, 400], ge=1, le=100_000,
                             description="Adam steps per weight matrix and task")
    mgda: bool = Field(True, description="balance the two losses by MGDA (else fixed α, 1 − α)")
    alpha: float = tunable(0.8, [0.2, 0.5, 0.8, 0.95], ge=0.0, le=1.0,
                           description="weight of the previous merged model (MGDA: the EMA's start)")
    ema: bool = True
    ema_beta: float = Field(0.999, ge=0.0, le=1.0)
    svd_epsilon: float = Field(0.99999, ge=0.0, le=1.0, description="singular-value share kept")
    svd_proj_space: ProjectionSpace = "uv"
    conv: Literal["matrix", "average"] = Field(
        "matrix", description="matrix: optimise conv kernels as out × in·k·k; average: the reference")


class DOP(AnchoredMerge):
    name = "dop"
    paper = "DOP, NeurIPS 2025, OpenReview zD5cUX67b9 (FusionBench ContinualDOPForCLIP)"
    Params = DOPParams

    def __init__(self, params: DOPParams, context: Any) -> None:
        super().__init__(params, context)
        self.merged_tv: StateDict | None = None
        self._last_weights: list[float] = []

    def combine(self, task_vector: StateDict, task: int) -> tuple[StateDict, float]:
        if self.merged_tv is None:
            self.merged_tv = merging.clone_state(task_vector)
            return self.merged_tv, 1.0
        assert self.pretrained_state is not None
        p = self.params
        merged: StateDict = {}
        weights = []
        for name, tau in task_vector.items():  # in weight space, as the reference computes
            base = self.pretrained_state[name]
            previous, new = base + self.merged_tv[name], base + tau
            matrix = name.endswith("weight") and (tau.dim() == 2 or (p.conv == "matrix" and tau.dim() > 2))
            if not matrix:
                merged[name] = (previous + new) / 2 - base
                continue
            shape = tau.shape
            out, layer_weights = dop_merge_matrix(
                base.reshape(shape[0], -1), (previous.reshape(shape[0], -1), new.reshape(shape[0], -1)),
                lr=p.lr, num_steps=p.num_steps, mgda=p.mgda, ema=p.ema, ema_beta=p.ema_beta,
                alpha=p.alpha, epsilon=p.svd_epsilon, space=p.svd_proj_space)
            merged[name] = out.reshape(shape) - base
            weights.append(layer_weights[1])
        self.merged_tv = merged
        self._last_weights = weights
        return merged, 1.0

    def merge_diagnostics(self) -> dict[str, Any]:
        if not self._last_weights:
            return {MERGE_COEFFICIENT: 1.0}
        mean_new = sum(self._last_weights) / len(self._last_weights)
        return {MERGE_COEFFICIENT: mean_new, "dop_layers": len(self._last_weights)}

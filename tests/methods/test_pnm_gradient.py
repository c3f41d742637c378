"""P&M's stage-1 gradient (mergecl.methods.pnm): the gradient left in ``.grad`` after one step is
the derivative of L(θ + s·Δ(θ)), Δ(θ) = θ − θ̂ (θ̂ constant), in the full and LoRA
parameterisations — against autograd — and, on a quadratic, its mean over the three draws is
∇L + (2ε²/3)·H·Δ. Head rows of classes new in the task are not perturbed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lifecycle import make_space
from mergecl.methods.base import head_masks
from mergecl.methods.parameterisation import FullSpace, LoraSpace
from mergecl.methods.pnm import PerturbAndMerge, PnMParams
from torch import nn
from torch.func import functional_call

EPS = 0.5
TASK = 1  # classes 2, 3 are new: their head rows are not perturbed


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(16, 4, generator=g), torch.tensor([2, 3] * 8)


def _start(space, plugin, previous_merged):
    plugin.task = TASK
    plugin.start_state = previous_merged
    plugin.on_task_start(SimpleNamespace(model=space.model))


def _assert_grads_close(actual: dict, expected: dict) -> None:
    for name, want in expected.items():
        got = actual[name]
        scale = float(want.abs().max()) + 1e-12
        assert float((got - want).abs().max()) <= 1e-5 * scale, (name, got, want)


def _plugin_step(plugin, model, s, x, y):
    plugin._draw = lambda: s
    for p in model.parameters():
        p.grad = None
    plugin.before_forward(None)
    nn.functional.cross_entropy(model(x), y).backward()
    plugin.after_backward(None)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("s", [0.0, EPS, -EPS])
@pytest.mark.parametrize("gradient", ["chain", "stopgrad"])
def test_full_gradient_is_the_derivative_of_the_perturbed_loss(s, gradient):
    model, space, ctx = make_space(seed=4)
    with torch.no_grad():  # a trained-looking head: every row non-zero
        model.fc.weight.normal_()
        model.fc.bias.normal_()
    theta = space.effective_state()
    previous = {n: v - 0.3 * torch.randn_like(v) for n, v in theta.items()}  # θ̂_{t-1}
    plugin = PerturbAndMerge(PnMParams(epsilon=EPS, gradient=gradient), ctx)
    _start(space, plugin, previous)
    masks = head_masks(space, ctx, TASK)
    x, y = _data()

    leaves = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    perturbed = {}
    for n, v in leaves.items():
        shift = s * (v - previous[n])  # Δ(θ) depends on θ: autograd sees the chain rule
        if gradient == "stopgrad":
            shift = shift.detach()
        if n in masks:
            shift = shift * masks[n]
        perturbed[n] = v + shift
    loss = nn.functional.cross_entropy(functional_call(model, perturbed, (x,)), y)
    expected = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))

    actual = _plugin_step(plugin, model, s, x, y)
    _assert_grads_close(actual, expected)
    for n, p in model.named_parameters():  # θ is back in place, untouched
        assert torch.equal(p.detach(), theta[n]), n
    if s != 0.0:  # new-class head rows: the gradient at θ, unscaled
        assert torch.allclose(actual["fc.weight"][2:], expected["fc.weight"][2:])


@pytest.mark.parametrize("s", [0.0, EPS, -EPS])
def test_lora_gradient_is_the_derivative_of_the_perturbed_loss(s):
    torch.manual_seed(5)
    model, _, ctx = make_space(seed=5)
    space = LoraSpace(model, ["body"], rank=2, alpha=4.0)
    ctx = ctx.model_copy(update={"space": space})
    with torch.no_grad():
        model.fc.weight.normal_()
        model.fc.bias.normal_()
    previous = space.effective_state()  # θ̂: base weights (fresh adapter), head
    with torch.no_grad():  # "trained" so far: the adapter and the head have moved
        space.lora_layers["body"].lora_B["default"].weight.normal_()
        model.fc.weight.add_(0.3 * torch.randn_like(model.fc.weight))
    plugin = PerturbAndMerge(PnMParams(epsilon=EPS), ctx)
    plugin.task = TASK
    plugin.start_state = previous
    plugin.on_task_start(SimpleNamespace(model=model))
    masks = head_masks(space, ctx, TASK)
    x, y = _data()

    layer = space.lora_layers["body"]
    a = layer.lora_A["default"].weight.detach().clone().requires_grad_(True)
    b = layer.lora_B["default"].weight.detach().clone().requires_grad_(True)
    head = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()
            if n in space.head_names}
    scaling = layer.scaling["default"]
    base = layer.base_layer.weight.detach()
    effective = base + (b @ a) * scaling
    params = {"body.base_layer.weight": effective + s * (effective - previous["body.base_layer.weight"]),
              "body.lora_B.default.weight": torch.zeros_like(b)}
    for n, v in head.items():
        params[n] = v + s * (v - previous[n]) * masks[n]
    loss = nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    names = ["body.lora_A.default.weight", "body.lora_B.default.weight", *head]
    expected = dict(zip(names, torch.autograd.grad(loss, [a, b, *head.values()])))

    actual = _plugin_step(plugin, model, s, x, y)
    _assert_grads_close(actual, expected)
    assert layer.scaling["default"] == scaling  # the adapter scale is restored


class Quadratic(nn.Module):
    """L(θ) = ½(θ − c)ᵀH(θ − c) over one vector parameter (no head)."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(dim, generator=generator))
        root = torch.randn(dim, dim, generator=generator)
        self.register_buffer("hessian", root @ root.T + torch.eye(dim))
        self.register_buffer("centre", torch.randn(dim, generator=generator))

    def loss(self) -> torch.Tensor:
        d = self.theta - self.centre
        return 0.5 * d @ self.hessian @ d


def test_mean_gradient_over_the_three_draws_is_the_curvature_regularised_gradient():
    g = torch.Generator().manual_seed(7)
    model = Quadratic(6, g)
    space = FullSpace(model)
    _, _, ctx = make_space()
    ctx = ctx.model_copy(update={"space": space})
    previous = {"theta": model.theta.detach() - torch.randn(6, generator=g)}
    plugin = PerturbAndMerge(PnMParams(epsilon=EPS), ctx)
    plugin.task = 0
    plugin.start_state = previous
    plugin.on_task_start(SimpleNamespace(model=model))
    mean = torch.zeros(6)
    for s in (0.0, EPS, -EPS):
        plugin._draw = lambda s=s: s
        model.theta.grad = None
        plugin.before_forward(None)
        model.loss().backward()
        plugin.after_backward(None)
        mean += model.theta.grad / 3
    theta = model.theta.detach()
    delta = theta - previous["theta"]
    gradient = model.hessian @ (theta - model.centre)
    expected = gradient + (2 * EPS**2 / 3) * model.hessian @ delta
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)
    # without the chain rule the regulariser's gradient is lost
    plugin_stop = PerturbAndMerge(PnMParams(epsilon=EPS, gradient="stopgrad"), ctx)
    plugin_stop.task, plugin_stop.start_state = 0, previous
    plugin_stop.on_task_start(SimpleNamespace(model=model))
    stop_mean = torch.zeros(6)
    for s in (0.0, EPS, -EPS):
        plugin_stop._draw = lambda s=s: s
        model.theta.grad = None
        plugin_stop.before_forward(None)
        model.loss().backward()
        plugin_stop.after_backward(None)
        stop_mean += model.theta.grad / 3
    torch.testing.assert_close(stop_mean, gradient, rtol=1e-5, atol=1e-5)

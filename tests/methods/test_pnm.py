"""P&M plugin: the perturbation costs no extra pass, restores the weights exactly, takes the
gradient at θ + s·Δ; α is fitted over exactly the entries the merge scales."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import quick_run
from mergecl.methods import merging
from mergecl.methods.base import MethodContext, head_masks
from mergecl.methods.parameterisation import FullSpace
from mergecl.methods.pnm import PerturbAndMerge, PnMParams
from torch import nn


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.fc = nn.Linear(3, 4)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(torch.tanh(self.body(x)))


def _plugin(model, **params):
    space = FullSpace(model)
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                        scenario="class-incremental")
    plugin = PerturbAndMerge(PnMParams(**params), ctx)
    plugin.start_state = {n: v - 0.1 for n, v in space.effective_state().items()}  # θ̂_{t-1} ≠ θ
    plugin.on_task_start(SimpleNamespace(model=model))
    return plugin, space


@pytest.mark.parametrize("s", [0.5, -0.5])
def test_gradient_is_taken_at_the_perturbed_point_and_weights_are_restored(s):
    torch.manual_seed(0)
    model = TinyClassifier()
    plugin, space = _plugin(model)
    plugin._draw = lambda: s
    x, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    storage = {n: p.data_ptr() for n, p in model.named_parameters()}

    # reference: gradient at θ + s(θ − θ̂)
    reference = TinyClassifier()
    with torch.no_grad():
        for (n, p), q in zip(model.named_parameters(), reference.parameters()):
            q.copy_(p + s * (p - plugin.start_state[n]))
    nn.functional.cross_entropy(reference(x), y).backward()

    plugin.before_forward(None)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    plugin.after_backward(None)
    for (n, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p.detach(), before[n]), n  # restored exactly
        assert p.data_ptr() == storage[n], n  # the parameter points at θ's own storage again
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n

    # the optimiser then steps θ (not θ + sΔ) with that gradient
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for (n, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.detach(), before[n] - 0.1 * q.grad, atol=1e-6), n


def test_no_perturbation_when_s_is_zero():
    model = TinyClassifier()
    plugin, _ = _plugin(model)
    plugin._draw = lambda: 0.0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plugin.before_forward(None)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        PnMParams(p_zero=0.5, p_plus=0.5, p_minus=0.5)


def test_alpha_fit_set_is_the_scaled_set():
    """The head rows of new classes are unmasked: they neither enter α nor get scaled."""
    torch.manual_seed(1)
    model = TinyClassifier()
    space = FullSpace(model)
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                        scenario="class-incremental")
    masks = head_masks(space, ctx, task=1)
    assert masks["fc.weight"][2:].eq(False).all() and masks["fc.weight"][:2].all()
    prev = space.effective_state()
    trained = {n: v + torch.randn_like(v) for n, v in prev.items()}
    fisher = {n: torch.rand_like(v) for n, v in prev.items()}
    delta = merging.task_vector(trained, prev)
    alpha = merging.pnm_alpha(prev, delta, [trained], [fisher], masks=masks)
    merged = merging.pnm_merge(prev, delta, alpha, masks=masks)
    # new-class rows are the trained ones, old ones scaled by α
    assert torch.equal(merged["fc.weight"][2:], trained["fc.weight"][2:])
    assert torch.allclose(merged["fc.weight"][:2], prev["fc.weight"][:2] + alpha * delta["fc.weight"][:2])
    # changing only the unmasked entries does not change α
    perturbed = {n: v.clone() for n, v in trained.items()}
    perturbed["fc.weight"][2:] += 100.0
    delta2 = merging.task_vector(perturbed, prev)
    assert merging.pnm_alpha(prev, delta2, [perturbed], [fisher], masks=masks) == pytest.approx(alpha, abs=1e-12)


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
def test_one_forward_per_training_step(parameterisation, monkeypatch):
    """P&M's perturbation adds no forward pass: forward calls during training == steps."""
    import mergecl.bench.orchestration.runner as runner
    from avalanche.core import SupervisedPlugin

    counts = {"forward_in_steps": 0, "steps": 0}

    class StepCounter(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kw):
            self.hook = strategy.model.register_forward_hook(
                lambda *a: counts.__setitem__("forward_in_steps", counts["forward_in_steps"] + 1))

        def after_training_iteration(self, strategy, **kw):
            self.hook.remove()
            counts["steps"] += 1

    original = PerturbAndMerge.extra_plugins
    monkeypatch.setattr(PerturbAndMerge, "extra_plugins", lambda self: [*original(self), StepCounter()])
    record = quick_run("pnm", parameterisation=parameterisation, **{"params": {"p_zero": 0.0, "p_plus": 1.0, "p_minus": 0.0}})
    assert record["status"] == "ok"
    assert counts["steps"] == record["timings"]["train_steps"] > 0
    assert counts["forward_in_steps"] == counts["steps"]
    assert all(t["perturbed_steps"] == t["steps"] for t in record["diagnostics"]["per_task"])
    assert runner  # imported for monkeypatch visibility


@pytest.mark.e2e
def test_constant_memory_and_list_statistics_agree_in_a_run():
    constant = quick_run("pnm", params={"stats": "constant"})
    stored = quick_run("pnm", params={"stats": "list"})
    a = [t["alpha"] for t in constant["diagnostics"]["per_task"]]
    b = [t["alpha"] for t in stored["diagnostics"]["per_task"]]
    assert a == pytest.approx(b, abs=1e-6)
    assert constant["acc_matrix"] == stored["acc_matrix"]

"""DOP (mergecl.methods.dop): the projection loss and MGDA by hand, and equality with
FusionBench's ContinualDOPForCLIP (the reference implementation, a test-only dependency)."""

from __future__ import annotations

import pytest
import torch
from dop_reference import autograd_dop_merge_matrix
from fusionbench_oracle import linear_models, run, state
from lifecycle import make_space, simulate
from mergecl.methods import merging
from mergecl.methods.dop import (
    DOP,
    DOPParams,
    dop_merge_matrix,
    leading_subspace,
    min_norm_weights,
    projection_loss,
    projection_loss_and_gradient,
)


def test_projection_loss_by_hand():
    u, s, v = torch.eye(2), torch.tensor([2.0, 1.0]), torch.eye(2)
    delta = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    # ‖diag(s) Uᵀ Δ‖² = 4·1 + 1·9 = 13 and ‖Δ V diag(s)‖² = 13
    assert float(projection_loss(delta, u, s, v)) == pytest.approx(26.0)
    assert float(projection_loss(delta, u, s, v, "u")) == pytest.approx(13.0)


def test_leading_subspace_keeps_the_values_before_the_share_is_reached():
    task = torch.diag(torch.tensor([3.0, 1.0, 0.0]))  # shares 0.75, 1.0, 1.0
    u, s, v = leading_subspace(task, 0.9)
    assert s.tolist() == [3.0] and u.shape == (3, 1) and v.shape == (3, 1)
    assert len(leading_subspace(task, 1.0)[1]) == 1  # searchsorted: the first value reaching 1.0


def test_a_weight_a_task_did_not_change_merges_to_finite_values():
    """A zero task vector has an empty subspace and a zero loss; the loss-normalised MGDA
    gradient must not become 0/0 (it did: NaN weights in end-to-end runs)."""
    assert leading_subspace(torch.zeros(3, 2), 0.99)[1].numel() == 0
    base = torch.zeros(3, 2)
    changed = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    for inputs in ((base, changed), (changed, base), (base, base)):
        merged, weights = dop_merge_matrix(base, inputs, num_steps=5, lr=1e-2)
        assert torch.isfinite(merged).all() and all(w == w for w in weights)
    merged, _ = dop_merge_matrix(base, (base, base), num_steps=5, lr=1e-2)
    assert torch.equal(merged, base)  # nothing changed: nothing moves


@pytest.mark.parametrize("space", ["uv", "u", "v"])
def test_closed_form_gradient_equals_autograd(space):
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    u, s, v = leading_subspace(torch.randn(5, 7, generator=generator, dtype=torch.float64), 0.9)
    leaf = delta.clone().requires_grad_(True)
    expected = projection_loss(leaf, u, s, v, space)
    expected.backward()
    loss, gradient = projection_loss_and_gradient(delta, (u * s, v * s), space)
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(gradient, leaf.grad)


@pytest.mark.parametrize(("mgda", "ema", "space"), [(True, True, "uv"), (True, False, "u"),
                                                    (False, True, "v"), (True, True, "v")])
def test_merge_equals_the_autograd_loop(mgda, ema, space):
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    inputs = tuple(base + 0.1 * torch.randn(6, 9, generator=generator, dtype=torch.float64)
                   for _ in range(2))
    options = dict(lr=1e-2, num_steps=30, mgda=mgda, ema=ema, ema_beta=0.9, alpha=0.7,
                   epsilon=0.95, space=space)
    fast, fast_weights = dop_merge_matrix(base, inputs, **options)
    slow, slow_weights = autograd_dop_merge_matrix(base, inputs, **options)
    assert not torch.equal(fast, (inputs[0] + inputs[1]) / 2)  # the steps moved it
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    assert fast_weights == pytest.approx(slow_weights, rel=1e-9)


@pytest.mark.parametrize(("mgda", "ema"), [(True, True), (True, False), (False, True)])
def test_a_weight_both_models_share_takes_the_shortcut_exactly(mgda, ema):
    """Equal inputs (a frozen weight) return at once; the result and the MGDA weights are the
    slow loop's, bit for bit."""
    generator = torch.Generator().manual_seed(2)
    base = torch.randn(4, 6, generator=generator)
    shared = base + 0.1 * torch.randn(4, 6, generator=generator)
    options = dict(lr=1e-2, num_steps=25, mgda=mgda, ema=ema, ema_beta=0.9, alpha=0.7,
                   epsilon=0.99, space="uv")
    fast, fast_weights = dop_merge_matrix(base, (shared, shared.clone()), **options)
    slow, slow_weights = autograd_dop_merge_matrix(base, (shared, shared.clone()), **options)
    assert torch.equal(fast, shared) and torch.equal(slow, shared)
    assert fast_weights == slow_weights


def test_min_norm_weights_by_hand():
    g0, g1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert min_norm_weights(g0, g1) == pytest.approx((0.5, 0.5))  # the midpoint is closest to 0
    assert min_norm_weights(g0, 3 * g0) == (0.999, pytest.approx(0.001))  # g1 dominates g0
    assert min_norm_weights(3 * g0, g0)[0] == 0.001


@pytest.mark.parametrize("mgda", [True, False])
def test_equals_fusionbench_dop(mgda):
    from fusion_bench.method.dop.dop import ContinualDOPForCLIP

    pretrained, models = linear_models(3, seed=3)
    options = dict(lr=1e-3, num_steps=40, mgda=mgda, ema=True, ema_beta=0.99, alpha=0.8,
                   svd_epsilon=0.999, svd_proj_space="uv")
    reference = run(ContinualDOPForCLIP(seed=0, shuffle_order=False, save_on_every_step=False,
                                        evaluate_on_every_step=False, **options), pretrained, models)
    base = state(pretrained)
    merged = state(models[0])
    for model in models[1:]:
        new = state(model)
        out = {}
        for name in merged:
            if name.endswith("weight"):
                out[name], _ = dop_merge_matrix(
                    base[name], (merged[name], new[name]), lr=options["lr"], num_steps=options["num_steps"],
                    mgda=mgda, ema=True, ema_beta=0.99, alpha=0.8, epsilon=0.999, space="uv")
            else:
                out[name] = (merged[name] + new[name]) / 2
        merged = out
    for name, value in reference.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-5, msg=name)


def test_plugin_averages_biases_and_keeps_the_head_as_trained():
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    runs = simulate(DOP(DOPParams(num_steps=5), ctx), space, 2)
    taus = [merging.task_vector(runs[i]["trained"], pretrained) for i in range(2)]
    torch.testing.assert_close(runs[1]["merged"]["body.bias"] - pretrained["body.bias"],
                               (taus[0]["body.bias"] + taus[1]["body.bias"]) / 2)
    torch.testing.assert_close(runs[1]["merged"]["fc.weight"][:2], runs[0]["trained"]["fc.weight"][:2])
    assert 0.0 <= runs[1]["diagnostics"]["merge_coefficient"] <= 1.0


def test_bad_step_count_is_refused_naming_the_range():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="num_steps"):
        DOPParams(num_steps=0)
    with pytest.raises(ValidationError, match="alpha"):
        DOPParams(alpha=1.5)

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
    _fused_adam,
    cheaper_projectors,
    dop_merge_matrix,
    leading_subspace,
    min_norm_weights,
    min_norm_weights_of_products,
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
    assert len(leading_subspace(task, 1.5)[1]) == 1  # ε above 1 is read as 1 (not "keep all")


def test_a_zero_task_vector_has_an_empty_subspace_in_all_three_factors():
    u, s, v = leading_subspace(torch.zeros(3, 2), 0.99)
    assert u.shape == (3, 0) and s.shape == (0,) and v.shape == (2, 0)


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


@pytest.mark.parametrize(("shape", "epsilon", "expected"), [
    ((40, 6), 1.0, (False, True)),    # tall, full rank: n = 6 < 2r, m = 40 ≥ 2r
    ((6, 40), 1.0, (True, False)),    # wide: the mirror image
    ((12, 12), 1.0, (True, True)),    # square, full rank: both sides
    ((40, 6), 0.5, (False, False)),   # a low rank keeps both factors
])
def test_cheaper_projectors_pick_the_side_by_the_product_count(shape, epsilon, expected):
    generator = torch.Generator().manual_seed(6)
    task = torch.randn(*shape, generator=generator, dtype=torch.float64)
    u, s, v = leading_subspace(task, epsilon)
    rows, columns = shape
    left, right = cheaper_projectors((u * s, v * s), shape)
    assert (left is not None, right is not None) == expected
    assert (left is not None) == (rows < 2 * len(s)) and (right is not None) == (columns < 2 * len(s))
    if left is not None:
        torch.testing.assert_close(left, (u * s) @ (u * s).T)
    if right is not None:
        torch.testing.assert_close(right, (v * s) @ (v * s).T)
    empty = leading_subspace(torch.zeros(*shape, dtype=torch.float64), 0.9)
    assert cheaper_projectors((empty[0] * empty[1], empty[2] * empty[1]), shape) == (None, None)


@pytest.mark.parametrize(("rows", "columns", "rank", "expected"), [
    (6, 40, 3, (False, False)),   # m = 2r exactly: two r·m·n products cost what one m·m·n does
    (5, 40, 3, (True, False)),    # m = 2r − 1: the projector
    (40, 6, 3, (False, False)),   # n = 2r
    (40, 5, 3, (False, True)),    # n = 2r − 1
    (1, 5, 1, (True, False)),     # rank 1: a 1×1 projector on the left
    (5, 1, 1, (False, True)),
])
def test_cheaper_projectors_at_the_break_even_point(rows, columns, rank, expected):
    """The choice depends on the factors' shapes only: the projector when strictly cheaper."""
    a, b = torch.ones(rows, rank), torch.ones(columns, rank)
    left, right = cheaper_projectors((a, b), (rows, columns))
    assert (left is not None, right is not None) == expected
    assert left is None or left.shape == (rows, rows)
    assert right is None or right.shape == (columns, columns)


@pytest.mark.parametrize("space", ["uv", "u", "v"])
@pytest.mark.parametrize("shape", [(40, 6), (6, 40), (12, 12)])
def test_projector_form_equals_the_factor_form_and_autograd(space, shape):
    generator = torch.Generator().manual_seed(7)
    delta = torch.randn(*shape, generator=generator, dtype=torch.float64)
    u, s, v = leading_subspace(torch.randn(*shape, generator=generator, dtype=torch.float64), 1.0)
    factors = (u * s, v * s)
    projectors = cheaper_projectors(factors, shape)
    assert any(side is not None for side in projectors)
    leaf = delta.clone().requires_grad_(True)
    expected = projection_loss(leaf, u, s, v, space)
    expected.backward()
    for sides in ((None, None), projectors):
        loss, gradient = projection_loss_and_gradient(delta, factors, space, sides)
        torch.testing.assert_close(loss, expected.detach())
        torch.testing.assert_close(gradient, leaf.grad)


def test_closed_form_default_space_is_uv():
    generator = torch.Generator().manual_seed(3)
    delta = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    u, s, v = leading_subspace(torch.randn(4, 3, generator=generator, dtype=torch.float64), 0.9)
    default = projection_loss_and_gradient(delta, (u * s, v * s))
    both = projection_loss_and_gradient(delta, (u * s, v * s), "uv")
    assert float(default[0]) > 0 and torch.equal(default[0], both[0])
    assert torch.equal(default[1], both[1])


def test_merge_defaults_are_the_params_defaults():
    """dop_merge_matrix's keyword defaults are DOPParams' (FusionBench's dop.yaml)."""
    p = DOPParams()
    generator = torch.Generator().manual_seed(4)
    base = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    inputs = tuple(base + 0.1 * torch.randn(3, 4, generator=generator, dtype=torch.float64)
                   for _ in range(2))
    default, default_weights = dop_merge_matrix(base, inputs)
    explicit, explicit_weights = dop_merge_matrix(
        base, inputs, lr=p.lr, num_steps=p.num_steps, mgda=p.mgda, ema=p.ema,
        ema_beta=p.ema_beta, alpha=p.alpha, epsilon=p.svd_epsilon, space=p.svd_proj_space)
    assert torch.equal(default, explicit) and default_weights == explicit_weights
    # and ε: the leading singular value's share is 1 − 1e-6, reached by ε = 0.99999 (rank 0,
    # nothing kept: the average stays) but not by ε = 1 (rank 1: the steps move it)
    tiny = (torch.diag(torch.tensor([1.0, 1e-6], dtype=torch.float64)),
            torch.diag(torch.tensor([-1.0, 1e-6], dtype=torch.float64)))
    zero = torch.zeros(2, 2, dtype=torch.float64)
    average = (tiny[0] + tiny[1]) / 2
    assert torch.equal(dop_merge_matrix(zero, tiny, num_steps=3)[0], average)
    assert not torch.equal(dop_merge_matrix(zero, tiny, num_steps=3, epsilon=1.0)[0], average)


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
    assert min_norm_weights(3 * g0, g0) == (0.001, pytest.approx(0.999))


def test_fused_adam_where_torch_has_it():
    assert _fused_adam(torch.zeros(2, dtype=torch.float32))
    assert not _fused_adam(torch.zeros(2, dtype=torch.float64))
    assert not _fused_adam(torch.zeros(2, dtype=torch.float32, device="meta"))


def test_min_norm_weights_of_products_by_hand():
    """g0 = (3, 0), g1 = (1, 2): v11 = 9, v12 = 3, v22 = 5; c = (v22 − v12)/(v11 + v22 − 2·v12)
    = 2/8, and the merge divides the products by the losses instead of the gradients."""
    g0, g1 = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 2.0])
    assert min_norm_weights(g0, g1) == pytest.approx((0.25, 0.75))
    products = (torch.tensor(9.0), torch.tensor(3.0), torch.tensor(5.0))
    assert min_norm_weights_of_products(*products) == pytest.approx((0.25, 0.75))
    losses = (2.0, 0.5)
    scaled = min_norm_weights(g0 / losses[0], g1 / losses[1])
    by_products = min_norm_weights_of_products(products[0] / losses[0] ** 2,
                                               products[1] / (losses[0] * losses[1]),
                                               products[2] / losses[1] ** 2)
    assert by_products == pytest.approx(scaled)


def test_min_norm_weights_clamp_at_the_ties():
    """The clamps include equality (the reference's ``>=``): at v12 = v11 the closed form
    would give c = 1, at v12 = v22 it would give c = 0; the clamps give 0.999 and 0.001."""
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])  # a·b = a·a = 1, b·b = 2
    assert min_norm_weights(a, b) == (0.999, pytest.approx(0.001))
    assert min_norm_weights(b, a) == (0.001, pytest.approx(0.999))


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
    # the first task has nothing to merge with: θ̂_0 = θ₀ + τ_0 = θ*_0 (scale 1)
    for name, value in runs[0]["merged"].items():
        torch.testing.assert_close(value, runs[0]["trained"][name], msg=name)


def test_bad_step_count_is_refused_naming_the_range():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="num_steps"):
        DOPParams(num_steps=0)
    with pytest.raises(ValidationError, match="alpha"):
        DOPParams(alpha=1.5)


@pytest.mark.parametrize(("conv", "matrices"), [
    ("matrix", ["fc.weight", "conv.weight", "conv1d.weight"]),
    ("average", ["fc.weight"]),
])
def test_combine_merges_weight_matrices_by_dop_and_averages_the_rest(conv, matrices):
    """Entry by entry, in weight space: a 2-D ``…weight`` (and, under ``conv: matrix``, a
    kernel of more dims as its out × rest matrix) by dop_merge_matrix, exactly; everything
    else (biases, 1-D norm weights, a 2-D entry not named ``…weight``) the plain average."""
    _, _, ctx = make_space()
    g = torch.Generator().manual_seed(5)
    shapes = {"fc.bias": (3,), "fc.weight": (3, 4), "norm.weight": (3,), "conv.weight": (3, 2, 1, 1),
              "conv1d.weight": (3, 2, 2), "proj": (3, 4)}
    pretrained = {n: torch.randn(shape, generator=g) for n, shape in shapes.items()}
    taus = [{n: 0.1 * torch.randn(shape, generator=g) for n, shape in shapes.items()} for _ in range(2)]
    params = DOPParams(num_steps=5, lr=1e-2, conv=conv)
    plugin = DOP(params, ctx)
    plugin.pretrained_state = pretrained
    first, scale = plugin.combine(taus[0], 0)  # the first task: τ_0 itself (a copy), scale 1
    assert scale == 1.0 and first is not taus[0] and all(torch.equal(first[n], taus[0][n]) for n in shapes)
    assert plugin.merge_diagnostics() == {"merge_coefficient": 1.0}
    merged, scale = plugin.combine(taus[1], 1)
    assert scale == 1.0 and merged.keys() == shapes.keys()
    new_weights = []
    for name, shape in shapes.items():
        base = pretrained[name]
        previous, new = base + taus[0][name], base + taus[1][name]
        if name in matrices:
            out, weights = dop_merge_matrix(
                base.reshape(3, -1), (previous.reshape(3, -1), new.reshape(3, -1)), lr=1e-2,
                num_steps=5, mgda=True, ema=True, ema_beta=0.999, alpha=0.8, epsilon=0.99999,
                space="uv")
            expected = out.reshape(shape) - base
            new_weights.append(weights[1])
            assert not torch.allclose(expected, (previous + new) / 2 - base), name  # it moved
        else:
            expected = (previous + new) / 2 - base
        assert torch.equal(merged[name], expected), name
    mean_new = sum(new_weights) / len(new_weights)
    assert plugin.merge_diagnostics() == {"merge_coefficient": pytest.approx(mean_new),
                                          "dop_layers": len(matrices)}
    # the next task merges with this merge (held as τ̂_1), not with τ_0 nor from scratch
    third = {n: 0.1 * torch.randn(shape, generator=g) for n, shape in shapes.items()}
    base = pretrained["fc.bias"]
    expected = ((base + merged["fc.bias"]) + (base + third["fc.bias"])) / 2 - base
    assert torch.equal(plugin.combine(third, 2)[0]["fc.bias"], expected)

"""OPCM (mergecl.methods.opcm): the projection by hand, and equality with FusionBench's OPCM
(the reference implementation, a test-only dependency) on a model of Linear layers."""

from __future__ import annotations

import pytest
import torch
from fusionbench_oracle import linear_models, run, state
from lifecycle import displacement, make_space, simulate
from mergecl.methods import merging
from mergecl.methods.opcm import (
    OPCM,
    OPCMParams,
    is_matrix,
    opcm_update,
    project_out,
    split_rank,
    vector_norm,
)


def test_split_rank_is_the_first_index_past_the_share():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative shares 0.4, 0.7, 0.9, 1.0
    assert split_rank(s, 0.5) == 1 and split_rank(s, 0.35) == 0 and split_rank(s, 0.95) == 3
    assert split_rank(torch.zeros(3), 0.5) == 0  # no share exceeds α: nothing protected



def test_split_rank_needs_the_share_to_exceed_alpha_strictly():
    s = torch.tensor([1.0, 1.0, 2.0])  # cumulative shares 0.25, 0.5, 1.0 (exact in binary)
    assert split_rank(s, 0.5) == 2 and split_rank(s, 0.25) == 1


def test_is_matrix_takes_2d_weights_and_conv_kernels_only_under_conv_matrix():
    """First in the file on purpose: a mutated rule projects biases, which can make the
    FusionBench comparison below run for minutes instead of failing."""
    linear, conv, bias = torch.zeros(3, 2), torch.zeros(3, 2, 1, 1), torch.zeros(3)
    assert is_matrix("fc.weight", linear, "matrix") and is_matrix("fc.weight", linear, "other")
    assert is_matrix("conv.weight", conv, "matrix") and not is_matrix("conv.weight", conv, "other")
    assert is_matrix("conv1d.weight", torch.zeros(3, 2, 1), "matrix")  # any kernel of ≥ 3 dims
    assert not is_matrix("fc.weight", bias, "matrix") and not is_matrix("fc.bias", linear, "matrix")
    assert not is_matrix("ln.weight", bias, "other")

def test_projection_removes_the_merged_vectors_leading_directions():
    merged = torch.diag(torch.tensor([5.0, 1.0, 0.5]))  # U = V = I, shares 0.77, 0.92, 1.0
    task = torch.arange(9.0).reshape(3, 3) + 1
    projected = project_out(merged, task, alpha=0.5)  # share 0.77 > 0.5 at index 0: r = 0
    expected = task.clone()
    expected.diagonal().fill_(0)  # the diagonal only
    torch.testing.assert_close(projected, expected)
    projected = project_out(merged, task, alpha=0.95)  # first share > 0.95 at index 2: r = 2
    expected[:2, :2] = 0  # the leading 2×2 block too
    torch.testing.assert_close(projected, expected)


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_equals_fusionbench_opcm(alpha):
    from fusion_bench.method.opcm.opcm import OPCMForCLIP

    pretrained, models = linear_models(4, seed=int(alpha * 10))
    reference = run(OPCMForCLIP(alpha=alpha, shuffle_order=False, save_on_every_step=False), pretrained, models)
    base = state(pretrained)
    merged_tv, scale, norms = None, 1.0, []
    for model in models:
        tau = merging.task_vector(state(model), base)
        norms.append(vector_norm(tau))
        merged_tv, scale = opcm_update(merged_tv, tau, scale, norms, alpha, anchor=base)
    for name, value in reference.items():
        torch.testing.assert_close(base[name] + merged_tv[name], value, rtol=1e-5, atol=1e-5, msg=name)
    assert vector_norm(merged_tv) == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_plugin_merges_the_backbone_and_keeps_the_head_as_trained():
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    runs = simulate(OPCM(OPCMParams(alpha=0.5), ctx), space, 2)
    body = [n for n in pretrained if n not in space.head_names]
    taus = [{n: runs[i]["trained"][n] - pretrained[n] for n in body} for i in range(2)]
    merged_tv, scale, norms = None, 1.0, []
    for tau in taus:
        norms.append(vector_norm(tau))
        merged_tv, scale = opcm_update(merged_tv, tau, scale, norms, 0.5,
                                       anchor={n: pretrained[n] for n in body})
    for n in body:
        torch.testing.assert_close(runs[1]["merged"][n], pretrained[n] + merged_tv[n])
    assert runs[1]["diagnostics"]["merge_coefficient"] == pytest.approx(1 / scale)
    torch.testing.assert_close(runs[1]["merged"]["fc.weight"][2:], runs[1]["trained"]["fc.weight"][2:])


def test_bad_alpha_is_refused_naming_the_range():
    from pydantic import ValidationError

    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValidationError, match="alpha"):
            OPCMParams(alpha=bad)


def test_opcm_update_projects_conv_kernels_by_default():
    """The default ``conv`` is ``matrix``: a kernel is projected like its out × in·k·k matrix."""
    g = torch.Generator().manual_seed(2)
    first = {"conv.weight": torch.randn(3, 2, 1, 1, generator=g)}
    second = {"conv.weight": torch.randn(3, 2, 1, 1, generator=g)}
    norms = [vector_norm(first), vector_norm(second)]
    default = opcm_update(first, second, 1.0, norms, 0.5)
    as_matrix = opcm_update(first, second, 1.0, norms, 0.5, conv="matrix")
    unprojected = opcm_update(first, second, 1.0, norms, 0.5, conv="other")
    torch.testing.assert_close(default[0]["conv.weight"], as_matrix[0]["conv.weight"], rtol=0, atol=0)
    assert not torch.allclose(default[0]["conv.weight"], unprojected[0]["conv.weight"])


def test_a_zero_update_is_returned_unscaled_with_lambda_one():
    """‖τ̂‖ = 0 (nothing moved): no rescaling (it would be 0/0); the anchor is subtracted again."""
    zero = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    anchor = {"w": torch.ones(2, 2), "b": torch.full((2,), 3.0)}
    for base in (None, anchor):
        merged, scale = opcm_update(zero, zero, 1.0, [0.0, 0.0], 0.5, anchor=base)
        assert scale == 1.0
        assert all(torch.equal(merged[n], zero[n]) for n in zero)


def test_plugin_runs_the_step_in_weight_space_bit_for_bit_and_reports_its_diagnostics():
    """The plugin anchors the step at θ₀ (the reference's rounding): its merged body equals the
    anchored update exactly, not only up to rounding, and its diagnostics are λ_t and mean ‖τ_i‖."""
    classes = [[0], [1], [2], [3]]  # four tasks: the rounding of θ₀ + τ̂ − θ₀ accumulates
    _, space, ctx = make_space(seed=3, classes=classes)
    pretrained = space.effective_state()
    plugin = OPCM(OPCMParams(alpha=0.5), ctx)
    runs = simulate(plugin, space, 4, lambda t, start: {
        n: start[n] + d for n, d in displacement(space, t, classes=classes).items()})
    body = [n for n in pretrained if n not in space.head_names]
    anchor = {n: pretrained[n] for n in body}
    merged_tv, scale, norms = None, 1.0, []
    for task in runs:
        tau = {n: task["trained"][n] - pretrained[n] for n in body}
        norms.append(vector_norm(tau))
        merged_tv, scale = opcm_update(merged_tv, tau, scale, norms, 0.5, anchor=anchor)
        for n in body:
            assert torch.equal(task["merged"][n], pretrained[n] + merged_tv[n]), n
        diagnostics = task["diagnostics"]
        assert diagnostics["opcm_lambda"] == scale
        assert diagnostics["mean_task_vector_norm"] == pytest.approx(sum(norms) / len(norms))
    # the held τ̂ too: unanchored, it differs in the last bits (which θ₀ + τ̂ may round away)
    assert all(torch.equal(plugin.merged_tv[n], merged_tv[n]) for n in body)

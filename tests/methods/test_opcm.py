"""OPCM (mergecl.methods.opcm): the projection by hand, and equality with FusionBench's OPCM
(the reference implementation, a test-only dependency) on a model of Linear layers."""

from __future__ import annotations

import pytest
import torch
from fusionbench_oracle import linear_models, run, state
from lifecycle import make_space, simulate
from mergecl.methods import merging
from mergecl.methods.opcm import OPCM, OPCMParams, opcm_update, project_out, split_rank, vector_norm


def test_split_rank_is_the_first_index_past_the_share():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative shares 0.4, 0.7, 0.9, 1.0
    assert split_rank(s, 0.5) == 1 and split_rank(s, 0.35) == 0 and split_rank(s, 0.95) == 3
    assert split_rank(torch.zeros(3), 0.5) == 0  # no share exceeds α: nothing protected


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

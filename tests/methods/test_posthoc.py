"""The shared base of merges anchored at θ₀ (mergecl.methods.posthoc): the head rule.

With a zero-initialised head, θ₀ + λ·τ would scale old-class rows to λ·W* while new-class
rows stay as trained. The default ``head: trained`` takes every head row as trained by the
last task whose loss included its class — for every method on the base."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods.magmax import MagMax
from mergecl.methods.random_mix import RandomMix
from mergecl.methods.task_arithmetic import TaskArithmetic
from mergecl.methods.ties import TiesMerge

ANCHORED = [(MagMax, {}), (MagMax, {"variant": "ind"}), (TiesMerge, {}),
            (TiesMerge, {"mode": "continual"}), (RandomMix, {"lam": 0.5}),
            (TaskArithmetic, {}), (TaskArithmetic, {"lam": 0.3})]


@pytest.mark.parametrize(("cls", "params"), ANCHORED, ids=lambda v: getattr(v, "name", str(v)))
def test_every_head_row_is_the_row_its_last_training_produced(cls, params):
    _, space, ctx = make_space()
    runs = simulate(cls(cls.Params(**params), ctx), space, 2)
    merged = runs[-1]["merged"]
    for name in space.head_names:
        torch.testing.assert_close(merged[name][:2], runs[0]["trained"][name][:2], rtol=0, atol=0)
        torch.testing.assert_close(merged[name][2:], runs[1]["trained"][name][2:], rtol=0, atol=0)
    assert runs[-1]["diagnostics"]["merge_coefficient"] >= 0.0


def test_independent_training_still_takes_old_rows_from_their_own_task():
    """MagMax-Ind trains task 1 from θ₀: θ*_1's rows of task 0's classes are the zero init,
    yet the merged head keeps task 0's trained rows."""
    _, space, ctx = make_space()
    runs = simulate(MagMax(MagMax.Params(variant="ind"), ctx), space, 2)
    assert not runs[1]["trained"]["fc.weight"][:2].any()
    assert runs[1]["merged"]["fc.weight"][:2].abs().sum() > 0


def test_domain_incremental_head_is_the_last_trained():
    _, space, ctx = make_space(loss_mask="none", classes=[[0, 1, 2, 3]] * 2)
    from lifecycle import displacement

    def train(task, start):
        step = displacement(space, task, loss_mask="none", classes=[[0, 1, 2, 3]] * 2)
        return {n: start[n] + step[n] for n in start}

    runs = simulate(MagMax(MagMax.Params(), ctx), space, 2, train=train)
    for name in space.head_names:
        assert torch.equal(runs[1]["merged"][name], runs[1]["trained"][name])


def test_head_merge_ablation_scales_old_rows_and_keeps_new_rows():
    _, space, ctx = make_space()
    lam = 0.5
    runs = simulate(MagMax(MagMax.Params(lam=lam, head="merge"), ctx), space, 2)
    merged, first, second = runs[1]["merged"], runs[0]["trained"], runs[1]["trained"]
    # old rows: θ₀ + λ·τ_MM, θ₀ = 0 and task 1 does not move them: λ·W*_0
    torch.testing.assert_close(merged["fc.weight"][:2], lam * first["fc.weight"][:2])
    torch.testing.assert_close(merged["fc.weight"][2:], second["fc.weight"][2:], rtol=0, atol=0)


def test_merge_itself_takes_new_rows_as_trained_under_the_head_merge_ablation():
    """``merge`` honours the head masks by itself; the life-cycle's keep_trained_where_unmasked
    is a second guard, not the rule (case added for mutation testing, docs/mutation.md)."""
    from lifecycle import displacement
    from mergecl.methods.base import head_masks

    _, space, ctx = make_space()
    lam = 0.5
    plugin = MagMax(MagMax.Params(lam=lam, head="merge"), ctx)
    pretrained = space.effective_state()
    plugin.pretrained_state, plugin.task = pretrained, 0
    step = displacement(space, 0)
    trained = {n: pretrained[n] + step[n] for n in pretrained}
    masks = head_masks(space, ctx, 0)
    merged = plugin.merge(trained, masks).state
    assert not masks["fc.weight"][:2].any() and masks["fc.weight"][2:].all()
    for name in pretrained:
        expected = pretrained[name] + lam * step[name]
        if name in masks:
            expected = torch.where(masks[name], expected, trained[name])
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-7)
    assert not torch.equal(merged["fc.weight"][:2], pretrained["fc.weight"][:2] + lam * step["fc.weight"][:2])

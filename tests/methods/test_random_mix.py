"""Random mix (mergecl.methods.random_mix): the list form, the reservoir fold, the plugin."""

from __future__ import annotations

import torch
from lifecycle import make_space, simulate
from mergecl.methods import merging as mg
from mergecl.methods import random_mix as rm
from state_helpers import T


def test_random_mix_takes_each_entry_from_one_input():
    g = torch.Generator().manual_seed(7)
    vectors = [{"w": torch.full((40, 5), float(i)), "n": T(i)} for i in range(3)]
    mixed = rm.random_mix(vectors, g)
    assert torch.equal(mixed["n"], T(2))
    assert set(mixed["w"].unique().tolist()) == {0.0, 1.0, 2.0}
    g2 = torch.Generator().manual_seed(8)
    distinct = [{"w": torch.randn(30, generator=g2)} for _ in range(4)]
    mixed = rm.random_mix(distinct, g)["w"]
    stacked = torch.stack([tv["w"] for tv in distinct])
    assert bool((stacked == mixed).any(dim=0).all())


def test_reservoir_fold_is_uniform_over_the_tasks():
    g = torch.Generator().manual_seed(3)
    n, tasks = 60_000, 4
    running = {"w": torch.zeros(n)}
    for t in range(1, tasks):
        rm.random_mix_fold_(running, {"w": torch.full((n,), float(t))}, t + 1, g)
    shares = torch.bincount(running["w"].long(), minlength=tasks).float() / n
    torch.testing.assert_close(shares, torch.full((tasks,), 1 / tasks), atol=0.01, rtol=0)


def test_plugin_merged_state_is_theta0_plus_lambda_times_one_task_vector_per_entry():
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    runs = simulate(rm.RandomMix(rm.RandomMixParams(lam=0.5), ctx), space, 2)
    body = [n for n in pretrained if n not in space.head_names]
    for n in body:
        mixed = (runs[1]["merged"][n] - pretrained[n]) / 0.5
        taus = torch.stack([runs[i]["trained"][n] - pretrained[n] for i in range(2)])
        assert bool(torch.isclose(taus, mixed.unsqueeze(0), atol=1e-6).any(dim=0).all()), n
    first = runs[0]["merged"]
    for n in body:
        torch.testing.assert_close(first[n], pretrained[n] + 0.5 * (runs[0]["trained"][n] - pretrained[n]))
    assert mg.state_nbytes(runs[1]["merged"]) > 0

"""Random mix (mergecl.methods.random_mix): the list form, the reservoir fold, the plugin."""

from __future__ import annotations

import pytest
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


# cases added for mutation testing (docs/mutation.md)


def test_random_mix_without_a_generator_and_with_a_non_float_entry_first():
    torch.manual_seed(0)
    vectors = [{"n": T(i), "w": torch.full((50,), float(i))} for i in range(3)]
    mixed = rm.random_mix(vectors)
    assert torch.equal(mixed["n"], T(2))
    assert set(mixed["w"].unique().tolist()) == {0.0, 1.0, 2.0}


def test_random_mix_names_the_bad_task_vector():
    with pytest.raises(ValueError, match=r"^task_vectors\[1\]: keys differ"):
        rm.random_mix([{"w": T([1.0])}, {"v": T([1.0])}])


def test_random_mix_keeps_each_entrys_shape():
    g = torch.Generator().manual_seed(1)
    vectors = [{"w": torch.randn(1, 6, generator=g), "v": torch.randn(5, generator=g)}
               for _ in range(3)]
    mixed = rm.random_mix(vectors, g)
    assert mixed["w"].shape == (1, 6) and mixed["v"].shape == (5,)


def test_fold_at_the_first_task_takes_every_entry_and_the_newest_non_float_entries():
    running = {"n": T(1), "w": T([1.0, 2.0, 3.0])}
    new = {"n": T(2), "w": T([4.0, 5.0, 6.0])}
    rm.random_mix_fold_(running, new, 1, torch.Generator().manual_seed(0))  # probability 1/1
    assert torch.equal(running["n"], T(2)) and torch.equal(running["w"], new["w"])
    with pytest.raises(ValueError, match="task_count must be >= 1"):
        rm.random_mix_fold_(running, new, 0)


def test_plugin_takes_the_second_task_with_probability_one_half():
    _, space, ctx = make_space()
    plugin = rm.RandomMix(rm.RandomMixParams(), ctx)
    n = 20_000
    plugin.combine({"w": torch.zeros(n)}, 0)
    mixed, scale = plugin.combine({"w": torch.ones(n)}, 1)
    assert scale == 1.0
    assert abs(float(mixed["w"].mean()) - 0.5) < 0.02  # 1/3 if drawn as a third task


def test_fold_takes_an_entry_iff_its_draw_is_below_one_over_t():
    """Strictly below: P(u < 1/2) = 1/2 exactly for u on the grid k·2**-24 in [0, 1)."""
    n = 1 << 21
    for seed in range(64):
        draws = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        if bool((draws == 0.5).any()):
            break
    else:
        pytest.skip("no seed below 64 draws exactly 0.5")
    running, new = {"w": torch.zeros(n)}, {"w": torch.ones(n)}
    rm.random_mix_fold_(running, new, 2, torch.Generator().manual_seed(seed))
    assert torch.equal(running["w"], (draws < 0.5).float())


def test_draws_are_made_on_the_generators_device_not_the_default_device():
    """The choice is drawn on the generator's device (CPU without one), whatever the default
    device: under a ``meta`` default, a draw left to the default device has no data to copy."""
    vectors = [{"w": torch.zeros(6)}, {"w": torch.ones(6)}]
    with torch.device("meta"):
        seeded = rm.random_mix(vectors, torch.Generator().manual_seed(3))
        unseeded = rm.random_mix(vectors)
    assert torch.equal(seeded["w"], rm.random_mix(vectors, torch.Generator().manual_seed(3))["w"])
    assert seeded["w"].device.type == "cpu" and unseeded["w"].device.type == "cpu"
    assert set(unseeded["w"].tolist()) <= {0.0, 1.0}

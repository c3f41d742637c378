"""DARE (mergecl.methods.dare): drop-and-rescale, then the continual average of Δ_t."""

from __future__ import annotations

import math

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods import dare
from state_helpers import T, assert_state_equal


def test_dare_exact_zeros_rescaling_and_unbiased():
    g = torch.Generator().manual_seed(5)
    tv = {"w": torch.randn(200, generator=g), "n": T([1, 2])}
    dropped = dare.dare(tv, 0.75, g)
    kept = dropped["w"] != 0
    assert torch.equal(dropped["n"], tv["n"])
    torch.testing.assert_close(dropped["w"][kept], tv["w"][kept] * 4)
    assert 0.15 < kept.float().mean() < 0.35
    draws = torch.stack([dare.dare(tv, 0.5, g)["w"] for _ in range(2000)])
    assert set(draws[:, 0].unique().tolist()) <= {0.0, float(tv["w"][0] * 2)}
    # the mean of 2000 draws is unbiased: standard error |w|/sqrt(2000)
    error = (draws.mean(0) - tv["w"]).abs() / tv["w"].abs().clamp(min=1e-6)
    assert float(error.max()) < 5 / math.sqrt(2000)
    assert_state_equal(dare.dare(tv, 0.0, g), tv)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="drop_rate"):
            dare.dare(tv, bad, g)


def test_plugin_merged_state_is_the_average_of_the_sparsified_update():
    _, space, ctx = make_space()
    p = 0.5
    runs = simulate(dare.DareMerge(dare.DareParams(drop_rate=p), ctx), space, 2)
    previous, run = runs[0]["merged"], runs[1]
    assert_state_equal(run["start"], previous)
    kept_total = entries = 0
    for name, value in run["merged"].items():
        delta = run["trained"][name] - previous[name]
        dropped = previous[name]
        kept = previous[name] + 0.5 * delta / (1 - p)
        ok = torch.isclose(value, dropped, atol=1e-6) | torch.isclose(value, kept, atol=1e-6)
        if name in space.head_names:  # new-class rows as trained
            ok[2:] = torch.isclose(value[2:], run["trained"][name][2:], atol=0)
        assert bool(ok.all()), name
        moved = ~torch.isclose(value, dropped, atol=1e-6)
        kept_total += int(moved.sum())
        entries += value.numel()
    assert 0.3 < kept_total / entries < 0.7
    assert run["diagnostics"]["merge_coefficient"] == 0.5


# ------------------------------------------------------------------------------------------
# cases added for mutation testing (docs/mutation.md)


def _seed_drawing(value: float, n: int) -> int:
    """A seed whose first ``torch.rand(n)`` contains ``value`` exactly (a draw is a multiple of
    2**-24, so with n = 2**21 about one seed in eight has a given value)."""
    for seed in range(64):
        if bool((torch.rand(n, generator=torch.Generator().manual_seed(seed)) == value).any()):
            return seed
    pytest.skip(f"no seed below 64 draws exactly {value}")


def test_no_entry_is_dropped_at_p_zero_even_for_a_draw_of_exactly_zero():
    """Keep iff u >= p: P(keep) = 1 − p exactly for u on the grid k·2**-24 in [0, 1)."""
    n = 1 << 21
    seed = _seed_drawing(0.0, n)
    out = dare.dare({"w": torch.ones(n)}, 0.0, torch.Generator().manual_seed(seed))
    assert torch.equal(out["w"], torch.ones(n))


def test_dare_without_a_generator_and_with_a_non_float_entry_first():
    torch.manual_seed(0)
    tv = {"n": T([1, 2]), "w": torch.ones(1000)}
    out = dare.dare(tv, 0.5)
    assert torch.equal(out["n"], tv["n"])
    assert set(out["w"].unique().tolist()) == {0.0, 2.0}
    with pytest.raises(ValueError, match=r"^drop_rate must be finite"):
        dare.dare(tv, float("inf"))


def test_draws_are_made_on_the_generators_device_not_the_default_device():
    """The uniforms are drawn on the generator's device (CPU without one), whatever the default
    device: under a ``meta`` default, a draw left to the default device has no data to copy."""
    tv = {"w": torch.ones(50)}
    with torch.device("meta"):
        seeded = dare.dare(tv, 0.5, torch.Generator().manual_seed(4))
        unseeded = dare.dare(tv, 0.5)
    assert_state_equal(seeded, dare.dare(tv, 0.5, torch.Generator().manual_seed(4)))
    assert unseeded["w"].device.type == "cpu" and set(unseeded["w"].tolist()) <= {0.0, 2.0}

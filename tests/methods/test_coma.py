"""CoMA (mergecl.methods.coma): θ̂_t = (1 − w)·θ̂_{t−1} + w·θ*_t with a fixed w (1 at t = 0)."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods.coma import CoMA, CoMAParams
from state_helpers import assert_state_equal


@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_merged_state_is_the_fixed_weight_interpolation(weight):
    _, space, ctx = make_space()
    runs = simulate(CoMA(CoMAParams(weight=weight), ctx), space, 2)
    assert_state_equal(runs[0]["merged"], runs[0]["trained"])  # w = 1 at the first task
    previous, run = runs[0]["merged"], runs[1]
    assert_state_equal(run["start"], previous)
    for name, value in run["merged"].items():
        expected = (1 - weight) * previous[name] + weight * run["trained"][name]
        if name in space.head_names:
            expected[2:] = run["trained"][name][2:]
        torch.testing.assert_close(value, expected)
    assert [r["diagnostics"]["merge_coefficient"] for r in runs] == [1.0, weight]

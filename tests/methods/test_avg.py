"""Continual model averaging (mergecl.methods.avg): θ̂_t = (1 − 1/t)·θ̂_{t−1} + (1/t)·θ*_t."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods.avg import ModelAveraging
from mergecl.methods.base import MethodParams
from state_helpers import assert_state_equal


def test_merged_state_is_the_running_mean_with_new_rows_as_trained():
    classes = [[0], [1, 2], [3]]
    _, space, ctx = make_space(classes=classes)

    def train(task, start):
        from lifecycle import displacement

        step = displacement(space, task, classes=classes)
        return {n: start[n] + step[n] for n in start}

    runs = simulate(ModelAveraging(MethodParams(), ctx), space, 3, train=train)
    for task, run in enumerate(runs):
        weight = 1.0 / (task + 1)
        previous = runs[task - 1]["merged"] if task else run["start"]
        assert_state_equal(run["start"], previous)  # trains from θ̂_{t-1}
        new_rows = torch.zeros(4, dtype=torch.bool)
        new_rows[classes[task]] = True
        for name, value in run["merged"].items():
            expected = (1 - weight) * previous[name] + weight * run["trained"][name]
            if name in space.head_names:
                expected[new_rows] = run["trained"][name][new_rows]
            torch.testing.assert_close(value, expected)
        assert run["diagnostics"]["merge_coefficient"] == pytest.approx(weight)

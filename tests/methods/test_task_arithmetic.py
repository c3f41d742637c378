"""Continual task arithmetic (mergecl.methods.task_arithmetic): θ₀ + λ_t·Σ τ_i."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods.task_arithmetic import TaskArithmetic, TaskArithmeticParams
from state_helpers import assert_state_equal


@pytest.mark.parametrize("lam", [None, 0.3])
def test_merged_state_is_theta0_plus_scaled_sum_of_task_vectors(lam):
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    runs = simulate(TaskArithmetic(TaskArithmeticParams(lam=lam), ctx), space, 2)
    body = [n for n in pretrained if n not in space.head_names]
    for task, run in enumerate(runs):
        scale = lam if lam is not None else 1.0 / (task + 1)
        total = {n: sum(runs[i]["trained"][n] - pretrained[n] for i in range(task + 1)) for n in body}
        for n in body:
            torch.testing.assert_close(run["merged"][n], pretrained[n] + scale * total[n])
        assert run["diagnostics"]["merge_coefficient"] == pytest.approx(scale)
        if task:
            assert_state_equal(run["start"], runs[task - 1]["trained"])


def test_equals_fusionbench_continual_task_arithmetic():
    from fusion_bench.method.opcm.task_arithmetic import ContinualTaskArithmeticForCLIP
    from fusionbench_oracle import linear_models, run, state
    from mergecl.methods import merging

    pretrained, models = linear_models(4, seed=5)
    reference = run(ContinualTaskArithmeticForCLIP(scaling_factor=0.3, shuffle_order=False,
                                                   save_on_every_step=False), pretrained, models)
    base = state(pretrained)
    _, _, ctx = make_space()
    plugin = TaskArithmetic(TaskArithmeticParams(lam=0.3), ctx)
    for task, model in enumerate(models):  # the plugin's fold (the c-ta alias): θ₀ + λ·Σ τ_i
        merged_tv, scale = plugin.combine(merging.task_vector(state(model), base), task)
    merged = merging.add_scaled(base, merged_tv, scale)
    for name, value in reference.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-5, msg=name)

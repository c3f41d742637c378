"""Sequential fine-tuning (mergecl.methods.seqft): the lower bound. Task t trains from θ*_{t−1}
and nothing is merged (θ̂_t = θ*_t); it is post hoc, so the harness can share its trajectory."""

from __future__ import annotations

import torch
from lifecycle import displacement, make_space, simulate
from mergecl.methods.base import MethodParams
from mergecl.methods.seqft import SeqFT


def test_each_task_starts_from_the_last_trained_state_and_is_kept_unmerged():
    _, space, ctx = make_space()
    theta0 = space.effective_state()
    tasks = simulate(SeqFT(MethodParams(), ctx), space, 2)
    for t, task in enumerate(tasks):
        assert all(torch.equal(task["merged"][n], task["trained"][n]) for n in space.names)
        previous = theta0 if t == 0 else tasks[t - 1]["trained"]
        assert all(torch.equal(task["start"][n], previous[n]) for n in space.names)
    # hand-computed: θ*_1 = θ₀ + d₀ + d₁ (the default simulated training adds displacement(t))
    _, fresh, _ = make_space()
    d0, d1 = displacement(fresh, 0), displacement(fresh, 1)
    for n in space.names:
        torch.testing.assert_close(tasks[1]["trained"][n], theta0[n] + d0[n] + d1[n], rtol=0, atol=1e-6)


def test_declarations():
    method = SeqFT(MethodParams(), make_space()[2])
    assert (method.train_from, method.plain_first_task) == ("trained", True)
    assert SeqFT.timing == "post-hoc" and SeqFT.family == "lower-bound" and not SeqFT.upper_bound

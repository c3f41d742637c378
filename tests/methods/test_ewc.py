"""EWC (mergecl.methods.ewc): Avalanche's EWCPlugin built from the params (online mode's decay
defaults to 1), range-checked params, and the penalty it adds after a real first task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mergecl.methods.base import tunables
from mergecl.methods.ewc import EWC, EWCParams
from pydantic import ValidationError
from toy_stream import train_method


def plugin_of(**params):
    method = EWC.__new__(EWC)  # extra_plugins reads only the params
    method.params = EWCParams(**params)
    (plugin,) = method.extra_plugins()
    return plugin


def test_the_plugin_gets_lambda_mode_and_decay():
    separate = plugin_of(ewc_lambda=30.0, decay_factor=0.5)
    assert (separate.ewc_lambda, separate.mode, separate.decay_factor) == (30.0, "separate", None)
    online = plugin_of(mode="online")
    assert (online.ewc_lambda, online.mode, online.decay_factor) == (100.0, "online", 1.0)
    assert plugin_of(mode="online", decay_factor=0.25).decay_factor == 0.25


def test_params_are_range_checked_and_lambda_is_tunable():
    for bad in ({"ewc_lambda": -1.0}, {"decay_factor": 1.5}, {"mode": "offline"}, {"lam": 1.0}):
        with pytest.raises(ValidationError):
            EWCParams(**bad)
    assert tunables(EWCParams) == {"ewc_lambda": [1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]}
    assert EWC.family == "regulariser" and EWC.timing == "online"


def test_the_penalty_is_lambda_times_the_importance_weighted_squared_distance():
    """After task 0 the loss gains λ·Σ_k F_k·(θ_k − θ*_k)² (Avalanche's EWCPlugin; no ½ factor):
    at θ = θ* + 0.1 that is λ·0.01·Σ F."""
    from avalanche.training.plugins import EWCPlugin

    states, method, strategy = train_method(EWC, {"ewc_lambda": 2.0}, n_experiences=1)
    assert method.plain_first_task
    (plugin,) = [p for p in strategy.plugins if isinstance(p, EWCPlugin)]
    saved, importances = plugin.saved_params[0], plugin.importances[0]
    assert set(saved) == set(states[0])  # every parameter of the model, at θ*_0
    for name, value in states[0].items():
        assert torch.equal(saved[name].data, value)
        assert (importances[name].data >= 0).all()
    total_importance = sum(float(importances[n].data.sum()) for n in importances)
    assert total_importance > 0
    model = strategy.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(states[0][name] + 0.1)
    fake = SimpleNamespace(clock=SimpleNamespace(train_exp_counter=1), model=model, device="cpu",
                           loss=torch.tensor(0.0))
    plugin.before_backward(fake)
    assert float(fake.loss) == pytest.approx(2.0 * 0.01 * total_importance, rel=1e-5)
    fake.clock.train_exp_counter = 0  # no penalty during the first task
    fake.loss = torch.tensor(0.0)
    plugin.before_backward(fake)
    assert float(fake.loss) == 0.0

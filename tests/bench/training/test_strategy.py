"""The training strategy every run uses (mergecl.bench.training.strategy.MergeCLStrategy) on a
tiny in-memory stream: tensor batches, the loss restricted to the current experience's
classes, a fresh two-rate optimiser per experience, the step cap, the cosine schedule and the
non-finite-loss stop."""

from __future__ import annotations

import math

import pytest
import torch
from fake_runs import nan_run
from mergecl.bench.config.run_config import RunConfig
from mergecl.bench.training.strategy import (
    MergeCLStrategy,
    NonFiniteLossError,
    TensorBatches,
    _cosine_with_warmup,
    _fused_supported,
)
from toy_stream import N_FEATURES, toy_benchmark


def make_strategy(model, built, **config):
    settings = dict(optimizer="sgd", momentum=0.0, lr=0.1, head_lr=0.1, channels_last=False) | config
    cfg = RunConfig(method="seqft", benchmark="toy", seed=0, batch_size=4, epochs=1, **settings)
    return MergeCLStrategy(
        model=model, parameter_groups=lambda: [{"params": [model.weight], "lr": cfg.lr, "name": "backbone"},
                                               {"params": [model.bias], "lr": cfg.head_lr, "name": "head"}],
        config=cfg, classes_per_experience=built.classes_per_experience, n_classes=built.n_classes,
        train_tensors=built.train_tensors, test_tensors=built.test_tensors)


def test_tensor_batches_cover_every_sample_once_in_a_seeded_order():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert len(batches) == 3
    first = list(batches)
    assert [len(b[1]) for b in first] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(10))
    assert all(torch.equal(b[0].view(-1).long(), b[1]) and not b[2].any() for b in first)  # x, y stay paired
    again = TensorBatches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    plain = [b[1].tolist() for b in TensorBatches(x, y, 4, shuffle=False)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    factor = _cosine_with_warmup(total_steps=10, warmup_steps=2)
    assert [factor(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.5)  # halfway through the 8 decay steps: (1 + cos(π/2)) / 2
    assert factor(10) == pytest.approx(0.0) and factor(20) == pytest.approx(0.0)
    assert _cosine_with_warmup(4, 0)(0) == 1.0


def test_the_loss_reaches_only_the_current_experiences_classes_and_steps_are_counted():
    built = toy_benchmark()
    model = torch.nn.Linear(N_FEATURES, built.n_classes)
    strategy = make_strategy(model, built)
    strategy.train(built.train_stream[0])
    assert strategy.train_steps == 4  # 16 samples in batches of 4
    after_first = model.weight.detach().clone()
    first_optimizer = strategy.optimizer
    strategy.train(built.train_stream[1])
    assert strategy.optimizer is not first_optimizer  # a fresh optimiser per experience
    assert [g["lr"] for g in strategy.optimizer.param_groups] == [0.1, 0.1]
    # experience 1 trains classes 2, 3: the rows of classes 0, 1 get no gradient (plain SGD)
    assert torch.equal(model.weight[:2], after_first[:2])
    assert not torch.equal(model.weight[2:], after_first[2:])
    assert strategy.train_steps == 8 and strategy.train_seconds > 0


def test_seen_loss_mask_and_step_cap():
    built = toy_benchmark()
    model = torch.nn.Linear(N_FEATURES, built.n_classes)
    strategy = make_strategy(model, built, loss_mask="seen", max_steps_per_exp=3)
    strategy.train(built.train_stream[0])
    before = model.weight.detach().clone()
    strategy.train(built.train_stream[1])
    assert strategy.train_steps == 6  # capped at 3 per experience
    assert not torch.equal(model.weight[:2], before[:2])  # 'seen': old classes' logits in the loss


def test_adamw_is_torchs_fused_kernel_with_the_for_loop_forms_update():
    """AdamW runs fused (results/perf.md: 0.37x the default's time); its update is the default
    for-loop form's up to float rounding: three steps from the same state agree."""
    built = toy_benchmark()
    model = torch.nn.Linear(N_FEATURES, built.n_classes)
    strategy = make_strategy(model, built, optimizer="adamw", weight_decay=0.01)
    strategy.train(built.train_stream[0])
    assert strategy.optimizer.defaults["fused"] is True
    assert not _fused_supported([{"params": [torch.zeros(2, dtype=torch.int64)]}])
    start = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    fused = torch.optim.AdamW([torch.nn.Parameter(start.clone())], lr=0.1, weight_decay=0.01, fused=True)
    loop = torch.optim.AdamW([torch.nn.Parameter(start.clone())], lr=0.1, weight_decay=0.01)
    for optimiser in (fused, loop):
        parameter = optimiser.param_groups[0]["params"][0]
        for step in range(3):
            parameter.grad = torch.sin(parameter.detach() * (step + 1))
            optimiser.step()
    result = fused.param_groups[0]["params"][0]
    assert not torch.equal(result, start)
    torch.testing.assert_close(result, loop.param_groups[0]["params"][0])


def test_cosine_scheduler_steps_with_the_optimiser():
    built = toy_benchmark()
    model = torch.nn.Linear(N_FEATURES, built.n_classes)
    strategy = make_strategy(model, built, scheduler="cosine", warmup_steps=1)
    strategy.train(built.train_stream[0])
    # 4 planned steps, 1 of warm-up: after 4 steps the factor is (1 + cos(π·3/3)) / 2 = 0
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi)))


def test_a_nonfinite_loss_stops_training_naming_the_step():
    cfg = RunConfig(method="nan", benchmark="toy", seed=0, batch_size=16, epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 3 \(experience 0\)"):
        nan_run(cfg)

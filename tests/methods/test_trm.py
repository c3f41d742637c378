"""Tests of mergecl.methods.trm (the mergecl reconstruction of TRM): pure pieces, plugin, e2e."""

from __future__ import annotations

import math

import pytest
import torch
from mergecl.methods import merging
from mergecl.methods.magmax import max_magnitude
from mergecl.methods.parameterisation import FullSpace, LoraSpace
from mergecl.methods.trm import (
    TRM,
    TRMParams,
    alignment_loss,
    candidate_state,
    checkpoint_steps,
    coefficient_groups,
    consistency_loss,
    entropy_floor_penalty,
    gradient_floor_penalty,
    gradient_norm,
    trajectory_directions,
)
from tiny_cl import N_CLASSES, FakeStrategy, make_context
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g)}


# ------------------------------------------------------------------------------ pure pieces


def test_checkpoint_steps():
    assert checkpoint_steps(3, 1, 3) == [1, 2, 3]           # 1/3, 2/3, end
    assert checkpoint_steps(9, 1, 9) == [3, 6, 9]
    assert checkpoint_steps(2, 1, 2) == [1, 2]              # duplicates dropped
    assert checkpoint_steps(1, 1, 1) == [1]
    assert checkpoint_steps(0, 1, 0) == []
    assert checkpoint_steps(12, 3, 4) == [4, 8, 12]         # epoch ends
    assert checkpoint_steps(5, 3, 4) == [4, 5]              # max_steps cut the 2nd epoch
    assert checkpoint_steps(20, 10, 2) == [4, 8, 12, 16, 20]  # at most 5, evenly spaced
    assert checkpoint_steps(10, 3, 4, count=2) == [5, 10]   # explicit K: step checkpoints
    assert checkpoint_steps(12, 3, 4, count=1) == [12]
    assert checkpoint_steps(3, 3, 1) == [1, 2, 3]           # an epoch end at step 1 is kept


def test_coefficient_groups():
    names = ["backbone.conv_stem.weight", "backbone.bn1.weight", "backbone.blocks.0.0.conv.weight",
             "backbone.blocks.0.1.conv.weight", "backbone.blocks.1.0.conv_pw.base_layer.weight",
             "backbone.conv_head.weight", "backbone.classifier.weight", "backbone.classifier.bias"]
    head = ["backbone.classifier.weight", "backbone.classifier.bias"]
    groups, labels = coefficient_groups(names, head, "block")
    assert labels == ["stem", "blocks.0", "blocks.1", "neck", "head"]
    assert [labels[groups[n]] for n in names] == ["stem", "stem", "blocks.0", "blocks.0", "blocks.1",
                                                  "neck", "head", "head"]
    groups, labels = coefficient_groups(names, head, "layer")
    assert labels == names and [groups[n] for n in names] == list(range(len(names)))
    groups, labels = coefficient_groups(names, head, "global")
    assert labels == ["all"] and set(groups.values()) == {0}
    _, labels = coefficient_groups(["layer1.0.conv1.weight", "layer2.1.bn.bias", "fc.weight"],
                                   ["fc.weight"], "block")
    assert labels == ["layer1", "layer2", "head"]


def test_trajectory_directions_and_magmax():
    start, c1, c2 = _random_state(0), _random_state(1), _random_state(2)
    directions, labels = trajectory_directions(start, [c1, c2], use_magmax=True)
    assert labels == ["d1", "d2", "magmax"]
    d1, d2 = merging.task_vector(c1, start), merging.task_vector(c2, start)
    magmax = max_magnitude([d1, d2])
    for name in start:
        assert directions[name].shape == (3, *start[name].shape)
        assert torch.equal(directions[name][0], d1[name])
        assert torch.equal(directions[name][1], d2[name])
        assert torch.equal(directions[name][2], magmax[name])
    _, labels = trajectory_directions(start, [c1, c2], use_magmax=False)
    assert labels == ["d1", "d2"]
    _, labels = trajectory_directions(start, [c2], use_magmax=True)
    assert labels == ["d1"]  # the max-magnitude of one direction is that direction
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0] = True
    masked, _ = trajectory_directions(start, [c1, c2], True, masks={"a.weight": mask})
    assert bool((masked["a.weight"][:, 1:] == 0).all()) and torch.equal(masked["b.bias"], directions["b.bias"])


def test_candidate_at_initial_coefficients_is_trained_exactly():
    start = {name: value * 1e3 for name, value in _random_state(0).items()}  # large, rounding-prone
    checkpoints = [_random_state(1), _random_state(2), _random_state(3)]
    trained = checkpoints[-1]
    directions, labels = trajectory_directions(start, checkpoints, use_magmax=True)
    groups = {"a.weight": 0, "b.bias": 1}
    offsets = torch.zeros(2, len(labels))
    candidate = candidate_state(trained, directions, groups, offsets)
    for name in trained:
        assert torch.equal(candidate[name], trained[name])
    # and θ(c) = θ̂_{t-1} + Σ_j c_{g,j} d_j for other coefficients
    offsets = torch.tensor([[0.3, -0.2, 0.1, 0.5], [0.0, 0.4, -0.7, 0.2]])
    coefficients = offsets.clone()
    coefficients[:, 2] += 1.0
    candidate = candidate_state(trained, directions, groups, offsets)
    for name, g in groups.items():
        expected = start[name] + torch.tensordot(coefficients[g], directions[name], dims=1)
        torch.testing.assert_close(candidate[name], expected, rtol=1e-5, atol=1e-3)


def test_objective_functions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    targets = torch.tensor([0, 1, 0, 1, 1])
    mask = torch.tensor([True, True, False, False])
    torch.testing.assert_close(alignment_loss(logits, targets, mask),
                               nn.functional.cross_entropy(logits[:, :2], targets))
    old = torch.tensor([0, 1])
    assert float(consistency_loss(logits, logits, old)) == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(5, 4, generator=g)
    p = torch.softmax(other[:, :2], 1)
    expected = (p * (p.log() - torch.log_softmax(logits[:, :2], 1))).sum(1).mean()
    torch.testing.assert_close(consistency_loss(logits, other, old), expected)
    # the entropy floor is inactive on uniform predictions, active on saturated ones
    assert float(entropy_floor_penalty(torch.zeros(3, 4), None, 0.5)) == 0.0
    saturated = torch.tensor([[50.0, 0.0, 0.0, 0.0]])
    assert float(entropy_floor_penalty(saturated, mask, 0.5)) == pytest.approx(0.5 * math.log(2), rel=1e-4)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    norm = gradient_norm((w ** 2).sum() / 2, [w], create_graph=True)
    assert float(norm) == pytest.approx(5.0)
    (grad,) = torch.autograd.grad(norm, [w])  # double backward: w/‖w‖
    torch.testing.assert_close(grad, w.detach() / 5.0)
    # the floor is a hinge: zero above it, linear below, never a reward for a large gradient
    assert float(gradient_floor_penalty(norm, 4.0)) == 0.0
    assert float(gradient_floor_penalty(norm, 7.0)) == pytest.approx(2.0)
    assert float(gradient_floor_penalty(torch.tensor(100.0), 7.0)) == 0.0
    # consistency restricted to chosen samples: weight 0 drops a sample
    weights = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    p = torch.softmax(other[:, :2], 1)
    per_sample = (p * (p.log() - torch.log_softmax(logits[:, :2], 1))).sum(1)
    torch.testing.assert_close(consistency_loss(logits, other, old, weights),
                               (per_sample[0] + per_sample[2]) / 2)
    assert float(consistency_loss(logits, other, old, torch.zeros(5))) == 0.0


def test_params_are_range_checked():
    with pytest.raises(ValueError):
        TRMParams(checkpoints=6)
    with pytest.raises(ValueError):
        TRMParams(groups="tensor")
    with pytest.raises(ValueError):
        TRMParams(w_align=-1.0)


# ------------------------------------------------------------------------------ plugin


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 12)
        self.head = nn.Linear(12, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def make_data(seed: int = 0, n: int = 24):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 6, generator=g), torch.randint(0, 2, (n,), generator=g)),
            (torch.randn(n, 6, generator=g) + 1.0, torch.randint(2, 4, (n,), generator=g))]


def build(params: dict | None = None, *, lora: bool = False, **kw):
    torch.manual_seed(0)
    model = Tiny()
    space = LoraSpace(model, ["fc1", "fc2"], rank=2, alpha=2.0) if lora else FullSpace(model)
    data = make_data()
    ctx = make_context(space, data, generator=torch.Generator().manual_seed(1))
    method = TRM(TRMParams(**{"steps": 5, "batch_size": 8, "lr": 0.1, **(params or {})}), ctx)
    return model, space, method, FakeStrategy(model, space, data, **kw)


def _train_two_tasks(method, space, strategy):
    """Train tasks 0 and 1; return θ*_1 and the number of checkpoints held before merge 1."""
    strategy.train_exp(method, 0)
    seen = {}
    strategy.train_exp(method, 1, before_merge=lambda: seen.update(
        trained=space.effective_state(), held=len(method.checkpoints)))
    return seen


OFF = {"w_align": 0.0, "w_consistency": 0.0, "w_responsiveness": 0.0}


@pytest.mark.parametrize("params", [OFF, {"steps": 0}])
def test_all_objectives_off_returns_trained_exactly(params):
    _model, space, method, strategy = build(params)
    seen = _train_two_tasks(method, space, strategy)
    for name, value in space.effective_state().items():
        assert torch.equal(value, seen["trained"][name]), name
    record = method.per_task[-1]
    assert record["steps"] == 0 and record["coefficients"] == {"d1": 0.0, "d2": 0.0, "d3": 1.0,
                                                               "magmax": 0.0}


def test_checkpoints_are_dropped_after_the_merge():
    _, space, method, strategy = build()  # 6 steps, 1 epoch: checkpoints after 2, 4, (6)
    seen = _train_two_tasks(method, space, strategy)
    assert method.checkpoint_plan == [2, 4, 6]
    assert seen["held"] == 2  # the last checkpoint is θ*_t itself, never copied
    assert method.checkpoints == [] and method.per_task[-1]["checkpoints"] == 3
    _model, space, method, strategy = build(epochs=2)  # epoch ends: after 6 and 12
    seen = _train_two_tasks(method, space, strategy)
    assert method.checkpoint_plan == [6, 12] and seen["held"] == 1 and method.checkpoints == []


def test_optimisation_moves_coefficients_and_lowers_the_objective():
    _model, space, method, strategy = build({"w_consistency": 0.0, "w_responsiveness": 0.0,
                                            "steps": 20, "lr": 0.05, "batch_size": 32})
    seen = _train_two_tasks(method, space, strategy)
    record = method.per_task[-1]
    assert record["steps"] == 20 and record["groups"] == 2  # stem (fc1, fc2) and head
    assert record["coefficients"] != {"d1": 0.0, "d2": 0.0, "d3": 1.0, "magmax": 0.0}
    assert record["objectives_after"]["alignment"] < record["objectives_before"]["alignment"]
    merged = space.effective_state()
    assert any(not torch.equal(merged[n], seen["trained"][n]) for n in merged)
    # head rows of the new classes are taken as trained (masked out of every direction)
    assert torch.equal(merged["head.weight"][2:], seen["trained"]["head.weight"][2:])
    assert torch.equal(merged["head.bias"][2:], seen["trained"]["head.bias"][2:])


@pytest.mark.parametrize("params,expected", [
    ({"w_consistency": 0.0, "w_responsiveness": 0.0}, {"alignment"}),
    ({"w_align": 0.0, "w_responsiveness": 0.0}, {"consistency"}),
    ({"w_align": 0.0, "w_consistency": 0.0}, {"responsiveness"}),
    ({"w_align": 0.0, "w_consistency": 0.0, "responsiveness": "entropy", "entropy_floor": 0.9},
     {"responsiveness"}),
    ({}, {"alignment", "consistency", "responsiveness"}),
])
def test_objective_switches(params, expected):
    _model, space, method, strategy = build(params)
    _train_two_tasks(method, space, strategy)
    first, second = method.per_task
    assert set(second["objectives_before"]) == expected == set(second["objectives_after"])
    assert "consistency" not in first.get("objectives_before", {})  # nothing seen before task 0
    if expected == {"consistency"}:
        assert first["steps"] == 0  # consistency alone has nothing to do at task 0
    assert second["steps"] == 5
    if "alignment" in expected:  # the other terms alone cannot beat θ*_t without raising its loss
        assert second["coefficients"] != {"d1": 0.0, "d2": 0.0, "d3": 1.0, "magmax": 0.0}
    assert second["accepted_step"] >= 0


def test_groups_and_magmax_switch():
    _model, space, method, strategy = build({"groups": "layer", "use_magmax_direction": False})
    _train_two_tasks(method, space, strategy)
    record = method.per_task[-1]
    assert record["groups"] == 6 and record["directions"] == ["d1", "d2", "d3"]


def test_lora_all_off_returns_the_effective_trained_weights():
    _, space, method, strategy = build(OFF, lora=True)
    seen = _train_two_tasks(method, space, strategy)
    for name, value in space.effective_state().items():
        assert torch.equal(value, seen["trained"][name])


@pytest.mark.parametrize("lora", [False, True])
def test_candidate_before_optimisation_is_the_trained_model(lora):
    """Objective at c⁰ = loss of θ*_t as trained (LoRA: adapters live) — no double counting."""
    model, space, method, strategy = build({"w_consistency": 0.0, "w_responsiveness": 0.0},
                                           lora=lora)
    losses = {}

    def before_merge():
        x, y = strategy.data[1]
        held = min(8, len(y) // 4)  # the held-out quarter is not in the data terms
        assert lora == any(float(m.lora_B["default"].weight.abs().sum()) > 0
                           for m in getattr(space, "lora_layers", {}).values())
        with torch.no_grad():
            logits = model(x[:-held])
        losses["trained"] = float(alignment_loss(logits, y[:-held], torch.tensor([0, 0, 1, 1]).bool()))

    strategy.train_exp(method, 0)
    strategy.train_exp(method, 1, before_merge=before_merge)
    record = method.per_task[-1]
    assert record["objectives_before"]["alignment"] == pytest.approx(losses["trained"], abs=1e-6)
    assert record["objectives_after"]["alignment"] != record["objectives_before"]["alignment"]
    if lora:  # the merged weights are folded into the base; the adapter restarts at B = 0
        assert all(float(m.lora_B["default"].weight.abs().sum()) == 0
                   for m in space.lora_layers.values())


# ------------------------------------------------------------------------------ end to end


def _run(benchmark, parameterisation, data_root, params, **extra):
    from mergecl.bench.config.run_config import resolve_run
    from mergecl.bench.training.run import run_one

    overrides = {"parameterisation": parameterisation, "data_root": str(data_root),
                 "params": {"samples": 16, "batch_size": 8, **params}, **extra}
    return run_one(resolve_run("trm", benchmark, 0, "quick", overrides))


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
def test_e2e_split_mnist(parameterisation, data_root):
    record = _run("split-mnist", parameterisation, data_root, {"steps": 2},
                  batch_size=4, max_steps_per_exp=3)
    assert "reconstruction" in record.paper
    tasks = record.diagnostics["per_task"]
    assert len(tasks) == 5 and len(record.acc_matrix) == 5
    assert all(t["checkpoints"] == 3 and t["steps"] == 2 for t in tasks)
    assert tasks[0]["directions"] == ["d1", "d2", "d3", "magmax"]
    assert "consistency" in tasks[1]["objectives_after"]
    assert 0.0 <= record.metrics.acc <= 1.0


@pytest.mark.e2e
def test_e2e_domain_incremental(data_root):
    record = _run("rotated-mnist", "full", data_root, {"steps": 2, "responsiveness": "entropy"},
                  n_experiences=2, train_per_class=2, max_steps_per_exp=2)
    assert record.scenario == "domain-incremental"
    tasks = record.diagnostics["per_task"]
    assert [t["checkpoints"] for t in tasks] == [2, 2]
    assert "consistency" in tasks[1]["objectives_after"]  # all classes are "seen before"


# ------------------------------------------------------------------------------ the constraint


def _two_domains(seed: int, n: int = 32):
    """Two domains of one 4-class problem: the same labelling rule, shifted and rotated inputs."""
    g = torch.Generator().manual_seed(seed)
    rule = torch.randn(6, N_CLASSES, generator=g)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=g)).Q
    data = []
    for domain in range(2):
        z = torch.randn(n, 6, generator=g)
        x = z if domain == 0 else z @ rotation + 1.5
        data.append((x, (z @ rule).argmax(1)))
    return data


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("responsiveness", ["grad-floor", "entropy"])
def test_merge_never_raises_the_current_task_loss_above_the_better_anchor(seed, responsiveness):
    """Domain-incremental toy: after the merge, task t's loss on the merge's samples is at most
    min(loss(θ̂_{t-1}), loss(θ*_t)) — no objective is minimised by forgetting task t."""
    torch.manual_seed(seed)
    model = Tiny()
    space = FullSpace(model)
    data = _two_domains(seed)
    everything = [[0, 1, 2, 3], [0, 1, 2, 3]]
    ctx = make_context(space, data, loss_mask="none", classes=everything,
                       scenario="domain-incremental", generator=torch.Generator().manual_seed(seed))
    method = TRM(TRMParams(steps=15, batch_size=8, lr=0.3, w_consistency=5.0, w_responsiveness=1.0,
                           responsiveness=responsiveness), ctx)
    strategy = FakeStrategy(model, space, data, epochs=3, loss_classes=everything)
    strategy.train_exp(method, 0)
    seen = {}
    strategy.train_exp(method, 1, before_merge=lambda: seen.update(
        trained=space.effective_state(), start=dict(method.start_state)))
    x, y = data[1]
    held = min(8, len(y) // 4)
    x, y = x[:-held], y[:-held]

    def loss(state):
        probe = Tiny()
        FullSpace(probe).load_effective_state(state)
        with torch.no_grad():
            return float(nn.functional.cross_entropy(probe(x), y))

    merged = loss(space.effective_state())
    bound = min(loss(seen["start"]), loss(seen["trained"]))
    assert merged <= bound + 1e-6
    record = method.per_task[-1]
    assert record["task_loss_bound"] == pytest.approx(bound, abs=1e-5)
    assert 0 < record["consistency_samples"] <= len(y)  # only where θ̂_{t-1} was right


def test_always_protects_the_current_task_on_class_incremental_streams_too():
    _model, space, method, strategy = build({"protect_current_task": "always", "steps": 10,
                                            "w_consistency": 5.0})
    seen = _train_two_tasks(method, space, strategy)
    record = method.per_task[-1]
    assert record["objectives_after"]["alignment"] <= record["task_loss_bound"] + 1e-6
    never = build({"protect_current_task": "never", "steps": 10, "w_consistency": 5.0})
    _train_two_tasks(never[2], never[1], never[3])
    assert never[2].per_task[-1]["accepted_step"] == 10  # the final iterate, unconstrained
    assert seen["trained"]  # θ*_t was captured before the merge


# ------------------------------------------------------------------------------------------
# cases added for mutation testing (docs/mutation.md)


def test_trajectory_directions_skip_a_non_float_entry_and_keep_the_later_ones():
    start = {"steps": torch.tensor(3), **_random_state(0)}
    checkpoint = {"steps": torch.tensor(7), **_random_state(1)}
    directions, _ = trajectory_directions(start, [checkpoint], use_magmax=False)
    assert list(directions) == ["a.weight", "b.bias"]
    assert torch.equal(directions["b.bias"][0], checkpoint["b.bias"] - start["b.bias"])


def test_consistency_over_a_single_included_sample_is_that_samples_kl():
    g = torch.Generator().manual_seed(2)
    logits, reference = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    classes = torch.tensor([0, 1, 3])
    p_ref = torch.softmax(reference[:, classes], 1)
    kl = (p_ref * (p_ref.log() - torch.log_softmax(logits[:, classes], 1))).sum(1)
    only_second = consistency_loss(logits, reference, classes, torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(only_second, kl[1])


def test_gradient_norm_ignores_unused_parameters_and_is_positive_at_zero():
    """‖∇‖ over the parameters the loss uses (an unused one adds 0), computed as
    √(Σ g² + 10⁻³⁰): 10⁻¹⁵ for a zero gradient (finite, not √0's infinite slope or NaN)."""
    used, unused = torch.tensor([3.0, 4.0], requires_grad=True), torch.ones(2, requires_grad=True)
    assert float(gradient_norm((used ** 2).sum() / 2, [used, unused], False)) == pytest.approx(5.0)
    flat = torch.zeros(2, requires_grad=True)
    norm = gradient_norm((flat * 0).sum(), [flat], create_graph=True)
    assert float(norm) == pytest.approx(1e-15, rel=1e-6, abs=0)


def test_entropy_floor_is_zero_with_a_single_allowed_class():
    """One allowed logit: C = 1, log C = 0 and H = 0, so no floor whatever the logits."""
    mask = torch.tensor([False, True, False, False])
    logits = torch.tensor([[5.0, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(entropy_floor_penalty(logits, mask, 1.0)) == 0.0

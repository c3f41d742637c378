"""Tests of mergecl.methods.became: pure helpers, stage switch, projection, λ, Fisher update, e2e."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods import merging
from mergecl.methods.base import head_masks
from mergecl.methods.became import (
    BECAME,
    BECAMEParams,
    accumulate_fisher,
    became_lambda,
    energy_threshold,
    project_step_,
    projectable_layers,
    stable_steps,
)
from mergecl.methods.parameterisation import FullSpace, LoraSpace
from state_helpers import T
from tiny_cl import N_CLASSES, FakeStrategy, make_context
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------ tiny setup


class Tiny(nn.Module):
    """Bias-free hidden layers (GPM's setting: a bias changes old responses) + a head."""

    def __init__(self, d_in: int = 6, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Linear(hidden, N_CLASSES)

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.fc1(x)
        return h1, self.fc2(torch.relu(h1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(x)[1]))


def make_data(seed: int = 0, n: int = 24) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Task 0 inputs span a 3-dim subspace of R^6 (so U is a strict subspace); task 1 generic."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3, 6, generator=g)
    x0 = torch.randn(n, 3, generator=g) @ basis
    x1 = torch.randn(n, 6, generator=g)
    y0 = torch.randint(0, 2, (n,), generator=g)
    y1 = torch.randint(2, 4, (n,), generator=g)
    return [(x0, y0), (x1, y1)]


def build(params: dict | None = None, *, lora: bool = False, optimizer="adam", seed=0, **kw):
    torch.manual_seed(seed)
    model = Tiny()
    space = LoraSpace(model, ["fc1", "fc2"], rank=2, alpha=2.0) if lora else FullSpace(model)
    data = make_data(seed)
    method = BECAME(BECAMEParams(**(params or {})), make_context(space, data))
    strategy = FakeStrategy(model, space, data, optimizer=optimizer, **kw)
    return model, space, method, strategy


# ------------------------------------------------------------------------------ pure helpers


def test_stable_steps():
    assert stable_steps(10, 0.5) == 5
    assert stable_steps(3, 0.5) == 2        # round half up
    assert stable_steps(2, 0.99) == 1       # each stage gets a step
    assert stable_steps(2, 0.01) == 1
    assert stable_steps(100, 0.001) == 1
    assert stable_steps(100, 0.999) == 99
    assert stable_steps(1, 0.5) == 1        # a single step is stable
    assert stable_steps(0, 0.5) == 0


def test_energy_threshold_grows_and_caps():
    assert energy_threshold(0, 0.97, 0.003) == pytest.approx(0.97)
    assert energy_threshold(5, 0.97, 0.003) == pytest.approx(0.985)
    assert energy_threshold(50, 0.97, 0.003) == 1.0


def test_accumulate_fisher():
    new = {"a": torch.tensor([1.0, 2.0])}
    old = {"a": torch.tensor([4.0, 8.0])}
    torch.testing.assert_close(accumulate_fisher(new, old, 0.5)["a"], torch.tensor([3.0, 6.0]))
    first = accumulate_fisher(new, None, 0.5)
    torch.testing.assert_close(first["a"], new["a"])
    assert first["a"] is not new["a"]
    with pytest.raises(ValueError):
        accumulate_fisher(new, {"b": torch.ones(2)}, 1.0)


def test_projectable_layers_full_and_lora():
    model = nn.Module()
    model.pw = nn.Conv2d(4, 8, 1)
    model.k3 = nn.Conv2d(8, 8, 3)
    model.dw = nn.Conv2d(8, 8, 1, groups=8)
    model.fc = nn.Linear(8, 8)
    model.frozen = nn.Linear(8, 8)
    model.head = nn.Linear(8, 3)
    names = [n for n, _ in model.named_parameters() if not n.startswith("frozen")]
    assert projectable_layers(model, names, ["head.weight", "head.bias"]) == ["pw", "fc"]

    tiny = Tiny()
    space = LoraSpace(tiny, ["fc1", "fc2"], rank=2, alpha=2.0)
    assert projectable_layers(tiny, space.names, space.head_names) == ["fc1", "fc2"]


def test_params_are_range_checked():
    with pytest.raises(ValueError):
        BECAMEParams(stable_fraction=1.0)
    with pytest.raises(ValueError):
        BECAMEParams(fisher_labels="argmax")
    with pytest.raises(ValueError):
        BECAMEParams(energy_threshold=1.5)


# ------------------------------------------------------------------------------ stage switch


def test_stage_switch_counts_and_fresh_optimiser():
    _model, _space, method, strategy = build({"stable_fraction": 0.5}, batch_size=4)  # 6 steps/task
    seen = {}

    def after_step(step):
        seen[step] = (method.stage, strategy.optimizer_resets)

    strategy.train_exp(method, 0, after_step=after_step)
    assert [seen[s][0] for s in range(1, 7)] == ["stable"] * 2 + ["plastic"] * 4  # switched after 3
    assert [seen[s][1] for s in range(1, 7)] == [1, 1, 2, 2, 2, 2]
    record = method.per_task[-1]
    assert (record["stable_steps"], record["plastic_steps"]) == (3, 3)
    assert record["basis_columns"] > 0 and record["projected_layers"] == 2
    assert method.gp_state is None  # dropped after the merge

    strategy.train_exp(method, 1)
    assert (method.per_task[-1]["stable_steps"], method.per_task[-1]["plastic_steps"]) == (3, 3)
    assert method.per_task[-1]["threshold"] == pytest.approx(0.973)


def test_single_step_task_is_all_stable_and_keeps_trained():
    _model, space, method, strategy = build(batch_size=64)  # one step per task
    captured = {}
    strategy.train_exp(method, 0, before_merge=lambda: captured.update(trained=space.effective_state()))
    record = method.per_task[-1]
    assert (record["stable_steps"], record["plastic_steps"]) == (1, 0)
    assert record["merge_coefficient"] == 1.0  # no stable-stage Fisher at task 0
    for name, value in space.effective_state().items():
        assert torch.equal(value, captured["trained"][name])


# ------------------------------------------------------------------------------ projection


@pytest.mark.parametrize("optimizer,project_update", [("adam", True), ("sgd", False)])
def test_stable_stage_keeps_old_input_responses(optimizer, project_update):
    # the basis is taken on 8 samples: fc2's 16-dim inputs then span a strict subspace too
    params = {"energy_threshold": 1.0, "threshold_increment": 0.0, "project_update": project_update,
              "gpm_samples": 8, "stable_fraction": 0.5}
    model, _space, method, strategy = build(params, optimizer=optimizer, lr=0.1)
    strategy.train_exp(method, 0)
    assert {n: b.shape[1] for n, b in method.projector.bases.items()} == {"fc1": 3, "fc2": 8}
    x_old = strategy.data[0][0][:8]
    with torch.no_grad():
        reference = model.hidden(x_old)
    drift = {}

    def after_step(step):
        with torch.no_grad():
            h1, h2 = model.hidden(x_old)
        drift[step] = (method.stage, max(float((h1 - reference[0]).abs().max()),
                                         float((h2 - reference[1]).abs().max())))

    strategy.train_exp(method, 1, after_step=after_step)
    stable = [d for stage, d in drift.values() if stage == "stable"]
    assert len(stable) == 2  # steps 1-2 stable (step 3 switches)
    # step 3 is the last stable step: it ran projected too
    assert max(stable + [drift[3][1]]) < 1e-5
    assert max(d for step, (_, d) in drift.items() if step > 3) > 1e-3  # plastic: unconstrained


def test_without_update_projection_adam_moves_old_responses():
    """Documents why project_update exists: Adam's per-entry scaling leaves span(U)⊥."""
    params = {"energy_threshold": 1.0, "threshold_increment": 0.0, "project_update": False,
              "gpm_samples": 1000}
    model, _space, method, strategy = build(params, optimizer="adam", lr=0.1)
    strategy.train_exp(method, 0)
    x_old = strategy.data[0][0]
    with torch.no_grad():
        reference = model.hidden(x_old)[0]
    drift = []
    strategy.train_exp(method, 1, after_step=lambda step: drift.append(
        float((model.hidden(x_old)[0] - reference).abs().max().detach())))
    assert drift[0] > 1e-4


def test_lora_stable_stage_keeps_old_input_responses():
    params = {"energy_threshold": 1.0, "threshold_increment": 0.0, "gpm_samples": 1000}
    model, _space, method, strategy = build(params, lora=True, lr=0.1)
    strategy.train_exp(method, 0)
    x_old = strategy.data[0][0]
    with torch.no_grad():
        reference = model.fc1(x_old)
    drift = {}

    def after_step(step):
        with torch.no_grad():
            drift[step] = (method.stage, float((model.fc1(x_old) - reference).abs().max()))

    strategy.train_exp(method, 1, after_step=after_step)
    assert max(d for step, (_, d) in drift.items() if step <= 3) < 1e-5
    assert max(d for step, (_, d) in drift.items() if step > 3) > 1e-4


# ------------------------------------------------------------------------------ merge


def test_lambda_and_merge_follow_the_equations():
    _model, space, method, strategy = build({"fisher_samples": 16, "gamma": 0.5})
    seen: dict = {}

    def capture(task):
        def before_merge():
            seen[task] = {
                "gp": merging.clone_state(method.gp_state),
                "trained": space.effective_state(),
                "fisher_old": merging.clone_state(method.stable_fisher if task == 0 else method.fisher_old),
                "fisher_new": method.estimate_fisher(task, 16, "model"),
                "masks": head_masks(space, method.ctx, task),
            }
        return before_merge

    for task in (0, 1):
        strategy.train_exp(method, task, before_merge=capture(task))
        s = seen[task]
        delta = merging.task_vector(s["trained"], s["gp"])
        expected = became_lambda(delta, s["fisher_new"], s["fisher_old"], masks=s["masks"])
        assert method.per_task[-1]["merge_coefficient"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert 0.0 < expected < 1.0
        merged = merging.interpolate(s["gp"], s["trained"], expected, masks=s["masks"])
        for name, value in space.effective_state().items():
            torch.testing.assert_close(value, merged[name], rtol=1e-6, atol=1e-7)
        # new-class head rows are taken as trained
        new = method.ctx.new_classes(task)
        assert torch.equal(space.effective_state()["head.weight"][new], s["trained"]["head.weight"][new])
        # F_old ← F(θ̂_t; t) + γ·F_old (task 0: the stable-stage Fisher is not carried on)
        at_merged = method.estimate_fisher(task, 16, "model")
        previous = s["fisher_old"] if task > 0 else None
        expected_old = accumulate_fisher(at_merged, previous, 0.5)
        for name, value in method.fisher_old.items():
            torch.testing.assert_close(value, expected_old[name])


def test_without_fisher_lambda_is_one_over_t_plus_one():
    _model, _space, method, strategy = build({"use_fisher": False})
    for task in (0, 1):
        strategy.train_exp(method, task)
        assert method.per_task[-1]["merge_coefficient"] == pytest.approx(1.0 / (task + 1))
    assert method.fisher_old is None


# ------------------------------------------------------------------------------ end to end


def _run(benchmark, parameterisation, data_root, **extra):
    from mergecl.bench.config.run_config import resolve_run
    from mergecl.bench.training.run import run_one

    overrides = {"parameterisation": parameterisation, "data_root": str(data_root),
                 "params": {"fisher_samples": 16, "gpm_samples": 16}, **extra}
    return run_one(resolve_run("became", benchmark, 0, "quick", overrides))


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
def test_e2e_split_mnist(parameterisation, data_root):
    record = _run("split-mnist", parameterisation, data_root, batch_size=4, max_steps_per_exp=3)
    tasks = record.diagnostics["per_task"]
    assert len(tasks) == 5 and len(record.acc_matrix) == 5
    assert all((t["stable_steps"], t["plastic_steps"]) == (2, 1) for t in tasks)
    assert all(0.0 <= t["merge_coefficient"] <= 1.0 for t in tasks)
    columns = [t["basis_columns"] for t in tasks]
    assert columns == sorted(columns) and columns[0] > 0
    assert tasks[0]["projected_layers"] == 32  # EfficientNet-Lite0: 1x1 convs (not the head)
    assert 0.0 <= record.metrics.acc <= 1.0


@pytest.mark.e2e
def test_e2e_domain_incremental(data_root):
    record = _run("rotated-mnist", "lora", data_root, n_experiences=2, train_per_class=2,
                  max_steps_per_exp=2)
    assert record.scenario == "domain-incremental"
    tasks = record.diagnostics["per_task"]
    assert [(t["stable_steps"], t["plastic_steps"]) for t in tasks] == [(1, 1), (1, 1)]
    assert all(0.0 <= t["merge_coefficient"] <= 1.0 for t in tasks)


# ------------------------------------------------------------------------------------------
# the coefficient rule


def test_became_lambda_hand_computed_and_minimises_objective():
    delta = {"w": T([1.0, 2.0]), "n": T(1)}
    f_new = {"w": T([1.0, 1.0])}
    f_old = {"w": T([3.0, 0.0])}
    lam = became_lambda(delta, f_new, f_old)
    assert lam == pytest.approx(5 / 8, abs=1e-12)  # (1 + 4) / (4·1 + 1·4)
    quad_old = 3.0  # Δᵀ F_old Δ
    quad_new = 5.0  # Δᵀ F_t Δ
    grid = [i / 10000 for i in range(10001)]
    objective = [0.5 * x * x * quad_old + 0.5 * (1 - x) ** 2 * quad_new for x in grid]
    best = grid[min(range(len(grid)), key=objective.__getitem__)]
    assert best == pytest.approx(lam, abs=1e-4)
    # masks: only the first entry -> 1 / (1 + 3)
    assert became_lambda(delta, f_new, f_old, masks={"w": T([True, False])}) == 0.25
    # zero denominator -> 0.5
    assert became_lambda({"w": T([0.0, 0.0]), "n": T(1)}, f_new, f_old) == 0.5
    with pytest.raises(ValueError, match="different entries"):
        became_lambda(delta, f_new, {})


def test_became_lambda_sums_every_entry_and_names_the_bad_fisher():
    """Two entries: λ = (1·1 + 2·4) / ((1 + 3)·1 + (2 + 0)·4) = 9 / 12."""
    delta = {"a": T([1.0]), "b": T([2.0])}
    f_new = {"a": T([1.0]), "b": T([2.0])}
    f_old = {"a": T([3.0]), "b": T([0.0])}
    assert became_lambda(delta, f_new, f_old) == pytest.approx(0.75, abs=1e-12)
    with pytest.raises(ValueError, match=r"^fisher_new: entry 'zz'"):
        became_lambda(delta, {"zz": T([1.0])}, f_old)
    with pytest.raises(ValueError, match=r"^fisher_old: entry 'zz'"):
        became_lambda(delta, f_new, {"zz": T([1.0])})


def test_became_lambda_refuses_a_non_finite_denominator_alone():
    """An infinite F_old (numerator finite, denominator inf) is an error, not λ = 0."""
    delta, f_new = {"w": T([1.0])}, {"w": T([1.0])}
    with pytest.raises(ValueError, match="non-finite sums"):
        became_lambda(delta, f_new, {"w": T([float("inf")])})


def test_projectable_layers_skips_a_lora_wrapper_whose_base_weight_is_not_merged():
    tiny = Tiny()
    space = LoraSpace(tiny, ["fc1", "fc2"], rank=2, alpha=2.0)
    assert "fc2.base_layer.weight" in space.names
    merged = [n for n in space.names if not n.startswith("fc2.")]
    assert projectable_layers(tiny, merged, space.head_names) == ["fc1"]


def test_projectable_layers_looks_past_a_layer_that_is_not_merged():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))  # "0" frozen, "1" merged
    assert projectable_layers(model, ["1.weight", "1.bias"], []) == ["1"]


def test_project_step_keeps_only_the_step_off_the_basis():
    """W ← W_before + (W − W_before)(I − U·Uᵀ): with U = e₁ the step's first input column goes."""
    before = T([[1.0, 1.0], [2.0, -1.0]])
    weight = before + T([[3.0, 4.0], [-2.0, 5.0]])
    project_step_(weight, before, T([[1.0], [0.0]]))
    assert torch.equal(weight, T([[1.0, 5.0], [2.0, 4.0]]))

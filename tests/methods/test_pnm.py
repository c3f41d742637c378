"""P&M plugin: the perturbation costs no extra pass, restores the weights exactly, takes the
gradient at θ + s·Δ; α is fitted over exactly the entries the merge scales."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import quick_run
from mergecl.methods import merging
from mergecl.methods.base import MethodContext, head_masks
from mergecl.methods.parameterisation import FullSpace
from mergecl.methods.pnm import PerturbAndMerge, PnMParams, PnMStatistics, pnm_alpha, pnm_merge
from state_helpers import T, assert_state_equal, assert_unchanged
from torch import nn


class TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.fc = nn.Linear(3, 4)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(torch.tanh(self.body(x)))


def _plugin(model, **params):
    space = FullSpace(model)
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                        scenario="class-incremental")
    plugin = PerturbAndMerge(PnMParams(**params), ctx)
    plugin.start_state = {n: v - 0.1 for n, v in space.effective_state().items()}  # θ̂_{t-1} ≠ θ
    plugin.on_task_start(SimpleNamespace(model=model))
    return plugin, space


def test_no_perturbation_when_s_is_zero():
    model = TinyClassifier()
    plugin, _ = _plugin(model)
    plugin._draw = lambda: 0.0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plugin.before_forward(None)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        PnMParams(p_zero=0.5, p_plus=0.5, p_minus=0.5)


def test_alpha_fit_set_is_the_scaled_set():
    """The head rows of new classes are unmasked: they neither enter α nor get scaled."""
    torch.manual_seed(1)
    model = TinyClassifier()
    space = FullSpace(model)
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                        scenario="class-incremental")
    masks = head_masks(space, ctx, task=1)
    assert masks["fc.weight"][2:].eq(False).all() and masks["fc.weight"][:2].all()
    prev = space.effective_state()
    trained = {n: v + torch.randn_like(v) for n, v in prev.items()}
    fisher = {n: torch.rand_like(v) for n, v in prev.items()}
    delta = merging.task_vector(trained, prev)
    alpha = pnm_alpha(prev, delta, [trained], [fisher], masks=masks)
    merged = pnm_merge(prev, delta, alpha, masks=masks)
    # new-class rows are the trained ones, old ones scaled by α
    assert torch.equal(merged["fc.weight"][2:], trained["fc.weight"][2:])
    assert torch.allclose(merged["fc.weight"][:2], prev["fc.weight"][:2] + alpha * delta["fc.weight"][:2])
    # changing only the unmasked entries does not change α
    perturbed = {n: v.clone() for n, v in trained.items()}
    perturbed["fc.weight"][2:] += 100.0
    delta2 = merging.task_vector(perturbed, prev)
    assert pnm_alpha(prev, delta2, [perturbed], [fisher], masks=masks) == pytest.approx(alpha, abs=1e-12)


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
def test_one_forward_per_training_step(parameterisation, monkeypatch):
    """P&M's perturbation adds no forward pass: forward calls during training == steps."""
    import mergecl.bench.orchestration.runner as runner
    from avalanche.core import SupervisedPlugin

    counts = {"forward_in_steps": 0, "steps": 0}

    class StepCounter(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kw):
            self.hook = strategy.model.register_forward_hook(
                lambda *a: counts.__setitem__("forward_in_steps", counts["forward_in_steps"] + 1))

        def after_training_iteration(self, strategy, **kw):
            self.hook.remove()
            counts["steps"] += 1

    original = PerturbAndMerge.extra_plugins
    monkeypatch.setattr(PerturbAndMerge, "extra_plugins", lambda self: [*original(self), StepCounter()])
    record = quick_run("pnm", parameterisation=parameterisation, **{"params": {"p_zero": 0.0, "p_plus": 1.0, "p_minus": 0.0}})
    assert record.status == "ok"
    assert counts["steps"] == record.timings.train_steps > 0
    assert counts["forward_in_steps"] == counts["steps"]
    assert all(t["perturbed_steps"] == t["steps"] for t in record.diagnostics["per_task"])
    assert runner  # imported for monkeypatch visibility


@pytest.mark.e2e
def test_constant_memory_and_list_statistics_agree_in_a_run():
    constant = quick_run("pnm", params={"stats": "constant"})
    stored = quick_run("pnm", params={"stats": "list"})
    a = [t["merge_coefficient"] for t in constant.diagnostics["per_task"]]
    b = [t["merge_coefficient"] for t in stored.diagnostics["per_task"]]
    assert a == pytest.approx(b, abs=1e-6)
    assert constant.acc_matrix == stored.acc_matrix


# ------------------------------------------------------------------------------------------
# the merge rule


def _pnm_two_task_case():
    prev = {"w": T([0.5]), "head": T([0.0, 0.0]), "n": T(4)}
    delta = {"w": T([1.0]), "head": T([1.0, 10.0]), "n": T(5)}
    optima = [{"w": T([1.0]), "head": T([0.0, 0.0]), "n": T(1)},
              {"w": T([1.5]), "head": T([1.0, 10.0]), "n": T(5)}]
    fishers = [{"w": T([2.0]), "head": T([0.0, 0.0])},
               {"w": T([1.0]), "head": T([0.0, 5.0])}]
    return prev, delta, optima, fishers


def test_pnm_alpha_hand_computed_two_tasks():
    prev, delta, optima, fishers = _pnm_two_task_case()
    masks = {"head": T([True, False])}
    # alpha = -[2(0.5-1)1 + 1(0.5-1.5)1] / [(2+1)1] = 2/3 (the minimiser of
    # 2(theta-1)^2 + (theta-1.5)^2 over theta = 0.5 + alpha)
    assert pnm_alpha(prev, delta, optima, fishers, masks) == pytest.approx(2 / 3, abs=1e-12)
    # the unmasked head entry (a new class row) would dominate the fit: (2+500)/(3+500)
    assert pnm_alpha(prev, delta, optima, fishers) == pytest.approx(502 / 503, abs=1e-12)
    stats = PnMStatistics()
    for optimum, fisher in zip(optima, fishers):
        stats.add_task(optimum, fisher)
    assert stats.alpha(prev, delta, masks) == pytest.approx(2 / 3, abs=1e-7)
    assert stats.alpha(prev, delta) == pytest.approx(502 / 503, abs=1e-7)


def test_pnm_alpha_clipping_and_zero_denominator():
    prev, delta = {"w": T([0.0])}, {"w": T([1.0])}
    high = [{"w": T([3.0])}, {"w": T([1.0])}]  # (3 + 1) / 2 = 2 -> 1
    low = [{"w": T([-3.0])}, {"w": T([1.0])}]  # (-3 + 1) / 2 = -1 -> 0
    fishers = [{"w": T([1.0])}, {"w": T([1.0])}]
    assert pnm_alpha(prev, delta, high, fishers) == 1.0
    assert pnm_alpha(prev, delta, low, fishers) == 0.0
    zero_fishers = [{"w": T([0.0])}, {"w": T([0.0])}]
    assert pnm_alpha(prev, delta, high, zero_fishers) == 1.0
    assert pnm_alpha(prev, {"w": T([0.0])}, high, fishers) == 1.0
    assert pnm_alpha(prev, delta, high, fishers, masks={"w": T([False])}) == 1.0


def test_pnm_alpha_bad_input():
    prev, delta, optima, fishers = _pnm_two_task_case()
    with pytest.raises(ValueError, match="2 optima but 1"):
        pnm_alpha(prev, delta, optima, fishers[:1])
    with pytest.raises(ValueError, match="negative"):
        pnm_alpha(prev, delta, optima[:1], [{"w": T([-1.0])}])
    with pytest.raises(ValueError, match="'n'"):
        pnm_alpha(prev, delta, optima[:1], [{"n": T(1.0)}])
    with pytest.raises(ValueError, match="no task"):
        PnMStatistics().alpha(prev, delta)
    stats = PnMStatistics()
    stats.add_task(optima[0], fishers[0])
    with pytest.raises(ValueError, match="differ"):
        stats.add_task(optima[1], {"w": T([1.0])})


def _random_pnm_case(g: torch.Generator, kind: str):
    shapes = {"a": (3, 4), "b": (5,), "buf": (2,)}
    n_tasks = int(torch.randint(1, 5, (), generator=g))
    scale = float(10 ** torch.empty(()).uniform_(-2, 2, generator=g))

    def rand(shape):
        return torch.randn(shape, generator=g) * scale

    prev = {name: rand(shape) for name, shape in shapes.items()}
    prev["n"] = torch.tensor(3)
    delta = {name: rand(shape) for name, shape in shapes.items()}
    delta["n"] = torch.tensor(4)
    optima, fishers = [], []
    for _ in range(n_tasks):
        optimum = {name: rand(shape) for name, shape in shapes.items()}
        optimum["n"] = torch.tensor(1)
        optima.append(optimum)
        # Fishers cover the parameters only (not the float buffer), some entries exactly 0
        fishers.append({name: torch.rand(shapes[name], generator=g)
                        * (torch.rand(shapes[name], generator=g) > 0.2) for name in ("a", "b")})
    masks = None
    if kind in ("masked", "all-masked-out"):
        masks = {"a": torch.rand(shapes["a"], generator=g) > 0.4}
        if kind == "all-masked-out":
            masks = {"a": torch.zeros(shapes["a"], dtype=torch.bool),
                     "b": torch.zeros(shapes["b"], dtype=torch.bool)}
    elif kind == "zero-delta":
        delta = {name: torch.zeros_like(t) for name, t in delta.items()}
    elif kind == "zero-fisher":
        fishers = [{name: torch.zeros_like(t) for name, t in f.items()} for f in fishers]
    elif kind == "clip-high":  # optima far along +delta
        optima = [{n: (prev[n] + 5 * delta[n]) if n != "n" else t for n, t in o.items()}
                  for o in optima]
    elif kind == "clip-low":  # optima far along -delta
        optima = [{n: (prev[n] - 5 * delta[n]) if n != "n" else t for n, t in o.items()}
                  for o in optima]
    elif kind == "interior":  # the newest optimum is prev + delta, older ones near prev
        optima[-1] = {n: (prev[n] + delta[n]) if n != "n" else t for n, t in optima[-1].items()}
        for o in optima[:-1]:
            for n in shapes:
                o[n] = prev[n] + 0.1 * scale * torch.randn(shapes[n], generator=g)
    return prev, delta, optima, fishers, masks


CASE_KINDS = ["generic", "masked", "all-masked-out", "zero-delta", "zero-fisher",
              "clip-high", "clip-low", "interior"]


def test_pnm_statistics_agree_with_stored_list_form():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1234)
    seen = {"zero": 0, "one": 0, "interior": 0}
    for case in range(240):
        kind = CASE_KINDS[case % len(CASE_KINDS)]
        prev, delta, optima, fishers, masks = _random_pnm_case(g, kind)
        snapshot = copy.deepcopy((prev, delta, optima, fishers, masks))
        expected = pnm_alpha(prev, delta, optima, fishers, masks)
        stats = PnMStatistics()
        for optimum, fisher in zip(optima, fishers):
            stats.add_task(optimum, fisher)
        actual = stats.alpha(prev, delta, masks)
        assert actual == pytest.approx(expected, abs=1e-6), (case, kind)
        assert 0.0 <= actual <= 1.0
        seen["zero" if expected == 0 else "one" if expected == 1 else "interior"] += 1
        if kind in ("all-masked-out", "zero-delta", "zero-fisher"):
            assert expected == 1.0 and actual == 1.0
        if kind == "clip-high":
            assert expected == 1.0
        if kind == "clip-low":
            assert expected == 0.0
        assert_unchanged((prev, delta, optima, fishers, masks), snapshot)
    assert min(seen.values()) >= 20, seen


def test_pnm_statistics_memory_is_constant():
    g = torch.Generator().manual_seed(3)
    stats = PnMStatistics()
    sizes = []
    for _ in range(5):
        optimum = {"a": torch.randn(10, 10, generator=g), "n": torch.tensor(1)}
        stats.add_task(optimum, {"a": torch.rand(10, 10, generator=g, dtype=torch.float64)})
        sizes.append(stats.nbytes)
    assert sizes == [2 * 100 * 4] * 5
    assert stats.num_tasks == 5 and stats.names == ["a"]
    assert stats.fisher_sum["a"].dtype == torch.float32


def test_pnm_merge_hand_computed():
    prev = {"w": T([1.0, 2.0]), "n": T(0)}
    delta = {"w": T([4.0, -2.0]), "n": T(9)}
    assert_state_equal(pnm_merge(prev, delta, 0.25), {"w": T([2.0, 1.5]), "n": T(9)})
    assert_state_equal(pnm_merge(prev, delta, 0.25, masks={"w": T([True, False])}),
                        {"w": T([2.0, 0.0]), "n": T(9)})


# ------------------------------------------------------------------------------------------
# the plugin: α strictly inside (0, 1), fitted over exactly the entries the merge scales


def _task_batches(task, max_samples=None, batch_size=None):
    g = torch.Generator().manual_seed(50 + task)
    x = torch.randn(24, 4, generator=g)
    y = torch.tensor([0, 1] * 12) + 2 * task
    n = len(y) if max_samples is None else min(max_samples, len(y))
    size = batch_size or 8
    for start in range(0, n, size):
        yield x[start:min(start + size, n)], y[start:min(start + size, n)]


def test_plugin_alpha_is_the_masked_fit_and_strictly_inside_the_unit_interval():
    import copy

    from lifecycle import make_space, simulate
    from mergecl.methods.fisher import diagonal_fisher_loop

    model, space, ctx = make_space(batches=_task_batches)
    plugin = PerturbAndMerge(PnMParams(perturbation="none", fisher_samples=24), ctx)
    runs = simulate(plugin, space, 2)
    alphas = [r["diagnostics"]["merge_coefficient"] for r in runs]
    assert alphas[0] == pytest.approx(1.0)

    def fisher_at(state, task):
        probe = copy.deepcopy(model)
        FullSpace(probe).load_effective_state(state)
        mask = torch.zeros(4, dtype=torch.bool)
        mask[[2 * task, 2 * task + 1]] = True
        return diagonal_fisher_loop(probe, _task_batches(task), space.names, class_mask=mask)

    fishers = [fisher_at(runs[i]["trained"], i) for i in range(2)]
    optima = [runs[i]["trained"] for i in range(2)]
    start, trained = runs[1]["start"], runs[1]["trained"]
    delta = merging.task_vector(trained, start)
    masks = head_masks(space, ctx, 1)
    expected = pnm_alpha(start, delta, optima, fishers, masks=masks)
    assert alphas[1] == pytest.approx(expected, abs=1e-5)
    assert 0.05 < alphas[1] < 0.95
    # the fit without the head masks would differ: the test sees a missing mask
    assert abs(pnm_alpha(start, delta, optima, fishers) - expected) > 1e-3
    merged = runs[1]["merged"]
    for name, value in merged.items():
        want = start[name] + alphas[1] * delta[name]
        if name in masks:
            want = torch.where(masks[name], want, trained[name])
        torch.testing.assert_close(value, want, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# cases added for mutation testing (docs/mutation.md)


def test_pnm_alpha_refuses_a_non_finite_numerator_with_a_finite_denominator():
    prev, delta = {"w": T([float("inf")])}, {"w": T([1.0])}
    optima, fishers = [{"w": T([0.0])}], [{"w": T([1.0])}]
    with pytest.raises(ValueError, match="non-finite sums"):
        pnm_alpha(prev, delta, optima, fishers)  # numerator −inf, denominator 1
    stats = PnMStatistics()
    stats.add_task(optima[0], fishers[0])
    with pytest.raises(ValueError, match="non-finite sums"):
        stats.alpha(prev, delta)


def test_pnm_alpha_names_the_bad_input():
    prev, delta, optima, fishers = _pnm_two_task_case()
    with pytest.raises(ValueError, match=r"^delta: keys differ"):
        pnm_alpha(prev, {"w": T([1.0])}, optima, fishers)
    with pytest.raises(ValueError, match=r"^fishers\[1\]: entry 'zz'"):
        pnm_alpha(prev, delta, optima, [fishers[0], {"zz": T([1.0])}])
    lacking = [optima[0], {"head": T([1.0, 10.0]), "n": T(5)}]
    with pytest.raises(ValueError, match=r"optima\[1\] lacks entry 'w'"):
        pnm_alpha(prev, delta, lacking, fishers)
    reshaped = [optima[0], dict(optima[1], w=T([1.5, 1.5]))]
    with pytest.raises(ValueError, match=r"optima\[1\] lacks entry 'w' \(or its shape differs\)"):
        pnm_alpha(prev, delta, reshaped, fishers)


def test_pnm_statistics_hold_the_hand_computed_sums_and_check_their_inputs():
    stats = PnMStatistics()
    stats.add_task({"a": T([1.0, 2.0]), "b": T([3.0])}, {"a": T([0.5, 1.0]), "b": T([2.0])})
    stats.add_task({"a": T([3.0, -1.0]), "b": T([1.0])}, {"a": T([1.0, 0.0]), "b": T([1.0])})
    assert stats.fisher_sum["a"].tolist() == [1.5, 1.0] and stats.fisher_sum["b"].tolist() == [3.0]
    # M = Σ F ⊙ θ*: [0.5·1 + 1·3, 1·2 + 0·(−1)], [2·3 + 1·1]
    assert stats.weighted_optimum_sum["a"].tolist() == [3.5, 2.0]
    assert stats.weighted_optimum_sum["b"].tolist() == [7.0]
    with pytest.raises(ValueError, match=r"^fisher: entry 'zz'"):
        stats.add_task({"a": T([1.0, 2.0])}, {"zz": T([1.0])})
    with pytest.raises(ValueError, match=r"^delta: keys differ"):
        stats.alpha({"a": T([0.0, 0.0]), "b": T([0.0])}, {"a": T([1.0, 1.0])})
    with pytest.raises(ValueError, match="entry 'b' is missing from prev"):
        stats.alpha({"a": T([0.0, 0.0])}, {"a": T([1.0, 1.0])})

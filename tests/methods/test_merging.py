"""Tests of mergecl.methods.merging: hand-computed cases, conventions, and oracle agreement."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from mergecl.methods import merging as mg

T = torch.tensor


def _assert_state_equal(actual, expected, *, exact: bool = True) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        if exact:
            assert actual[name].dtype == expected[name].dtype, name
            assert torch.equal(actual[name], expected[name]), (name, actual[name], expected[name])
        else:
            torch.testing.assert_close(actual[name], expected[name], msg=name)


def _assert_unchanged(after, before) -> None:
    """Recursive exact equality of nested lists/tuples/dicts of tensors."""
    if isinstance(before, torch.Tensor):
        assert after.dtype == before.dtype and torch.equal(after, before)
    elif isinstance(before, dict):
        assert after.keys() == before.keys()
        for key in before:
            _assert_unchanged(after[key], before[key])
    elif isinstance(before, (list, tuple)):
        assert len(after) == len(before)
        for x, y in zip(after, before):
            _assert_unchanged(x, y)
    else:
        assert after == before


def _pair():
    """Two compatible states with a float param, a float buffer and an int buffer."""
    older = {"w": T([1.0, -2.0, 3.0]), "bn.mean": T([0.0, 4.0]),
             "steps": T(3, dtype=torch.int64)}
    newer = {"w": T([3.0, 2.0, -1.0]), "bn.mean": T([2.0, 0.0]),
             "steps": T(7, dtype=torch.int64)}
    return older, newer


# ------------------------------------------------------------------------------------------
# basics


def test_is_mergeable():
    assert mg.is_mergeable(torch.zeros(2))
    assert mg.is_mergeable(torch.zeros(2, dtype=torch.float16))
    assert mg.is_mergeable(torch.zeros(2, dtype=torch.bfloat16))
    assert not mg.is_mergeable(torch.zeros(2, dtype=torch.int64))
    assert not mg.is_mergeable(torch.zeros(2, dtype=torch.bool))


def test_clone_state_is_independent():
    state, _ = _pair()
    copied = mg.clone_state(state)
    copied["w"].add_(1)
    assert torch.equal(state["w"], T([1.0, -2.0, 3.0]))
    assert mg.state_nbytes(state) == 3 * 4 + 2 * 4 + 8


def test_masked_numel_counts_float_masked_entries():
    state, _ = _pair()
    assert mg.masked_numel(state) == 5  # the int buffer is never merged
    masks = {"w": T([True, False, True])}
    assert mg.masked_numel(state, masks) == 2 + 2


@pytest.mark.parametrize("masks, message", [
    ({"nope": T([True])}, "nope"),
    ({"w": T([1, 0, 1])}, "bool"),
    ({"w": T([True, False])}, "shape"),
    ({"steps": T(True)}, "steps"),
])
def test_bad_masks_raise(masks, message):
    state, _ = _pair()
    with pytest.raises(ValueError, match=message):
        mg.masked_numel(state, masks)


@pytest.mark.parametrize("call", [
    lambda a, b: mg.task_vector(a, b),
    lambda a, b: mg.add_scaled(a, b),
    lambda a, b: mg.interpolate(a, b, 0.5),
    lambda a, b: mg.average([a, b]),
    lambda a, b: mg.max_magnitude([a, b]),
    lambda a, b: mg.max_magnitude_fold_(mg.clone_state(a), b),
    lambda a, b: mg.ties_merge([a, b]),
    lambda a, b: mg.random_mix([a, b], torch.Generator().manual_seed(0)),
    lambda a, b: mg.pnm_merge(a, b, 0.5),
])
def test_mismatched_keys_and_shapes_raise(call):
    older, newer = _pair()
    missing = {k: v for k, v in newer.items() if k != "bn.mean"}
    with pytest.raises(ValueError, match="bn.mean"):
        call(older, missing)
    reshaped = dict(newer, w=torch.zeros(4))
    with pytest.raises(ValueError, match="'w'"):
        call(older, reshaped)


# ------------------------------------------------------------------------------------------
# task arithmetic, interpolation, averaging


def test_task_vector_and_add_scaled_hand_computed():
    base, tuned = _pair()
    tv = mg.task_vector(tuned, base)
    _assert_state_equal(tv, {"w": T([2.0, 4.0, -4.0]), "bn.mean": T([2.0, -4.0]),
                             "steps": T(7)})
    merged = mg.add_scaled(base, tv, 0.5)
    _assert_state_equal(merged, {"w": T([2.0, 0.0, 1.0]), "bn.mean": T([1.0, 2.0]),
                                 "steps": T(7)})
    # unmasked entries get the full task vector (= the fine-tuned value)
    masked = mg.add_scaled(base, tv, 0.5, masks={"w": T([True, False, True])})
    _assert_state_equal(masked, {"w": T([2.0, 2.0, 1.0]), "bn.mean": T([1.0, 2.0]),
                                 "steps": T(7)})
    _assert_state_equal(mg.add_scaled(base, tv, 1.0), tuned)


def test_interpolate_hand_computed_masks_and_endpoints():
    older, newer = _pair()
    mixed = mg.interpolate(older, newer, 0.25)
    _assert_state_equal(mixed, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([0.5, 3.0]),
                                "steps": T(7)})
    masked = mg.interpolate(older, newer, 0.25, masks={"bn.mean": T([False, True])})
    _assert_state_equal(masked, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([2.0, 3.0]),
                                 "steps": T(7)})
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(50, generator=g)}
    b = {"w": torch.randn(50, generator=g)}
    assert torch.equal(mg.interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(mg.interpolate(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError, match="nan"):
        mg.interpolate(a, b, float("nan"))


def test_average_uniform_weighted_and_bad_weights():
    older, newer = _pair()
    third = {"w": T([2.0, 3.0, 4.0]), "bn.mean": T([1.0, 2.0]), "steps": T(9)}
    mean = mg.average([older, newer, third])
    _assert_state_equal(mean, {"w": T([2.0, 1.0, 2.0]), "bn.mean": T([1.0, 2.0]),
                               "steps": T(9)})
    weighted = mg.average([older, newer], weights=[3.0, 1.0])
    _assert_state_equal(weighted, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([0.5, 3.0]),
                                   "steps": T(7)})
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("inf")]):
        with pytest.raises(ValueError):
            mg.average([older, newer], weights=bad)
    with pytest.raises(ValueError, match="empty"):
        mg.average([])


def test_coma_recursion_equals_running_mean():
    g = torch.Generator().manual_seed(1)
    states = [{"w": torch.randn(6, generator=g, dtype=torch.float64)} for _ in range(5)]
    running = states[0]
    for t, state in enumerate(states[1:], start=2):
        running = mg.interpolate(running, state, 1.0 / t)
    torch.testing.assert_close(running["w"], mg.average(states)["w"])


# ------------------------------------------------------------------------------------------
# MagMax


def _magmax_vectors():
    return [
        {"w": T([1.0, -3.0, 2.0, 0.0]), "n": T([1])},
        {"w": T([-2.0, 3.0, 1.0, 0.0]), "n": T([2])},
        {"w": T([0.5, -1.0, -2.0, 0.0]), "n": T([3])},
    ]


def test_max_magnitude_hand_computed_ties_to_later():
    result = mg.max_magnitude(_magmax_vectors())
    # entry 1: |-3| == |3| -> task 2 (+3); entry 2: |2| == |-2| -> task 3 (-2)
    _assert_state_equal(result, {"w": T([-2.0, 3.0, -2.0, 0.0]), "n": T([3])})


def _compile_works() -> bool:
    try:
        mg.max_magnitude_fold_({"w": torch.ones(3)}, {"w": -torch.ones(3) * 2}, backend="compiled")
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_max_magnitude_fold_matches_list_form_exactly(backend):
    if backend == "compiled" and not _compile_works():
        pytest.skip("torch.compile is not usable on this machine")
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        count = int(torch.randint(1, 6, (), generator=g))
        # integer-valued entries make magnitude ties (incl. opposite signs) frequent
        vectors = [{"a": torch.randint(-3, 4, (5, 4), generator=g).float(),
                    "b": torch.randn(7, generator=g),
                    "n": torch.randint(0, 9, (2,), generator=g)} for _ in range(count)]
        snapshot = copy.deepcopy(vectors)
        accumulator = mg.MaxMagnitudeAccumulator(backend=backend)
        for tv in vectors:
            accumulator.add(tv)
        _assert_state_equal(accumulator.result, mg.max_magnitude(vectors))
        assert accumulator.count == count
        _assert_unchanged(vectors, snapshot)


def test_max_magnitude_fold_is_in_place():
    vectors = _magmax_vectors()
    running = mg.clone_state(vectors[0])
    pointers = {name: t.data_ptr() for name, t in running.items()}
    returned = mg.max_magnitude_fold_(running, vectors[1])
    assert returned is running
    assert {name: t.data_ptr() for name, t in running.items()} == pointers
    _assert_state_equal(running, {"w": T([-2.0, 3.0, 2.0, 0.0]), "n": T([2])})
    assert mg.MaxMagnitudeAccumulator().nbytes == 0
    with pytest.raises(ValueError, match="no task vector"):
        _ = mg.MaxMagnitudeAccumulator().result


def test_max_magnitude_fold_backend_is_checked():
    with pytest.raises(ValueError, match=r"'auto', 'eager', 'compiled'.*'fast'"):
        mg.max_magnitude_fold_({"w": torch.ones(2)}, {"w": torch.ones(2)}, backend="fast")
    with pytest.raises(ValueError, match="'fast'"):
        mg.MaxMagnitudeAccumulator(backend="fast")


def test_max_magnitude_fold_falls_back_to_eager_when_compilation_fails(monkeypatch):
    def broken_kernel():
        def kernel(currents, incomings):
            raise OSError("no C++ compiler")
        return kernel

    monkeypatch.setattr(mg, "_compiled_fold_kernel", broken_kernel)
    monkeypatch.setattr(mg, "_compile_error", None)
    monkeypatch.setattr(mg, "COMPILE_MIN_ENTRIES", 0)  # "auto" would compile this tiny state
    vectors = _magmax_vectors()
    expected = mg.max_magnitude(vectors[:2])
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler.*backend='eager'"):
        mg.max_magnitude_fold_(mg.clone_state(vectors[0]), vectors[1], backend="compiled")
    monkeypatch.setattr(mg, "_compile_error", None)
    with pytest.warns(RuntimeWarning, match="using the eager fold"):
        folded = mg.max_magnitude_fold_(mg.clone_state(vectors[0]), vectors[1])
    _assert_state_equal(folded, expected)
    assert mg._compile_error is not None  # later "auto" folds go straight to eager


def test_magmax_merge_end_to_end():
    base = {"w": T([1.0, 1.0]), "n": T(0)}
    tuned = [{"w": T([3.0, 0.0]), "n": T(1)}, {"w": T([0.0, 2.0]), "n": T(2)}]
    tvs = [mg.task_vector(t, base) for t in tuned]
    merged = mg.add_scaled(base, mg.max_magnitude(tvs), 0.5)
    # tau_MM = [2, 1] (|2|>|-1|, |1|>=|-1| -> later): theta = [1 + 1, 1 + 0.5]
    _assert_state_equal(merged, {"w": T([2.0, 1.5]), "n": T(2)})


# ------------------------------------------------------------------------------------------
# P&M


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
    assert mg.pnm_alpha(prev, delta, optima, fishers, masks) == pytest.approx(2 / 3, abs=1e-12)
    # the unmasked head entry (a new class row) would dominate the fit: (2+500)/(3+500)
    assert mg.pnm_alpha(prev, delta, optima, fishers) == pytest.approx(502 / 503, abs=1e-12)
    stats = mg.PnMStatistics()
    for optimum, fisher in zip(optima, fishers):
        stats.add_task(optimum, fisher)
    assert stats.alpha(prev, delta, masks) == pytest.approx(2 / 3, abs=1e-7)
    assert stats.alpha(prev, delta) == pytest.approx(502 / 503, abs=1e-7)


def test_pnm_alpha_clipping_and_zero_denominator():
    prev, delta = {"w": T([0.0])}, {"w": T([1.0])}
    high = [{"w": T([3.0])}, {"w": T([1.0])}]  # (3 + 1) / 2 = 2 -> 1
    low = [{"w": T([-3.0])}, {"w": T([1.0])}]  # (-3 + 1) / 2 = -1 -> 0
    fishers = [{"w": T([1.0])}, {"w": T([1.0])}]
    assert mg.pnm_alpha(prev, delta, high, fishers) == 1.0
    assert mg.pnm_alpha(prev, delta, low, fishers) == 0.0
    zero_fishers = [{"w": T([0.0])}, {"w": T([0.0])}]
    assert mg.pnm_alpha(prev, delta, high, zero_fishers) == 1.0
    assert mg.pnm_alpha(prev, {"w": T([0.0])}, high, fishers) == 1.0
    assert mg.pnm_alpha(prev, delta, high, fishers, masks={"w": T([False])}) == 1.0


def test_pnm_alpha_bad_input():
    prev, delta, optima, fishers = _pnm_two_task_case()
    with pytest.raises(ValueError, match="2 optima but 1"):
        mg.pnm_alpha(prev, delta, optima, fishers[:1])
    with pytest.raises(ValueError, match="negative"):
        mg.pnm_alpha(prev, delta, optima[:1], [{"w": T([-1.0])}])
    with pytest.raises(ValueError, match="'n'"):
        mg.pnm_alpha(prev, delta, optima[:1], [{"n": T(1.0)}])
    with pytest.raises(ValueError, match="no task"):
        mg.PnMStatistics().alpha(prev, delta)
    stats = mg.PnMStatistics()
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
        expected = mg.pnm_alpha(prev, delta, optima, fishers, masks)
        stats = mg.PnMStatistics()
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
        _assert_unchanged((prev, delta, optima, fishers, masks), snapshot)
    assert min(seen.values()) >= 20, seen


def test_pnm_statistics_memory_is_constant():
    g = torch.Generator().manual_seed(3)
    stats = mg.PnMStatistics()
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
    _assert_state_equal(mg.pnm_merge(prev, delta, 0.25), {"w": T([2.0, 1.5]), "n": T(9)})
    _assert_state_equal(mg.pnm_merge(prev, delta, 0.25, masks={"w": T([True, False])}),
                        {"w": T([2.0, 0.0]), "n": T(9)})


# ------------------------------------------------------------------------------------------
# BECAME


def test_became_lambda_hand_computed_and_minimises_objective():
    delta = {"w": T([1.0, 2.0]), "n": T(1)}
    f_new = {"w": T([1.0, 1.0])}
    f_old = {"w": T([3.0, 0.0])}
    lam = mg.became_lambda(delta, f_new, f_old)
    assert lam == pytest.approx(5 / 8, abs=1e-12)  # (1 + 4) / (4·1 + 1·4)
    quad_old = 3.0  # Δᵀ F_old Δ
    quad_new = 5.0  # Δᵀ F_t Δ
    grid = [i / 10000 for i in range(10001)]
    objective = [0.5 * x * x * quad_old + 0.5 * (1 - x) ** 2 * quad_new for x in grid]
    best = grid[min(range(len(grid)), key=objective.__getitem__)]
    assert best == pytest.approx(lam, abs=1e-4)
    # masks: only the first entry -> 1 / (1 + 3)
    assert mg.became_lambda(delta, f_new, f_old, masks={"w": T([True, False])}) == 0.25
    # zero denominator -> 0.5
    assert mg.became_lambda({"w": T([0.0, 0.0]), "n": T(1)}, f_new, f_old) == 0.5
    with pytest.raises(ValueError, match="different entries"):
        mg.became_lambda(delta, f_new, {})


# ------------------------------------------------------------------------------------------
# DARE, TIES, random mix


def test_dare_exact_zeros_rescaling_and_unbiased():
    g = torch.Generator().manual_seed(5)
    tv = {"w": torch.randn(200, generator=g), "n": T([1, 2])}
    dropped = mg.dare(tv, 0.75, g)
    kept = dropped["w"] != 0
    assert torch.equal(dropped["n"], tv["n"])
    torch.testing.assert_close(dropped["w"][kept], tv["w"][kept] * 4)
    assert 0.15 < kept.float().mean() < 0.35
    draws = torch.stack([mg.dare(tv, 0.5, g)["w"] for _ in range(2000)])
    assert set(draws[:, 0].unique().tolist()) <= {0.0, float(tv["w"][0] * 2)}
    # the mean of 2000 draws is unbiased: standard error |w|/sqrt(2000)
    error = (draws.mean(0) - tv["w"]).abs() / tv["w"].abs().clamp(min=1e-6)
    assert float(error.max()) < 5 / math.sqrt(2000)
    _assert_state_equal(mg.dare(tv, 0.0, g), tv)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="drop_rate"):
            mg.dare(tv, bad, g)


def test_ties_merge_hand_computed():
    vectors = [{"w": T([3.0, -1.0, 0.5, 2.0, 0.0]), "n": T(1)},
               {"w": T([-4.0, 1.0, 0.0, 1.0, 0.2]), "n": T(2)},
               {"w": T([2.0, -3.0, 1.0, 0.0, 0.0]), "n": T(3)}]
    # top 40% of 5 -> k = 2 per task; trimmed: [3,0,0,2,0], [-4,1,0,1,0] (tie at 1 kept),
    # [2,-3,0,0,0]; elected signs of sums [1,-2,0,3,0] -> [+,-,0,+,0];
    # disjoint means: (3+2)/2, -3, 0, (2+1)/2, 0
    merged = mg.ties_merge(vectors, top_k=0.4)
    _assert_state_equal(merged, {"w": T([2.5, -3.0, 0.0, 1.5, 0.0]), "n": T(3)})
    scaled = mg.ties_merge(vectors, top_k=0.4, scale=0.5)
    _assert_state_equal(scaled, {"w": T([1.25, -1.5, 0.0, 0.75, 0.0]), "n": T(3)})
    # keeping everything: plain disjoint mean
    everything = mg.ties_merge(vectors, top_k=1.0)
    torch.testing.assert_close(everything["w"], T([2.5, -2.0, 0.75, 1.5, 0.2]))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_k"):
            mg.ties_merge(vectors, top_k=bad)


def test_random_mix_takes_each_entry_from_one_input():
    g = torch.Generator().manual_seed(7)
    vectors = [{"w": torch.full((40, 5), float(i)), "n": T(i)} for i in range(3)]
    mixed = mg.random_mix(vectors, g)
    assert torch.equal(mixed["n"], T(2))
    assert set(mixed["w"].unique().tolist()) == {0.0, 1.0, 2.0}
    g2 = torch.Generator().manual_seed(8)
    distinct = [{"w": torch.randn(30, generator=g2)} for _ in range(4)]
    mixed = mg.random_mix(distinct, g)["w"]
    stacked = torch.stack([tv["w"] for tv in distinct])
    assert bool((stacked == mixed).any(dim=0).all())


# ------------------------------------------------------------------------------------------
# purity


def test_no_function_modifies_its_inputs():
    g = torch.Generator().manual_seed(11)

    def state():
        return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
                "n": torch.randint(0, 5, (2,), generator=g)}

    a, b, c = state(), state(), state()
    fishers = [{"w": torch.rand(4, 3, generator=g)} for _ in range(2)]
    masks = {"w": torch.rand(4, 3, generator=g) > 0.5}
    inputs = (a, b, c, fishers, masks)
    snapshot = copy.deepcopy(inputs)
    mg.task_vector(a, b)
    mg.add_scaled(a, b, 0.3, masks)
    mg.interpolate(a, b, 0.3, masks)
    mg.average([a, b, c], [1.0, 2.0, 3.0])
    mg.max_magnitude([a, b, c])
    accumulator = mg.MaxMagnitudeAccumulator()
    for tv in (a, b, c):
        accumulator.add(tv)
    mg.pnm_alpha(a, b, [b, c], fishers, masks)
    stats = mg.PnMStatistics()
    stats.add_task(b, fishers[0])
    stats.alpha(a, b, masks)
    mg.pnm_merge(a, b, 0.4, masks)
    mg.became_lambda(a, fishers[0], fishers[1], masks)
    mg.dare(a, 0.3, g)
    mg.ties_merge([a, b, c])
    mg.random_mix([a, b, c], g)
    mg.masked_numel(a, masks)
    _assert_unchanged(inputs, snapshot)

"""Tests of mergecl.methods.merging (generic state-dict algebra): hand-computed cases and conventions."""

from __future__ import annotations

import copy

import pytest
import torch
from mergecl.methods import magmax, pnm, random_mix, ties
from mergecl.methods import merging as mg
from state_helpers import T, assert_state_equal, assert_unchanged


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
    lambda a, b: magmax.max_magnitude([a, b]),
    lambda a, b: magmax.max_magnitude_fold_(mg.clone_state(a), b),
    lambda a, b: ties.ties_merge([a, b]),
    lambda a, b: random_mix.random_mix([a, b], torch.Generator().manual_seed(0)),
    lambda a, b: pnm.pnm_merge(a, b, 0.5),
])
def test_mismatched_keys_and_shapes_raise(call):
    """The convention holds for the generic algebra and for the method rules built on it."""
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
    assert_state_equal(tv, {"w": T([2.0, 4.0, -4.0]), "bn.mean": T([2.0, -4.0]),
                             "steps": T(7)})
    merged = mg.add_scaled(base, tv, 0.5)
    assert_state_equal(merged, {"w": T([2.0, 0.0, 1.0]), "bn.mean": T([1.0, 2.0]),
                                 "steps": T(7)})
    # unmasked entries get the full task vector (= the fine-tuned value)
    masked = mg.add_scaled(base, tv, 0.5, masks={"w": T([True, False, True])})
    assert_state_equal(masked, {"w": T([2.0, 2.0, 1.0]), "bn.mean": T([1.0, 2.0]),
                                 "steps": T(7)})
    assert_state_equal(mg.add_scaled(base, tv, 1.0), tuned)


def test_interpolate_hand_computed_masks_and_endpoints():
    older, newer = _pair()
    mixed = mg.interpolate(older, newer, 0.25)
    assert_state_equal(mixed, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([0.5, 3.0]),
                                "steps": T(7)})
    masked = mg.interpolate(older, newer, 0.25, masks={"bn.mean": T([False, True])})
    assert_state_equal(masked, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([2.0, 3.0]),
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
    assert_state_equal(mean, {"w": T([2.0, 1.0, 2.0]), "bn.mean": T([1.0, 2.0]),
                               "steps": T(9)})
    weighted = mg.average([older, newer], weights=[3.0, 1.0])
    assert_state_equal(weighted, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([0.5, 3.0]),
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
# flattening


def test_flatten_and_unflatten_round_trip():
    state = {"a": T([[1.0, 2.0], [3.0, 4.0]]), "b": T([5.0]), "n": T([7])}
    flat = mg.flatten_state(state, ["b", "a"])
    assert flat.tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]
    back = mg.unflatten_state(flat * 2, state, ["b", "a"])
    assert back["a"].tolist() == [[2.0, 4.0], [6.0, 8.0]] and back["b"].tolist() == [10.0]
    with pytest.raises(ValueError, match="expected"):
        mg.unflatten_state(flat[:3], state, ["b", "a"])
    with pytest.raises(ValueError, match="not in the state"):
        mg.flatten_state(state, ["zz"])


# ------------------------------------------------------------------------------------------
# purity


def test_no_function_modifies_its_inputs():
    g = torch.Generator().manual_seed(11)

    def state():
        return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
                "n": torch.randint(0, 5, (2,), generator=g)}

    a, b, c = state(), state(), state()
    masks = {"w": torch.rand(4, 3, generator=g) > 0.5}
    inputs = (a, b, c, masks)
    snapshot = copy.deepcopy(inputs)
    mg.task_vector(a, b)
    mg.add_scaled(a, b, 0.3, masks)
    mg.interpolate(a, b, 0.3, masks)
    mg.average([a, b, c], [1.0, 2.0, 3.0])
    mg.masked_numel(a, masks)
    mg.flatten_state(a, ["w", "b"])
    assert_unchanged(inputs, snapshot)


# ------------------------------------------------------------------------------------------
# validation helpers and defaults (cases added for mutation testing, docs/mutation.md)


def test_check_states_names_the_index_of_the_bad_state():
    older, newer = _pair()
    bad = {k: v for k, v in newer.items() if k != "w"}
    with pytest.raises(ValueError, match=r"^states\[2\]: keys differ"):
        mg.check_states([older, newer, bad], "states")


def test_the_validated_value_is_named_first_in_the_message():
    base, tuned = _pair()
    missing = {k: v for k, v in tuned.items() if k != "w"}
    with pytest.raises(ValueError, match=r"^base: keys differ"):
        mg.task_vector(tuned, missing)
    with pytest.raises(ValueError, match=r"^tv: keys differ"):
        mg.add_scaled(base, missing)
    with pytest.raises(ValueError, match=r"^scale must be finite"):
        mg.add_scaled(base, tuned, float("inf"))


def test_check_fishers_accepts_a_non_negative_subset_and_refuses_bad_entries():
    state, _ = _pair()
    mg.check_fishers(state, {}, "F")
    mg.check_fishers(state, {"w": T([0.0, 0.5, 2.0])}, "F")  # a subset; F = 0 is allowed
    cases = [({"zz": T([1.0])}, r"^F: entry 'zz' is not in the state dict"),
             ({"w": T([1, 2, 3])}, "must be a floating-point tensor"),
             ({"w": [1.0, 2.0, 3.0]}, "must be a floating-point tensor"),
             ({"steps": T(1.0)}, "non-floating entry"),
             ({"w": T([1.0, 2.0])}, r"has shape \(2,\), expected \(3,\)"),
             ({"w": T([1.0, -0.5, 2.0])}, "negative values")]
    for fisher, message in cases:
        with pytest.raises(ValueError, match=message):
            mg.check_fishers(state, fisher, "F")


def test_selected_float64_flattens_or_selects_in_float64():
    values = T([[1.0, 2.0], [3.0, 4.0]])
    flat = mg.selected_float64(values, None)
    assert flat.dtype == torch.float64 and flat.tolist() == [1.0, 2.0, 3.0, 4.0]
    picked = mg.selected_float64(values, T([[True, False], [False, True]]))
    assert picked.dtype == torch.float64 and picked.tolist() == [1.0, 4.0]


def test_masked_numel_skips_a_non_float_entry_before_float_ones():
    state = {"steps": T(3), "w": T([1.0, 2.0, 3.0]), "b": T([0.0, 1.0])}
    assert mg.masked_numel(state) == 5
    assert mg.masked_numel(state, {"b": T([False, True])}) == 4


def test_add_scaled_default_scale_is_one():
    base, tuned = _pair()
    assert_state_equal(mg.add_scaled(base, mg.task_vector(tuned, base)), tuned)


def test_a_non_float_entry_first_does_not_stop_the_merge_of_later_entries():
    older = {"steps": T(3), "w": T([1.0, -2.0])}
    newer = {"steps": T(7), "w": T([3.0, 2.0])}
    half = {"steps": T(7), "w": T([2.0, 0.0])}
    assert_state_equal(mg.add_scaled(older, mg.task_vector(newer, older), 0.5), half)
    assert_state_equal(mg.interpolate(older, newer, 0.5), half)
    assert_state_equal(mg.average([older, newer]), half)


def test_average_takes_zero_and_fractional_weights():
    older, newer = _pair()
    assert_state_equal(mg.average([older, newer], weights=[0.0, 0.5]), newer)
    quarter = mg.average([older, newer], weights=[0.75, 0.25])
    assert_state_equal(quarter, {"w": T([1.5, -1.0, 2.0]), "bn.mean": T([0.5, 3.0]),
                                 "steps": T(7)})


def test_interpolate_and_average_name_the_bad_value_first():
    older, newer = _pair()
    missing = {k: v for k, v in older.items() if k != "w"}
    with pytest.raises(ValueError, match=r"^weight_b must be finite"):
        mg.interpolate(older, newer, float("inf"))
    with pytest.raises(ValueError, match=r"^a: keys differ"):
        mg.interpolate(missing, newer, 0.5)
    with pytest.raises(ValueError, match=r"^states\[1\]: keys differ"):
        mg.average([newer, missing])
    with pytest.raises(ValueError, match=r"^weights\[1\] must be finite"):
        mg.average([older, newer], weights=[1.0, float("nan")])


def test_unflatten_state_advances_the_offset_over_three_entries():
    state = {"a": T([1.0, 2.0]), "b": T([[3.0, 4.0], [5.0, 6.0]]), "c": T([7.0])}
    names = ["a", "b", "c"]
    back = mg.unflatten_state(mg.flatten_state(state, names), state, names)
    assert_state_equal(back, state)

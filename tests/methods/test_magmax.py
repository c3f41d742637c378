"""MagMax (mergecl.methods.magmax): the selection rule against hand-computed cases and its
list-form oracle, the streaming fold and its backends, and the plugin's merged state."""

from __future__ import annotations

import copy

import pytest
import torch
from mergecl.methods import magmax as mm
from mergecl.methods import merging as mg
from state_helpers import T, assert_state_equal, assert_unchanged


def _magmax_vectors():
    return [
        {"w": T([1.0, -3.0, 2.0, 0.0]), "n": T([1])},
        {"w": T([-2.0, 3.0, 1.0, 0.0]), "n": T([2])},
        {"w": T([0.5, -1.0, -2.0, 0.0]), "n": T([3])},
    ]


def test_max_magnitude_hand_computed_ties_to_later():
    result = mm.max_magnitude(_magmax_vectors())
    # entry 1: |-3| == |3| -> task 2 (+3); entry 2: |2| == |-2| -> task 3 (-2)
    assert_state_equal(result, {"w": T([-2.0, 3.0, -2.0, 0.0]), "n": T([3])})


def _compile_works() -> bool:
    try:
        mm.max_magnitude_fold_({"w": torch.ones(3)}, {"w": -torch.ones(3) * 2}, backend="compiled")
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
        running = mg.clone_state(vectors[0])
        for tv in vectors[1:]:
            mm.max_magnitude_fold_(running, tv, backend=backend)
        assert_state_equal(running, mm.max_magnitude(vectors))
        assert_unchanged(vectors, snapshot)


def test_max_magnitude_fold_is_in_place():
    vectors = _magmax_vectors()
    running = mg.clone_state(vectors[0])
    pointers = {name: t.data_ptr() for name, t in running.items()}
    returned = mm.max_magnitude_fold_(running, vectors[1])
    assert returned is running
    assert {name: t.data_ptr() for name, t in running.items()} == pointers
    assert_state_equal(running, {"w": T([-2.0, 3.0, 2.0, 0.0]), "n": T([2])})


def test_max_magnitude_fold_backend_is_checked():
    with pytest.raises(ValueError, match=r"'auto', 'eager', 'compiled'.*'fast'"):
        mm.max_magnitude_fold_({"w": torch.ones(2)}, {"w": torch.ones(2)}, backend="fast")


def test_max_magnitude_fold_falls_back_to_eager_when_compilation_fails(monkeypatch):
    def broken_kernel():
        def kernel(currents, incomings):
            raise OSError("no C++ compiler")
        return kernel

    monkeypatch.setattr(mm, "_compiled_fold_kernel", broken_kernel)
    monkeypatch.setattr(mm, "_compile_error", None)
    monkeypatch.setattr(mm, "COMPILE_MIN_ENTRIES", 0)  # "auto" would compile this tiny state
    vectors = _magmax_vectors()
    expected = mm.max_magnitude(vectors[:2])
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler.*backend='eager'"):
        mm.max_magnitude_fold_(mg.clone_state(vectors[0]), vectors[1], backend="compiled")
    monkeypatch.setattr(mm, "_compile_error", None)
    with pytest.warns(RuntimeWarning, match="using the eager fold"):
        folded = mm.max_magnitude_fold_(mg.clone_state(vectors[0]), vectors[1])
    assert_state_equal(folded, expected)
    assert mm._compile_error is not None  # later "auto" folds go straight to eager


def test_magmax_merge_end_to_end():
    base = {"w": T([1.0, 1.0]), "n": T(0)}
    tuned = [{"w": T([3.0, 0.0]), "n": T(1)}, {"w": T([0.0, 2.0]), "n": T(2)}]
    tvs = [mg.task_vector(t, base) for t in tuned]
    merged = mg.add_scaled(base, mm.max_magnitude(tvs), 0.5)
    # tau_MM = [2, 1] (|2|>|-1|, |1|>=|-1| -> later): theta = [1 + 1, 1 + 0.5]
    assert_state_equal(merged, {"w": T([2.0, 1.5]), "n": T(2)})




# ------------------------------------------------------------------------------------------
# the plugin: θ̂_t = θ₀ + λ·τ_MM on the backbone, head rows as trained, start points


def _slow_max_magnitude(taus):
    """Entry by entry in Python: the τ_i of largest |τ_i,k|, ties to the later task."""
    out = {}
    for name in taus[0]:
        flat = [tau[name].reshape(-1).tolist() for tau in taus]
        chosen = []
        for k in range(len(flat[0])):
            best = flat[0][k]
            for values in flat[1:]:
                if abs(values[k]) >= abs(best):
                    best = values[k]
            chosen.append(best)
        out[name] = torch.tensor(chosen).reshape(taus[0][name].shape)
    return out


@pytest.mark.parametrize("variant", ["sequential", "ind"])
def test_plugin_merged_state_is_theta0_plus_lambda_times_selection(variant):
    from lifecycle import make_space, simulate

    classes = [[0], [1, 2], [3]]
    _, space, ctx = make_space(classes=classes)
    pretrained = space.effective_state()

    def train(task, start):
        from lifecycle import displacement

        step = displacement(space, task, classes=classes)
        return {n: start[n] + step[n] for n in start}

    plugin = mm.MagMax(mm.MagMaxParams(lam=0.3, variant=variant), ctx)
    runs = simulate(plugin, space, 3, train=train)
    body = [n for n in pretrained if n not in space.head_names]
    for task, run in enumerate(runs):
        expected_start = pretrained if (variant == "ind" or task == 0) else runs[task - 1]["trained"]
        assert_state_equal(run["start"], expected_start)
        taus = [{n: runs[i]["trained"][n] - pretrained[n] for n in body} for i in range(task + 1)]
        selection = _slow_max_magnitude(taus)
        for name in body:
            torch.testing.assert_close(run["merged"][name], pretrained[name] + 0.3 * selection[name])
        assert run["diagnostics"]["merge_coefficient"] == 0.3
    assert sum(v.numel() for v in plugin.selection.values()) == sum(pretrained[n].numel() for n in body)


# ------------------------------------------------------------------------------------------
# cases added for mutation testing (docs/mutation.md)


def test_a_non_float_entry_first_does_not_stop_the_selection():
    vectors = [{"n": T([1]), "w": T([1.0, -3.0])}, {"n": T([2]), "w": T([-2.0, 1.0])}]
    expected = {"n": T([2]), "w": T([-2.0, -3.0])}
    assert_state_equal(mm.max_magnitude(vectors), expected)
    running = mg.clone_state(vectors[0])
    assert_state_equal(mm.max_magnitude_fold_(running, vectors[1], backend="eager"), expected)


def test_messages_name_the_bad_value_first():
    a, b = {"w": T([1.0, 2.0])}, {"v": T([1.0, 2.0])}
    with pytest.raises(ValueError, match=r"^task_vectors\[1\]: keys differ"):
        mm.max_magnitude([a, b])
    with pytest.raises(ValueError, match=r"^new_tv: keys differ"):
        mm.max_magnitude_fold_(mg.clone_state(a), b)
    with pytest.raises(ValueError, match=r"^max_magnitude_fold_: backend must be one of"):
        mm.max_magnitude_fold_(mg.clone_state(a), a, backend="fast")


def test_compilation_failure_is_reported_with_its_type_at_the_caller(monkeypatch):
    def broken_kernel():
        def kernel(currents, incomings):
            raise OSError("no C++ compiler")
        return kernel

    monkeypatch.setattr(mm, "_compiled_fold_kernel", broken_kernel)
    monkeypatch.setattr(mm, "_compile_error", None)
    monkeypatch.setattr(mm, "COMPILE_MIN_ENTRIES", 0)
    vectors = _magmax_vectors()
    with pytest.warns(RuntimeWarning) as record:
        mm.max_magnitude_fold_(mg.clone_state(vectors[0]), vectors[1])
    assert mm._compile_error == "OSError: no C++ compiler"
    assert str(record[0].message).startswith(
        "MagMax fold: torch.compile failed (OSError: no C++ compiler); using the eager fold")
    assert record[0].filename == __file__  # stacklevel: the warning points at the caller

"""TIES (mergecl.methods.ties): global trimming, sign election with the majority rule for
zeros, the disjoint merge, and the plugin's merged state in both modes."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods import ties
from state_helpers import T, assert_state_equal


def _vectors():
    return [{"w": T([3.0, -1.0, 0.5]), "v": T([2.0, 0.0]), "n": T(1)},
            {"w": T([-4.0, 1.0, 0.0]), "v": T([1.0, 0.2]), "n": T(2)},
            {"w": T([2.0, -3.0, 1.0]), "v": T([0.0, 0.0]), "n": T(3)}]


def test_trimming_is_over_the_whole_flattened_model():
    # d = 5, top 40 % -> k = 5 - int(2.0) = 3: keep |τ| >= the 3rd smallest magnitude (= 1 in
    # every row): [3,-1,0,2,0], [-4,1,0,1,0], [2,-3,1,0,0]; column sums [1,-3,1,3,0] ->
    # signs [+,-,+,+,0]; the zero takes the majority sign sign(1-1+1+1) = +.
    # disjoint mean: (3+2)/2, (-1-3)/2, 1, (2+1)/2, 0
    merged = ties.ties_merge(_vectors(), top_k=0.4)
    assert_state_equal(merged, {"w": T([2.5, -2.0, 1.0]), "v": T([1.5, 0.0]), "n": T(3)})
    summed = ties.ties_merge(_vectors(), top_k=0.4, merge_function="sum")
    assert_state_equal(summed, {"w": T([5.0, -4.0, 1.0]), "v": T([3.0, 0.0]), "n": T(3)})
    largest = ties.ties_merge(_vectors(), top_k=0.4, merge_function="max")
    assert_state_equal(largest, {"w": T([3.0, -3.0, 1.0]), "v": T([2.0, 0.0]), "n": T(3)})


def test_per_tensor_trimming_would_differ():
    """The whole-model threshold keeps τ_1's -1 in "w" (per tensor it would be trimmed)."""
    per_tensor = {name: ties.ties_merge([{name: v[name]} for v in _vectors()], top_k=0.4)[name]
                  for name in ("w", "v")}
    assert not torch.equal(per_tensor["w"], T([2.5, -2.0, 1.0]))


def test_zero_sign_takes_the_majority_sign():
    trimmed = T([[1.0, 1.0, 2.0], [-1.0, 1.0, 1.0]])
    assert ties.elect_sign(trimmed).tolist() == [1.0, 1.0, 1.0]
    assert ties.elect_sign(-trimmed).tolist() == [-1.0, -1.0, -1.0]
    merged = ties.ties_merge([{"w": trimmed[0]}, {"w": trimmed[1]}], top_k=1.0)
    assert merged["w"].tolist() == [1.0, 1.0, 1.5]


def test_trim_keeps_everything_at_top_k_one_and_refuses_bad_fractions():
    vectors = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ties.trim_top_k(vectors, 1.0), vectors)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="top_k"):
            ties.trim_top_k(vectors, bad)


def _slow_ties(taus, top_k, names):
    """TIES written entry by entry over the concatenated entries (the slow, obvious form)."""
    flat = [torch.cat([t[n].reshape(-1) for n in names]).tolist() for t in taus]
    d = len(flat[0])
    trimmed = []
    for row in flat:
        threshold = sorted(abs(v) for v in row)[d - int(d * top_k) - 1]
        trimmed.append([v if abs(v) >= threshold else 0.0 for v in row])
    sums = [sum(row[k] for row in trimmed) for k in range(d)]
    signs = [(s > 0) - (s < 0) for s in sums]
    majority = (sum(signs) > 0) - (sum(signs) < 0)
    signs = [s if s != 0 else majority for s in signs]
    merged = []
    for k in range(d):
        agree = [row[k] for row in trimmed if (row[k] > 0 if signs[k] > 0 else row[k] < 0)]
        merged.append(sum(agree) / len(agree) if agree else 0.0)
    return torch.tensor(merged)


def test_plugin_list_mode_is_theta0_plus_lambda_times_ties_of_all_task_vectors():
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    runs = simulate(ties.TiesMerge(ties.TiesParams(lam=0.7, top_k=0.3), ctx), space, 2)
    body = [n for n in pretrained if n not in space.head_names]
    for task, run in enumerate(runs):
        taus = [{n: runs[i]["trained"][n] - pretrained[n] for n in body} for i in range(task + 1)]
        expected = _slow_ties(taus, 0.3, body)
        got = torch.cat([(run["merged"][n] - pretrained[n]).reshape(-1) for n in body])
        torch.testing.assert_close(got, 0.7 * expected)
        if task:
            assert_state_equal(run["start"], runs[task - 1]["trained"])


def test_plugin_continual_mode_is_fusionbench_c_ties():
    _, space, ctx = make_space()
    pretrained = space.effective_state()
    lam = 0.5
    params = ties.TiesParams(mode="continual", lam=lam, merge_function="sum")
    runs = simulate(ties.TiesMerge(params, ctx), space, 2)
    body = [n for n in pretrained if n not in space.head_names]
    first = {n: pretrained[n] + lam * (runs[0]["trained"][n] - pretrained[n]) for n in body}
    for n in body:
        torch.testing.assert_close(runs[0]["merged"][n], first[n])
    merged_tv = {n: first[n] - pretrained[n] for n in body}
    tau = {n: runs[1]["trained"][n] - pretrained[n] for n in body}
    increment = ties.ties_merge([merged_tv, tau], 0.2, "sum")
    for n in body:
        torch.testing.assert_close(runs[1]["merged"][n], first[n] + lam * increment[n])
    assert runs[1]["diagnostics"]["merge_coefficient"] == lam


def test_continual_mode_equals_fusionbench_c_ties():
    from fusion_bench.method.opcm.ties_merging import ContinualTiesMergingForCLIP
    from fusionbench_oracle import linear_models, run, state
    from mergecl.methods import merging

    pretrained, models = linear_models(4, seed=6)
    reference = run(ContinualTiesMergingForCLIP(scaling_factor=0.5, threshold=20, merge_func="sum",
                                                shuffle_order=False, save_on_every_step=False),
                    pretrained, models)
    base = state(pretrained)
    _, _, ctx = make_space()
    plugin = ties.TiesMerge(ties.TiesParams(mode="continual", lam=0.5, merge_function="sum"), ctx)
    for task, model in enumerate(models):  # the plugin's fold (the c-ties alias)
        merged_tv, scale = plugin.combine(merging.task_vector(state(model), base), task)
    merged = merging.add_scaled(base, merged_tv, scale)
    for name, value in reference.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------
# cases added for mutation testing (docs/mutation.md)


def test_trim_top_k_checks_its_input_and_keeps_a_single_column():
    column = T([[2.0], [-1.0]])
    assert torch.equal(ties.trim_top_k(column, 0.5), column)
    for bad in (T([1.0, 2.0]), torch.zeros(2, 0)):
        with pytest.raises(ValueError, match="n × d matrix"):
            ties.trim_top_k(bad, 0.5)
    with pytest.raises(ValueError, match=r"^top_k must be finite"):
        ties.trim_top_k(column, float("inf"))


def test_disjoint_merge_default_is_the_mean_and_a_zero_sign_keeps_the_negatives():
    """A sign still 0 after the majority rule (the majority itself is 0) selects the negative
    entries, as the reference's ``torch.where(sign > 0, τ > 0, τ < 0)`` does; ``max`` gives 0
    there (|max|·0)."""
    trimmed = T([[1.0, 3.0, -2.0], [-1.0, 1.0, 0.0]])
    sign = T([0.0, 1.0, -1.0])
    assert ties.disjoint_merge(trimmed, sign).tolist() == [-1.0, 2.0, -2.0]
    assert ties.disjoint_merge(trimmed, sign, "sum").tolist() == [-1.0, 4.0, -2.0]
    assert ties.disjoint_merge(trimmed, sign, "max").tolist() == [0.0, 3.0, -2.0]


def test_ties_merge_defaults_to_the_top_20_percent_and_the_mean():
    # d = 5, top_k 0.2 -> k = 5 - 1 = 4: keep |τ| >= the 4th smallest magnitude (two per row):
    # [5,0,0,0,3] and [-4,0,0,6,0]; sums [1,0,0,6,3] -> signs [+,0,0,+,+], zeros -> majority +
    vectors = [{"w": T([5.0, -1.0, 2.0, 0.5, 3.0])}, {"w": T([-4.0, 2.0, 1.0, 6.0, -0.1])}]
    assert ties.ties_merge(vectors)["w"].tolist() == [5.0, 0.0, 0.0, 6.0, 3.0]
    with pytest.raises(ValueError, match=r"^task_vectors\[1\]: keys differ"):
        ties.ties_merge([vectors[0], {"v": T([1.0])}])

"""Every registered method runs end to end offline on the quick preset, full and LoRA."""

from __future__ import annotations

import golden
import pytest
from conftest import quick_run
from mergecl.bench.reporting.metrics import summarize, summarize_row

# the golden methods, plus the newer post-hoc merges (not in the golden file, which predates them)
METHODS = golden.METHODS + ["opcm", "dop"]


def test_every_builtin_method_is_covered():
    from mergecl.methods.registry import BUILTINS

    assert sorted(METHODS) == sorted(BUILTINS)

# every merge reports its coefficient under one shared key (methods.base.MERGE_COEFFICIENT)
MERGING = {"pnm", "magmax", "avg", "coma", "dare", "ties", "random-mix", "task-arithmetic", "became",
           "opcm", "dop"}
# merges whose coefficient is a convex weight: P&M's α, the averages' weight of the newest
# model, BECAME's λ, DOP's mean weight of the new model (MGDA, clamped to [0.001, 0.999])
CONVEX = {"pnm", "avg", "coma", "dare", "became", "dop"}
# θ₀-anchored merges θ̂_t = θ₀ + λ_t·τ̂_t: each records the λ_t it applied, which is the
# configured ``lam`` at every task (TIES records ``lam`` in both of its modes), or 1/t for
# task-arithmetic's default ``lam: null`` (the mean task vector)
LAMBDA_SCALED = {"magmax", "ties", "random-mix", "task-arithmetic"}


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_offline(method, parameterisation, no_network):
    record = quick_run(method, parameterisation=parameterisation)
    assert record.status == "ok"
    matrix = record.acc_matrix
    if method == "joint":
        assert len(matrix) == 1 and len(matrix[0]) == 5
        assert record.upper_bound is True
    else:
        assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
        assert len(record.diagnostics["per_task"]) == 5
        # CIL: a task never seen scores 0 (argmax over seen classes only)
        assert matrix[0][1:] == [0.0] * 4
    assert all(0.0 <= v <= 1.0 for row in matrix for v in row)
    til = record.til_acc_matrix
    assert til is not None
    # task-incremental accuracy (argmax within the task's classes) is never below CIL's
    assert all(t >= c for t_row, c_row in zip(til, matrix) for t, c in zip(t_row, c_row))
    if method == "joint":
        assert record.metrics.model_dump() == summarize_row(matrix)
    else:
        assert record.metrics.model_dump() == summarize(matrix)
        assert record.til_metrics.model_dump() == summarize(til)
    if method in MERGING:
        per_task = record.diagnostics["per_task"]
        values = [task["merge_coefficient"] for task in per_task]
        assert len(values) == 5, values
        if method in LAMBDA_SCALED:
            lam = record.config["params"]["lam"]
            expected = [lam if lam is not None else 1.0 / t for t in range(1, 6)]
            assert values == pytest.approx(expected, rel=1e-12), (values, lam)
        elif method == "opcm":
            # the weight of the newest task's projected vector: 1/λ_t, with λ_0 = 1 (methods/opcm.py)
            lambdas = [task["opcm_lambda"] for task in per_task]
            assert lambdas[0] == 1.0
            assert values == pytest.approx([1.0 / v for v in lambdas], rel=1e-12), (values, lambdas)
            assert all(0.0 < v <= 1.0 for v in values), values
        else:
            assert method in CONVEX
            assert all(0.0 <= v <= 1.0 for v in values), values
    assert record.timings.train_steps + record.timings.reused_steps > 0  # trained, or from the store
    assert not no_network
    if method in golden.METHODS:
        golden.check(record, method, parameterisation)  # behaviour unchanged (golden.py)


@pytest.mark.e2e
def test_domain_incremental_has_no_til(no_network):
    record = quick_run("avg", benchmark="rotated-mnist")
    assert record.scenario == "domain-incremental"
    assert record.til_acc_matrix is None
    # averaging coefficients are 1/t
    coefficients = [t["merge_coefficient"] for t in record.diagnostics["per_task"]]
    assert coefficients == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])

"""Every registered method runs end to end offline on the quick preset, full and LoRA."""

from __future__ import annotations

import pytest
from conftest import quick_run

METHODS = ["seqft", "joint", "avg", "coma", "dare", "pnm", "magmax", "ties", "random-mix",
           "became", "trm", "ewc", "lwf"]

EXPECTED_DIAGNOSTIC = {"pnm": "alpha", "magmax": "lambda", "avg": "coefficient", "coma": "coefficient",
                       "dare": "coefficient", "ties": "lambda", "random-mix": "lambda", "became": "lambda"}


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_offline(method, parameterisation, no_network):
    record = quick_run(method, parameterisation=parameterisation)
    assert record["status"] == "ok"
    matrix = record["acc_matrix"]
    if method == "joint":
        assert len(matrix) == 1 and len(matrix[0]) == 5
        assert record["upper_bound"] is True
    else:
        assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
        assert len(record["diagnostics"]["per_task"]) == 5
        # CIL: a task never seen scores 0 (argmax over seen classes only)
        assert matrix[0][1:] == [0.0] * 4
    assert all(0.0 <= v <= 1.0 for row in matrix for v in row)
    assert record["til_acc_matrix"] is not None
    key = EXPECTED_DIAGNOSTIC.get(method)
    if key:
        values = [task[key] for task in record["diagnostics"]["per_task"]]
        assert all(0.0 <= v <= 10.0 for v in values)
    assert record["timings"]["train_steps"] > 0
    assert not no_network


@pytest.mark.e2e
def test_domain_incremental_has_no_til(no_network):
    record = quick_run("avg", benchmark="rotated-mnist")
    assert record["scenario"] == "domain-incremental"
    assert record["til_acc_matrix"] is None
    # averaging coefficients are 1/t
    coefficients = [t["coefficient"] for t in record["diagnostics"]["per_task"]]
    assert coefficients == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])

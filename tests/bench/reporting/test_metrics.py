"""Tests of mergecl.bench.reporting.metrics against hand-computed matrices and generic properties."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mergecl.bench.reporting.metrics import METRIC_NAMES, accuracy_curve, summarize, summarize_row


def test_one_task_has_no_forgetting_or_bwt() -> None:
    assert summarize([[0.7]]) == {"acc": 0.7, "aaa": 0.7, "forgetting": None, "bwt": None}


def test_two_tasks_by_hand() -> None:
    summary = summarize([[0.9, 0.1], [0.6, 0.8]])
    assert summary["acc"] == pytest.approx(0.7)
    assert summary["aaa"] == pytest.approx((0.9 + 0.7) / 2)
    assert summary["forgetting"] == pytest.approx(0.3)
    assert summary["bwt"] == pytest.approx(-0.3)


def test_three_tasks_by_hand() -> None:
    R = [[0.5, 0.0, 0.0], [0.8, 0.6, 0.0], [0.4, 0.5, 0.9]]
    summary = summarize(R)
    assert summary["acc"] == pytest.approx((0.4 + 0.5 + 0.9) / 3)
    assert summary["aaa"] == pytest.approx((0.5 + 0.7 + 1.8 / 3) / 3)
    # j=0: max(0.5, 0.8) - 0.4 = 0.4; j=1: max(0.0, 0.6) - 0.5 = 0.1
    assert summary["forgetting"] == pytest.approx(0.25)
    # j=0: 0.4 - 0.5; j=1: 0.5 - 0.6
    assert summary["bwt"] == pytest.approx(-0.1)
    assert accuracy_curve(R) == pytest.approx([0.5, 0.7, 0.6])


def test_forgetting_max_runs_over_all_rows_before_the_last() -> None:
    # docs/methods.md: max over i < T-1, including rows before experience j was trained
    # (forward transfer in a domain-incremental stream): R[0][1] = 0.9 counts for j = 1.
    R = [[0.5, 0.9, 0.1], [0.4, 0.5, 0.2], [0.3, 0.4, 0.8]]
    assert summarize(R)["forgetting"] == pytest.approx(((0.5 - 0.3) + (0.9 - 0.4)) / 2)


def test_values_are_plain_floats_in_the_units_of_R() -> None:
    R = np.array([[0.9, 0.1], [0.6, 0.8]])
    in_fractions = summarize(R)
    in_percent = summarize(100 * R)
    for name in METRIC_NAMES:
        assert type(in_fractions[name]) is float
        assert in_percent[name] == pytest.approx(100 * in_fractions[name])


def test_accepts_tuples_and_integer_entries() -> None:
    assert summarize(((1, 0), (1, 1)))["acc"] == 1.0


def test_summarize_row_for_joint_training() -> None:
    expected = {"acc": pytest.approx(0.85), "aaa": None, "forgetting": None, "bwt": None}
    assert summarize_row([0.9, 0.8]) == expected
    assert summarize_row([[0.9, 0.8]]) == expected  # 1 x T as stored in joint records


@pytest.mark.parametrize(
    ("row", "message"),
    [([], "empty"), ([[0.1], [0.2]], "1 x T"), ([0.5, math.nan], "non-finite"),
     ([[0.1, 0.2], [0.3]], "ragged")],
)
def test_summarize_row_refuses_bad_input(row: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize_row(row)


@pytest.mark.parametrize(
    ("R", "message"),
    [
        ([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], "square"),
        ([], "empty"),
        ([[]], "empty"),
        ([[0.1], [0.2, 0.3]], "ragged"),
        ([[0.1, math.nan], [0.2, 0.3]], "non-finite"),
        ([[0.1, math.inf], [0.2, 0.3]], "non-finite"),
        ([[0.1, None], [0.2, 0.3]], "non-finite"),
        ([0.5, 0.5], "2-D"),
        (0.5, "2-D"),
        ([["a", "b"], ["c", "d"]], "non-numeric"),
    ],
)
def test_refuses_bad_matrices(R: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(R)
    with pytest.raises(ValueError, match=message):
        accuracy_curve(R)


@st.composite
def accuracy_matrices(draw: st.DrawFn) -> np.ndarray:
    size = draw(st.integers(min_value=1, max_value=6))
    entries = draw(st.lists(st.floats(0.0, 1.0), min_size=size * size, max_size=size * size))
    return np.array(entries).reshape(size, size)


EPS = 1e-12


@settings(max_examples=80, deadline=None)
@given(accuracy_matrices())
def test_bounds_and_relations(R: np.ndarray) -> None:
    summary = summarize(R)
    assert -EPS <= summary["acc"] <= 1 + EPS
    assert -EPS <= summary["aaa"] <= 1 + EPS
    assert summary["aaa"] == pytest.approx(float(np.mean(accuracy_curve(R))))
    if R.shape[0] == 1:
        assert summary["forgetting"] is None and summary["bwt"] is None
        assert summary["acc"] == summary["aaa"] == R[0, 0]
    else:
        assert -1 - EPS <= summary["forgetting"] <= 1 + EPS
        assert -1 - EPS <= summary["bwt"] <= 1 + EPS
        # the max over earlier rows includes the diagonal, so forgetting >= -BWT
        assert summary["forgetting"] + summary["bwt"] >= -EPS


@settings(max_examples=40, deadline=None)
@given(accuracy_matrices(), st.floats(0.0, 1.0))
def test_unseen_entries_do_not_change_acc_aaa_bwt(R: np.ndarray, value: float) -> None:
    changed = R.copy()
    upper = np.triu_indices(R.shape[0], k=1)
    changed[upper] = value
    changed[-1] = R[-1]
    before, after = summarize(R), summarize(changed)
    for name in ("acc", "aaa", "bwt"):
        assert after[name] == pytest.approx(before[name])


def test_negative_forgetting_when_the_final_row_is_the_best() -> None:
    """Backward transfer can make forgetting negative: the max runs over the rows before the
    last, never the final row itself (which would clamp forgetting at >= 0)."""
    R = [[0.50, 0.00, 0.00],
         [0.60, 0.70, 0.00],
         [0.80, 0.90, 0.95]]
    summary = summarize(R)
    assert summary["forgetting"] == pytest.approx(((0.6 - 0.8) + (0.7 - 0.9)) / 2)  # -0.2
    assert summary["bwt"] == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)


def _index_in(message: str) -> tuple[int, ...]:
    """The index a non-finite message reports (numpy 2 prints its integers as np.int64(i))."""
    return tuple(int(n) for n in re.findall(r"(?:np\.int64\()?(\d+)", message.split("at index ")[1]))


def test_non_finite_message_names_the_input_and_the_first_bad_index() -> None:
    with pytest.raises(ValueError, match=r"^accuracy matrix contains a non-finite value") as matrix:
        summarize([[0.5, 0.0], [math.nan, 0.5]])
    assert _index_in(str(matrix.value)) == (1, 0)
    with pytest.raises(ValueError, match=r"^accuracy row contains a non-finite value") as row:
        summarize_row([0.5, 0.25, math.inf])
    assert _index_in(str(row.value)) == (2,)

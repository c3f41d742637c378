"""Tests of mergecl.bench.reporting.stats: the paired t-interval over seeds, by hand."""

from __future__ import annotations

import math

import pytest
from mergecl.bench.reporting.stats import INTERVAL_METHOD, PairedDifference, paired_difference

T_975_2 = 4.302653  # Student's t, 0.975 quantile, 2 degrees of freedom (tables)
T_975_1 = 12.706205  # … 1 degree of freedom


def test_interval_by_hand_for_differences_1_2_3() -> None:
    a = {0: 11.0, 1: 12.0, 2: 13.0}
    b = {0: 10.0, 1: 10.0, 2: 10.0}
    result = paired_difference(a, b)
    half = T_975_2 * 1.0 / math.sqrt(3)  # sd of [1, 2, 3] is 1
    assert result.n == 3 and result.mean == pytest.approx(2.0)
    assert result.low == pytest.approx(2.0 - half, rel=1e-6)
    assert result.high == pytest.approx(2.0 + half, rel=1e-6)
    assert result.low == pytest.approx(-0.484138, abs=1e-5)  # the interval contains 0
    assert not result.resolved and result.verdict() == "inconclusive"
    assert result.format() == "+2.0 [-0.5, +4.5] (n=3)"
    assert result.format(2) == "+2.00 [-0.48, +4.48] (n=3)"


def test_pairs_by_seed_and_ignores_unshared_seeds() -> None:
    a = {0: 5.0, 1: 7.0, 7: 100.0}
    b = {0: 1.0, 1: 2.0, 9: -100.0}
    result = paired_difference(a, b)  # differences 4 and 5 on seeds 0 and 1
    assert result.n == 2 and result.mean == pytest.approx(4.5)
    half = T_975_1 * math.sqrt(0.5) / math.sqrt(2)
    assert (result.low, result.high) == pytest.approx((4.5 - half, 4.5 + half), rel=1e-6)
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    assert paired_difference({}, {}) is None


def test_one_seed_has_no_interval() -> None:
    result = paired_difference({3: 80.0}, {3: 60.0})
    assert result.n == 1 and result.mean == pytest.approx(20.0)
    assert result.low == -math.inf and result.high == math.inf
    assert not result.resolved and result.verdict() == "inconclusive"
    assert result.format() == "+20.0 (n=1, no interval)"


def test_identical_differences_give_a_degenerate_interval() -> None:
    result = paired_difference({0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert result.low == result.high == pytest.approx(2.0)
    assert result.resolved and result.verdict() == "reproduced"
    zero = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert zero.low == zero.high == 0.0
    assert not zero.resolved and zero.verdict() == "inconclusive"


def test_verdicts() -> None:
    assert PairedDifference(3.0, 1.0, 5.0, 3).verdict() == "reproduced"
    assert PairedDifference(-3.0, -5.0, -1.0, 3).verdict() == "contradicted"
    assert PairedDifference(-3.0, -5.0, -1.0, 3).resolved
    assert PairedDifference(1.0, -1.0, 3.0, 3).verdict() == "inconclusive"
    assert PairedDifference(0.5, 0.0, 1.0, 3).verdict() == "inconclusive"  # touches 0


def test_confidence_level() -> None:
    wide = paired_difference({0: 1.0, 1: 3.0, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0}, confidence=0.99)
    narrow = paired_difference({0: 1.0, 1: 3.0, 2: 2.0}, {0: 0.0, 1: 0.0, 2: 0.0}, confidence=0.8)
    assert wide.high - wide.low > narrow.high - narrow.low
    assert wide.confidence == 0.99
    with pytest.raises(ValueError, match="confidence"):
        paired_difference({0: 1.0}, {0: 0.0}, confidence=1.0)
    assert "paired t-interval" in INTERVAL_METHOD and "95" in INTERVAL_METHOD

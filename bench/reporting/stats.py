"""Paired statistics over seeds.

Runs with the same seed share their class order and their data subset, so two methods are
compared by the *paired* difference d_s = a_s − b_s over the seeds s both have, not by their
separate spreads. The interval is Student's t-interval of the mean paired difference,

    mean(d) ± t_{0.975, n−1} · sd(d) / √n          (sd with ddof = 1; n ≥ 2 seeds)

(``scipy.stats.t``). A difference is *resolved* when the interval excludes 0. With one
seed there is no interval (``low``/``high`` are −inf/+inf: never resolved); when every d_s is
identical the interval is that single value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

INTERVAL_METHOD = "paired t-interval over seeds, 95 %"
Verdict = Literal["reproduced", "contradicted", "inconclusive"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference a − b over ``n`` shared seeds, with its ``confidence`` interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: a and b differ beyond the seed-to-seed variation."""
        return self.low > 0 or self.high < 0

    def verdict(self) -> Verdict:
        """For the claim "a > b": reproduced (interval above 0), contradicted (below 0),
        inconclusive (contains 0, or fewer than 2 seeds)."""
        if self.low > 0:
            return "reproduced"
        if self.high < 0:
            return "contradicted"
        return "inconclusive"

    def format(self, digits: int = 1) -> str:
        if not math.isfinite(self.low):
            return f"{self.mean:+.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] (n={self.n})"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                      confidence: float = 0.95) -> PairedDifference | None:
    """The paired difference of two ``{seed: value}`` maps over their shared seeds (None if none)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    differences = np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)
    n = len(differences)
    mean = float(differences.mean())
    if n < 2:
        return PairedDifference(mean, -math.inf, math.inf, n, confidence)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, confidence)

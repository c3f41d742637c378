"""Joint training — the upper bound.

Trains once on the union of every experience's training data (the runner builds that single
experience) and is evaluated once on every test experience. Its record holds one row of
accuracies; tables show it as the upper bound and never rank it among continual methods.
"""

from __future__ import annotations

from mergecl.methods.base import MergeMethod, MethodParams


class Joint(MergeMethod):
    name = "joint"
    paper = "upper bound: joint training on the union of all tasks"
    Params = MethodParams
    family = "upper-bound"
    upper_bound = True

"""The accuracy-matrix collector (mergecl.bench.training.strategy.AccuracyCollector): one row of
CIL and TIL accuracies from the same forward passes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mergecl.bench.training.strategy import AccuracyCollector


def _eval(collector, experience, logits, targets):
    strategy = SimpleNamespace(experience=SimpleNamespace(current_experience=experience),
                               mb_output=torch.tensor(logits), mb_y=torch.tensor(targets))
    collector.after_eval_iteration(strategy)


def test_cil_and_til_differ_on_the_same_forward_passes():
    collector = AccuracyCollector([[0, 1], [2, 3]], 4, task_incremental=True)
    collector.start_row([0, 1, 2, 3])
    # experience 0 (classes 0, 1): sample 1 is right within its task but loses to class 3
    _eval(collector, 0, [[5.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 9.0]], [0, 1])
    # experience 1 (classes 2, 3): both right within the task; sample 0 loses to class 0 overall
    _eval(collector, 1, [[7.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 4.0]], [2, 3])
    cil, til = collector.row(2)
    assert cil == [0.5, 0.5] and til == [1.0, 1.0]


def test_unseen_classes_are_excluded_from_cil_and_domain_streams_have_no_til():
    collector = AccuracyCollector([[0, 1], [2, 3]], 4, task_incremental=False)
    collector.start_row([0, 1])  # after the first experience: classes 2, 3 not seen
    _eval(collector, 0, [[1.0, 0.0, 9.0, 9.0]], [0])
    _eval(collector, 1, [[1.0, 0.0, 9.0, 9.0]], [2])
    cil, til = collector.row(2)
    assert cil == [1.0, 0.0] and til is None
    with pytest.raises(RuntimeError, match="no samples"):
        AccuracyCollector([[0]], 1, task_incremental=False).row(1)

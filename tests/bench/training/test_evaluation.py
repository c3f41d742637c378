"""The accuracy-matrix collector (mergecl.bench.training.strategy.AccuracyCollector): one row of
CIL and TIL accuracies from the same forward passes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mergecl.bench.training.evaluation import AccuracyCollector


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


@pytest.mark.e2e
@pytest.mark.parametrize("stream", ["split-mnist", "rotated-mnist"])
def test_accuracy_matrix_equals_avalanches_experience_accuracy(tmp_path, stream):
    """R[i][j] == Avalanche's Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp00j after training
    experience i, on the same run, with Avalanche's CSV logger attached."""
    import csv

    from mergecl.bench.config.run_config import resolve_run
    from mergecl.bench.training.run import run_one

    cfg = resolve_run("avg", stream, 0, "quick", {
        "loggers": ["csv", "text"], "log_dir": str(tmp_path), "n_experiences": 3 if stream == "rotated-mnist" else 5,
        "lr": 3e-3, "head_lr": 3e-2})
    record = run_one(cfg)
    folder = tmp_path / stream / "avg" / "seed0"
    rows = list(csv.DictReader(open(folder / "csv" / "eval_results.csv")))
    n = len(record.acc_matrix)
    assert len(rows) == n * n  # one row per (training experience, evaluated experience)
    for row in rows:
        i, j = int(row["training_exp"]), int(row["eval_exp"])
        assert abs(float(row["eval_accuracy"]) - record.acc_matrix[i][j]) <= 1e-6, (i, j)
    assert (folder / "log.txt").read_text().count("Top1_Acc_Exp/eval_phase/test_stream") >= n * n

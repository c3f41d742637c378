"""One run (mergecl.bench.training.run): the whole of ``run_one`` on a tiny in-memory stream
and model (the benchmark and model builders replaced), its loggers closed whether the run ends
or fails, and its building blocks — seeded task batches, the joint union stream, the record's
identity."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from mergecl.bench.config.run_config import RunConfig, config_hash
from mergecl.bench.training import evaluation, run
from mergecl.bench.training.run import record_identity, seed_everything, task_batches, union_stream
from toy_stream import TinyClassifier, toy_benchmark


def toy_config(tmp_path, method: str = "seqft", **overrides) -> RunConfig:
    values = dict(method=method, benchmark="toy", seed=0, epochs=1, batch_size=4, lr=1e-2, head_lr=1e-2,
                  channels_last=False, trajectories="off", loggers=["text"], log_dir=str(tmp_path))
    return RunConfig(**{**values, **overrides})


@pytest.fixture
def toy_run(monkeypatch):
    """run_one builds the toy stream and model; the evaluators it builds are kept."""
    monkeypatch.setattr(run, "build_benchmark", lambda cfg: toy_benchmark(seed=cfg.seed))
    monkeypatch.setattr(run, "build_model", lambda cfg, n_classes: TinyClassifier(n_classes))
    built = []
    real = evaluation.avalanche_evaluator
    monkeypatch.setattr(evaluation, "avalanche_evaluator",
                        lambda *args: built.append(real(*args)) or built[-1])
    return built


def test_a_run_fills_the_matrices_and_its_record(tmp_path, toy_run):
    cfg = toy_config(tmp_path)
    record = run.run_one(cfg)
    assert record.status == "ok" and record.scenario == "class-incremental"
    assert np.array(record.acc_matrix).shape == (2, 2) and np.array(record.til_acc_matrix).shape == (2, 2)
    assert record.metrics.acc == pytest.approx(sum(record.acc_matrix[-1]) / 2)
    assert record.classes_per_experience == [[0, 1], [2, 3]]
    assert record.timings.train_steps == 8  # 2 experiences × 16 samples / batches of 4
    assert record.config_hash == config_hash(cfg.hashable()) and record.label == "seqft"
    (evaluator,) = toy_run
    assert evaluator.loggers[0].file.closed  # the text log is closed at the end of the run
    log = (tmp_path / "toy" / "seqft" / "seed0" / "log.txt").read_text()
    assert "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001" in log


def test_joint_trains_once_on_the_union_and_yields_one_row(tmp_path, toy_run):
    record = run.run_one(toy_config(tmp_path, method="joint", loggers=[]))
    assert record.upper_bound and len(record.acc_matrix) == 1 and len(record.acc_matrix[0]) == 2
    assert record.timings.train_steps == 8  # one experience of 32 samples
    assert toy_run == []  # no loggers requested: no evaluator built


def test_the_loggers_are_closed_when_the_run_fails(tmp_path, toy_run, monkeypatch):
    from mergecl.bench.training.strategy import MergeCLStrategy

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(MergeCLStrategy, "train", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run.run_one(toy_config(tmp_path, loggers=["text", "csv"]))
    (evaluator,) = toy_run
    assert evaluator.loggers[0].file.closed and evaluator.loggers[1].eval_file.closed


def test_task_batches_are_seeded_per_task_and_capped():
    built = toy_benchmark()
    cfg = toy_config(".", seed=3)
    batches = task_batches(built, cfg)
    first = list(batches(0))
    assert [len(y) for _, y in first] == [4, 4, 4, 4]
    ys = torch.cat([y for _, y in first])
    assert sorted(ys.tolist()) == sorted(built.train_tensors[0][1].tolist())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, batches(0)))  # the same order again
    capped = list(batches(1, max_samples=6, batch_size=5))
    assert [len(y) for _, y in capped] == [5, 1] and set(torch.cat([y for _, y in capped]).tolist()) <= {2, 3}
    other_seed = list(task_batches(built, cfg.model_copy(update={"seed": 4}))(0))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other_seed))


def test_union_stream_concatenates_every_experience():
    built = toy_benchmark()
    stream, tensors = union_stream(built)
    assert len(stream) == 1
    ((x, y),) = tensors
    assert torch.equal(x, torch.cat([built.train_tensors[0][0], built.train_tensors[1][0]]))
    assert y.tolist() == [0] * 8 + [1] * 8 + [2] * 8 + [3] * 8


def test_record_identity_and_seeding(tmp_path):
    cfg = toy_config(tmp_path, label=None, seed=5)
    identity = record_identity(cfg)
    assert identity["label"] == "seqft" and identity["seed"] == 5 and identity["benchmark"] == "toy"
    assert identity["config"] == cfg.model_dump(mode="json")
    assert identity["config_hash"] == config_hash(cfg.hashable())
    seed_everything(11)
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(11)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws

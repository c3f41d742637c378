"""Avalanche's loggers in a mergecl run (mergecl.bench.training.evaluation.avalanche_evaluator
and close_loggers): each logger is built, driven through one tiny training experience and one
evaluation by the real strategy, writes its output under the run's log folder and is closed at
the end. Offline: W&B runs in offline mode into tmp_path, the network is blocked."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
from mergecl.bench.config.run_config import RunConfig
from mergecl.bench.training.evaluation import (
    avalanche_evaluator,
    close_loggers,
    wandb_for_avalanche,
    wandb_run_id,
)

ACC_EXP0 = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode with every directory it writes under tmp_path, no run id given (the
    code path that called the removed ``wandb.util.generate_id``)."""
    pytest.importorskip("wandb")
    for var in ("WANDB_RUN_ID", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = tmp_path / "wandb-home" / var.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))


def run_one_experience(evaluator) -> None:
    """Train a linear model on one 2-class experience with MergeCLStrategy, then evaluate it."""
    from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark
    from mergecl.bench.training.strategy import MergeCLStrategy

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=generator), torch.arange(32) % 2
    scenario = tensors_benchmark(train_tensors=[(x, y)], test_tensors=[(x, y)], task_labels=[0],
                                 complete_test_set_only=False)
    model = torch.nn.Linear(4, 2)
    cfg = RunConfig(method="seqft", benchmark="toy", seed=0, batch_size=16, epochs=1, lr=1e-2)
    strategy = MergeCLStrategy(
        model=model, parameter_groups=lambda: [{"params": list(model.parameters()), "lr": cfg.lr}],
        config=cfg, classes_per_experience=[[0, 1]], n_classes=2, train_tensors=[(x, y)],
        test_tensors=[(x, y)], evaluator=evaluator)
    strategy.train(scenario.train_stream[0])
    strategy.eval(scenario.test_stream)
    assert strategy.train_steps == 2  # 32 samples, batches of 16, one epoch


def test_text_logger_writes_the_metrics_and_its_file_is_closed(tmp_path, no_network):
    evaluator = avalanche_evaluator(["text"], tmp_path, "run")
    (logger,) = evaluator.loggers
    run_one_experience(evaluator)
    close_loggers(evaluator)
    assert logger.file.closed
    text = (tmp_path / "log.txt").read_text()
    assert ACC_EXP0 in text and "Start of training phase" in text
    assert not no_network


def test_csv_logger_writes_one_eval_row_per_experience(tmp_path, no_network):
    evaluator = avalanche_evaluator(["csv"], tmp_path, "run")
    (logger,) = evaluator.loggers
    run_one_experience(evaluator)
    close_loggers(evaluator)
    assert logger.eval_file.closed and logger.training_file.closed
    rows = list(csv.DictReader(open(tmp_path / "csv" / "eval_results.csv")))
    assert [(r["training_exp"], r["eval_exp"]) for r in rows] == [("0", "0")]
    assert 0.0 <= float(rows[0]["eval_accuracy"]) <= 1.0


def test_tensorboard_logger_writes_the_accuracy_scalar(tmp_path, no_network):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    evaluator = avalanche_evaluator(["tensorboard"], tmp_path, "run")
    run_one_experience(evaluator)
    close_loggers(evaluator)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert ACC_EXP0 in events.Tags()["scalars"]
    (point,) = events.Scalars(ACC_EXP0)
    assert 0.0 <= point.value <= 1.0


def test_wandb_logger_runs_offline_without_a_run_id_in_the_environment(tmp_path, offline_wandb, no_network, monkeypatch):
    import wandb

    evaluator = avalanche_evaluator(["wandb"], tmp_path, "run")  # used to raise AttributeError
    (logger,) = evaluator.loggers
    run_id = logger.init_kwargs["id"]
    assert wandb.run is not None and wandb.run.id == run_id
    logged: dict = {}
    real_log = logger.wandb.log
    monkeypatch.setattr(logger.wandb, "log", lambda data, **kwargs: (logged.update(data), real_log(data, **kwargs)))
    run_one_experience(evaluator)
    assert 0.0 <= logged[ACC_EXP0] <= 1.0  # the metrics reached wandb.log (read through the shim)
    close_loggers(evaluator)
    assert wandb.run is None  # finished: the next run of the process starts its own
    (folder,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert (folder / f"run-{run_id}.wandb").stat().st_size > 0
    assert not no_network


def test_wandb_run_id_honours_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "resume42")
    assert wandb_run_id() == "resume42"
    monkeypatch.delenv("WANDB_RUN_ID")
    first, second = wandb_run_id(), wandb_run_id()
    assert first != second and len(first) == 8 and first.isalnum()


def test_wandb_for_avalanche_adds_only_the_names_wandb_dropped():
    chart = type("CustomChart", (), {})
    new = SimpleNamespace(plot=SimpleNamespace(CustomChart=chart), util=SimpleNamespace(other=1), log=print)
    shim = wandb_for_avalanche(new)
    assert shim.viz.CustomChart is chart and shim.log is print and shim.util.other == 1
    assert len(shim.util.generate_id()) == 8 and shim.util.generate_id() != shim.util.generate_id()
    old = SimpleNamespace(viz=SimpleNamespace(CustomChart=chart), util=SimpleNamespace(generate_id=str))
    assert wandb_for_avalanche(old) is old  # an older wandb is used as it is


def test_every_logger_together_and_unknown_loggers_refused(tmp_path, offline_wandb):
    pytest.importorskip("tensorboard")
    evaluator = avalanche_evaluator(["text", "csv", "tensorboard", "wandb"], tmp_path, "run")
    assert len(evaluator.loggers) == 4
    close_loggers(evaluator)
    assert evaluator.loggers[0].file.closed
    with pytest.raises(ValueError, match="unknown logger.*'mlflow'.*accepted: tensorboard, wandb, csv, text"):
        avalanche_evaluator(["mlflow"], tmp_path, "run")

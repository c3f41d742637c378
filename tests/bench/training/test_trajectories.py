"""The trajectory store (mergecl.bench.training.trajectories): results with the store are bit
for bit those without it — post-hoc trajectories and shared first tasks, full and LoRA, one
process or two concurrent workers —, each step is trained once, a damaged or partial step is
never read, and the address depends on exactly the training inputs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from mergecl.bench.config.run_config import resolve_run
from mergecl.bench.orchestration.executors import execute
from mergecl.bench.orchestration.store import ResultStore, RunKey
from mergecl.bench.training.run import run_one
from mergecl.bench.training.trajectories import (
    TrajectoryStep,
    TrajectoryStore,
    trajectory_fields,
    trajectory_key,
)

# enough training that the methods' accuracy matrices differ from each other
TRAINING = {"lr": 3e-3, "head_lr": 3e-2, "max_steps_per_exp": None, "train_per_class": 12,
            "epochs": 2, "n_experiences": 5, "frozen_blocks": 5}


def _config(method: str, trajectories: str, parameterisation: str = "full", **overrides):
    values = {**TRAINING, "trajectories": trajectories, "parameterisation": parameterisation,
              **overrides}
    label = overrides.pop("label", None)
    return resolve_run(method, "split-fmnist", 0, "quick", values, label=label)


@pytest.mark.e2e
@pytest.mark.parametrize("parameterisation", ["full", "lora"])
def test_accuracy_matrices_are_identical_with_and_without_the_store(tmp_path, parameterisation):
    store = str(tmp_path / "trajectories")
    cases = [("seqft", {}), ("magmax", {}), ("magmax", {"params": {"variant": "ind"}}),
             ("ties", {}), ("avg", {}), ("ewc", {})]
    matrices = {}
    for method, extra in cases:
        without = run_one(_config(method, "off", parameterisation, **extra))
        with_store = run_one(_config(method, store, parameterisation, **extra))
        assert with_store.acc_matrix == without.acc_matrix, method
        assert with_store.til_acc_matrix == without.til_acc_matrix, method
        assert with_store.timings.train_steps + with_store.timings.reused_steps == without.timings.train_steps
        matrices[(method, str(extra))] = without.acc_matrix
    assert len({str(m) for m in matrices.values()}) >= 4  # the methods really differ
    records = {m: run_one(_config(m, store, parameterisation)) for m in ("seqft", "magmax", "avg")}
    assert records["seqft"].timings.train_steps == 0  # everything came from the store
    assert records["magmax"].trajectory.tasks == [0, 1, 2, 3, 4] and records["magmax"].trajectory.trained_here == []
    assert records["avg"].trajectory.tasks == [0]  # the shared first task only
    assert records["avg"].timings.reused_steps > 0 and records["avg"].timings.train_steps > 0


@pytest.mark.e2e
def test_two_concurrent_workers_train_each_step_once(tmp_path):
    store = str(tmp_path / "trajectories")
    cfgs = [_config(method, store) for method in ("magmax", "ties", "seqft", "random-mix")]
    summary = execute(cfgs, tmp_path / "results", workers=2, threads_per_run=1, quiet=True)
    assert summary.ok == len(cfgs)
    records = [ResultStore(tmp_path / "results").read(RunKey.of(cfg)) for cfg in cfgs]
    trained = [task for record in records for task in record.trajectory.trained_here]
    assert sorted(trained) == [0, 1, 2, 3, 4]  # each step of the one trajectory trained exactly once
    for cfg, record in zip(cfgs, records):
        reference = run_one(cfg.model_copy(update={"trajectories": "off"}))
        assert record.acc_matrix == reference.acc_matrix, cfg.method


def test_address_depends_on_training_inputs_only():
    base = _config("magmax", "off")
    key = trajectory_key(base, "sequential")
    for method, params in [("ties", {}), ("magmax", {"lam": 0.9}), ("seqft", {})]:
        other = _config(method, "off", params=params)
        assert trajectory_key(other, "sequential") == key  # merges act after training
    assert trajectory_key(_config("magmax", "off", head_rule="merge-all"), "sequential") == key
    assert trajectory_key(_config("magmax", "/elsewhere"), "sequential") == key  # where, not what
    for change in ({"lr": 1e-3}, {"epochs": 3}, {"frozen_blocks": 4}, {"train_per_class": 8},
                   {"parameterisation": "lora"}, {"threads": 2}):
        assert trajectory_key(_config("magmax", "off", **change), "sequential") != key, change
    assert trajectory_key(base.model_copy(update={"seed": 1}), "sequential") != key
    assert trajectory_key(base, "independent") != key
    assert "training_code" in trajectory_fields(base, "sequential")
    with pytest.raises(ValueError, match="regime"):
        trajectory_key(base, "parallel")  # type: ignore[arg-type]


def _step(value: float) -> TrajectoryStep:
    return TrajectoryStep({"w": torch.full((3,), value)}, {"torch": torch.get_rng_state()}, 4, 0.1)


def test_steps_are_atomic_a_damaged_step_reads_as_missing_and_size_and_clean(tmp_path):
    store = TrajectoryStore(tmp_path / "t")
    assert store.load("k", 0) is None
    store.save("k", 0, _step(1.0))
    loaded = store.load("k", 0)
    assert torch.equal(loaded.state["w"], torch.ones(3)) and loaded.steps == 4
    # a writer killed mid-write leaves only a hidden temporary file: never read as the step
    (store.step_path("k", 1).parent / ".task001.pt.x.tmp").write_bytes(b"PK\x03\x04partial")
    assert store.load("k", 1) is None
    # a damaged file (bad bytes under the real name) reads as missing, with a warning
    store.step_path("k", 2).write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert store.load("k", 2) is None
    size = store.size()
    assert size["trajectories"] == 1 and size["steps"] == 2 and size["bytes"] > 0
    assert store.clean() == size["bytes"] and store.size()["files"] == 0


def test_a_crash_while_saving_leaves_no_step(tmp_path, monkeypatch):
    store = TrajectoryStore(tmp_path / "t")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save("k", 0, _step(2.0))
    monkeypatch.undo()
    assert store.load("k", 0) is None
    assert [p.name for p in store.step_path("k", 0).parent.iterdir()] == []


@pytest.mark.e2e
def test_a_damaged_step_is_trained_again(tmp_path):
    store_dir = tmp_path / "trajectories"
    first = run_one(_config("seqft", str(store_dir)))
    key = first.trajectory.key
    TrajectoryStore(store_dir).step_path(key, 1).write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_one(_config("seqft", str(store_dir)))
    assert any("damaged" in str(w.message) for w in caught)
    assert again.trajectory.trained_here == [1] and again.acc_matrix == first.acc_matrix


def test_stored_files_live_under_the_address(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.describe("abc", {"seed": 0})
    assert (Path(tmp_path) / "abc" / "key.json").read_text().strip().startswith("{")

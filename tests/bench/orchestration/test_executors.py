"""Tests of mergecl.bench.orchestration.executors: the store decides what is missing; every executor runs exactly that.

Most tests use the fake run function of ``fake_runs.py`` (passed as ``run_function`` so that
spawned, Ray and submitit workers use it too). One real end-to-end test per executor runs the
``quick`` preset; a failing real run fails its test, never skips. Ray and submitit are
imported plainly: both are declared in the ``test`` extra (pyproject.toml), so a missing one is
a broken test environment and fails this module rather than skipping its tests.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray
import submitit  # noqa: F401  (imported so that a missing submitit fails here, never skips)
from fake_runs import FAKE_RUN, minimal_record, quick_config, real_quick_record
from mergecl.bench.config.run_config import ConfigError, RunConfig, config_hash
from mergecl.bench.orchestration import executors
from mergecl.bench.orchestration.executors import (
    ExecutionSummary,
    SlurmOptions,
    execute,
    longest_streams_first,
    missing_runs,
    plan_local,
    stream_length,
)
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import ResultStore, RunKey

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------- helpers
def grid(
    methods: list[str], seeds: list[int], log: Path | None = None, **params: Any
) -> list[RunConfig]:
    extra = {"log": str(log)} if log else {}
    return [
        RunConfig(method=m, benchmark="toy", seed=s, params={**params, **extra})
        for m in methods
        for s in seeds
    ]


def executions(log: Path, event: str = "start") -> Counter:
    if not log.exists():
        return Counter()
    return Counter(
        line.split()[1] for line in log.read_text().splitlines() if line.split()[0] == event
    )


def key_name(cfg: RunConfig) -> str:
    return f"{cfg.benchmark}/{cfg.label}/seed{cfg.seed}"


def assert_records(out: Path, cfgs: list[RunConfig]) -> list[RunRecord]:
    store = ResultStore(out)
    records = []
    for cfg in cfgs:
        record = store.read(RunKey.of(cfg))
        assert record is not None and record.status == "ok"
        assert record.config_hash == config_hash(cfg.hashable())
        records.append(record)
    assert missing_runs(cfgs, out) == []
    return records


@pytest.fixture
def worker_env(monkeypatch):
    """Workers started by Ray or submitit import ``bench`` from the repository."""
    parts = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in parts if p))
    monkeypatch.chdir(REPO)


def check_executor_runs_exactly_the_missing(
    tmp_path: Path, executor: str, **options: Any
) -> ExecutionSummary:
    """Pre-fill part of a 3-run grid in-process, then let ``executor`` do the rest."""
    out, log = tmp_path / "results", tmp_path / "executions.log"
    cfgs = grid(["fake-a"], [0, 1, 2], log=log)
    first = execute(cfgs[:1], out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert (first.ok, first.done) == (1, 0)
    expected = missing_runs(cfgs, out)
    assert [c.seed for c in expected] == [1, 2]

    summary = execute(cfgs, out, executor=executor, quiet=True, run_function=FAKE_RUN, **options)
    assert summary.submitted == 2 and summary.ok == 2 and summary.done == 1, summary
    assert summary.complete and not summary.errors
    assert executions(log) == Counter({key_name(c): 1 for c in cfgs})  # nothing twice
    records = assert_records(out, cfgs)
    assert {r.diagnostics["pid"] for r in records[1:]}.isdisjoint({os.getpid()})  # ran in workers

    again = execute(cfgs, out, executor=executor, quiet=True, run_function=FAKE_RUN, **options)
    assert (again.submitted, again.done, again.ok) == (0, 3, 0)
    assert executions(log) == Counter({key_name(c): 1 for c in cfgs})
    return summary


# ---------------------------------------------------------------------------- missing_runs
def test_missing_runs_follows_the_store(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cfgs = grid(["a", "b"], [0, 1])
    assert missing_runs(cfgs, out) == cfgs
    store = ResultStore(out)
    store.write(minimal_record(cfgs[0], "t"))  # done
    store.write(minimal_record(cfgs[1], "t").model_copy(update={"status": "failed", "error": "x"}))
    store.write(minimal_record(cfgs[2], "t").model_copy(update={"config_hash": "0" * 16}))  # stale
    assert missing_runs(cfgs, out) == cfgs[2:]
    assert missing_runs(cfgs, out, retry_failed=True) == cfgs[1:]
    assert missing_runs(cfgs + cfgs, out) == cfgs[2:]  # duplicates once, input order
    assert missing_runs([cfgs[3]] + cfgs, out) == [cfgs[3], cfgs[2]]
    # threads is excluded from the config hash: a thread change does not redo a run
    assert missing_runs([cfgs[0].model_copy(update={"threads": 7})], out) == []


def test_the_longest_streams_are_submitted_first_in_grid_order_otherwise() -> None:
    def cfg(benchmark: str, method: str, n: int | None = None) -> RunConfig:
        return RunConfig(method=method, benchmark=benchmark, seed=0, n_experiences=n)

    order = [cfg("mnist-fmnist", "seqft"), cfg("rotated-mnist", "dop"), cfg("somebody-elses", "avg"),
             cfg("rotated-mnist-10", "seqft"), cfg("rotated-mnist", "avg"), cfg("split-mnist", "avg", 2),
             cfg("rotated-mnist-10", "dop")]
    assert [stream_length(c) for c in order] == [2, 5, 0, 10, 5, 2, 10]
    assert longest_streams_first(order) == [order[3], order[6], order[1], order[4], order[0],
                                            order[5], order[2]]


def test_identical_rows_run_once_and_the_others_get_a_copy(tmp_path: Path) -> None:
    """A tuned row whose values are the defaults has the default row's config hash: run once."""
    out, log = tmp_path / "results", tmp_path / "executions.log"
    default = grid(["fake-a"], [0, 1], log=log)
    tuned = [cfg.model_copy(update={"label": "fake-a-tuned", "variant": "tuned", "base_label": "fake-a",
                                    "tuned_values": {"x": 1}, "tuning_hash": "abc"}) for cfg in default]
    different = [RunConfig(method="fake-a", label="fake-b", benchmark="toy", seed=0,
                           params={"log": str(log), "x": 2})]
    summary = execute(default + tuned + different, out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert executions(log) == Counter({"toy/fake-a/seed0": 1, "toy/fake-a/seed1": 1, "toy/fake-b/seed0": 1})
    assert (summary.submitted, summary.copied, summary.ok) == (3, 2, 5) and summary.complete
    store = ResultStore(out)
    for cfg in tuned:
        copy, source = store.read(RunKey.of(cfg)), store.read(RunKey.of(default[cfg.seed]))
        assert copy.copy_of == "fake-a" and copy.label == "fake-a-tuned" and copy.variant == "tuned"
        assert copy.tuned_values == {"x": 1} and copy.config_hash == source.config_hash
        assert copy.acc_matrix == source.acc_matrix and copy.timings.total_s == 0.0
    assert missing_runs(default + tuned, out) == []
    # the source's record missing (and its run failing) leaves the copy missing, with a message
    store.path(RunKey.of(tuned[0])).unlink()
    failing = [cfg.model_copy(update={"params": {**cfg.params, "fail": "crash"}}) for cfg in (default[0], tuned[0])]
    summary = execute(failing, tmp_path / "other", workers=1, quiet=True, run_function=FAKE_RUN)
    assert summary.failed == 1 and summary.copied == 0
    assert any("has no finished record" in error for error in summary.errors)


def test_missing_runs_refuses_two_configs_for_one_record(tmp_path: Path) -> None:
    one = RunConfig(method="a", benchmark="toy", seed=0, lr=1e-3)
    other = RunConfig(method="a", benchmark="toy", seed=0, lr=2e-3)
    with pytest.raises(ConfigError, match="distinct labels"):
        missing_runs([one, other], tmp_path)


def test_plan_local_never_oversubscribes() -> None:
    assert plan_local(4, cpus=2) == (2, 1)
    assert plan_local(1, cpus=8) == (1, 8)
    assert plan_local(3, cpus=8) == (3, 2)
    assert plan_local(10, threads_per_run=4, cpus=8) == (2, 4)
    assert plan_local(10, workers=1, cpus=8) == (1, 8)
    assert plan_local(1, workers=2, cpus=2) == (1, 2)  # one run left: one worker, all cores
    with pytest.raises(ConfigError, match="exceeds the 2 usable CPU cores"):
        plan_local(4, workers=2, threads_per_run=2, cpus=2)
    with pytest.raises(ConfigError, match="--workers"):
        plan_local(4, workers=0, cpus=2)
    with pytest.raises(ConfigError, match="--threads-per-run"):
        plan_local(4, threads_per_run=0, cpus=2)


# ---------------------------------------------------------------------------- local executor
def test_local_in_process_with_an_injected_run_function(tmp_path: Path) -> None:
    calls: list[str] = []

    def run_one(cfg: RunConfig, progress=None) -> RunRecord:
        calls.append(key_name(cfg))
        if progress:
            progress(1, 1)
        return minimal_record(cfg, "2024-01-01T00:00:00+00:00")

    out = tmp_path / "results"
    cfgs = grid(["a", "b"], [0, 1])
    summary = execute(cfgs, out, workers=1, quiet=True, run_function=run_one)
    assert (summary.ok, summary.done, summary.submitted, summary.workers) == (4, 0, 4, 1)
    assert sorted(calls) == sorted(key_name(c) for c in cfgs)
    assert_records(out, cfgs)
    again = execute(cfgs, out, workers=1, quiet=True, run_function=run_one)
    assert (again.ok, again.done, again.submitted) == (0, 4, 0) and again.complete
    assert len(calls) == 4


def test_local_pool_2x2_grid_then_rerun_skips_done(tmp_path: Path) -> None:
    out, log = tmp_path / "results", tmp_path / "executions.log"
    cfgs = grid(["a", "b"], [0, 1], log=log)
    summary = execute(cfgs, out, workers=2, threads_per_run=1, quiet=True, run_function=FAKE_RUN)
    assert (summary.ok, summary.failed, summary.done, summary.workers, summary.threads_per_run) == (
        4,
        0,
        0,
        2,
        1,
    )
    records = assert_records(out, cfgs)
    assert all(r.host.threads == 1 for r in records)
    assert os.getpid() not in {r.diagnostics["pid"] for r in records}  # spawned workers did the work
    assert executions(log) == Counter({key_name(c): 1 for c in cfgs})

    started = {key_name(c): r.started_at for c, r in zip(cfgs, records, strict=True)}
    again = execute(cfgs, out, workers=2, quiet=True, run_function=FAKE_RUN)
    assert (again.ok, again.done, again.submitted) == (0, 4, 0)
    assert executions(log) == Counter({key_name(c): 1 for c in cfgs})
    assert {
        key_name(c): r.started_at for c, r in zip(cfgs, assert_records(out, cfgs), strict=True)
    } == started


def test_failed_runs_are_recorded_and_retried_only_on_request(tmp_path: Path) -> None:
    out, log = tmp_path / "results", tmp_path / "executions.log"
    cfgs = grid(["ok"], [0], log=log) + grid(["boom"], [0], log=log, fail="crash")
    summary = execute(cfgs, out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert (summary.ok, summary.failed) == (1, 1) and summary.complete
    record = ResultStore(out).read(RunKey("toy", "boom", 0))
    assert record.status == "failed" and "RuntimeError: fake run crashed" in record.error
    assert execute(cfgs, out, workers=1, quiet=True, run_function=FAKE_RUN).done == 2
    retried = execute(cfgs, out, workers=1, quiet=True, run_function=FAKE_RUN, retry_failed=True)
    assert (retried.failed, retried.done, retried.submitted) == (1, 1, 1)
    assert executions(log)["toy/boom/seed0"] == 2 and executions(log)["toy/ok/seed0"] == 1


def test_config_error_in_a_run_aborts_the_grid(tmp_path: Path) -> None:
    out, log = tmp_path / "results", tmp_path / "executions.log"
    cfgs = grid(["bad"], [0], log=log, fail="config") + grid(["later"], [0], log=log)
    with pytest.raises(ConfigError, match="refuses its configuration"):
        execute(cfgs, out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert "toy/later/seed0" not in executions(log)
    assert ResultStore(out).records() == []  # a config error is not a failed run


def test_bad_arguments_are_config_errors(tmp_path: Path, monkeypatch) -> None:
    cfgs = grid(["a"], [0])
    with pytest.raises(ConfigError, match="local, ray, slurm"):
        execute(cfgs, tmp_path, executor="dask", quiet=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="module:function"):
        execute(cfgs, tmp_path, quiet=True, run_function="no_colon")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        execute(cfgs, tmp_path, quiet=True, run_function="mergecl.bench.no_such_module:f")
    with pytest.raises(ConfigError, match="time-min"):
        execute(cfgs, tmp_path, executor="slurm", quiet=True, slurm=SlurmOptions(time_min=0))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ConfigError, match=r"pip install 'mergecl\[ray\]'"):
        execute(cfgs, tmp_path, executor="ray", quiet=True)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=r"pip install 'mergecl\[slurm\]'"):
        execute(cfgs, tmp_path, executor="slurm", quiet=True)
    assert ResultStore(tmp_path).records() == []


def test_slurm_without_sbatch_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="sbatch"):
        execute(
            grid(["a"], [0]),
            tmp_path,
            executor="slurm",
            quiet=True,
            slurm=SlurmOptions(partition="p"),
        )


# ---------------------------------------------------------------------------- ray / submitit
def test_ray_starts_and_stops_its_own_instance_and_config_errors_abort(
    tmp_path: Path, worker_env
) -> None:
    if ray.is_initialized():
        ray.shutdown()
    out, log = tmp_path / "results", tmp_path / "executions.log"
    cfgs = grid(["bad"], [0], log=log, fail="config") + grid(["later"], [0, 1], log=log)
    with pytest.raises(ConfigError, match="refuses its configuration"):
        execute(cfgs, out, executor="ray", workers=1, quiet=True, run_function=FAKE_RUN)
    assert not ray.is_initialized()  # the instance started for the grid was shut down
    assert "toy/later/seed1" not in executions(log)  # queued behind the failing run: never started
    assert ResultStore(out).records() == []


def test_submitit_local_runs_exactly_the_missing(tmp_path: Path, worker_env) -> None:
    summary = check_executor_runs_exactly_the_missing(
        tmp_path, "slurm", slurm=SlurmOptions(cluster="local", time_min=5, cpus_per_task=1)
    )
    assert len(summary.job_ids) == 2
    assert (tmp_path / "results" / "_submitit").is_dir()


def test_submitit_without_waiting_leaves_the_store_to_tell(tmp_path: Path, worker_env) -> None:
    out = tmp_path / "results"
    cfgs = grid(["a"], [0])
    summary = execute(
        cfgs,
        out,
        executor="slurm",
        quiet=True,
        run_function=FAKE_RUN,
        slurm=SlurmOptions(cluster="debug", wait=False),
    )
    assert (summary.pending, summary.submitted, summary.complete) == (1, 1, False)
    # the debug cluster runs a job when its result is asked for; nothing is recorded before
    assert missing_runs(cfgs, out) == cfgs


# ---------------------------------------------------------------------------- real runs
def _real_path(request) -> Path:
    data_root = request.getfixturevalue("data_root")
    real_quick_record(data_root)  # a failing real run fails here, never skips
    return data_root


def _real_grid(data_root: Path) -> list[RunConfig]:
    return [quick_config(data_root, seed) for seed in (0, 1)]


def _check_real(out: Path, cfgs: list[RunConfig], summary: ExecutionSummary) -> None:
    assert (summary.ok, summary.failed, summary.errors) == (len(cfgs), 0, [])
    for record in assert_records(out, cfgs):
        n = len(record.acc_matrix)
        assert n >= 2 and all(len(row) == n for row in record.acc_matrix)
        assert all(0.0 <= a <= 1.0 for row in record.acc_matrix for a in row)


@pytest.mark.e2e
def test_real_quick_runs_local_pool(tmp_path: Path, request) -> None:
    data_root = _real_path(request)
    cfgs, out = _real_grid(data_root), tmp_path / "results"
    _check_real(out, cfgs, execute(cfgs, out, workers=2, threads_per_run=1, quiet=True))


@pytest.mark.e2e
def test_real_quick_run_submitit(tmp_path: Path, request, worker_env) -> None:
    data_root = _real_path(request)
    cfgs, out = _real_grid(data_root)[:1], tmp_path / "results"
    summary = execute(
        cfgs,
        out,
        executor="slurm",
        quiet=True,
        slurm=SlurmOptions(cluster="local", time_min=10, cpus_per_task=1),
    )
    _check_real(out, cfgs, summary)


def test_slurm_job_array_script_carries_the_options(tmp_path: Path, monkeypatch) -> None:
    """The real SLURM path up to ``sbatch``, with a stand-in ``sbatch`` that records its input."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "Submitted batch job 4242"\n')
    sbatch.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "results"
    cfgs = grid(["a"], [0, 1, 2])
    options = SlurmOptions(
        partition="gpu",
        time_min=45,
        gpus_per_node=1,
        cpus_per_task=4,
        mem_gb=16,
        array_parallelism=2,
        extra={"account": "abc"},
        setup=["source ./venv/bin/activate"],
        wait=False,
    )
    summary = execute(cfgs, out, executor="slurm", quiet=True, slurm=options)
    assert summary.job_ids == ["4242_0", "4242_1", "4242_2"] and summary.pending == 3
    assert summary.threads_per_run == 4
    script = calls.read_text().split()[-1]
    text = Path(script).read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=45",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --array=0-2%2",
        "#SBATCH --account=abc",
        "source ./venv/bin/activate",
    ):
        assert line in text, (line, text)
    assert str(out / "_submitit") in text
    assert missing_runs(cfgs, out) == cfgs  # submitted is not done: the store still says missing


class TestOnARunningRayInstance:
    """``execute`` joins a Ray instance that is already up (as from a notebook) and leaves it
    running; one start serves the tests of this class, and is stopped after them."""

    @pytest.fixture(scope="class", autouse=True)
    def ray(self):
        repo_on_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        with pytest.MonkeyPatch.context() as mp:  # workers import bench from the repository
            mp.setenv("PYTHONPATH", repo_on_path)
            mp.chdir(REPO)
            if ray.is_initialized():
                ray.shutdown()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()

    def test_runs_exactly_the_missing(self, tmp_path: Path, ray) -> None:
        summary = check_executor_runs_exactly_the_missing(tmp_path, "ray")
        assert ray.is_initialized()  # an instance it did not start is left running
        assert summary.threads_per_run is None  # a cluster's runs keep their configured threads

    @pytest.mark.e2e
    def test_real_quick_run(self, tmp_path: Path, request, ray) -> None:
        data_root = _real_path(request)
        cfgs, out = _real_grid(data_root)[:1], tmp_path / "results"
        _check_real(out, cfgs, execute(cfgs, out, executor="ray", threads_per_run=1, quiet=True))

"""The runner (mergecl.bench.orchestration.runner) under stress: kill-and-resume, concurrent
writers, non-finite losses, determinism. Per-run peak memory: test_provenance.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from fake_runs import FAKE_RUN, NAN_RUN, quick_config, real_quick_record
from mergecl.bench.config.run_config import RunConfig
from mergecl.bench.orchestration.executors import execute, missing_runs
from mergecl.bench.orchestration.store import ResultStore, RunKey

REPO = Path(__file__).resolve().parents[3]
DEAD_PID = 2**22 + 4321  # above Linux's pid_max: no such process exists


# ---------------------------------------------------------------------------- helpers
GRID_SCRIPT = textwrap.dedent("""
    import json, sys
    from mergecl.bench.config.run_config import RunConfig
    from mergecl.bench.orchestration.executors import execute

    if __name__ == "__main__":
        out, log, fake, workers, n, sleep_s = sys.argv[1:7]
        cfgs = [RunConfig(method="slow", benchmark="toy", seed=s,
                          params={"sleep_s": float(sleep_s), "log": log}) for s in range(int(n))]
        summary = execute(cfgs, out, workers=int(workers), threads_per_run=1, quiet=True,
                          run_function=fake)
        print(json.dumps(summary.as_dict()))
""")


def slow_grid(log: Path, n: int, sleep_s: float) -> list[RunConfig]:
    """The grid the script above builds (same params → same config hashes)."""
    return [
        RunConfig(
            method="slow", benchmark="toy", seed=s, params={"sleep_s": sleep_s, "log": str(log)}
        )
        for s in range(n)
    ]


def start_grid(
    tmp_path: Path, out: Path, log: Path, workers: int, n: int, sleep_s: float
) -> subprocess.Popen:
    script = tmp_path / "grid_script.py"
    script.write_text(GRID_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(out),
            str(log),
            FAKE_RUN,
            str(workers),
            str(n),
            str(sleep_s),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the SIGKILL reaches all it started
    )


def events(log: Path, event: str) -> Counter:
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.split()[0] == event)


def record_files(out: Path) -> list[Path]:
    return sorted(out.glob("*/*/seed*.json"))


def read_all_strictly(out: Path) -> list[dict]:
    """Every record file parses (no corrupt or partial JSON), read through the store."""
    for path in record_files(out):
        json.loads(path.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ResultStore(out).records()


# ---------------------------------------------------------------------------- kill and resume
def test_sigkill_mid_grid_then_rerun_resumes(tmp_path: Path) -> None:
    out, log, n, sleep_s = tmp_path / "results", tmp_path / "executions.log", 4, 1.0
    proc = start_grid(tmp_path, out, log, 1, n, sleep_s)
    try:
        deadline = time.monotonic() + 90
        while not record_files(out):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no record appeared"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its id
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    before = {r.seed: r for r in read_all_strictly(out)}
    assert 1 <= len(before) < n and all(r.status == "ok" for r in before.values())
    cfgs = slow_grid(log, n, sleep_s)
    assert [c.seed for c in missing_runs(cfgs, out)] == [s for s in range(n) if s not in before]
    store = ResultStore(out)
    for cfg in cfgs:  # the kernel dropped the killed process's locks
        lock = store.try_lock(RunKey("toy", "slow", cfg.seed))
        assert lock is not None
        lock.release()

    # a partial temp file as left by a writer killed mid-write is never read as a record
    host = socket.gethostname().replace(".", "_")
    leftover = out / "toy" / "slow" / f".seed{n - 1}.json.{host}.{DEAD_PID}.deadbeef.tmp"
    leftover.write_text('{"status": "ok", "config_ha')
    assert [c.seed for c in missing_runs(cfgs, out)] == [s for s in range(n) if s not in before]

    summary = execute(cfgs, out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert (summary.done, summary.ok, summary.failed) == (len(before), n - len(before), 0)
    after = {r.seed: r for r in read_all_strictly(out)}
    assert sorted(after) == list(range(n)) and missing_runs(cfgs, out) == []
    for seed, record in before.items():  # finished runs were not redone
        assert after[seed].started_at == record.started_at
        assert events(log, "start")[f"toy/slow/seed{seed}"] == 1
    assert all(count == 1 for count in events(log, "end").values()) and len(events(log, "end")) == n
    assert not list(out.rglob("*.tmp"))  # the leftover was cleaned by the next write


# ---------------------------------------------------------------------------- two writers
def test_two_processes_on_one_grid_run_each_run_once(tmp_path: Path) -> None:
    out, log, n, sleep_s = tmp_path / "results", tmp_path / "executions.log", 6, 0.4
    first = start_grid(tmp_path, out, log, 1, n, sleep_s)
    second = start_grid(tmp_path, out, log, 1, n, sleep_s)
    summaries = []
    for proc in (first, second):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout.strip().splitlines()[-1]))

    expected = Counter({f"toy/slow/seed{s}": 1 for s in range(n)})
    assert events(log, "start") == expected and events(log, "end") == expected
    assert sum(s["ok"] for s in summaries) == n
    for s in summaries:
        assert s["ok"] + s["done"] + s["locked"] == n and not s["errors"]
    assert len(read_all_strictly(out)) == n
    assert missing_runs(slow_grid(log, n, sleep_s), out) == []


# ---------------------------------------------------------------------------- non-finite loss
def test_nonfinite_loss_in_a_run_is_recorded_as_failed(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cfg = RunConfig(method="fake", benchmark="toy", seed=0, params={"fail": "nonfinite"})
    summary = execute([cfg], out, workers=1, quiet=True, run_function=FAKE_RUN)
    assert (summary.failed, summary.ok) == (1, 0)
    record = ResultStore(out).read(RunKey("toy", "fake", 0))
    assert record.status == "failed"
    assert (
        record.error == "NonFiniteLossError: training loss became nan at step 3 (experience 0)"
    )
    assert record.metrics is None and record.acc_matrix is None


def test_nonfinite_loss_in_the_real_training_loop_names_the_step(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cfg = RunConfig(method="nan", benchmark="toy", seed=0, batch_size=16, epochs=1)
    summary = execute([cfg], out, workers=1, quiet=True, run_function=NAN_RUN)
    assert summary.failed == 1
    record = ResultStore(out).read(RunKey("toy", "nan", 0))
    assert record.status == "failed"
    assert record.error.startswith("NonFiniteLossError: training loss became nan at step 3")
    assert "NonFiniteLossError" in record.traceback
    # a failed run is not retried unless asked
    assert execute([cfg], out, workers=1, quiet=True, run_function=NAN_RUN).done == 1


# ---------------------------------------------------------------------------- determinism
@pytest.mark.e2e
def test_same_seed_and_config_give_the_same_accuracy_matrix(request) -> None:
    pytest.importorskip("timm")
    data_root = request.getfixturevalue("data_root")
    first = real_quick_record(data_root)
    from mergecl.bench.training.run import run_one

    second = run_one(quick_config(data_root))
    assert second.config_hash == first.config_hash
    assert second.acc_matrix == first.acc_matrix
    assert second.til_acc_matrix == first.til_acc_matrix
    assert second.metrics == first.metrics


def test_pool_workers_die_with_a_killed_driver(tmp_path: Path) -> None:
    """SIGKILL of the driver alone (not its process group) leaves no orphaned worker running."""
    import psutil

    out, log = tmp_path / "out", tmp_path / "runs.log"
    proc = start_grid(tmp_path, out, log, workers=2, n=4, sleep_s=30.0)
    deadline = time.time() + 60
    while time.time() < deadline and sum(events(log, "start").values()) < 2:
        time.sleep(0.2)
    assert sum(events(log, "start").values()) >= 2, proc.stderr.read() if proc.poll() is not None else ""
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)  # only the driver
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"

"""Tests of mergecl.bench.orchestration.store: layout, atomic writes, status, tolerant reads and per-run locks."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mergecl.bench.config.run_config import config_hash
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import ResultStore, RunKey

FORK = multiprocessing.get_context("fork")
DEAD_PID = 2**22 + 4321  # above Linux's maximum pid_max: no such process can exist
KEY = RunKey("mnist-fmnist", "pnm", 0)


def make_record(key: RunKey = KEY, status: str = "ok", hash_: str = "h1", **extra: Any) -> RunRecord:
    return RunRecord.model_validate({
        "method": key.label, "benchmark": key.benchmark, "label": key.label, "seed": key.seed,
        "status": status, "config_hash": hash_, "metrics": {"acc": 0.5}, **extra})


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results")


def test_config_hash_is_canonical() -> None:
    first = config_hash({"b": 1, "a": {"y": [1, 2], "x": "s"}})
    assert first == config_hash({"a": {"x": "s", "y": (1, 2)}, "b": 1})
    assert len(first) == 16 and int(first, 16) >= 0
    assert first != config_hash({"b": 2, "a": {"y": [1, 2], "x": "s"}})
    with pytest.raises(ValueError):
        config_hash({"lr": math.nan})


def test_path_layout_and_round_trip(store: ResultStore) -> None:
    assert store.path(KEY) == store.root / "mnist-fmnist" / "pnm" / "seed0.json"
    written = store.write(make_record(diagnostics={"value": np.float64(0.25), "matrix": np.eye(2)}))
    assert written == store.path(KEY)
    record = store.read(KEY)
    assert isinstance(record, RunRecord)
    assert record.diagnostics == {"value": 0.25, "matrix": [[1.0, 0.0], [0.0, 1.0]]}
    assert store.read(RunKey("mnist-fmnist", "pnm", 1)) is None


def test_non_finite_numbers_are_written_as_null(store: ResultStore) -> None:
    store.write(make_record(metrics={"acc": 0.5, "forgetting": math.nan, "bwt": -math.inf}))
    text = store.path(KEY).read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse)["metrics"] == {
        "acc": 0.5, "aaa": None, "forgetting": None, "bwt": None}


@pytest.mark.parametrize(
    ("field", "value"), [("label", "a/b"), ("benchmark", ""), ("label", ".."), ("seed", -1)])
def test_write_refuses_unplaceable_records(store: ResultStore, field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        store.write(make_record().model_copy(update={field: value}))


def test_write_refuses_anything_but_a_run_record(store: ResultStore) -> None:
    with pytest.raises(TypeError, match="RunRecord"):
        store.write(make_record().to_json_dict())  # type: ignore[arg-type]


def test_a_file_that_is_not_a_run_record_reads_as_none_with_a_warning(store: ResultStore) -> None:
    path = store.path(KEY)
    path.parent.mkdir(parents=True)
    path.write_text('{"benchmark": "mnist-fmnist", "label": "pnm", "seed": 0}')
    with pytest.warns(UserWarning, match="not a run record"):
        assert store.read(KEY) is None


def test_crash_during_replace_keeps_the_old_record(
    store: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write(make_record(hash_="old"))

    def crash(*args: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.write(make_record(hash_="new"))
    monkeypatch.undo()
    assert store.read(KEY).config_hash == "old"
    assert [p.name for p in store.path(KEY).parent.iterdir()] == ["seed0.json"]
    assert [r.config_hash for r in store.records()] == ["old"]


def test_killed_writer_leftovers_are_ignored_then_cleaned(store: ResultStore) -> None:
    store.write(make_record())
    directory = store.path(KEY).parent
    dead = directory / f".seed0.json.otherhost.{DEAD_PID}.abcd1234.tmp"
    dead.write_text('{"benchmark": "mnist-fm')  # partial file of a SIGKILLed writer
    fresh_live = directory / f".seed1.json.otherhost.{os.getpid()}.beef.tmp"
    fresh_live.write_text("{")
    old_live = directory / f".seed2.json.otherhost.{os.getpid()}.cafe.tmp"
    old_live.write_text("{")
    two_hours_ago = time.time() - 7200
    os.utime(old_live, (two_hours_ago, two_hours_ago))
    # same host, dead pid: removed at once whatever its age
    import socket
    same_host_dead = directory / (
        f".seed3.json.{socket.gethostname().replace('.', '_')}.{DEAD_PID}.f00d.tmp")
    same_host_dead.write_text("{")

    assert [r.seed for r in store.records()] == [0]
    assert store.read(RunKey(KEY.benchmark, KEY.label, 1)) is None

    store.write(make_record(RunKey(KEY.benchmark, KEY.label, 4)))
    remaining = sorted(p.name for p in directory.iterdir())
    assert dead.name in remaining  # another host, recent: could still be in flight
    assert fresh_live.name in remaining
    assert old_live.name not in remaining and same_host_dead.name not in remaining


@pytest.mark.parametrize("content", ['{"benchmark": "mnist', "", "[1, 2]", "\xff\xfe"])
def test_corrupt_record_reads_as_none_with_warning(store: ResultStore, content: str) -> None:
    path = store.path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    with pytest.warns(UserWarning, match="seed0.json"):
        assert store.read(KEY) is None
    with pytest.warns(UserWarning):
        assert store.status(KEY, "h1") == "missing"
    with pytest.warns(UserWarning):
        assert store.records() == []


def test_status(store: ResultStore) -> None:
    assert store.status(KEY, "h1") == "missing"
    store.write(make_record(status="ok", hash_="h1"))
    assert store.status(KEY, "h1") == "done"
    assert store.status(KEY, "h2") == "stale"
    store.write(make_record(status="failed", hash_="h1"))
    assert store.status(KEY, "h1") == "failed"
    assert store.status(KEY, "h2") == "stale"
    weird = make_record(hash_="h1").to_json_dict() | {"status": "weird"}
    store.path(KEY).write_text(json.dumps(weird))  # not a run record: ignored
    with pytest.warns(UserWarning, match="not a run record"):
        assert store.status(KEY, "h1") == "missing"


def test_missing(store: ResultStore) -> None:
    done, failed, stale, absent = (RunKey("b", "m", seed) for seed in range(4))
    store.write(make_record(done, "ok", "h"))
    store.write(make_record(failed, "failed", "h"))
    store.write(make_record(stale, "ok", "old"))
    wanted = [(absent, "h"), (done, "h"), (failed, "h"), (stale, "h"), (absent, "h")]
    assert store.missing(wanted) == [absent, stale]
    assert store.missing(wanted, retry_failed=True) == [absent, failed, stale]
    assert store.missing([(("b", "m", 3), "h")]) == [absent]


def test_records_filters_and_skips_temp_and_lock_files(store: ResultStore) -> None:
    for key in [RunKey("b2", "x", 1), RunKey("b1", "y", 10), RunKey("b1", "y", 2),
                RunKey("b1", "x", 0)]:
        store.write(make_record(key))
    with store.try_lock(RunKey("b1", "x", 0)):
        pass
    (store.root / "b1" / "x" / "notes.txt").write_text("not a record")
    keys = [(r.benchmark, r.label, r.seed) for r in store.records()]
    assert keys == [("b1", "x", 0), ("b1", "y", 2), ("b1", "y", 10), ("b2", "x", 1)]
    assert [r.seed for r in store.records(benchmarks="b1", labels=["y"])] == [2, 10]
    assert store.records(benchmarks=["nope"]) == []
    assert ResultStore(store.root / "absent").records() == []


def test_lock_in_one_process(store: ResultStore) -> None:
    lock = store.try_lock(KEY)
    assert lock is not None and lock.held
    assert store.try_lock(KEY) is None
    assert store.try_lock(RunKey(KEY.benchmark, KEY.label, 1)) is not None  # other run
    lock.release()
    lock.release()  # idempotent
    assert not lock.held
    with store.try_lock(KEY) as again:
        assert again is not None
    assert store.try_lock(KEY) is not None


def _try_lock_in_child(root: str, results: Any) -> None:
    lock = ResultStore(root).try_lock(KEY)
    results.put(lock is not None)


def _hold_lock_in_child(root: str, ready: Any) -> None:
    lock = ResultStore(root).try_lock(KEY)
    assert lock is not None
    ready.set()
    time.sleep(60)


def _hold_lock_and_fork_in_child(root: str, grandchild_pid: Any) -> None:
    lock = ResultStore(root).try_lock(KEY)
    assert lock is not None
    pid = os.fork()
    if pid == 0:  # grandchild: outlives its parent, must not keep the lock
        time.sleep(60)
        os._exit(0)
    grandchild_pid.put(pid)
    time.sleep(60)


def _run_child(target: Any, *args: Any) -> Any:
    process = FORK.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def test_lock_is_exclusive_between_processes(store: ResultStore) -> None:
    results = FORK.Queue()
    lock = store.try_lock(KEY)
    assert lock is not None
    child = _run_child(_try_lock_in_child, str(store.root), results)
    assert results.get(timeout=10) is False
    child.join(10)
    lock.release()
    child = _run_child(_try_lock_in_child, str(store.root), results)
    assert results.get(timeout=10) is True
    child.join(10)


def test_lock_is_freed_when_holder_is_sigkilled(store: ResultStore) -> None:
    ready = FORK.Event()
    child = _run_child(_hold_lock_in_child, str(store.root), ready)
    try:
        assert ready.wait(10)
        assert store.try_lock(KEY) is None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    assert child.exitcode == -signal.SIGKILL
    lock = store.try_lock(KEY)
    assert lock is not None
    lock.release()


def test_forked_grandchild_does_not_keep_a_killed_holders_lock(store: ResultStore) -> None:
    grandchild = FORK.Queue()
    child = _run_child(_hold_lock_and_fork_in_child, str(store.root), grandchild)
    grandchild_pid = grandchild.get(timeout=10)
    try:
        assert store.try_lock(KEY) is None
        os.kill(child.pid, signal.SIGKILL)
        # not child.join(): the grandchild holds a copy of the join sentinel's pipe
        deadline = time.monotonic() + 10
        while child.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.exitcode == -signal.SIGKILL
        lock = store.try_lock(KEY)
        assert lock is not None  # the grandchild's inherited descriptor was closed
        lock.release()
    finally:
        for pid in (child.pid, grandchild_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.join(10)  # returns once the grandchild is gone too

"""The result store: one JSON record per run, the single source of truth for what is done.

Layout: ``<root>/<benchmark>/<label>/seed<k>.json`` (record schema in ``docs/record-schema.md``).

Guarantees
----------
* **Atomic writes.** A record is written to a temporary file in the same directory, flushed,
  fsync'ed and moved into place with ``os.replace``; a reader sees the old record or the new
  one, never a partial file. Temporary files are hidden (``.seed<k>.json.<host>.<pid>.<rand>.tmp``)
  and ignored by :meth:`ResultStore.read` and :meth:`ResultStore.records`; leftovers of a
  killed writer are removed by the next :meth:`ResultStore.write` into the same directory
  (those of a dead process on this host at once, any others after :data:`STALE_TEMP_AGE_S`).
* **Tolerant reads.** A missing record reads as ``None``; a corrupt, truncated or non-object
  file reads as ``None`` with a ``UserWarning`` — reading never raises for bad content.
* **Strict JSON.** NaN and ±inf are written as ``null`` (JSON has no such numbers); numpy
  scalars and arrays are converted to plain numbers and lists.
* **Per-run locks.** :meth:`ResultStore.try_lock` takes a non-blocking ``fcntl.flock`` on
  ``<record path>.lock``. The kernel drops it when the holder's file descriptor is closed —
  including when the process is SIGKILLed — so a crashed worker never leaves a stale lock.
  Lock files are left on disk on purpose (deleting them would race with other lockers).
  A process forked while holding a lock does not inherit it: the child's copy of the
  descriptor is closed right after ``fork``. POSIX only; on network file systems ``flock``
  is only as reliable as the file system's lock support.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import secrets
import socket
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mergecl.bench.config.run_config import RunConfig, json_default
from mergecl.bench.orchestration.records import RunRecord
from pydantic import ValidationError

RunStatus = Literal["missing", "stale", "done", "failed"]

STALE_TEMP_AGE_S: float = 3600.0
"""Temporary files older than this are removed by :meth:`ResultStore.write` whatever their owner."""

_RECORD_NAME = re.compile(r"^seed(\d+)\.json$")
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[^.]*)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


class RunKey(NamedTuple):
    """Identifies one run: the record lives at ``<root>/<benchmark>/<label>/seed<seed>.json``."""

    benchmark: str
    label: str
    seed: int

    @classmethod
    def of(cls, cfg: RunConfig) -> RunKey:
        """The key of a run config (the one place a key is built from a config)."""
        return cls(cfg.benchmark, cfg.label or cfg.method, cfg.seed)


def _replace_non_finite(value: Any) -> Any:
    """Return ``value`` with NaN/±inf floats replaced by ``None``, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_non_finite(item) for item in value]
    return value


def record_to_json(record: RunRecord | Mapping[str, Any]) -> str:
    """Strict JSON text of a record (NaN/inf → ``null``, numpy → plain), 2-space indented."""
    data = record.to_json_dict() if isinstance(record, RunRecord) else record
    return json.dumps(
        _replace_non_finite(data), indent=2, allow_nan=False, default=json_default
    ) + "\n"


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path_for(target: Path) -> Path:
    host = socket.gethostname().replace(".", "_")
    return target.with_name(f".{target.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path_for(target)
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_temp_files(directory: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete temp files of killed writers in ``directory``; return what was removed.

    A temp file is a leftover when its writer was a process on this host that no longer
    exists, or when it is older than ``max_age_s`` (writers on other hosts, reused pids).
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    this_host = socket.gethostname().replace(".", "_")
    now = time.time()
    for entry in directory.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            age_s = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        writer_is_dead = match["host"] == this_host and not _process_is_alive(int(match["pid"]))
        if writer_is_dead or age_s > max_age_s:
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed


_live_locks: weakref.WeakSet[RunLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    """In a forked child: close copies of the parent's lock descriptors without unlocking.

    ``flock`` locks belong to the open file description shared with the parent; closing the
    child's descriptor keeps the parent's lock, and the child can no longer release (or keep
    alive, after the parent dies) a lock it does not own.
    """
    for lock in list(_live_locks):
        lock._forget_descriptor()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class RunLock:
    """An exclusive, non-blocking lock on one run; a context manager. See ``try_lock``."""

    def __init__(self, key: RunKey, path: Path, fd: int) -> None:
        self.key = key
        self.path = path
        self._fd: int | None = fd
        _live_locks.add(self)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (idempotent). The lock file itself is left in place."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _forget_descriptor(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"RunLock({self.key!r}, held={self.held})"


def _check_path_component(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value \
            or "\0" in value or value.startswith("."):
        raise ValueError(
            f"record field {field!r} must be a non-empty name usable as a directory "
            f"(no '/', not starting with '.'), got {value!r}"
        )
    return value


def _check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"record field 'seed' must be a non-negative int, got {value!r}")
    return value


def _as_name_filter(names: str | Iterable[str] | None) -> set[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        return {names}
    return set(names)


class ResultStore:
    """Run records under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    def path(self, key: RunKey) -> Path:
        """Where the record of ``key`` lives: ``root/<benchmark>/<label>/seed<k>.json``."""
        benchmark = _check_path_component(key.benchmark, "benchmark")
        label = _check_path_component(key.label, "label")
        seed = _check_seed(key.seed)
        return self.root / benchmark / label / f"seed{seed}.json"

    def read(self, key: RunKey) -> RunRecord | None:
        """The record of ``key``; ``None`` when missing, or (with a warning) unreadable."""
        return self._read_path(self.path(key))

    @staticmethod
    def _read_path(path: Path) -> RunRecord | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            warnings.warn(f"ignoring unreadable result record {path}: {exc}", stacklevel=3)
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            warnings.warn(f"ignoring corrupt result record {path}: {exc}", stacklevel=3)
            return None
        if not isinstance(record, dict):
            warnings.warn(
                f"ignoring result record {path}: top level is {type(record).__name__}, "
                "not an object",
                stacklevel=3,
            )
            return None
        try:
            return RunRecord.model_validate(record)
        except ValidationError as exc:
            warnings.warn(f"ignoring result record {path}: not a run record ({exc.error_count()} "
                          f"problems, first: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})",
                          stacklevel=3)
            return None

    def status(self, key: RunKey, config_hash: str) -> RunStatus:
        """``missing`` (no readable record, or a record with an unknown status), ``stale``
        (recorded under another config hash), ``done`` (status ok) or ``failed``."""
        record = self.read(key)
        if record is None:
            return "missing"
        if record.config_hash != config_hash:
            return "stale"
        return "done" if record.status == "ok" else "failed"

    def needs_running(self, key: RunKey, config_hash: str, retry_failed: bool = False) -> bool:
        """The one rule: a run needs running when its record is missing or stale, or failed
        and ``retry_failed`` is set."""
        status = self.status(key, config_hash)
        return status in ("missing", "stale") or (status == "failed" and retry_failed)

    def write(self, record: RunRecord) -> Path:
        """Store ``record`` atomically at the path given by its benchmark, label and seed.

        Leftover temp files of killed writers in that directory are removed first.
        """
        if not isinstance(record, RunRecord):
            raise TypeError(f"the store writes RunRecord objects, not {type(record).__name__}")
        target = self.path(RunKey(record.benchmark, record.label, record.seed))
        remove_leftover_temp_files(target.parent)
        return atomic_write_text(target, record_to_json(record))

    def try_lock(self, key: RunKey) -> RunLock | None:
        """Take the run's lock without waiting; ``None`` if another holder has it.

        Keep the returned :class:`RunLock` referenced for as long as the run needs the lock
        (``with lock: ...`` or ``lock.release()``): it is released when garbage-collected.
        A second ``try_lock`` on the same key fails even within the same process.
        """
        record_path = self.path(key)
        lock_path = record_path.with_name(record_path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:  # the holder's pid, for humans inspecting a lock file
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        return RunLock(key, lock_path, fd)

    def keys(
        self,
        benchmarks: str | Iterable[str] | None = None,
        labels: str | Iterable[str] | None = None,
    ) -> list[RunKey]:
        """Keys of all record files present (readable or not), sorted."""
        wanted_benchmarks = _as_name_filter(benchmarks)
        wanted_labels = _as_name_filter(labels)
        found: list[RunKey] = []
        if not self.root.is_dir():
            return found
        for benchmark_dir in self.root.iterdir():
            if not benchmark_dir.is_dir() or benchmark_dir.name.startswith("."):
                continue
            if wanted_benchmarks is not None and benchmark_dir.name not in wanted_benchmarks:
                continue
            for label_dir in benchmark_dir.iterdir():
                if not label_dir.is_dir() or label_dir.name.startswith("."):
                    continue
                if wanted_labels is not None and label_dir.name not in wanted_labels:
                    continue
                for entry in label_dir.iterdir():
                    match = _RECORD_NAME.match(entry.name)
                    if match and entry.is_file():
                        found.append(RunKey(benchmark_dir.name, label_dir.name, int(match[1])))
        return sorted(found)

    def records(
        self,
        benchmarks: str | Iterable[str] | None = None,
        labels: str | Iterable[str] | None = None,
    ) -> list[RunRecord]:
        """All readable records (ok and failed), sorted by benchmark, label, seed.

        Unreadable files are skipped with a warning; temp and lock files are never read.
        """
        found = []
        for key in self.keys(benchmarks, labels):
            record = self.read(key)
            if record is not None:
                found.append(record)
        return found

    def missing(
        self, wanted: Iterable[tuple[RunKey, str]], *, retry_failed: bool = False
    ) -> list[RunKey]:
        """Keys among ``(key, config_hash)`` pairs that still need running, in input order.

        A run needs running when its status is ``missing`` or ``stale``; a ``failed`` run does
        only with ``retry_failed=True``. Duplicate keys are reported once.
        """
        needed: list[RunKey] = []
        seen: set[RunKey] = set()
        for key, wanted_hash in wanted:
            key = RunKey(*key)
            if key in seen:
                continue
            seen.add(key)
            if self.needs_running(key, wanted_hash, retry_failed):
                needed.append(key)
        return needed

"""Do one run and keep its record: the store's lock, the "needs running" rule, the atomic write.

:func:`run_and_store` is what every executor calls in its worker: it skips a run whose record
is done (the store's one rule, :meth:`ResultStore.needs_running`), takes the run's lock, runs
the injected run function (:func:`mergecl.bench.training.run.run_one` by default; tests inject
fakes) and writes the record atomically. A run that raises is recorded as ``failed`` with the
reason; a ``ConfigError`` propagates (it stops the grid).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from mergecl.bench.config.run_config import ConfigError, RunConfig
from mergecl.bench.orchestration import provenance
from mergecl.bench.orchestration.records import SCHEMA_VERSION, Host, RunRecord, Timings
from mergecl.bench.orchestration.store import ResultStore, RunKey

ProgressCallback = Callable[[int, int], None]
RunFunction = Callable[..., RunRecord]


def default_run_function() -> RunFunction:
    from mergecl.bench.training.run import run_one

    return run_one


def failed_record(cfg: RunConfig, error: BaseException, started_at: str, elapsed: float) -> RunRecord:
    from mergecl.bench.training.run import record_identity

    tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
    return RunRecord(
        **record_identity(cfg), schema_version=SCHEMA_VERSION,
        timings=Timings(total_s=round(elapsed, 3)), peak_rss_mb=round(provenance.peak_rss_mb(), 1),
        versions=provenance.library_versions(), git_rev=provenance.git_revision(),
        host=Host(cpus=provenance.cpus(), threads=cfg.threads, cpu_model=provenance.cpu_model()),
        started_at=started_at, finished_at=provenance.now(), status="failed",
        error=f"{type(error).__name__}: {error}", traceback=tail)


def run_and_store(cfg: RunConfig | dict[str, Any], out: str | Path, *, run: RunFunction | None = None,
                  progress: ProgressCallback | None = None, retry_failed: bool = False) -> str:
    """Run ``cfg`` unless its record is done; write the record atomically under a per-run lock.

    Returns ``"done"`` (already there), ``"locked"`` (another process runs it), ``"ok"`` or
    ``"failed"``. ``run(cfg, progress=...)`` returns the record (default: ``run_one``).
    """
    if isinstance(cfg, dict):
        cfg = RunConfig(**cfg)
    run = run or default_run_function()
    store = ResultStore(out)
    key, digest = RunKey.of(cfg), cfg.digest()
    if not store.needs_running(key, digest, retry_failed):
        return "done"
    lock = store.try_lock(key)
    if lock is None:
        return "locked"
    with lock:
        if not store.needs_running(key, digest, retry_failed):  # finished meanwhile elsewhere
            return "done"
        started_at, t0 = provenance.now(), perf_counter()
        try:
            record = run(cfg, progress=progress)
        except ConfigError:
            raise
        except Exception as exc:  # recorded, never silently averaged in
            record = failed_record(cfg, exc, started_at, perf_counter() - t0)
        store.write(record)
        return record.status

"""Stand-ins for ``mergecl.bench.training.run.run_one`` used by the executor and reliability tests.

They are passed to :func:`mergecl.bench.orchestration.executors.execute` as ``run_function=FAKE_RUN`` (a file path,
so that spawned pool workers, Ray workers and submitit jobs can import them whatever their
``sys.path``). Behaviour is steered by the run's ``params`` (part of the config hash, so a
test's grid is self-describing):

* ``sleep_s``  — sleep this long, in short slices (a SIGKILL lands mid-run);
* ``log``      — append ``start``/``end`` lines ``<benchmark>/<label>/seed<k> <pid>`` to this
  file (O_APPEND: lines from concurrent processes never interleave);
* ``fail``     — ``"nonfinite"`` raises ``NonFiniteLossError`` at step 3, ``"config"`` a
  ``ConfigError``, ``"crash"`` a ``RuntimeError``.

:func:`nan_run` trains the *real* ``MergeCLStrategy`` on a tiny linear model whose weights
turn NaN after two steps. :func:`real_quick_record` runs the real end-to-end path
(``mergecl run --method seqft --benchmark split-mnist --preset quick``) once per process.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any

from mergecl.bench.config.run_config import ConfigError, RunConfig
from mergecl.bench.orchestration.records import Host, Metrics, RunRecord
from mergecl.bench.training.run import record_identity

FAKE_RUN = f"{Path(__file__).resolve()}:fake_run"
NAN_RUN = f"{Path(__file__).resolve()}:nan_run"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _log(cfg: RunConfig, event: str) -> None:
    path = cfg.params.get("log")
    if not path:
        return
    line = f"{event} {cfg.benchmark}/{cfg.label}/seed{cfg.seed} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def minimal_record(cfg: RunConfig, started_at: str) -> RunRecord:
    acc = round(0.5 + 0.01 * cfg.seed, 4)
    return RunRecord(**record_identity(cfg), acc_matrix=[[acc]], metrics=Metrics(acc=acc),
                     diagnostics={"pid": os.getpid()}, host=Host(threads=cfg.threads),
                     started_at=started_at, finished_at=_now(), status="ok")


def fake_run(cfg: RunConfig, progress: Any = None) -> RunRecord:
    started_at = _now()
    _log(cfg, "start")
    deadline = time.monotonic() + float(cfg.params.get("sleep_s", 0.0))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    fail = cfg.params.get("fail")
    if fail == "nonfinite":
        from mergecl.bench.training.strategy import NonFiniteLossError

        raise NonFiniteLossError("training loss became nan at step 3 (experience 0)")
    if fail == "config":
        raise ConfigError("fake run refuses its configuration")
    if fail == "crash":
        raise RuntimeError("fake run crashed")
    if progress is not None:
        progress(1, 1)
    _log(cfg, "end")
    return minimal_record(cfg, started_at)


def nan_run(cfg: RunConfig, progress: Any = None) -> RunRecord:
    """Train the real strategy; a plugin sets the weights to NaN after the second step."""
    import torch
    from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark
    from avalanche.core import SupervisedPlugin
    from mergecl.bench.training.strategy import MergeCLStrategy

    class PoisonAfterTwoSteps(SupervisedPlugin):
        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            if strategy.train_steps + 1 == 2:  # the counter is bumped after this callback
                with torch.no_grad():
                    strategy.model.weight.fill_(float("nan"))

    started_at = _now()
    generator = torch.Generator().manual_seed(cfg.seed)
    x, y = torch.randn(64, 4, generator=generator), torch.arange(64) % 2
    scenario = tensors_benchmark(
        train_tensors=[(x, y)], test_tensors=[(x, y)], task_labels=[0], complete_test_set_only=False
    )
    model = torch.nn.Linear(4, 2)
    strategy = MergeCLStrategy(
        model=model,
        parameter_groups=lambda: [{"params": list(model.parameters()), "lr": cfg.lr}],
        config=cfg,
        classes_per_experience=[[0, 1]],
        n_classes=2,
        train_tensors=[(x, y)],
        test_tensors=[(x, y)],
        plugins=[PoisonAfterTwoSteps()],
    )
    strategy.train(scenario.train_stream[0])
    return minimal_record(cfg, started_at)  # not reached: the third step's loss is NaN


# ---------------------------------------------------------------------------- the real path
_real_status: dict[str, Any] = {}

QUICK_RUN = {"method": "seqft", "benchmark": "split-mnist", "preset": "quick"}


def quick_config(data_root: str | Path, seed: int = 0) -> RunConfig:
    from mergecl.bench.config.run_config import resolve_run

    return resolve_run(
        QUICK_RUN["method"],
        QUICK_RUN["benchmark"],
        seed,
        QUICK_RUN["preset"],
        overrides={"data_root": str(data_root)},
    )


def real_quick_record(data_root: str | Path) -> RunRecord:
    """The record of ``seqft`` on ``split-mnist`` with the ``quick`` preset (what ``mergecl run
    --method seqft --benchmark split-mnist --preset quick`` does), run once per test process.

    A failing real run fails the test that asked for it: it is never turned into a skip.
    """
    if "record" not in _real_status:
        from mergecl.bench.training.run import run_one

        record = run_one(quick_config(data_root))
        assert record.ok, record.error
        _real_status["record"] = record
    return _real_status["record"]

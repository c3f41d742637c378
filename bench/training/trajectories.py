"""The trajectory store: every trained state θ*_t is trained once and read by every run that needs it.

Post-hoc methods (MagMax, TIES, random mix, task arithmetic, OPCM, DOP — and SeqFT, their
identity merge) do not shape their own training: they merge the *sequential fine-tuning
trajectory* θ*_1 … θ*_T (task t trained from θ*_{t−1}; MagMax-Ind: every task from θ₀). And
every method whose first task is plain fine-tuning from θ₀ (``plain_first_task``: averaging,
CoMA, DARE, P&M without perturbation, EWC, LwF, the post-hoc family) trains the same task 0.
The store keeps those trained states, so that a grid trains each of them once.

**Key.** A trajectory's address is a hash of everything that determines its states: the run
config's training fields (benchmark, seed, data subset sizes and validation split, backbone,
weights, image size, frozen prefix, parameterisation and LoRA settings, optimiser and its
settings, epochs, batch size, loss mask, step cap, threads, device), the regime
(``sequential`` | ``independent``), a digest of the source of the training path (the modules
in :data:`TRAINING_CODE`) and the library versions. Not in it: the method, its
hyper-parameters and the head rule (they act after training), the evaluation settings. Task 0
is stored under the ``sequential`` address and read by both regimes and by online methods.

**A step** holds the parameter space's *training state* after task t (everything the training
changed: full fine-tuning's parameters; LoRA's base weights, adapters and head — so a replay
leaves the model exactly as training would have) and the random streams' states at that moment
(torch's global generator, the strategy's batch-order generator, the LoRA generator, Python's and
NumPy's), the number of optimisation steps and their time. Replaying a step therefore gives the
following merges, evaluations and tasks bit for bit what training would have given
(tests/bench/training/test_trajectories.py).

**Safety.** Each step has its own lock file (``fcntl.flock``, blocking): the first run that needs
a missing step trains it while holding the lock; a concurrent run that needs the same step waits,
then reads it. Steps are written atomically (temporary file, fsync, rename): a crash leaves no
partial step under the real name, and a damaged file (torch's zip checksums) reads as missing and
is trained again. The lock is dropped by the kernel when its holder dies, so a killed worker
blocks nobody. Works for the local pool, Ray and SLURM alike on a file system with working
``flock`` (local disks; NFS only as reliably as its lock support).

``mergecl trajectories`` shows the store's size; ``mergecl trajectories --clean`` empties it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from mergecl.bench.caches import atomic_torch_save, cache_dir, directory_size
from mergecl.bench.config.run_config import RunConfig, config_hash
from mergecl.bench.orchestration.provenance import REPOSITORY
from torch import Tensor

Regime = Literal["sequential", "independent"]
REGIMES: tuple[str, ...] = ("sequential", "independent")

TRAINING_CODE: tuple[str, ...] = (
    "bench/training/strategy.py", "bench/training/models.py", "bench/training/features.py",
    "bench/training/run.py", "bench/training/trajectories.py", "bench/training/fast_convs.py",
    "bench/streams/benchmarks.py", "bench/streams/datasets.py", "methods/parameterisation.py",
    "methods/base.py", "methods/matmul.py",
)
"""Source files whose text is part of every trajectory address (a change retrains)."""

NOT_TRAINING_FIELDS: tuple[str, ...] = (
    "method", "params", "head_rule", "eval_batch_size", "test_per_class", "trajectories")
"""Config fields that act after training (merges, evaluation) or say where to store things."""


@lru_cache(maxsize=1)
def training_code_digest() -> str:
    digest = hashlib.sha256()
    for relative in TRAINING_CODE:
        digest.update(relative.encode())
        digest.update((REPOSITORY / relative).read_bytes())
    for library in ("torch", "timm", "peft", "avalanche-lib"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            digest.update(f"{library}={version(library)}".encode())
        except PackageNotFoundError:
            digest.update(f"{library}=none".encode())
    return digest.hexdigest()[:16]


def trajectory_fields(cfg: RunConfig, regime: Regime) -> dict[str, Any]:
    """What a trajectory's states depend on (see the module docstring)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; accepted: {', '.join(REGIMES)}")
    data = cfg.hashable()  # without the execution and row-description fields
    for name in NOT_TRAINING_FIELDS:
        data.pop(name, None)
    data.update(threads=cfg.threads, device=cfg.device)  # they can change the numerics
    data["regime"] = regime
    data["training_code"] = training_code_digest()
    return data


def trajectory_key(cfg: RunConfig, regime: Regime) -> str:
    return config_hash(trajectory_fields(cfg, regime))


@dataclass
class TrajectoryStep:
    """The trained state of one task and the random streams after it (see the module docstring)."""

    state: dict[str, Tensor]
    rng: dict[str, Any]
    steps: int
    train_s: float

    def payload(self) -> dict[str, Any]:
        return {"state": self.state, "rng": self.rng, "steps": self.steps, "train_s": self.train_s}


def capture_rng(strategy_generator: torch.Generator, space_state: Tensor | None) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "strategy": strategy_generator.get_state(),
            "space": space_state, "python": random.getstate(), "numpy": np.random.get_state()}


def restore_rng(rng: dict[str, Any], strategy_generator: torch.Generator) -> Tensor | None:
    """Restore the global streams and the strategy's; return the space's state (to restore)."""
    torch.set_rng_state(rng["torch"])
    strategy_generator.set_state(rng["strategy"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    return rng["space"]


class TrajectoryStore:
    """Trained states by trajectory address and task, under ``root``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir("trajectories")

    def step_path(self, key: str, task: int) -> Path:
        return self.root / key / f"task{task:03d}.pt"

    @contextlib.contextmanager
    def lock(self, key: str, task: int) -> Iterator[None]:
        """Hold the step's lock (blocking): one run trains a missing step, the others wait."""
        path = self.step_path(key, task).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def describe(self, key: str, fields: dict[str, Any]) -> None:
        """Write ``<key>/key.json`` (what the address stands for) once, for humans."""
        path = self.root / key / "key.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".key.json.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(fields, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def load(self, key: str, task: int) -> TrajectoryStep | None:
        path = self.step_path(key, task)
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
            return TrajectoryStep(data["state"], data["rng"], int(data["steps"]), float(data["train_s"]))
        except Exception as exc:  # noqa: BLE001 - damaged: trained again and replaced
            warnings.warn(f"ignoring damaged trajectory step {path} ({type(exc).__name__}: {exc}); "
                          "it will be trained again", RuntimeWarning, stacklevel=2)
            return None

    def save(self, key: str, task: int, step: TrajectoryStep) -> Path:
        return atomic_torch_save(step.payload(), self.step_path(key, task))

    def size(self) -> dict[str, int]:
        """{"bytes", "files", "trajectories", "steps"} held by the store."""
        total, files = directory_size(self.root)
        trajectories = [p for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
        steps = sum(1 for p in trajectories for _ in p.glob("task*.pt"))
        return {"bytes": total, "files": files, "trajectories": len(trajectories), "steps": steps}

    def clean(self) -> int:
        """Delete every stored trajectory; returns the bytes freed. Never run it while a grid runs."""
        freed = directory_size(self.root)[0]
        if self.root.is_dir():
            shutil.rmtree(self.root)
        return freed


@dataclass
class TrajectoryPlan:
    """Which tasks of one run come from (or go to) the store: ``slots[task] = (key, regime)``."""

    store: TrajectoryStore
    slots: dict[int, tuple[str, str]]
    used: list[int] = field(default_factory=list)
    trained_here: list[int] = field(default_factory=list)

    @classmethod
    def for_run(cls, cfg: RunConfig, store: TrajectoryStore, n_experiences: int, *, timing: str,
                train_from: str, plain_first_task: bool) -> TrajectoryPlan | None:
        """The slots of a run: every task of a post-hoc method's trajectory, task 0 of an online
        method whose first task is plain fine-tuning, nothing otherwise."""
        slots: dict[int, tuple[str, str]] = {}
        sequential = trajectory_key(cfg, "sequential")
        if timing == "post-hoc":
            regime = "independent" if train_from == "pretrained" else "sequential"
            later = sequential if regime == "sequential" else trajectory_key(cfg, "independent")
            for task in range(n_experiences):
                slots[task] = (sequential, "sequential") if task == 0 else (later, regime)
        elif plain_first_task:
            slots[0] = (sequential, "sequential")
        if not slots:
            return None
        for key, regime in set(slots.values()):
            store.describe(key, trajectory_fields(cfg, regime))  # type: ignore[arg-type]
        return cls(store, slots)

    def keys(self) -> list[str]:
        return sorted({key for key, _ in self.slots.values()})

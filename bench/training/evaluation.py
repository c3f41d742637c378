"""Evaluation: the accuracy matrices, and Avalanche's own metrics and loggers beside them.

:class:`AccuracyCollector` fills one row of the class-incremental (CIL) and task-incremental
(TIL) accuracy matrices from the *same* forward passes of one evaluation over the test stream:

* CIL: argmax over the classes seen so far (task-agnostic). The collector masks the logits of
  classes not seen yet to −∞ in ``strategy.mb_output`` right after the forward pass, so that
  Avalanche's own metrics, which read ``mb_output``, measure exactly this definition:
  R[i][j] equals Avalanche's ``Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp00j`` after
  training experience i (tests/bench/training/test_evaluation.py checks it on a run).
* TIL: argmax restricted to the evaluated experience's own classes, on the unmasked logits.
  Domain-incremental streams have no TIL.

Where the definitions differ: mergecl's forgetting and BWT come from R (``reporting/metrics.py``:
forgetting = mean over j < T−1 of max_{i<T−1} R[i][j] − R[T−1][j], BWT = mean of R[T−1][j] −
R[j][j]); Avalanche's ``ExperienceForgetting`` is per experience, the first accuracy minus the
last; Avalanche's stream accuracy weights experiences by their number of samples, mergecl's Acc
is the unweighted mean of R's last row (equal when experiences have equal test sets).

:func:`avalanche_evaluator` attaches Avalanche's ``accuracy_metrics`` and ``forgetting_metrics``
with its TensorBoard, Weights & Biases, CSV or text loggers (``--logger``; off by default);
:func:`close_loggers` closes their files (and finishes the W&B run) at the end of the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

LOGGERS: tuple[str, ...] = ("tensorboard", "wandb", "csv", "text")


class AccuracyCollector(SupervisedPlugin):
    """One row of the CIL and TIL accuracy matrices from the same evaluation forward passes.

    CIL: argmax over the classes seen so far (task-agnostic). TIL: argmax restricted to the
    evaluated experience's own classes. Domain-incremental streams have no TIL.
    """

    def __init__(self, classes_per_experience: Sequence[Sequence[int]], n_classes: int,
                 task_incremental: bool) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.task_incremental = task_incremental
        self.experience_masks = []
        for classes in classes_per_experience:
            mask = torch.zeros(n_classes, dtype=torch.bool)
            mask[list(classes)] = True
            self.experience_masks.append(mask)
        self.seen = torch.ones(n_classes, dtype=torch.bool)
        self._counts: dict[int, list[int]] = {}
        self._raw: Tensor | None = None

    def start_row(self, seen_classes: Sequence[int]) -> None:
        self.seen = torch.zeros(self.n_classes, dtype=torch.bool)
        self.seen[list(seen_classes)] = True
        self._counts = {}

    @torch.no_grad()
    def after_eval_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        """Keep the raw logits (TIL) and mask unseen classes in ``mb_output`` (CIL, also for
        Avalanche's metrics)."""
        self._raw = strategy.mb_output.detach()
        strategy.mb_output = self._raw.masked_fill(~self.seen.to(self._raw.device), float("-inf"))

    @torch.no_grad()
    def after_eval_iteration(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        j = int(strategy.experience.current_experience)
        raw = self._raw if self._raw is not None else strategy.mb_output
        self.add(j, raw, strategy.mb_y)
        self._raw = None

    def add(self, experience: int, logits: Tensor, y: Tensor) -> None:
        """Count one batch of experience ``experience``'s evaluation (``logits`` unmasked)."""
        logits = logits.detach().float()
        counts = self._counts.setdefault(experience, [0, 0, 0])  # cil correct, til correct, total
        cil = logits.masked_fill(~self.seen.to(logits.device), float("-inf")).argmax(1)
        counts[0] += int((cil == y).sum())
        if self.task_incremental:
            mask = self.experience_masks[experience].to(logits.device)
            til = logits.masked_fill(~mask, float("-inf")).argmax(1)
            counts[1] += int((til == y).sum())
        counts[2] += len(y)

    @torch.no_grad()
    def evaluate_tensors(self, model: nn.Module, pairs: Sequence[tuple[Tensor, Tensor]],
                         batch_size: int, seen_classes: Sequence[int]) -> tuple[list[float], list[float] | None]:
        """One CIL/TIL row on in-memory tensors (the validation split), outside Avalanche's loop."""
        was_training = model.training
        model.eval()
        try:
            self.start_row(seen_classes)
            for j, (x, y) in enumerate(pairs):
                for start in range(0, len(y), batch_size):
                    self.add(j, model(x[start:start + batch_size]), y[start:start + batch_size])
            return self.row(len(pairs))
        finally:
            model.train(was_training)

    def row(self, n_experiences: int) -> tuple[list[float], list[float] | None]:
        missing = [j for j in range(n_experiences) if self._counts.get(j, [0, 0, 0])[2] == 0]
        if missing:
            raise RuntimeError(f"evaluation saw no samples of test experiences {missing}")
        cil = [self._counts[j][0] / self._counts[j][2] for j in range(n_experiences)]
        til = [self._counts[j][1] / self._counts[j][2] for j in range(n_experiences)] if self.task_incremental else None
        return cil, til


def wandb_mode() -> str:
    """``$WANDB_MODE`` if set; else online with credentials (``$WANDB_API_KEY`` or a netrc
    entry), offline without — a missing login is not an error."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    return "online" if netrc.is_file() and "api.wandb.ai" in netrc.read_text() else "offline"


class _Overlay:
    """``base`` with some attributes added or replaced (everything else read from ``base``)."""

    def __init__(self, base: Any, **extra: Any) -> None:
        self._base = base
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        if name == "_base":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self._base, name)


def wandb_for_avalanche(wandb: Any) -> Any:
    """The ``wandb`` module as Avalanche 0.6.0's ``WandBLogger`` reads it. Newer wandb (0.31)
    dropped ``wandb.viz`` (``CustomChart`` lives in ``wandb.plot``), which the logger reads on
    every metric, and ``wandb.util.generate_id``; both are given back, all else is ``wandb``."""
    extra: dict[str, Any] = {}
    if not hasattr(wandb, "viz"):
        extra["viz"] = _Overlay(None, CustomChart=wandb.plot.CustomChart)
    if not hasattr(wandb.util, "generate_id"):
        extra["util"] = _Overlay(wandb.util, generate_id=lambda length=8: uuid.uuid4().hex[:length])
    return _Overlay(wandb, **extra) if extra else wandb


def wandb_run_id() -> str:
    """``$WANDB_RUN_ID`` if set, else a fresh id. Passed to Avalanche's ``WandBLogger`` so that
    it never calls ``wandb.util.generate_id()``, which wandb ≥ 0.2x no longer has (Avalanche
    0.6.0 calls it when neither the logger's params nor the environment give an id)."""
    return os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]


def avalanche_evaluator(loggers: Sequence[str], log_dir: Path, run_name: str) -> Any:
    """Avalanche's ``EvaluationPlugin`` with per-experience and stream accuracy and forgetting,
    writing through the requested Avalanche loggers into ``log_dir``."""
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    unknown = sorted(set(loggers) - set(LOGGERS))
    if unknown:
        raise ValueError(f"unknown logger(s) {unknown}; accepted: {', '.join(LOGGERS)}")
    log_dir.mkdir(parents=True, exist_ok=True)
    built: list[Any] = []
    for name in loggers:
        if name == "tensorboard":
            from avalanche.logging import TensorboardLogger

            built.append(TensorboardLogger(tb_log_dir=str(log_dir / "tensorboard")))
        elif name == "wandb":
            from avalanche.logging import WandBLogger

            logger = WandBLogger(project_name="mergecl", run_name=run_name, dir=str(log_dir),
                                 params={"mode": wandb_mode(), "id": wandb_run_id()})
            logger.wandb = wandb_for_avalanche(logger.wandb)
            built.append(logger)
        elif name == "csv":
            from avalanche.logging import CSVLogger

            built.append(CSVLogger(log_folder=str(log_dir / "csv")))
        elif name == "text":
            from avalanche.logging import TextLogger

            built.append(TextLogger(open(log_dir / "log.txt", "a")))  # noqa: SIM115 - closed by close_loggers
    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=built)


def close_loggers(evaluator: Any) -> None:
    """End of the run: close the files of the loggers :func:`avalanche_evaluator` built (text,
    CSV, TensorBoard) and finish the W&B run, so the next run of the process starts its own."""
    import sys

    from avalanche.logging import CSVLogger, TextLogger

    for logger in getattr(evaluator, "loggers", ()):
        if isinstance(logger, TextLogger):
            if logger.file not in (sys.stdout, sys.stderr) and not logger.file.closed:
                logger.file.close()
        elif isinstance(logger, CSVLogger):
            logger.close()
        elif hasattr(logger, "writer"):  # TensorboardLogger (importing it needs tensorboard)
            logger.writer.close()
        elif hasattr(logger, "wandb") and getattr(logger.wandb, "run", None) is not None:
            logger.wandb.finish()

"""The run record: one typed JSON document per run — the contract between a run and reporting.

A :class:`RunRecord` is written atomically by the result store
(:mod:`mergecl.bench.orchestration.store`) at ``<out>/<benchmark>/<label>/seed<k>.json`` and
read back, validated, by every reporting function. Its schema is documented once, generated
from this model into ``docs/record-schema.md`` by::

    python -m mergecl.bench.orchestration.records > docs/record-schema.md

(``tests/test_docs.py`` checks that the file is current). Records
written by mergecl 0.1 (``schema_version`` 1) lack the later optional fields and read with
their defaults.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2
Status = Literal["ok", "failed"]
Variant = Literal["default", "tuned"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metrics(_Part):
    """Summary of an accuracy matrix R (fractions; ``reporting/metrics.py``): final average
    accuracy, average anytime accuracy, forgetting, backward transfer. Joint training has only
    ``acc``; a single experience has no forgetting or BWT."""

    acc: float
    aaa: float | None = None
    forgetting: float | None = None
    bwt: float | None = None


class Timings(_Part):
    """Seconds spent, and optimisation steps taken, by this run."""

    train_s: float | None = Field(None, description="optimisation steps only (data loading excluded)")
    train_steps: int | None = Field(None, description="optimisation steps this run took itself")
    reused_steps: int = Field(0, description="optimisation steps read from the trajectory store instead")
    eval_s: float | None = None
    merge_s: float | None = Field(None, description="merges and their statistics (Fisher, SVD, …)")
    total_s: float | None = None


class Host(_Part):
    cpus: int | None = None
    threads: int | None = Field(None, description="torch threads of this run")
    cpu_model: str | None = None


class ValidationSplit(_Part):
    """The held-out part of each task's training pool (never trained on; tuning reads it) and
    the final model's accuracy on it."""

    fraction: float
    sizes: list[int] = Field(description="validation samples per task")
    indices_sha256: str = Field(description="hash of the held-out indices of every task")
    row: list[float] | None = Field(None, description="final class-incremental accuracy per task")
    til_row: list[float] | None = Field(None, description="final task-incremental accuracy per task")
    acc: float | None = Field(None, description="mean of row (what tuning maximises; CIL headline)")
    til_acc: float | None = Field(None, description="mean of til_row (TIL-headline benchmarks)")


class TrajectoryUse(_Part):
    """What this run read from the trajectory store (``bench/training/trajectories.py``)."""

    key: str = Field(description="content address of the trajectory")
    regime: str = Field(description="sequential | independent (post-hoc) or first-task (online)")
    tasks: list[int] = Field(description="tasks whose trained state came from the store")
    trained_here: list[int] = Field(default_factory=list,
                                    description="of those, the tasks this run trained and stored")


class RunRecord(BaseModel):
    """One run of one method on one benchmark with one seed."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(1, description="2 for records written by this version")
    method: str = Field(description="registry name of the method")
    label: str = Field(description="name of the row in tables (and of the record's folder)")
    benchmark: str
    seed: int
    preset: str | None = None
    parameterisation: Literal["full", "lora"] = "full"
    config: dict[str, Any] = Field(default_factory=dict, description="the resolved RunConfig")
    config_hash: str = Field("", description="hash of the fields that determine the numbers")
    variant: Variant = Field("default", description="default: the method's own defaults; "
                             "tuned: the values chosen by `mergecl tune`")
    base_label: str | None = Field(None, description="the default row this tuned row belongs to")
    tuned_values: dict[str, Any] | None = Field(None, description="hyper-parameters set by tuning")
    tuning_hash: str | None = Field(None, description="hash of the tuning record they come from")
    paper: str | None = None
    scenario: Literal["class-incremental", "domain-incremental"] | None = None
    class_order: list[int] | None = None
    classes_per_experience: list[list[int]] | None = None
    upper_bound: bool = Field(False, description="joint training: one row, never ranked")
    acc_matrix: list[list[float]] | None = Field(
        None, description="R[i][j]: class-incremental accuracy on experience j after training i")
    til_acc_matrix: list[list[float]] | None = Field(
        None, description="the same with argmax within experience j's classes (class-incremental only)")
    metrics: Metrics | None = None
    til_metrics: Metrics | None = None
    validation: ValidationSplit | None = None
    trajectory: TrajectoryUse | None = None
    copy_of: str | None = Field(
        None, description="label of the grid row whose record this copies: the same benchmark, seed "
        "and config hash (e.g. a tuned row whose chosen values are the defaults), so not run twice")
    diagnostics: dict[str, Any] = Field(
        default_factory=dict, description="per_task: the method's per-task diagnostics "
        "(merge_coefficient, merge_s, …); benchmark: stream facts (e.g. rotation angles)")
    timings: Timings = Field(default_factory=Timings)
    peak_rss_mb: float | None = Field(None, description="this run's peak resident memory (VmHWM)")
    versions: dict[str, str] = Field(default_factory=dict)
    git_rev: str | None = None
    host: Host = Field(default_factory=Host)
    started_at: str | None = None
    finished_at: str | None = None
    status: Status
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def row_label(self) -> str:
        """The row this record belongs to (a tuned record shares its base row's name)."""
        return self.base_label or self.label

    def to_json_dict(self) -> dict[str, Any]:
        """The record as plain Python data (what the store serialises)."""
        return self.model_dump()


# ------------------------------------------------------------------------------ schema docs


def _type_text(annotation: Any) -> str:
    """A readable type: class names without modules (the same whether this module runs as
    ``__main__`` or is imported), ``X or null`` for optionals, literals as their values."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args)
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_text(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def schema_markdown() -> str:
    """The record schema as Markdown (the source of ``docs/record-schema.md``)."""
    lines = ["# Run record schema", "",
             "Generated from `mergecl.bench.orchestration.records` by "
             "`python -m mergecl.bench.orchestration.records > docs/record-schema.md`; do not edit.",
             "", f"Records are JSON, one per run, at `<out>/<benchmark>/<label>/seed<k>.json` "
             f"(schema version {SCHEMA_VERSION}).", ""]
    for model in (RunRecord, Metrics, Timings, Host, ValidationSplit, TrajectoryUse):
        lines += [f"## {model.__name__}", "", (model.__doc__ or "").strip().replace("\n", " "), "",
                  "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            default = "required" if info.is_required() else repr(
                info.default_factory() if info.default_factory is not None else info.default)
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_text(info.annotation)} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - exercised by the docs test through schema_markdown
    sys.stdout.write(schema_markdown())

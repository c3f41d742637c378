"""Hyper-parameter selection on the validation split, with the same budget for every method.

For every tunable row (method entry with tunable hyper-parameters, ``bench/config/grids/*.yaml``)
and benchmark of a grid:

1. the **search space** is the method's declared one (``tunable(...)`` fields of its Params;
   ``mergecl methods`` lists them) or the row's ``tune: {param: [values]}``;
2. ``budget`` **configurations** are evaluated (the grid's ``tune:`` block, default 8): the
   method's defaults first, then the others in ``grid`` order or a seeded ``random`` draw
   without replacement from the product of the values (a space smaller than the budget is
   evaluated whole, and the tuning record says so);
3. each configuration **runs** like any grid run — on the tuning seeds (default seed 0), through
   the same executor, result store and trajectory store: a post-hoc coefficient (MagMax's λ,
   TIES' λ and top-k, …) changes only the merge of one stored trajectory, so it costs
   evaluations only; an online method's costs one training per value;
4. the **choice** maximises the final average *validation* accuracy — the headline metric of the
   benchmark (class- or task-incremental), measured on each task's held-out validation split —
   averaged over the tuning seeds; ties go to the earlier configuration (the defaults first).
   Test data are never read for a choice (tests/bench/orchestration/test_tuning.py poisons them).

A :class:`TuningRecord` per (row, benchmark) — every configuration with its score, the choice,
the cost, the hashes — is written to ``<out>/tuning/<benchmark>/<label>.json``; ``mergecl tune
--all`` then ships the choices as config (``bench/config/tuned.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mergecl.bench.config.grid_config import GridConfig, MethodEntry, TuneSettings, entry_overrides
from mergecl.bench.config.run_config import ConfigError, RunConfig, config_hash, resolve_run
from mergecl.bench.orchestration.records import RunRecord
from mergecl.bench.orchestration.store import ResultStore, RunKey, atomic_write_text
from pydantic import BaseModel, ConfigDict, Field, ValidationError

TUNING_DIR = "tuning"


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    params: dict[str, Any] = Field(description="the tuned hyper-parameters of this configuration")
    label: str = Field(description="label of its runs in the result store")
    scores: dict[int, float] = Field(default_factory=dict, description="validation score per seed")
    mean: float | None = None


class TuningCost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: int
    train_steps: int
    reused_steps: int
    total_s: float


class TuningRecord(BaseModel):
    """One (row, benchmark) tuning: every configuration tried, its score, the choice, the cost."""

    model_config = ConfigDict(extra="forbid")

    method: str
    label: str
    benchmark: str
    metric: str = Field(description="validation acc (CIL) or til_acc, the benchmark's headline")
    seeds: list[int]
    budget: int
    search: str
    space: dict[str, list[Any]]
    evaluated: int
    candidates: list[Candidate]
    choice: dict[str, Any]
    score: float
    edge: list[str] = Field(description="parameters chosen at an end of their search space")
    cost: TuningCost
    protocol: str
    base_config_hash: str

    def digest(self) -> str:
        return config_hash(self.model_dump(mode="json"))[:12]


# ------------------------------------------------------------------------------ search spaces


def search_space(entry: MethodEntry, params_class: Any) -> dict[str, list[Any]]:
    """The row's search space: its ``tune:`` mapping, else the method's declared tunables.
    Refuses an empty space, an unknown parameter and a value outside a parameter's range."""
    from mergecl.methods.base import tunables

    declared = tunables(params_class)
    space = entry.tune if isinstance(entry.tune, dict) else declared
    if not space:
        raise ConfigError(f"row {entry.label!r}: nothing to tune (method {entry.method!r} declares "
                          "no tunable hyper-parameter); set `tune: false` for it")
    fields = params_class.model_fields
    for name, values in space.items():
        if name not in fields:
            raise ConfigError(f"row {entry.label!r}: cannot tune unknown parameter {name!r}; "
                              f"accepted: {', '.join(fields)}")
        if not values:
            raise ConfigError(f"row {entry.label!r}: the search space of {name!r} is empty; "
                              f"accepted: {_accepted_space(name, fields[name], declared.get(name))}")
        for value in values:
            try:
                params_class(**{name: value})
            except ValidationError as err:
                raise ConfigError(f"row {entry.label!r}: value {value!r} of {name!r} is not accepted: "
                                  f"{err.errors()[0]['msg']}") from None
    return {name: list(values) for name, values in space.items()}


def _accepted_space(name: str, field: Any, declared: Sequence[Any] | None) -> str:
    """What a search space of parameter ``name`` may hold: a non-empty list of values, within
    the field's range (or among its literal values), e.g. the method's declared space."""
    import types
    import typing

    lows, highs = [], []
    for constraint in field.metadata:  # pydantic's ge/gt/le/lt (annotated_types) constraints
        for attribute, sign, low in (("ge", "≤", True), ("gt", "<", True),
                                     ("le", "≤", False), ("lt", "<", False)):
            bound = getattr(constraint, attribute, None)
            if bound is not None:
                (lows if low else highs).append(f"{bound} {sign}" if low else f"{sign} {bound}")
    annotation = field.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (
        typing.Union, types.UnionType) else (annotation,)
    text = f"a non-empty list of values for {name!r}"
    choices = _literal_values(annotation) or ((True, False) if bool in options else ())
    if choices:
        text += " among " + ", ".join(repr(c) for c in choices)
    elif lows or highs:
        text += " within " + " ".join([*lows, name, *highs])
    if type(None) in options:
        text += " (or null)"
    if declared:
        text += f", e.g. the declared space {list(declared)}"
    return text + f" (or leave {name!r} out of `tune:`)"


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    """The values of a ``Literal[...]`` annotation (also inside ``X | None``), else ()."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return ()


def candidates(space: Mapping[str, Sequence[Any]], defaults: Mapping[str, Any], budget: int,
               search: str, key: str) -> list[dict[str, Any]]:
    """``budget`` configurations of ``space``: the defaults first, then the others in product
    order (``grid``) or drawn at random without replacement, seeded by ``key`` (``random``)."""
    if budget < 1:
        raise ConfigError(f"tuning budget must be ≥ 1 (got {budget})")
    if search not in ("random", "grid"):
        raise ConfigError(f"search must be random or grid (got {search!r})")
    names = list(space)
    product = [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]
    default = {name: defaults.get(name) for name in names}  # always evaluated, first
    rest = [c for c in product if c != default]
    if search == "random":
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        rest = random.Random(seed).sample(rest, len(rest))
    return ([default] + rest)[:budget]


def _edge(choice: Mapping[str, Any], space: Mapping[str, Sequence[Any]]) -> list[str]:
    """Parameters whose chosen value is the smallest or largest of a numeric space (or the
    first/last listed otherwise)."""
    edge = []
    for name, values in space.items():
        if len(values) < 2:
            continue
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        value = choice.get(name)
        if len(numeric) == len(values):
            if value in (min(numeric), max(numeric)):
                edge.append(name)
        elif value in (values[0], values[-1]):
            edge.append(name)
    return edge


# ------------------------------------------------------------------------------ the runs


def tunable_entries(grid: GridConfig) -> list[MethodEntry]:
    from mergecl.bench.config.validation import method_class
    from mergecl.methods.base import tunables

    return [entry for entry in grid.methods if entry.tune is not False
            and (isinstance(entry.tune, dict) or tunables(method_class(entry.method).Params))]


def tuning_plan(grid: GridConfig, settings: TuneSettings, entries: Sequence[MethodEntry],
                benchmarks: Sequence[str], cli_overrides: Mapping[str, Any] | None = None,
                preset: str | None = None) -> dict[tuple[str, str], tuple[list[Candidate], list[RunConfig]]]:
    """{(label, benchmark): (candidates, their run configs)} — everything checked before any run."""
    from mergecl.bench.config.validation import method_class

    plan = {}
    for benchmark in benchmarks:
        for entry in entries:
            if not entry.runs_on(benchmark):
                continue
            params_class = method_class(entry.method).Params
            space = search_space(entry, params_class)
            overrides = entry_overrides(grid, entry, cli_overrides)
            base = resolve_run(entry.method, benchmark, settings.seeds[0], preset or grid.preset,
                               overrides, label=entry.label)
            chosen = candidates(space, base.params, settings.budget, settings.search,
                                f"{entry.label}/{benchmark}")
            cands, cfgs = [], []
            for index, values in enumerate(chosen):
                label = f"{entry.label}.t{index}"
                cands.append(Candidate(index=index, params=values, label=label))
                merged = dict(overrides)
                merged["params"] = {**overrides.get("params", {}), **values}
                for seed in settings.seeds:
                    cfgs.append(resolve_run(entry.method, benchmark, seed, preset or grid.preset, merged,
                                            label=label))
            plan[(entry.label, benchmark)] = (cands, cfgs)
    return plan


def _score(record: RunRecord, metric: str) -> float:
    if record.validation is None:
        raise ConfigError(f"{record.benchmark}/{record.label}/seed{record.seed} has no validation "
                          "split (validation_fraction is 0): tuning needs one")
    value = record.validation.til_acc if metric == "til_acc" else record.validation.acc
    if value is None:
        raise ConfigError(f"{record.benchmark}/{record.label}: no validation {metric}")
    return float(value)


def tuning_record(entry: MethodEntry, benchmark: str, settings: TuneSettings,
                  cands: Sequence[Candidate], cfgs: Sequence[RunConfig], store: ResultStore,
                  space: Mapping[str, Sequence[Any]]) -> TuningRecord:
    """The tuning record of one (row, benchmark) from its finished runs in ``store``."""
    from mergecl.bench.config.tuned import protocol_hash
    from mergecl.bench.streams.benchmarks import get_benchmark

    metric = get_benchmark(benchmark).headline
    runs = train = reused = 0
    seconds = 0.0
    scored = []
    for candidate in cands:
        scores = {}
        for cfg in (c for c in cfgs if c.label == candidate.label):
            record = store.read(RunKey.of(cfg))
            if record is None or not record.ok or record.config_hash != cfg.digest():
                raise ConfigError(f"tuning run {benchmark}/{cfg.label}/seed{cfg.seed} has no finished "
                                  "record; rerun `mergecl tune` (finished runs are kept)")
            scores[cfg.seed] = _score(record, metric)
            runs += 1
            train += record.timings.train_steps or 0
            reused += record.timings.reused_steps
            seconds += record.timings.total_s or 0.0
        scored.append(candidate.model_copy(update={"scores": scores, "mean": sum(scores.values()) / len(scores)}))
    best = max(scored, key=lambda c: (c.mean, -c.index))  # ties: the earlier (defaults first)
    base = next(c for c in cfgs if c.label == cands[0].label)
    return TuningRecord(
        method=base.method, label=entry.label, benchmark=benchmark, metric=metric,
        seeds=list(settings.seeds), budget=settings.budget, search=settings.search,
        space={k: list(v) for k, v in space.items()}, evaluated=len(cands), candidates=scored,
        choice=best.params, score=best.mean, edge=_edge(best.params, space),
        cost=TuningCost(runs=runs, train_steps=train, reused_steps=reused, total_s=round(seconds, 3)),
        protocol=protocol_hash(base), base_config_hash=base.digest())


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def tuning_summary(records: Sequence[TuningRecord], command: str) -> str:
    """Markdown page of tuning records: per (benchmark, row) every configuration with its
    validation score (%, mean over the tuning seeds), the choice (bold), what it cost."""
    from mergecl.bench.reporting.tables import render_rows

    lines = ["# Tuned hyper-parameters: every configuration evaluated", "",
             f"Generated by `{command}`; do not edit. Scores are validation accuracies (the "
             "benchmark's headline metric on each task's held-out validation split, %), averaged "
             "over the tuning seeds; test data are never read. The choice is in bold; ties go to "
             "the earlier configuration (the method's defaults come first). *edge*: chosen at an "
             "end of its search space.", ""]
    total = TuningCost(runs=0, train_steps=0, reused_steps=0, total_s=0.0)
    for benchmark in sorted({r.benchmark for r in records}):
        lines += [f"## {benchmark}", ""]
        rows = []
        for record in sorted((r for r in records if r.benchmark == benchmark), key=lambda r: r.label):
            total = TuningCost(runs=total.runs + record.cost.runs,
                               train_steps=total.train_steps + record.cost.train_steps,
                               reused_steps=total.reused_steps + record.cost.reused_steps,
                               total_s=total.total_s + record.cost.total_s)
            tried = []
            for candidate in record.candidates:
                text = (", ".join(f"{k}={_value(v)}" for k, v in candidate.params.items())
                        + f": {100 * (candidate.mean or 0.0):.1f}")
                tried.append(f"**{text}**" if candidate.params == record.choice else text)
            rows.append([record.label, "; ".join(tried),
                         ", ".join(record.edge) or "—",
                         f"{record.cost.runs} runs, {record.cost.train_steps} training steps "
                         f"({record.cost.reused_steps} reused)"])
        lines += [render_rows(["row", "configurations: validation score", "edge", "cost"], rows,
                              "markdown"), ""]
    lines.append(f"Total: {total.runs} runs, {total.train_steps} optimisation steps trained, "
                 f"{total.reused_steps} steps reused from the trajectory store, "
                 f"{total.total_s / 60:.1f} min of run time (summed over runs).")
    return "\n".join(lines) + "\n"


def tuning_record_path(out: str | Path, benchmark: str, label: str) -> Path:
    return Path(out) / TUNING_DIR / benchmark / f"{label}.json"


def write_tuning_record(out: str | Path, record: TuningRecord) -> Path:
    return atomic_write_text(tuning_record_path(out, record.benchmark, record.label),
                             record.model_dump_json(indent=1) + "\n")


def read_tuning_record(out: str | Path, benchmark: str, label: str) -> TuningRecord | None:
    path = tuning_record_path(out, benchmark, label)
    return TuningRecord.model_validate_json(path.read_text()) if path.is_file() else None

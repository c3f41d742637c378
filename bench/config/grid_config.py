"""The grid: methods × benchmarks × seeds, parsed from YAML and expanded into run configs.

A grid YAML has ``methods`` (registry names, or ``{label, method, set}`` variants),
``benchmarks``, ``seeds``, ``preset`` and ``set`` (overrides for every run); see
``bench/config/grids/leaderboard.yaml``. :func:`expand_grid` resolves every run
(:func:`~mergecl.bench.config.run_config.resolve_run`); validation of the whole grid, before
any training, is :func:`mergecl.bench.config.validation.validate_grid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mergecl.bench.config.run_config import (
    ConfigError,
    RunConfig,
    deep_merge,
    packaged_yaml,
    resolve_run,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


@dataclass(frozen=True)
class MethodEntry:
    """One row of a grid: a registry method (or alias) under a label, with its own overrides.

    ``tune``: tune this row's tunable hyper-parameters (``True``), not at all (``False``, e.g.
    an ablation whose tunables do nothing), or over another search space (``{param: [values]}``).
    ``benchmarks``: run this row on these of the grid's benchmarks only (``None``: all of them),
    e.g. a LoRA tier on one headline benchmark.
    """

    label: str
    method: str
    overrides: dict[str, Any]
    tune: bool | dict[str, list[Any]] = True
    benchmarks: tuple[str, ...] | None = None

    def runs_on(self, benchmark: str) -> bool:
        return self.benchmarks is None or benchmark in self.benchmarks


class TuneSettings(BaseModel):
    """The ``tune:`` block of a grid: every tuned row gets the same ``budget`` of evaluated
    configurations, drawn by ``search`` from its search space, scored on ``seeds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: int = Field(8, ge=1, le=1000, description="configurations evaluated per (row, benchmark)")
    search: Literal["random", "grid"] = "random"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    benchmarks: list[str] | None = Field(
        None, description="the benchmarks whose rows are tuned (and get tuned rows); default: all of the grid's")

    def tunes(self, benchmark: str) -> bool:
        return self.benchmarks is None or benchmark in self.benchmarks

    @field_validator("seeds")
    @classmethod
    def _non_negative(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be non-negative (got {seeds})")
        return seeds


GRID_KEYS = ("methods", "benchmarks", "seeds", "preset", "set", "workers", "executor", "title",
             "tune", "tuned")
ENTRY_KEYS = ("label", "method", "set", "tune", "benchmarks")


def parse_method_entry(entry: Any) -> MethodEntry:
    if isinstance(entry, str):
        return MethodEntry(label=entry, method=entry, overrides={})
    if isinstance(entry, Mapping):
        unknown = set(entry) - set(ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"method entry {dict(entry)!r} has unknown keys {sorted(unknown)}; "
                              f"accepted: {', '.join(ENTRY_KEYS)}")
        method = entry.get("method")
        if not isinstance(method, str):
            raise ConfigError(f"method entry {dict(entry)!r} needs a 'method' name")
        label = entry.get("label", method)
        overrides = entry.get("set") or {}
        if not isinstance(label, str) or not isinstance(overrides, Mapping):
            raise ConfigError(f"method entry {dict(entry)!r}: 'label' must be a string, 'set' a mapping")
        tune = entry.get("tune", True)
        if not isinstance(tune, bool) and not (
                isinstance(tune, Mapping) and all(isinstance(v, list) for v in tune.values())):
            raise ConfigError(f"method entry {label!r}: 'tune' must be true, false or "
                              f"{{parameter: [values]}} (got {tune!r})")
        only = entry.get("benchmarks")
        if only is not None and (not isinstance(only, list) or not only
                                 or not all(isinstance(b, str) for b in only)):
            raise ConfigError(f"method entry {label!r}: 'benchmarks' must be a non-empty list of "
                              f"benchmark names (got {only!r})")
        return MethodEntry(label=label, method=method, overrides=dict(overrides),
                           tune=tune if isinstance(tune, bool) else {k: list(v) for k, v in tune.items()},
                           benchmarks=tuple(only) if only is not None else None)
    raise ConfigError(f"method entry {entry!r} must be a name or a mapping with {'/'.join(ENTRY_KEYS)}")


@dataclass(frozen=True)
class GridConfig:
    methods: list[MethodEntry]
    benchmarks: list[str]
    seeds: list[int]
    preset: str
    overrides: dict[str, Any]
    title: str | None = None
    tune: TuneSettings = field(default_factory=TuneSettings)
    tuned: bool = False


def parse_grid(data: Mapping[str, Any]) -> GridConfig:
    unknown = set(data) - set(GRID_KEYS)
    if unknown:
        raise ConfigError(f"grid config has unknown keys {sorted(unknown)}; accepted: {', '.join(GRID_KEYS)}")
    for key in ("methods", "benchmarks", "seeds"):
        value = data.get(key)
        if not isinstance(value, list) or not value:
            raise ConfigError(f"grid config needs a non-empty list '{key}' (got {value!r})")
    seeds = data["seeds"]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative integers (got {seeds!r})")
    if not all(isinstance(b, str) for b in data["benchmarks"]):
        raise ConfigError(f"benchmarks must be names (got {data['benchmarks']!r})")
    preset = data.get("preset", "default")
    if not isinstance(preset, str):
        raise ConfigError(f"preset must be a name (got {preset!r})")
    overrides = data.get("set") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"'set' must be a mapping of field: value (got {overrides!r})")
    methods = [parse_method_entry(m) for m in data["methods"]]
    labels = [m.label for m in methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"method labels must be unique; repeated: {duplicates}")
    for entry in methods:
        outside = sorted(set(entry.benchmarks or ()) - set(data["benchmarks"]))
        if outside:
            raise ConfigError(f"method entry {entry.label!r}: benchmarks {outside} are not in the grid; "
                              f"accepted: {', '.join(data['benchmarks'])}")
    title = data.get("title")
    try:
        tune = TuneSettings(**(data.get("tune") or {}))
    except (ValidationError, TypeError) as err:
        raise ConfigError(f"grid 'tune' block: {err}; accepted keys: budget (≥ 1), search "
                          "(random | grid), seeds (list of non-negative integers), benchmarks "
                          "(a subset of the grid's)") from None
    outside = sorted(set(tune.benchmarks or ()) - set(data["benchmarks"]))
    if outside:
        raise ConfigError(f"grid 'tune' block: benchmarks {outside} are not in the grid; "
                          f"accepted: {', '.join(data['benchmarks'])}")
    tuned = data.get("tuned", False)
    if not isinstance(tuned, bool):
        raise ConfigError(f"'tuned' must be true or false (got {tuned!r})")
    return GridConfig(
        methods=methods,
        benchmarks=list(data["benchmarks"]),
        seeds=list(seeds),
        preset=preset,
        overrides=dict(overrides),
        title=title if isinstance(title, str) else None,
        tune=tune,
        tuned=tuned,
    )


def default_grid() -> dict[str, Any]:
    """The packaged default leaderboard grid."""
    return packaged_yaml("grids/leaderboard.yaml")


def entry_overrides(grid: GridConfig, entry: MethodEntry,
                    cli_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The overrides of one row: grid ``set`` < method entry ``set`` < command line."""
    return deep_merge(deep_merge(grid.overrides, entry.overrides), cli_overrides or {})


def expand_grid(grid: GridConfig, cli_overrides: Mapping[str, Any] | None = None,
                preset: str | None = None, tuned: bool | None = None) -> list[RunConfig]:
    """One RunConfig per (method entry, benchmark, seed); precedence: preset < grid ``set`` <
    method entry ``set`` < command line. With ``tuned`` (default: the grid's ``tuned``), every
    row with shipped tuned values (``bench/config/tuned/<benchmark>.yaml``) on a benchmark the
    ``tune:`` block covers gets a tuned row ``<label>-tuned`` right after it."""
    from mergecl.bench.config.tuned import tuned_row

    runs: list[RunConfig] = []
    chosen_preset = preset or grid.preset
    with_tuned = grid.tuned if tuned is None else tuned
    # benchmark-major order: an interrupted grid leaves whole benchmarks done, not whole methods
    for benchmark in grid.benchmarks:
        for seed in grid.seeds:
            for entry in grid.methods:
                if not entry.runs_on(benchmark):
                    continue
                overrides = entry_overrides(grid, entry, cli_overrides)
                default = resolve_run(entry.method, benchmark, seed, chosen_preset, overrides,
                                      label=entry.label)
                runs.append(default)
                if with_tuned and entry.tune is not False and grid.tune.tunes(benchmark):
                    row = tuned_row(default, entry)
                    if row is not None:
                        runs.append(row)
    return runs

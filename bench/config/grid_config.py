"""The grid: methods × benchmarks × seeds, parsed from YAML and expanded into run configs.

A grid YAML has ``methods`` (registry names, or ``{label, method, set}`` variants),
``benchmarks``, ``seeds``, ``preset`` and ``set`` (overrides for every run); see
``bench/config/grids/leaderboard.yaml``. :func:`expand_grid` resolves every run
(:func:`~mergecl.bench.config.run_config.resolve_run`); validation of the whole grid, before
any training, is :func:`mergecl.bench.config.validation.validate_grid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mergecl.bench.config.run_config import (
    ConfigError,
    RunConfig,
    deep_merge,
    packaged_yaml,
    resolve_run,
)


@dataclass(frozen=True)
class MethodEntry:
    """One row of a grid: a registry method under a label, with its own overrides."""

    label: str
    method: str
    overrides: dict[str, Any]


GRID_KEYS = ("methods", "benchmarks", "seeds", "preset", "set", "workers", "executor", "title")


def parse_method_entry(entry: Any) -> MethodEntry:
    if isinstance(entry, str):
        return MethodEntry(label=entry, method=entry, overrides={})
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"label", "method", "set"}
        if unknown:
            raise ConfigError(
                f"method entry {dict(entry)!r} has unknown keys {sorted(unknown)}; accepted: label, method, set"
            )
        method = entry.get("method")
        if not isinstance(method, str):
            raise ConfigError(f"method entry {dict(entry)!r} needs a 'method' name")
        label = entry.get("label", method)
        overrides = entry.get("set") or {}
        if not isinstance(label, str) or not isinstance(overrides, Mapping):
            raise ConfigError(f"method entry {dict(entry)!r}: 'label' must be a string, 'set' a mapping")
        return MethodEntry(label=label, method=method, overrides=dict(overrides))
    raise ConfigError(f"method entry {entry!r} must be a name or a mapping with label/method/set")


@dataclass(frozen=True)
class GridConfig:
    methods: list[MethodEntry]
    benchmarks: list[str]
    seeds: list[int]
    preset: str
    overrides: dict[str, Any]
    title: str | None = None


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
    title = data.get("title")
    return GridConfig(
        methods=methods,
        benchmarks=list(data["benchmarks"]),
        seeds=list(seeds),
        preset=preset,
        overrides=dict(overrides),
        title=title if isinstance(title, str) else None,
    )


def default_grid() -> dict[str, Any]:
    """The packaged default leaderboard grid."""
    return packaged_yaml("grids/leaderboard.yaml")


def expand_grid(grid: GridConfig, cli_overrides: Mapping[str, Any] | None = None,
                preset: str | None = None) -> list[RunConfig]:
    """One RunConfig per (method entry, benchmark, seed); precedence: preset < grid ``set`` <
    method entry ``set`` < command line."""
    runs: list[RunConfig] = []
    chosen_preset = preset or grid.preset
    # benchmark-major order: an interrupted grid leaves whole benchmarks done, not whole methods
    for benchmark in grid.benchmarks:
        for seed in grid.seeds:
            for entry in grid.methods:
                overrides = deep_merge(deep_merge(grid.overrides, entry.overrides), cli_overrides or {})
                runs.append(resolve_run(entry.method, benchmark, seed, chosen_preset, overrides, label=entry.label))
    return runs

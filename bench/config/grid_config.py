"""Expand a grid (methods × benchmarks × seeds) into validated run configs.

Everything is resolved and validated here, before any training: an unknown method, benchmark
or preset, a bad hyper-parameter or a missing data root stops the whole grid with a
:class:`~mergecl.bench.config.run_config.ConfigError` and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mergecl.bench.config.run_config import (
    ConfigError,
    GridConfig,
    RunConfig,
    deep_merge,
    resolve_run,
)


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


def validate_grid(runs: list[RunConfig], check_data: bool = True) -> None:
    """Validate every run; data availability is checked once per (benchmark, data root)."""
    from mergecl.bench.orchestration.runner import validate_run

    checked_data: set[tuple[str, str | None]] = set()
    for cfg in runs:
        key = (cfg.benchmark, cfg.data_root)
        validate_run(cfg, check_data=check_data and key not in checked_data)
        checked_data.add(key)
    labels: dict[str, str] = {}
    for cfg in runs:
        label = cfg.label or cfg.method
        if labels.setdefault(label, cfg.method) != cfg.method:
            raise ConfigError(f"label {label!r} is used for two methods ({labels[label]!r}, {cfg.method!r})")

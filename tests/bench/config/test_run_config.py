"""Run configs (mergecl.bench.config.run_config): every bad input is a ConfigError naming the
bad value and the accepted ones (fuzzed with hypothesis). Grids: test_grid_config.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from config_values import json_values, names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mergecl.bench.config.run_config import (
    RUN_FIELDS,
    ConfigError,
    RunConfig,
    load_yaml,
    parse_overrides,
    resolve_run,
)

# ---------------------------------------------------------------------------- config fuzzing
run_keys = st.sampled_from(RUN_FIELDS) | st.text(max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=names,
    benchmark=names,
    seed=st.integers(-5, 2**40),
    preset=st.sampled_from(["quick", "default", "paper"]) | st.text(max_size=6),
    overrides=st.dictionaries(run_keys, json_values, max_size=6),
    label=st.none() | st.text(max_size=8),
)
def test_resolve_run_only_returns_or_raises_config_error(
    method, benchmark, seed, preset, overrides, label
) -> None:
    try:
        cfg = resolve_run(method, benchmark, seed, preset, overrides=overrides, label=label)
    except ConfigError:
        return
    assert isinstance(cfg, RunConfig)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.text(max_size=12) | st.builds("{}={}".format, st.text(max_size=6), st.text(max_size=8)),
        max_size=4,
    )
)
def test_parse_overrides_only_returns_or_raises_config_error(pairs: list[str]) -> None:
    try:
        result = parse_overrides(pairs)
    except ConfigError:
        return
    assert isinstance(result, dict)


# ---------------------------------------------------------------------------- validation messages
def test_unknown_key_names_the_accepted_keys() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_run("seqft", "split-mnist", 0, "quick", overrides={"learning_rate": 1e-3})
    assert "learning_rate" in str(info.value) and "accepted keys" in str(info.value)
    assert "lr" in str(info.value).split("accepted keys:")[1]


@pytest.mark.parametrize(
    "override, field, bound",
    [
        ({"epochs": -1}, "epochs", "greater than or equal to 1"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"lr": 0.0}, "lr", "greater than 0"),
        ({"lr": -1e-3}, "lr", "greater than 0"),
        ({"head_lr": 0}, "head_lr", "greater than 0"),
    ],
)
def test_out_of_range_values_name_the_field_and_bound(override, field, bound) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_run("seqft", "split-mnist", 0, "quick", overrides=override)
    message = str(info.value)
    assert (
        f"{field}:" in message
        and bound in message
        and repr(next(iter(override.values()))) in message
    )


def test_literal_fields_name_the_accepted_values() -> None:
    with pytest.raises(ConfigError, match="'dense' is not accepted; expected 'full' or 'lora'"):
        resolve_run("seqft", "split-mnist", 0, overrides={"parameterisation": "dense"})


def test_unknown_preset_names_the_presets() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'fast'; accepted: default, paper, quick"):
        resolve_run("seqft", "split-mnist", 0, preset="fast")


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("methods: [seqft, pnm\nseeds: {0: 1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump(["seqft", "pnm"]))
    with pytest.raises(ConfigError, match="must hold a mapping, not list"):
        load_yaml(listing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_yaml(binary)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "absent.yaml")
    assert load_yaml(_write(tmp_path / "empty.yaml", "")) == {}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_trajectories_off_survives_yaml_parsing() -> None:
    # `--set trajectories=off` arrives as YAML's False
    assert resolve_run("seqft", "split-mnist", 0, "quick", {"trajectories": False}).trajectories == "off"


def test_default_preset_drops_in_memory_settings_for_streamed_benchmarks() -> None:
    """The default preset's validation split and frozen-prefix feature cache need in-memory
    tensors; a paper dataset streamed from disk gets neither (its `streamed:` block)."""
    offline = resolve_run("seqft", "split-mnist", 0, "default")
    assert offline.validation_fraction == 0.1 and offline.frozen_blocks == 5
    streamed = resolve_run("seqft", "imagenet-r-10", 0, "default")
    assert streamed.validation_fraction == 0 and streamed.frozen_blocks is None


def test_params_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"params must be a mapping.*got 1"):
        resolve_run("seqft", "split-mnist", 0, "quick", overrides={"params": 1})

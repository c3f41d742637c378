"""Grids (mergecl.bench.config.grid_config): every bad grid is a ConfigError naming the bad
value and the accepted ones (fuzzed with hypothesis); per-row benchmark subsets expand in order."""

from __future__ import annotations

from typing import Any

import pytest
from config_values import json_values, names
from hypothesis import given, settings
from hypothesis import strategies as st
from mergecl.bench.config.grid_config import GRID_KEYS, GridConfig, expand_grid, parse_grid
from mergecl.bench.config.run_config import ConfigError

# ---------------------------------------------------------------------------- grid fuzzing
method_entries = names | st.dictionaries(
    st.sampled_from(["label", "method", "set"]) | st.text(max_size=5), json_values, max_size=3
)
near_grids = st.fixed_dictionaries(
    {
        "methods": st.lists(method_entries, max_size=3) | json_values,
        "benchmarks": st.lists(names, max_size=3) | json_values,
        "seeds": st.lists(st.integers(-2, 5), max_size=3) | json_values,
    },
    optional={
        "preset": json_values,
        "set": json_values,
        "title": json_values,
        "workers": json_values,
    },
)
any_grids = st.dictionaries(
    st.sampled_from(GRID_KEYS) | st.text(max_size=8), json_values, max_size=5
)


@settings(max_examples=300, deadline=None)
@given(data=near_grids | any_grids)
def test_parse_grid_only_returns_or_raises_config_error(data: dict[str, Any]) -> None:
    try:
        grid = parse_grid(data)
    except ConfigError:
        return
    assert isinstance(grid, GridConfig) and grid.methods and grid.benchmarks and grid.seeds


# ---------------------------------------------------------------------------- messages and expansion
def test_grid_with_unknown_key_names_the_accepted_keys() -> None:
    with pytest.raises(
        ConfigError, match="unknown keys \\['method'\\]; accepted: methods, benchmarks"
    ):
        parse_grid({"method": ["seqft"], "benchmarks": ["split-mnist"], "seeds": [0]})


def test_a_row_can_run_on_some_of_the_grid_benchmarks_only() -> None:
    grid = parse_grid({"methods": ["seqft", {"label": "seqft-lora", "method": "seqft",
                                             "set": {"parameterisation": "lora"},
                                             "benchmarks": ["mnist-fmnist"]}],
                       "benchmarks": ["mnist-fmnist", "rotated-mnist"], "seeds": [0], "preset": "quick"})
    runs = [(cfg.label, cfg.benchmark, cfg.parameterisation) for cfg in expand_grid(grid)]
    assert runs == [("seqft", "mnist-fmnist", "full"), ("seqft-lora", "mnist-fmnist", "lora"),
                    ("seqft", "rotated-mnist", "full")]
    with pytest.raises(ConfigError, match=r"benchmarks \['split-mnist'\] are not in the grid; accepted: mnist-fmnist"):
        parse_grid({"methods": [{"method": "seqft", "benchmarks": ["split-mnist"]}],
                    "benchmarks": ["mnist-fmnist"], "seeds": [0]})
    with pytest.raises(ConfigError, match="non-empty list of benchmark names"):
        parse_grid({"methods": [{"method": "seqft", "benchmarks": "mnist-fmnist"}],
                    "benchmarks": ["mnist-fmnist"], "seeds": [0]})

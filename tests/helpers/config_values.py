"""Hypothesis strategies shared by the config fuzz tests (tests/bench/config/): arbitrary
JSON-like values and names that are sometimes real methods or benchmarks."""

from __future__ import annotations

from hypothesis import strategies as st

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.sampled_from(["seqft", "pnm", "split-mnist", "rotated-mnist"]) | st.text(max_size=10)

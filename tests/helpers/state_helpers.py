"""Shared helpers of the merge-rule tests: exact state comparison and input snapshots."""

from __future__ import annotations

import torch

T = torch.tensor


def assert_state_equal(actual, expected, *, exact: bool = True) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        if exact:
            assert actual[name].dtype == expected[name].dtype, name
            assert torch.equal(actual[name], expected[name]), (name, actual[name], expected[name])
        else:
            torch.testing.assert_close(actual[name], expected[name], msg=name)


def assert_unchanged(after, before) -> None:
    """Recursive exact equality of nested lists/tuples/dicts of tensors."""
    if isinstance(before, torch.Tensor):
        assert after.dtype == before.dtype and torch.equal(after, before)
    elif isinstance(before, dict):
        assert after.keys() == before.keys()
        for key in before:
            assert_unchanged(after[key], before[key])
    elif isinstance(before, (list, tuple)):
        assert len(after) == len(before)
        for x, y in zip(after, before):
            assert_unchanged(x, y)
    else:
        assert after == before

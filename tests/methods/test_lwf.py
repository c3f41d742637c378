"""LwF (mergecl.methods.lwf): Avalanche's LwFPlugin built from the params, range-checked params,
and the distillation that trains the old classes' head rows the current-class loss leaves alone."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods.base import tunables
from mergecl.methods.lwf import LwF, LwFParams
from mergecl.methods.seqft import SeqFT
from pydantic import ValidationError
from toy_stream import train_method


def test_the_plugin_gets_alpha_and_temperature():
    method = LwF.__new__(LwF)  # extra_plugins reads only the params
    method.params = LwFParams(alpha=0.3, temperature=4.0)
    (plugin,) = method.extra_plugins()
    assert (plugin.lwf.alpha, plugin.lwf.temperature) == (0.3, 4.0)
    assert LwFParams() == LwFParams(alpha=1.0, temperature=2.0)


def test_params_are_range_checked_and_alpha_is_tunable():
    for bad in ({"alpha": -0.1}, {"temperature": 0.0}, {"T": 2.0}):
        with pytest.raises(ValidationError):
            LwFParams(**bad)
    assert list(tunables(LwFParams)) == ["alpha"]
    assert LwF.family == "regulariser"


def test_distillation_reaches_the_old_classes_head_rows():
    """With the loss on the current classes only, SeqFT never changes the head rows of classes
    0, 1 during task 1 (plain SGD); LwF's distillation over the old classes' logits does."""
    seqft, _, _ = train_method(SeqFT)
    assert torch.equal(seqft[1]["head.weight"][:2], seqft[0]["head.weight"][:2])
    lwf, method, _ = train_method(LwF, {"alpha": 1.0})
    assert method.plain_first_task
    assert not torch.equal(lwf[1]["head.weight"][:2], lwf[0]["head.weight"][:2])

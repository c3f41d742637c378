"""Joint training (mergecl.methods.joint): the upper bound. It declares itself so (the runner
trains it once on the union stream; tables never rank it), takes no params, and never merges."""

from __future__ import annotations

import pytest
import torch
from lifecycle import make_space, simulate
from mergecl.methods.base import MethodParams
from mergecl.methods.joint import Joint
from mergecl.methods.registry import get_method
from pydantic import ValidationError


def test_joint_is_the_registered_upper_bound_without_params():
    assert get_method("joint") is Joint
    assert Joint.upper_bound and Joint.family == "upper-bound" and Joint.Params is MethodParams
    with pytest.raises(ValidationError):
        Joint.Params(lr=0.1)


def test_its_single_training_is_kept_as_trained():
    _, space, ctx = make_space()
    (task,) = simulate(Joint(MethodParams(), ctx), space, 1)
    assert all(torch.equal(task["merged"][n], task["trained"][n]) for n in space.names)

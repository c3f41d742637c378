"""The shared merge life-cycle: head rule masks, training start points, MagMax streaming."""

from __future__ import annotations

import pytest
import torch
from lifecycle import ZeroHeadClassifier as TinyClassifier
from mergecl.methods.base import (
    AVALANCHE_HOOKS,
    MethodContext,
    head_masks,
    keep_trained_where_unmasked,
    loss_class_indices,
    planned_steps,
)
from mergecl.methods.parameterisation import FullSpace
from pydantic import ValidationError


def _ctx(rule: str) -> tuple[FullSpace, MethodContext]:
    space = FullSpace(TinyClassifier())
    return space, MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                                scenario="class-incremental", head_rule=rule)


def test_merge_old_rows_masks_only_new_class_rows():
    space, ctx = _ctx("merge-old-rows")
    masks = head_masks(space, ctx, 1)
    assert set(masks) == {"fc.weight", "fc.bias"}
    assert masks["fc.bias"].tolist() == [True, True, False, False]
    first = head_masks(space, ctx, 0)
    assert first["fc.bias"].tolist() == [False, False, True, True]


def test_other_head_rules():
    space, ctx = _ctx("merge-all")
    assert head_masks(space, ctx, 1) == {}
    space, ctx = _ctx("keep-trained")
    assert not head_masks(space, ctx, 1)["fc.weight"].any()


def test_keep_trained_where_unmasked():
    merged = {"w": torch.zeros(3)}
    trained = {"w": torch.ones(3)}
    out = keep_trained_where_unmasked(merged, trained, {"w": torch.tensor([True, False, True])})
    assert out["w"].tolist() == [0.0, 1.0, 0.0]
    assert merged["w"].tolist() == [0.0, 0.0, 0.0]


def test_a_class_seen_before_is_not_new_again():
    """Only classes first seen in task t are taken as trained; a class that returns is merged."""
    space = FullSpace(TinyClassifier())
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [1, 2], [0, 1, 2, 3]],
                        n_classes=4, scenario="class-incremental")
    assert head_masks(space, ctx, 1)["fc.bias"].tolist() == [True, True, False, True]
    assert head_masks(space, ctx, 2)["fc.bias"].tolist() == [True, True, True, False]
    domain = MethodContext(space=space, classes_per_experience=[[0, 1, 2, 3]] * 2, n_classes=4,
                           scenario="domain-incremental")
    assert head_masks(space, domain, 1)["fc.weight"].all()  # nothing is new in a new domain


def test_planned_steps_and_loss_classes_have_one_definition():
    assert planned_steps(3, 4) == 12
    assert planned_steps(3, 4, max_steps=5) == 5
    assert planned_steps(1, 1, max_steps=2) == 1
    groups = [[0, 1], [2, 3]]
    assert loss_class_indices(groups, 1, "current") == [2, 3]
    assert loss_class_indices(groups, 1, "seen") == [0, 1, 2, 3]
    assert loss_class_indices(groups, 1, "none") is None
    space, ctx = _ctx("merge-old-rows")
    assert ctx.loss_classes(1).tolist() == [False, False, True, True]


def test_context_is_frozen_and_checked():
    space, ctx = _ctx("merge-old-rows")
    with pytest.raises(ValidationError):
        ctx.n_classes = 5
    with pytest.raises(ValidationError, match="outside"):
        MethodContext(space=space, classes_per_experience=[[0, 7]], n_classes=4,
                      scenario="class-incremental")


def test_hooks_match_avalanche_and_plugins_are_avalanche_plugins():
    from avalanche.core import SupervisedPlugin
    from mergecl.methods.seqft import SeqFT

    expected = sorted(x for x in dir(SupervisedPlugin) if x.startswith(("before", "after")))
    assert sorted(AVALANCHE_HOOKS) == expected
    space, ctx = _ctx("merge-old-rows")
    plugin = SeqFT(SeqFT.Params(), ctx)
    assert isinstance(plugin, SupervisedPlugin)
    with pytest.raises(TypeError, match="MethodParams"):
        SeqFT(object(), ctx)  # type: ignore[arg-type]


# cases added for mutation testing (docs/mutation.md)


def test_seen_loss_classes_stop_at_the_task():
    groups = [[0, 1], [2], [3]]
    assert loss_class_indices(groups, 0, "seen") == [0, 1]
    assert loss_class_indices(groups, 1, "seen") == [0, 1, 2]


class _TwoLayerHead(torch.nn.Module):
    """A head with a hidden layer: its first tensors have no class rows."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 3)
        self.fc = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 4))

    @property
    def head(self) -> torch.nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(self.body(x))


def test_head_tensors_without_class_rows_are_merged_whole():
    space = FullSpace(_TwoLayerHead())
    ctx = MethodContext(space=space, classes_per_experience=[[0, 1], [2, 3]], n_classes=4,
                        scenario="class-incremental")
    masks = head_masks(space, ctx, 1)
    assert set(masks) == {"fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias"}
    assert masks["fc.0.weight"].shape == (5, 3) and masks["fc.0.weight"].all()
    assert masks["fc.0.bias"].all()
    assert masks["fc.1.bias"].tolist() == [True, True, False, False]
    assert masks["fc.1.weight"][:, 0].tolist() == [True, True, False, False]

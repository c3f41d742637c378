"""The shared merge life-cycle: head rule masks, training start points, MagMax streaming."""

from __future__ import annotations

import torch
from lifecycle import ZeroHeadClassifier as TinyClassifier
from mergecl.methods.base import MethodContext, head_masks, keep_trained_where_unmasked
from mergecl.methods.parameterisation import FullSpace


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

"""The shared merge life-cycle: head rule masks, training start points, MagMax streaming."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods.base import MethodContext, head_masks, keep_trained_where_unmasked
from mergecl.methods.parameterisation import FullSpace
from test_pnm import TinyClassifier


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


@pytest.mark.e2e
def test_magmax_keeps_one_running_selection_and_trains_from_unmerged():
    from conftest import quick_run

    record = quick_run("magmax")
    assert [t["lambda"] for t in record["diagnostics"]["per_task"]] == [0.5] * 5


def test_magmax_plugin_state_is_constant_in_tasks():
    from mergecl.methods.magmax import MagMax, MagMaxParams

    space, ctx = _ctx("merge-old-rows")
    plugin = MagMax(MagMaxParams(), ctx)
    plugin.pretrained_state = space.effective_state()
    sizes = []
    for task in range(4):
        plugin.task = task
        trained = {n: v + torch.randn_like(v) for n, v in plugin.pretrained_state.items()}
        plugin.merge(None, trained, head_masks(space, ctx, min(task, 1)))
        sizes.append(sum(v.numel() for v in plugin.selection.values()))
    assert len(set(sizes)) == 1  # one running τ_MM, never a list

"""The frozen prefix (models.split_frozen_prefix) and its cached features (training/features.py):
the cut model on the prefix's features computes exactly what the whole model computes on
images; cached features are the computed ones; nothing in the prefix trains or merges."""

from __future__ import annotations

import pytest
import torch
from mergecl.bench.training.features import cached_features, compute_features, prefix_digest
from mergecl.bench.training.models import build_backbone, split_frozen_prefix
from mergecl.methods.parameterisation import FullSpace, LoraSpace


def _model():
    torch.manual_seed(0)
    return build_backbone("test_tiny_cnn", num_classes=4, weights="none", image_size=32,
                          head_init="timm", channels_last=False).eval()


def test_the_cut_model_on_features_equals_the_whole_model_on_images():
    model = _model()
    x = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        whole = model(x)
    prefix = split_frozen_prefix(model, 2)
    with torch.no_grad():
        cut = model(compute_features(prefix, x, batch_size=4))
    torch.testing.assert_close(cut, whole, rtol=0, atol=0)
    assert not prefix.training and all(not p.requires_grad for p in prefix.parameters())
    prefix.train()
    assert not prefix.training  # a frozen prefix stays in eval mode (frozen BatchNorm)


def test_nothing_of_the_prefix_is_trained_or_merged_and_stage_names_are_kept():
    model = _model()
    stages = len(model.backbone.blocks)
    split_frozen_prefix(model, 2)
    names = FullSpace(model).names
    assert not any(n.startswith(("backbone.conv_stem", "backbone.bn1")) for n in names)
    assert not any(n.startswith(("backbone.blocks.0.", "backbone.blocks.1.")) for n in names)
    assert any(n.startswith("backbone.blocks.2.") for n in names)  # names keep their stage index
    assert len(model.backbone.blocks) == stages - 2
    lora = LoraSpace(model, ["conv_pw", "conv_pwl"], rank=2, alpha=4.0)
    assert all(not n.startswith(("blocks.0.", "blocks.1.")) for n in lora.lora_layers)


def test_cached_features_are_the_computed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGECL_FEATURES", str(tmp_path))
    model = _model()
    prefix = split_frozen_prefix(model, 1)
    x = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    prefix_id = prefix_digest(prefix, {"k": 1})
    first = cached_features(prefix, x, prefix_id)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    again = cached_features(prefix, x, prefix_id)  # read from the cache
    assert torch.equal(first, again) and torch.equal(first, compute_features(prefix, x))
    other = cached_features(prefix, x[:3], prefix_id)  # other images: another file
    assert len(list(tmp_path.rglob("*.pt"))) == 2 and torch.equal(other, first[:3])
    assert prefix_digest(prefix, {"k": 2}) != prefix_id


def test_bad_frozen_blocks_are_refused():
    with pytest.raises(ValueError, match="outside"):
        split_frozen_prefix(_model(), 99)

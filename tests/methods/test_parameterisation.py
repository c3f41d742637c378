"""Full and LoRA parameter spaces (mergecl.methods.parameterisation): which parameters are
trained and merged, the effective values W + B·A·(α/r) a merge sees, folding and restarting
adapters, the key/value-only adapter on a fused qkv, and exact training-state round trips."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods.parameterisation import (
    FullSpace,
    LoraSpace,
    build_space,
    head_module,
    head_parameter_names,
)
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(3, 2)
        self.qkv = nn.Linear(2, 6)
        self.classifier = nn.Linear(6, 4)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.classifier(self.qkv(self.fc1(x)))


def test_the_head_is_found_by_name_or_by_its_usual_attributes():
    net = Net()
    assert head_module(net) is net.classifier
    assert head_parameter_names(net) == ["classifier.weight", "classifier.bias"]
    assert head_module(net, "fc1") is net.fc1
    with pytest.raises(ValueError, match="head='missing' is not a submodule"):
        head_module(net, "missing")
    assert head_module(nn.Sequential(nn.Linear(2, 2))) is None and head_parameter_names(nn.ReLU()) == []


def test_full_space_trains_and_merges_every_float_parameter_with_two_rates():
    net = Net()
    net.fc1.bias.requires_grad_(False)
    space = FullSpace(net)
    assert space.names == ["fc1.weight", "qkv.weight", "qkv.bias", "classifier.weight", "classifier.bias"]
    groups = space.parameter_groups(lr=0.1, head_lr=1.0)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("backbone", 0.1, 3), ("head", 1.0, 2)]
    state = {n: torch.full_like(v, 0.5) for n, v in space.effective_state().items()}
    space.load_effective_state(state)
    assert torch.equal(net.qkv.weight, torch.full((6, 2), 0.5))
    state["qkv.weight"].fill_(9.0)  # effective_state returned copies
    assert torch.equal(net.qkv.weight, torch.full((6, 2), 0.5))


def lora_net(**kwargs) -> tuple[Net, LoraSpace, torch.Tensor]:
    net = Net()
    w = net.fc1.weight.detach().clone()
    return net, LoraSpace(net, ["fc1", "qkv"], rank=1, alpha=2.0, **kwargs), w


def test_lora_effective_weight_is_base_plus_scaled_adapter():
    net, space, w = lora_net()
    assert space.names == ["fc1.base_layer.weight", "qkv.base_layer.weight", "classifier.weight", "classifier.bias"]
    assert set(space.trainable_parameters()) == {
        "fc1.lora_A.default.weight", "fc1.lora_B.default.weight", "qkv.lora_A.default.weight",
        "qkv.lora_B.default.weight", "classifier.weight", "classifier.bias"}
    layer = space.lora_layers["fc1"]
    assert torch.equal(space.effective_state()["fc1.base_layer.weight"], w)  # B = 0 at the start
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        layer.lora_B["default"].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    expected = w + 2.0 * torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])  # α/r = 2
    torch.testing.assert_close(space.effective_state()["fc1.base_layer.weight"], expected)
    x = torch.randn(5, 3)
    torch.testing.assert_close(net.fc1(x), x @ expected.T + net.fc1.base_layer.bias)
    space.set_adapter_factor(0.5)
    torch.testing.assert_close(space.effective_state()["fc1.base_layer.weight"], w + 0.5 * (expected - w))
    space.set_adapter_factor(1.0)
    # the functional parameters evaluate the effective state with the adapters off
    assert not space.functional_parameters(space.effective_state())["fc1.lora_B.default.weight"].any()

    # a new task folds the live adapter into the base weights and restarts it (B = 0, A redrawn)
    a_before = layer.lora_A["default"].weight.detach().clone()
    space.start_task()
    torch.testing.assert_close(net.fc1.base_layer.weight, expected)
    assert not layer.lora_B["default"].weight.any()
    assert not torch.equal(layer.lora_A["default"].weight, a_before)
    torch.testing.assert_close(space.effective_state()["fc1.base_layer.weight"], expected)


def test_lora_adapters_are_drawn_from_the_spaces_seeded_generator():
    _, first, _ = lora_net(generator=torch.Generator().manual_seed(5))
    _, again, _ = lora_net(generator=torch.Generator().manual_seed(5))
    _, other, _ = lora_net(generator=torch.Generator().manual_seed(6))
    a = [m.lora_A["default"].weight for m in first.lora_layers.values()]
    assert all(torch.equal(x, m.lora_A["default"].weight) for x, m in zip(a, again.lora_layers.values()))
    assert not torch.equal(a[0], other.lora_layers["fc1"].lora_A["default"].weight)
    bound = 1.0 / 3 ** 0.5  # kaiming-uniform bound for fan-in 3
    assert a[0].abs().max() <= bound


def test_kv_only_keeps_the_query_rows_of_a_fused_qkv_at_zero():
    net, space, _ = lora_net(kv_only=True)
    assert space.kv_rows == {"qkv": slice(0, 2)}
    net(torch.randn(4, 3)).pow(2).sum().backward()
    grad = space.lora_layers["qkv"].lora_B["default"].weight.grad
    assert not grad[:2].any() and grad[2:].any()


def test_training_state_round_trips_exactly_and_is_checked():
    net, space, _ = lora_net()
    saved = space.training_state()
    assert set(saved) == set(space.training_names()) and "fc1.lora_A.default.weight" in saved
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    space.load_training_state(saved)
    params = dict(net.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in saved.items())
    with pytest.raises(ValueError, match="does not match this parameter space"):
        space.load_training_state({"fc1.base_layer.weight": saved["fc1.base_layer.weight"]})


def test_build_space_and_its_refusals():
    assert isinstance(build_space(Net(), "full"), FullSpace)
    assert build_space(Net(), "lora", targets=["fc1"], rank=2).kind == "lora"
    with pytest.raises(ValueError, match="unknown parameterisation 'dense'; accepted: full, lora"):
        build_space(Net(), "dense")
    with pytest.raises(ValueError, match="at least one target"):
        build_space(Net(), "lora")
    with pytest.raises(ValueError, match="match"):
        build_space(Net(), "lora", targets=["nothing_here"])

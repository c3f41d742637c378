"""Tests of mergecl.methods.fisher: vectorised per-sample Fisher against the plain loop and by hand."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods.fisher import diagonal_fisher, diagonal_fisher_loop
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _assert_fishers_close(actual, expected, rtol=1e-5):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].dtype == torch.float32
        torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=1e-9, msg=name)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)).eval()


def _conv_net() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():  # non-trivial running statistics, then frozen
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6) * 2 + 1)
    return model.eval()


def _batches(shape, n_classes, sizes=(7, 7, 6), seed=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((size, *shape), generator=g),
             torch.randint(0, n_classes, (size,), generator=g)) for size in sizes]


def test_hand_computed_logistic_regression():
    model = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(model.weight)  # p = [1/2, 1/2]; d log p_y / dW = (e_y - p) x^T
    batches = [(torch.tensor([[1.0, 2.0], [2.0, 0.0]]), torch.tensor([0, 1]))]
    expected = torch.tensor([[0.625, 0.5], [0.625, 0.5]])  # mean of [.25,1]/[1,0] per row
    for fn in (diagonal_fisher, diagonal_fisher_loop):
        fisher = fn(model, batches, ["weight"])
        torch.testing.assert_close(fisher["weight"], expected)


@pytest.mark.parametrize("labels", ["true", "model"])
def test_vmap_matches_loop_on_mlp(labels):
    model = _mlp()
    names = [name for name, _ in model.named_parameters()]
    batches = _batches((5,), 4)
    fast = diagonal_fisher(model, batches, names, labels=labels)
    slow = diagonal_fisher_loop(model, batches, names, labels=labels)
    _assert_fishers_close(fast, slow)
    assert all(bool((f > 0).any()) for f in fast.values())


def test_vmap_matches_loop_on_conv_net_with_frozen_batchnorm():
    model = _conv_net()
    names = ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight"]
    batches = _batches((3, 6, 6), 5, sizes=(5, 4))
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    fast = diagonal_fisher(model, batches, names, chunk_size=3)
    slow = diagonal_fisher_loop(model, batches, names)
    _assert_fishers_close(fast, slow)
    for name, buffer in model.named_buffers():  # frozen: running stats untouched
        assert torch.equal(buffer, buffers_before[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_model_labels_differ_from_true_labels_when_predictions_are_wrong():
    model = _mlp()
    names = ["2.weight"]
    inputs = torch.randn(12, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    right = [(inputs, predicted)]
    wrong = [(inputs, (predicted + 1) % 4)]
    from_model = diagonal_fisher(model, wrong, names, labels="model")
    torch.testing.assert_close(from_model["2.weight"],
                               diagonal_fisher(model, right, names)["2.weight"])
    from_true = diagonal_fisher(model, wrong, names, labels="true")
    assert not torch.allclose(from_true["2.weight"], from_model["2.weight"])


class _Sliced(nn.Module):
    """The MLP restricted to some output classes (the class_mask oracle)."""

    def __init__(self, model: nn.Module, keep: list[int]) -> None:
        super().__init__()
        self.model = model
        self.keep = keep

    def forward(self, x):
        return self.model(x)[:, self.keep]


@pytest.mark.parametrize("labels", ["true", "model"])
def test_class_mask_excludes_logits_from_the_softmax(labels):
    model = _mlp()
    mask = torch.tensor([True, False, True, True])
    keep = [0, 2, 3]
    g = torch.Generator().manual_seed(4)
    inputs = torch.randn(10, 5, generator=g)
    targets = torch.tensor(keep)[torch.randint(0, 3, (10,), generator=g)]
    names = ["0.weight", "2.weight"]
    masked = diagonal_fisher(model, [(inputs, targets)], names, labels=labels, class_mask=mask)
    remapped = torch.tensor([0, -1, 1, 2])[targets]
    sliced = diagonal_fisher(_Sliced(model, keep), [(inputs, remapped)],
                             ["model." + n for n in names], labels=labels)
    for name in names:
        torch.testing.assert_close(masked[name], sliced["model." + name], rtol=1e-5, atol=1e-9)
    loop = diagonal_fisher_loop(model, [(inputs, targets)], names, labels=labels,
                                class_mask=mask)
    _assert_fishers_close(masked, loop)
    unmasked = diagonal_fisher(model, [(inputs, targets)], names, labels=labels)
    assert not torch.allclose(unmasked["2.weight"], masked["2.weight"])
    assert bool((masked["2.weight"][1] == 0).all())  # the excluded class's row gets no gradient


def test_only_named_parameters_are_returned_and_others_held_fixed():
    model = _mlp()
    all_names = [name for name, _ in model.named_parameters()]
    batches = _batches((5,), 4)
    full = diagonal_fisher(model, batches, all_names)
    subset = diagonal_fisher(model, batches, ["2.bias", "0.weight"])
    assert list(subset) == ["2.bias", "0.weight"]
    for name in subset:
        torch.testing.assert_close(subset[name], full[name])
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_can_be_differentiated():
    model = _mlp()
    for p in model.parameters():
        p.requires_grad_(False)  # e.g. LoRA base weights
    batches = _batches((5,), 4, sizes=(4,))
    fast = diagonal_fisher(model, batches, ["0.weight"])
    _assert_fishers_close(fast, diagonal_fisher_loop(model, batches, ["0.weight"]))
    assert not any(p.requires_grad for p in model.parameters())


def test_max_samples_and_extra_batch_items():
    model = _mlp()
    batches = _batches((5,), 4)  # 7 + 7 + 6 samples
    capped = diagonal_fisher(model, batches, ["2.weight"], max_samples=10)
    first_ten = [(torch.cat([batches[0][0], batches[1][0][:3]]),
                  torch.cat([batches[0][1], batches[1][1][:3]]))]
    expected = diagonal_fisher(model, first_ten, ["2.weight"])
    torch.testing.assert_close(capped["2.weight"], expected["2.weight"])
    with_task_labels = [(x, y, torch.zeros_like(y)) for x, y in batches]
    torch.testing.assert_close(
        diagonal_fisher(model, with_task_labels, ["2.weight"])["2.weight"],
        diagonal_fisher(model, batches, ["2.weight"])["2.weight"])


def test_bad_input_raises():
    model = _mlp()
    batches = _batches((5,), 4)
    with pytest.raises(ValueError, match="nope"):
        diagonal_fisher(model, batches, ["nope"])
    with pytest.raises(ValueError, match="empty"):
        diagonal_fisher(model, batches, [])
    with pytest.raises(ValueError, match="'soft'"):
        diagonal_fisher(model, batches, ["0.weight"], labels="soft")
    with pytest.raises(ValueError, match="outside class_mask"):
        diagonal_fisher(model, [(torch.randn(2, 5), torch.tensor([0, 1]))], ["0.weight"],
                        class_mask=torch.tensor([True, False, True, True]))
    with pytest.raises(ValueError, match="3 entries for 4 logits"):
        diagonal_fisher(model, batches, ["0.weight"], class_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no samples"):
        diagonal_fisher(model, [], ["0.weight"])
    with pytest.raises(ValueError, match="max_samples"):
        diagonal_fisher(model, batches, ["0.weight"], max_samples=0)

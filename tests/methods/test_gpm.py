"""Tests of mergecl.methods.gpm: GPM basis rule, input capture, and response preservation."""

from __future__ import annotations

import pytest
import torch
from mergecl.methods.gpm import (
    GradientProjector,
    collect_layer_inputs,
    project_gradient_,
    update_basis,
)
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _low_rank_rows(rows: int, d_in: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, rank, generator=g) @ torch.randn(rank, d_in, generator=g)


def _assert_orthonormal(basis: torch.Tensor) -> None:
    k = basis.shape[1]
    torch.testing.assert_close(basis.T @ basis, torch.eye(k), atol=1e-5, rtol=0)


def _sgd_step(module: nn.Module, inputs: torch.Tensor, projector: GradientProjector | None,
              model: nn.Module, lr: float = 0.5) -> None:
    g = torch.Generator().manual_seed(99)
    output = module(inputs)
    loss = (output - torch.randn(output.shape, generator=g)).square().sum()
    module.zero_grad()
    loss.backward()
    if projector is not None:
        projector.project_(model)
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)


# ------------------------------------------------------------------------------------------
# basis rule


def test_energy_threshold_keeps_the_right_k_first_task():
    # rows 3·e1, 2·e2, 1·e3 in R^4: energies 9, 4, 1 of 14 -> cumulative .643, .929, 1
    activations = torch.tensor([[3.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 1.0, 0]])
    expected = {0.5: 1, 0.64: 1, 0.65: 2, 0.9: 2, 0.93: 3, 1.0: 3}
    for threshold, k in expected.items():
        basis = update_basis(None, activations, threshold)
        assert basis.shape == (4, k), threshold
        _assert_orthonormal(basis)
        torch.testing.assert_close(basis.abs(), torch.eye(4)[:, :k])


def test_energy_threshold_keeps_the_right_k_later_task():
    old = torch.eye(4)[:, :2]  # span{e1, e2}
    # rows 2·e1, 1·e3, 0.5·e4: total 5.25, already spanned 4 (0.762), residual e3 1, e4 .25
    activations = torch.tensor([[2.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0.5]])
    assert update_basis(old, activations, 0.7).shape == (4, 2)
    extended = update_basis(old, activations, 0.9)  # 0.762 + 0.190 = 0.952
    assert extended.shape == (4, 3)
    assert torch.equal(extended[:, :2], old)  # old columns kept as they are
    torch.testing.assert_close(extended[:, 2].abs(), torch.eye(4)[:, 2])
    full = update_basis(old, activations, 0.97)
    assert full.shape == (4, 4)
    _assert_orthonormal(full)
    assert update_basis(full, torch.randn(5, 4), 1.0).shape == (4, 4)  # k <= d_in


def test_threshold_one_keeps_exactly_the_rank_and_inputs_are_not_modified():
    rows = _low_rank_rows(20, 10, 3, seed=0)
    before = rows.clone()
    basis = update_basis(None, rows, 1.0)
    assert basis.shape == (10, 3)
    _assert_orthonormal(basis)
    torch.testing.assert_close(rows @ basis @ basis.T, rows, atol=1e-4, rtol=0)
    # the same inputs again add nothing; new ones add exactly their new rank
    assert update_basis(basis, rows, 1.0).shape == (10, 3)
    more = update_basis(basis, _low_rank_rows(15, 10, 2, seed=1), 1.0)
    assert more.shape == (10, 5)
    _assert_orthonormal(more)
    assert torch.equal(rows, before)


def test_update_basis_bad_input():
    rows = torch.randn(5, 4)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            update_basis(None, rows, bad)
    with pytest.raises(ValueError, match="2-D"):
        update_basis(None, torch.randn(5), 0.9)
    with pytest.raises(ValueError, match="basis has shape"):
        update_basis(torch.eye(3), rows, 0.9)


def test_project_gradient_shapes():
    basis = torch.eye(4)[:, :2]
    grad = torch.ones(3, 4)
    assert project_gradient_(grad, basis) is grad
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0, 1, 1]] * 3))
    conv_grad = torch.ones(3, 4, 1, 1)
    project_gradient_(conv_grad, basis)
    torch.testing.assert_close(conv_grad.flatten(1), torch.tensor([[0.0, 0, 1, 1]] * 3))
    with pytest.raises(ValueError, match="1x1"):
        project_gradient_(torch.ones(3, 4, 3, 3), basis)
    with pytest.raises(ValueError, match="input dimension"):
        project_gradient_(torch.ones(3, 5), basis)


# ------------------------------------------------------------------------------------------
# input capture


def test_collect_layer_inputs_shapes_and_max_samples():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False), nn.Flatten(2),
                          nn.Linear(9, 2, bias=False))
    model.eval()
    batches = [(torch.randn(4, 3, 6, 6), torch.zeros(4)) for _ in range(3)]
    captured = collect_layer_inputs(model, {"conv": model[0], "fc": model[2]}, batches,
                                    max_samples=10)
    assert captured["conv"].shape == (10 * 3 * 3, 3)  # stride 2: 3x3 pixels read per image
    assert captured["fc"].shape == (10 * 4, 9)  # Linear input flattened over [N, C]
    first = batches[0][0]
    torch.testing.assert_close(captured["conv"][:9], first[0, :, ::2, ::2].reshape(3, 9).T)
    assert not model[0]._forward_pre_hooks and not model[2]._forward_pre_hooks


def test_bad_conv_kernel_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1, groups=2))
    with pytest.raises(ValueError, match="'0'.*1x1"):
        collect_layer_inputs(model, {"0": model[0]}, [torch.randn(1, 3, 5, 5)])
    projector = GradientProjector()
    with pytest.raises(ValueError, match="'1'.*groups=2"):
        projector.register(model, ["1"])
    with pytest.raises(ValueError, match="'2'"):
        projector.register(model, ["2"])


# ------------------------------------------------------------------------------------------
# response preservation after a projected SGD step


def test_linear_responses_to_old_inputs_are_preserved():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4, bias=False))
    old_inputs = _low_rank_rows(6, 8, 3, seed=2)
    projector = GradientProjector()
    projector.register(model, ["0"])
    assert projector.extend(model, [old_inputs], threshold=1.0) == {"0": 3}
    before = model(old_inputs).detach()
    new_inputs = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    _sgd_step(model[0], new_inputs, projector, model)
    torch.testing.assert_close(model(old_inputs), before, atol=1e-5, rtol=0)
    _sgd_step(model[0], new_inputs, None, model)  # unprojected: responses move
    assert (model(old_inputs) - before).abs().max() > 1e-2


def test_linear_two_tasks_with_token_inputs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 3, bias=False))
    task1 = _low_rank_rows(12, 10, 2, seed=4).reshape(3, 4, 10)  # [batch, tokens, d]
    task2 = _low_rank_rows(12, 10, 3, seed=5).reshape(3, 4, 10)
    projector = GradientProjector()
    projector.register(model, ["0"])
    projector.extend(model, [task1], threshold=1.0)
    assert projector.extend(model, [task2], threshold=1.0) == {"0": 5}
    before1, before2 = model(task1).detach(), model(task2).detach()
    _sgd_step(model[0], torch.randn(6, 10), projector, model)
    torch.testing.assert_close(model(task1), before1, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(task2), before2, atol=1e-5, rtol=0)
    assert projector.nbytes == 10 * 5 * 4


def test_one_by_one_conv_responses_to_old_inputs_are_preserved():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(4, 3, 1, bias=False))
    mixing = torch.randn(2, 4)  # old pixels lie in a 2-D channel subspace
    old_inputs = torch.einsum("nkhw,kc->nchw", torch.randn(3, 2, 5, 5), mixing)
    projector = GradientProjector()
    projector.register(model, ["0"])
    assert projector.extend(model, [(old_inputs, None)], threshold=1.0) == {"0": 2}
    before = model(old_inputs).detach()
    _sgd_step(model[0], torch.randn(2, 4, 5, 5), projector, model)
    torch.testing.assert_close(model(old_inputs), before, atol=1e-5, rtol=0)
    _sgd_step(model[0], torch.randn(2, 4, 5, 5), None, model)
    assert (model(old_inputs) - before).abs().max() > 1e-2


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6, bias=False)
        self.conv = nn.Conv2d(4, 3, 1, bias=False)

    def forward(self, x):
        return self.fc(x) if x.dim() == 2 else self.conv(x)


def _lora_model() -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(3)
    config = LoraConfig(r=2, lora_alpha=2, target_modules=["fc", "conv"],
                        init_lora_weights=False)
    return inject_adapter_in_model(config, _Tiny()).eval()


def test_lora_A_factor_responses_to_old_inputs_are_preserved():
    model = _lora_model()
    lora_a = model.fc.lora_A["default"]
    old_inputs = _low_rank_rows(6, 8, 3, seed=6)
    projector = GradientProjector()
    projector.register(model, ["fc"])
    assert projector.extend(model, [old_inputs], threshold=1.0) == {"fc": 3}
    before = lora_a(old_inputs).detach()
    _sgd_step(model, torch.randn(5, 8), projector, model)
    assert model.fc.base_layer.weight.grad is None  # frozen base: nothing to project
    torch.testing.assert_close(lora_a(old_inputs), before, atol=1e-5, rtol=0)
    _sgd_step(model, torch.randn(5, 8), None, model)
    assert (lora_a(old_inputs) - before).abs().max() > 1e-2


def test_lora_layer_output_preserved_with_A_started_off_the_memory():
    model = _lora_model()
    old_inputs = _low_rank_rows(6, 8, 3, seed=7)
    projector = GradientProjector()
    projector.register(model, ["fc"])
    projector.extend(model, [old_inputs], threshold=1.0)
    projector.project_lora_A_weights_(model)  # a fresh adapter: A ⊥ old inputs
    before = model(old_inputs).detach()
    torch.testing.assert_close(before, model.fc.base_layer(old_inputs), atol=1e-5, rtol=0)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):  # both A and B train; Adam's steps are not the projected gradient
        optimiser.zero_grad()
        model(torch.randn(5, 8)).square().sum().backward()
        projector.project_(model)
        optimiser.step()
        projector.project_lora_A_weights_(model)
    torch.testing.assert_close(model(old_inputs), before, atol=1e-5, rtol=0)
    fresh = torch.randn(4, 8)  # the adapter did learn something for new inputs
    assert (model(fresh) - model.fc.base_layer(fresh)).abs().max() > 1e-3


def test_lora_conv_A_factor_responses_to_old_inputs_are_preserved():
    model = _lora_model()
    lora_a = model.conv.lora_A["default"]
    assert lora_a.weight.shape == (2, 4, 1, 1)
    old_inputs = torch.einsum("nkhw,kc->nchw", torch.randn(2, 2, 4, 4), torch.randn(2, 4))
    projector = GradientProjector()
    projector.register(model, ["conv"])
    assert projector.extend(model, [old_inputs], threshold=1.0) == {"conv": 2}
    before = lora_a(old_inputs).detach()
    _sgd_step(model, torch.randn(3, 4, 4, 4), projector, model, lr=0.05)
    torch.testing.assert_close(lora_a(old_inputs), before, atol=1e-5, rtol=0)
    _sgd_step(model, torch.randn(3, 4, 4, 4), None, model, lr=0.05)
    assert (lora_a(old_inputs) - before).abs().max() > 1e-2

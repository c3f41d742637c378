"""oneDNN's matrix products (methods/matmul.py) compute torch's: values, first and second
derivatives, against ``F.linear`` / ``@`` and autograd; and the fallbacks run torch's own
operation, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mergecl.methods import matmul as mm
from mergecl.methods.matmul import linear, matmul, torch_matmul, uses_onednn
from torch.func import grad, vmap

# every x86 torch wheel has oneDNN (mkldnn); the tests then require methods/matmul.py to use it
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _inputs(n: int = 7, k: int = 13, out: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=generator)
    weight = torch.randn(out, k, generator=generator)
    bias = torch.randn(out, generator=generator)
    return x, weight, bias


def _forbid_torch_linear(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("F.linear was called where oneDNN applies")
    monkeypatch.setattr(mm.F, "linear", refuse)


def _forbid_onednn(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("oneDNN was called where torch's operation should run")
    monkeypatch.setattr(mm, "_onednn_linear", refuse)


@needs_onednn
def test_runs_onednn_here():
    assert mm.onednn_available() and uses_onednn()


@pytest.mark.parametrize("missing", ["mkldnn", "operator", "transform check"])
def test_not_available_without_each_requirement(monkeypatch, missing):
    if missing == "mkldnn":
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    elif missing == "operator":
        monkeypatch.setattr(torch.ops, "mkldnn", type("NoOps", (), {})())
    else:
        monkeypatch.delattr(torch._C, "_are_functorch_transforms_active")
    assert not mm.onednn_available()


def _forbid_torch_matmul(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.matmul was called where oneDNN applies")
    monkeypatch.setattr(torch, "matmul", refuse)


@needs_onednn
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_f_linear_by_onednn(monkeypatch, with_bias):
    x, weight, bias = _inputs()
    bias = bias if with_bias else None
    expected = F.linear(x, weight, bias)
    _forbid_torch_linear(monkeypatch)
    out = linear(x, weight, bias)
    assert out.shape == (7, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_linear_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    weight = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, -1.0]])
    bias = torch.tensor([0.5, 0.0, 1.0])
    # rows x·Wᵀ + b: [1, 4, -2] + b and [3, 5, 1] + b
    assert torch.equal(linear(x, weight, bias), torch.tensor([[1.5, 4.0, -1.0], [3.5, 5.0, 2.0]]))
    assert torch.equal(matmul(x, weight.T), torch.tensor([[1.0, 4.0, -2.0], [3.0, 5.0, 1.0]]))


@needs_onednn
def test_matmul_equals_at_on_strided_views(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(19, 11, generator=generator)
    b = torch.randn(23, 19, generator=generator)  # b.T is a transposed view: 19 × 23
    expected = a.T @ b.T
    _forbid_torch_linear(monkeypatch)
    _forbid_torch_matmul(monkeypatch)
    torch.testing.assert_close(matmul(a.T, b.T), expected, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_a_single_row_runs_onednn(monkeypatch):
    x, weight, bias = _inputs(n=1)
    expected = F.linear(x, weight, bias)
    _forbid_torch_linear(monkeypatch)
    torch.testing.assert_close(linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_gradients_equal_autograd_of_f_linear(monkeypatch):
    x, weight, bias = (t.requires_grad_() for t in _inputs())
    upstream = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    expected = torch.autograd.grad(F.linear(x, weight, bias), (x, weight, bias), upstream)
    _forbid_torch_linear(monkeypatch)
    got = torch.autograd.grad(linear(x, weight, bias), (x, weight, bias), upstream)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_only_the_needed_gradients_are_computed():
    x, weight, _ = _inputs()
    weight.requires_grad_()
    out = linear(x, weight)
    (grad_weight,) = torch.autograd.grad(out.sum(), (weight,))
    # ∂/∂W Σ x·Wᵀ = column sums of x, for every output row
    torch.testing.assert_close(grad_weight, x.sum(dim=0).expand(5, -1), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_second_derivatives_equal_f_linear(monkeypatch):
    """TRM differentiates a gradient norm: the backward pass must itself be differentiable."""
    def gradient_norm_gradients(function):
        x, weight, bias = (t.requires_grad_() for t in _inputs(seed=3))
        loss = function(x, weight, bias).square().sum()
        (grad_weight,) = torch.autograd.grad(loss, (weight,), create_graph=True)
        return torch.autograd.grad(grad_weight.norm(), (x, weight, bias), allow_unused=True)

    expected = gradient_norm_gradients(F.linear)
    _forbid_torch_linear(monkeypatch)
    got = gradient_norm_gradients(linear)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_deterministic():
    x, weight, bias = _inputs(n=64, k=192, out=1152)
    assert torch.equal(linear(x, weight, bias), linear(x, weight, bias))


def test_torch_matmul_runs_f_linear_bit_for_bit_and_restores(monkeypatch):
    x, weight, bias = _inputs()
    before = uses_onednn()
    _forbid_onednn(monkeypatch)
    with pytest.raises(RuntimeError, match="inside"):
        with torch_matmul():
            assert not uses_onednn()
            assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))
            assert torch.equal(matmul(x, weight.T), x @ weight.T)
            raise RuntimeError("inside")
    assert uses_onednn() == before


@pytest.mark.parametrize("case", ["float64", "3-D input", "empty", "1-D matmul"])
def test_fallbacks_run_torch_bit_for_bit(monkeypatch, case):
    x, weight, bias = _inputs()
    _forbid_onednn(monkeypatch)
    if case == "float64":
        x, weight, bias = x.double(), weight.double(), bias.double()
    elif case == "3-D input":
        x = x.reshape(1, 7, 13)
    elif case == "empty":
        weight, bias = weight[:0], bias[:0]
    if case == "1-D matmul":
        expected = x @ weight[0]
        _forbid_torch_linear(monkeypatch)
        assert torch.equal(matmul(x, weight[0]), expected)
        assert torch.equal(matmul(weight[0], x.T), weight[0] @ x.T)
        return
    assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))


def test_under_vmap_torch_runs(monkeypatch):
    """Per-sample gradients (methods/fisher.py) run under ``torch.func`` transforms, which have
    no rule for the oneDNN operator: torch's linear runs there."""
    x, weight, bias = _inputs()
    _forbid_onednn(monkeypatch)

    def loss(w, row):
        return linear(row[None], w, bias).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(weight, x)
    # ∂/∂W ‖W·r + b‖² = 2·(W·r + b)·rᵀ for each row r
    expected = torch.stack([2 * torch.outer(weight @ row + bias, row) for row in x])
    torch.testing.assert_close(per_sample, expected, rtol=1e-5, atol=1e-5)

"""The convolution shortcuts (bench/training/fast_convs.py) compute the convolution's function:
outputs and gradients against torch's own convolution (the slow obvious form), exact zeros for
the taps over the padding, and no change at all where the shortcut does not apply."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from mergecl.bench.training.fast_convs import (
    DepthwiseConv2d,
    DepthwiseConv2dSame,
    PointwiseConv2d,
    single_window_depthwise,
    use_fast_convolutions,
    use_torch_convolutions,
)
from timm.layers import Conv2dSame
from torch import nn

TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _pair(module: nn.Module, x: torch.Tensor):
    """(reference output and gradients, shortcut output and gradients) of one module."""
    results = []
    for fast in (False, True):
        layer = copy.deepcopy(module)
        if fast:
            assert use_fast_convolutions(layer) == 1
        leaf = x.clone().requires_grad_(True)
        out = layer(leaf)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
        (out * weights).sum().backward()
        grads = [leaf.grad] + [p.grad for p in layer.parameters()]
        results.append((out.detach(), grads))
    return results


def _assert_same_function(module: nn.Module, x: torch.Tensor) -> None:
    (ref_out, ref_grads), (out, grads) = _pair(module, x)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, **TOLERANCE)
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, **TOLERANCE)


def _input(*shape: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_on_a_1x1_map_is_the_linear_map(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 96, kernel_size=1, bias=bias)
    _assert_same_function(conv, _input(16, 48, 1, 1))
    fast = copy.deepcopy(conv)
    use_fast_convolutions(fast)
    x = _input(3, 48, 1, 1)
    expected = x.flatten(1) @ conv.weight.flatten(1).T + (conv.bias if bias else 0)
    torch.testing.assert_close(fast(x).flatten(1), expected, **TOLERANCE)  # by hand: W·x + b


@pytest.mark.parametrize(("kernel", "bias"), [(5, False), (3, True)])
def test_depthwise_on_a_1x1_map_is_the_centre_tap(kernel, bias):
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 32, kernel, padding=kernel // 2, groups=32, bias=bias)
    _assert_same_function(conv, _input(8, 32, 1, 1))
    fast = copy.deepcopy(conv)
    use_fast_convolutions(fast)
    x = _input(8, 32, 1, 1).requires_grad_(True)
    out = fast(x)
    centre = conv.weight[:, 0, kernel // 2, kernel // 2]
    # one product per output: the centre tap times the input, exactly
    expected = x.detach() * centre.detach().view(1, -1, 1, 1) + (conv.bias.detach().view(1, -1, 1, 1) if bias else 0)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    grad = fast.weight.grad.clone()
    centre_grad = grad[:, 0, kernel // 2, kernel // 2].clone()
    grad[:, 0, kernel // 2, kernel // 2] = 0
    assert torch.count_nonzero(grad) == 0  # the taps over the padding: exact zeros
    torch.testing.assert_close(centre_grad, x.detach().sum(dim=(0, 2, 3)), **TOLERANCE)


def test_tensorflow_same_depthwise_stride_2_on_a_2x2_map():
    """EfficientNet-Lite0's blocks.5.0.conv_dw at 32 px: 5×5, stride 2, TensorFlow padding
    (1 before, 2 after) on a 2×2 map, one window; the taps used are w[1:3, 1:3]."""
    torch.manual_seed(2)
    conv = Conv2dSame(24, 24, 5, stride=2, groups=24, bias=False)
    _assert_same_function(conv, _input(8, 24, 2, 2))
    x = _input(4, 24, 2, 2)
    by_hand = (x * conv.weight[:, 0, 1:3, 1:3]).sum(dim=(2, 3))
    torch.testing.assert_close(single_window_depthwise(x, conv.weight, None, 1, 1).flatten(1), by_hand)


@pytest.mark.parametrize("module", [
    nn.Conv2d(16, 16, 5, padding=2, groups=16),
    Conv2dSame(16, 16, 5, stride=2, groups=16),
    nn.Conv2d(16, 32, 1),
])
def test_larger_maps_run_the_convolution_unchanged(module):
    x = _input(4, 16, 6, 6)
    fast = copy.deepcopy(module)
    assert use_fast_convolutions(fast) == 1
    assert torch.equal(fast(x), module(x))  # more than one window: torch's convolution, bit for bit


def test_other_convolutions_are_left_alone():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1),                    # a dense 3×3
        nn.Conv2d(8, 8, 3, padding=1, groups=2),          # grouped, not depthwise
        nn.Conv2d(8, 8, 3, padding=1, groups=8, dilation=2),
        nn.Conv2d(8, 8, 3, padding="same", groups=8),      # string padding
        nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"),
        nn.Conv2d(8, 8, 1, padding=1),                    # a 1×1 with padding
        nn.Conv2d(1, 8, 3, padding=1),                    # one input channel, not depthwise
    )
    assert use_fast_convolutions(model) == 0
    assert all(type(m) is nn.Conv2d for m in model)
    assert model[-1].weight.shape[1] == 1  # as a depthwise kernel's: the groups decide, not the shape


def test_switching_keeps_names_and_state_and_is_idempotent():
    from mergecl.bench.training.models import build_backbone

    plain = build_backbone("tf_efficientnet_lite0", num_classes=10, head_init="timm").eval()
    fast = copy.deepcopy(plain)
    switched = use_fast_convolutions(fast)
    # 16 blocks: 16 projections (block 0's conv_pw, the others' conv_pwl) + 15 expansions
    # (conv_pw) + conv_head = 32 pointwise; one depthwise per block
    kinds = [type(m) for m in fast.modules()]
    assert kinds.count(PointwiseConv2d) == 32 and switched == 32 + 16
    assert kinds.count(DepthwiseConv2d) + kinds.count(DepthwiseConv2dSame) == 16
    assert use_fast_convolutions(fast) == 0
    assert list(fast.state_dict()) == list(plain.state_dict())
    back = copy.deepcopy(fast)
    assert use_torch_convolutions(back) == 32 + 16
    assert [type(m) for m in back.modules()] == [type(m) for m in plain.modules()]
    # at 32 px the last stages see 1×1 maps (the shortcuts), elsewhere torch's convolution
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
        large = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
        assert torch.equal(fast(large), plain(large))  # no map is 1×1 at 224 px: unchanged
    # a switched model pickles and copies (the classes are importable)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), fast(x))


def test_the_shortcut_works_under_vmap_per_sample_gradients():
    """The Fisher statistics take per-sample gradients by vmap(grad(functional_call))."""
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(12, 12, 5, padding=2, groups=12), nn.Conv2d(12, 4, 1), nn.Flatten())
    fast = copy.deepcopy(model)
    use_fast_convolutions(fast)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _input(6, 12, 1, 1)

    def loss(module):
        return lambda p, sample: functional_call(module, p, (sample.unsqueeze(0),)).square().sum()

    expected = vmap(grad(loss(model)), in_dims=(None, 0))(params, x)
    got = vmap(grad(loss(fast)), in_dims=(None, 0))(params, x)
    for name in params:
        torch.testing.assert_close(got[name], expected[name], **TOLERANCE)
    assert F.conv2d is torch.nn.functional.conv2d  # nothing patched globally


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
def test_same_padding_is_where_timms_pad_same_puts_the_zeros(stride, kernel, dilation):
    """TensorFlow's "same" padding, read off the tensor timm's ``pad_same`` (what Conv2dSame
    runs) makes: the zeros before and after a map of ones, in each direction."""
    from mergecl.bench.training.fast_convs import _same_padding
    from timm.layers.padding import pad_same

    for height, width in ((1, 1), (2, 1), (3, 5), (7, 4), (11, 11)):
        padded = pad_same(torch.ones(1, 1, height, width), (kernel, kernel), (stride, stride),
                          (dilation, dilation))[0, 0]
        rows, columns = padded.sum(dim=1) > 0, padded.sum(dim=0) > 0
        top, left = int(rows.float().argmax()), int(columns.float().argmax())
        bottom, right = len(rows) - top - height, len(columns) - left - width
        assert _same_padding(height, kernel, stride, dilation) == (top, bottom)
        assert _same_padding(width, kernel, stride, dilation) == (left, right)


def _no_convolution(*args, **kwargs):
    raise AssertionError("torch's convolution was called where the shortcut applies")


@pytest.mark.parametrize(("module", "size"), [
    (nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), 1),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), 1),
    (Conv2dSame(8, 8, 5, stride=2, groups=8, bias=False), 2),
    (Conv2dSame(8, 8, 3, stride=1, groups=8), 1),
    (nn.Conv2d(8, 16, 1), 1),
])
def test_the_shortcut_is_taken_where_it_applies_and_only_there(monkeypatch, module, size):
    fast = copy.deepcopy(module)
    use_fast_convolutions(fast)
    x = _input(3, 8, size, size)
    expected = module(x)
    monkeypatch.setattr(F, "conv2d", _no_convolution)
    torch.testing.assert_close(fast(x), expected, **TOLERANCE)  # no convolution was called
    torch.testing.assert_close(fast(x[0]), expected[0], **TOLERANCE)  # unbatched C×H×W too
    with pytest.raises(AssertionError, match="convolution was called"):
        fast(_input(3, 8, size + 3, size + 3))  # a larger map: torch's convolution


def test_a_non_square_kernel_stride_and_map():
    """Height and width are padded by their own kernel size and stride: a 5×3 kernel with
    stride (2, 1), TensorFlow padding, on a 2×1 map is one window (2 + 1 + 2 = 5, 1 + 1 + 1 = 3);
    a map that fills the window in one direction only is not."""
    torch.manual_seed(6)
    same = Conv2dSame(8, 8, (5, 3), stride=(2, 1), groups=8, bias=False)
    _assert_same_function(same, _input(4, 8, 2, 1))
    symmetric = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    for module, shape in ((same, (4, 8, 2, 1)), (symmetric, (4, 8, 1, 3)), (symmetric, (4, 8, 3, 1))):
        fast = copy.deepcopy(module)
        use_fast_convolutions(fast)
        x = _input(*shape)
        expected = module(x)
        torch.testing.assert_close(fast(x), expected, **TOLERANCE)
        taken = module is same
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(F, "conv2d", _no_convolution)
            if taken:
                torch.testing.assert_close(fast(x), expected, **TOLERANCE)
            else:  # 1 + 2 = 3 one way, 3 + 2 = 5 ≠ 3 the other: torch's convolution
                with pytest.raises(AssertionError, match="convolution was called"):
                    fast(x)

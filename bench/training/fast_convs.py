"""Convolutions that are a cheaper operation on the feature maps they meet: the same function,
computed by other kernels.

At the protocol's 32 px the last stages of EfficientNet-Lite0 (stride 32; ``blocks.5``,
``blocks.6``, ``conv_head``) see feature maps of 1×1 pixel, or 2×2 at the entry of
``blocks.5``. There two kinds of convolution reduce exactly to something simpler:

* **pointwise** (1×1 kernel, no padding, one group) on a 1×1 map: ``y = W·x + b``, a linear map
  of the channel vector -- :func:`torch.nn.functional.linear` on the flattened input;
* **depthwise** (one input channel per group) whose zero-padded input is exactly one kernel
  window, so the output is 1×1: ``y[n, c] = Σ_{i,j} x[n, c, i, j] · w[c, p_t + i, p_l + j]``
  (p_t, p_l: the top and left padding, symmetric or TensorFlow's "same" as timm's
  ``Conv2dSame`` computes it). The taps over the padding multiply zeros, and their gradients
  are exact zeros, so only the taps that meet the input are computed.

oneDNN runs both as general convolutions. On 1×1 maps that costs a reorder of the weights at
every call and, for the depthwise case, a backward pass over all k×k taps. The shortcuts are
adopted on a same-run ratio: a ``frozen_blocks: 5`` training step with them / the same step with
torch's convolutions, one thread (results/perf.md, ``6.step_cost.fast_convs``; about half).

Not bit-identical. The function is the same, but the summation order of the dot products is
the matrix product's (:mod:`mergecl.methods.matmul`), not the convolution kernel's, so results
differ at float rounding (tests/bench/training/test_fast_convs.py: outputs and gradients within
1e-5 of the convolution's, relative). Any other input shape, and
any convolution outside these two kinds, runs torch's convolution unchanged.

:func:`use_fast_convolutions` switches a model's eligible ``nn.Conv2d`` modules to the
subclasses below in place (``__class__``; :func:`use_torch_convolutions` switches them back). Parameter names, shapes and the state dict stay the same,
so merging, LoRA (peft wraps the module as its ``base_layer``) and the trajectory store see
the same model.
"""

from __future__ import annotations

from mergecl.methods.matmul import linear
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from torch import Tensor, nn


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) zero padding of TensorFlow's "same" convolution: timm's total, split
    as timm's ``pad_same`` splits it (the smaller half before)."""
    total = get_same_padding(size, kernel, stride, dilation)
    return total // 2, total - total // 2


def single_window_depthwise(x: Tensor, weight: Tensor, bias: Tensor | None,
                            top: int, left: int) -> Tensor:
    """The depthwise convolution of ``x`` (N×C×H×W) whose padded input is one window of the
    C×1×kh×kw ``weight``: Σ_{i,j} x[:, :, i, j]·w[:, 0, top + i, left + j] (N×C×1×1)."""
    height, width = x.shape[-2:]
    out = (x * weight[:, 0, top:top + height, left:left + width]).sum(dim=(-2, -1), keepdim=True)
    return out if bias is None else out + bias.view(-1, 1, 1)


class PointwiseConv2d(nn.Conv2d):
    """A 1×1 convolution; on a 1×1 feature map it runs as a linear map
    (:func:`mergecl.methods.matmul.linear`: oneDNN's matrix product, or ``F.linear``)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        return linear(x.flatten(-3), self.weight.flatten(1), self.bias)[..., None, None]


class _SingleWindowDepthwise:
    """The depthwise shortcut; ``_padding(height, width)`` gives (top, bottom, left, right)."""

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        kernel_h, kernel_w = self.weight.shape[-2:]
        height, width = x.shape[-2:]
        top, bottom, left, right = self._padding(height, width)
        if height + top + bottom != kernel_h or width + left + right != kernel_w:
            return super().forward(x)  # more than one window: the convolution itself
        return single_window_depthwise(x, self.weight, self.bias, top, left)


class DepthwiseConv2d(_SingleWindowDepthwise, nn.Conv2d):
    """A depthwise convolution with symmetric padding; one window runs as a weighted sum."""

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        pad_h, pad_w = self.padding
        return pad_h, pad_h, pad_w, pad_w


class DepthwiseConv2dSame(_SingleWindowDepthwise, Conv2dSame):
    """timm's ``Conv2dSame`` (TensorFlow padding), depthwise; one window runs as a weighted sum."""

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        top, bottom = _same_padding(height, self.weight.shape[-2], self.stride[0], self.dilation[0])
        left, right = _same_padding(width, self.weight.shape[-1], self.stride[1], self.dilation[1])
        return top, bottom, left, right


def _fast_class(module: nn.Module) -> type[nn.Module] | None:
    kind = type(module)
    if kind not in (nn.Conv2d, Conv2dSame) or module.padding_mode != "zeros":
        return None
    if isinstance(module.padding, str):  # padding="same"/"valid": left to torch
        return None
    if (kind is nn.Conv2d and module.kernel_size == (1, 1) and module.groups == 1
            and module.padding == (0, 0)):
        return PointwiseConv2d
    depthwise = module.groups == module.in_channels == module.out_channels and module.weight.shape[1] == 1
    if depthwise and module.dilation == (1, 1):
        return DepthwiseConv2dSame if kind is Conv2dSame else DepthwiseConv2d
    return None


def use_fast_convolutions(model: nn.Module) -> int:
    """Switch ``model``'s eligible convolutions to the shortcut classes, in place; return how
    many were switched (idempotent: a switched module is not switched again)."""
    switched = 0
    for module in model.modules():
        fast = _fast_class(module)
        if fast is not None:
            module.__class__ = fast
            switched += 1
    return switched


_TORCH_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    PointwiseConv2d: nn.Conv2d, DepthwiseConv2d: nn.Conv2d, DepthwiseConv2dSame: Conv2dSame}


def use_torch_convolutions(model: nn.Module) -> int:
    """Undo :func:`use_fast_convolutions` in place (torch's convolutions everywhere, e.g. to
    time the shortcuts against them); return how many modules were switched back."""
    switched = 0
    for module in model.modules():
        torch_class = _TORCH_CLASS.get(type(module))
        if torch_class is not None:
            module.__class__ = torch_class
            switched += 1
    return switched

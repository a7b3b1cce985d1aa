"""TensorFlow's 'SAME' padding for strided convolutions and pooling (models ported from TF: MaxViT, NASNet, PNASNet).

TF pads a strided layer so that the output has ``ceil(size / stride)`` positions, putting the odd pixel of
padding at the bottom / right; PyTorch's symmetric padding shifts the sampling grid by one pixel against
that. A stride-1 layer with an odd kernel needs no dynamic padding (symmetric ``k // 2`` is the same), so
:func:`conv2d_same` / :func:`pool2d_same` return plain torch layers there, as timm's ``create_conv2d_pad``
does, and the modules here only for the strided cases. Module names and state dicts equal ``nn.Conv2d``'s.
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding so that a layer over ``size`` positions gives ``ceil(size / stride)`` of them."""
    # ceil(size / stride) with non-negative operands only: the ONNX (TorchScript-traced) export records this
    # arithmetic, and ONNX's integer division truncates, so -(-size // stride) would become a floor there
    return max(((size + stride - 1) // stride - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(x: torch.Tensor, kernel: list[int], stride: list[int], dilation: list[int], value: float = 0.0
             ) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` as TF's 'SAME' does: half each side, the odd pixel at the bottom / right."""
    pad_h = _same_pad(x.shape[-2], kernel[0], stride[0], dilation[0])
    pad_w = _same_pad(x.shape[-1], kernel[1], stride[1], dilation[1])
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=value)


# torch.fx: the padding depends on the input's size, which a symbolic trace does not know; keep it one call
torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF 'SAME' padding computed from each input's size (timm's ``Conv2dSame``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True):
        super().__init__(in_chs, out_chs, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, [self.kernel_size[0], self.kernel_size[1]], [self.stride[0], self.stride[1]],
                     [self.dilation[0], self.dilation[1]])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class AvgPool2dSame(nn.AvgPool2d):
    """Average pooling with TF 'SAME' padding; padded zeros count in the average unless ``count_include_pad``
    is off (timm's ``AvgPool2dSame``)."""

    def __init__(self, kernel_size: int, stride: int, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, 0, count_include_pad=count_include_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        x = pad_same(x, [k, k], [s, s], [1, 1])
        return F.avg_pool2d(x, k, s, 0, False, self.count_include_pad)


class MaxPool2dSame(nn.MaxPool2d):
    """Max pooling with TF 'SAME' padding (padded with -inf, so padding never wins; timm's ``MaxPool2dSame``)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(kernel_size, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        return F.max_pool2d(pad_same(x, [k, k], [s, s], [1, 1], value=float("-inf")), k, s)


def _static(kernel: int, stride: int, dilation: int) -> bool:
    return stride == 1 and (dilation * (kernel - 1)) % 2 == 0


def conv2d_same(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                bias: bool = False) -> nn.Conv2d:
    """A conv with TF 'SAME' padding: a plain ``nn.Conv2d`` where symmetric padding is the same, else
    :class:`Conv2dSame`."""
    if _static(kernel_size, stride, dilation):
        return nn.Conv2d(in_chs, out_chs, kernel_size, stride, dilation * (kernel_size - 1) // 2, dilation, groups,
                         bias)
    return Conv2dSame(in_chs, out_chs, kernel_size, stride, dilation, groups, bias)


def pool2d_same(pool_type: str, kernel_size: int, stride: int, count_include_pad: bool = True) -> nn.Module:
    """``'avg'`` or ``'max'`` pooling with TF 'SAME' padding (plain torch pooling where that is the same)."""
    if pool_type not in ("avg", "max"):
        raise ValueError(f"pool_type must be 'avg' or 'max', not {pool_type!r}")
    if _static(kernel_size, stride, 1):
        pad = (kernel_size - 1) // 2
        if pool_type == "avg":
            return nn.AvgPool2d(kernel_size, stride, pad, count_include_pad=count_include_pad)
        return nn.MaxPool2d(kernel_size, stride, pad)
    if pool_type == "avg":
        return AvgPool2dSame(kernel_size, stride, count_include_pad)
    return MaxPool2dSame(kernel_size, stride)

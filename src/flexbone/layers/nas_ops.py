"""The operations of the TF-searched NASNet-A and PNASNet-5 cells (Zoph et al. 2018; Liu et al. 2018).

Both searches drew from one operation set, implemented alike in the TF reference and in the PyTorch port
(Cadene's pretrained-models, then timm): ReLU -> conv -> BN units, stacks of two separable convs, and the
"factorized reduction" that halves a previous cell's output to match the next. BN eps is TF's 1e-3;
strided convs and pools use TF 'SAME' padding. Module names are timm's, so its checkpoints load.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .norm import BatchNorm2d
from .padding import conv2d_same

TF_BN_EPS = 1e-3


class ActConvBn(nn.Module):
    """``ReLU -> kxk conv -> BN``: a cell's input adapter (1x1) and PNASNet's strided 1x1 branch."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.act = nn.ReLU()  # not in place: the input is also read by other branches of the cell
        self.conv = conv2d_same(in_chs, out_chs, kernel_size, stride=stride)
        self.bn = BatchNorm2d(out_chs, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class SeparableConv2d(nn.Module):
    """Depthwise kxk (the stride) then pointwise 1x1, no bias."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.depthwise_conv2d = conv2d_same(in_chs, in_chs, kernel_size, stride=stride, groups=in_chs)
        self.pointwise_conv2d = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class BranchSeparables(nn.Module):
    """``(ReLU -> separable kxk -> BN) x 2``, the first strided: the searched 'sep kxk' operation.

    ``stem_cell``: the first separable conv already maps to ``out_chs`` (in the stem cells, whose input is
    the wider stem map); otherwise it keeps ``in_chs``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, stem_cell: bool = False):
        super().__init__()
        mid_chs = out_chs if stem_cell else in_chs
        self.act_1 = nn.ReLU()  # not in place: the branch input is shared
        self.separable_1 = SeparableConv2d(in_chs, mid_chs, kernel_size, stride)
        self.bn_sep_1 = BatchNorm2d(mid_chs, eps=TF_BN_EPS)
        self.act_2 = nn.ReLU(inplace=True)
        self.separable_2 = SeparableConv2d(mid_chs, out_chs, kernel_size)
        self.bn_sep_2 = BatchNorm2d(out_chs, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(self.act_1(x)))
        return self.bn_sep_2(self.separable_2(self.act_2(x)))


class FactorizedReduction(nn.Module):
    """Halve a map's resolution without losing half the pixels: two 1x1/2 convs, one on the map shifted by
    one pixel, their outputs concatenated (``out_chs // 2`` each), then BN.

    ``(B, in_chs, H, W) -> (B, out_chs, H/2, W/2)``. Parameter names ``path_1.conv``, ``path_2.conv``,
    ``final_path_bn`` (NASNet keeps them in the cell itself; PNASNet in ``conv_prev_1x1``).
    """

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.act = nn.ReLU()
        self.path_1 = nn.Sequential()
        self.path_1.add_module("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False))  # = x[:, :, ::2, ::2]
        self.path_1.add_module("conv", nn.Conv2d(in_chs, out_chs // 2, 1, bias=False))
        self.path_2 = nn.Sequential()
        self.path_2.add_module("pad", nn.ZeroPad2d((-1, 1, -1, 1)))  # shift up-left by one pixel, zeros enter
        self.path_2.add_module("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False))
        self.path_2.add_module("conv", nn.Conv2d(in_chs, out_chs // 2, 1, bias=False))
        self.final_path_bn = BatchNorm2d(out_chs, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))

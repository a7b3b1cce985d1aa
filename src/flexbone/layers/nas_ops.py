"""The operations of the TF-searched NASNet-A and PNASNet-5 cells (Zoph et al. 2018; Liu et al. 2018).

Both searches drew from one operation set, implemented alike in the TF reference and in the PyTorch port
(Cadene's pretrained-models, then timm): ReLU -> conv -> BN units, stacks of two separable convs, and the
"factorized reduction" that halves a previous cell's output to match the next. BN eps is TF's 1e-3;
strided convs and pools use TF 'SAME' padding. Module names are timm's, so its checkpoints load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


# ------------------------------------------------------------------------------------- searched cells
@dataclass(frozen=True)
class CellSpec:
    """One searched cell of a network.

    ``branches`` is the searched cell as a table: per branch ``(left op, its input, right op, its input)``, the
    two results summed (``None``: the identity); inputs are ``'x'`` (the cell's input after its 1x1 unit),
    ``'prev'`` (the cell before it, adapted) or an earlier branch (``'c0'``, ``'c1'``, ...); ``outputs`` are
    concatenated. ``prev`` says how ``x_prev`` is adapted: 'conv' (a 1x1 unit), 'factorized' (a factorized
    reduction, when it has twice the resolution) or 'none' (a stem cell's raw input). In a reduction cell the
    ops on ``'x'`` / ``'prev'`` have stride 2. ``keeps_prev``: the next cell reads this cell's ``x_prev`` again.
    """

    name: str
    branches: tuple
    outputs: tuple[str, ...]
    reduction: bool
    prev: str
    in_chs: int
    prev_chs: int
    width: int
    keeps_prev: bool = False

    @property
    def out_chs(self) -> int:
        return self.width * len(self.outputs)


class SearchedCell(nn.Module):
    """A cell from its :class:`CellSpec`: ``(x, x_prev) -> (B, out_chs, H', W')``.

    ``make_op(op, in_chs, out_chs, stride)`` builds a named operation of the family. The branch modules are the
    attributes ``comb_iter_{i}_left`` / ``comb_iter_{i}_right`` (timm's names); ``flat_factorized`` keeps the
    factorized reduction's modules in the cell itself (NASNet's names) instead of in ``conv_prev_1x1``.
    """

    def __init__(self, spec: CellSpec, make_op: Callable[[str, int, int, int], nn.Module],
                 flat_factorized: bool = False):
        super().__init__()
        w = spec.width
        self.prev, self.branches, self.outputs = spec.prev, spec.branches, spec.outputs
        if spec.prev == "conv":
            self.conv_prev_1x1 = ActConvBn(spec.prev_chs, w)
        elif spec.prev == "factorized" and not flat_factorized:
            self.conv_prev_1x1 = FactorizedReduction(spec.prev_chs, w)
        self.conv_1x1 = ActConvBn(spec.in_chs, w)
        if spec.prev == "factorized" and flat_factorized:
            reduce = FactorizedReduction(spec.prev_chs, w)
            self.act, self.path_1, self.path_2, self.final_path_bn = (reduce.act, reduce.path_1, reduce.path_2,
                                                                       reduce.final_path_bn)
        prev_chs = spec.prev_chs if spec.prev == "none" else w
        for i, (l_op, l_in, r_op, r_in) in enumerate(spec.branches):
            for side, op, src in (("left", l_op, l_in), ("right", r_op, r_in)):
                if op is not None:
                    stride = 2 if spec.reduction and src in ("x", "prev") else 1
                    self.add_module(f"comb_iter_{i}_{side}", make_op(op, prev_chs if src == "prev" else w, w, stride))

    def _adapt_prev(self, x_prev: torch.Tensor) -> torch.Tensor:
        if self.prev == "none":
            return x_prev
        if hasattr(self, "conv_prev_1x1"):
            return self.conv_prev_1x1(x_prev)
        r = self.act(x_prev)  # a factorized reduction kept in the cell itself
        return self.final_path_bn(torch.cat([self.path_1(r), self.path_2(r)], 1))

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        maps = {"x": self.conv_1x1(x), "prev": self._adapt_prev(x_prev)}
        for i, (l_op, l_in, r_op, r_in) in enumerate(self.branches):
            left = maps[l_in] if l_op is None else self.get_submodule(f"comb_iter_{i}_left")(maps[l_in])
            right = maps[r_in] if r_op is None else self.get_submodule(f"comb_iter_{i}_right")(maps[r_in])
            maps[f"c{i}"] = left + right
        return torch.cat([maps[k] for k in self.outputs], 1)

"""The ResNet family: ResNet, ResNet-D, SE-ResNet(X)t, ResNeXt, Wide ResNet, ResNet-RS, anti-aliased ResNets.

He et al. 2016 (ResNet); Xie et al. 2017 (ResNeXt); Zagoruyko & Komodakis 2016 (Wide ResNet); He et al.
2019, "Bag of Tricks" (ResNet-D: deep stem + average-pool shortcut); Hu et al. 2018 (SE); Bello et al. 2021
(ResNet-RS); Zhang 2019 (anti-aliased downsampling).

Every variant is one row of ``VARIANTS`` at the bottom. Parameter names follow timm (and therefore
torchvision: ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so their
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..layers import BlurPool2d, DropBlock2d, DropPath, SEModule, create_classifier, get_padding
from ..layers.activations import get_act_layer
from ..layers.norm import BatchNorm2d, get_norm_layer
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants


# ------------------------------------------------------------------------------------------- blocks
def _anti_alias(aa_layer: str | None, channels: int, stride: int, enable: bool) -> nn.Module:
    """Downsampling after the conv instead of inside it: 'blur' (BlurPool) or 'avg' (2x2 average pool)."""
    if not aa_layer or not enable:
        return nn.Identity()
    if aa_layer == "blur":
        return BlurPool2d(channels, stride=stride)
    if aa_layer == "avg":
        return nn.AvgPool2d(kernel_size=stride, stride=stride)
    raise ValueError(f"unknown aa_layer {aa_layer!r}; choose 'blur' or 'avg'")


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, act_layer: Callable = nn.ReLU, norm_layer: Callable = BatchNorm2d,
                 attn_layer: Callable | None = None, aa_layer: str | None = None, drop_block: Callable | None = None,
                 drop_path: nn.Module | None = None, mid_chs: int | None = None, out_chs: int | None = None):
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        first_planes = mid_chs or planes // reduce_first  # explicit widths: sub-networks of elastic supernets
        outplanes = out_chs or planes * self.expansion
        first_dilation = first_dilation or dilation
        use_aa = aa_layer is not None and (stride == 2 or first_dilation != dilation)

        self.conv1 = nn.Conv2d(inplanes, first_planes, 3, stride=1 if use_aa else stride,
                               padding=first_dilation, dilation=first_dilation, bias=False)
        self.bn1 = norm_layer(first_planes)
        self.drop_block = drop_block() if drop_block is not None else nn.Identity()
        self.act1 = act_layer(inplace=True)
        self.aa = _anti_alias(aa_layer, first_planes, stride, use_aa)
        self.conv2 = nn.Conv2d(first_planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(outplanes)
        self.se = attn_layer(outplanes) if attn_layer is not None else None
        self.act2 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.drop_block(self.bn1(self.conv1(x))))
        x = self.bn2(self.conv2(self.aa(x)))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class BottleneckBase(nn.Module):
    """The end every bottleneck shares: a 1x1 expansion (``conv3``, ``bn3``), optional SE, stochastic depth, the
    (projected) shortcut added, the activation. Subclasses build their middle and call :meth:`_init_tail`."""

    def _init_tail(self, width: int, outplanes: int, act_layer: Callable, norm_layer: Callable,
                   attn_layer: Callable | None, downsample: nn.Module | None, drop_path: nn.Module | None) -> None:
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = norm_layer(outplanes)
        self.se = attn_layer(outplanes) if attn_layer is not None else None
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def _expand_and_add(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``act(se(bn3(conv3(x))) [dropped] + shortcut [projected])``."""
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act3(x)


class Bottleneck(BottleneckBase):
    """1x1 reduce -> 3x3 (grouped for ResNeXt) -> 1x1 expand by 4 (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, act_layer: Callable = nn.ReLU, norm_layer: Callable = BatchNorm2d,
                 attn_layer: Callable | None = None, aa_layer: str | None = None, drop_block: Callable | None = None,
                 drop_path: nn.Module | None = None, mid_chs: int | None = None, out_chs: int | None = None):
        super().__init__()
        # ResNeXt / Wide ResNet width rule, unless the width is given (sub-networks of elastic supernets)
        width = mid_chs or int(math.floor(planes * (base_width / 64)) * cardinality)
        first_planes = width // reduce_first
        outplanes = out_chs or planes * self.expansion
        first_dilation = first_dilation or dilation
        use_aa = aa_layer is not None and (stride == 2 or first_dilation != dilation)

        self.conv1 = nn.Conv2d(inplanes, first_planes, 1, bias=False)
        self.bn1 = norm_layer(first_planes)
        self.act1 = act_layer(inplace=True)
        # stride on the 3x3 conv ("ResNet v1.5", as torchvision and timm)
        self.conv2 = nn.Conv2d(first_planes, width, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, groups=cardinality, bias=False)
        self.bn2 = norm_layer(width)
        self.drop_block = drop_block() if drop_block is not None else nn.Identity()
        self.act2 = act_layer(inplace=True)
        self.aa = _anti_alias(aa_layer, width, stride, use_aa)
        self._init_tail(width, outplanes, act_layer, norm_layer, attn_layer, downsample, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.drop_block(self.bn2(self.conv2(x))))
        return self._expand_and_add(self.aa(x), shortcut)


def downsample_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                    first_dilation: int | None = None, norm_layer: Callable = BatchNorm2d) -> nn.Module:
    """Projection shortcut: strided 1x1 conv + norm (the original ResNet 'B' shortcut)."""
    kernel_size = 1 if stride == 1 and dilation == 1 else kernel_size
    first_dilation = (first_dilation or dilation) if kernel_size > 1 else 1
    padding = get_padding(kernel_size, stride, first_dilation)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=first_dilation, bias=False),
        norm_layer(out_channels),
    )


def downsample_avg(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                   first_dilation: int | None = None, norm_layer: Callable = BatchNorm2d) -> nn.Module:
    """ResNet-D shortcut: 2x2 average pool, then 1x1 conv, so no activation is skipped by the stride."""
    if stride == 1 and dilation == 1:
        pool = nn.Identity()
    elif dilation == 1:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    else:  # dilated stage: keep the resolution; a 2x2 'same' average as in timm's AvgPool2dSame
        pool = _AvgPool2dSame(2)
    return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), norm_layer(out_channels))


class _AvgPool2dSame(nn.Module):
    """Stride-1 2x2 average pool with TensorFlow-style 'same' padding (pad right/bottom)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size - 1
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return F.avg_pool2d(x, self.kernel_size, 1, 0, ceil_mode=False, count_include_pad=False)


class StemResidual(nn.Module):
    """``x + act(bn(conv3x3(x)))``: the middle conv of once-for-all ResNet's deep stem (Cai et al. 2020).

    Elastic depth may drop it; a sub-network without it keeps ``nn.Identity`` in its place.
    """

    def __init__(self, channels: int, act_layer: Callable = nn.ReLU, norm_layer: Callable = BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = norm_layer(channels)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.bn(self.conv(x)))


def _drop_blocks(drop_prob: float) -> list[Callable | None]:
    """DropBlock only in the last two stages, block 5 / 3 (Ghiasi et al., timm's schedule)."""
    if not drop_prob:
        return [None] * 4
    return [None, None,
            partial(DropBlock2d, drop_prob=drop_prob, block_size=5, gamma_scale=0.25),
            partial(DropBlock2d, drop_prob=drop_prob, block_size=3, gamma_scale=1.0)]


# -------------------------------------------------------------------------------------------- model
class ResNet(Backbone):
    """ResNet and its variants, configured by keyword arguments (see ``VARIANTS`` for the named ones).

    Args:
        block: ``'basic'``, ``'bottleneck'``, or a block class built on the ResNet trunk (Res2Net's
            ``Bottle2neck``), called with the same arguments plus ``block_args``.
        block_args: extra keyword arguments of every block (Res2Net's ``scale``).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        channels: base planes per stage (the output is ``planes * expansion``).
        cardinality, base_width: groups and width per group of the 3x3 conv (ResNeXt, Wide ResNet).
        stem_type: ``''`` (7x7 conv), ``'deep'`` (three 3x3 convs, ResNet-C/D), ``'deep_tiered'``,
            ``'small'`` (one 3x3 stride-1 conv and no pooling, for tiny images such as 8x8 digits or CIFAR), or
            ``'deep_residual'`` (once-for-all ResNet: three 3x3 convs, the middle one with an identity shortcut).
        stem_width: width of the deep stem's first convs (the stem output is ``2 * stem_width``).
        stem_chs: ``(inner, out)`` widths of a ``'deep_residual'`` stem (default ``(stem_width, 2 * stem_width)``).
        stem_depth: convs in a ``'deep_residual'`` stem: 3, or 2 without the residual middle conv.
        stage_widths: output channels of each stage (default ``channels[i] * expansion``).
        mid_chs: per stage, per block, the width of the block's inner convs (default from ``channels``,
            ``base_width`` and ``cardinality``). With ``stage_widths`` this describes any sub-network of
            the once-for-all ResNet supernet (``flexbone.elastic.ofa_resnet``).
        replace_stem_pool: stride-2 3x3 conv + norm + act instead of the stem max-pool (ResNet-RS).
        avg_down: average-pool shortcut (ResNet-D).
        se_ratio: squeeze-excite in every block with this reduction ratio (0 = none; SE-ResNet 1/16, ResNet-RS 1/4).
        aa_layer: anti-aliased downsampling, ``'blur'`` or ``'avg'`` (``None`` = plain strided convs).
        output_stride: 32, or 16/8 by dilating the last stage(s).
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, rising linearly per block.
        drop_block_rate: DropBlock in stages 3 and 4. zero_init_last: zero the last BN of each block.
    """

    def __init__(
        self,
        block: str | type[nn.Module] = "bottleneck",
        layers: tuple[int, ...] = (3, 4, 6, 3),
        channels: tuple[int, ...] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        global_pool: str = "avg",
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_type: str = "",
        stem_chs: tuple[int, int] | None = None,
        stem_depth: int = 3,
        replace_stem_pool: bool = False,
        block_reduce_first: int = 1,
        down_kernel_size: int = 1,
        avg_down: bool = False,
        se_ratio: float = 0.0,
        aa_layer: str | None = None,
        act_layer: str | Callable = "relu",
        norm_layer: str | Callable = "batchnorm",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_block_rate: float = 0.0,
        zero_init_last: bool = True,
        stage_widths: tuple[int, ...] | None = None,
        mid_chs: tuple[tuple[int, ...], ...] | None = None,
        block_args: dict[str, Any] | None = None,
    ):
        super().__init__()
        if isinstance(block, str) and block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(BLOCKS)}")
        if stem_type not in ("", "deep", "deep_tiered", "small", "deep_residual"):
            raise ValueError(f"unknown stem_type {stem_type!r}; choose '', 'deep', 'deep_tiered', 'small' "
                             f"or 'deep_residual'")
        if stem_depth not in (2, 3):
            raise ValueError(f"stem_depth must be 2 or 3, not {stem_depth}")
        if stem_type != "deep_residual" and (stem_chs is not None or stem_depth != 3):
            raise ValueError("stem_chs and stem_depth apply to stem_type='deep_residual' only")
        if stage_widths is not None and len(stage_widths) != len(layers):
            raise ValueError(f"stage_widths needs one width per stage ({len(layers)}), got {len(stage_widths)}")
        if mid_chs is not None and [len(m) for m in mid_chs] != list(layers):
            raise ValueError(f"mid_chs needs one width per block, {tuple(layers)} per stage; got "
                             f"{tuple(len(m) for m in mid_chs)}")
        block_fn = BLOCKS[block] if isinstance(block, str) else block
        expansion = block_fn.expansion
        block_fn = partial(block_fn, **(block_args or {}))
        act_layer = get_act_layer(act_layer)
        norm_layer = get_norm_layer(norm_layer)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        # stem ---------------------------------------------------------------------------------
        deep_stem = stem_type.startswith("deep")
        inplanes = stem_width * 2 if deep_stem else 64
        if stem_type == "deep_residual":
            inner, inplanes = stem_chs or (stem_width, stem_width * 2)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, inner, 3, stride=2, padding=1, bias=False),
                norm_layer(inner),
                act_layer(inplace=True),
                # kept as a placeholder when dropped, so that parameter names do not depend on stem_depth
                StemResidual(inner, act_layer, norm_layer) if stem_depth == 3 else nn.Identity(),
                nn.Conv2d(inner, inplanes, 3, stride=1, padding=1, bias=False),
            )
        elif deep_stem:
            deep_chs = (3 * (stem_width // 4), stem_width) if "tiered" in stem_type else (stem_width, stem_width)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, deep_chs[0], 3, stride=2, padding=1, bias=False),
                norm_layer(deep_chs[0]),
                act_layer(inplace=True),
                nn.Conv2d(deep_chs[0], deep_chs[1], 3, stride=1, padding=1, bias=False),
                norm_layer(deep_chs[1]),
                act_layer(inplace=True),
                nn.Conv2d(deep_chs[1], inplanes, 3, stride=1, padding=1, bias=False),
            )
        elif stem_type == "small":
            self.conv1 = nn.Conv2d(in_chans, inplanes, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(inplanes)
        self.act1 = act_layer(inplace=True)
        if stem_type == "small":
            self.maxpool = nn.Identity()
        elif replace_stem_pool:
            self.maxpool = nn.Sequential(*[m for m in (
                nn.Conv2d(inplanes, inplanes, 3, stride=1 if aa_layer else 2, padding=1, bias=False),
                _anti_alias(aa_layer, inplanes, 2, True) if aa_layer else None,
                norm_layer(inplanes),
                act_layer(inplace=True),
            ) if m is not None])
        elif aa_layer == "avg":
            self.maxpool = nn.AvgPool2d(2)
        elif aa_layer == "blur":
            self.maxpool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BlurPool2d(inplanes, stride=2))
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # stages -------------------------------------------------------------------------------
        attn_layer = partial(SEModule, rd_ratio=se_ratio) if se_ratio else None
        net_stride = 1 if stem_type == "small" else 4
        dilation = prev_dilation = 1
        net_num_blocks, net_block_idx = sum(layers), 0
        # timm's level 0 is the stem (after its activation, before the pooling); stages follow at 4..32
        stages = [FeatureStage(inplanes, 1 if stem_type == "small" else 2, "act1")]
        for stage_idx, (planes, num_blocks, drop_block) in enumerate(zip(channels, layers, _drop_blocks(drop_block_rate))):
            stride = 1 if stage_idx == 0 else 2
            if net_stride >= output_stride:  # keep the resolution, grow the receptive field instead
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            out_chs = stage_widths[stage_idx] if stage_widths is not None else planes * expansion
            downsample = None
            if stride != 1 or inplanes != out_chs:
                down_fn = downsample_avg if avg_down else downsample_conv
                downsample = down_fn(inplanes, out_chs, down_kernel_size, stride=stride,
                                     dilation=dilation, first_dilation=prev_dilation, norm_layer=norm_layer)
            blocks = []
            for block_idx in range(num_blocks):
                # stochastic depth: linear in the block index, 0 for the first block, drop_path_rate for the last
                dpr = drop_path_rate * net_block_idx / max(net_num_blocks - 1, 1)
                blocks.append(block_fn(
                    inplanes, planes, stride if block_idx == 0 else 1, downsample if block_idx == 0 else None,
                    cardinality=cardinality, base_width=base_width, reduce_first=block_reduce_first,
                    dilation=dilation, first_dilation=prev_dilation, act_layer=act_layer, norm_layer=norm_layer,
                    attn_layer=attn_layer, aa_layer=aa_layer, drop_block=drop_block,
                    drop_path=DropPath(dpr) if dpr > 0 else None,
                    mid_chs=mid_chs[stage_idx][block_idx] if mid_chs is not None else None, out_chs=out_chs,
                ))
                prev_dilation = dilation
                inplanes = out_chs
                net_block_idx += 1
            self.add_module(f"layer{stage_idx + 1}", nn.Sequential(*blocks))
            stages.append(FeatureStage(inplanes, net_stride, f"layer{stage_idx + 1}"))
        self.feature_info = FeatureInfo(stages)

        # head ---------------------------------------------------------------------------------
        self.num_features = inplanes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.default_cfg = default_cfg(first_conv="conv1.0" if deep_stem else "conv1", classifier="fc")
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            # zero-init the last BN of each residual branch: blocks start as identities (Goyal et al. 2017)
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))  # (B, 3, H, W) -> (B, C, H/4, W/4)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for stage in self.stages:
                for blk in stage:
                    x = checkpoint(blk, x, use_reentrant=False)
        else:  # the stages by name: TorchScript cannot call the modules of a tuple
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}

# ---------------------------------------------------------------------------------------- variants
# Shorthands for the recurring modifications.
_D = dict(stem_width=32, stem_type="deep", avg_down=True)  # ResNet-D (Bag of Tricks)
_SE = dict(se_ratio=1 / 16)  # SE-ResNet
_RS = dict(stem_width=32, stem_type="deep", replace_stem_pool=True, avg_down=True, se_ratio=0.25)  # ResNet-RS
_DEPTHS = {  # blocks per stage
    18: (2, 2, 2, 2), 26: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
    152: (3, 8, 36, 3), 200: (3, 24, 36, 3), 270: (4, 29, 53, 4), 350: (4, 36, 72, 4), 420: (4, 44, 87, 4),
}


def _basic(depth: int, **kw: Any) -> dict[str, Any]:
    return dict(block="basic", layers=_DEPTHS[depth], **kw)


def _bottle(depth: int, **kw: Any) -> dict[str, Any]:
    return dict(block="bottleneck", layers=_DEPTHS[depth], **kw)


# name -> ResNet keyword arguments. Every name here that timm also has is checked against timm
# (strict state-dict load, equal outputs, equal parameter count) in tests/test_parity_timm.py.
VARIANTS: dict[str, dict[str, Any]] = {
    # ResNet (He et al.)
    "resnet18": _basic(18), "resnet34": _basic(34),
    "resnet26": _bottle(26), "resnet50": _bottle(50), "resnet101": _bottle(101),
    "resnet152": _bottle(152), "resnet200": _bottle(200),
    # ResNet-D
    "resnet18d": _basic(18, **_D), "resnet34d": _basic(34, **_D),
    "resnet26d": _bottle(26, **_D), "resnet50d": _bottle(50, **_D), "resnet101d": _bottle(101, **_D),
    "resnet152d": _bottle(152, **_D), "resnet200d": _bottle(200, **_D),
    # ResNeXt and Wide ResNet
    "resnext50_32x4d": _bottle(50, cardinality=32, base_width=4),
    "resnext50d_32x4d": _bottle(50, cardinality=32, base_width=4, **_D),
    "resnext101_32x4d": _bottle(101, cardinality=32, base_width=4),
    "resnext101_32x8d": _bottle(101, cardinality=32, base_width=8),
    "resnext101_64x4d": _bottle(101, cardinality=64, base_width=4),
    "wide_resnet50_2": _bottle(50, base_width=128),
    "wide_resnet101_2": _bottle(101, base_width=128),
    # SE-ResNet and SE-ResNeXt
    "seresnet18": _basic(18, **_SE), "seresnet34": _basic(34, **_SE),
    "seresnet50": _bottle(50, **_SE), "seresnet101": _bottle(101, **_SE), "seresnet152": _bottle(152, **_SE),
    "seresnet152d": _bottle(152, **_SE, **_D), "seresnet200d": _bottle(200, **_SE, **_D),
    "seresnext26d_32x4d": _bottle(26, cardinality=32, base_width=4, **_SE, **_D),
    "seresnext50_32x4d": _bottle(50, cardinality=32, base_width=4, **_SE),
    "seresnext101_32x4d": _bottle(101, cardinality=32, base_width=4, **_SE),
    "seresnext101_32x8d": _bottle(101, cardinality=32, base_width=8, **_SE),
    "seresnext101_64x4d": _bottle(101, cardinality=64, base_width=4, **_SE),
    # ResNet-RS (Bello et al. 2021)
    **{f"resnetrs{d}": _bottle(d, **_RS) for d in (50, 101, 152, 200, 270, 350, 420)},
    # anti-aliased downsampling (Zhang 2019): blur pool, or timm's cheaper 2x2 average pool
    "resnetblur18": _basic(18, aa_layer="blur"), "resnetblur50": _bottle(50, aa_layer="blur"),
    "resnetblur50d": _bottle(50, aa_layer="blur", **_D), "resnetblur101d": _bottle(101, aa_layer="blur", **_D),
    "resnetaa50": _bottle(50, aa_layer="avg"), "resnetaa50d": _bottle(50, aa_layer="avg", **_D),
    # tiny images (8x8 digits, 32x32 CIFAR): 3x3 stride-1 stem, no pooling, narrow stages
    "resnet10s": dict(block="basic", layers=(1, 1, 1, 1), stem_type="small", channels=(64, 128, 256, 512)),
    "resnet8s_tiny": dict(block="basic", layers=(1, 1, 1, 1), stem_type="small", channels=(64, 32, 32, 64)),
}


# The preprocessing of timm's default weights for each name (timm's pretrained_cfg), where it differs from
# default_cfg()'s (224, bilinear, crop 0.875): tests/test_contract.py checks every row against timm.
_A1 = dict(test_input_size=(3, 288, 288), interpolation="bicubic", crop_pct=0.95, test_crop_pct=1.0)  # RSB A1
_RA = dict(test_input_size=(3, 288, 288), interpolation="bicubic", test_crop_pct=0.95)  # RandAugment recipes
_256 = dict(input_size=(3, 256, 256), pool_size=(8, 8), test_input_size=(3, 320, 320), interpolation="bicubic",
            crop_pct=0.95, test_crop_pct=1.0)


def _rs(size: int, test_size: int, crop_pct: float) -> dict[str, Any]:  # ResNet-RS: trained at its own size
    return dict(input_size=(3, size, size), pool_size=(size // 32, size // 32),
                test_input_size=(3, test_size, test_size), interpolation="bicubic", crop_pct=crop_pct)


PREPROCESSING: dict[str, dict[str, Any]] = {
    **dict.fromkeys(("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_64x4d", "seresnet50", "seresnext101_32x8d", "resnetaa50", "resnetaa50d"), _A1),
    **dict.fromkeys(("resnet18d", "resnet26", "resnet26d", "resnet34d", "resnet50d", "resnet200", "resnext50d_32x4d",
                     "wide_resnet50_2", "seresnet18", "seresnet34", "seresnet101", "seresnet152", "seresnext26d_32x4d",
                     "seresnext50_32x4d", "resnetblur18", "resnetblur50", "resnetblur50d", "resnetblur101d"), _RA),
    **dict.fromkeys(("resnet101d", "resnet152d", "resnet200d", "seresnet152d"), _256),
    "seresnet200d": dict(_256, test_input_size=(3, 288, 288), crop_pct=0.875, test_crop_pct=0.95),
    "seresnext101_32x4d": dict(interpolation="bicubic"), "seresnext101_64x4d": dict(interpolation="bicubic"),
    "resnetrs50": _rs(160, 224, 0.91), "resnetrs101": _rs(192, 288, 0.94), "resnetrs152": _rs(256, 320, 1.0),
    "resnetrs200": _rs(256, 320, 1.0), "resnetrs270": _rs(256, 352, 1.0), "resnetrs350": _rs(288, 384, 1.0),
    "resnetrs420": _rs(320, 416, 1.0),
}


def _build(variant: dict[str, Any], **kwargs: Any) -> ResNet:
    return ResNet(**{**variant, **kwargs})


register_variants(ResNet, VARIANTS, family="resnet", preprocessing=PREPROCESSING, build=_build)

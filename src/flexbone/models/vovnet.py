"""The VoVNet family: one-shot aggregation networks, v1 and v2 (effective SE + identity mapping).

Lee et al. 2019, "An Energy and GPU-Computation Efficient Backbone Network for Real-Time Object Detection"
(VoVNet v1); Lee & Park 2020, "CenterMask: Real-Time Anchor-Free Instance Segmentation" (VoVNet v2).

A one-shot aggregation (OSA) block runs a chain of 3x3 convs and concatenates the block input with *every*
intermediate output once, at the end, before a 1x1 aggregation conv. DenseNet concatenates at every
layer instead, which makes its memory traffic grow quadratically; OSA keeps the diverse receptive fields
at a fraction of the cost. v2 adds an identity shortcut around every block but a stage's first (whose
channels change) and an "effective" SE (one 1x1 conv, no reduction) on a stage's last block.

Every variant is one row of ``VARIANTS`` at the bottom. Parameter names follow timm's ``vovnet.py``
(``stem.0.conv``, ``stages.1.blocks.0.conv_mid.2.bn``, ``head.fc``), so its checkpoints load with
``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import (ClassifierHead, ConvNormAct, DropPath, EcaModule, EffectiveSEModule, EvoNorm2dS0,
                      SeparableConvNormAct)
from ..layers.activations import get_act_layer
from ..layers.norm import BatchNorm2d, get_norm_layer
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants

_ATTN_LAYERS: dict[str, Callable[[int], nn.Module]] = {"ese": EffectiveSEModule, "eca": EcaModule}


# ------------------------------------------------------------------------------------------- blocks
class OsaBlock(nn.Module):
    """One-shot aggregation: ``concat(x, f1(x), f2(f1(x)), ...)`` -> 1x1 conv [-> attention] [+ x].

    Args:
        in_chs, mid_chs, out_chs: block input, width of the chained 3x3 convs, block output.
        layer_per_block: number of chained 3x3 convs.
        residual: identity shortcut (VoVNetV2); needs ``in_chs == out_chs``.
        depthwise: depthwise-separable 3x3 convs, after a 1x1 reduction to ``mid_chs`` when needed.
        attn: ``''``, ``'ese'`` (effective squeeze-excite) or ``'eca'``.
        drop_path: stochastic depth on the residual branch.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_per_block: int, residual: bool = False,
                 depthwise: bool = False, attn: str = "", norm_layer: Callable = BatchNorm2d,
                 act_layer: Callable | None = nn.ReLU, drop_path: nn.Module | None = None):
        super().__init__()
        if residual and in_chs != out_chs:
            raise ValueError(f"an identity shortcut needs in_chs == out_chs, got {in_chs} and {out_chs}")
        self.residual = residual
        conv_kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.conv_reduction = None
        if depthwise and in_chs != mid_chs:
            # the depthwise chain keeps its width, so reduce to mid_chs first (timm/CenterMask VoVNet-DW)
            self.conv_reduction = ConvNormAct(in_chs, mid_chs, 1, **conv_kw)
        mid_convs = []
        next_in = mid_chs if depthwise else in_chs
        for _ in range(layer_per_block):
            if depthwise:
                mid_convs.append(SeparableConvNormAct(mid_chs, mid_chs, 3, **conv_kw))
            else:
                mid_convs.append(ConvNormAct(next_in, mid_chs, 3, **conv_kw))
            next_in = mid_chs
        self.conv_mid = nn.Sequential(*mid_convs)
        # the aggregation sees the block input (before any reduction) and every chained output
        self.conv_concat = ConvNormAct(in_chs + layer_per_block * mid_chs, out_chs, 1, **conv_kw)
        self.attn = _ATTN_LAYERS[attn](out_chs) if attn else None
        # Stochastic depth only where there is a shortcut to fall back on. (timm also applies it to the
        # non-residual blocks, where dropping zeroes the sample's whole feature map; outputs in eval mode
        # are the same either way.)
        self.drop_path = drop_path if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        outputs = [x]
        if self.conv_reduction is not None:
            x = self.conv_reduction(x)
        for conv in self.conv_mid:
            x = conv(x)
            outputs.append(x)
        x = self.conv_concat(torch.cat(outputs, dim=1))  # (B, in + L * mid, H, W) -> (B, out, H, W)
        if self.attn is not None:
            x = self.attn(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.residual:
            x = x + shortcut
        return x


class OsaStage(nn.Module):
    """Optional 3x3/2 max-pool, then ``depth`` OSA blocks; attention on the last block only (as in CenterMask)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, depth: int, layer_per_block: int,
                 downsample: bool = True, residual: bool = True, depthwise: bool = False, attn: str = "ese",
                 norm_layer: Callable = BatchNorm2d, act_layer: Callable | None = nn.ReLU,
                 drop_path_rates: list[float] | None = None):
        super().__init__()
        self.grad_checkpointing = False
        # ceil_mode: odd maps keep their last row/column (a 7x7 map pools to 4x4, not 3x3)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True) if downsample else None
        drop_path_rates = drop_path_rates or [0.0] * depth
        blocks = []
        for i in range(depth):
            blocks.append(OsaBlock(
                in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_per_block,
                residual=residual and i > 0,  # the first block changes the channels: no identity
                depthwise=depthwise, attn=attn if i == depth - 1 else "",
                norm_layer=norm_layer, act_layer=act_layer,
                drop_path=DropPath(drop_path_rates[i]) if drop_path_rates[i] > 0 else None,
            ))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for blk in self.blocks:
                x = checkpoint(blk, x, use_reentrant=False)
            return x
        return self.blocks(x)


# ----------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class VoVNetConfig:
    """One VoVNet architecture: the stem and the four OSA stages."""

    stem_chs: tuple[int, int, int]  # the three 3x3 stem convs (strides 2, 1, 2)
    stage_conv_chs: tuple[int, int, int, int]  # width of the chained 3x3 convs in each stage
    stage_out_chs: tuple[int, int, int, int]  # channels after each stage's 1x1 aggregation
    block_per_stage: tuple[int, int, int, int]  # OSA blocks per stage
    layer_per_block: int  # chained 3x3 convs per block
    residual: bool  # identity mapping (v2)
    depthwise: bool  # depthwise-separable convs (v2 "-DW")
    attn: str  # '' (v1), 'ese' (v2), 'eca'
    norm: str = "batchnorm"  # 'batchnorm' or 'evonorm_s0' (norm and activation in one layer)


# -------------------------------------------------------------------------------------------- model
class VoVNet(Backbone):
    """VoVNet v1/v2 (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`VoVNetConfig`).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: stochastic depth of the last block; rises linearly from 0 over the blocks (as timm).
        stem_stride: 4 (the stem's last conv has stride 2, no pool before stage 1) or 2 (stage 1 pools).
        output_stride: 32 only; VoVNet has no dilated variant.
        act_layer, norm_layer: override the activation / norm (by name or callable).
    """

    def __init__(
        self,
        cfg: VoVNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stem_stride: int = 4,
        act_layer: str | Callable | None = None,
        norm_layer: str | Callable | None = None,
    ):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"VoVNet supports output_stride=32 only (no dilated stages), not {output_stride}")
        if stem_stride not in (2, 4):
            raise ConfigError(f"stem_stride must be 2 or 4, not {stem_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        if cfg.norm == "evonorm_s0" and norm_layer is None:
            # EvoNorm-S0 is norm and activation in one: no separate activation after it
            norm_layer, act_layer = EvoNorm2dS0, None
        else:
            norm_layer = get_norm_layer(norm_layer or cfg.norm)
            act_layer = get_act_layer(act_layer or "relu")
        conv_kw = dict(norm_layer=norm_layer, act_layer=act_layer)

        # stem: (B, in_chans, H, W) -> (B, stem_chs[2], H/stem_stride, W/stem_stride)
        mid_conv = partial(SeparableConvNormAct if cfg.depthwise else ConvNormAct, kernel_size=3, **conv_kw)
        self.stem = nn.Sequential(
            ConvNormAct(in_chans, cfg.stem_chs[0], 3, stride=2, **conv_kw),
            mid_conv(cfg.stem_chs[0], cfg.stem_chs[1], stride=1),
            mid_conv(cfg.stem_chs[1], cfg.stem_chs[2], stride=stem_stride // 2),
        )

        # OSA stages; the drop-path rate rises linearly from 0 (first block) to drop_path_rate (last)
        total = sum(cfg.block_per_stage)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        # timm's level 0: the stride-2 stem output (the second stem conv, or the third at stem_stride 2)
        stem_level = FeatureStage(cfg.stem_chs[1] if stem_stride == 4 else cfg.stem_chs[2], 2,
                                  f"stem.{1 if stem_stride == 4 else 2}")
        in_chs, reduction, stages, info = cfg.stem_chs[-1], stem_stride, [], [stem_level]
        for i, (mid, out, depth) in enumerate(zip(cfg.stage_conv_chs, cfg.stage_out_chs, cfg.block_per_stage)):
            downsample = stem_stride == 2 or i > 0
            reduction *= 2 if downsample else 1
            first = sum(cfg.block_per_stage[:i])
            stages.append(OsaStage(in_chs, mid, out, depth, cfg.layer_per_block, downsample=downsample,
                                   residual=cfg.residual, depthwise=cfg.depthwise, attn=cfg.attn,
                                   drop_path_rates=rates[first:first + depth], **conv_kw))
            info.append(FeatureStage(out, reduction, f"stages.{i}"))
            in_chs = out
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        # head
        self.num_features = in_chs
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.default_cfg = default_cfg(first_conv="stem.0.conv", classifier="head.fc", interpolation="bicubic")
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        for stage in self.stages:  # the stages checkpoint their blocks, so features_only honours it too
            stage.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, 3, H, W) -> (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------- variants
_STEM, _STEM_DW = (64, 64, 128), (64, 64, 64)
_MID, _OUT = (128, 160, 192, 224), (256, 512, 768, 1024)  # the standard widths
_SLIM_MID, _SLIM_OUT = (64, 80, 96, 112), (112, 256, 384, 512)  # the "slim" widths of v2

# name -> architecture. Every name that timm registers is checked against timm (strict state-dict load,
# equal outputs, equal parameter count) in tests/test_vovnet.py; the two that timm does not register
# against timm's VovNet class built from the same row.
VARIANTS: dict[str, VoVNetConfig] = {
    # VoVNetConfig(stem, 3x3 widths, stage outputs, blocks per stage, layers per block, residual, depthwise, attn)
    # VoVNet v1 (Lee et al. 2019)
    "vovnet27_slim": VoVNetConfig(_STEM, (64, 80, 96, 112), (128, 256, 384, 512), (1, 1, 1, 1), 5, False, False, ""),
    "vovnet39a": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 2, 2), 5, False, False, ""),
    "vovnet57a": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 4, 3), 5, False, False, ""),
    # VoVNet v2 (CenterMask): identity mapping + effective SE; "dw" = depthwise-separable convs
    "ese_vovnet19b_slim_dw": VoVNetConfig(_STEM_DW, _SLIM_MID, _SLIM_OUT, (1, 1, 1, 1), 3, True, True, "ese"),
    "ese_vovnet19b_dw": VoVNetConfig(_STEM_DW, _MID, _OUT, (1, 1, 1, 1), 3, True, True, "ese"),
    "ese_vovnet19b_slim": VoVNetConfig(_STEM, _SLIM_MID, _SLIM_OUT, (1, 1, 1, 1), 3, True, False, "ese"),
    "ese_vovnet19b": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 1, 1), 3, True, False, "ese"),
    "ese_vovnet39b": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 2, 2), 5, True, False, "ese"),
    "ese_vovnet57b": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 4, 3), 5, True, False, "ese"),
    "ese_vovnet99b": VoVNetConfig(_STEM, _MID, _OUT, (1, 3, 9, 3), 5, True, False, "ese"),
    # timm's experiments: ECA instead of eSE; EvoNorm-S0 instead of BN + ReLU
    "eca_vovnet39b": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 2, 2), 5, True, False, "eca"),
    "ese_vovnet39b_evos": VoVNetConfig(_STEM, _MID, _OUT, (1, 1, 2, 2), 5, True, False, "ese", norm="evonorm_s0"),
}


# the preprocessing of timm's trained weights where it differs from the default (timm's pretrained_cfg)
_TRAINED_288 = dict(test_input_size=(3, 288, 288), test_crop_pct=0.95)
PREPROCESSING: dict[str, dict[str, Any]] = {
    "ese_vovnet19b_dw": _TRAINED_288,
    "ese_vovnet39b": _TRAINED_288,
    "ese_vovnet57b": dict(input_size=(3, 256, 256), pool_size=(8, 8), test_input_size=(3, 320, 320), crop_pct=0.95,
                          test_crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}


register_variants(VoVNet, VARIANTS, family="vovnet", preprocessing=PREPROCESSING)

"""The CSPNet family: Cross Stage Partial networks (CSPResNet(X)t, CSPDarkNet), DarkNet, and timm's CS3 nets.

Wang et al. 2020, "CSPNet: A New Backbone that can Enhance Learning Capability of CNN"; Redmon & Farhadi
2018, "YOLOv3" (DarkNet-53); the CS3 ("cross stage 3", YOLOv5-style) DarkNets are timm's.

A cross-stage-partial stage splits its input in two halves: one half runs through the stage's blocks, the
other bypasses them, and a 1x1 transition conv merges the concatenation. Gradients of the bypass half
do not pass through the blocks, so the stage keeps the accuracy of its dense twin with about half its
computation and less duplicated gradient information.

``csp`` stage: ``[3x3/2 down] -> 1x1 expand -> split -> (blocks -> 1x1 transition_b) || bypass -> concat
-> 1x1 transition``. ``cs3`` stage: the same without ``transition_b``. ``dark`` stage: ``3x3/2 down ->
blocks`` (plain DarkNet). Blocks: ResNe(X)t bottleneck (``bottle``) or DarkNet's ``1x1 -> 3x3`` residual
(``dark``).

Every variant is one row of ``VARIANTS`` at the bottom. Parameter names follow timm's ``cspnet.py``
(``stem.conv1.conv``, ``stages.0.conv_exp.bn``, ``stages.0.blocks.0.conv2.conv``, ``head.fc``), so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import ClassifierHead, ConvNormAct, DropPath, make_divisible
from ..layers.activations import create_act, get_act_layer
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants


# ------------------------------------------------------------------------------------------- blocks
class BottleneckBlock(nn.Module):
    """ResNe(X)t bottleneck: ``1x1 -> 3x3 (groups) -> 1x1 (linear)`` + identity, then the activation."""

    def __init__(self, in_chs: int, out_chs: int, dilation: int = 1, bottle_ratio: float = 0.25, groups: int = 1,
                 act_layer: Callable = nn.ReLU, drop_path: float = 0.0):
        super().__init__()
        mid_chs = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(mid_chs, mid_chs, 3, dilation=dilation, groups=groups, act_layer=act_layer)
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, act_layer=act_layer, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act3 = create_act(act_layer, inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.act3(self.drop_path(x) + shortcut)


class DarkBlock(nn.Module):
    """DarkNet residual: ``1x1 (reduce) -> 3x3`` + identity (no activation after the sum)."""

    def __init__(self, in_chs: int, out_chs: int, dilation: int = 1, bottle_ratio: float = 0.5, groups: int = 1,
                 act_layer: Callable = nn.ReLU, drop_path: float = 0.0):
        super().__init__()
        mid_chs = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(mid_chs, out_chs, 3, dilation=dilation, groups=groups, act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.conv2(self.conv1(x))) + x


BLOCKS = {"bottle": BottleneckBlock, "dark": DarkBlock}


# ----------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class CspStageCfg:
    """One stage. Widths: ``expand_ratio * out_chs`` after the expansion (split in halves), blocks output
    ``block_ratio * out_chs`` and are ``bottle_ratio`` of that wide inside."""

    depth: int  # blocks
    out_chs: int
    stride: int = 2
    groups: int = 1  # of the 3x3 convs (ResNeXt)
    block_ratio: float = 1.0
    bottle_ratio: float = 1.0
    expand_ratio: float = 1.0
    avg_down: bool = False  # downsample by 2x2 average pool + 1x1 conv instead of a strided 3x3 conv
    cross_linear: bool = False  # no activation after the expansion conv
    down_growth: bool = False  # the 3x3/2 down conv already outputs out_chs (CSPDarkNet)
    stage_type: str = "csp"  # 'csp', 'cs3' or 'dark'
    block_type: str = "bottle"  # 'bottle' or 'dark'


@dataclass(frozen=True)
class CspNetConfig:
    """Stem (convs, then an optional 3x3/2 max pool) and stages."""

    stem_chs: tuple[int, ...]  # one conv per entry; the first strides (and the last if stem_stride is 4, no pool)
    stem_kernel: int
    stem_stride: int  # 1, 2 or 4
    stem_pool: bool  # 3x3/2 max pool at the end of the stem
    stages: tuple[CspStageCfg, ...]
    act: str = "leaky_relu"
    stem_padding: int | None = None  # None: 'same'-style (k - 1) // 2; the focus stem's 6x6/2 conv uses 2


class CrossStage(nn.Module):
    """A CSP stage (``csp``: with ``conv_transition_b``) or a CS3 stage (``cs3``: without)."""

    def __init__(self, in_chs: int, cfg: CspStageCfg, stride: int, dilation: int, first_dilation: int,
                 act_layer: Callable, block_dpr: list[float]):
        super().__init__()
        conv_kw = dict(act_layer=act_layer)
        self.expand_chs = exp_chs = int(round(cfg.out_chs * cfg.expand_ratio))
        block_out_chs = int(round(cfg.out_chs * cfg.block_ratio))
        if stride != 1 or first_dilation != dilation:
            self.conv_down = _down_conv(in_chs, cfg, stride, first_dilation, act_layer)
            prev_chs = cfg.out_chs if cfg.down_growth else in_chs
        else:  # (timm keeps an identity placeholder in csp stages; it has no parameters)
            self.conv_down, prev_chs = None, in_chs
        self.conv_exp = ConvNormAct(prev_chs, exp_chs, 1, apply_act=not cfg.cross_linear, **conv_kw)
        prev_chs = exp_chs // 2  # (B, exp_chs, H, W) is split in halves: blocks and bypass
        block_fn = BLOCKS[cfg.block_type]
        self.blocks = nn.Sequential()
        for i in range(cfg.depth):
            self.blocks.add_module(str(i), block_fn(prev_chs, block_out_chs, dilation=dilation,
                                                    bottle_ratio=cfg.bottle_ratio, groups=cfg.groups,
                                                    act_layer=act_layer, drop_path=block_dpr[i]))
            prev_chs = block_out_chs
        # (cs3 has none; an identity, without parameters, keeps TorchScript's types simple)
        self.conv_transition_b = ConvNormAct(prev_chs, exp_chs // 2, 1, **conv_kw) \
            if cfg.stage_type == "csp" else nn.Identity()
        self.conv_transition = ConvNormAct(exp_chs, cfg.out_chs, 1, **conv_kw)
        self.cs3 = cfg.stage_type == "cs3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_down is not None:
            x = self.conv_down(x)
        x = self.conv_exp(x)  # (B, exp_chs, H, W)
        if self.cs3:  # CS3: the first half runs through the blocks, the second bypasses them
            x1, x2 = x.split(self.expand_chs // 2, dim=1)
            return self.conv_transition(torch.cat([self.blocks(x1), x2], dim=1))
        xs, xb = x.split(self.expand_chs // 2, dim=1)  # CSP: the second half runs through the blocks
        xb = self.conv_transition_b(self.blocks(xb)).contiguous()
        return self.conv_transition(torch.cat([xs, xb], dim=1))  # (B, out_chs, H, W)


class DarkStage(nn.Module):
    """DarkNet stage: ``3x3/2 down conv -> blocks``."""

    def __init__(self, in_chs: int, cfg: CspStageCfg, stride: int, dilation: int, first_dilation: int,
                 act_layer: Callable, block_dpr: list[float]):
        super().__init__()
        self.conv_down = _down_conv(in_chs, cfg, stride, first_dilation, act_layer)
        prev_chs, block_out_chs = cfg.out_chs, int(round(cfg.out_chs * cfg.block_ratio))
        block_fn = BLOCKS[cfg.block_type]
        self.blocks = nn.Sequential()
        for i in range(cfg.depth):
            self.blocks.add_module(str(i), block_fn(prev_chs, block_out_chs, dilation=dilation,
                                                    bottle_ratio=cfg.bottle_ratio, groups=cfg.groups,
                                                    act_layer=act_layer, drop_path=block_dpr[i]))
            prev_chs = block_out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv_down(x))


def _down_conv(in_chs: int, cfg: CspStageCfg, stride: int, first_dilation: int, act_layer: Callable) -> nn.Module:
    """The stage's downsampling: a strided 3x3 conv, or 2x2 average pool + 1x1 conv (``avg_down``)."""
    if cfg.avg_down:
        return nn.Sequential(nn.AvgPool2d(2) if stride == 2 else nn.Identity(),
                             ConvNormAct(in_chs, cfg.out_chs, 1, groups=cfg.groups, act_layer=act_layer))
    down_chs = cfg.out_chs if cfg.down_growth or cfg.stage_type == "dark" else in_chs
    return ConvNormAct(in_chs, down_chs, 3, stride=stride, dilation=first_dilation, groups=cfg.groups,
                       act_layer=act_layer)


# -------------------------------------------------------------------------------------------- model
class CspNet(Backbone):
    """CSPNet, DarkNet and CS3 nets (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`CspNetConfig`).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 over all blocks (as timm).
        output_stride: 32, or 16/8 by dilating the last stage(s).
        act_layer: override the activation (name or class).
        zero_init_last: zero the last norm of every residual block (blocks start as identities).
    """

    def __init__(
        self,
        cfg: CspNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: str | Callable | None = None,
        zero_init_last: bool = True,
    ):
        super().__init__()
        if cfg.stem_stride not in (1, 2, 4):
            raise ConfigError(f"stem_stride must be 1, 2 or 4, not {cfg.stem_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        act_layer = get_act_layer(act_layer or cfg.act)

        # stem: strided first conv; with stem_stride 4 and no pool, the last conv strides too.
        # Its feature level is the output of the last conv before the stem (or first stage) downsamples again.
        self.stem = nn.Sequential()
        info: list[FeatureStage] = []
        prev_chs, reduction, prev_feat = in_chans, 1, None
        last = len(cfg.stem_chs) - 1
        for i, chs in enumerate(cfg.stem_chs):
            stride = 2 if (i == 0 and cfg.stem_stride > 1) or (i == last and cfg.stem_stride > 2 and
                                                                not cfg.stem_pool) else 1
            if stride > 1 and prev_feat is not None:
                info.append(prev_feat)
            self.stem.add_module(f"conv{i + 1}", ConvNormAct(
                prev_chs, chs, cfg.stem_kernel, stride=stride, padding=cfg.stem_padding if i == 0 else None,
                act_layer=act_layer))
            prev_chs, reduction = chs, reduction * stride
            prev_feat = FeatureStage(chs, reduction, f"stem.conv{i + 1}")
        if cfg.stem_pool:
            info.append(prev_feat)
            self.stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
            reduction *= 2
            prev_feat = FeatureStage(prev_chs, reduction, "stem.pool")

        # stages; a level is recorded before each stage that strides (its input), and after the last
        total = sum(s.depth for s in cfg.stages)
        rates = torch.linspace(0, drop_path_rate, total, device="cpu").tolist()  # cpu: also under meta
        dilation, stages, first_block = 1, [], 0
        for idx, scfg in enumerate(cfg.stages):
            stride = scfg.stride
            if stride != 1:
                info.append(prev_feat)
            if reduction >= output_stride and stride > 1:  # keep the resolution: dilate instead
                dilation *= stride
                stride = 1
            reduction *= stride
            first_dilation = 1 if dilation in (1, 2) else 2
            stage_fn = DarkStage if scfg.stage_type == "dark" else CrossStage
            stages.append(stage_fn(prev_chs, scfg, stride, dilation, first_dilation, act_layer,
                                   rates[first_block:first_block + scfg.depth]))
            first_block += scfg.depth
            prev_chs = scfg.out_chs
            prev_feat = FeatureStage(prev_chs, reduction, f"stages.{idx}")
        info.append(prev_feat)
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        # head
        self.num_features = prev_chs
        self.head = ClassifierHead(prev_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self.default_cfg = default_cfg(input_size=(3, 256, 256), crop_pct=0.887, first_conv="stem.conv1.conv",
                                       classifier="head.fc")
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
            elif zero_init_last and hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, 3, H, W) -> (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------- variants
def _stages(depths, out_chs, first: dict[str, Any] | None = None, **rest: Any) -> tuple[CspStageCfg, ...]:
    """Stages sharing ``rest``; ``first`` overrides the first stage (CSPDarkNet's wider first stage)."""
    return tuple(CspStageCfg(d, c, **{**rest, **(first or {} if i == 0 else {})})
                 for i, (d, c) in enumerate(zip(depths, out_chs)))


_RES_STEM = dict(stem_chs=(64,), stem_kernel=7, stem_stride=4, stem_pool=True)  # ResNet's 7x7/2 + max pool
_RES_D_STEM = dict(stem_chs=(32, 32, 64), stem_kernel=3, stem_stride=4, stem_pool=True)
_DARK_STEM = dict(stem_chs=(32,), stem_kernel=3, stem_stride=1, stem_pool=False)
_CSPRES = dict(first=dict(stride=1), cross_linear=True)  # stage 1 does not stride (the stem pooled)
_DARK = dict(stage_type="dark", block_type="dark", bottle_ratio=0.5)
_D53 = ((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024))  # DarkNet-53's blocks and widths per stage


def _cs3(width: float = 1.0, depth: float = 1.0, focus: bool = False) -> CspNetConfig:
    """timm's CS3 DarkNets (YOLOv5-style): a width and depth multiplier over one base design."""
    if focus:  # one 6x6/2 conv (YOLOv5's replacement of the space-to-depth "focus" layer)
        stem = dict(stem_chs=(make_divisible(64 * width),), stem_kernel=6, stem_stride=2, stem_padding=2)
    else:
        stem = dict(stem_chs=tuple(make_divisible(c * width) for c in (32, 64)), stem_kernel=3, stem_stride=2)
    return CspNetConfig(**stem, stem_pool=False, act="silu", stages=_stages(
        [int(d * depth) for d in (3, 6, 9, 3)], [make_divisible(c * width) for c in (128, 256, 512, 1024)],
        block_ratio=0.5, stage_type="cs3", block_type="dark"))


# name -> architecture; every name is checked against timm in tests/test_cspnet.py
VARIANTS: dict[str, CspNetConfig] = {
    # CSPResNet(X)t (Wang et al.): _stages(blocks, widths, ...)
    "cspresnet50": CspNetConfig(**_RES_STEM, stages=_stages((3, 3, 5, 2), (128, 256, 512, 1024), expand_ratio=2.0,
                                                            bottle_ratio=0.5, **_CSPRES)),
    "cspresnet50d": CspNetConfig(**_RES_D_STEM, stages=_stages((3, 3, 5, 2), (128, 256, 512, 1024),
                                                               expand_ratio=2.0, bottle_ratio=0.5, **_CSPRES)),
    "cspresnet50w": CspNetConfig(**_RES_D_STEM, stages=_stages((3, 3, 5, 2), (256, 512, 1024, 2048),
                                                               bottle_ratio=0.25, block_ratio=0.5, **_CSPRES)),
    "cspresnext50": CspNetConfig(**_RES_STEM, stages=_stages((3, 3, 5, 2), (256, 512, 1024, 2048), groups=32,
                                                             block_ratio=0.5, **_CSPRES)),
    # CSPDarkNet-53 (the YOLOv4 backbone): the first stage is twice as wide inside
    "cspdarknet53": CspNetConfig(**_DARK_STEM, stages=_stages(
        *_D53, first=dict(expand_ratio=2.0, bottle_ratio=0.5, block_ratio=1.0), block_ratio=0.5, down_growth=True,
        block_type="dark")),
    # DarkNet (Redmon & Farhadi): plain residual stages
    "darknet17": CspNetConfig(**_DARK_STEM, stages=_stages((1, 1, 1, 1, 1), _D53[1], **_DARK)),
    "darknet21": CspNetConfig(**_DARK_STEM, stages=_stages((1, 1, 1, 2, 2), _D53[1], **_DARK)),
    "darknet53": CspNetConfig(**_DARK_STEM, stages=_stages(*_D53, **_DARK)),
    "darknetaa53": CspNetConfig(**_DARK_STEM, stages=_stages(*_D53, avg_down=True, **_DARK)),
    # CS3 DarkNets (timm): s/m/l/x = width 0.5/0.75/1/1.25, depth 0.5/0.67/1/1.33
    "cs3darknet_s": _cs3(0.5, 0.5), "cs3darknet_m": _cs3(0.75, 0.67), "cs3darknet_l": _cs3(),
    "cs3darknet_x": _cs3(1.25, 1.33),
    "cs3darknet_focus_s": _cs3(0.5, 0.5, focus=True), "cs3darknet_focus_m": _cs3(0.75, 0.67, focus=True),
    "cs3darknet_focus_l": _cs3(focus=True), "cs3darknet_focus_x": _cs3(1.25, 1.33, focus=True),
}

# the preprocessing of timm's trained weights where it differs from the default (timm's pretrained_cfg)
_BICUBIC = dict(interpolation="bicubic")
_C2NS = dict(interpolation="bicubic", test_input_size=(3, 288, 288), test_crop_pct=0.95)
PREPROCESSING: dict[str, dict[str, Any]] = {
    "darknet53": dict(interpolation="bicubic", test_input_size=(3, 288, 288), test_crop_pct=1.0),
    "darknetaa53": dict(test_input_size=(3, 288, 288), test_crop_pct=1.0),
    "cs3darknet_s": _BICUBIC, "cs3darknet_m": _C2NS, "cs3darknet_l": _C2NS,
    "cs3darknet_x": dict(interpolation="bicubic", crop_pct=0.95, test_input_size=(3, 288, 288), test_crop_pct=1.0),
    "cs3darknet_focus_s": dict(interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                               test_input_size=(3, 320, 320), test_crop_pct=1.0),
    "cs3darknet_focus_m": _C2NS, "cs3darknet_focus_l": _C2NS, "cs3darknet_focus_x": _BICUBIC,
}


register_variants(CspNet, VARIANTS, family="cspnet", preprocessing=PREPROCESSING)

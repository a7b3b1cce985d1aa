"""FFNet: "Simple and Efficient Architectures for Semantic Segmentation" (Mehta et al., CVPRW 2022).

A plain ResNet-like backbone, a small FPN-like "up-head" and a light segmentation head that fuses all four
scales at 1/4 of the input. Names read ``ffnet{depth}{family}_{d?}{stem}{up}{seg}[_mobile][_pre_down]``:

* family: none = vanilla ResNet widths (stem A), ``S`` = slim (stem B, widths 64/128/192/320),
  ``N`` / ``NS`` = narrow 3-stage ResNets whose stem output is the 1/4 branch (stem C);
* ``d``: the first stage strides too (output stride 8: a 1024x2048 image gives 128x256 logits);
* the letter triple: stem - up-head - segmentation head (``X`` = the ImageNet classification form);
* ``_mobile``: nearest upsampling in the head (bilinear, ``align_corners=True`` otherwise);
* ``_pre_down``: a fixed 5x5 Gaussian (sigma 0.7, stride 2) first, so models trained at 512x1024 take 1024x2048.

Module names follow the official code (Qualcomm-AI-research/FFNet): ``backbone_model.*``, ``head.layers.N.*``
and ``smoothing.weight``, so its state dicts load with ``strict=True`` as they are (see ``_convert_checkpoint``
for the two cases the official code loads non-strictly). Parameter counts equal the official ones (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ._base import Backbone, default_cfg, stage_info
from ._registry import register_variants

BN_MOMENTUM = 0.1
GPU_UPSAMPLE = {"mode": "bilinear", "align_corners": True}
MOBILE_UPSAMPLE = {"mode": "nearest"}


# ------------------------------------------------------------------------------------------ blocks
class ConvBNReLU(nn.Module):
    """conv (no bias) + BN + ReLU, as ``layers.{0,1,2}`` (the official module's parameter names)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, act: bool = True):
        super().__init__()
        layers = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
                  nn.BatchNorm2d(out_chs, momentum=BN_MOMENTUM)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    if in_chs == out_chs and stride == 1:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs, momentum=BN_MOMENTUM))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1):
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (torchvision's v1.5)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


@dataclass(frozen=True)
class BackboneSpec:
    """One FFNet backbone: stem kind, block type, blocks per stage and stage widths (planes).

    Stem ``C`` (3-stage narrow ResNets) has one width more than stages: its own output width, the 1/4 branch.
    """

    stem: str  # 'A': 7x7 + max-pool; 'B': two 3x3 s2; 'C': 3x3 s2, 3x3 s2, 3x3 s1
    block: str  # 'basic' | 'bottleneck'
    depths: tuple[int, ...]
    widths: tuple[int, ...]


_WIDE, _SLIM, _NARROW, _NARROW_SLIM = (64, 128, 256, 512), (64, 128, 192, 320), (64, 96, 160, 320), (64, 64, 128, 256)
BACKBONES: dict[str, BackboneSpec] = {
    # stem A: vanilla ResNet
    "18": BackboneSpec("A", "basic", (2, 2, 2, 2), _WIDE),
    "34": BackboneSpec("A", "basic", (3, 4, 6, 3), _WIDE),
    "50": BackboneSpec("A", "bottleneck", (3, 4, 6, 3), _WIDE),
    "101": BackboneSpec("A", "bottleneck", (3, 4, 23, 3), _WIDE),
    "56": BackboneSpec("A", "basic", (4, 8, 12, 3), _WIDE),
    "86": BackboneSpec("A", "basic", (8, 12, 16, 6), _WIDE),
    "134": BackboneSpec("A", "basic", (8, 18, 28, 12), _WIDE),
    "150": BackboneSpec("A", "basic", (16, 18, 28, 12), _WIDE),
    # stem B: slim
    "40S": BackboneSpec("B", "basic", (4, 5, 6, 4), _SLIM),
    "54S": BackboneSpec("B", "basic", (5, 8, 8, 5), _SLIM),
    "78S": BackboneSpec("B", "basic", (6, 12, 12, 8), _SLIM),
    "86S": BackboneSpec("B", "basic", (8, 12, 16, 6), _SLIM),
    "150S": BackboneSpec("B", "basic", (16, 18, 28, 12), _SLIM),
    # stem C: narrow, 3 stages
    "46N": BackboneSpec("C", "basic", (6, 8, 8), _NARROW),
    "74N": BackboneSpec("C", "basic", (8, 12, 16), _NARROW),
    "122N": BackboneSpec("C", "basic", (16, 24, 20), _NARROW),
    "46NS": BackboneSpec("C", "basic", (6, 8, 8), _NARROW_SLIM),
    "74NS": BackboneSpec("C", "basic", (8, 12, 16), _NARROW_SLIM),
    "122NS": BackboneSpec("C", "basic", (16, 24, 20), _NARROW_SLIM),
}


class FFNetBackbone(nn.Module):
    """ResNet (stem A), ResNetS (stem B) or ResNetNarrow (stem C); returns the maps at strides 4, 8, 16, 32.

    ``first_stride=2`` is the ``_D`` form: the first 4-stage layer strides too (strides 8..64).
    """

    def __init__(self, spec: BackboneSpec, in_chans: int = 3, first_stride: int = 1):
        super().__init__()
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[spec.block]
        relu = partial(nn.ReLU, inplace=True)
        if spec.stem == "A":
            self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
            self.relu = relu()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            stem0 = 32 if spec.stem == "B" else 64
            self.conv0 = nn.Conv2d(in_chans, stem0, 3, 2, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(stem0, momentum=BN_MOMENTUM)
            self.relu0 = relu()
            self.conv1 = nn.Conv2d(stem0, 64, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
            self.relu1 = relu()
        if spec.stem == "C":
            self.conv2 = nn.Conv2d(64, spec.widths[0], 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(spec.widths[0], momentum=BN_MOMENTUM)
            self.relu2 = relu()
            in_chs, planes, strides = spec.widths[0], spec.widths[1:], (2, 2, 2)
        else:
            in_chs, planes, strides = 64, spec.widths, (first_stride, 2, 2, 2)
        self.stage_names = [f"layer{i + 1}" for i in range(len(planes))]
        for name, n, width, stride in zip(self.stage_names, spec.depths, planes, strides):
            blocks = [block(in_chs, width, stride)]
            in_chs = width * block.expansion
            blocks += [block(in_chs, width, 1) for _ in range(n - 1)]
            self.add_module(name, nn.Sequential(*blocks))
        self.spec = spec
        self.first_conv = "conv1" if spec.stem == "A" else "conv0"
        expansion = block.expansion
        self.out_channels = [spec.widths[0]] + [w * expansion for w in planes] if spec.stem == "C" else \
            [w * expansion for w in planes]
        # the module whose output is each branch (stem C: its last ReLU is the 1/4 branch)
        self.branch_modules = (["relu2"] if spec.stem == "C" else []) + self.stage_names

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.spec.stem == "A":
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        else:
            x = self.relu1(self.bn1(self.conv1(self.relu0(self.bn0(self.conv0(x))))))
        feats = []
        if self.spec.stem == "C":
            x = self.relu2(self.bn2(self.conv2(x)))
            feats.append(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats.append(x)
        return feats  # (feat4, feat8, feat16, feat32)


# ------------------------------------------------------------------------------------------ up-head
# base (adapter) channels and per-scale output channels of the three up-heads
UP_HEADS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "A": ((64, 128, 256, 512), (128, 128, 128, 128)),
    "B": ((64, 128, 128, 256), (96, 96, 64, 32)),
    "C": ((128, 128, 128, 128), (128, 16, 16, 16)),
}
# segmentation heads: (mid channels, kernel of the classifier conv)
SEG_HEADS: dict[str, tuple[int, int]] = {"A": (512, 1), "B": (256, 3), "C": (128, 1)}


class AdapterConv(nn.Module):
    """A 1x1 ConvBNReLU per branch: backbone channels -> the up-head's base channels."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]):
        super().__init__()
        self.adapter_conv = nn.ModuleList(ConvBNReLU(i, o, 1) for i, o in zip(in_channels, out_channels))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.adapter_conv, feats)]


class UpBranch(nn.Module):
    """FPN-like top-down path: each scale gets the coarser one upsampled and added, then one 3x3 conv."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], upsample: dict[str, Any]):
        super().__init__()
        c, o = in_channels, out_channels
        self.fam_32_sm = ConvBNReLU(c[3], o[3], 3)
        self.fam_32_up = ConvBNReLU(c[3], c[2], 1)
        self.fam_16_sm = ConvBNReLU(c[2], o[2], 3)
        self.fam_16_up = ConvBNReLU(c[2], c[1], 1)
        self.fam_8_sm = ConvBNReLU(c[1], o[1], 3)
        self.fam_8_up = ConvBNReLU(c[1], c[0], 1)
        self.fam_4 = ConvBNReLU(c[0], o[0], 3)
        self.upsample = upsample
        self.out_channels = list(out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feat4, feat8, feat16, feat32 = feats
        up = partial(F.interpolate, **self.upsample)
        sm32 = self.fam_32_sm(feat32)
        x = up(self.fam_32_up(feat32), size=feat16.shape[-2:]) + feat16
        sm16 = self.fam_16_sm(x)
        x = up(self.fam_16_up(x), size=feat8.shape[-2:]) + feat8
        sm8 = self.fam_8_sm(x)
        sm4 = self.fam_4(up(self.fam_8_up(x), size=feat4.shape[-2:]) + feat4)
        return [sm4, sm8, sm16, sm32]


class UpsampleCat(nn.Module):
    """Upsample every scale to the finest one and concatenate: (B, sum(C), H/4, W/4)."""

    def __init__(self, upsample: dict[str, Any]):
        super().__init__()
        self.upsample = upsample

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, **self.upsample) for f in feats[1:]], dim=1)


class SegmentationHead(nn.Module):
    """conv3x3 (with bias) + BN + ReLU + classifier conv (1x1 for heads A/C, 3x3 for head B)."""

    def __init__(self, in_chs: int, mid_chs: int, num_classes: int, kernel_size: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.last_layer = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 3, 1, 1),
            nn.BatchNorm2d(mid_chs, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            self._classifier(mid_chs, num_classes),
        )

    def _classifier(self, mid_chs: int, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Conv2d(mid_chs, num_classes, self.kernel_size, 1, self.kernel_size // 2)

    def reset(self, num_classes: int) -> None:
        self.last_layer[3] = self._classifier(self.last_layer[0].out_channels, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.last_layer[2](self.last_layer[1](self.last_layer[0](x)))
        return x if pre_logits else self.last_layer[3](x)


class SimpleBottleneckBlock(nn.Module):
    """HRNet's bottleneck (bias-free convs, expansion 4) that widens each scale in the classification head."""

    def __init__(self, in_chs: int, planes: int):
        super().__init__()
        out_chs = planes * 4
        self.downsample = _shortcut(in_chs, out_chs, 1)
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ClassificationHead(nn.Module):
    """HRNet-style head over the up-head's four scales: widen each, sum coarse-ward with strided convs,
    1x1 to 2048, average-pool, linear. (The official forward reads an undefined attribute when dropout is set,
    and squeezes away a batch of one; this one applies the dropout and keeps the batch dimension.)
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, drop_rate: float = 0.0,
                 head_channels: Sequence[int] = (128, 256, 512, 1024)):
        super().__init__()
        self.expansion_layers = nn.ModuleList(
            SimpleBottleneckBlock(i, h // 4) for i, h in zip(in_channels, head_channels))
        self.downsampling_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, 2, 1), nn.BatchNorm2d(b, momentum=BN_MOMENTUM), nn.ReLU())
            for a, b in zip(head_channels[:-1], head_channels[1:]))
        self.final_layer = nn.Sequential(
            nn.Conv2d(head_channels[-1], 2048, 1), nn.BatchNorm2d(2048, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        self.drop_rate = drop_rate
        self.num_features = 2048
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.expansion_layers[0](feats[0])
        for expand, down, f in zip(self.expansion_layers[1:], self.downsampling_layers, feats[1:]):
            x = expand(f) + down(x)
        return self.final_layer(x)  # (B, 2048, H/32, W/32)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier(x)


class GaussianDownsample(nn.Module):
    """Fixed depthwise 5x5 Gaussian (sigma 0.7), stride 2, after reflect-padding H by 1 (``_pre_down``).

    The official kernel is ``scipy.ndimage.gaussian_filter`` of a centred 5x5 impulse: a 7-tap Gaussian
    (truncated at 4 sigma) whose tails fold back in at the borders (scipy's 'reflect' mode). Built here the
    same way, without scipy (tested against it).
    """

    def __init__(self, channels: int = 3, kernel_size: int = 5, sigma: float = 0.7):
        super().__init__()
        # plain Python floats: the kernel is a constant, also when the model is built on the meta device
        radius = int(4.0 * sigma + 0.5)
        taps = range(-radius, radius + 1)
        w = [math.exp(-0.5 * (t / sigma) ** 2) for t in taps]
        w = [v / sum(w) for v in w]
        centre = (kernel_size - 1) // 2
        g = [0.0] * kernel_size
        for i in range(kernel_size):  # output i reads input i + t; reflect that index into the kernel window
            for t, wt in zip(taps, w):
                p = i + t
                while not 0 <= p < kernel_size:  # 'reflect': (d c b a | a b c d | d c b a)
                    p = -p - 1 if p < 0 else 2 * kernel_size - p - 1
                if p == centre:
                    g[i] += wt
        kernel = torch.tensor([[a * b for b in g] for a in g], dtype=torch.float32)
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 1, 1), mode="reflect")
        return F.conv2d(x, self.weight, groups=self.channels, stride=2)


class FFNetHead(nn.Module):
    """Adapter convs, up-branch and either upsample-concat + segmentation head, or the classification head.

    Kept as one ``layers`` sequence so that parameter names are the official ``head.layers.N.*``.
    """

    def __init__(self, in_channels: Sequence[int], up: str, seg: str, num_classes: int, mobile: bool,
                 drop_rate: float = 0.0):
        super().__init__()
        base, out = UP_HEADS[up]
        upsample = MOBILE_UPSAMPLE if mobile else GPU_UPSAMPLE
        layers: list[nn.Module] = [AdapterConv(in_channels, base), UpBranch(base, out, upsample)]
        self.task = "classification" if seg == "X" else "segmentation"
        if seg == "X":
            layers.append(ClassificationHead(out, num_classes, drop_rate))
        else:
            mid, k = SEG_HEADS[seg]
            layers += [UpsampleCat(upsample), SegmentationHead(sum(out), mid, num_classes, k)]
        self.layers = nn.Sequential(*layers)

    @property
    def predictor(self) -> nn.Module:
        return self.layers[-1]

    def forward_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.layers[1](self.layers[0](feats))
        if self.task == "classification":
            return self.layers[2].forward_features(x)
        return self.layers[2](x)  # (B, sum of up-head channels, H/4, W/4)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.predictor(x, pre_logits=pre_logits)


# ------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class FFNetCfg:
    """A registered FFNet, parsed from its name."""

    backbone: str  # key of BACKBONES
    d: bool  # output stride 8 (first stage strides)
    up: str  # 'A' | 'B' | 'C'
    seg: str  # 'A' | 'B' | 'C' | 'X' (classification)
    mobile: bool  # nearest upsampling
    pre_down: bool  # Gaussian 2x downsampling of the input first

    @classmethod
    def from_name(cls, name: str) -> "FFNetCfg":
        import re

        m = re.fullmatch(r"ffnet(\d+(?:NS|N|S)?)_(d?)([ABC])([ABC])([ABCX])(_mobile)?(_pre_down)?", name)
        if not m or m.group(1) not in BACKBONES or BACKBONES[m.group(1)].stem != m.group(3):
            raise ConfigError(f"not an FFNet name: {name!r}")
        return cls(m.group(1), bool(m.group(2)), m.group(4), m.group(5), bool(m.group(6)), bool(m.group(7)))


class FFNet(Backbone):
    """FFNet for segmentation (logits at 1/4 of the input, 1/8 for ``d`` models) or ImageNet classification.

    Args:
        cfg: the architecture (``FFNetCfg.from_name('ffnet40S_BBB_mobile')``).
        num_classes: 19 (Cityscapes) for segmentation, 1000 for classification by default; 0 = no classifier.
        in_chans: input channels. drop_rate: dropout before the classifier (classification form only).
        drop_path_rate: accepted as 0 only (the recipes pass it to every model): FFNet has no stochastic depth.
    """

    def __init__(self, cfg: FFNetCfg, num_classes: int | None = None, in_chans: int = 3, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        segmentation = cfg.seg != "X"
        if drop_rate and segmentation:
            raise ConfigError("drop_rate applies to the classification FFNets only (the published segmentation "
                              "heads have no dropout)")
        if drop_path_rate:
            raise ConfigError("FFNet has no stochastic depth: drop_path_rate must be 0")
        if num_classes is None:
            num_classes = 19 if segmentation else 1000
        spec = BACKBONES[cfg.backbone]
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        if cfg.pre_down:  # registered first: it runs first (the feature plan follows registration order)
            self.smoothing = GaussianDownsample(in_chans)
        self.backbone_model = FFNetBackbone(spec, in_chans, first_stride=2 if cfg.d else 1)
        self.head = FFNetHead(self.backbone_model.out_channels, cfg.up, cfg.seg, num_classes, cfg.mobile, drop_rate)
        self.task = self.head.task
        if segmentation:
            self.num_features = SEG_HEADS[cfg.seg][0]
            classifier = "head.layers.3.last_layer.3"
        else:
            self.num_features = 2048
            classifier = "head.layers.2.classifier"
        self.head_hidden_size = self.num_features
        stride = (2 if cfg.d else 1) * (2 if cfg.pre_down else 1)
        self.feature_info = stage_info(
            self.backbone_model.out_channels, [r * stride for r in (4, 8, 16, 32)],
            [f"backbone_model.{m}" for m in self.backbone_model.branch_modules])
        # the official preprocessing: ImageNet mean/std on [0, 1] RGB; Cityscapes at 1024x2048 (512x1024 mobile)
        size = (3, 224, 224) if not segmentation else (3, 512, 1024) if cfg.mobile and not cfg.d and not cfg.pre_down \
            else (3, 1024, 2048)
        self.default_cfg = default_cfg(input_size=size, crop_pct=1.0 if segmentation else 0.875,
                                       first_conv=f"backbone_model.{self.backbone_model.first_conv}",
                                       classifier=classifier, task=self.task, num_classes=num_classes,
                                       output_stride=4 * stride if segmentation else 32)
        self.apply(_init_weights)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.predictor.reset(num_classes)
        if num_classes > 0:
            self.head.predictor.apply(_init_weights)

    def as_features(self, out_indices=None) -> "FFNet":
        super().as_features(out_indices)
        self.head = nn.Identity()  # the pyramid is the backbone's; the up-head is not run
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.pre_down:
            x = self.smoothing(x)
        return self.head.forward_features(self.backbone_model(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def _convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit the official checkpoints the official code loads non-strictly.

        * ``_mobile`` models load the weights of their ``_pre_down`` twin: its fixed Gaussian is dropped (and a
          ``_pre_down`` model given a checkpoint without it keeps its own).
        * an ImageNet (classification-form) checkpoint in a segmentation model, or the other way round, gives
          the backbone only; the head keeps its fresh initialisation (``pretrained_backbone_only`` in FFNet).
        """
        own = self.state_dict()
        state = dict(state)
        if "smoothing.weight" in state and "smoothing.weight" not in own:
            del state["smoothing.weight"]
        elif "smoothing.weight" in own and "smoothing.weight" not in state:
            state["smoothing.weight"] = own["smoothing.weight"]
        head_keys = [k for k in state if k.startswith("head.")]
        other_task = any(k.startswith("head.layers.2.") for k in head_keys) != (self.task == "classification")
        if head_keys and other_task:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
            state.update({k: v for k, v in own.items() if k.startswith("head.")})
        return state


def _init_weights(m: nn.Module) -> None:
    # the official initialiser (models/utils.py): small normal convs, unit BN, uniform linear
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, std=0.01)
        if m.bias is not None:
            nn.init.constant_(m.bias, 1e-4)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        bound = 1.0 / math.sqrt(m.weight.shape[0])
        nn.init.uniform_(m.weight, -bound, bound)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------ variants
# The models of the official README tables (GPU large, GPU small, mobile), the `_pre_down` forms of the mobile
# models trained at 512x1024, and the ImageNet classification forms. (`_train` variants are the same
# architectures with another initialisation and are not registered twice.)
_S_MOBILE = ("150S", "86S", "78S", "54S", "40S")
_NS = ("122NS", "74NS", "46NS")
SEGMENTATION = [
    # GPU large (1024x2048 -> 256x512)
    *(f"ffnet{b}_AAA" for b in ("101", "50", "150", "134", "86", "56", "34")),
    *(f"ffnet{b}_ABB" for b in ("150", "86", "56", "34")),
    "ffnet150S_BBB", "ffnet86S_BBB", "ffnet122N_CBB", "ffnet74N_CBB", "ffnet46N_CBB",
    # GPU small (1024x2048 -> 128x256)
    *(f"ffnet{b}_dAAA" for b in ("101", "50", "150", "134", "86", "56", "34", "18")),
    *(f"ffnet{b}_dAAC" for b in ("150", "86", "34", "18")),
    "ffnet150S_dBBB", "ffnet86S_dBBB",
    # mobile
    *(f"ffnet{b}_dBBB_mobile" for b in ("86S", "78S", "54S", "40S")),
    *(f"ffnet{b}_{h}_mobile{p}" for h in ("BBB", "BCC") for b in _S_MOBILE for p in ("", "_pre_down")),
    *(f"ffnet{b}_{h}_mobile{p}" for h in ("CBB", "CCC") for b in _NS for p in ("", "_pre_down")),
]
CLASSIFICATION = [
    *(f"ffnet{b}_AAX" for b in ("18", "34", "50", "56", "86", "101", "134", "150")),
    "ffnet86S_BBX", "ffnet150S_BBX", "ffnet46N_CBX", "ffnet74N_CBX", "ffnet122N_CBX",
    *(f"ffnet{b}_BBX_mobile" for b in _S_MOBILE), *(f"ffnet{b}_CBX_mobile" for b in _NS),
]

register_variants(FFNet, {name: FFNetCfg.from_name(name) for name in SEGMENTATION + CLASSIFICATION}, family="ffnet")

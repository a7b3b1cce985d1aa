"""The DenseNet family (DenseNet-BC): every layer sees the concatenation of all earlier layers' outputs.

Huang et al. 2017, "Densely Connected Convolutional Networks". Zhang 2019 (anti-aliased downsampling,
``densenetblur121d``).

Within a dense block, layer ``i`` reads ``concat(x, y_1, ..., y_{i-1})`` and adds ``growth_rate`` new
channels ``y_i``; the block outputs the concatenation of all of them. Each layer is a pre-activation
bottleneck ``BN-ReLU-1x1 conv (bn_size * k) -> BN-ReLU-3x3 conv (k)``. Between blocks a transition
``BN-ReLU-1x1 conv`` halves the channels (the "C" of DenseNet-BC) and a 2x2 average pool halves the size.

Every variant is one row of ``VARIANTS`` at the bottom. Parameter names follow torchvision and timm
(``features.denseblock1.denselayer1.norm1.weight``, ``features.transition1.conv.weight``, ``classifier``),
so checkpoints of both load with ``strict=True``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import BlurPool2d, create_classifier
from ..layers.norm_act import BatchNormAct2d
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants


# ------------------------------------------------------------------------------------------- blocks
class DenseLayer(nn.Module):
    """``concat(inputs) -> BN-ReLU -> 1x1 conv (bn_size * k) -> BN-ReLU -> 3x3 conv (k)``: k new channels."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int, act_layer: str | Callable = "relu",
                 proj_drop_rate: float = 0.0):
        super().__init__()
        mid_chs = bn_size * growth_rate
        self.norm1 = BatchNormAct2d(in_chs, act_layer=act_layer)  # its input is a fresh torch.cat
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm2 = BatchNormAct2d(mid_chs, act_layer=act_layer)
        self.conv2 = nn.Conv2d(mid_chs, growth_rate, 3, padding=1, bias=False)
        self.proj_drop_rate = proj_drop_rate
        self.grad_checkpointing = False

    def bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv1(self.norm1(torch.cat(features, 1)))  # (B, in_chs, H, W) -> (B, bn_size * k, H, W)

    @torch.jit.unused
    def checkpointed_bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        # recompute the concatenation and the bottleneck in backward: its input grows with depth (the
        # memory-efficient DenseNet of Pleiss et al. 2017)
        return checkpoint(lambda *xs: self.bottleneck(list(xs)), *features, use_reentrant=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            x = self.checkpointed_bottleneck(features)
        else:
            x = self.bottleneck(features)
        x = self.conv2(self.norm2(x))  # (B, k, H, W)
        if self.proj_drop_rate > 0:
            x = F.dropout(x, p=self.proj_drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output is the input concatenated with every layer's output."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int, act_layer: str | Callable,
                 proj_drop_rate: float = 0.0):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size,
                                                            act_layer, proj_drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, in_chs + num_layers * k, H, W)


class DenseTransition(nn.Sequential):
    """``BN-ReLU -> 1x1 conv (halve the channels) -> 2x2 average pool`` (or blur pool) between two blocks."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: str | Callable, blur: bool = False):
        super().__init__()
        # the block output it normalises is also a feature level (forward_intermediates keeps it): not in place
        self.add_module("norm", BatchNormAct2d(in_chs, act_layer=act_layer, fresh_input=False))
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False))
        self.add_module("pool", BlurPool2d(out_chs, stride=2) if blur else nn.AvgPool2d(2, stride=2))


# ----------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class DenseNetConfig:
    """One DenseNet architecture."""

    growth_rate: int  # k: channels each dense layer adds
    block_config: tuple[int, int, int, int]  # dense layers per block
    stem_type: str = ""  # '' (7x7/2 conv) or 'deep' (three 3x3 convs, the first stride 2)
    blur: bool = False  # anti-aliased stem pool (max pool stride 1 + BlurPool stride 2)
    bn_size: int = 4  # bottleneck width = bn_size * k


# -------------------------------------------------------------------------------------------- model
class DenseNet(Backbone):
    """DenseNet-BC (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`DenseNetConfig`).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        proj_drop_rate: dropout after every dense layer (torchvision's ``drop_rate``).
        drop_path_rate: accepted for the common contract; DenseNet has no residual branch to drop, so
            it has no effect (use ``proj_drop_rate``).
        output_stride: 32 only; DenseNet has no dilated variant.
        act_layer: the activation after every norm.
    """

    def __init__(
        self,
        cfg: DenseNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        act_layer: str | Callable = "relu",
    ):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"DenseNet supports output_stride=32 only (no dilated blocks), not {output_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        k = cfg.growth_rate
        num_init = 2 * k
        norm = partial(BatchNormAct2d, act_layer=act_layer)

        # stem: (B, in_chans, H, W) -> (B, 2k, H/4, W/4)
        if cfg.stem_type == "deep":
            stem = [("conv0", nn.Conv2d(in_chans, k, 3, stride=2, padding=1, bias=False)), ("norm0", norm(k)),
                    ("conv1", nn.Conv2d(k, k, 3, padding=1, bias=False)), ("norm1", norm(k)),
                    ("conv2", nn.Conv2d(k, num_init, 3, padding=1, bias=False)), ("norm2", norm(num_init))]
        else:
            stem = [("conv0", nn.Conv2d(in_chans, num_init, 7, stride=2, padding=3, bias=False)),
                    ("norm0", norm(num_init))]
        if cfg.blur:  # dense max (stride 1), then a low-pass filter before subsampling
            pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BlurPool2d(num_init, stride=2))
        else:
            pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.features = nn.Sequential(OrderedDict(stem + [("pool0", pool)]))
        info = [FeatureStage(num_init, 2, f"features.{stem[-1][0]}")]

        # dense blocks and transitions; feature levels: the stem, blocks 1-3 (before their transitions), norm5
        chs, reduction = num_init, 4
        for i, num_layers in enumerate(cfg.block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(num_layers, chs, k, cfg.bn_size, act_layer,
                                                                      proj_drop_rate))
            chs += num_layers * k
            if i < len(cfg.block_config) - 1:
                info.append(FeatureStage(chs, reduction, f"features.denseblock{i + 1}"))
                self.features.add_module(f"transition{i + 1}", DenseTransition(chs, chs // 2, act_layer))
                chs, reduction = chs // 2, reduction * 2
        self.features.add_module("norm5", norm(chs))  # BN-ReLU: the blocks end with a conv
        info.append(FeatureStage(chs, reduction, "features.norm5"))
        self.feature_info = FeatureInfo(info)

        # head
        self.num_features = chs
        self.global_pool, self.classifier = create_classifier(chs, num_classes, pool_type=global_pool)
        self.head_hidden_size = chs * self.global_pool.feat_mult()  # pooled width (2x for catavgmax)
        self.head_drop = nn.Dropout(drop_rate)
        self.default_cfg = default_cfg(first_conv="features.conv0", classifier="classifier",
                                       interpolation="bicubic")
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 3, H, W) -> (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classifier(x)


# ---------------------------------------------------------------------------------------- variants
# name -> architecture; checked against timm (every name) and torchvision (121/161/169/201) in
# tests/test_densenet.py
VARIANTS: dict[str, DenseNetConfig] = {
    # DenseNetConfig(growth rate k, dense layers per block, stem, blur)
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16)),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32)),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32)),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24)),
    # timm's additions: a 3x3 deep stem, with anti-aliased pooling (121) or at depth 264
    "densenetblur121d": DenseNetConfig(32, (6, 12, 24, 16), stem_type="deep", blur=True),
    "densenet264d": DenseNetConfig(48, (6, 12, 64, 48), stem_type="deep"),
}

# the preprocessing of timm's trained weights where it differs from the default (timm's pretrained_cfg)
_RA_288 = dict(test_input_size=(3, 288, 288), test_crop_pct=0.95)
PREPROCESSING: dict[str, dict[str, Any]] = {"densenet121": _RA_288, "densenetblur121d": _RA_288}


register_variants(DenseNet, VARIANTS, family="densenet", preprocessing=PREPROCESSING)

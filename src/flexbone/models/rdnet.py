"""RDNet: "DenseNets Reloaded", DenseNet's concatenation with a modern block design.

Kim et al. 2024, "DenseNets Reloaded: Paradigm Shift Beyond ResNets and ViTs" (NAVER AI).

Like DenseNet, every block of a stage reads the concatenation of the stage input and all earlier block
outputs and adds ``growth_rate`` channels. The block is ConvNeXt-like: depthwise 7x7 conv, layer norm,
1x1 expansion (``bottleneck_width_ratio`` x the *input* width), GELU, 1x1 to ``growth_rate``, optionally an
effective SE; its output is scaled by a learned layer scale (init 1e-6). Between stages a transition
(layer norm, then a 1x1 or a 2x2/2 "patchify" conv) halves the channels. The paper's point: concatenation
with wider, fewer stages is as good as addition once the rest of the recipe is modern.

Every variant is one row of ``VARIANTS`` at the bottom. Parameter names follow timm's ``rdnet.py``
(``stem.0``, ``dense_stages.1.2.dense_block0.layers.layers.0``, ``head.norm``, ``head.fc``), so its
checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import DropPath, EffectiveSEModule
from ..layers.activations import get_act_layer
from ..layers.layer_norm import LayerNorm2d
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants


# ------------------------------------------------------------------------------------------- blocks
class Block(nn.Module):
    """``dw 7x7 -> LN -> 1x1 (inter) -> GELU -> 1x1 (growth)`` [-> effective SE]; timm's Block / BlockESE."""

    def __init__(self, in_chs: int, inter_chs: int, out_chs: int, norm_layer: Callable, act_layer: Callable,
                 ese: bool = False):
        super().__init__()
        layers = [nn.Conv2d(in_chs, in_chs, 7, padding=3, groups=in_chs), norm_layer(in_chs),
                  nn.Conv2d(in_chs, inter_chs, 1), act_layer(), nn.Conv2d(inter_chs, out_chs, 1)]
        if ese:
            layers.append(EffectiveSEModule(out_chs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DenseBlock(nn.Module):
    """``concat(inputs) -> Block -> x layer scale -> drop path``: ``growth_rate`` new channels."""

    def __init__(self, in_chs: int, growth_rate: int, bottleneck_width_ratio: float, drop_path_rate: float,
                 proj_drop_rate: float, ese: bool, ls_init_value: float, norm_layer: Callable, act_layer: Callable):
        super().__init__()
        self.proj_drop_rate = proj_drop_rate
        self.gamma = nn.Parameter(ls_init_value * torch.ones(growth_rate)) if ls_init_value > 0 else None
        inter_chs = int(in_chs * bottleneck_width_ratio / 8) * 8  # from the block's (growing) input width
        self.drop_path = DropPath(drop_path_rate)
        self.layers = Block(in_chs, inter_chs, growth_rate, norm_layer, act_layer, ese)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.layers(torch.cat(features, 1))  # (B, in_chs, H, W) -> (B, growth_rate, H, W)
        if self.gamma is not None:
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        x = self.drop_path(x)
        if self.proj_drop_rate > 0:
            x = F.dropout(x, p=self.proj_drop_rate, training=self.training)
        return x


class DenseStage(nn.Sequential):
    """Dense blocks; the output is the stage input concatenated with every block's output."""

    def __init__(self, num_blocks: int, in_chs: int, growth_rate: int, drop_path_rates: list[float], **block_kw: Any):
        super().__init__()
        for i in range(num_blocks):
            self.add_module(f"dense_block{i}", DenseBlock(in_chs, growth_rate, drop_path_rate=drop_path_rates[i],
                                                          **block_kw))
            in_chs += growth_rate
        self.num_out_features = in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for block in self:
            features.append(block(features))
        return torch.cat(features, 1)


# ----------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class RDNetConfig:
    """One RDNet: per stage a growth rate, a downsampling flag (the first stage follows the 4x4/4 stem) and
    whether its blocks end with an effective SE; every stage has ``blocks_per_stage`` blocks."""

    num_init_features: int  # stem width
    growth_rates: tuple[int, ...]
    downsample: tuple[bool, ...]  # transition into this stage is a 2x2/2 conv (else 1x1)
    ese: tuple[bool, ...]
    blocks_per_stage: int = 3
    bottleneck_width_ratio: float = 4.0
    transition_compression_ratio: float = 0.5


# -------------------------------------------------------------------------------------------- model
class RDNet(Backbone):
    """RDNet (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`RDNetConfig`).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 over all blocks (as timm).
        proj_drop_rate: dropout after every dense block. ls_init_value: layer-scale init (0: no layer scale).
        output_stride: 32 only (the transitions are patchify convs).
    """

    _norm_mlp_head = True  # prune_intermediate_layers drops the head's norm as timm's does

    def __init__(
        self,
        cfg: RDNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        ls_init_value: float = 1e-6,
        act_layer: str | Callable = "gelu",
    ):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"RDNet supports output_stride=32 only, not {output_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        norm_layer, act_layer = LayerNorm2d, get_act_layer(act_layer)

        # stem: 4x4/4 patchify conv + LN: (B, in_chans, H, W) -> (B, C0, H/4, W/4)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, cfg.num_init_features, 4, stride=4),
                                  norm_layer(cfg.num_init_features))

        # stages; a feature level is the last stage at each resolution
        num_stages, n = len(cfg.growth_rates), cfg.blocks_per_stage
        rates = torch.linspace(0, drop_path_rate, num_stages * n, device="cpu").tolist()  # cpu: also under meta
        chs, reduction, stages, info = cfg.num_init_features, 4, [], []
        for i, growth in enumerate(cfg.growth_rates):
            layers: list[nn.Module] = []
            if i > 0:  # transition: LN, then 2x2/2 (downsampling) or 1x1 conv halving the channels
                compressed = int(chs * cfg.transition_compression_ratio / 8) * 8
                k = 2 if cfg.downsample[i] else 1
                reduction *= k
                layers += [norm_layer(chs), nn.Conv2d(chs, compressed, k, stride=k)]
                chs = compressed
            layers.append(DenseStage(n, chs, growth, rates[i * n:(i + 1) * n],
                                     bottleneck_width_ratio=cfg.bottleneck_width_ratio, proj_drop_rate=proj_drop_rate,
                                     ese=cfg.ese[i], ls_init_value=ls_init_value, norm_layer=norm_layer,
                                     act_layer=act_layer))
            chs += n * growth
            if i + 1 == num_stages or cfg.downsample[i + 1]:
                info.append(FeatureStage(chs, reduction, f"dense_stages.{i}", growth_rate=growth))  # (timm's keys)
            stages.append(nn.Sequential(*layers))
        self.dense_stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        # head: pool -> LN -> classify (the trunk has no final norm)
        self.num_features = chs
        self.head = NormMlpClassifierHead(chs, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                          norm_layer=norm_layer)
        self.head_hidden_size = self.head.num_features
        self.default_cfg = default_cfg(crop_pct=0.9, interpolation="bicubic", first_conv="stem.0",
                                       classifier="head.fc")
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.dense_stages:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------- variants
def _rdnet(init: int, growth: list[int], down_at: tuple[int, ...]) -> RDNetConfig:
    """Stages ``len(growth)``; downsampling into stages 1, 2 and ``down_at``; effective SE from stage 2 on."""
    n = len(growth)
    return RDNetConfig(init, tuple(growth), downsample=tuple(i in (1, 2) + down_at for i in range(n)),
                       ese=tuple(i >= 2 for i in range(n)))


# name -> architecture (timm's rdnet.py); checked against timm in tests/test_rdnet.py
VARIANTS: dict[str, RDNetConfig] = {
    # _rdnet(stem width, growth rate per stage, stages that downsample besides 1 and 2)
    "rdnet_tiny": _rdnet(64, [64, 104] + [128] * 4 + [224], down_at=(6,)),
    "rdnet_small": _rdnet(72, [64, 128] + [128] * 7 + [240] * 2, down_at=(9,)),
    "rdnet_base": _rdnet(120, [96, 128] + [168] * 7 + [336] * 2, down_at=(9,)),
    "rdnet_large": _rdnet(144, [128, 192] + [256] * 8 + [360] * 2, down_at=(10,)),
}

register_variants(RDNet, VARIANTS, family="rdnet")

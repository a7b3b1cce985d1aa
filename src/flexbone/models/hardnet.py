"""HarDNet: Harmonic DenseNet, dense connections thinned to cut memory traffic.

Chao et al. 2019, "HarDNet: A Low Memory Traffic Network" (ICCV). Reference code: the authors'
``PingoLH/Pytorch-HarDNet`` (``hardnet.py``; torch.hub entry points hardnet39ds / hardnet68 / hardnet68ds /
hardnet85). timm has no HarDNet, so this family is checked against that code's published figures instead.

A harmonic dense block (HarDBlock) is a DenseNet block with most links removed: layer ``k`` (1-based; layer 0 is
the block input) reads only the layers ``k - 2**n`` for every power of two ``2**n`` that divides ``k``, so odd
layers read one layer and layer 8 reads 7, 6, 4 and 0. Layers that many later layers read are made wider: a
layer with ``L`` links has ``growth_rate * grmul**(L - 1)`` output channels, rounded to an even number. The block
outputs the odd layers and the last one, concatenated (not its input). Every layer is ``conv 3x3 - BN - ReLU6``
(post-activation, no bottleneck), or in the depthwise-separable "DS" models ``conv 1x1 - BN - ReLU6 - dw conv
3x3 - BN``. A ``1x1 conv - BN - ReLU6`` transition follows every block, then optionally a stride-2 downsampling:
a 2x2 max pool, or in the DS models a 3x3 stride-2 depthwise conv with BN.

Every variant is one row of ``VARIANTS`` at the bottom. Module names and order are the reference code's (one
list ``base``: stem convs, pool, then block / transition / downsampling, the classifier last as
``(pool, flatten, dropout, linear)``), so its checkpoints (``hardnet68.pth`` ...) load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import create_classifier
from ..layers.activations import create_act
from ..layers.norm import get_norm_layer
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants


# ---------------------------------------------------------------------------------------- harmonic links
def harmonic_links(k: int) -> list[int]:
    """The layers that layer ``k >= 1`` of a HarDBlock reads (0 is the block input): ``k - 2**n`` for every
    ``2**n`` dividing ``k``, nearest first (the order in which they are concatenated)."""
    links, step = [], 1
    while k % step == 0:  # 2**n divides k, so k - 2**n >= 0
        links.append(k - step)
        step *= 2
    return links


def harmonic_width(k: int, growth_rate: int, grmul: float) -> int:
    """Output channels of layer ``k``: ``growth_rate * grmul**(links - 1)``, floored, then odd values rounded up
    to even (the reference's ``int(int(c + 1) / 2) * 2``)."""
    width = float(growth_rate)
    for _ in harmonic_links(k)[1:]:
        width *= grmul  # one product per extra link, as the reference computes it: the same float, the same rounding
    return 2 * ((int(width) + 1) // 2)


# ------------------------------------------------------------------------------------------- layers
# The reference's three layer types, with its child names (conv / norm / relu, dwconv / norm, layer1 / layer2):
# the names are what its checkpoints store, which is why they are not the zoo's ConvNormAct (conv / bn / act).
class ConvLayer(nn.Sequential):
    """``conv kxk (stride) -> BN -> ReLU6``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 norm_layer: str | Callable = "batchnorm", act_layer: str | Callable = "relu6"):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                                          bias=False))
        self.add_module("norm", get_norm_layer(norm_layer)(out_chs))
        self.add_module("relu", create_act(act_layer, inplace=True))


class DWConvLayer(nn.Sequential):
    """``depthwise conv 3x3 (stride) -> BN``, no activation: the DS models' downsampling and second half of a layer."""

    def __init__(self, chs: int, stride: int = 1, norm_layer: str | Callable = "batchnorm"):
        super().__init__()
        self.add_module("dwconv", nn.Conv2d(chs, chs, 3, stride=stride, padding=1, groups=chs, bias=False))
        self.add_module("norm", get_norm_layer(norm_layer)(chs))


class CombConvLayer(nn.Sequential):
    """A DS model's HarDBlock layer: ``conv 1x1 -> BN -> ReLU6 -> depthwise conv 3x3 -> BN``."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: str | Callable = "batchnorm",
                 act_layer: str | Callable = "relu6"):
        super().__init__()
        self.add_module("layer1", ConvLayer(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer))
        self.add_module("layer2", DWConvLayer(out_chs, norm_layer=norm_layer))


class HarDBlock(nn.Module):
    """A harmonic dense block of ``num_layers`` layers (see the module docstring for the link rule).

    ``links[i]`` are the layers that layer ``i + 1`` reads; ``outputs`` the layers concatenated into the block's
    output (the odd ones and the last); ``out_chs`` its width.
    """

    def __init__(self, in_chs: int, growth_rate: int, grmul: float, num_layers: int, depthwise: bool = False,
                 norm_layer: str | Callable = "batchnorm", act_layer: str | Callable = "relu6"):
        super().__init__()
        widths = [in_chs]  # widths[k]: channels of layer k's output (0: the block input)
        links = []  # links[i]: the layers that layer i + 1 reads
        layers = []
        for k in range(1, num_layers + 1):
            links.append(harmonic_links(k))
            in_k, out_k = sum(widths[j] for j in links[-1]), harmonic_width(k, growth_rate, grmul)
            layer = CombConvLayer if depthwise else partial(ConvLayer, kernel_size=3)
            layers.append(layer(in_k, out_k, norm_layer=norm_layer, act_layer=act_layer))
            widths.append(out_k)
        self.links = links
        self.outputs = [k for k in range(1, num_layers + 1) if k % 2 == 1 or k == num_layers]
        self.out_chs = sum(widths[k] for k in self.outputs)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]  # maps[k]: layer k's output
        for i, layer in enumerate(self.layers):
            inputs = [maps[j] for j in self.links[i]]
            x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)  # (one link: no copy)
            maps.append(layer(x))
        return torch.cat([maps[k] for k in self.outputs], 1)  # (B, out_chs, H, W)


class HarDNetHead(nn.Sequential):
    """``global pool -> flatten -> dropout -> fc``, the reference's ``(AdaptiveAvgPool2d, Flatten, Dropout,
    Linear)`` at the same indices (``fc`` is ``3``); the pool flattens, so index 1 is an identity."""

    def __init__(self, in_chs: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0):
        global_pool, fc = create_classifier(in_chs, num_classes, pool_type)
        super().__init__(global_pool, nn.Identity(), nn.Dropout(drop_rate), fc)
        self.num_features = in_chs * global_pool.feat_mult()  # pooled (pre-logits) width

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self[2](self[1](self[0](x)))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self[3](x)


# ----------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class HarDNetConfig:
    """One HarDNet: a two-conv stem, then per HarDBlock a row ``(growth rate k, layers, transition width,
    downsample after)``."""

    stem_chs: tuple[int, int]  # the 3x3/2 conv, then a 3x3 conv (1x1 in the DS models)
    grmul: float  # m: width multiplier per extra link
    blocks: tuple[tuple[int, int, int, bool], ...]
    depthwise: bool = False  # DS model: CombConv layers, depthwise stride-2 downsampling instead of max pools
    drop_rate: float = 0.1  # classifier dropout the reference trains with
    last_block_drop_rate: float = 0.0  # dropout between the last block and its transition (HarDNet85: 0.1)


# -------------------------------------------------------------------------------------------- model
class HarDNet(Backbone):
    """HarDNet (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`HarDNetConfig`).
        num_classes, in_chans, global_pool: classifier head, input channels, pooling.
        drop_rate: classifier dropout; default the reference's (0.1 HarDNet68, 0.2 HarDNet85, 0.05 DS models).
        drop_path_rate: accepted for the common contract; HarDNet has no residual branch to drop, so it has no
            effect.
        output_stride: 32 only (the downsampling is max pooling or strided depthwise convs between blocks).
        act_layer, norm_layer: the activation (ReLU6) and norm (batch norm) of every layer.
    """

    def __init__(
        self,
        cfg: HarDNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        act_layer: str | Callable = "relu6",
        norm_layer: str | Callable = "batchnorm",
    ):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"HarDNet supports output_stride=32 only (no dilated blocks), not {output_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = cfg.drop_rate if drop_rate is None else drop_rate
        kw = dict(norm_layer=norm_layer, act_layer=act_layer)
        ds = cfg.depthwise

        # stem: (B, in_chans, H, W) -> (B, C1, H/4, W/4)
        c0, c1 = cfg.stem_chs
        base: list[nn.Module] = [ConvLayer(in_chans, c0, 3, stride=2, **kw), ConvLayer(c0, c1, 1 if ds else 3, **kw)]
        info = [FeatureStage(c1, 2, "base.1")]
        base.append(DWConvLayer(c1, stride=2, norm_layer=norm_layer) if ds else nn.MaxPool2d(3, stride=2, padding=1))

        # blocks, each followed by a 1x1 transition and maybe a downsampling; a feature level is the transition
        # before each downsampling, and the last
        chs, reduction = c1, 4
        for i, (growth_rate, num_layers, width, downsample) in enumerate(cfg.blocks):
            block = HarDBlock(chs, growth_rate, cfg.grmul, num_layers, depthwise=ds, **kw)
            base.append(block)
            if i == len(cfg.blocks) - 1 and cfg.last_block_drop_rate > 0:
                base.append(nn.Dropout(cfg.last_block_drop_rate))
            base.append(ConvLayer(block.out_chs, width, 1, **kw))
            chs = width
            if downsample:
                info.append(FeatureStage(chs, reduction, f"base.{len(base) - 1}"))
                base.append(DWConvLayer(chs, stride=2, norm_layer=norm_layer) if ds else nn.MaxPool2d(2, stride=2))
                reduction *= 2
        info.append(FeatureStage(chs, reduction, f"base.{len(base) - 1}"))
        self.feature_info = FeatureInfo(info)

        # head: the last entry of base, as in the reference
        self.num_trunk = len(base)
        self.num_features = chs
        head = HarDNetHead(chs, num_classes, pool_type=global_pool, drop_rate=self.drop_rate)
        self.head_hidden_size = head.num_features
        self.base = nn.ModuleList(base + [head])
        self.default_cfg = default_cfg(first_conv="base.0.conv", classifier=f"base.{self.num_trunk}.3")
        self._init_weights()

    def _init_weights(self) -> None:
        # the reference's training script (imagenet/main.py, weights_init): Xavier-normal convs, zero biases
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.base[self.num_trunk][0].pool_type if global_pool is None else global_pool
        self.base[self.num_trunk] = HarDNetHead(self.num_features, num_classes, pool_type=pool,
                                                drop_rate=self.drop_rate)
        self.head_hidden_size = self.base[self.num_trunk].num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.base):
            if i < self.num_trunk:  # (the last entry is the head)
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(layer, x, use_reentrant=False)
                else:
                    x = layer(x)
        return x  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.base[-1](x, pre_logits)


# ---------------------------------------------------------------------------------------- variants
_HARDNET68_BLOCKS = ((14, 8, 128, True), (16, 16, 256, False), (20, 16, 320, True), (40, 16, 640, True),
                     (160, 4, 1024, False))

# name -> architecture (the reference's hardnet.py); checked against its published sizes in tests/test_hardnet.py
VARIANTS: dict[str, HarDNetConfig] = {
    # HarDNetConfig(stem widths, grmul, blocks: (growth rate k, layers, transition width, downsample after), ...)
    "hardnet68": HarDNetConfig((32, 64), 1.7, _HARDNET68_BLOCKS),
    "hardnet85": HarDNetConfig((48, 96), 1.7, ((24, 8, 192, True), (24, 16, 256, False), (28, 16, 320, True),
                                               (36, 16, 480, False), (48, 16, 720, True), (256, 4, 1280, False)),
                               drop_rate=0.2, last_block_drop_rate=0.1),
    "hardnet68ds": HarDNetConfig((32, 64), 1.7, _HARDNET68_BLOCKS, depthwise=True, drop_rate=0.05),
    "hardnet39ds": HarDNetConfig((24, 48), 1.6, ((16, 4, 96, True), (20, 16, 320, True), (64, 8, 640, True),
                                                 (160, 4, 1024, False)), depthwise=True, drop_rate=0.05),
}

register_variants(HarDNet, VARIANTS, family="hardnet")

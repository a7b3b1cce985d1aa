"""MaxViT (Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer"), the TensorFlow-ported models of timm.

A conv stem (two 3x3 convs, stride 2) and four stages of MaxViT blocks. Every block is

1. an MBConv (pre-norm BN, 1x1 expand 4x, depthwise 3x3 -- strided in a stage's first block --, SE, 1x1
   project; the shortcut average-pools and widens when the block downsamples),
2. *block* attention: self-attention inside non-overlapping ``P x P`` windows (local),
3. *grid* attention: self-attention among the ``P x P`` positions that lie ``H/P`` apart (a sparse, global
   mixing: every window exchanges with every other in one step),

each attention followed by an MLP, pre-norm (layer norm), in channels-last ``(B, H, W, C)`` layout. The
partition size is ``img_size // 32`` (7 at 224), the same in every stage, so the model is built for one
input size (timm: ``fixed_input_size``). Attention adds a learned bias per relative offset and head
(TF's form: a ``(heads, 2P-1, 2P-1)`` table). The head pools, normalises, and passes a hidden tanh layer.

These are timm's ``maxvit_*_tf_*`` models (``MaxxVit`` with ``_tf_cfg``): TF 'SAME' padding, BN eps 1e-3,
tanh-approximated GELU, heads interleaved in the qkv projection. Parameter names are timm's
(``stages.0.blocks.1.attn_grid.attn.rel_pos.relative_position_bias_table``), so its checkpoints load with
``strict=True`` (``tests/test_maxvit.py``). Feature levels: the stem (stride 2) and the four stages (4..32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers.drop import DropPath
from ..layers.helpers import make_divisible
from ..layers.layer_norm import LayerNorm2d
from ..layers.norm_act import BatchNormAct2d
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ..layers.padding import conv2d_same, pool2d_same
from ..layers.squeeze_excite import SEModule
from ._base import IMAGENET_MEAN, IMAGENET_STD, Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants
from .vit import Mlp

GeluTanh = partial(nn.GELU, approximate="tanh")  # TF's gelu(approximate=True), timm's 'gelu_tanh'


# ------------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class MaxVitConfig:
    """One MaxViT: widths and depths per stage, stem width, and the width of the head's hidden layer."""

    embed_dim: tuple[int, ...]
    depths: tuple[int, ...]
    stem_width: int = 64
    head_hidden_size: int | None = None  # the pooled features pass a tanh layer of this width (None: none)
    dim_head: int = 32  # channels per attention head
    expand_ratio: float = 4.0  # MBConv expansion (of its *output* width) and MLP expansion
    se_ratio: float = 0.25  # SE width as a fraction of the MBConv's output width
    partition_ratio: int = 32  # window / grid size = img_size // partition_ratio
    conv_eps: float = 1e-3  # BN eps (TF's default)
    norm_eps: float = 1e-5  # layer-norm eps


# -------------------------------------------------------------------------------------------- blocks
class Downsample2d(nn.Module):
    """2x2/2 average pool ('SAME' padded), then a 1x1 conv if the width changes: the downsampling shortcut."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.pool = pool2d_same("avg", 2, 2)
        self.expand = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MbConvBlock(nn.Module):
    """``BN -> 1x1 (expand) -> BN-GELU -> dw 3x3 (stride) -> BN-GELU -> SE -> 1x1 (project)`` + shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, cfg: MaxVitConfig, drop_path: float = 0.0):
        super().__init__()
        mid_chs = make_divisible(out_chs * cfg.expand_ratio)
        norm_act = partial(BatchNormAct2d, eps=cfg.conv_eps, act_layer=GeluTanh)
        self.shortcut = Downsample2d(in_chs, out_chs) if stride == 2 else nn.Identity()
        # the block input is also the (identity) shortcut: the pre-norm must not normalise it in place
        self.pre_norm = BatchNormAct2d(in_chs, eps=cfg.conv_eps, act_layer=None, fresh_input=False)
        self.conv1_1x1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm1 = norm_act(mid_chs)
        self.conv2_kxk = conv2d_same(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.norm2 = norm_act(mid_chs)
        self.se = SEModule(mid_chs, rd_channels=int(cfg.se_ratio * out_chs), act_layer="silu")
        self.conv3_1x1 = nn.Conv2d(mid_chs, out_chs, 1, bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm1(self.conv1_1x1(self.pre_norm(x)))
        x = self.se(self.norm2(self.conv2_kxk(x)))
        return self.drop_path(self.conv3_1x1(x)) + shortcut


def window_partition(x: torch.Tensor, p: int) -> torch.Tensor:
    """Block partition: ``(B, H, W, C) -> (B * H/p * W/p, p, p, C)``, contiguous ``p x p`` windows."""
    B, H, W, C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]  # indexing, not unpacking: torch.fx traces it
    x = x.view(B, H // p, p, W // p, p, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, p, p, C)


def window_reverse(windows: torch.Tensor, p: int, H: int, W: int) -> torch.Tensor:
    C = windows.shape[-1]
    x = windows.view(-1, H // p, W // p, p, p, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def grid_partition(x: torch.Tensor, p: int) -> torch.Tensor:
    """Grid partition: ``(B, H, W, C) -> (B * H/p * W/p, p, p, C)``, each group the ``p x p`` positions that
    lie ``H/p`` (``W/p``) apart -- a dilated window spanning the whole map."""
    B, H, W, C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    x = x.view(B, p, H // p, p, W // p, C)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, p, p, C)


def grid_reverse(windows: torch.Tensor, p: int, H: int, W: int) -> torch.Tensor:
    C = windows.shape[-1]
    x = windows.view(-1, H // p, W // p, p, p, C)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, H, W, C)


def relative_position_index(p: int) -> torch.Tensor:
    """For tokens ``(i, j)`` and ``(x, y)`` of a ``p x p`` window, the entry ``(x - i + p - 1, y - j + p - 1)`` of
    a flattened ``(2p-1, 2p-1)`` table: ``(p*p, p*p)`` indices (TF's one-hot einsum lookup, as a gather)."""
    pos = torch.arange(p)
    rel = pos[None, :] - pos[:, None] + p - 1  # (p, p): rel[i, x] = x - i + p - 1
    index = rel[:, None, :, None] * (2 * p - 1) + rel[None, :, None, :]  # (i, j, x, y)
    return index.reshape(p * p, p * p)


class RelPosBiasTf(nn.Module):
    """A learned attention bias per head and relative offset, TF MaxViT's ``(heads, 2p-1, 2p-1)`` table."""

    def __init__(self, window_size: int, num_heads: int):
        super().__init__()
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, 2 * window_size - 1,
                                                                     2 * window_size - 1))
        self.register_buffer("index", relative_position_index(window_size), persistent=False)
        nn.init.normal_(self.relative_position_bias_table, std=0.02)

    def get_bias(self) -> torch.Tensor:
        """``(heads, p*p, p*p)``, added to the attention logits."""
        return self.relative_position_bias_table.flatten(1)[:, self.index]


class AttentionCl(nn.Module):
    """Multi-head self-attention over the tokens of each ``(p, p)`` group, channels-last ``(N, p, p, C)``.

    The qkv projection's output is ordered (q, k, v) x heads x channels (TF's interleaving; timm's
    ``head_first=False``).
    """

    def __init__(self, dim: int, dim_head: int, window_size: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.dim_head = dim // dim_head, dim_head
        self.qkv = nn.Linear(dim, dim * 3)
        self.rel_pos = RelPosBiasTf(window_size, self.num_heads)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, p1, p2 = x.shape[0], x.shape[1], x.shape[2]
        # (B, p, p, 3C) -> (B, p*p, 3, heads, d) -> (B, heads, 3, p*p, d) -> 3 x (B, heads, p*p, d)
        q, k, v = self.qkv(x).reshape(B, -1, 3, self.num_heads, self.dim_head).transpose(1, 3).unbind(2)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos.get_bias(),
                                           dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, p1, p2, -1)  # (B, heads, p*p, d) -> (B, p, p, C)
        return self.proj_drop(self.proj(x))


class PartitionAttention(nn.Module):
    """``x + attn(LN(x))`` over block or grid partitions, then ``x + MLP(LN(x))``; ``(B, H, W, C)``."""

    def __init__(self, dim: int, partition: str, window_size: int, cfg: MaxVitConfig, drop_path: float = 0.0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.partition_block = partition == "block"
        self.partition_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = AttentionCl(dim, cfg.dim_head, window_size, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.expand_ratio), act_layer=GeluTanh, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @torch.jit.unused
    def _check_size(self, x: torch.Tensor) -> None:
        p = self.partition_size
        if not isinstance(x, torch.fx.Proxy) and (x.shape[1] % p or x.shape[2] % p):
            raise ConfigError(f"MaxViT: a {x.shape[1]}x{x.shape[2]} map does not split into {p}x{p} windows; "
                              f"the model is built for img_size={32 * p} (create it with img_size set to the "
                              f"input size, a multiple of 32)")

    def _partition_attn(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            self._check_size(x)
        H, W, p = x.shape[1], x.shape[2], self.partition_size
        if self.partition_block:
            return window_reverse(self.attn(window_partition(x, p)), p, H, W)
        return grid_reverse(self.attn(grid_partition(x, p)), p, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._partition_attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MaxVitBlock(nn.Module):
    """MBConv, then block attention, then grid attention (the two in channels-last layout)."""

    def __init__(self, dim: int, dim_out: int, stride: int, window_size: int, cfg: MaxVitConfig,
                 drop_path: float = 0.0, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.conv = MbConvBlock(dim, dim_out, stride, cfg, drop_path)
        attn = partial(PartitionAttention, dim_out, window_size=window_size, cfg=cfg, drop_path=drop_path,
                       attn_drop=attn_drop, proj_drop=proj_drop)
        self.attn_block = attn("block")
        self.attn_grid = attn("grid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        x = self.attn_grid(self.attn_block(x))
        return x.permute(0, 3, 1, 2)


class MaxVitStage(nn.Module):
    """``depth`` MaxViT blocks, the first halving the resolution."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, window_size: int, cfg: MaxVitConfig,
                 drop_path: Sequence[float], **block_kw: Any):
        super().__init__()
        self.blocks = nn.Sequential(*[
            MaxVitBlock(in_chs if i == 0 else out_chs, out_chs, 2 if i == 0 else 1, window_size, cfg, drop_path[i],
                        **block_kw) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """``3x3/2 conv -> BN-GELU -> 3x3 conv``, with bias, TF 'SAME' padding: ``(B, 3, H, W) -> (B, C, H/2, W/2)``.
    """

    def __init__(self, in_chs: int, out_chs: int, cfg: MaxVitConfig):
        super().__init__()
        self.conv1 = conv2d_same(in_chs, out_chs, 3, stride=2, bias=True)
        self.norm1 = BatchNormAct2d(out_chs, eps=cfg.conv_eps, act_layer=GeluTanh)
        self.conv2 = conv2d_same(out_chs, out_chs, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


# --------------------------------------------------------------------------------------------- model
class MaxVit(Backbone):
    """MaxViT (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`MaxVitConfig`).
        img_size: the input size the window / grid partitions are made for (``img_size // 32``; default 224).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks (as timm).
        attn_drop_rate, proj_drop_rate: dropout of the attention weights / after attention and MLP projections.
        output_stride: 32 only (windowed attention at fixed partition sizes).
    """

    _norm_mlp_head = True  # prune_intermediate_layers drops the head's norm and hidden layer as timm's does

    def __init__(self, cfg: MaxVitConfig, img_size: int = 224, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"MaxViT supports output_stride=32 only, not {output_stride}")
        window = img_size // cfg.partition_ratio
        if window < 1:
            raise ConfigError(f"MaxViT: img_size must be at least {cfg.partition_ratio}, not {img_size}")
        self.cfg, self.img_size, self.window_size = cfg, img_size, window
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate

        self.stem = Stem(in_chans, cfg.stem_width, cfg)
        info = [FeatureStage(cfg.stem_width, 2, "stem")]
        dpr = torch.linspace(0, drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # cpu: also under meta
        stages, in_chs, start = [], cfg.stem_width, 0
        for i, (dim, depth) in enumerate(zip(cfg.embed_dim, cfg.depths)):
            stages.append(MaxVitStage(in_chs, dim, depth, window, cfg, dpr[start:start + depth],
                                      attn_drop=attn_drop_rate, proj_drop=proj_drop_rate))
            info.append(FeatureStage(dim, 4 * 2 ** i, f"stages.{i}"))
            in_chs, start = dim, start + depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        # head: pool -> LN -> (fc -> tanh) -> fc; the trunk itself ends without a norm
        self.num_features = in_chs
        self.head = NormMlpClassifierHead(in_chs, num_classes, hidden_size=cfg.head_hidden_size,
                                          pool_type=global_pool, drop_rate=drop_rate,
                                          norm_layer=partial(LayerNorm2d, eps=cfg.norm_eps))
        self.head_hidden_size = self.head.num_features
        self.default_cfg = default_cfg(input_size=(3, img_size, img_size), fixed_input_size=True, crop_pct=0.95,
                                       interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                       first_conv="stem.conv1", classifier="head.fc")
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's 'vit_eff' scheme: convs as EfficientNet (normal, fan-out), linears as ViT (Xavier uniform)."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
            else:
                continue
            if m.bias is not None:
                nn.init.normal_(m.bias, std=1e-6) if ".mlp." in name else nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C0, H/2, W/2)
        for stage in self.stages:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                for block in stage.blocks:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = stage(x)
        return x  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ------------------------------------------------------------------------------------------ variants
# name -> architecture (timm's maxxvit.py ``maxvit_*_tf``, the MaxViT paper's Table 1); checked against timm
VARIANTS: dict[str, MaxVitConfig] = {
    "maxvit_tiny_tf_224": MaxVitConfig(embed_dim=(64, 128, 256, 512), depths=(2, 2, 5, 2), head_hidden_size=512),
    "maxvit_small_tf_224": MaxVitConfig(embed_dim=(96, 192, 384, 768), depths=(2, 2, 5, 2), head_hidden_size=768),
    "maxvit_base_tf_224": MaxVitConfig(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), head_hidden_size=768),
}

register_variants(MaxVit, VARIANTS, family="maxvit")

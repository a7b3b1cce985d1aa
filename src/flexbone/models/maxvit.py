"""MaxViT (Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer"): timm's TF-ported models and its own
``maxvit_rmlp_*`` models.

A conv stem (two 3x3 convs, stride 2) and four stages of MaxViT blocks. Every block is

1. an MBConv (pre-norm BN, 1x1 expand 4x, depthwise 3x3 -- strided in a stage's first block --, SE, 1x1
   project; the shortcut average-pools and widens when the block downsamples),
2. *block* attention: self-attention inside non-overlapping ``P x P`` windows (local),
3. *grid* attention: self-attention among the ``P x P`` positions that lie ``H/P`` apart (a sparse, global
   mixing: every window exchanges with every other in one step),

each attention followed by an MLP, pre-norm (layer norm), in channels-last ``(B, H, W, C)`` layout. The
partition size is ``img_size // 32`` (7 at 224, 8 at 256), the same in every stage, so the model is built for one
input size (timm: ``fixed_input_size``). Attention adds a learned bias per relative offset and head.

Two sets of models, one architecture; the differences are fields of :class:`MaxVitConfig`:

* ``maxvit_*_tf_*``: ported from the official TF code (timm's ``_tf_cfg``): TF 'SAME' padding, BN eps 1e-3,
  tanh-approximated GELU, MBConv width from its output, heads interleaved in the qkv projection, the bias a
  learned ``(heads, 2P-1, 2P-1)`` table, a head that pools, normalises and passes a hidden tanh layer.
* ``maxvit_rmlp_*_rw_*``: timm's own, trained before the TF code was public (``_rw_max_cfg(rel_pos_type='mlp')``):
  symmetric padding, BN eps 1e-5, SiLU in the MBConv and its width from its *input*, no bias on the MBConv's
  output convs and stem, a narrower SE (1/16), exact GELU, qkv grouped per head, the bias from an MLP of
  log-spaced offsets (``layers/rel_pos_mlp.py``), LayerScale in the small model, a two-width stem, and (but the
  base model) a final norm in the trunk with a plain pool + fc head.

Parameter names are timm's (``stages.0.blocks.1.attn_grid.attn.rel_pos.mlp.fc1.weight``), so its checkpoints
load with ``strict=True`` (``tests/test_maxvit.py``, ``tests/test_maxvit_rmlp.py``). Feature levels: the stem
(stride 2) and the four stages (4..32).
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
from ..layers.classifier import ClassifierHead
from ..layers.conv_norm_act import get_padding
from ..layers.drop import DropPath
from ..layers.helpers import make_divisible
from ..layers.layer_norm import LayerNorm2d
from ..layers.layer_scale import LayerScale
from ..layers.norm_act import BatchNormAct2d
from ..layers.norm_mlp_head import NormMlpClassifierHead
from ..layers.padding import conv2d_same, pool2d_same
from ..layers.pos_embed import resize_rel_pos_tables
from ..layers.rel_pos_mlp import RelPosMlp
from ..layers.squeeze_excite import SEModule
from ._base import IMAGENET_MEAN, IMAGENET_STD, Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage, feature_take_indices
from ._registry import register_variants
from .vit import Mlp

GeluTanh = partial(nn.GELU, approximate="tanh")  # TF's gelu(approximate=True), timm's 'gelu_tanh'
_ACTS = {"gelu_tanh": GeluTanh, "gelu": nn.GELU, "silu": nn.SiLU}


# ------------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class MaxVitConfig:
    """One MaxViT: widths and depths per stage, stem and head widths, and how the blocks are built.

    The defaults are the TF port's; :data:`RMLP` holds the fields in which timm's ``maxvit_rmlp_*`` differ.
    """

    embed_dim: tuple[int, ...]
    depths: tuple[int, ...]
    stem_width: int | tuple[int, int] = 64  # the stem's two convs (one int: both)
    head_hidden_size: int | None = None  # pooled -> norm -> tanh layer of this width -> fc; None: norm in the trunk
    img_size: int = 224  # the input size the model is built for unless img_size= says otherwise
    dim_head: int = 32  # channels per attention head
    expand_ratio: float = 4.0  # MBConv expansion and MLP expansion
    expand_output: bool = True  # MBConv hidden width = expand_ratio x its output width (False: its input width)
    se_ratio: float = 0.25  # SE width as a fraction of the MBConv's output width (expand_output) / hidden width
    partition_ratio: int = 32  # window / grid size = img_size // partition_ratio
    tf_padding: bool = True  # TF 'SAME' padding (asymmetric where strided); False: symmetric, as torch's
    stem_bias: bool = True  # bias on the stem's convs
    output_bias: bool = True  # bias on the MBConv's last 1x1 and on its shortcut's 1x1
    conv_eps: float = 1e-3  # BN eps (TF's default)
    conv_act: str = "gelu_tanh"  # stem and MBConv activation
    attn_act: str = "gelu_tanh"  # MLP activation of the attention blocks
    norm_eps: float = 1e-5  # layer-norm eps
    head_first: bool = False  # qkv projection ordered heads x (q, k, v) x channels (False: (q, k, v) x heads)
    rel_pos: str = "bias_tf"  # attention bias: 'bias_tf' (a learned table) or 'mlp' (an MLP of log offsets)
    rel_pos_dim: int = 512  # hidden width of the 'mlp' bias
    init_values: float | None = None  # LayerScale on the attention and MLP branches (None: none)

    def __post_init__(self):
        if self.rel_pos not in ("bias_tf", "mlp"):
            raise ConfigError(f"MaxVitConfig.rel_pos must be 'bias_tf' or 'mlp', not {self.rel_pos!r}")
        for field in ("conv_act", "attn_act"):
            if getattr(self, field) not in _ACTS:
                raise ConfigError(f"MaxVitConfig.{field} must be one of {sorted(_ACTS)}, not {getattr(self, field)!r}")

    @property
    def stem_widths(self) -> tuple[int, int]:
        return (self.stem_width, self.stem_width) if isinstance(self.stem_width, int) else tuple(self.stem_width)


# timm's maxvit_rmlp_* (``_rw_max_cfg(rel_pos_type='mlp')``): where they differ from the TF port
RMLP = dict(expand_output=False, se_ratio=1 / 16, tf_padding=False, stem_bias=False, output_bias=False,
            conv_eps=1e-5, conv_act="silu", attn_act="gelu", norm_eps=1e-6, head_first=True, rel_pos="mlp")


def _conv(cfg: MaxVitConfig, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
          bias: bool = False) -> nn.Conv2d:
    """A conv with the configuration's padding: TF 'SAME', or symmetric (timm's own models)."""
    if cfg.tf_padding:
        return conv2d_same(in_chs, out_chs, kernel_size, stride=stride, groups=groups, bias=bias)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, get_padding(kernel_size, stride), groups=groups, bias=bias)


# -------------------------------------------------------------------------------------------- blocks
class Downsample2d(nn.Module):
    """2x2/2 average pool, then a 1x1 conv if the width changes: the downsampling shortcut."""

    def __init__(self, dim: int, dim_out: int, tf_padding: bool = True, bias: bool = True):
        super().__init__()
        self.pool = pool2d_same("avg", 2, 2) if tf_padding else nn.AvgPool2d(2, 2)
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=bias) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MbConvBlock(nn.Module):
    """``BN -> 1x1 (expand) -> BN-act -> dw 3x3 (stride) -> BN-act -> SE -> 1x1 (project)`` + shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, cfg: MaxVitConfig, drop_path: float = 0.0):
        super().__init__()
        mid_chs = make_divisible((out_chs if cfg.expand_output else in_chs) * cfg.expand_ratio)
        norm_act = partial(BatchNormAct2d, eps=cfg.conv_eps, act_layer=_ACTS[cfg.conv_act])
        self.shortcut = Downsample2d(in_chs, out_chs, cfg.tf_padding, cfg.output_bias) if stride == 2 else nn.Identity()
        # the block input is also the (identity) shortcut: the pre-norm must not normalise it in place
        self.pre_norm = BatchNormAct2d(in_chs, eps=cfg.conv_eps, act_layer=None, fresh_input=False)
        self.conv1_1x1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm1 = norm_act(mid_chs)
        self.conv2_kxk = _conv(cfg, mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.norm2 = norm_act(mid_chs)
        se_base = out_chs if cfg.expand_output else mid_chs
        self.se = SEModule(mid_chs, rd_channels=int(cfg.se_ratio * se_base), act_layer="silu")
        self.conv3_1x1 = nn.Conv2d(mid_chs, out_chs, 1, bias=cfg.output_bias)
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

    The qkv projection's output is ordered heads x (q, k, v) x channels with ``cfg.head_first`` (timm's own
    models), else (q, k, v) x heads x channels (TF's interleaving).
    """

    def __init__(self, dim: int, window_size: int, cfg: MaxVitConfig, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.dim_head, self.head_first = dim // cfg.dim_head, cfg.dim_head, cfg.head_first
        self.qkv = nn.Linear(dim, dim * 3)
        if cfg.rel_pos == "mlp":
            self.rel_pos = RelPosMlp(window_size, self.num_heads, cfg.rel_pos_dim)
        else:
            self.rel_pos = RelPosBiasTf(window_size, self.num_heads)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, p1, p2 = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x)  # (B, p, p, 3C)
        if self.head_first:  # -> (B, p*p, heads, 3d) -> (B, heads, p*p, 3d) -> 3 x (B, heads, p*p, d)
            q, k, v = qkv.reshape(B, -1, self.num_heads, 3 * self.dim_head).transpose(1, 2).chunk(3, dim=3)
        else:  # -> (B, p*p, 3, heads, d) -> (B, heads, 3, p*p, d) -> 3 x (B, heads, p*p, d)
            q, k, v = qkv.reshape(B, -1, 3, self.num_heads, self.dim_head).transpose(1, 3).unbind(2)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos.get_bias(),
                                           dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, p1, p2, -1)  # (B, heads, p*p, d) -> (B, p, p, C)
        return self.proj_drop(self.proj(x))


class PartitionAttention(nn.Module):
    """``x + attn(LN(x))`` over block or grid partitions, then ``x + MLP(LN(x))`` (each branch scaled by
    LayerScale when ``cfg.init_values``); ``(B, H, W, C)``."""

    def __init__(self, dim: int, partition: str, window_size: int, cfg: MaxVitConfig, drop_path: float = 0.0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.partition_block = partition == "block"
        self.partition_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = AttentionCl(dim, window_size, cfg, attn_drop, proj_drop)
        self.ls1 = LayerScale(dim, cfg.init_values) if cfg.init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.expand_ratio), act_layer=_ACTS[cfg.attn_act], drop=proj_drop)
        self.ls2 = LayerScale(dim, cfg.init_values) if cfg.init_values else nn.Identity()
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
        x = x + self.drop_path1(self.ls1(self._partition_attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


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
    """``3x3/2 conv -> BN-act -> 3x3 conv``: ``(B, 3, H, W) -> (B, C, H/2, W/2)``, ``C = cfg.stem_widths[1]``."""

    def __init__(self, in_chs: int, cfg: MaxVitConfig):
        super().__init__()
        mid_chs, out_chs = cfg.stem_widths
        self.conv1 = _conv(cfg, in_chs, mid_chs, 3, stride=2, bias=cfg.stem_bias)
        self.norm1 = BatchNormAct2d(mid_chs, eps=cfg.conv_eps, act_layer=_ACTS[cfg.conv_act])
        self.conv2 = _conv(cfg, mid_chs, out_chs, 3, bias=cfg.stem_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


# --------------------------------------------------------------------------------------------- model
class MaxVit(Backbone):
    """MaxViT (see ``VARIANTS`` for the named architectures).

    Args:
        cfg: the architecture (a :class:`MaxVitConfig`).
        img_size: the input size the window / grid partitions are made for (``img_size // 32``; default
            ``cfg.img_size``, the size timm's weights were trained at).
        num_classes, in_chans, global_pool, drop_rate: classifier head, input channels, pooling, dropout.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks (as timm).
        attn_drop_rate, proj_drop_rate: dropout of the attention weights / after attention and MLP projections.
        output_stride: 32 only (windowed attention at fixed partition sizes).
    """

    _features_tail = ("norm",)  # the trunk's final norm (an identity where the head normalises)
    __jit_unused_properties__ = Backbone.__jit_unused_properties__ + ["_norm_mlp_head"]

    def __init__(self, cfg: MaxVitConfig, img_size: int | None = None, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0):
        super().__init__()
        if output_stride != 32:
            raise ConfigError(f"MaxViT supports output_stride=32 only, not {output_stride}")
        img_size = cfg.img_size if img_size is None else img_size
        window = img_size // cfg.partition_ratio
        if window < 1:
            raise ConfigError(f"MaxViT: img_size must be at least {cfg.partition_ratio}, not {img_size}")
        self.cfg, self.img_size, self.window_size = cfg, img_size, window
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate

        self.stem = Stem(in_chans, cfg)
        in_chs = cfg.stem_widths[1]
        info = [FeatureStage(in_chs, 2, "stem")]
        dpr = torch.linspace(0, drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # cpu: also under meta
        stages, start = [], 0
        for i, (dim, depth) in enumerate(zip(cfg.embed_dim, cfg.depths)):
            stages.append(MaxVitStage(in_chs, dim, depth, window, cfg, dpr[start:start + depth],
                                      attn_drop=attn_drop_rate, proj_drop=proj_drop_rate))
            info.append(FeatureStage(dim, 4 * 2 ** i, f"stages.{i}"))
            in_chs, start = dim, start + depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        # timm's choice of head: with a hidden layer, pool -> LN -> fc -> tanh -> fc and no norm in the trunk;
        # without, the trunk ends with a LN (so forward_features and the last feature level are normalised)
        self.num_features = in_chs
        norm_layer = partial(LayerNorm2d, eps=cfg.norm_eps)
        if cfg.head_hidden_size:
            self.norm = nn.Identity()
            self.head = NormMlpClassifierHead(in_chs, num_classes, hidden_size=cfg.head_hidden_size,
                                              pool_type=global_pool, drop_rate=drop_rate, norm_layer=norm_layer)
        else:
            self.norm = norm_layer(in_chs)
            self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
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

    @property
    def _norm_mlp_head(self) -> bool:
        """Whether prune_intermediate_layers follows timm's rule for a NormMlpClassifierHead (Backbone's)."""
        return isinstance(self.head, NormMlpClassifierHead)

    def _convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint made for another input size (other windows) loads as timm loads it: relative-position
        tables resized to this model's windows (``layers.pos_embed``)."""
        return resize_rel_pos_tables(self, state)

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
        return self.norm(x)  # (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's ``forward_intermediates``; ``norm`` applies the trunk's final norm to the last stage's map."""
        out = super().forward_intermediates(x, indices, stop_early=stop_early, output_fmt=output_fmt,
                                            intermediates_only=intermediates_only)
        take, _ = feature_take_indices(len(self.feature_info), indices)
        if norm and len(self.feature_info) - 1 in take:
            maps = out if intermediates_only else out[1]
            maps[-1] = self.norm(maps[-1])  # (levels run in order: the last stage's map is the list's last)
        return out

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: the stages after the deepest level of ``indices`` go, and with them the trunk's norm and the
        classifier (sized for the last stage); ``prune_norm`` drops the norm alone."""
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if prune_norm:
            self.norm = nn.Identity()
        if max(take) < len(self.feature_info) - 1 and not self._norm_mlp_head:
            self.num_features = self.feature_info[max(take)]["num_chs"]
            self.head.in_features = self.num_features  # (the NormMlp head: Backbone._prune_norm_mlp_head)
            self.reset_classifier(0, "")
        return take


# ------------------------------------------------------------------------------------------ variants
# name -> architecture (timm's maxxvit.py ``maxvit_*_tf`` -- the MaxViT paper's Table 1 -- and
# ``maxvit_rmlp_*_rw``); checked against timm
VARIANTS: dict[str, MaxVitConfig] = {
    "maxvit_tiny_tf_224": MaxVitConfig(embed_dim=(64, 128, 256, 512), depths=(2, 2, 5, 2), head_hidden_size=512),
    "maxvit_small_tf_224": MaxVitConfig(embed_dim=(96, 192, 384, 768), depths=(2, 2, 5, 2), head_hidden_size=768),
    "maxvit_base_tf_224": MaxVitConfig(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), head_hidden_size=768),
    # embed_dim, depths, stem_width, img_size
    "maxvit_rmlp_pico_rw_256": MaxVitConfig((32, 64, 128, 256), (2, 2, 5, 2), (24, 32), img_size=256, **RMLP),
    "maxvit_rmlp_nano_rw_256": MaxVitConfig((64, 128, 256, 512), (1, 2, 3, 1), (32, 64), img_size=256, **RMLP),
    "maxvit_rmlp_tiny_rw_256": MaxVitConfig((64, 128, 256, 512), (2, 2, 5, 2), (32, 64), img_size=256, **RMLP),
    "maxvit_rmlp_small_rw_224": MaxVitConfig((96, 192, 384, 768), (2, 2, 5, 2), (32, 64), init_values=1e-6, **RMLP),
    "maxvit_rmlp_small_rw_256": MaxVitConfig((96, 192, 384, 768), (2, 2, 5, 2), (32, 64), img_size=256,
                                             init_values=1e-6, **RMLP),
    "maxvit_rmlp_base_rw_224": MaxVitConfig((96, 192, 384, 768), (2, 6, 14, 2), (32, 64), head_hidden_size=768,
                                            **RMLP),
    "maxvit_rmlp_base_rw_384": MaxVitConfig((96, 192, 384, 768), (2, 6, 14, 2), (32, 64), head_hidden_size=768,
                                            img_size=384, **RMLP),
}

# the preprocessing of timm's weights where it is not the TF port's (ImageNet mean / std, crop 0.95): the rw
# models were trained on inputs scaled to [-1, 1]
_HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
PREPROCESSING: dict[str, dict[str, Any]] = {
    "maxvit_rmlp_pico_rw_256": _HALF,
    "maxvit_rmlp_nano_rw_256": _HALF,
    "maxvit_rmlp_tiny_rw_256": _HALF,
    "maxvit_rmlp_small_rw_224": dict(_HALF, crop_pct=0.9),
    "maxvit_rmlp_small_rw_256": _HALF,
    "maxvit_rmlp_base_rw_224": _HALF,
    "maxvit_rmlp_base_rw_384": dict(_HALF, crop_pct=1.0, crop_mode="squash"),
}

register_variants(MaxVit, VARIANTS, family="maxvit", preprocessing=PREPROCESSING)

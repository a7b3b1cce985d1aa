"""The Pyramid Vision Transformer family: PVT v1 and PVT v2 (incl. the linear-SRA pvt_v2_b2_li).

Wang et al. 2021, "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions" (v1); Wang et al. 2022, "PVT v2: Improved Baselines with Pyramid Vision Transformer" (v2).

A four-stage transformer with a CNN-like pyramid (reductions 4, 8, 16, 32). Each stage embeds patches, then
runs transformer blocks whose attention takes keys/values from a spatially reduced map
(:class:`~flexbone.layers.attention.SpatialReductionAttention`).

* **v1**: non-overlapping patch embedding (4x4, then 2x2 convs), absolute position embeddings per stage
  (bilinearly interpolated for inputs other than ``img_size``), a class token in the last stage only, a plain
  MLP. Parameter names are those of the original code (github.com/whai362/PVT, ``classification/pvt.py``:
  ``patch_embed1``, ``pos_embed1``, ``block1.0``, ``norm``, ``cls_token``, ``head``), so its checkpoints
  load with ``strict=True``. timm has no PVT v1.
* **v2**: overlapping patch embedding (7x7 stride 4, then 3x3 stride 2 convs with padding), no position
  embeddings (the depth-wise conv in the MLP gives position information), a per-stage LayerNorm, average
  pooling head. Parameter names are timm's (``patch_embed``, ``stages.1.downsample``, ``stages.0.blocks.0``),
  so timm checkpoints load as they are; checkpoints of the original code are converted by
  :meth:`PyramidVisionTransformerV2._convert_checkpoint`.

Transformers have a fixed output stride of 32: ``output_stride`` 8/16 raises :class:`ConfigError`.
Every variant is one row of ``VARIANTS`` at the bottom.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers import DropPath, create_classifier
from ..layers.attention import SpatialReductionAttention
from ._base import Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage, feature_take_indices
from ._registry import register_model

# Block and stage norms of both versions: LayerNorm with eps 1e-6 (the patch embeddings' and the attention's
# key/value norms keep PyTorch's default 1e-5, as in the reference code).
LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


# ------------------------------------------------------------------------------------------- blocks
class Mlp(nn.Module):
    """Token-wise MLP of PVT v1: fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvMlp(nn.Module):
    """MLP of PVT v2: fc1 -> (ReLU, linear-SRA models only) -> 3x3 depth-wise conv -> GELU -> fc2.

    The depth-wise conv mixes neighbouring tokens, which replaces the position embeddings of v1.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, extra_relu: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        x = self.fc1(x)
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, feat_size[0], feat_size[1])  # (B, N, C) -> (B, C, H, W)
        x = self.dwconv(self.relu(x)).flatten(2).transpose(1, 2)  # -> (B, N, C)
        return self.drop(self.fc2(self.drop(self.act(x))))


class PvtBlock(nn.Module):
    """Pre-norm transformer block: ``x + SRA(LN(x))``, then ``x + MLP(LN(x))``, both with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, conv_mlp: bool,
                 linear: bool = False, qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = LayerNorm6(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio=sr_ratio, linear=linear, qkv_bias=qkv_bias,
                                              attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm6(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = ConvMlp(dim, hidden, proj_drop, extra_relu=linear) if conv_mlp else Mlp(dim, hidden, proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), feat_size))
        return x + self.drop_path2(self.mlp(self.norm2(x), feat_size))


def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, feat_size: tuple[int, int], use_checkpoint: bool) -> torch.Tensor:
    for blk in blocks:
        if use_checkpoint and not torch.jit.is_scripting():
            x = checkpoint(blk, x, feat_size, use_reentrant=False)
        else:
            x = blk(x, feat_size)
    return x


class PatchEmbed(nn.Module):
    """PVT v1: non-overlapping ``patch x patch`` patches -> LayerNorm. ``(B, C, H, W) -> (B, H/p * W/p, D)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        feat_size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), feat_size


class OverlapPatchEmbed(nn.Module):
    """PVT v2: strided conv with overlapping windows -> LayerNorm. ``(B, C, H, W) -> (B, H/s, W/s, D)`` (NHWC)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PvtV2Stage(nn.Module):
    """One PVT v2 stage: (overlapping patch embedding) -> blocks -> LayerNorm.

    Input: ``(B, H, W, C)`` from the stem's patch embedding (first stage, ``downsample=False``) or the previous
    stage's ``(B, C, H, W)`` map; output: ``(B, C_out, H', W')``.
    """

    def __init__(self, dim: int, dim_out: int, depth: int, downsample: bool, num_heads: int, sr_ratio: int,
                 mlp_ratio: float, linear: bool, qkv_bias: bool, proj_drop: float, attn_drop: float,
                 drop_path: Sequence[float]):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = OverlapPatchEmbed(3, 2, dim, dim_out) if downsample else None
        self.blocks = nn.ModuleList([
            PvtBlock(dim_out, num_heads, mlp_ratio, sr_ratio, conv_mlp=True, linear=linear, qkv_bias=qkv_bias,
                     proj_drop=proj_drop, attn_drop=attn_drop, drop_path=drop_path[i])
            for i in range(depth)
        ])
        self.norm = LayerNorm6(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)  # (B, C, H, W) -> (B, H/2, W/2, C_out)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        for blk in self.blocks:  # a loop over the ModuleList here, not in a helper: TorchScript iterates it
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(blk, x, (H, W), use_reentrant=False)
            else:
                x = blk(x, (H, W))
        x = self.norm(x)
        return x.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def _linear_drop_path(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 (first block) to ``drop_path_rate`` (last block), split per stage."""
    return [r.tolist() for r in torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(list(depths))]


def _check_stage_args(output_stride: int, *per_stage: Sequence) -> None:
    """Both PVTs: output stride 32, and one entry per stage (4) in depths, embed_dims, num_heads, sr_ratios and
    mlp_ratios (``per_stage``)."""
    if output_stride != 32:
        raise ConfigError(
            f"output_stride={output_stride} is not supported by the Pyramid Vision Transformers: their patch "
            f"embeddings fix the output stride at 32 (a dilated variant would need re-trained position "
            f"information). Use output_stride=32 and take the stride-8/16 levels from features_only=True."
        )
    if not all(len(v) == 4 for v in per_stage):
        raise ConfigError("depths, embed_dims, num_heads, sr_ratios and mlp_ratios need one entry per stage (4)")


# ------------------------------------------------------------------------------------------- models
class PyramidVisionTransformerV2(Backbone):
    """PVT v2 (see the module docstring). The named variants are rows of ``VARIANTS``.

    Args:
        depths, embed_dims, num_heads, sr_ratios, mlp_ratios: per stage.
        linear: linear spatial-reduction attention (pool to 7x7) and an extra ReLU in the MLP (PVT v2-li).
        qkv_bias: bias in the query / key-value projections.
        global_pool: ``'avg'`` (the paper), ``''`` (no pooling; needs ``num_classes=0``), or another
            :class:`~flexbone.layers.SelectAdaptivePool2d` type.
        drop_rate: dropout before the classifier. proj_drop_rate, attn_drop_rate: dropout after the attention /
            MLP projections and on attention weights. drop_path_rate: stochastic depth, rising linearly per block.
        output_stride: must be 32.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        linear: bool = False,
        qkv_bias: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        _check_stage_args(output_stride, depths, embed_dims, num_heads, sr_ratios, mlp_ratios)
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.patch_embed = OverlapPatchEmbed(7, 4, in_chans, embed_dims[0])  # (B, 3, H, W) -> (B, H/4, W/4, C)
        dpr = _linear_drop_path(drop_path_rate, depths)
        stages, info = [], []
        prev_dim = embed_dims[0]
        for i in range(4):
            stages.append(PvtV2Stage(
                prev_dim, embed_dims[i], depths[i], downsample=i > 0, num_heads=num_heads[i], sr_ratio=sr_ratios[i],
                mlp_ratio=mlp_ratios[i], linear=linear, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[i],
            ))
            prev_dim = embed_dims[i]
            info.append(FeatureStage(embed_dims[i], 4 * 2**i, f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.feature_info = FeatureInfo(info)

        self.num_features = embed_dims[-1]
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.default_cfg = default_cfg(first_conv="patch_embed.proj", classifier="head", crop_pct=0.9,
                                       interpolation="bicubic")
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # the reference initialisation: truncated normal linears, He-normal (fan-out) convs
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, 3, H, W) -> (B, H/4, W/4, C0)
        return self.stages(x)  # -> (B, num_features, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    @staticmethod
    def _convert_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a checkpoint of the original PVT v2 code (github.com/whai362/PVT, ``patch_embed1``,
        ``block1.0``, ``norm1``, ``dwconv.dwconv``) to timm's names; timm-style checkpoints pass unchanged."""
        if "patch_embed1.proj.weight" not in state_dict:
            return state_dict
        out = {}
        for k, v in state_dict.items():
            k = k.replace("dwconv.dwconv", "dwconv")
            k = re.sub(r"^patch_embed1\.", "patch_embed.", k)
            k = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.", k)
            k = re.sub(r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.", k)
            k = re.sub(r"^norm(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm.", k)
            out[k] = v
        return out


class PyramidVisionTransformer(Backbone):
    """PVT v1 (see the module docstring). The named variants are rows of ``VARIANTS``.

    ``forward_features`` returns the normalised tokens of the last stage, ``(B, 1 + H/32 * W/32, C)`` with the
    class token first (as timm's ViTs); ``features_only`` / ``forward_intermediates`` return the
    ``(B, C, H/r, W/r)`` maps of the four stages (the class token dropped, no final norm: the maps the
    original dense-prediction code takes).

    Args:
        img_size: the input size the position embeddings are laid out for (224); other sizes interpolate
            them bilinearly per stage.
        patch_size: side of the first stage's patches (4; the later stages use 2).
        depths, embed_dims, num_heads, sr_ratios, mlp_ratios: per stage.
        global_pool: ``'token'`` (class token, the paper), ``'avg'`` (mean of the patch tokens) or ``''`` (the
            tokens, unpooled; needs ``num_classes=0``).
        drop_rate: dropout before the classifier. pos_drop_rate: dropout after adding position embeddings.
            proj_drop_rate, attn_drop_rate: dropout after the attention / MLP projections and on attention
            weights (the original code uses one ``drop_rate`` for all three). drop_path_rate: stochastic depth,
            rising linearly per block.
        output_stride: must be 32.
    """

    _POOL_TYPES = ("token", "avg", "")

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        img_size: int = 224,
        patch_size: int = 4,
        qkv_bias: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "token",
        output_stride: int = 32,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        _check_stage_args(output_stride, depths, embed_dims, num_heads, sr_ratios, mlp_ratios)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_stages = 4
        self.grid_sizes: list[int] = []  # side of each stage's position-embedding grid at img_size

        dpr = _linear_drop_path(drop_path_rate, depths)
        info = []
        reduction = 1
        for i in range(self.num_stages):
            patch = patch_size if i == 0 else 2
            reduction *= patch
            grid = img_size // reduction
            self.grid_sizes.append(grid)
            num_tokens = grid * grid + (1 if i == self.num_stages - 1 else 0)  # + the class token's position
            # registered in execution order: patch embedding, position embedding, dropout, blocks
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(patch, in_chans if i == 0 else embed_dims[i - 1],
                                                            embed_dims[i]))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, num_tokens, embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(pos_drop_rate))
            setattr(self, f"block{i + 1}", nn.ModuleList([
                PvtBlock(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], conv_mlp=False, qkv_bias=qkv_bias,
                         proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i][j])
                for j in range(depths[i])
            ]))
            info.append(FeatureStage(embed_dims[i], reduction, f"block{i + 1}"))
        self.feature_info = FeatureInfo(info)
        self.norm = LayerNorm6(embed_dims[-1])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))

        self.num_features = embed_dims[-1]
        self.global_pool = ""
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes, global_pool)
        self.default_cfg = default_cfg(first_conv="patch_embed1.proj", classifier="head", crop_pct=0.9,
                                       interpolation="bicubic")
        self._init_weights()

    def _init_weights(self) -> None:
        for i in range(self.num_stages):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in self._POOL_TYPES:
                raise ConfigError(f"unknown global_pool {global_pool!r} for PVT v1; choose 'token', 'avg' or ''")
            self.global_pool = global_pool
        if num_classes > 0 and not self.global_pool:
            raise ConfigError("a classifier needs global pooling: set global_pool='token' or 'avg', or num_classes=0")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _pos_embed(self, i: int, feat_size: tuple[int, int]) -> torch.Tensor:
        """Stage ``i``'s position embedding for an ``H x W`` grid: ``(1, [1 +] H*W, C)``."""
        g = self.grid_sizes[i]
        pos = getattr(self, f"pos_embed{i + 1}")
        prefix, pos = pos[:, : -g * g], pos[:, -g * g:]  # the class token's position (last stage) | the grid's
        if torch.jit.is_scripting():
            resize = feat_size != (g, g)
        else:  # torch.fx: the size is symbolic, so always resample (a same-size bilinear resample is exact)
            resize = is_fx_symbolic_tracing() or feat_size != (g, g)
        if resize:
            C = pos.shape[-1]
            pos = pos.reshape(1, g, g, C).permute(0, 3, 1, 2)  # (1, C, g, g)
            pos = F.interpolate(pos, size=feat_size, mode="bilinear", align_corners=False)
            pos = pos.flatten(2).transpose(1, 2)  # (1, H*W, C)
        return torch.cat((prefix, pos), dim=1) if i == self.num_stages - 1 else pos  # the class token's: last stage

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stage ``i``: ``(B, C_in, H, W)`` -> tokens ``(B, [1 +] h*w, C)`` (the class token first in the last stage)."""
        x, feat_size = getattr(self, f"patch_embed{i + 1}")(x)
        if i == self.num_stages - 1:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = getattr(self, f"pos_drop{i + 1}")(x + self._pos_embed(i, feat_size))
        x = _run_blocks(getattr(self, f"block{i + 1}"), x, feat_size, self.grad_checkpointing and self.training)
        return x, feat_size

    @staticmethod
    def _to_map(x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        # (B, [prefix +] H*W, C) -> (B, C, H, W), prefix tokens dropped
        B, _, C = x.shape
        x = x[:, x.shape[1] - feat_size[0] * feat_size[1]:]
        return x.reshape(B, feat_size[0], feat_size[1], C).permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_stages):
            x, feat_size = self._stage(i, x)
            if i < self.num_stages - 1:
                x = self._to_map(x, feat_size)
        return self.norm(x)  # (B, 1 + H/32 * W/32, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(dim=1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.head(x)

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's signature (see :meth:`Backbone.forward_intermediates`): the ``(B, C, H/r, W/r)`` maps of the
        stages ``indices`` (class token dropped; ``norm`` applies the final norm to the last stage's map), and
        the normalised tokens of ``forward_features`` unless ``intermediates_only``."""
        if output_fmt != "NCHW":
            raise ConfigError(f"PVT v1: output_fmt must be 'NCHW', not {output_fmt!r}")
        take, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        last = max_index if stop_early or intermediates_only else self.num_stages - 1
        for i in range(last + 1):
            x, feat_size = self._stage(i, x)
            if i in take:
                intermediates.append(self._to_map(self.norm(x) if norm and i == self.num_stages - 1 else x, feat_size))
            if i < self.num_stages - 1:
                x = self._to_map(x, feat_size)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if last == self.num_stages - 1 else x), intermediates


# ---------------------------------------------------------------------------------------- variants
# per-stage widths, heads, MLP ratios and key/value reductions shared by PVT v1 and most of v2
_STAGES = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1))

# name -> (model class, keyword arguments). The v2 rows are checked against timm (strict state-dict load,
# equal outputs and parameter counts), the v1 rows against the paper's parameter counts and GFLOPs, in
# tests/test_pvt.py.
VARIANTS: dict[str, tuple[type[Backbone], dict[str, Any]]] = {
    # PVT v1 (Wang et al. 2021, Table 1): depths per stage
    "pvt_tiny": (PyramidVisionTransformer, dict(_STAGES, depths=(2, 2, 2, 2))),
    "pvt_small": (PyramidVisionTransformer, dict(_STAGES, depths=(3, 4, 6, 3))),
    "pvt_medium": (PyramidVisionTransformer, dict(_STAGES, depths=(3, 4, 18, 3))),
    "pvt_large": (PyramidVisionTransformer, dict(_STAGES, depths=(3, 8, 27, 3))),
    # PVT v2 (Wang et al. 2022, Table 1)
    "pvt_v2_b0": (PyramidVisionTransformerV2, dict(_STAGES, depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256))),
    "pvt_v2_b1": (PyramidVisionTransformerV2, dict(_STAGES, depths=(2, 2, 2, 2))),
    "pvt_v2_b2": (PyramidVisionTransformerV2, dict(_STAGES, depths=(3, 4, 6, 3))),
    "pvt_v2_b3": (PyramidVisionTransformerV2, dict(_STAGES, depths=(3, 4, 18, 3))),
    "pvt_v2_b4": (PyramidVisionTransformerV2, dict(_STAGES, depths=(3, 8, 27, 3))),
    "pvt_v2_b5": (PyramidVisionTransformerV2, dict(_STAGES, depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4))),
    "pvt_v2_b2_li": (PyramidVisionTransformerV2, dict(_STAGES, depths=(3, 4, 6, 3), linear=True)),
}


def _build(model_cls: Callable[..., Backbone], variant: dict[str, Any], **kwargs: Any) -> Backbone:
    return model_cls(**{**variant, **kwargs})


for _name, (_cls, _variant) in VARIANTS.items():
    _entry = partial(_build, _cls, _variant)
    _entry.model_cls = _cls  # lets create_model list the accepted options on a bad keyword
    register_model(_entry, name=_name, family="pvt")

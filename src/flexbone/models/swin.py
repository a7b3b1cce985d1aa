"""Swin Transformer (Liu et al. 2021): shifted-window attention in four stages, as timm's ``SwinTransformer``.

Parameter names, buffers and arithmetic follow timm (channels-last ``(B, H, W, C)`` activations between
blocks, unfused window attention with a relative position bias table, the -100 shift mask), so timm's
``swin_*`` checkpoints load with ``strict=True`` and give the same outputs (``tests/test_swin.py``).

Feature levels are the four stages (timm: ``layers.i``, strides 4..32); ``features_only`` returns them as
timm's Swin feature extractor does, channels-last ``(B, H, W, C)`` maps (``model.output_fmt == 'NHWC'``), and
``forward_intermediates`` as timm's, ``(B, C, H, W)`` (``output_fmt='NHWC'`` gives them channels-last too).
Stages of blocks, each entered through patch merging, are what SN-Net stitches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers.drop import DropPath
from ..layers.pos_embed import resize_rel_pos_tables
from ._base import IMAGENET_MEAN, IMAGENET_STD, Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants
from .vit import Mlp, PatchEmbed, _take_indices


# -------------------------------------------------------------------------------------------- blocks
def window_partition(x: torch.Tensor, win: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C) -> (B * num_windows, win_h, win_w, C)``."""
    B, H, W, C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]  # indexing, not unpacking: torch.fx traces it
    x = x.view(B, H // win[0], win[0], W // win[1], win[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, win[0], win[1], C)


def window_reverse(windows: torch.Tensor, win: tuple[int, int], H: int, W: int) -> torch.Tensor:
    """``(B * num_windows, win_h, win_w, C) -> (B, H, W, C)``."""
    C = windows.shape[-1]
    x = windows.view(-1, H // win[0], W // win[1], win[0], win[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def relative_position_index(win_h: int, win_w: int) -> torch.Tensor:
    """For every pair of tokens in a window, the row of the bias table that holds their offset's bias."""
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()  # (N, N, 2), offsets
    rel[:, :, 0] += win_h - 1  # shift to start from 0
    rel[:, :, 1] += win_w - 1
    rel[:, :, 0] *= 2 * win_w - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    """Multi-head attention inside each window, with a learned bias per relative offset and head."""

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.window_area = window_size[0] * window_size[1]
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(*window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj, self.proj_drop = nn.Linear(dim, dim), nn.Dropout(proj_drop)
        self.softmax = nn.Softmax(dim=-1)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N = x.shape[0], x.shape[1]  # (B * windows, tokens per window, C)
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:  # (windows, N, N): 0 within a region, -100 across the seams of the shift
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        x = self.attn_drop(self.softmax(attn)) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))


class SwinBlock(nn.Module):
    """Window attention (cyclically shifted by half a window in odd blocks) then an MLP, both pre-norm."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int, shift: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, norm_layer: Any = nn.LayerNorm):
        super().__init__()
        # a map no larger than the window is one window, and then nothing to shift (as timm)
        self.window_size = tuple(min(r, window_size) for r in input_resolution)
        self.shift_size = tuple(0 if r <= window_size or not shift else window_size // 2 for r in input_resolution)
        self.input_resolution = input_resolution
        self.window_area = self.window_size[0] * self.window_size[1]
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.register_buffer("attn_mask", self._shift_mask(), persistent=False)

    def _shift_mask(self) -> torch.Tensor | None:
        if not any(self.shift_size):
            return None
        win, shift = self.window_size, self.shift_size
        H = math.ceil(self.input_resolution[0] / win[0]) * win[0]
        W = math.ceil(self.input_resolution[1] / win[1]) * win[1]
        img = torch.zeros(1, H, W, 1)
        region = 0  # label the 3 x 3 regions the roll brings together; attention across labels is masked
        for h in ((0, -win[0]), (-win[0], -shift[0]), (-shift[0], None)):
            for w in ((0, -win[1]), (-win[1], -shift[1]), (-shift[1], None)):
                img[:, h[0]:h[1], w[0]:w[1], :] = region
                region += 1
        labels = window_partition(img, win).view(-1, self.window_area)
        diff = labels.unsqueeze(1) - labels.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        H, W, C = x.shape[1], x.shape[2], x.shape[3]
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        pad_h = (self.window_size[0] - H % self.window_size[0]) % self.window_size[0]
        pad_w = (self.window_size[1] - W % self.window_size[1]) % self.window_size[1]
        x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = x.shape[1], x.shape[2]
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)
        windows = self.attn(windows, mask=self.attn_mask).view(-1, self.window_size[0], self.window_size[1], C)
        x = window_reverse(windows, self.window_size, Hp, Wp)[:, :H, :W, :].contiguous()
        return torch.roll(x, shifts=self.shift_size, dims=(1, 2)) if shifted else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens concatenated, normalised and projected: ``(B, H, W, C) -> (B, H/2, W/2, 2C)``."""

    def __init__(self, dim: int, out_dim: int, norm_layer: Any = nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], x.shape[3]
        x = nn.functional.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        H, W = x.shape[1], x.shape[2]
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)  # timm's channel order
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Patch merging (all stages but the first), then ``depth`` blocks alternating plain and shifted windows."""

    def __init__(self, dim: int, out_dim: int, input_resolution: tuple[int, int], depth: int, downsample: bool,
                 num_heads: int, window_size: int, drop_path: Sequence[float], **block_kwargs: Any):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        res = tuple((r + 1) // 2 for r in input_resolution) if downsample else input_resolution
        self.blocks = nn.Sequential(*[
            SwinBlock(out_dim, res, num_heads, window_size, shift=i % 2 == 1, drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ChannelsLastHead(nn.Module):
    """Global average over ``(B, H, W, C)`` then a linear classifier (timm's ``ClassifierHead``, NHWC input)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        self.in_features, self.pool_type = in_features, pool_type
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type:
            x = x.mean((1, 2))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class _NormHead(nn.Module):
    """The final norm and the head as one module (an SN-Net path's last step)."""

    def __init__(self, norm: nn.Module, head: nn.Module):
        super().__init__()
        self.norm, self.head = norm, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


# --------------------------------------------------------------------------------------------- model
class SwinTransformer(Backbone):
    """Swin Transformer: a 4x4 patch embedding, four stages (widths ``embed_dim * 2**i``), norm, pooled head.

    ``forward_features`` and the ``features_only`` maps are channels-last, ``(B, H, W, C)``, as timm's.

    Args:
        img_size: the square input size (masks and window sizes are made for it; inputs must have it).
        patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias: the architecture.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, rising linearly over all
            blocks (default 0.1, as timm). proj_drop_rate, attn_drop_rate: dropout inside the blocks.
    """

    output_fmt = "NHWC"  # timm's attribute: the stages' layout (forward_features, features_only)

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "avg", embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ConfigError(f"global_pool must be 'avg' or '' for Swin, not {global_pool!r}")
        if len(depths) != len(num_heads):
            raise ConfigError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} need one entry per stage")
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate
        widths = [embed_dim * 2 ** i for i in range(len(depths))]
        self.num_features = widths[-1]
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer=nn.LayerNorm,
                                      output_fmt="nhwc")
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear over all blocks
        stages, info, in_dim, res, start = [], [], embed_dim, self.patch_embed.grid_size, 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            stages.append(SwinStage(in_dim, widths[i], res, depth, i > 0, heads, window_size, dpr[start:start + depth],
                                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                                    attn_drop=attn_drop_rate))
            res = tuple((r + 1) // 2 for r in res) if i > 0 else res
            info.append(FeatureStage(widths[i], patch_size * 2 ** i, f"layers.{i}"))
            in_dim, start = widths[i], start + depth
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ChannelsLastHead(self.num_features, num_classes, global_pool, drop_rate)
        self.feature_info = FeatureInfo(info)
        for m in self.modules():  # timm's default init: truncated normal 0.02 for every linear, zero bias
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def _convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint made for another input size (other windows) loads as timm loads it: relative-position
        tables resized to this model's windows (``layers.pos_embed``)."""
        return resize_rel_pos_tables(self, state)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = ChannelsLastHead(self.num_features, num_classes, self.global_pool, self.drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for stage in self.layers:
                x = stage.downsample(x)
                for blk in stage.blocks:
                    x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = self.layers(x)
        return self.norm(x)  # (B, H/32, W/32, C)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's ``forward_intermediates``: stage outputs as ``(B, C, H, W)``; ``norm`` normalises the last.

        ``output_fmt='NHWC'`` (timm's Swin takes only ``'NCHW'`` here) returns the stage outputs as they run,
        ``(B, H, W, C)``: the maps of ``features_only``, as timm's feature extractor gives them.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigError(f"output_fmt must be 'NCHW' or 'NHWC' for Swin, not {output_fmt!r}")
        take = _take_indices(len(self.layers), indices)
        x = self.patch_embed(x)
        last = max(take) if stop_early else len(self.layers) - 1
        inter = []
        for i, stage in enumerate(self.layers[:last + 1]):
            x = stage(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.layers) - 1 else x
                inter.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return inter
        return (self.norm(x) if last == len(self.layers) - 1 else x), inter

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: keep the stages up to the deepest of ``indices``; the norm and head go with a cut trunk."""
        take = _take_indices(len(self.layers), indices)
        prune_end = max(take) < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.layers = self.layers[:max(take) + 1]
        if prune_end:
            self.num_features = self.feature_info[max(take)]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    def stitch_view(self):
        """Stages of channels-last blocks, each entered through its patch merging (``flexbone.stitch``)."""
        from ..stitch.anchors import AnchorView, StitchStage

        stages = [StitchStage(list(s.blocks), info["num_chs"], None if i == 0 else s.downsample)
                  for i, (s, info) in enumerate(zip(self.layers, self.feature_info))]
        return AnchorView(self.patch_embed, stages, _NormHead(self.norm, self.head), "nhwc")


# ------------------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class SwinSpec:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 7
    patch_size: int = 4


VARIANTS: dict[str, SwinSpec] = {
    "swin_tiny_patch4_window7_224": SwinSpec(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_small_patch4_window7_224": SwinSpec(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_base_patch4_window7_224": SwinSpec(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_large_patch4_window7_224": SwinSpec(192, (2, 2, 18, 2), (6, 12, 24, 48)),
}


def _build(spec: SwinSpec, **kwargs: Any) -> SwinTransformer:
    model = SwinTransformer(patch_size=spec.patch_size, embed_dim=spec.embed_dim, depths=spec.depths,
                            num_heads=spec.num_heads, window_size=spec.window_size, **kwargs)
    size = model.patch_embed.img_size[0]
    model.default_cfg = default_cfg(input_size=(3, size, size), pool_size=(size // 32, size // 32), crop_pct=0.9,
                                    interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_MEAN,
                                    std=IMAGENET_STD, first_conv="patch_embed.proj", classifier="head.fc")
    return model


register_variants(SwinTransformer, VARIANTS, family="swin", build=_build)

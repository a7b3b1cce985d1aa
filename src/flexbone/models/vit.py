"""Vision Transformer (Dosovitskiy et al. 2021) and DeiT (Touvron et al. 2021), as timm's ``VisionTransformer``.

Parameter names, shapes and arithmetic follow timm's class token / learned position embedding / pre-norm
design, so timm checkpoints of ``vit_*`` and ``deit_*`` load with ``strict=True`` and give the same outputs
(``tests/test_vit.py``). DeiT and ViT differ only in their preprocessing (``default_cfg``). DeiT's distilled
models (``deit_*_distilled_*``, timm's ``VisionTransformerDistilled``) are the option ``distilled=True``: a
distillation token after the class token and a second head ``head_dist`` reading it, the two heads averaged
(``tests/test_deit_distilled.py``).

Feature levels are the blocks (timm: ``blocks.i``, stride = patch size); ``features_only`` returns the
patch tokens of the chosen blocks as ``(B, C, H/p, W/p)`` maps. The blocks are the units an SN-Net stitches
(``stitch_view``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..layers.drop import DropPath
from ..layers.pos_embed import resample_abs_pos_embed
from ._base import IMAGENET_MEAN, IMAGENET_STD, Backbone, default_cfg
from ._features import FeatureInfo, FeatureStage
from ._registry import register_variants

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


# -------------------------------------------------------------------------------------------- blocks
class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches -> tokens: ``(B, C, H, W) -> (B, HW/p^2, D)`` (or ``'nhwc'``)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, norm_layer: Any = None,
                 output_fmt: str = "nlc", strict_img_size: bool = True):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.output_fmt, self.strict_img_size = output_fmt, strict_img_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    @torch.jit.unused
    def _check_size(self, x: torch.Tensor) -> None:
        if self.strict_img_size and not isinstance(x, torch.fx.Proxy) and tuple(x.shape[-2:]) != self.img_size:
            raise ConfigError(f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size} "
                              f"(create the model with img_size={x.shape[-1]}, or dynamic_img_size=True)")

    def grid(self, x: torch.Tensor) -> List[int]:
        """The patch grid of the image batch ``x``: ``[H / patch, W / patch]``."""
        return [x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            self._check_size(x)
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, D, H/p, W/p) -> (B, H/p, W/p, D)
        if self.output_fmt == "nlc":
            x = x.flatten(1, 2)
        return self.norm(x)


class Mlp(nn.Module):
    """``fc1 -> act -> fc2`` (timm's ``Mlp``; dropout after each as timm's ``proj_drop``)."""

    def __init__(self, dim: int, hidden: int, act_layer: Any = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(dim, hidden), act_layer(), nn.Dropout(drop)
        self.fc2, self.drop2 = nn.Linear(hidden, dim), nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over all tokens, one fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj, self.proj_drop = nn.Linear(dim, dim), nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N = x.shape[0], x.shape[1]  # (indexing, not unpacking: torch.fx traces it)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, -1)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, proj_drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_layer: Any = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TokenStem(nn.Module):
    """Patches -> tokens with the class token prepended and the position embedding added (timm's
    ``patch_embed`` + ``_pos_embed`` + ``norm_pre``). Holds the model's own parameters (shared, not copied)."""

    def __init__(self, model: "VisionTransformer"):
        super().__init__()
        self.patch_embed, self.pos_drop, self.norm_pre = model.patch_embed, model.pos_drop, model.norm_pre
        self.cls_token, self.pos_embed = model.cls_token, model.pos_embed
        self.dynamic_img_size = model.dynamic_img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed.grid(x)
        x = add_class_and_position(self.patch_embed(x), grid, self.cls_token, self.pos_embed, self.dynamic_img_size)
        return self.norm_pre(self.pos_drop(x))


def add_class_and_position(tokens: torch.Tensor, grid: List[int], cls_token: torch.Tensor, pos_embed: torch.Tensor,
                           dynamic: bool, dist_token: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(B, N, D)`` patch tokens of a ``grid`` -> ``(B, P + N, D)``: the class token (then DeiT's distillation
    token, if given: P = 2) prepended, the position embedding (one entry per prefix token and patch) added --
    resampled to ``grid`` when ``dynamic`` (timm's ``dynamic_img_size``)."""
    prefix = [cls_token.expand(tokens.shape[0], -1, -1)]
    if dist_token is not None:
        prefix.append(dist_token.expand(tokens.shape[0], -1, -1))
    if dynamic:
        pos_embed = resample_abs_pos_embed(pos_embed, grid, len(prefix))
    return torch.cat(prefix + [tokens], dim=1) + pos_embed


class TokenHead(nn.Module):
    """Final norm, then the class token (or the mean of the patch tokens), then the classifier."""

    def __init__(self, model: "VisionTransformer"):
        super().__init__()
        self.norm, self.fc_norm, self.head_drop, self.head = model.norm, model.fc_norm, model.head_drop, model.head
        self.global_pool, self.num_prefix_tokens = model.global_pool, model.num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = x[:, self.num_prefix_tokens:].mean(1) if self.global_pool == "avg" else x[:, 0]
        return self.head(self.head_drop(self.fc_norm(x)))


# --------------------------------------------------------------------------------------------- model
class VisionTransformer(Backbone):
    """ViT / DeiT: patch embedding, class token, ``depth`` pre-norm blocks, final norm, linear head.

    Args:
        img_size: the square input size the position embedding is made for (inputs must have it, unless
            ``dynamic_img_size``).
        patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the architecture.
        global_pool: ``'token'`` (the class token, ViT/DeiT) or ``'avg'`` (mean of the patch tokens, with a
            norm after pooling instead of before, as timm's ``fc_norm``).
        drop_rate: dropout before the head (and after position embedding, attention projection and MLP, as
            timm's ``pos_drop_rate`` / ``proj_drop_rate`` when ``proj_drop_rate`` is given).
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        dynamic_img_size: accept any input size whose sides are multiples of the patch (timm's option): the
            position embedding, made for ``img_size``, is resampled to each input's patch grid in the forward.
        distilled: DeiT's distillation token (after the class token) and its head ``head_dist``; the output is
            the mean of the two heads' logits, or both logits in training after ``set_distilled_training()``
            (timm's ``VisionTransformerDistilled``; ``global_pool`` must be ``'token'``).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 dynamic_img_size: bool = False, distilled: bool = False):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ConfigError(f"global_pool must be 'token' or 'avg' for a ViT, not {global_pool!r}")
        if distilled and global_pool != "token":
            raise ConfigError(f"a distilled DeiT reads its class and distillation tokens: global_pool must be "
                              f"'token', not {global_pool!r}")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_classes, self.global_pool = num_classes, global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 2 if distilled else 1  # the class token (and the distillation token)
        self.patch_size = patch_size

        self.dynamic_img_size = dynamic_img_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=not dynamic_img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # (None, not a parameter, without distillation: timm's state dict names; TorchScript drops the branch)
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens,
                                                  embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm_pre = nn.Identity()
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear in the block index
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, dpr[i], norm_layer)
            for i in range(depth)])
        use_fc_norm = global_pool == "avg"
        self.norm = norm_layer(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()) if distilled else None
        self.distilled_training = False  # timm's switch: both logits in training, for a distillation loss
        self.feature_info = FeatureInfo([FeatureStage(embed_dim, patch_size, f"blocks.{i}") for i in range(depth)])
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's default ('') scheme: truncated normal 0.02 for position embedding and linears, tiny class token
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias) if m.bias is not None else None

    def _convert_checkpoint(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint made for another input size loads as timm loads it: its position embedding is resampled
        to this model's patch grid (``layers.pos_embed``)."""
        pos = state.get("pos_embed")
        if pos is not None and pos.ndim == 3 and pos.shape != self.pos_embed.shape \
                and pos.shape[-1] == self.pos_embed.shape[-1] and _is_square(pos.shape[1] - self.num_prefix_tokens):
            # (a checkpoint with other prefix tokens, DeiT's distilled or not, stays mis-shaped: a clear mismatch)
            state = {**state, "pos_embed": resample_abs_pos_embed(pos, list(self.patch_embed.grid_size),
                                                                  self.num_prefix_tokens)}
        return state

    def set_input_size(self, img_size: int | tuple[int, int] | None = None, patch_size: int | None = None) -> None:
        """timm's: made for another (square) input size, the position embedding resampled to the new patch grid
        as a checkpoint's is when it loads; ``default_cfg['input_size']`` follows. The patch size stays."""
        if patch_size is not None and (patch_size, patch_size) != self.patch_embed.patch_size:
            raise ConfigError(f"set_input_size: the patch size stays {self.patch_size} (resampling the patch "
                              f"projection to {patch_size} is not supported)")
        if img_size is None:
            return
        h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        if h != w:
            raise ConfigError(f"set_input_size: a ViT here takes a square img_size, not {h}x{w} (dynamic_img_size=True "
                              "takes any size)")
        pe = self.patch_embed
        pe.img_size, pe.grid_size = (h, h), (h // self.patch_size, h // self.patch_size)
        pe.num_patches = pe.grid_size[0] * pe.grid_size[1]
        with torch.no_grad():
            self.pos_embed = nn.Parameter(resample_abs_pos_embed(self.pos_embed, list(pe.grid_size),
                                                                 self.num_prefix_tokens),
                                          requires_grad=self.pos_embed.requires_grad)
        self.default_cfg = {**self.default_cfg, "input_size": (self.default_cfg["input_size"][0], h, h)}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); a distilled DeiT's two heads both."""
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ConfigError(f"global_pool must be 'token', 'avg' or '', not {global_pool!r}")
            if self.head_dist is not None and global_pool == "avg":
                raise ConfigError("a distilled DeiT reads its class and distillation tokens: global_pool must be "
                                  "'token', not 'avg'")
            self.global_pool = global_pool or "token"
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        """The classifier; a distilled DeiT's ``(head, head_dist)`` (timm's)."""
        return self.head if self.head_dist is None else (self.head, self.head_dist)

    @torch.jit.unused
    def set_distilled_training(self, enable: bool = True) -> None:
        """A distilled DeiT in training returns ``(class logits, distillation logits)`` for a distillation loss
        (timm's switch; off: the mean of the two, in training as in eval)."""
        if self.head_dist is None:
            raise ConfigError("set_distilled_training: only a distilled DeiT (deit_*_distilled_*) has a "
                              "distillation head")
        self.distilled_training = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            for blk in self.blocks:
                x = checkpoint(blk, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.norm(x)  # (B, 1 + N, D)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed.grid(x)
        x = add_class_and_position(self.patch_embed(x), grid, self.cls_token, self.pos_embed, self.dynamic_img_size,
                                   self.dist_token)
        return self.norm_pre(self.pos_drop(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_dist is not None:  # DeiT distilled: the class token through head, the distillation token
            cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])  # through head_dist
            if pre_logits:
                return (cls + dist) / 2
            cls, dist = self.head(cls), self.head_dist(dist)
            if self.distilled_training and self.training and not torch.jit.is_scripting():
                return cls, dist  # (timm's; a scripted model averages as in eval)
            return (cls + dist) / 2
        x = x[:, self.num_prefix_tokens:].mean(1) if self.global_pool == "avg" else x[:, 0]
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    @torch.jit.unused
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              return_prefix_tokens: bool = False):
        """timm's ``forward_intermediates``: the outputs of blocks ``indices`` (``None`` all, int the last n),
        patch tokens only, as ``(B, D, H/p, W/p)`` maps (``'NCHW'``) or ``(B, N, D)`` (``'NLC'``)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ConfigError(f"output_fmt must be 'NCHW' or 'NLC', not {output_fmt!r}")
        take = _take_indices(len(self.blocks), indices)
        B, _, H, W = x.shape
        x = self._embed(x)
        last = max(take) if stop_early else len(self.blocks) - 1
        inter, prefix = [], []
        for i, blk in enumerate(self.blocks[:last + 1]):
            x = blk(x)
            if i in take:
                y = self.norm(x) if norm else x
                prefix.append(y[:, :self.num_prefix_tokens])
                y = y[:, self.num_prefix_tokens:]
                if output_fmt == "NCHW":
                    y = y.reshape(B, H // self.patch_size, W // self.patch_size, -1).permute(0, 3, 1, 2).contiguous()
                inter.append(y)
        if return_prefix_tokens:
            inter = list(zip(inter, prefix))
        if intermediates_only:
            return inter
        return self.norm(x), inter

    def as_features(self, out_indices: Sequence[int] | int | None = None) -> "VisionTransformer":
        """``features_only``: the last three blocks by default, as timm's ViT feature extractor."""
        return super().as_features(3 if out_indices is None else out_indices)

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: keep the blocks up to the deepest of ``indices`` (optionally drop the norm and the head)."""
        take = _take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max(take) + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take

    def stitch_view(self):
        """The blocks as one stitchable stage of tokens (``flexbone.stitch``)."""
        from ..stitch.anchors import AnchorView, StitchStage

        if self.dist_token is not None:  # a second prefix token and head that the stitched paths would not carry
            raise ConfigError("a distilled DeiT (distillation token, two heads) cannot be an SN-Net anchor: "
                              "use the deit_*_patch16_224 models without 'distilled'")
        return AnchorView(TokenStem(self), [StitchStage(list(self.blocks), self.embed_dim)], TokenHead(self), "nlc",
                          plain=True)


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


def _take_indices(num_blocks: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's ``feature_take_indices``: ``None`` all blocks, an int the last ``n``, a sequence those (negative ok)."""
    if indices is None:
        return list(range(num_blocks))
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ConfigError(f"indices={indices}: the model has {num_blocks} blocks")
        return list(range(num_blocks - indices, num_blocks))
    out = []
    for i in indices:
        if not -num_blocks <= i < num_blocks:
            raise ConfigError(f"block index {i} out of range for {num_blocks} blocks")
        out.append(i % num_blocks)
    return out


# ------------------------------------------------------------------------------------------ variants
@dataclass(frozen=True)
class ViTSpec:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    distilled: bool = False  # DeiT's distillation token and head
    img_size: int = 224


# name: (architecture, preprocessing). DeiT: ImageNet mean/std; ViT (augreg): Inception mean/std. Both bicubic, crop 0.9
# (at 384 px: 1.0).
_DEIT_CFG = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
_VIT_CFG = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD)
VARIANTS: dict[str, tuple[ViTSpec, dict[str, Any]]] = {
    "deit_tiny_patch16_224": (ViTSpec(16, 192, 12, 3), _DEIT_CFG),
    "deit_small_patch16_224": (ViTSpec(16, 384, 12, 6), _DEIT_CFG),
    "deit_base_patch16_224": (ViTSpec(16, 768, 12, 12), _DEIT_CFG),
    "deit_tiny_distilled_patch16_224": (ViTSpec(16, 192, 12, 3, distilled=True), _DEIT_CFG),
    "deit_small_distilled_patch16_224": (ViTSpec(16, 384, 12, 6, distilled=True), _DEIT_CFG),
    "deit_base_distilled_patch16_224": (ViTSpec(16, 768, 12, 12, distilled=True), _DEIT_CFG),
    "deit_base_distilled_patch16_384": (ViTSpec(16, 768, 12, 12, distilled=True, img_size=384),
                                        dict(_DEIT_CFG, crop_pct=1.0)),
    "vit_tiny_patch16_224": (ViTSpec(16, 192, 12, 3), _VIT_CFG),
    "vit_small_patch16_224": (ViTSpec(16, 384, 12, 6), _VIT_CFG),
    "vit_small_patch32_224": (ViTSpec(32, 384, 12, 6), _VIT_CFG),
    "vit_base_patch16_224": (ViTSpec(16, 768, 12, 12), _VIT_CFG),
    "vit_base_patch32_224": (ViTSpec(32, 768, 12, 12), _VIT_CFG),
    "vit_large_patch16_224": (ViTSpec(16, 1024, 24, 16), _VIT_CFG),
}


def _build(variant: tuple[ViTSpec, dict[str, Any]], **kwargs: Any) -> VisionTransformer:
    spec, cfg = variant
    kwargs.setdefault("img_size", spec.img_size)
    kwargs.setdefault("distilled", spec.distilled)
    model = VisionTransformer(patch_size=spec.patch_size, embed_dim=spec.embed_dim, depth=spec.depth,
                              num_heads=spec.num_heads, **kwargs)
    size = model.patch_embed.img_size[0]
    # a distilled model's classifier is its two heads (timm's cfg: a tuple; fine-tuning resets both)
    classifier = ("head", "head_dist") if model.head_dist is not None else "head"
    model.default_cfg = default_cfg(**{**dict(input_size=(3, size, size), crop_pct=0.9, interpolation="bicubic",
                                              fixed_input_size=not model.dynamic_img_size, pool_size=None,
                                              first_conv="patch_embed.proj", classifier=classifier), **cfg})
    return model


register_variants(VisionTransformer, VARIANTS, family="vit", build=_build)

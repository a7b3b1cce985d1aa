"""Spatial-reduction attention (SRA) of the Pyramid Vision Transformers.

Wang et al. 2021, "Pyramid Vision Transformer" (PVT v1) and 2022, "PVT v2: Improved Baselines". Queries come
from every token; keys and values from a spatially reduced copy of the map, so that attention over the
high-resolution early stages stays affordable:

* ``sr_ratio > 1``: a ``sr_ratio x sr_ratio`` conv with the same stride shrinks the map by ``sr_ratio**2``
  tokens, then LayerNorm (PVT v1, PVT v2).
* ``linear=True``: adaptive average pooling to a fixed ``pool_size x pool_size`` grid, a 1x1 conv, LayerNorm
  and GELU ("linear SRA" of PVT v2-li): the cost becomes linear in the number of tokens.
* otherwise plain multi-head self-attention.

Parameter names (``q``, ``kv``, ``proj``, ``sr``, ``norm``) are those of timm's ``pvt_v2`` and of the original
PVT code, so their checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SpatialReductionAttention(nn.Module):
    """Multi-head attention over ``(B, N, C)`` tokens whose keys/values come from a reduced ``H x W`` map.

    Args:
        dim: token channels ``C`` (a multiple of ``num_heads``).
        num_heads: attention heads.
        sr_ratio: spatial reduction of the key/value map (1 = none).
        linear: linear SRA (pool to ``pool_size`` and 1x1 conv) instead of the strided-conv reduction.
        pool_size: side of the pooled key/value grid of linear SRA (7 in PVT v2-li).
        qkv_bias: bias in the query and key/value projections.
        attn_drop: dropout on the attention weights. proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int = 8, sr_ratio: int = 1, linear: bool = False, pool_size: int = 7,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.attn_drop = attn_drop  # a probability: dropout is applied inside scaled_dot_product_attention

        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # the key/value source: reduced map -> LayerNorm (-> GELU for linear SRA)
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if linear else None
        if linear:
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
        else:
            self.sr = None
        self.norm = nn.LayerNorm(dim) if self.sr is not None else None  # eps 1e-5, as the reference code
        self.act = nn.GELU() if linear else None

    def _reduce(self, x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        """Key/value tokens: ``(B, H*W, C) -> (B, M, C)`` with ``M = H*W / sr_ratio**2`` (or ``pool_size**2``)."""
        if self.sr is None:
            return x
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, feat_size[0], feat_size[1])  # (B, C, H, W)
        if self.pool is not None:
            x = self.pool(x)
        x = self.sr(x).flatten(2).transpose(1, 2)  # (B, M, C)
        x = self.norm(x)
        return self.act(x) if self.act is not None else x

    def forward(self, x: torch.Tensor, feat_size: tuple[int, int]) -> torch.Tensor:
        """``x``: ``(B, N, C)`` tokens of an ``H x W`` map (``feat_size = (H, W)``, ``N = H*W`` when reducing)."""
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, d)
        kv = self.kv(self._reduce(x, feat_size))
        k, v = kv.reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, M, d)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        kind = "linear" if self.linear else f"sr_ratio={self.sr_ratio}"
        return f"num_heads={self.num_heads}, {kind}"

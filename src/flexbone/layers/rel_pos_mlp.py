"""Relative-position attention bias from an MLP over log-spaced offsets (the idea of Swin V2, Liu et al. 2022).

A table of learned biases (one per relative offset and head) has ``(2p-1)^2`` free entries per head and no
notion that nearby offsets are alike. Here a small MLP maps each offset ``(dy, dx)`` -- squashed as
``sign(d) * log(1 + |d|)`` so that near offsets are far apart and far ones close -- to one bias per head: the
bias is smooth in the offset and its parameters do not depend on the window size.

This is timm's ``RelPosMlp`` in its default ``'cr'`` mode (no sigmoid gain), as timm's ``maxvit_rmlp_*`` and
``coatnet_rmlp_*`` models use it; parameter names ``mlp.fc1`` / ``mlp.fc2`` are timm's, so checkpoints load.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn


def relative_position_index(window_size: int) -> torch.Tensor:
    """For query token ``a`` and key token ``b`` of a ``p x p`` window (row-major), the row of the offset
    ``(ya - yb, xa - xb)`` in a row-major ``(2p-1, 2p-1)`` table of offsets: ``(p*p, p*p)`` indices.

    Query minus key (Swin's and timm's convention; TF MaxViT's table, ``maxvit.relative_position_index``, is
    indexed key minus query, the transpose of this)."""
    p = window_size
    pos = torch.arange(p)
    rel = pos[:, None] - pos[None, :] + p - 1  # (p, p): rel[a, b] = a - b + p - 1, in [0, 2p-2]
    index = rel[:, None, :, None] * (2 * p - 1) + rel[None, :, None, :]  # (ya, xa, yb, xb)
    return index.reshape(p * p, p * p)


def relative_log_coords(window_size: int) -> torch.Tensor:
    """Every offset ``(dy, dx)`` of a ``p x p`` window, ``d`` in ``-(p-1)..p-1``, as ``sign(d) * ln(1 + |d|)``:
    ``(2p-1, 2p-1, 2)`` (float32)."""
    d = torch.arange(-(window_size - 1), window_size, dtype=torch.float32)
    coords = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)  # [i, j] = (d[i], d[j])
    return torch.sign(coords) * torch.log(1.0 + coords.abs())  # (not log1p: timm's rounding, bit for bit)


class RelPosMlp(nn.Module):
    """Attention bias ``(1, heads, p*p, p*p)`` for the tokens of a ``p x p`` window, from a 2-layer MLP of the offsets.

    Args:
        window_size: ``p``, the side of the (square) window.
        num_heads: biases per offset (one per attention head).
        hidden_dim: the MLP's hidden width (timm's MaxViT: 512).
        drop: dropout on the hidden layer in training (timm's fixed 0.125).
    """

    def __init__(self, window_size: int, num_heads: int, hidden_dim: int = 512, drop: float = 0.125):
        super().__init__()
        self.window_size, self.num_heads = window_size, num_heads
        self.mlp = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(2, hidden_dim)),
            ("act", nn.ReLU()),
            ("drop1", nn.Dropout(drop)),
            ("fc2", nn.Linear(hidden_dim, num_heads)),
        ]))
        # derived from window_size alone: not part of the state dict (as timm's)
        self.register_buffer("relative_position_index", relative_position_index(window_size).flatten(),
                             persistent=False)
        self.register_buffer("rel_coords_log", relative_log_coords(window_size), persistent=False)

    def get_bias(self) -> torch.Tensor:
        """``(1, heads, p*p, p*p)``, added to the attention logits of every window."""
        n = self.window_size * self.window_size
        bias = self.mlp(self.rel_coords_log).reshape(-1, self.num_heads)  # ((2p-1)^2, heads): one row per offset
        bias = bias[self.relative_position_index].view(n, n, self.num_heads)  # (queries, keys, heads)
        # 4-d and contiguous as timm's: torch's CPU attention kernel then rounds exactly as it does for timm's
        # model (a 3-d mask gave differences of ~1 ulp)
        return bias.permute(2, 0, 1).unsqueeze(0).contiguous()

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"

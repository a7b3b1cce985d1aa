"""Least-squares initialisation of stitching layers (SN-Net, after Csiszárik et al.'s "Dr. Frankenstein").

Given the front anchor's activations ``X`` (``N x D1``, one row per token or pixel) and the end anchor's
``Y`` (``N x D2``) on the same images, the stitch ``y = W x + b`` that best maps one onto the other is the
least-squares solution of ``[X, 1] A = Y``: ``A = pinv([X, 1]) Y``, ``W = A[:D1].T``, ``b = A[D1]``.
"""
from __future__ import annotations

import torch


def least_squares_stitch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` minimising ``||x W^T + b - y||_F`` for rows ``x`` (``N x D1``) and ``y`` (``N x D2``).

    Solved with the Moore-Penrose pseudo-inverse, as the reference does, but in float64 (the float32
    pseudo-inverse of a 19,700 x 385 matrix loses digits); returned in ``x``'s dtype.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"least squares needs (N, D1) and (N, D2) rows, got {tuple(x.shape)} and {tuple(y.shape)}")
    x64 = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], 1)  # the ones column fits b
    a = torch.linalg.pinv(x64) @ y.double()  # (D1 + 1, D2)
    return a[:-1].T.to(x.dtype).contiguous(), a[-1].to(x.dtype).contiguous()


def averaged_stitch(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer shared by several stitch positions gets the mean of each position's solution (as the reference)."""
    solutions = [least_squares_stitch(x, y) for x, y in pairs]
    return (torch.stack([w for w, _ in solutions]).mean(0), torch.stack([b for _, b in solutions]).mean(0))

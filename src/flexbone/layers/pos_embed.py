"""Resampling a learned absolute position embedding to another patch grid (a checkpoint trained at another input
size): the rule timm applies when it loads a ViT checkpoint (``timm.layers.resample_abs_pos_embed``)."""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F


def resample_abs_pos_embed(pos_embed: torch.Tensor, grid: List[int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """``(1, prefix + h*w, C)`` -> ``(1, prefix + grid[0]*grid[1], C)``: the prefix tokens' entries (class token)
    kept, the square ``h x w`` grid of the patch tokens resized bicubically with antialiasing (timm's defaults),
    in float32 and returned in the input's dtype. (TorchScript compiles it: a ViT with ``dynamic_img_size``
    calls it in its forward.)"""
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(math.sqrt(patches.shape[1]) + 0.5)
    if side * side != patches.shape[1]:
        raise ValueError("a position embedding whose patch tokens are not a square grid cannot be resampled")
    if side == grid[0] and side == grid[1]:
        return pos_embed
    dim = patches.shape[-1]
    maps = patches.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=[grid[0], grid[1]], mode="bicubic", antialias=True, align_corners=False)
    patches = maps.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


def _geometric_offsets(src: int, dst: int) -> torch.Tensor:
    """The offsets a ``src``-entry relative-position axis stands for when it is stretched over ``dst`` entries:
    spaced geometrically from the centre out (ratio found by bisection), so that near offsets keep their values
    and far ones spread (BEiT's rule, as timm's ``resize_rel_pos_bias_table``)."""
    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            hi = q
        else:
            lo = q
    out, cur = [], 1.0
    for i in range(src // 2):
        out.append(cur)
        cur += q ** (i + 1)
    return torch.tensor([-d for d in reversed(out)] + [0.0] + out)


def _interp_linear(points: tuple[torch.Tensor, torch.Tensor], values: torch.Tensor,
                   at: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Bilinear interpolation of ``values`` on the rectilinear (unevenly spaced) grid ``points`` at the
    coordinates ``at`` (held at the edge outside it)."""
    corners, weights, spans = [], [], []
    for p, x in zip(points, at):
        right = torch.bucketize(x, p).clamp(max=p.shape[0] - 1)
        left = (right - 1).clamp(0, p.shape[0] - 1)
        d_left, d_right = (x - p[left]).clamp(min=0), (p[right] - x).clamp(min=0)
        on_point = (d_left == 0) & (d_right == 0)
        d_left, d_right = d_left.masked_fill(on_point, 1.0), d_right.masked_fill(on_point, 1.0)
        corners.append((left, right))
        weights.append((d_right, d_left))  # the left corner weighs by the distance to the right one
        spans.append(d_left + d_right)
    out = 0.0
    for i in (0, 1):
        for j in (0, 1):
            out = out + values[corners[0][i], corners[1][j]] * torch.stack([weights[0][i], weights[1][j]]).prod(0)
    return out / torch.stack(spans).prod(0)


def resize_rel_pos_bias_table(table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """A relative-position bias table made for another window, resized to ``window`` as timm resizes it when it
    loads a checkpoint (Swin's flat ``((2h-1)(2w-1), heads)`` table or TF MaxViT's ``(heads, 2h-1, 2w-1)``; the
    source window is taken to be square): each head's ``(2h-1) x (2w-1)`` map is resampled from geometrically
    spaced source offsets, bilinearly, in float32."""
    dst = (2 * window[0] - 1, 2 * window[1] - 1)
    flat = table.ndim == 2
    maps = table.float().T if flat else table.float()  # (heads, n) or (heads, H, W)
    if flat:
        side = math.isqrt(maps.shape[1])
        if side * side != maps.shape[1]:
            raise ValueError(f"a relative-position table of {maps.shape[1]} entries is not a square window's")
        maps = maps.reshape(-1, side, side)
    src = maps.shape[-2:]
    if tuple(src) == dst:
        return table
    points = (_geometric_offsets(src[0], dst[0]), _geometric_offsets(src[1], dst[1]))
    at = torch.meshgrid(torch.arange(-(dst[0] // 2), dst[0] // 2 + 0.1, 1.0),
                        torch.arange(-(dst[1] // 2), dst[1] // 2 + 0.1, 1.0), indexing="ij")
    out = torch.stack([_interp_linear(points, m, at) for m in maps.cpu()]).to(table.device)
    return (out.reshape(out.shape[0], -1).T if flat else out).contiguous().to(table.dtype)


def resize_rel_pos_tables(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every ``<module>.relative_position_bias_table`` that was made for another window resized to
    its module's ``window_size`` (:func:`resize_rel_pos_bias_table`), as timm's Swin and MaxViT loaders do; the
    relative-position indices and attention masks some checkpoints carry are dropped when the model derives them
    (buffers it does not save)."""
    own = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")) and key not in own:
            continue
        if key.endswith("relative_position_bias_table") and key in own and value.shape != own[key].shape:
            window = model.get_submodule(key.rsplit(".", 1)[0]).window_size
            window = (window, window) if isinstance(window, int) else tuple(window)
            value = resize_rel_pos_bias_table(value, window)
        out[key] = value
    return out

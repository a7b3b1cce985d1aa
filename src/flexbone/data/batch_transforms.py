"""Training augmentation of a whole batch in a few tensor ops, for image sets held in memory (digits, CIFAR).

Per-image ``transforms.v2`` calls cost tens of microseconds of dispatch each, far more than the arithmetic
on an 8x8 or 32x32 image: the quickstart's loader ran at about the speed of its training step. Here a batch
``(B, C, H, W)`` uint8 is cropped and resized with four gathers, flipped with one select and normalised
with one fused op (airbench's approach to CIFAR), so the loader is never the bottleneck.

Semantics equal the per-image pipeline's ``RandomResizedCrop`` (torchvision's sampling: up to 10 tries of
area ~ U(scale) and log-uniform aspect ratio, then the centre-crop fallback) + ``RandomHorizontalFlip``
+ ``Normalize``, with bilinear resampling. It does not antialias, so this path is used only where
no crop can be larger than the output (``img_size`` >= the stored image size): then antialiasing never applies
and the result equals torchvision's (see tests/test_data.py).
"""
from __future__ import annotations

import math

import torch

from ..config.schema import AugConfig, DataConfig


def batch_transform_applies(data: DataConfig, aug: AugConfig, stored_size: tuple[int, int]) -> bool:
    """Whether :class:`BatchTrainTransform` reproduces the per-image train transform for these images."""
    return (not aug.rand_augment and aug.re_prob == 0 and data.interpolation == "bilinear"
            and data.img_size >= max(stored_size))


def sample_resized_crops(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                         attempts: int = 10) -> torch.Tensor:
    """``(n, 4)`` float boxes ``(top, left, h, w)``, drawn as torchvision's ``RandomResizedCrop.get_params``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target_area = area * torch.empty(n, attempts).uniform_(scale[0], scale[1])
    aspect = torch.exp(torch.empty(n, attempts).uniform_(log_ratio[0], log_ratio[1]))
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))  # first valid try per image
    rows = torch.arange(n)
    h, w = h[rows, first.clamp(min=0)], w[rows, first.clamp(min=0)]
    # fallback (no valid try): the largest centred crop with the aspect ratio clamped to `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    failed = first < 0
    h = torch.where(failed, torch.tensor(float(fh)), h)
    w = torch.where(failed, torch.tensor(float(fw)), w)
    top = torch.floor(torch.rand(n) * (height - h + 1))
    left = torch.floor(torch.rand(n) * (width - w + 1))
    top = torch.where(failed, torch.tensor(float((height - fh) // 2)), top)
    left = torch.where(failed, torch.tensor(float((width - fw) // 2)), left)
    return torch.stack([top, left, h, w], dim=1)


def _source_index(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output pixel: the two source pixels and the weight of the second, as ``interpolate`` (bilinear,
    ``align_corners=False``) computes them on the crop ``[start, start + length)``: ``(B, size)`` each."""
    dst = torch.arange(size, dtype=torch.float32) + 0.5
    src = (dst.unsqueeze(0) * (length / size).unsqueeze(1) - 0.5).clamp(min=0)  # (B, size), crop coordinates
    lo = src.floor()
    weight = src - lo
    hi = torch.minimum(lo + 1, (length - 1).unsqueeze(1))  # the crop's last pixel repeats at its edge
    return (lo + start.unsqueeze(1)).long(), (hi + start.unsqueeze(1)).long(), weight


def resized_crop_batch(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crop-and-resize of every image to ``size x size``: ``(B, C, H, W)`` float -> ``(B, C, size, size)``.

    ``boxes`` rows are ``(top, left, h, w)``. Equals ``F.interpolate(crop, size, mode='bilinear',
    align_corners=False)`` per image, i.e. torchvision's ``resized_crop`` without antialiasing: separable,
    two gathers along the rows, two along the columns.
    """
    b, c, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    y0, y1, wy = _source_index(top, h, size)
    x0, x1, wx = _source_index(left, w, size)
    y0, y1 = (i.view(b, 1, size, 1).expand(b, c, size, width) for i in (y0, y1))
    x = images.gather(2, y0).lerp(images.gather(2, y1), wy.view(b, 1, size, 1))  # (B, C, size, W)
    x0, x1 = (i.view(b, 1, 1, size).expand(b, c, size, size) for i in (x0, x1))
    return x.gather(3, x0).lerp(x.gather(3, x1), wx.view(b, 1, 1, size))  # (B, C, size, size)


class BatchTrainTransform:
    """``(B, C, H, W)`` uint8 -> augmented, normalised ``(B, C, S, S)`` float32 (see the module docstring)."""

    def __init__(self, data: DataConfig, aug: AugConfig):
        self.size, self.scale, self.ratio = data.img_size, aug.scale, aug.ratio
        self.no_crop, self.hflip = aug.no_crop, aug.hflip
        # normalise in uint8 units: (x / 255 - mean) / std == x * a + b
        std = torch.tensor(data.std).view(1, -1, 1, 1)
        self.mul = 1.0 / (255.0 * std)
        self.add = -torch.tensor(data.mean).view(1, -1, 1, 1) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        x = images.float()
        if self.no_crop:
            boxes = torch.tensor([[0.0, 0.0, height, width]]).expand(n, 4)
        else:
            boxes = sample_resized_crops(n, height, width, self.scale, self.ratio)
        if self.no_crop and (height, width) == (self.size, self.size):
            out = x
        else:
            out = resized_crop_batch(x, boxes, self.size)
        if self.hflip > 0:
            flip = torch.rand(n) < self.hflip
            out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        return torch.addcmul(self.add, out, self.mul)

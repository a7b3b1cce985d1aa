"""Train and evaluation transforms (torchvision.transforms.v2), built from a recipe's ``data`` and ``aug``.

Train:  RandomResizedCrop (or a plain resize with ``aug.no_crop``) -> horizontal flip -> RandAugment
        -> float in [0, 1] -> normalise -> RandomErasing.
Eval:   resize the short side to ``floor(test_img_size / crop_pct)`` -> centre crop ``test_img_size``
        -> float -> normalise  (timm's rule, so a 224 / 0.95 test resizes to 235 then crops 224).

Inputs may be PIL images (folders) or ``(3, H, W)`` uint8 tensors (CIFAR, digits, synthetic); the geometric
and colour ops run before the float conversion, on PIL or uint8, as timm's pipeline does. Outputs are plain
``(3, H, W)`` float32 tensors.
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode, v2

from ..config.schema import AugConfig, DataConfig
from .rand_augment import RandAugmentNoisy, parse_rand_augment

_INTERPOLATION = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
                  "bicubic": InterpolationMode.BICUBIC}


def eval_resize_size(img_size: int, crop_pct: float) -> int:
    """Short side (pixels) before the centre crop: ``floor(img_size / crop_pct)`` (timm's rule)."""
    return int(math.floor(img_size / crop_pct))


def train_is_deterministic(aug: AugConfig) -> bool:
    """True when the train transform has no randomness (then images can be transformed once and cached)."""
    return aug.no_crop and aug.hflip == 0 and not aug.rand_augment and aug.re_prob == 0


def build_train_transform(data: DataConfig, aug: AugConfig) -> v2.Compose:
    """The training transform of a recipe (see the module docstring)."""
    interpolation = _INTERPOLATION[data.interpolation]
    size = data.img_size
    ops: list[torch.nn.Module] = []
    if aug.no_crop:
        ops.append(v2.Resize((size, size), interpolation=interpolation, antialias=True))
    else:
        ops.append(v2.RandomResizedCrop(size, scale=aug.scale, ratio=aug.ratio, interpolation=interpolation,
                                        antialias=True))
    if aug.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=aug.hflip))
    if aug.rand_augment:
        fill = [round(255 * m) for m in data.mean]  # pixels uncovered by shear/rotate/translate get the mean colour
        ops.append(RandAugmentNoisy(parse_rand_augment(aug.rand_augment), interpolation=interpolation, fill=fill))
    ops += _to_normalized_tensor(data)
    if aug.re_prob > 0:
        # timm's 'pixel' mode: erase a box with per-pixel N(0, 1) noise (in normalised units)
        ops.append(v2.RandomErasing(p=aug.re_prob, value="random"))
    ops.append(v2.ToPureTensor())
    return v2.Compose(ops)


def build_eval_transform(data: DataConfig) -> v2.Compose:
    """Resize by crop ratio, centre crop, normalise (see the module docstring)."""
    size = data.test_img_size or data.img_size
    ops = [
        v2.Resize(eval_resize_size(size, data.crop_pct), interpolation=_INTERPOLATION[data.interpolation],
                  antialias=True),
        v2.CenterCrop(size),
        *_to_normalized_tensor(data),
        v2.ToPureTensor(),
    ]
    return v2.Compose(ops)


def _to_normalized_tensor(data: DataConfig) -> list[torch.nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))]

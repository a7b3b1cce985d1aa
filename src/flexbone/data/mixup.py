"""Batch-level Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) with soft targets, as timm's ``Mixup``.

Per batch: with probability ``prob`` mix at all; when both alphas are on, CutMix with probability
``switch_prob``, else Mixup. The batch is mixed with itself reversed (``x.flip(0)``, timm's pairing) using
``lam ~ Beta(alpha, alpha)``; CutMix pastes one box and re-computes ``lam`` as the exact pasted-area fraction.
Targets are ``lam * onehot(y) + (1 - lam) * onehot(y.flip(0))`` (label-smoothed when asked), so every row sums
to 1. Unmixed batches get one-hot targets too: the loss sees the same target type every step.
Randomness comes from torch's global generator, which the engine checkpoints.
"""
from __future__ import annotations

import math

import torch

from ..config.schema import AugConfig


def one_hot_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``(B,)`` int labels -> ``(B, K)`` float targets: ``1 - eps + eps/K`` on the class, ``eps/K`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def mix_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets of a batch mixed with its reverse at weight ``lam``."""
    y = one_hot_targets(labels, num_classes, smoothing)
    return y * lam + y.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box ``(y0, y1, x0, x1)`` of about ``(1 - lam)`` of the image, centred uniformly, clipped to the image."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, ()))
    cx = int(torch.randint(0, width, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class MixupCutmix:
    """Callable ``(images (B, C, H, W), labels (B,)) -> (mixed images, soft targets (B, K))``.

    Args:
        num_classes: K.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that mode off.
        prob: probability of mixing a batch at all.
        switch_prob: with both modes on, the probability of CutMix for a batch.
        label_smoothing: epsilon applied to the targets (0: the loss may smooth instead).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixupCutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.last_lam = 1.0  # lam of the latest batch (for logs and tests)
        self.last_mode = "none"  # 'mixup', 'cutmix' or 'none'

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mode, lam = "none", 1.0
        if float(torch.rand(())) < self.prob:
            use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < self.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            mode = "cutmix" if use_cutmix else "mixup"
        if mode == "mixup":
            images = images * lam + images.flip(0) * (1.0 - lam)
        elif mode == "cutmix":
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = cutmix_box(h, w, lam)
            images = images.clone()
            images[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # the area actually kept
        self.last_lam, self.last_mode = lam, mode
        return images, mix_targets(labels, self.num_classes, lam, self.label_smoothing)


def build_mixup(aug: AugConfig, num_classes: int, label_smoothing: float = 0.0) -> MixupCutmix | None:
    """The recipe's Mixup/CutMix, or None when both alphas are 0 (or ``mixup_prob`` is 0)."""
    if (aug.mixup_alpha <= 0 and aug.cutmix_alpha <= 0) or aug.mixup_prob <= 0:
        return None
    return MixupCutmix(num_classes, aug.mixup_alpha, aug.cutmix_alpha, aug.mixup_prob, aug.mixup_switch_prob,
                       label_smoothing)

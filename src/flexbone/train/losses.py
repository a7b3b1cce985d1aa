"""Classification losses used by the recipes.

* :class:`CrossEntropy` — cross-entropy with label smoothing; accepts class indices ``(B,)`` or soft
  targets ``(B, C)`` (what Mixup/CutMix produce, with the smoothing already folded in).
* :class:`SoftTargetCrossEntropy` — ``-sum(target * log_softmax(logits))`` averaged over the batch.
* :class:`BinaryCrossEntropy` — one sigmoid per class, the loss of "ResNet strikes back" (Wightman et al.
  2021), with optional smoothing of index targets and a target threshold that turns mixed targets
  back into 0/1 labels.
* :func:`distillation_loss` — KL(teacher || student) at a temperature (Hinton et al. 2015), for
  in-place distillation in the elastic (once-for-all / sandwich) training to come.

Semantics match timm's ``LabelSmoothingCrossEntropy`` / ``SoftTargetCrossEntropy`` / ``BinaryCrossEntropy``
and torch's ``F.cross_entropy(label_smoothing=)``; ``tests/test_train_losses.py`` checks that.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against a probability distribution per sample: ``(B, C)`` logits, ``(B, C)`` targets."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class CrossEntropy(nn.Module):
    """Cross-entropy with label smoothing for index targets; soft targets are used as they are.

    Label smoothing ``s`` replaces the one-hot target by ``(1 - s) * onehot + s / C`` (Szegedy et al. 2016),
    the same as ``F.cross_entropy(label_smoothing=s)``.
    """

    def __init__(self, smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == logits.dim():  # (B, C) mixed / soft targets: smoothing was applied upstream
            return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.smoothing)


class BinaryCrossEntropy(nn.Module):
    """Per-class sigmoid cross-entropy (the RSB loss).

    Args:
        smoothing: for index targets, the one-hot becomes ``off = s / C`` and ``on = 1 - s + s / C``
            (as timm). Dense ``(B, C)`` targets are taken as they are.
        target_threshold: if set, targets become ``target > threshold`` (0 or 1): a sample mixed 70/30 by
            CutMix then counts as positive for both classes when the threshold is 0.2.
        sum_classes: sum over classes before the batch mean (default: mean over all elements).
    """

    def __init__(self, smoothing: float = 0.0, target_threshold: float | None = None, sum_classes: bool = False):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.target_threshold = target_threshold
        self.sum_classes = sum_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != logits.shape:  # class indices -> (smoothed) one-hot
            num_classes = logits.shape[-1]
            off = self.smoothing / num_classes
            target = torch.full_like(logits, off).scatter_(1, target.long().view(-1, 1), 1.0 - self.smoothing + off)
        if self.target_threshold is not None:
            target = target.gt(self.target_threshold).to(logits.dtype)
        if self.sum_classes:
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()
        return F.binary_cross_entropy_with_logits(logits, target)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The teacher's logits are detached (in-place distillation must not push the teacher towards the
    student). The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


class DistillationLoss(nn.Module):
    """``alpha * distillation_loss(student, teacher, T) + (1 - alpha) * base_loss(student, target)``."""

    def __init__(self, base_loss: nn.Module | None = None, temperature: float = 1.0, alpha: float = 1.0):
        super().__init__()
        self.base_loss = base_loss
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.alpha * distillation_loss(student_logits, teacher_logits, self.temperature)
        if self.base_loss is not None and self.alpha < 1.0:
            if target is None:
                raise ValueError("DistillationLoss with alpha < 1 needs the targets for its base loss")
            loss = loss + (1.0 - self.alpha) * self.base_loss(student_logits, target)
        return loss


LOSSES = ("ce", "bce", "soft_ce")


def create_loss(name: str, smoothing: float = 0.0, bce_target_threshold: float | None = None,
                **kwargs: Any) -> nn.Module:
    """The training loss a recipe names: ``'ce'``, ``'bce'`` or ``'soft_ce'`` (soft targets only)."""
    if name == "ce":
        return CrossEntropy(smoothing)
    if name == "soft_ce":
        return SoftTargetCrossEntropy()
    if name == "bce":
        return BinaryCrossEntropy(smoothing, target_threshold=bce_target_threshold, **kwargs)
    raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")

"""Segmentation as a training strategy of the engine (:mod:`flexbone.train.strategy`).

A recipe with ``task: segmentation`` trains through :func:`flexbone.train.engine.run` like any other: the
engine's loop, optimiser, schedule (``poly`` as in FFNet, or cosine), AMP, EMA, checkpoint-last / -best and exact
resume. What differs is handed to :class:`SegmentationStrategy`: the loss (cross-entropy of the logits
upsampled to the label size, pixels labelled ``ignore_index`` left out) and the evaluation
(:func:`evaluate_segmentation`: a confusion matrix summed over batches and processes, mIoU -- the metric
checkpoint-best is chosen on -- pixel accuracy, mean class accuracy, per-class IoU). The data comes from
:func:`flexbone.seg.data.build_loaders` (``flexbone.data.loader.build_loaders`` hands segmentation recipes
over), the model from the registry (``seg_<head>_<backbone>`` or a segmentation FFNet).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..train.strategy import TrainingStrategy, backward
from .metrics import ConfusionMatrix
from .model import upsample_logits


def segmentation_loss(ignore_index: int = 255, label_smoothing: float = 0.0
                      ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy of logits (B, K, h, w), upsampled to the labels' (B, H, W), ignoring ``ignore_index``."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(upsample_logits(logits.float(), targets.shape[-2:]), targets,
                               ignore_index=ignore_index, label_smoothing=label_smoothing)

    return loss_fn


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, *,
                          ignore_index: int = 255, amp: torch.dtype | None = None, channels_last: bool = False,
                          max_steps: int | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean class accuracy, per-class IoU (%), mean loss and image count of ``model``.

    Logits are upsampled (bilinear) to the label size before the argmax, as FFNet's evaluation does; the
    confusion matrix, the loss and the counts are summed over processes when torch.distributed is initialised.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, labelled pixels, images
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
        logits = upsample_logits(logits.float(), targets.shape[-2:])
        valid = int((targets != ignore_index).sum())
        if valid:
            totals[0] += F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum").double()
        totals[1] += valid
        totals[2] += images.shape[0]
        cm.update(logits.argmax(1), targets)
    cm.all_reduce()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    result = cm.compute()
    result["loss"] = float(totals[0] / max(float(totals[1]), 1.0))
    result["images"] = int(totals[2])
    return result


class SegmentationStrategy(TrainingStrategy):
    """One forward, the ignore-index cross-entropy at the label size; evaluation by mIoU."""

    # reported as eval_<name> / ema_<name>; the first is the one checkpoint-best is chosen on (higher is better)
    metrics = {"miou": "mIoU", "pixel_acc": "pixel acc", "mean_acc": "mean acc"}

    def __init__(self, num_classes: int, ignore_index: int = 255, label_smoothing: float = 0.0,
                 metadata: dict[str, Any] | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.loss_fn = segmentation_loss(ignore_index, label_smoothing)
        self._metadata = metadata or {}

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epoch: int, step: int,
             amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)  # (B, K, H/4, W/4)
        loss = self.loss_fn(logits, targets)  # in fp32 at the label size
        backward(loss, scaler)
        return loss.detach()

    @torch.no_grad()
    def evaluate_model(self, model: nn.Module, loader: Iterable, device: torch.device, *,
                       amp: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
        return evaluate_segmentation(model, loader, device, self.num_classes, ignore_index=self.ignore_index,
                                     amp=amp, channels_last=channels_last)

    def metadata(self) -> dict[str, Any]:
        return {"task": "segmentation", "ignore_index": self.ignore_index, **self._metadata}


def build_segmentation_training(recipe: Any, model: nn.Module, *, num_classes: int, mixup_fn: Callable | None = None,
                                teacher: nn.Module | None = None, **context: Any) -> SegmentationStrategy:
    """The strategy of a ``task: segmentation`` recipe (the engine's builder signature)."""
    if getattr(model, "task", None) != "segmentation":
        raise ConfigError(f"task=segmentation trains a segmentation model: {recipe.model.name} is not one "
                          f"(use seg_<head>_<backbone>, e.g. seg_ffnet_b_resnet18, or a segmentation FFNet)")
    if mixup_fn is not None:
        raise ConfigError("aug.mixup_alpha / aug.cutmix_alpha mix image labels; segmentation has none: set them to 0")
    if teacher is not None:
        raise ConfigError("distill.teacher is for classification; a segmentation run has no teacher")
    if recipe.loss.name != "ce":
        raise ConfigError(f"loss.name={recipe.loss.name}: segmentation trains with cross-entropy (ce)")
    s = recipe.seg
    digits = {"digits_val_size": s.digits_val_size, "digits_canvas": s.digits_canvas, "digits_seed": s.digits_seed}
    return SegmentationStrategy(num_classes, s.ignore_index, recipe.loss.label_smoothing,
                                metadata=digits if recipe.data.dataset == "seg_digits" else {})

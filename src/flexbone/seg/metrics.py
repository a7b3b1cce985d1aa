"""Segmentation metrics from a confusion matrix: mIoU, pixel accuracy, per-class IoU.

The matrix is the one sufficient statistic: sum it over batches, and over processes under DDP
(``all_reduce``), then every metric is a function of it. Rows are the true class, columns the prediction
(scikit-learn's ``confusion_matrix`` convention); pixels labelled ``ignore_index`` are not counted.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """A ``(num_classes, num_classes)`` int64 count of (true, predicted) pixel pairs."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count a batch: ``pred`` class indices (B, H, W) or logits (B, K, H, W) at the target's size."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in size")
        keep = target != self.ignore_index
        t, p = target[keep].long(), pred[keep].long()
        k = self.num_classes
        self.matrix += torch.bincount(t * k + p, minlength=k * k).reshape(k, k).to(self.matrix.device)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over all processes (no-op unless torch.distributed is initialised)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict[str, float | list[float]]:
        """``miou`` (%, over classes present in the labels or the predictions), ``pixel_acc`` (%),
        ``mean_acc`` (%, per-class recall averaged over classes present in the labels), ``iou`` per class
        (%, NaN for a class absent from both)."""
        m = self.matrix.double()
        tp = m.diag()
        gt, predicted = m.sum(1), m.sum(0)
        union = gt + predicted - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        total = m.sum()
        return {
            "miou": 100.0 * float(iou.nanmean()) if (union > 0).any() else float("nan"),
            "pixel_acc": 100.0 * float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_acc": 100.0 * float(acc.nanmean()) if (gt > 0).any() else float("nan"),
            "iou": [100.0 * float(v) for v in iou],
            "pixels": int(total),
        }

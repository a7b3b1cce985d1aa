"""Batch-norm recalibration: fresh running statistics for a sub-network (once-for-all semantics).

A sub-network taken from a supernet inherits running statistics that were accumulated over *many*
sub-networks, so they do not describe its own activations. Before evaluating it, its BN statistics are
re-estimated on a few batches of training images (OFA: ~2000 images). Following the reference
(``ofa``'s ``set_running_statistics``), each BN layer's new running mean and variance are the averages,
weighted by batch size, of the per-batch means and (biased) variances of its input, and during the pass
each BN normalises with the batch's own statistics, so that deeper layers see the activations they
will be calibrated for.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import FlexboneError


def _images(batch: Any) -> torch.Tensor:
    """The input tensor of a loader item: a tensor, ``(images, targets, ...)``, or a dict with 'image'/'input'."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "inputs", "x"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise FlexboneError(f"cannot find the images in a loader item of type {type(batch).__name__}; "
                        f"yield tensors, (images, targets) pairs or dicts with an 'image' entry")


class _StatsMeter:
    """Batch-size-weighted sums of per-channel batch means and biased variances of one BN layer's input."""

    def __init__(self) -> None:
        self.mean_sum: torch.Tensor | None = None
        self.var_sum: torch.Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:  # forward pre-hook
        x = inputs[0].detach().double()
        dims = [0] + list(range(2, x.ndim))  # all but the channel dim: (B, C, H, W) -> C
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        n = x.shape[0]
        if self.mean_sum is None:
            self.mean_sum, self.var_sum = mean * n, var * n
        elif mean.shape != self.mean_sum.shape:
            raise FlexboneError("a BN layer saw inputs of different widths during one recalibration; "
                                "keep the sub-network fixed while recalibrating")
        else:
            self.mean_sum += mean * n
            self.var_sum += var * n
        self.count += n


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable[Any], num_batches: int | None = None) -> int:
    """Re-estimate the running mean and variance of every BN layer of ``model`` that the forward pass uses.

    Args:
        model: any model (a supernet with an active sub-network, or a static one). The pass runs in eval
            mode (no dropout, no drop path) except that BN layers normalise with batch statistics.
        loader: yields image tensors, ``(images, targets)`` pairs or dicts with an ``'image'`` entry.
        num_batches: use at most this many batches (``None``: the whole loader).

    Returns:
        The number of images seen.

    Each BN layer's ``running_mean``/``running_var`` become the batch-size-weighted means of the per-batch
    means and biased variances of its input (only the leading channels that the active sub-network uses,
    for a dynamic BN). BN layers that the forward pass does not reach, every parameter, ``momentum`` and
    ``num_batches_tracked`` are left as they were, and so is each module's train/eval mode. Under
    ``torch.distributed`` the statistics are averaged over all ranks.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    saved = {bn: (bn.momentum, None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone())
             for bn in bns}
    meters = {bn: _StatsMeter() for bn in bns}
    hooks = [bn.register_forward_pre_hook(meters[bn]) for bn in bns]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen = 0
    try:
        model.eval()
        for bn in bns:
            bn.train()  # normalise with the batch's statistics ...
            bn.momentum = 0.0  # ... without moving the running ones (they are replaced below)
        for i, batch in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            x = _images(batch).to(device, non_blocking=True)
            model(x)
            seen += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
        for bn, (momentum, tracked) in saved.items():
            bn.momentum = momentum
            if tracked is not None:
                bn.num_batches_tracked.copy_(tracked)
    distributed = dist.is_available() and dist.is_initialized()
    for bn, meter in meters.items():
        count = torch.tensor(float(meter.count), dtype=torch.float64, device=device)
        if distributed:  # every rank runs the same sub-network, so every rank reaches the same BN layers
            dist.all_reduce(count)
            if meter.mean_sum is None and count.item() > 0:
                raise FlexboneError("BN recalibration: ranks ran different sub-networks")
        if count.item() == 0 or meter.mean_sum is None:
            continue
        mean_sum, var_sum = meter.mean_sum, meter.var_sum
        if distributed:
            dist.all_reduce(mean_sum)
            dist.all_reduce(var_sum)
        c = mean_sum.numel()
        bn.running_mean[:c].copy_(mean_sum / count)
        bn.running_var[:c].copy_(var_sum / count)
    return seen

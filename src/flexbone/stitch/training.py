"""Training an SN-Net through the ordinary engine: the ``stitching`` strategy (:mod:`flexbone.train.strategy`).

Each optimiser step trains one configuration drawn uniformly from all of them, anchors included (the
reference's rule), with the task loss and, optionally, distillation: from ``distill.teacher`` (a registered
model and checkpoint, as the reference's RegNetY-16GF), or from a frozen copy of the largest anchor
(``model.kwargs.distill_from_largest``). Anchors and stitching layers all train (the reference's full tuning).

The draw depends on ``(train.seed, epoch, step)`` and, with ``ddp_sampling: per_rank`` (the default, as the
reference seeds each GPU with ``seed + rank``), on the rank: each DDP process trains its own configuration in
the same step and DDP averages the gradients (``find_unused_parameters``: a path leaves the rest unused). With
``ddp_sampling: same`` every process trains the same configuration. Either way a resumed run repeats the
draws of the interrupted one.

Evaluation reports the largest anchor (``top1``; the weights saved last carry its BN statistics, as every
anchor's path is its own) and every anchor and the cheapest stitch as ``subnets``.
"""
from __future__ import annotations

import copy
import random
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..train.distributed import unwrap_model
from ..train.strategy import PlainStrategy, TrainingStrategy, backward
from .snnet import SNNet


class StitchTraining(TrainingStrategy):
    """One uniformly drawn configuration per step (see the module doc)."""

    find_unused_parameters = True

    def __init__(self, net: SNNet, loss_fn: Any, *, seed: int = 0, rank: int = 0, per_rank: bool = True,
                 teacher: nn.Module | None = None, distill_alpha: float = 0.5, distill_temperature: float = 1.0):
        self.num_configs = net.num_configs
        self.seed, self.rank, self.per_rank = seed, rank, per_rank
        self._plain = PlainStrategy(loss_fn, teacher, distill_alpha, distill_temperature)
        self.eval_id = len(net.anchors) - 1  # the largest anchor: active between steps (EMA, evaluation, export)
        costs = [net.config_params(i) for i in range(net.num_configs)]
        self.cheapest = min(range(len(net.anchors), net.num_configs), key=costs.__getitem__, default=None)

    def config_for(self, epoch: int, step: int) -> int:
        """The configuration this process trains at ``(epoch, step)``."""
        key = f"{self.seed}/{epoch}/{step}" + (f"/rank{self.rank}" if self.per_rank else "")
        return random.Random(key).randrange(self.num_configs)

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epoch: int, step: int,
             amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        net = unwrap_model(model)
        net.set_active(self.config_for(epoch, step))
        try:
            loss = self._plain.loss(model, images, targets, amp)
            backward(loss, scaler)
        finally:
            net.set_active(self.eval_id)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader: Iterable, calib_loader: Iterable, device: torch.device, *,
                 amp: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
        from ..train.engine import evaluate

        net = unwrap_model(model)
        ids = [("stitch_min", self.cheapest)] if self.cheapest is not None else []
        ids += [(f"anchor{i}", i) for i in range(len(net.anchors))]
        results = {}
        try:
            for name, cid in ids:  # the largest anchor last
                net.set_active(cid)
                results[name] = evaluate(net, eval_loader, device, amp=amp, channels_last=channels_last)
        finally:
            net.set_active(self.eval_id)
        out = dict(results.pop(f"anchor{self.eval_id}"))
        out["subnets"] = results
        return out


def build_stitch_training(recipe: Any, model: nn.Module, *, loss_fn: Any, teacher: nn.Module | None = None,
                          device: torch.device | None = None, **context: Any) -> StitchTraining:
    """The strategy of a recipe whose model is an SN-Net (``model.name: snnet``)."""
    net = unwrap_model(model)
    if not isinstance(net, SNNet):
        raise ConfigError(f"the stitching strategy trains an SN-Net (model.name: snnet), not {type(net).__name__}")
    if teacher is None and getattr(net, "distill_from_largest", False):
        teacher = copy.deepcopy(net.anchors[-1]).eval()  # frozen: the largest anchor as training starts
        for p in teacher.parameters():
            p.requires_grad_(False)
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    return StitchTraining(net, loss_fn, seed=recipe.train.seed, rank=rank,
                          per_rank=getattr(net, "ddp_sampling", "per_rank") == "per_rank", teacher=teacher,
                          distill_alpha=recipe.distill.alpha, distill_temperature=recipe.distill.temperature)

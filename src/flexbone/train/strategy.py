"""The training-strategy interface: what one optimiser step does with the model and a batch, and what an
evaluation reports. The engine (``engine.py``) runs the loop -- data, optimiser, scheduler, AMP, EMA,
checkpoints, logs -- and hands each batch to a strategy; it imports no strategy module.

A strategy implements :class:`TrainingStrategy`:

* ``step(model, images, targets, *, epoch, step, amp, scaler)``: forward, loss and backward (as many as it
  likes: gradients add up in ``.grad``), returning the loss detached. The engine zeroes the gradients before
  and checks the loss and steps the optimiser after.
* ``evaluate(model, eval_loader, calib_loader, device, *, amp, channels_last)``: the dict of
  ``engine.evaluate`` (``top1``, ``top5``, ``loss``, ``images``), optionally with ``'subnets'``:
  ``{name: that dict}`` for the extra networks it reports (logged as ``eval_<name>_top1``).
* ``handles_mixup``: the strategy mixes the batch itself (the engine passes it unmixed);
  ``find_unused_parameters``: a step may leave parameters unused (DDP must be told).
* ``metrics``: ``{name: label}`` of what ``evaluate`` reports besides ``loss`` and ``images`` (logged as
  ``eval_<name>``); the first is the one checkpoint-best is chosen on, higher is better. Classification:
  top-1, top-5; segmentation: mIoU, pixel and mean class accuracy.
* ``evaluate_model(model, loader, device, *, amp, channels_last)``: those metrics of one model as it is (the
  EMA weights are evaluated with it); ``metadata()``: entries the run adds to its checkpoints' metadata.

Strategies by name (:data:`STRATEGIES`, ``'module:builder'`` strings imported on first use): ``plain``
(this file), ``progressive`` / ``sandwich`` / ``deps`` (``flexbone.elastic.training``), ``stitching``
(``flexbone.stitch.training``), ``segmentation`` (``flexbone.seg.training``, the strategy of every
``task: segmentation`` recipe). A recipe picks one with ``elastic.strategy``; with ``none`` the model may
name its own (``model.training_strategy``: an SN-Net trains by stitching), else ``plain``. A new strategy is
one new file with a builder ``build(recipe, model, **context)`` plus its line in :data:`STRATEGIES` (or a
``'module:builder'`` string as the model's ``training_strategy``). A strategy that is a chain of runs
(progressive shrinking's phases) names a runner in :data:`RUNNERS`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError
from .losses import distillation_loss


class TrainingStrategy:
    """Base class: see the module doc. Subclasses implement ``step`` and, if they report more, ``evaluate``."""

    handles_mixup: bool = False
    find_unused_parameters: bool = False
    metrics: dict[str, str] = {"top1": "top-1", "top5": "top-5"}  # name -> label; the first chooses checkpoint-best

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epoch: int, step: int,
             amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.step(model, images, targets, **kwargs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader: Iterable, calib_loader: Iterable, device: torch.device, *,
                 amp: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
        """The model as it is, on ``eval_loader`` (``calib_loader`` is for strategies that recalibrate BN)."""
        return self.evaluate_model(model, eval_loader, device, amp=amp, channels_last=channels_last)

    @torch.no_grad()
    def evaluate_model(self, model: nn.Module, loader: Iterable, device: torch.device, *,
                       amp: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
        """:attr:`metrics`, ``loss`` and ``images`` of one model on ``loader`` (summed over processes)."""
        from .engine import evaluate  # strategies use the engine's metrics; the engine never imports them

        return evaluate(model, loader, device, amp=amp, channels_last=channels_last)

    def metadata(self) -> dict[str, Any]:
        """Entries for the run's checkpoint metadata (e.g. ``task``); none by default."""
        return {}


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


class PlainStrategy(TrainingStrategy):
    """One forward of the model on the (mixed) batch, task loss, optional distillation from a frozen teacher."""

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], teacher: nn.Module | None = None,
                 distill_alpha: float = 0.5, distill_temperature: float = 1.0):
        self.loss_fn, self.teacher = loss_fn, teacher
        self.distill_alpha, self.distill_temperature = distill_alpha, distill_temperature

    def loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
            loss = self.loss_fn(logits, targets)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(images)
                loss = (1 - self.distill_alpha) * loss + self.distill_alpha * distillation_loss(
                    logits.float(), teacher_logits.float(), self.distill_temperature)
        return loss

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epoch: int, step: int,
             amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        loss = self.loss(model, images, targets, amp)
        backward(loss, scaler)
        return loss.detach()


def build_plain(recipe: Any, model: nn.Module, *, loss_fn: Callable, teacher: nn.Module | None = None,
                **context: Any) -> PlainStrategy:
    return PlainStrategy(loss_fn, teacher, recipe.distill.alpha, recipe.distill.temperature)


# name -> "module:builder"; builders take (recipe, model, *, loss_fn, mixup_fn, num_classes, steps_per_epoch,
# device, fresh, teacher) and ignore what they do not need
STRATEGIES: dict[str, str] = {
    "plain": "flexbone.train.strategy:build_plain",
    "progressive": "flexbone.elastic.training:build_elastic_training",
    "sandwich": "flexbone.elastic.training:build_elastic_training",
    "deps": "flexbone.elastic.training:build_elastic_training",
    "stitching": "flexbone.stitch.training:build_stitch_training",
    "segmentation": "flexbone.seg.training:build_segmentation_training",
}
# the strategy a recipe's task implies (when elastic.strategy is 'none')
TASK_STRATEGIES: dict[str, str] = {"segmentation": "segmentation"}
# strategies that train as a chain of runs: name -> "module:runner" (runner(recipe, run_one, **run_kwargs))
RUNNERS: dict[str, str] = {"progressive": "flexbone.elastic.training:run_phases"}


def _resolve(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def strategy_name(recipe: Any, model: nn.Module | None = None) -> str:
    """The strategy a run uses: ``elastic.strategy`` unless 'none', then the task's (segmentation), then the
    model's own, then 'plain'."""
    name = getattr(recipe.elastic, "strategy", "none")
    if name != "none":
        return name
    task = TASK_STRATEGIES.get(getattr(recipe, "task", "classification"))
    if task is not None:
        return task
    model = getattr(model, "module", model)  # DDP-wrapped
    return getattr(model, "training_strategy", None) or "plain"


def build_strategy(recipe: Any, model: nn.Module, **context: Any) -> TrainingStrategy:
    """The strategy of ``recipe`` for ``model`` (unwrapped, weights loaded); ``context`` as in :data:`STRATEGIES`."""
    name = strategy_name(recipe, model)
    target = STRATEGIES.get(name, name if ":" in name else None)
    if target is None:
        raise ConfigError(f"unknown training strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return _resolve(target)(recipe, model, **context)


def strategy_runner(recipe: Any) -> Callable | None:
    """The runner of a strategy that trains as a chain of runs (None for a single run)."""
    target = RUNNERS.get(getattr(recipe.elastic, "strategy", "none"))
    return _resolve(target) if target else None

"""Segmentation training and evaluation, with the engine's pieces.

A recipe with ``task: segmentation`` runs here (``flexbone.train.engine.run`` hands it over): the same
optimiser, schedule and per-step loop as classification (:func:`flexbone.train.engine.train_one_epoch`, whose
``loss_fn`` here upsamples the logits to the label size and takes cross-entropy with the ignore index), and
:func:`evaluate_segmentation` in place of top-1: a confusion matrix summed over batches and processes, mIoU /
pixel accuracy / per-class IoU from it.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .data import (CITYSCAPES_CLASSES, DigitsSegmentation, SegmentationPairs, cityscapes_label_map, cityscapes_pairs,
                   eval_transform, folder_pairs, train_transform)
from .metrics import ConfusionMatrix
from .model import create_segmentation_model, upsample_logits


def segmentation_loss(ignore_index: int = 255) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy of logits (B, K, h, w), upsampled to the labels' (B, H, W), ignoring ``ignore_index``."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(upsample_logits(logits.float(), targets.shape[-2:]), targets, ignore_index=ignore_index)

    return loss_fn


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, *,
                          ignore_index: int = 255, amp: torch.dtype | None = None,
                          max_steps: int | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean class accuracy, per-class IoU (%) and mean loss of ``model`` on ``loader``.

    Logits are upsampled (bilinear) to the label size before the argmax, as FFNet's evaluation does; the
    confusion matrix is summed over processes when torch.distributed is initialised.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    loss_sum, pixels = torch.zeros((), dtype=torch.float64, device=device), 0
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images, targets = images.to(device), targets.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
        logits = upsample_logits(logits.float(), targets.shape[-2:])
        valid = int((targets != ignore_index).sum())
        if valid:
            loss_sum += F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum").double()
        pixels += valid
        cm.update(logits.argmax(1), targets)
    cm.all_reduce()
    totals = torch.tensor([float(loss_sum), float(pixels)], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    result = cm.compute()
    result["loss"] = float(totals[0] / max(float(totals[1]), 1.0))
    return result


# ------------------------------------------------------------------------------------------ data
def build_datasets(recipe: Any) -> tuple[Dataset, Dataset, int, list[str]]:
    """Train and validation sets a segmentation recipe names, with their transforms."""
    d, s = recipe.data, recipe.seg
    train_tf = train_transform(d.img_size, scale=tuple(s.scale), hflip=recipe.aug.hflip, color_jitter=s.color_jitter,
                               mean=d.mean, std=d.std, ignore_index=s.ignore_index)
    val_tf = eval_transform(d.mean, d.std)
    if d.dataset == "seg_digits":
        train = DigitsSegmentation("train", s.digits_train_size, s.digits_canvas, s.digits_seed, train_tf)
        val = DigitsSegmentation("val", s.digits_val_size, s.digits_canvas, s.digits_seed, val_tf)
        return train, val, train.num_classes, train.classes
    if d.path is None:
        raise ConfigError(f"data.dataset={d.dataset} needs data.path")
    if d.dataset == "cityscapes":
        pairs, label_map, classes = cityscapes_pairs, cityscapes_label_map(), list(CITYSCAPES_CLASSES)
        num_classes = len(classes)
    elif d.dataset == "seg_folder":
        if recipe.model.num_classes is None:
            raise ConfigError("data.dataset=seg_folder needs model.num_classes (the number of mask classes)")
        pairs, label_map, classes, num_classes = folder_pairs, None, None, recipe.model.num_classes
    else:
        raise ConfigError(f"task=segmentation needs data.dataset seg_digits, seg_folder or cityscapes, not {d.dataset}")
    sets = []
    for split, tf in ((d.train_split, train_tf), (d.val_split, val_tf)):
        found, skipped = pairs(d.path, split, strict=d.strict)
        sets.append(SegmentationPairs(found, num_classes, tf, label_map, s.ignore_index, d.strict, classes, skipped))
    return sets[0], sets[1], num_classes, sets[0].classes


def _loader(ds: Dataset, batch: int, shuffle: bool, workers: int, seed: int, world: int, rank: int) -> DataLoader:
    from ..data.samplers import ShardedEvalSampler

    sampler = None
    if world > 1:  # evaluation shards without padding: no pixel counts twice in the summed confusion matrix
        sampler = torch.utils.data.DistributedSampler(ds, world, rank, shuffle=True, seed=seed) if shuffle \
            else ShardedEvalSampler(ds, world, rank)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=max(1, batch // world), shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, drop_last=shuffle, generator=g, persistent_workers=workers > 0)


# ------------------------------------------------------------------------------------------ a run
def run_segmentation(recipe: Any, *, run_dir: str | Path | None = None, recipe_name: str = "recipe",
                     quiet: bool = False, model: nn.Module | None = None,
                     resume: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate a segmentation recipe; write ``recipe.yaml``, ``metrics.json``, ``last.safetensors``
    and ``summary.json`` (final mIoU etc.) to the run directory. Returns the summary."""
    if resume is not None:
        raise ConfigError("resuming a segmentation run is not supported yet: start a new run")
    from ..checkpoint import save_state_dict
    from ..config import dump_recipe, scaled_lr
    from ..outputs import check_writable, write_json
    from ..train.distributed import init_distributed
    from ..train.engine import default_run_name, seed_everything, set_loader_epoch, train_one_epoch
    from ..train.optim import create_optimizer
    from ..train.schedule import create_scheduler

    tr = recipe.train
    dist_info = init_distributed(tr.device)
    device, is_main = dist_info.device, dist_info.is_main
    say = (lambda *a: None) if quiet or not is_main else (lambda *a: print(*a, flush=True))
    run_dir = Path(run_dir) if run_dir is not None else \
        Path(tr.output_dir) / (tr.run_name or default_run_name(recipe, recipe_name))
    if is_main:
        if (run_dir / "summary.json").exists():
            raise ConfigError(f"{run_dir} already holds a finished run; choose another train.run_name / output_dir")
        check_writable(run_dir, is_dir=True)

    seed_everything(tr.seed)
    train_ds, val_ds, num_classes, classes = build_datasets(recipe)
    if recipe.model.num_classes not in (None, num_classes):
        raise ConfigError(f"model.num_classes={recipe.model.num_classes} but {recipe.data.dataset} has {num_classes}")
    if model is None:
        model = create_segmentation_model(recipe.model.name, num_classes=num_classes,
                                          pretrained=recipe.model.pretrained or False, **recipe.model.kwargs)
    model.to(device)
    seed_everything(tr.seed + dist_info.rank)
    d = recipe.data
    train_loader = _loader(train_ds, d.batch_size, True, d.workers, tr.seed, dist_info.world_size, dist_info.rank)
    val_loader = _loader(val_ds, d.eval_batch_size or d.batch_size, False, d.workers, tr.seed,
                         dist_info.world_size, dist_info.rank)
    steps = len(train_loader) if tr.max_steps_per_epoch is None else min(len(train_loader), tr.max_steps_per_epoch)
    peak_lr = scaled_lr(recipe, d.batch_size)
    optimizer = create_optimizer(model, recipe.optim, lr=peak_lr)
    scheduler = create_scheduler(optimizer, recipe.schedule, peak_lr, steps)
    loss_fn = segmentation_loss(recipe.seg.ignore_index)
    train_model = model
    if dist_info.distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = sum(p.numel() for p in model.parameters())
    say(f"flexbone: segmentation, {recipe.model.name} ({params / 1e6:.2f}M params) on {d.dataset} "
        f"({len(train_ds)} train / {len(val_ds)} val images, {num_classes} classes) | {device}, "
        f"{torch.get_num_threads()} threads, batch {d.batch_size}, peak lr {peak_lr:.4g}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, run_dir / "recipe.yaml")
    t0 = time.perf_counter()
    history = []
    result: dict[str, Any] = {}
    for epoch in range(recipe.schedule.epochs):
        set_loader_epoch(train_loader, tr.seed, epoch)
        stats = train_one_epoch(train_model, train_loader, optimizer, loss_fn, device, epoch=epoch, scheduler=scheduler,
                                clip_grad=recipe.optim.clip_grad, max_steps=steps, log_interval=tr.log_interval)
        last = epoch + 1 == recipe.schedule.epochs
        record = {"epoch": epoch, "train_loss": stats["loss"], "lr": stats["lr"], "train_img_per_s": stats["img_per_s"]}
        if (epoch + 1) % tr.eval_every == 0 or last:
            result = evaluate_segmentation(model, val_loader, device, num_classes, ignore_index=recipe.seg.ignore_index)
            record.update(eval_miou=result["miou"], eval_pixel_acc=result["pixel_acc"], eval_loss=result["loss"])
        if not math.isfinite(stats["loss"]):
            raise ConfigError(f"the training loss is {stats['loss']} at epoch {epoch + 1}; lower optim.lr")
        history.append(record)
        say(f"epoch {epoch + 1}/{recipe.schedule.epochs}: loss {stats['loss']:.4f}" +
            (f", val mIoU {record['eval_miou']:.2f}%, pixel acc {record['eval_pixel_acc']:.2f}%" if "eval_miou" in record else ""))
    summary = {"model": recipe.model.name, "dataset": d.dataset, "num_classes": num_classes, "classes": list(classes),
               "epochs": recipe.schedule.epochs, "seed": tr.seed, "miou": result.get("miou"),
               "pixel_acc": result.get("pixel_acc"), "mean_acc": result.get("mean_acc"),
               "iou": dict(zip(classes, result.get("iou", []))), "seconds": time.perf_counter() - t0,
               "skipped_images": len(getattr(train_ds, "skipped", [])) + len(getattr(val_ds, "skipped", [])),
               "mean": list(d.mean), "std": list(d.std), "task": "segmentation"}
    if is_main:
        # what `flexbone validate / predict` need to rebuild and feed the model (flexbone.seg.cli)
        seg_meta = {"task": "segmentation", "model": recipe.model.name, "num_classes": num_classes,
                    "classes": list(classes), "mean": list(d.mean), "std": list(d.std), "dataset": d.dataset,
                    "digits_val_size": recipe.seg.digits_val_size, "digits_canvas": recipe.seg.digits_canvas,
                    "digits_seed": recipe.seg.digits_seed}
        save_state_dict(model.state_dict(), run_dir / "last.safetensors", metadata={"seg": json.dumps(seg_meta)})
        write_json(run_dir / "metrics.json", history)
        write_json(run_dir / "summary.json", summary)
    summary["run_dir"] = str(run_dir)
    return summary

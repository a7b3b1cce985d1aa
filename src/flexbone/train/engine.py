"""The training loop, as plain functions you can read in one sitting and change for a new method.

    run(recipe)                 builds data, model, optimiser, schedule, loss, EMA from a Recipe; then
      for each epoch:
        train_one_epoch(...)    one pass over the training data (AMP, clipping, EMA, NaN guard)
        evaluate(...)           top-1 / top-5 / cross-entropy on the evaluation data (or the strategy's own
                                metrics: segmentation reports mIoU; the first metric chooses checkpoint-best)
        save checkpoints        atomically: checkpoint-last.pt, checkpoint-best.pt
      write model.safetensors, metrics.csv / .jsonl, curves.png; print where everything is

Exact resume: every random draw of an epoch comes from generators whose state is in the checkpoint
(torch / numpy / python RNG states, saved at the end of each epoch) or that are re-seeded from
``(seed, epoch)`` at the start of each epoch (the data order), so ``run(recipe, resume=run_dir)`` after an
interruption ends with the same weights, bit for bit on CPU, as a run that was never interrupted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import math
import random
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError, FlexboneError
from ..interrupt import interrupt_note
from ..outputs import check_writable, describe_os_error, is_disk_full
from .checkpoint import (
    BEST, EMA_WEIGHTS, LAST, WEIGHTS, get_rng_state, load_training_state, save_model_weights,
    save_training_state, set_rng_state,
)
from .distributed import (
    DistInfo, all_reduce_sum, broadcast_buffers, broadcast_flag, cleanup_distributed, init_distributed, unwrap_model,
)
from .ema import ModelEma
from .logs import CURVES_PNG, METRICS_CSV, METRICS_JSONL, MetricsLogger, plot_metrics
from .losses import create_loss
from .optim import create_optimizer
from .schedule import create_scheduler
from .strategy import PlainStrategy, TrainingStrategy, build_strategy, strategy_runner
from .runlock import RunLock, check_unlocked


class NonFiniteLossError(FlexboneError):
    """The training loss became NaN or infinite; the run stopped before the weights were touched."""


# ---------------------------------------------------------------------------------------- helpers
def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` ('none' -> None). fp16 needs CUDA (and a GradScaler)."""
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp fp16 needs a CUDA device; use train.amp=bf16 on CPU (or none)")
        return torch.float16
    raise ConfigError(f"unknown train.amp {amp!r}; choose none, bf16 or fp16")


def slow_bf16_note(amp: str, device: torch.device) -> str | None:
    """A note when ``train.amp bf16`` runs on a CPU without bf16 instructions (AVX512-BF16 or AMX): autocast then
    emulates every bf16 op, and a ResNet-50 step took ~50x its fp32 time (16.96 s vs 0.33 s, batch 16 at 32 px,
    one thread, on an AVX2 VM). The recipes of the literature set bf16 for GPUs."""
    if amp != "bf16" or device.type != "cpu":
        return None
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():  # no public query in torch
        return None
    return (f"flexbone: note: train.amp bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no bf16 "
            "instructions) is emulated and far slower than fp32; add --train.amp none to train in fp32")


def seed_everything(seed: int) -> None:
    """Seed the python, numpy and torch generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63  # a distinct, reproducible stream per (seed, epoch)


def set_loader_epoch(loader: Any, seed: int, epoch: int) -> None:
    """Fix the data order of ``epoch``: re-seed the loader's generator and tell samplers the epoch.

    Re-seeding from ``(seed, epoch)`` (instead of letting one generator run on) makes the data order a
    function of the epoch alone, which a resumed run can reproduce without replaying earlier epochs.
    """
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(_epoch_seed(seed, epoch))
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


# ------------------------------------------------------------------------------------ one epoch
def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    epoch: int = 0,
    scheduler: Any = None,
    mixup_fn: Callable | None = None,
    amp: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    clip_grad: float | None = None,
    ema: ModelEma | None = None,
    max_steps: int | None = None,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.5,
    distill_temperature: float = 1.0,
    progress: Any = None,
    log_interval: int = 50,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    step_offset: int = 0,
    supernet_step: Callable[..., torch.Tensor] | None = None,
    strategy: TrainingStrategy | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader`` (or ``max_steps`` batches).

    Per step: move the batch to ``device`` (NHWC if ``channels_last``), mix it (``mixup_fn``), forward and
    loss under autocast (``amp`` dtype), check the loss is finite, backward (scaled with ``scaler`` for
    fp16), clip the gradient norm, optimiser step, scheduler step, EMA update.

    The forward, loss and backward are the training strategy's (:mod:`flexbone.train.strategy`):
    ``strategy.step(model, images, targets, epoch=, step=, amp=, scaler=)`` returns the loss, detached (a
    supernet strategy runs several sub-networks, gradients summed). Without one, :class:`PlainStrategy`
    with ``loss_fn`` and the optional ``teacher``; ``supernet_step`` is the older name of ``strategy``.

    Returns the mean loss, the last lr, images/s and the number of steps and images (loss averaged and
    images summed over all processes).
    Raises :class:`NonFiniteLossError` before the step that would write NaN/inf into the weights.
    """
    model.train()
    step_fn = strategy or supernet_step or PlainStrategy(loss_fn, teacher, distill_alpha, distill_temperature)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size() if distributed else 1
    loss_sum, window_loss, window_steps, images_seen, steps = 0.0, 0.0, 0, 0, 0
    start = window_start = time.perf_counter()
    window_images = 0
    for images, targets in loader:
        if max_steps is not None and steps >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)  # (B, C) soft targets from here on

        optimizer.zero_grad(set_to_none=True)
        loss = step_fn(model, images, targets, epoch=epoch, step=steps, amp=amp, scaler=scaler)  # forward + backward

        # one host sync per step: a NaN/inf loss is caught before it reaches the weights
        loss_value = loss.item()
        finite = math.isfinite(loss_value)
        if distributed:  # every process must stop together, or the others hang in the next all-reduce
            finite = all_reduce_sum([0.0 if finite else 1.0], device)[0] == 0
        if not finite:
            raise NonFiniteLossError(
                f"the training loss is {loss_value} at epoch {epoch + 1}, step {steps + 1} of the epoch "
                f"(lr {optimizer.param_groups[0]['lr']:.3g}); stopped before updating the weights. "
                f"Try a lower optim.lr, optim.clip_grad, more schedule.warmup_epochs, or train.amp=bf16/none")

        if scaler is not None:
            if clip_grad:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)  # skipped (and the scale lowered) when the fp16 gradients overflowed
            scaler.update()
        else:
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # the lr this step used
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)

        batch = images.shape[0]
        steps += 1
        images_seen += batch
        window_images += batch
        loss_sum += loss_value
        window_loss += loss_value
        window_steps += 1
        if progress is not None:
            progress.update(1)
        if steps % log_interval == 0 or (max_steps is not None and steps == max_steps):
            now = time.perf_counter()
            # every process reaches the same log steps: average the loss, add up the images over processes
            w_loss, w_images = all_reduce_sum([window_loss / window_steps, float(window_images)], device)
            record = {"step": step_offset + steps, "epoch": epoch, "loss": w_loss / world_size, "lr": lr,
                      "img_per_s": w_images / max(now - window_start, 1e-9)}
            if progress is not None:
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}",
                                     img_s=f"{record['img_per_s']:.0f}", refresh=False)
            if on_log is not None:
                on_log(record)
            window_loss, window_steps, window_images, window_start = 0.0, 0, 0, now
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    mean_loss, images_seen = all_reduce_sum([loss_sum / max(steps, 1), float(images_seen)], device)
    return {"loss": mean_loss / world_size, "lr": optimizer.param_groups[0]["lr"], "steps": steps,
            "images": int(images_seen), "img_per_s": images_seen / max(elapsed, 1e-9), "time_s": elapsed}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *, amp: torch.dtype | None = None,
             channels_last: bool = False, max_steps: int | None = None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` on ``loader`` (summed over processes)."""
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    count = 0
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        hits = top.eq(targets[:, None])
        correct1 += hits[:, :1].sum().item()
        correct5 += hits.sum().item()
        count += targets.shape[0]
    correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, float(count)], device)
    count = max(count, 1.0)
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count,
            "images": int(count)}


# ------------------------------------------------------------------------------------------ a run
def _threads_note() -> str:
    from . import threads

    n = torch.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}" + (f" ({threads.chosen})" if threads.chosen else "")


# errors of the file system that mean "cannot write here", as opposed to a bug or bad data
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@contextlib.contextmanager
def _run_folder(run_dir: Path, *, is_main: bool, fresh: bool, say: Callable[..., None]):
    """Create and lock ``run_dir`` for the training; say what was kept when the run stops early.

    * a second process training into the same folder is refused with the owner's pid (:mod:`.runlock`);
    * Ctrl-C: the interrupt message names the folder and the resume command (or says nothing was kept);
    * a folder this run created is removed again if the run fails before its first checkpoint;
    * a full disk or an unwritable file becomes one line that says which checkpoint is intact.
    """
    if not is_main:
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if lock.stale is not None:
        say(f"flexbone: note: took over the lock of process {lock.stale.get('pid', '?')}, which no longer runs")

    def kept() -> str:
        last = run_dir / LAST
        if last.is_file():
            return f"run folder {run_dir} keeps {LAST}; continue with: flexbone train --resume {run_dir}"
        if created and fresh:
            return f"nothing was kept: the run stopped before its first checkpoint ({run_dir} removed)"
        return f"no checkpoint in {run_dir} yet"

    try:
        with interrupt_note(kept):
            yield
    except BaseException as e:
        message = kept()  # before the folder may be removed below
        if created and fresh and not (run_dir / LAST).is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            what = "the disk is full" if is_disk_full(e) else describe_os_error(e)
            raise FlexboneError(f"cannot write to {run_dir}: {what}; {message}") from None
        raise
    finally:
        lock.release()

@dataclasses.dataclass
class RunResult:
    """What a finished run produced and where it is."""

    run_dir: Path
    epochs: int
    top1: float | None
    top5: float | None
    best_top1: float | None
    checkpoint: Path
    best_checkpoint: Path | None
    weights: Path
    recipe: Path
    metrics: Path
    plot: Path
    seconds: float
    metric: str = "top1"  # the evaluation metric checkpoint-best was chosen on (segmentation: 'miou')
    best: float | None = None  # its best value
    final: dict[str, Any] = dataclasses.field(default_factory=dict)  # the final evaluation (every metric)


def _describe(record: dict[str, Any], prefix: str, metrics: dict[str, str], sep: str = ", ") -> str:
    """'top-1 76.10%, top-5 92.90%' from ``record[prefix + name]`` for each metric."""
    return sep.join(f"{label} {record[prefix + name]:.2f}%" for name, label in metrics.items())


def default_run_name(recipe: Any, recipe_name: str) -> str:
    return f"{recipe.model.name}-{Path(recipe_name).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _build_model(recipe: Any, num_classes: int) -> nn.Module:
    from ..models import create_model

    m = recipe.model
    return create_model(m.name, pretrained=m.pretrained or False, num_classes=num_classes,
                        drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate, **m.kwargs)


def _build_teacher(recipe: Any, num_classes: int, device: torch.device) -> nn.Module | None:
    from ..models import create_model

    d = recipe.distill
    if d.teacher is None:
        return None
    teacher = create_model(d.teacher, pretrained=d.teacher_checkpoint or False, num_classes=num_classes)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def run(
    recipe: Any,
    *,
    recipe_name: str = "recipe",
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    model: nn.Module | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> RunResult:
    """Train and evaluate as ``recipe`` says; write checkpoints, logs and plots to the run directory.

    Args:
        recipe: a validated :class:`~flexbone.config.Recipe`.
        recipe_name: used in the default run-directory name.
        run_dir: where to write; default ``train.output_dir / (train.run_name or <model>-<recipe>-<time>)``.
        resume: a run directory (or checkpoint file) to continue from; the run directory is then reused.
        model: a model to train instead of building ``recipe.model`` (its classifier must fit the data).
        progress: show the tqdm progress bar (rank 0 only).
        quiet: print nothing but errors.
    """
    dist_info = init_distributed(recipe.train.device)
    try:
        runner = strategy_runner(recipe)  # a chain of runs (progressive shrinking: one per phase)
        if runner is not None:
            run_one = functools.partial(_run, dist_info=dist_info, progress=progress, quiet=quiet)
            return runner(recipe, run_one, recipe_name=recipe_name, run_dir=run_dir, resume=resume, model=model,
                          quiet=quiet)
        return _run(recipe, dist_info, recipe_name=recipe_name, run_dir=run_dir, resume=resume, model=model,
                    progress=progress, quiet=quiet)
    finally:
        if dist_info.distributed:
            cleanup_distributed()


def _run(recipe: Any, dist_info: DistInfo, *, recipe_name: str, run_dir: str | Path | None,
         resume: str | Path | None, model: nn.Module | None, progress: bool, quiet: bool) -> RunResult:
    from tqdm.auto import tqdm

    from ..config import dump_recipe, scaled_lr
    from ..data.loader import build_loaders
    from ..data.mixup import build_mixup

    t_start = time.perf_counter()
    tr = recipe.train
    device = dist_info.device
    is_main = dist_info.is_main
    say = (lambda *a: None) if quiet or not is_main else (lambda *a: tqdm.write(" ".join(map(str, a))))

    # where to write ---------------------------------------------------------------------------
    state = load_training_state(resume) if resume is not None else None
    if resume is not None:
        resume = Path(resume)
        run_dir = resume if resume.is_dir() else resume.parent
    if run_dir is None:
        run_dir = Path(tr.output_dir) / (tr.run_name or default_run_name(recipe, recipe_name))
    run_dir = Path(run_dir)
    # a new run never writes into an existing one (its checkpoint and logs would be mixed with ours)
    occupied = state is None and is_main and any((run_dir / f).exists() for f in (LAST, METRICS_JSONL))
    if broadcast_flag(occupied, device):
        raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or choose another "
                          f"train.run_name / train.output_dir")
    if is_main:  # before any work: an unwritable folder or a run still training there fails in the first second
        check_writable(run_dir, is_dir=True)
        check_unlocked(run_dir)
    # the folder itself is created once data and model are built (a run that fails before leaves no folder)

    # data, model, optimisation -----------------------------------------------------------------
    # the model is initialised from the same seed in every process (DDP also broadcasts rank 0's weights);
    # augmentation and dropout then draw from a stream per process (seed + rank)
    seed_everything(tr.seed)
    train_loader, holdout_loader, eval_loader, num_classes, class_names = build_loaders(
        recipe, dist_info.world_size, dist_info.rank, with_holdout=True)
    # checkpoint-best is chosen on the hold-out split when there is one (the test split is then evaluated once,
    # at the end); without one, on the test split itself, as most recipes from papers do
    select_loader = holdout_loader if holdout_loader is not None else eval_loader
    select_name = "hold-out" if holdout_loader is not None else "eval"
    mixup_fn = build_mixup(recipe.aug, num_classes, recipe.loss.label_smoothing)
    if model is None:
        model = _build_model(recipe, num_classes)
    model.to(device)
    if recipe.model.channels_last:
        model.to(memory_format=torch.channels_last)
    teacher = _build_teacher(recipe, num_classes, device)
    if tr.memory_check and device.type == "cpu":  # before the run folder: a refusal leaves nothing (every rank)
        from .memory import check_training_memory

        check_training_memory(unwrap_model(model), batch_size=max(recipe.data.batch_size // dist_info.world_size, 1),
                              img_size=recipe.data.img_size, in_chans=getattr(model, "in_chans", 3),
                              optimizer=recipe.optim.name, ema=tr.ema_decay > 0)
    seed_everything(tr.seed + dist_info.rank)

    steps_per_epoch = len(train_loader)
    if tr.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, tr.max_steps_per_epoch)
    global_batch = recipe.data.batch_size
    peak_lr = scaled_lr(recipe, global_batch)
    optimizer = create_optimizer(model, recipe.optim, lr=peak_lr)
    scheduler = create_scheduler(optimizer, recipe.schedule, peak_lr, steps_per_epoch)
    loss_fn = create_loss(recipe.loss.name, recipe.loss.label_smoothing, recipe.loss.bce_target_threshold)
    # what a step does with the batch and what an evaluation reports (flexbone.train.strategy)
    strategy = build_strategy(recipe, model, loss_fn=loss_fn, mixup_fn=mixup_fn, num_classes=num_classes,
                              steps_per_epoch=steps_per_epoch, device=device, fresh=state is None, teacher=teacher)
    autocast_dtype = amp_dtype(tr.amp, device)
    note = slow_bf16_note(tr.amp, device)
    if note:
        say(note)
    scaler = torch.amp.GradScaler("cuda") if tr.amp == "fp16" else None
    ema = ModelEma(model, tr.ema_decay, warmup=tr.ema_warmup) if tr.ema_decay > 0 else None
    # what an evaluation reports (name -> label): top-1/top-5, or a strategy's own (segmentation: mIoU ...);
    # checkpoint-best is chosen on the first
    metrics = dict(strategy.metrics)
    select_metric = next(iter(metrics))

    start_epoch, global_step, best_score, best_epoch = 0, 0, None, None
    if state is not None:
        try:
            unwrap_model(model).load_state_dict(state["model"])
        except RuntimeError as e:  # e.g. a --model override that is not the model of the run
            raise CheckpointError(f"{resume}: its weights do not fit {recipe.model.name} "
                                  f"({str(e).strip().splitlines()[0]})") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(state["epoch"]), int(state["step"])
        best_score, best_epoch = state.get("best_score", state.get("best_top1")), state.get("best_epoch")
        if dist_info.distributed and state.get("world_size", 1) != dist_info.world_size:
            say(f"note: resuming a {state.get('world_size', 1)}-process run with {dist_info.world_size} processes;"
                " the data order and RNG streams differ from the original run")
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one per process of that run
        set_rng_state(rngs[dist_info.rank % len(rngs)])

    train_model: nn.Module = model
    if dist_info.distributed:
        train_model = nn.parallel.DistributedDataParallel(  # a sub-network leaves parameters unused
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=strategy.find_unused_parameters)
    if tr.compile:
        train_model = torch.compile(train_model)

    with _run_folder(run_dir, is_main=is_main, fresh=state is None, say=say):
        metadata = {
            "model": recipe.model.name, "num_classes": num_classes, "class_names": list(class_names),
            "img_size": recipe.data.img_size, "test_img_size": recipe.data.test_img_size or recipe.data.img_size,
            "crop_pct": recipe.data.crop_pct, "interpolation": recipe.data.interpolation,
            "mean": list(recipe.data.mean), "std": list(recipe.data.std), "model_kwargs": dict(recipe.model.kwargs),
            "dataset": recipe.data.dataset, "digits_test_fraction": recipe.data.digits_test_fraction,
            "digits_split_seed": recipe.data.digits_split_seed, **strategy.metadata(),
        }
        logger = MetricsLogger(run_dir, enabled=is_main, tensorboard=tr.tensorboard)
        if is_main:
            dump_recipe(recipe, run_dir / "recipe.yaml")
            logger.truncate(start_epoch, global_step)  # a resumed run drops log lines written after its checkpoint

        say(f"flexbone: training {recipe.model.name} ({unwrap_model(model).__class__.__name__}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) on {recipe.data.dataset} "
            f"({len(train_loader.dataset)} train / "
            + (f"{len(holdout_loader.dataset)} hold-out / " if holdout_loader is not None else "")
            + f"{len(eval_loader.dataset)} eval images, {num_classes} classes) | {device}, "
            f"{dist_info.world_size} process(es), {_threads_note()}, global batch {global_batch}, peak lr {peak_lr:.4g}, "
            f"amp {tr.amp}")
        if state is not None:
            say(f"flexbone: resumed {run_dir} at epoch {start_epoch} (step {global_step})")

        def checkpoint_state(epoch_done: int) -> dict[str, Any]:
            rng = get_rng_state()
            if dist_info.distributed:  # every rank's generators, so that each resumes its own stream
                gathered: list[Any] = [None] * dist_info.world_size
                torch.distributed.all_gather_object(gathered, rng)
                rng = gathered
            return {
                "model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng,
                "epoch": epoch_done, "step": global_step, "best_score": best_score, "best_metric": select_metric,
                "best_top1": best_score if select_metric == "top1" else None, "best_epoch": best_epoch,
                "world_size": dist_info.world_size, "metadata": metadata,
            }

        epochs = recipe.schedule.epochs
        bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, unit="step",
                   desc="train", dynamic_ncols=True, disable=not (progress and is_main), file=sys.stderr)
        last_eval: dict[str, float] | None = None
        try:
            for epoch in range(start_epoch, epochs):
                set_loader_epoch(train_loader, tr.seed, epoch)
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
                stats = train_one_epoch(
                    train_model, train_loader, optimizer, loss_fn, device, epoch=epoch, scheduler=scheduler,
                    mixup_fn=None if strategy.handles_mixup else mixup_fn, amp=autocast_dtype, scaler=scaler,
                    channels_last=recipe.model.channels_last, strategy=strategy,
                    clip_grad=recipe.optim.clip_grad, ema=ema, max_steps=steps_per_epoch, progress=bar,
                    log_interval=tr.log_interval, on_log=logger.log_step, step_offset=global_step)
                global_step += stats["steps"]
                broadcast_buffers(model, *([ema.module] if ema is not None else []))  # evaluated and saved alike
                record: dict[str, Any] = {
                    "epoch": epoch, "step": global_step, "steps_per_epoch": steps_per_epoch, "lr": stats["lr"],
                    "train_loss": stats["loss"], "train_images": stats["images"], "train_img_per_s": stats["img_per_s"],
                    "train_time_s": stats["time_s"]}
                last_epoch = epoch + 1 == epochs
                if (epoch + 1) % tr.eval_every == 0 or last_epoch:
                    # the strategy's report: the model, plus e.g. a supernet's min net or an SN-Net's anchors
                    last_eval = strategy.evaluate(model, select_loader, train_loader, device, amp=autocast_dtype,
                                                  channels_last=recipe.model.channels_last)
                    for name, sub in last_eval.get("subnets", {}).items():
                        record.update({f"eval_{name}_top1": sub["top1"], f"eval_{name}_loss": sub["loss"]})
                    record.update(eval_loss=last_eval["loss"], **{f"eval_{k}": last_eval[k] for k in metrics})
                    if ema is not None:
                        ema_eval = strategy.evaluate_model(ema.module, select_loader, device, amp=autocast_dtype,
                                                           channels_last=recipe.model.channels_last)
                        record.update(ema_loss=ema_eval["loss"], **{f"ema_{k}": ema_eval[k] for k in metrics})
                skipped = sum(getattr(loader, "total_skipped", 0) for loader in {train_loader, select_loader, eval_loader})
                skipped = int(all_reduce_sum([float(skipped)], device)[0])
                if skipped:  # unreadable images dropped so far (the loader warns once per file)
                    record["skipped_images"] = skipped
                score = record.get(f"eval_{select_metric}")
                is_best = score is not None and (best_score is None or score > best_score)
                if is_best:
                    best_score, best_epoch = score, epoch
                logger.log_epoch(record)
                if (epoch + 1) % tr.save_every == 0 or last_epoch or is_best:
                    ckpt = checkpoint_state(epoch + 1)  # collective in DDP: every rank takes part
                    if is_main:
                        if (epoch + 1) % tr.save_every == 0 or last_epoch:
                            save_training_state(run_dir / LAST, ckpt)
                        if is_best:
                            save_training_state(run_dir / BEST, ckpt)
                say(f"epoch {epoch + 1}/{epochs}: train loss {stats['loss']:.4f}, lr {stats['lr']:.3g}, "
                    f"{stats['img_per_s']:.0f} img/s"
                    + (f" | {select_name} {_describe(record, 'eval_', metrics)}" if score is not None else "")
                    + (f" | EMA {_describe(record, 'ema_', {select_metric: metrics[select_metric]})}"
                       if f"ema_{select_metric}" in record else ""))
        except NonFiniteLossError as e:
            bar.close()
            if is_main and logger.epochs:
                plot_metrics(run_dir, logger.epochs, logger.steps, title=f"{recipe.model.name} ({recipe_name})",
                             metrics=metrics)
            kept = run_dir / LAST
            where = (f"the last good checkpoint {kept} is kept" if kept.is_file()
                     else "no checkpoint had been written yet")
            raise NonFiniteLossError(f"{e}. {where}") from None
        bar.close()
        logger.close()
        if holdout_loader is not None:  # the test split, once, on the final model
            last_eval = strategy.evaluate(model, eval_loader, train_loader, device, amp=autocast_dtype,
                                          channels_last=recipe.model.channels_last)

        # deployment weights, plot, summary ----------------------------------------------------------
        weights = run_dir / WEIGHTS
        plot = run_dir / CURVES_PNG
        if is_main:
            final_meta = {**metadata, "epochs": epochs, **{k: last_eval[k] if last_eval else None for k in metrics},
                          f"best_{select_metric}_on": select_name}
            save_model_weights(unwrap_model(model).state_dict(), weights, final_meta)
            if ema is not None:
                save_model_weights(ema.module.state_dict(), run_dir / EMA_WEIGHTS, final_meta)
            plot_metrics(run_dir, logger.epochs, logger.steps, title=f"{recipe.model.name} ({recipe_name})",
                         metrics=metrics)
        result = RunResult(
            run_dir=run_dir, epochs=epochs, top1=last_eval.get("top1") if last_eval else None,
            top5=last_eval.get("top5") if last_eval else None,
            best_top1=best_score if select_metric == "top1" else None, checkpoint=run_dir / LAST,
            best_checkpoint=run_dir / BEST if best_score is not None else None, weights=weights,
            recipe=run_dir / "recipe.yaml", metrics=run_dir / METRICS_CSV, plot=plot,
            seconds=time.perf_counter() - t_start, metric=select_metric, best=best_score,
            final=dict(last_eval) if last_eval else {})
        if last_eval is not None:
            label = metrics[select_metric]
            if holdout_loader is not None:
                chosen = (f"; checkpoint-best chosen on {len(holdout_loader.dataset)} hold-out images: {label} "
                          f"{best_score:.2f}% at epoch {best_epoch + 1}" if best_score is not None else "")
                say(f"\ntest {_describe(last_eval, '', metrics, '  ')}  ({last_eval['images']} "
                    f"images, the final model, evaluated once{chosen})")
            else:
                say(f"\ntest {_describe(last_eval, '', metrics, '  ')}  "
                    f"({last_eval['images']} images; best {label} {best_score:.2f}% at epoch {best_epoch + 1}, chosen "
                    f"on these same images" + (": set data.holdout_fraction to choose on images kept apart)"
                                               if select_metric == "top1" else ")"))
        say(f"run directory   {run_dir}\n"
            f"  checkpoint    {run_dir / LAST}  (resume: flexbone train --resume {run_dir})\n"
            f"  best          {run_dir / BEST}\n"
            f"  weights       {weights}\n"
            f"  recipe        {run_dir / 'recipe.yaml'}\n"
            f"  metrics       {run_dir / METRICS_CSV}  ({METRICS_JSONL}, steps.jsonl)\n"
            f"  plot          {plot}")
        return result

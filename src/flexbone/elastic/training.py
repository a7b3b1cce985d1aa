"""Training once-for-all supernets through the ordinary engine: progressive shrinking, the sandwich rule, DεpS.

A recipe with ``elastic.strategy`` other than ``none`` trains a supernet (``model.name`` a registered supernet).
The engine's loop stays the same; per optimiser step it hands the batch to :class:`ElasticTraining`, which
samples sub-networks, runs forward and backward for each of them (the gradients add up in ``.grad``, one
graph in memory at a time) and returns the summed loss. Evaluation runs the min and the max sub-network of
the trained space, each after BN recalibration on training batches (the max last, so that the saved weights
carry the max net's statistics).

Strategies (``elastic.strategy``)::

    progressive   OFA (Cai et al., ICLR 2020): a table of phases, full net -> kernel -> depth -> expand, each a
                  run of its own that starts from the previous phase's weights. Per step ``subnets_per_step``
                  random sub-networks of the phase's sub-space, each with task loss + kd_weight * KD(teacher),
                  the teacher being the frozen max net of the first phase's weights. Middle channels are sorted
                  by importance before the expand phases. ``engine.run`` runs the chain (:func:`run_phases`).
    sandwich      BigNAS / AttentiveNAS: per step the max net (task loss, with label smoothing, Mixup/CutMix,
                  dropout and drop path) then the min and ``num_random`` random sub-networks, which distil from
                  the max net's detached logits with no regularisation (in-place distillation).
    deps          DεpS (Annavajjala et al., ECCV 2024): the max net alone for the first ``deps_start`` of the
                  schedule, then the sandwich with the sub-networks' loss weight beta rising linearly from 0 to 1
                  over ``deps_ramp_epochs`` (ε-shrinking), distilling from the still-training full net.

Sub-networks are drawn by :class:`SubnetSampler` from ``(train.seed, epoch, step)`` alone, never from the global
generators (which the engine seeds per rank), so every DDP rank trains the same sub-networks in the same
step, and a resumed run draws what the interrupted one would have drawn.
"""
from __future__ import annotations

import contextlib
import copy
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..config.loader import elastic_phases, validate_recipe
from ..config.schema import ElasticPhase, Recipe
from ..errors import ConfigError
from ..interrupt import interrupt_note
from ..train.distributed import barrier, unwrap_model
from ..train.losses import distillation_loss
from ..train.strategy import TrainingStrategy
from .bn import recalibrate_bn
from .space import SLOT_FIELDS, SearchSpace, SubnetConfig


# -------------------------------------------------------------------------------------------- sampling
class SubnetSampler:
    """Sub-network configurations that depend on ``(seed, epoch, step, index)`` only.

    Each draw seeds its own ``random.Random`` from the string ``"seed/epoch/step/what"`` (hashed with
    SHA-512 by Python, so the same in every process, whatever ``PYTHONHASHSEED`` or the global generators):
    the DDP ranks agree without communicating, and a resumed run repeats the draws of the original one.
    """

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed = space, seed

    def rng(self, epoch: int, step: int, what: str | int = 0) -> random.Random:
        return random.Random(f"{self.seed}/{epoch}/{step}/{what}")

    def sample(self, epoch: int, step: int, index: int = 0) -> SubnetConfig:
        """The ``index``-th random sub-network of optimiser step ``step`` of ``epoch``."""
        return self.space.sample(self.rng(epoch, step, index))

    def resolution(self, epoch: int, step: int, choices: Sequence[int]) -> int:
        """The training resolution of a step (one for all its sub-networks, as OFA's per-batch image size)."""
        return self.rng(epoch, step, "resolution").choice(list(choices))


def training_space(space: SearchSpace) -> SearchSpace:
    """``space`` with its resolution held at the largest: a config's resolution only labels a sub-network,
    training resolutions come from ``elastic.resolutions`` (drawn per step, see :class:`ElasticTraining`)."""
    return space.restrict(resolution=[max(space.resolution)]) if space.resolution else space


def phase_space(space: SearchSpace, phase: ElasticPhase) -> SearchSpace:
    """The sub-space a progressive-shrinking phase trains: each dimension the phase lists is restricted to its
    values, every other elastic dimension is held at its largest choice (the resolution too, see
    :func:`training_space`)."""
    allowed: dict[str, Any] = {}
    for f in SLOT_FIELDS:
        slots, values = getattr(space, f), getattr(phase, f)
        if values:
            allowed[f] = values
        elif slots:
            allowed[f] = [[choices[-1]] for choices in slots]  # per slot: its largest choice
    try:
        return training_space(space.restrict(**allowed))
    except ConfigError as e:
        raise ConfigError(f"elastic.phases {phase.name!r}: {e}") from None


def deps_beta(progress_epochs: float, start_epoch: float, ramp_epochs: float) -> float:
    """DεpS's weight of the sub-networks' loss at ``progress_epochs`` (fractional epochs since the start):
    0 before ``start_epoch``, then rising linearly to 1 over ``ramp_epochs`` (at once when 0)."""
    if progress_epochs < start_epoch:
        return 0.0
    if ramp_epochs <= 0:
        return 1.0
    return min(1.0, (progress_epochs - start_epoch) / ramp_epochs)


# ------------------------------------------------------------------------------------------ helpers
def is_supernet(model: nn.Module) -> bool:
    """Does ``model`` have a search space and elastic surgery (``space``, ``set_active``, ``extract``)?"""
    return all(hasattr(model, a) for a in ("space", "set_active", "extract"))


@contextlib.contextmanager
def regularization_off(model: nn.Module) -> Iterator[None]:
    """Dropout and drop path off inside the block (the sandwich rule regularises the max net only)."""
    saved: list[tuple[Any, str, Any]] = []
    for m in model.modules():
        for attr in ("drop_prob", "drop_rate") if not isinstance(m, nn.Dropout) else ("p",):
            if isinstance(getattr(m, attr, None), float) and getattr(m, attr) > 0:
                saved.append((m, attr, getattr(m, attr)))
                setattr(m, attr, 0.0)
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


def _autocast(x: torch.Tensor, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None)


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses and distillation targets in at least float32 (logits may be bf16/fp16 under autocast)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


# ------------------------------------------------------------------------------------- the training step
@dataclass
class ElasticTraining(TrainingStrategy):
    """What one supernet training step needs; built once per run by :func:`build_elastic_training`.

    The engine's training strategy (:mod:`flexbone.train.strategy`): ``step(model, images, targets, epoch=,
    step=, amp=, scaler=)`` in place of its forward / loss / backward; ``model`` may be DDP-wrapped.
    """

    handles_mixup = True  # the max net takes the mixed batch, the sub-networks distil on the same one
    find_unused_parameters = True  # a sub-network leaves the rest of the supernet unused

    strategy: str  # 'progressive', 'sandwich' or 'deps'
    space: SearchSpace  # the space trained (a phase's sub-space for progressive shrinking)
    sampler: SubnetSampler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # the task loss (label smoothing inside)
    mixup_fn: Callable | None = None
    subnets_per_step: int = 1  # progressive
    num_random: int = 2  # sandwich / deps
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    teacher: nn.Module | None = None  # progressive: the frozen full network
    deps_start_epoch: float = 0.0  # deps: the max net alone before this epoch (sandwich: 0)
    deps_ramp_epochs: float = 0.0
    steps_per_epoch: int = 1
    resolutions: tuple[int, ...] = ()
    bn_batches: int = 10

    def beta(self, epoch: int, step: int) -> float:
        """The weight of the smaller sub-networks' loss at this step (1 for sandwich)."""
        return deps_beta(epoch + step / self.steps_per_epoch, self.deps_start_epoch, self.deps_ramp_epochs)

    def sandwich_configs(self, epoch: int, step: int) -> list[SubnetConfig]:
        """The sub-networks that distil from the max net in this step: the min, then ``num_random`` random."""
        return [self.space.min()] + [self.sampler.sample(epoch, step, i) for i in range(self.num_random)]

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epoch: int, step: int,
             amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
        if self.resolutions:  # elastic resolution: the whole batch at one size drawn for this step
            size = self.sampler.resolution(epoch, step, self.resolutions)
            if size != images.shape[-1]:
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        step_fn = progressive_step if self.strategy == "progressive" else sandwich_step
        loss = step_fn(self, model, images, targets, epoch=epoch, step=step, amp=amp, scaler=scaler)
        unwrap_model(model).set_active(self.space.max())  # leave the max net active (EMA, evaluation, export)
        return loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, eval_loader: Iterable, calib_loader: Iterable, device: torch.device, *,
                 amp: torch.dtype | None = None, channels_last: bool = False) -> dict[str, Any]:
        """Top-1 / top-5 / loss of the max net (the dict ``engine.evaluate`` returns) plus ``'subnets'``:
        ``{'min': {...}}``; each sub-network is evaluated after BN recalibration on ``elastic.bn_batches``
        batches of ``calib_loader``."""
        from ..train.engine import evaluate

        net = unwrap_model(model)
        results = {}
        for name, cfg in (("min", self.space.min()), ("max", self.space.max())):  # max last: its BN stats stay
            if name == "min" and cfg == self.space.max():
                continue  # a phase that trains the full net alone
            net.set_active(cfg)
            recalibrate_bn(net, calib_loader, self.bn_batches)
            results[name] = evaluate(net, eval_loader, device, amp=amp, channels_last=channels_last)
        out = dict(results.pop("max"))
        out["subnets"] = results
        return out


def progressive_step(et: ElasticTraining, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                     epoch: int, step: int, amp: torch.dtype | None,
                     scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """OFA: ``subnets_per_step`` random sub-networks of the phase's space, each with the task loss plus
    ``kd_weight`` x distillation from the frozen full network; gradients summed. Returns the summed loss."""
    net = unwrap_model(model)
    if et.mixup_fn is not None:
        images, targets = et.mixup_fn(images, targets)
    soft = None
    if et.teacher is not None:
        with torch.no_grad(), _autocast(images, amp):
            soft = _full(et.teacher(images))  # (B, num_classes)
    total = torch.zeros((), device=images.device, dtype=torch.promote_types(images.dtype, torch.float32))
    for i in range(et.subnets_per_step):
        net.set_active(et.sampler.sample(epoch, step, i))
        with _autocast(images, amp):
            logits = model(images)
            loss = et.loss_fn(logits, targets)
            if soft is not None:
                loss = loss + et.kd_weight * distillation_loss(_full(logits), soft, et.kd_temperature)
        _backward(loss, scaler)
        total = total + _full(loss.detach())
    return total


def sandwich_step(et: ElasticTraining, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                  epoch: int, step: int, amp: torch.dtype | None,
                  scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """The sandwich rule (DεpS when ``beta`` < 1): the max net with the task loss and every regulariser, then the
    min and the random sub-networks with ``beta x kd_weight x`` distillation from the max net's detached
    logits on the same (unmixed) images, without dropout or drop path. Returns the summed, weighted loss."""
    net = unwrap_model(model)
    net.set_active(et.space.max())
    x, y = et.mixup_fn(images, targets) if et.mixup_fn is not None else (images, targets)
    with _autocast(images, amp):
        logits = model(x)
        loss = et.loss_fn(logits, y)
    _backward(loss, scaler)
    total = _full(loss.detach())
    beta = et.beta(epoch, step)
    if beta == 0.0:  # DεpS before shrinking starts: the full net alone
        return total
    if x is images:
        soft = _full(logits.detach())
    else:  # the max net saw a mixed batch; the sub-networks distil from its predictions on the clean one
        with torch.no_grad(), _autocast(images, amp):
            soft = _full(model(images))
    with regularization_off(net):
        for cfg in et.sandwich_configs(epoch, step):
            net.set_active(cfg)
            with _autocast(images, amp):
                sub_loss = beta * et.kd_weight * distillation_loss(_full(model(images)), soft, et.kd_temperature)
            _backward(sub_loss, scaler)
            total = total + sub_loss.detach()
    return total


# ------------------------------------------------------------------------------------------- building
def _phase(recipe: Recipe) -> ElasticPhase:
    phases = {p.name: p for p in elastic_phases(recipe.elastic)}
    if recipe.elastic.phase is None:
        raise ConfigError("progressive shrinking trains one phase per run: set elastic.phase, or let "
                          "flexbone.train.engine.run (flexbone train) run every phase in order")
    return phases[recipe.elastic.phase]


def build_teacher(recipe: Recipe, checkpoint: str, num_classes: int, device: torch.device) -> nn.Module:
    """The frozen full network of a supernet checkpoint: its max sub-network as a static model, in train mode
    (BN normalises with the batch statistics, as the reference's teacher), without dropout or drop path."""
    from ..models import create_model

    m = recipe.model
    supernet = create_model(m.name, pretrained=checkpoint, num_classes=num_classes, drop_rate=0.0, drop_path_rate=0.0,
                            **m.kwargs)
    teacher = supernet.extract(supernet.space.max())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).train()


def build_elastic_training(recipe: Recipe, model: nn.Module, *, loss_fn: Callable, mixup_fn: Callable | None,
                           num_classes: int, steps_per_epoch: int, device: torch.device,
                           fresh: bool = True, **context: Any) -> ElasticTraining:
    """The :class:`ElasticTraining` of a recipe, for ``model`` (the unwrapped supernet, weights loaded).

    ``fresh``: the run starts here (not resumed). Only then are the middle channels reorganised for a phase
    that asks for it (a resumed run's weights were reorganised when it started).
    """
    e = recipe.elastic
    if not is_supernet(model):
        from ..models import list_models

        raise ConfigError(f"elastic.strategy {e.strategy} trains a once-for-all supernet, but {recipe.model.name} is "
                          f"not one; supernets: {', '.join(list_models('ofa_*'))}")
    common = dict(strategy=e.strategy, loss_fn=loss_fn, mixup_fn=mixup_fn, kd_weight=e.kd_weight,
                  kd_temperature=e.kd_temperature, steps_per_epoch=max(steps_per_epoch, 1),
                  resolutions=tuple(e.resolutions), bn_batches=e.bn_batches)
    if e.strategy == "progressive":
        phase = _phase(recipe)
        space = phase_space(model.space, phase)
        if phase.reorganize is not None and fresh:
            model.reorganize_channels(phase.reorganize)  # the max net's function is unchanged
        teacher = None
        if phase.kd and e.kd_weight > 0:
            source = e.teacher_checkpoint or recipe.model.pretrained
            if not source:
                raise ConfigError(f"phase {phase.name!r} distils from the full network: set "
                                  f"elastic.teacher_checkpoint or model.pretrained (the full net's weights), "
                                  f"or kd: false for the phase")
            teacher = build_teacher(recipe, source, num_classes, device)
        return ElasticTraining(space=space, sampler=SubnetSampler(space, recipe.train.seed),
                               subnets_per_step=phase.subnets_per_step, teacher=teacher, **common)
    space = training_space(model.space)
    start = e.deps_start * recipe.schedule.epochs if e.strategy == "deps" else 0.0
    ramp = e.deps_ramp_epochs if e.strategy == "deps" else 0.0
    return ElasticTraining(space=space, sampler=SubnetSampler(space, recipe.train.seed), num_random=e.num_random,
                           deps_start_epoch=start, deps_ramp_epochs=ramp, **common)


# ------------------------------------------------------------------------------- progressive shrinking
def phase_recipe(recipe: Recipe, phase: ElasticPhase, **changes: Any) -> Recipe:
    """The recipe of one phase: ``schedule.epochs`` and ``optim.lr`` from its row (warm-up capped at its
    epochs), ``elastic.phase`` set; ``changes`` may set ``pretrained`` and ``teacher_checkpoint``."""
    r = copy.deepcopy(recipe)
    r.elastic.phase = phase.name
    r.schedule.epochs = phase.epochs
    r.optim.lr = phase.lr
    warmup = r.schedule.warmup_epochs if phase.warmup_epochs is None else phase.warmup_epochs
    r.schedule.warmup_epochs = min(warmup, phase.epochs)
    if "pretrained" in changes:
        r.model.pretrained = changes.pop("pretrained")
    if "teacher_checkpoint" in changes:
        r.elastic.teacher_checkpoint = changes.pop("teacher_checkpoint")
    if changes:
        raise TypeError(f"unexpected phase_recipe argument(s) {', '.join(changes)}")
    validate_recipe(r, f"phase {phase.name}")
    return r


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _finished_phase(phase_dir: Path, epochs: int) -> Any:
    """The RunResult of a phase that already ran to its end (resuming a chain), else None."""
    from ..train.checkpoint import BEST, LAST, WEIGHTS, load_training_state
    from ..train.engine import RunResult
    from ..train.logs import CURVES_PNG, METRICS_CSV

    if not ((phase_dir / LAST).is_file() and (phase_dir / WEIGHTS).is_file()):
        return None
    state = load_training_state(phase_dir / LAST)
    if int(state["epoch"]) < epochs:
        return None
    best = state.get("best_top1")
    return RunResult(run_dir=phase_dir, epochs=epochs, top1=None, top5=None, best_top1=best, checkpoint=phase_dir / LAST,
                     best_checkpoint=phase_dir / BEST if best is not None else None, weights=phase_dir / WEIGHTS,
                     recipe=phase_dir / "recipe.yaml", metrics=phase_dir / METRICS_CSV, plot=phase_dir / CURVES_PNG,
                     seconds=0.0)


def run_phases(recipe: Recipe, run_one: Callable[..., Any], *, recipe_name: str = "recipe",
               run_dir: str | Path | None = None, resume: str | Path | None = None, model: nn.Module | None = None,
               quiet: bool = False) -> Any:
    """Progressive shrinking: every phase of ``elastic.phases`` in order, each one run of the engine.

    ``run_one(recipe, recipe_name=, run_dir=, resume=, model=)`` trains one run (the engine's ``_run``).
    The chain's folder holds the recipe and one folder per phase, ``phase<i>-<name>``; phase ``i + 1`` starts
    from phase ``i``'s ``model.safetensors`` and distils from the first phase's (or ``elastic.teacher_checkpoint``).
    With ``elastic.phase`` set, only that phase runs (in ``run_dir``), as any run. ``resume`` (the chain's
    folder) skips the phases that finished and continues the one that was interrupted.
    Returns the last phase's RunResult.
    """
    from ..config import dump_recipe
    from ..train.checkpoint import LAST
    from ..train.engine import default_run_name

    phases = elastic_phases(recipe.elastic)
    if recipe.elastic.phase is not None:
        phase = next(p for p in phases if p.name == recipe.elastic.phase)
        return run_one(phase_recipe(recipe, phase), recipe_name=recipe_name, run_dir=run_dir, resume=resume,
                       model=model)

    if resume is not None:
        chain_dir = Path(resume)
        if not (chain_dir / "recipe.yaml").is_file():
            raise ConfigError(f"{chain_dir} is not the folder of a progressive-shrinking run (no recipe.yaml); "
                              f"resume a single phase with its phase<i>-<name> folder")
    elif run_dir is not None:
        chain_dir = Path(run_dir)
    else:
        tr = recipe.train
        chain_dir = Path(tr.output_dir) / (tr.run_name or default_run_name(recipe, recipe_name))
    if dist.is_available() and dist.is_initialized():  # rank 0's folder (a default name holds the time of day)
        shared = [str(chain_dir)]
        dist.broadcast_object_list(shared, src=0)
        chain_dir = Path(shared[0])
    say = print if _is_main() and not quiet else (lambda *a, **k: None)
    # before any work: an unwritable place or an earlier chain there fails at once (on every rank)
    refusal = [_new_chain_refusal(chain_dir) if _is_main() and resume is None else None]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(refusal, src=0)
    if refusal[0] is not None:
        raise ConfigError(refusal[0])
    created = _topmost_missing(chain_dir) if _is_main() and resume is None else None  # removed if the chain fails
    if _is_main():
        chain_dir.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, chain_dir / "recipe.yaml")

    def kept() -> str:
        done = sorted(p.name for p in chain_dir.glob("phase*") if (p / LAST).is_file())
        if not done:
            return ""  # the phase's own note says that nothing was kept
        return (f"progressive-shrinking folder {chain_dir} keeps {', '.join(done)}; continue every remaining phase "
                f"with: flexbone train --resume {chain_dir}")

    try:
        with interrupt_note(kept):
            return _run_phase_chain(recipe, run_one, phases, chain_dir, recipe_name=recipe_name, resume=resume,
                                    model=model, say=say)
    except BaseException:
        # a chain that fails before its first phase made a folder (unknown model, missing data, a memory
        # refusal, Ctrl-C in the first epoch) leaves nothing: the phase removed its own folder already
        if created is not None and not any(chain_dir.glob("phase*")):
            shutil.rmtree(created, ignore_errors=True)
        raise


def _topmost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    missing = None
    while not path.exists() and path.parent != path:
        missing, path = path, path.parent
    return missing


def _new_chain_refusal(chain_dir: Path) -> str | None:
    """Why a new chain cannot start in ``chain_dir`` (unwritable, or an earlier chain is there), else None."""
    from ..outputs import check_writable

    try:
        check_writable(chain_dir, is_dir=True)
    except ConfigError as e:
        return str(e)
    if (chain_dir / "recipe.yaml").exists() or any(chain_dir.glob("phase*")):
        return (f"{chain_dir} already holds a progressive-shrinking run: continue it with --resume {chain_dir}, "
                f"or choose another train.run_name / train.output_dir")
    return None


def _run_phase_chain(recipe: Recipe, run_one: Callable[..., Any], phases: Sequence[ElasticPhase], chain_dir: Path, *,
                     recipe_name: str, resume: str | Path | None, model: nn.Module | None,
                     say: Callable[..., None]) -> Any:
    from ..train.checkpoint import LAST, WEIGHTS

    pretrained = recipe.model.pretrained
    first_weights: str | None = None
    results = []
    for i, phase in enumerate(phases):  # progress on stdout, as the engine's: stderr is for errors
        phase_dir = chain_dir / f"phase{i + 1}-{phase.name}"
        teacher = recipe.elastic.teacher_checkpoint or (first_weights if i > 0 else recipe.model.pretrained)
        r = phase_recipe(recipe, phase, pretrained=pretrained, teacher_checkpoint=teacher)
        space = ", ".join(f"{f} {list(getattr(phase, f))}" for f in SLOT_FIELDS if getattr(phase, f))
        say(f"\n== progressive shrinking, phase {i + 1}/{len(phases)}: {phase.name} ({space or 'full net'}; "
            f"{phase.epochs} epochs, lr {phase.lr:g}, {phase.subnets_per_step} sub-network(s) per step) -> {phase_dir}")
        result = _finished_phase(phase_dir, phase.epochs) if resume is not None else None
        if result is not None:
            say(f"   already trained ({phase_dir / LAST}); skipped")
        else:
            partial = resume is not None and (phase_dir / LAST).is_file()
            result = run_one(r, recipe_name=f"{recipe_name}-{phase.name}", run_dir=phase_dir,
                             resume=phase_dir if partial else None, model=model if i == 0 else None)
        barrier()  # every rank reads the weights that rank 0 just wrote
        results.append((phase, result))
        pretrained = str(phase_dir / WEIGHTS)
        if i == 0:
            first_weights = pretrained
    say("\nprogressive shrinking done:\n" + "\n".join(
        f"  phase {i + 1} {p.name:<10} {p.epochs:>4} epochs  max-net top-1 "
        + (f"{res.top1:6.2f}%" if res.top1 is not None else "     -") + f"  {res.run_dir}"
        for i, (p, res) in enumerate(results)))
    return results[-1][1]

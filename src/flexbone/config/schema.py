"""The typed recipe: one dataclass per section, every field with its default, meaning and unit.

A recipe YAML file has the sections below (``model``, ``data``, ``aug``, ``optim``, ``schedule``, ``loss``,
``train``, ``distill``, ``elastic``); a key that is not a field here is rejected by :func:`flexbone.config.load_recipe`
with the closest valid key suggested. Values are checked against the type hints (``Literal`` choices,
real booleans, ints, floats, fixed-length tuples), so the engine can trust every field.

Conventions:
- Batch sizes are **global** (summed over all processes). ``build_loaders`` divides them by the world size.
- ``optim.lr`` is the learning rate for a global batch of ``optim.lr_base_batch_size`` images; the engine
  calls :func:`flexbone.config.scaled_lr` to get the lr for the batch it actually runs.
- Epoch counts are in epochs (fractions allowed where the type is float), resolutions in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# ImageNet channel statistics on a 0..1 scale (the torchvision/timm defaults)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Which backbone to build (``flexbone.create_model`` arguments)."""

    name: str = "resnet50"  # a registered model name (`flexbone list`)
    num_classes: int | None = None  # None: the number of classes the dataset has
    drop_rate: float = 0.0  # dropout probability before the classifier
    drop_path_rate: float = 0.0  # stochastic depth: drop probability of the last block (linear ramp)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra family keyword arguments, e.g. {in_chans: 1}
    pretrained: str | None = None  # path of a checkpoint to start from (never downloaded); None = random init
    channels_last: bool = False  # NHWC memory format for model and inputs (faster with AMP on GPUs)


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    dataset: Literal["digits", "imagefolder", "cifar10", "cifar100", "synthetic",
                     "seg_digits", "seg_folder", "cityscapes"] = "imagefolder"  # seg_*/cityscapes: task=segmentation
    path: str | None = None  # imagefolder: root with train/val folders; cifar*: folder with the python batch files
    train_split: str = "train"  # imagefolder sub-folder for training
    val_split: str = "val"  # imagefolder sub-folder for evaluation
    img_size: int = 224  # training resolution in pixels (square crop side)
    test_img_size: int | None = None  # evaluation resolution in pixels; None = img_size
    crop_pct: float = 0.875  # eval: resize the short side to test_img_size / crop_pct, then centre-crop
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"  # resize filter (train and eval)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation mean (0..1 pixel scale)
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel normalisation std (0..1 pixel scale)
    batch_size: int = 256  # GLOBAL training batch (all processes together), images per optimiser step
    eval_batch_size: int | None = None  # GLOBAL evaluation batch; None = batch_size
    workers: int = 4  # DataLoader worker processes per training process (0 = load in the main process)
    pin_memory: bool = True  # page-locked host memory (only used when training on CUDA)
    strict: bool = False  # a corrupt/unreadable image is an error naming the file (else skipped and counted)
    synthetic_train_size: int = 1024  # synthetic: number of training images
    synthetic_eval_size: int = 256  # synthetic: number of evaluation images
    synthetic_num_classes: int = 1000  # synthetic: number of classes
    digits_test_fraction: float = 0.2  # digits: fraction of the 1,797 scans held out (stratified by class)
    digits_split_seed: int = 0  # digits: seed of the fixed train/test split (independent of train.seed)
    # share of the training images held out (stratified by class, fixed by holdout_seed) to choose checkpoint-best
    # on; the test/val split is then evaluated once, at the end, on the final model. 0: choose on the test split
    holdout_fraction: float = 0.0
    holdout_seed: int = 0  # seed of the hold-out split (independent of train.seed)


@dataclass
class AugConfig:
    """Training augmentation (evaluation is always resize + centre crop + normalise)."""

    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range, fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect-ratio range (w/h)
    no_crop: bool = False  # skip RandomResizedCrop (train on the full image resized to img_size; tiny images)
    hflip: float = 0.5  # horizontal-flip probability (0 for digits: a flipped 2 is not a 2)
    rand_augment: str = ""  # timm-style spec, e.g. 'rand-m7-mstd0.5-inc1' or 'rand-m9-n3-mstd0.5'; '' = off
    re_prob: float = 0.0  # RandomErasing probability (per image; random-normal fill, timm 'pixel' mode)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) for Mixup; 0 = off
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) for CutMix; 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all (when an alpha > 0)
    mixup_switch_prob: float = 0.5  # when both are on: probability of CutMix instead of Mixup for a batch
    repeated_aug: int = 0  # repeated augmentation: each image appears this many times per epoch (0/1 = off)


@dataclass
class OptimConfig:
    """Optimiser. ``lr`` is for a global batch of ``lr_base_batch_size`` images."""

    name: Literal["sgd", "adamw", "lamb"] = "sgd"
    lr: float = 0.1  # peak learning rate for a global batch of lr_base_batch_size images
    lr_base_batch_size: int = 256  # the global batch size `lr` is stated for
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # how lr follows the actual global batch
    weight_decay: float = 1e-4  # decoupled for adamw/lamb, L2 added to the gradient for sgd
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adamw/lamb moment decay rates
    eps: float = 1e-8  # adamw/lamb denominator epsilon (lamb: timm default 1e-6)
    clip_grad: float | None = None  # clip the global gradient L2 norm to this value; None = off
    lamb_max_grad_norm: float | None = 1.0  # lamb only: LAMB's own global grad-norm clipping (timm default 1.0); None = off
    no_weight_decay_on_norm_and_bias: bool = True  # 1-D params (norm scales/shifts, biases) get weight_decay 0
    fused: bool | None = None  # sgd/adamw: torch's fused (one kernel per tensor) step; None = wherever torch has one


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, evaluated per optimiser step (fractional epochs)."""

    name: Literal["cosine", "step", "poly"] = "cosine"
    epochs: int = 100  # total training epochs, warm-up included
    warmup_epochs: float = 0.0  # linear warm-up from warmup_lr to the peak lr over this many epochs
    warmup_lr: float = 0.0  # absolute learning rate at step 0 (not scaled with the batch size)
    min_lr: float = 0.0  # cosine / poly floor: absolute learning rate reached at the last step
    decay_epochs: float = 30.0  # step: multiply the lr by decay_rate every decay_epochs epochs
    decay_rate: float = 0.1  # step: the decay factor
    power: float = 0.9  # poly: lr = peak * (1 - progress) ** power after the warm-up (DeepLab / FFNet: 0.9)


@dataclass
class LossConfig:
    """Training loss (evaluation always reports top-1/top-5 and cross-entropy)."""

    name: Literal["ce", "bce", "soft_ce"] = "ce"  # soft_ce: cross-entropy against soft (mixed) targets
    label_smoothing: float = 0.0  # epsilon: the target puts (1 - eps) + eps/K on the class, eps/K elsewhere
    bce_target_threshold: float | None = None  # bce: soft targets >= this become 1, else 0; None = keep soft


@dataclass
class TrainConfig:
    """The loop: seeds, precision, EMA, logging, checkpoints."""

    seed: int = 0  # seeds torch/numpy/python and the samplers (each rank adds its rank)
    device: str = "auto"  # 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast dtype; fp16 uses a grad scaler (CUDA only)
    compile: bool = False  # torch.compile the model
    memory_check: bool = True  # CPU: refuse a run whose estimated memory clearly exceeds what is available
    ema_decay: float = 0.0  # weight EMA decay per optimiser step; 0 = no EMA
    ema_warmup: bool = False  # ramp the EMA decay as (1 + step) / (10 + step) early in training (TF style)
    log_interval: int = 50  # optimiser steps between log lines
    output_dir: str = "runs"  # parent folder of run directories
    run_name: str | None = None  # run directory name; None = '<model>-<recipe>-<timestamp>'
    save_every: int = 1  # write the 'last' checkpoint every this many epochs
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)
    max_steps_per_epoch: int | None = None  # cut every epoch after this many steps (smoke tests); None = full
    tensorboard: bool = False  # also write TensorBoard event files (if tensorboard is installed)


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher (used by the elastic recipes; off when teacher is None)."""

    teacher: str | None = None  # registered model name of the teacher; None = no distillation
    teacher_checkpoint: str | None = None  # weights of the teacher (path)
    alpha: float = 0.5  # loss = (1 - alpha) * task loss + alpha * distillation loss
    temperature: float = 1.0  # softmax temperature of teacher and student logits


@dataclass
class ElasticPhase:
    """One row of a progressive-shrinking table (``elastic.phases``): what may shrink in this phase, and how long.

    ``kernel`` / ``expand`` / ``depth`` / ``width`` list the choices sub-networks may take (intersected with each
    slot's choices); a dimension left empty stays at the supernet's largest choice (not elastic yet).
    """

    name: str = ""  # the phase's name (its run folder is phase<i>-<name>); unique in the table
    epochs: int = 1  # this phase's schedule.epochs
    lr: float = 0.1  # this phase's optim.lr (for optim.lr_base_batch_size images)
    warmup_epochs: float | None = None  # this phase's schedule.warmup_epochs; None = the recipe's (capped at epochs)
    kernel: tuple[int, ...] = ()  # depthwise kernel sizes sampled (e.g. [3, 5, 7]); [] = the largest only
    expand: tuple[float, ...] = ()  # expand ratios sampled; [] = the largest only
    depth: tuple[int, ...] = ()  # depth choices sampled; [] = the largest only
    width: tuple[float, ...] = ()  # width multipliers sampled (OFA-ResNet50); [] = the largest only
    subnets_per_step: int = 1  # random sub-networks per optimiser step (gradients summed)
    kd: bool = True  # distil from the full network (elastic.teacher_checkpoint / the first phase's weights)
    reorganize: int | None = None  # before the phase: sort middle channels by importance (expand stage 0, 1 ...)


@dataclass
class ElasticConfig:
    """Training a once-for-all supernet (``elastic/training.py``); off when ``strategy`` is 'none'.

    progressive: OFA's progressive shrinking, one run per row of ``phases``, each starting from the previous
    phase's weights, with distillation from the full network. sandwich: every step trains the max, the min and
    ``num_random`` random sub-networks (summed gradients), the smaller ones distilling from the max net's
    detached logits. deps: DεpS, the max net alone until ``deps_start`` of the schedule, then the sandwich with
    the sub-networks' loss weight rising linearly from 0 to 1 over ``deps_ramp_epochs``.
    """

    strategy: Literal["none", "progressive", "sandwich", "deps"] = "none"
    phases: tuple[dict[str, Any], ...] = ()  # progressive: the phase table, rows of ElasticPhase fields
    phase: str | None = None  # progressive: train this phase only; None = every phase in order
    teacher_checkpoint: str | None = None  # progressive: full-net weights to distil from; None = the first phase's
    num_random: int = 2  # sandwich / deps: random sub-networks per step besides the max and the min
    deps_start: float = 0.5  # deps: fraction of schedule.epochs that trains the full network alone
    deps_ramp_epochs: float = 5.0  # deps: epochs over which the sub-networks' weight beta rises from 0 to 1
    kd_weight: float = 1.0  # distillation weight (progressive: added to the task loss; sandwich/deps: sub-networks)
    kd_temperature: float = 1.0  # softmax temperature of the distillation loss
    bn_batches: int = 10  # training batches for the BN recalibration before each evaluated sub-network
    resolutions: tuple[int, ...] = ()  # train resolutions, one drawn per step (batch resized); () = data.img_size


@dataclass
class SegConfig:
    """Segmentation (``task: segmentation``; see flexbone.seg): augmentation, ignore label, the digits demo set."""

    scale: tuple[float, float] = (0.5, 2.0)  # random rescale of image+mask before the data.img_size crop
    color_jitter: float = 0.0  # brightness/contrast/saturation jitter strength (image only); 0 = off
    ignore_index: int = 255  # mask value excluded from the loss and the metrics
    digits_train_size: int = 1000  # seg_digits: training canvases (composed at run time, fixed seed)
    digits_val_size: int = 200  # seg_digits: validation canvases (from held-out digit scans)
    digits_canvas: int = 64  # seg_digits: canvas side in pixels
    digits_seed: int = 0  # seg_digits: seed of the composition (independent of train.seed)


@dataclass
class Recipe:
    """A complete, validated training recipe (see ``recipes/*.yaml``)."""

    description: str = ""  # one line: what the recipe reproduces and where its numbers come from
    task: Literal["classification", "segmentation"] = "classification"  # segmentation: the engine with the
    # segmentation strategy (flexbone.seg.training): image + mask data, ignore-index loss, mIoU
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    seg: SegConfig = field(default_factory=SegConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "aug": AugConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "loss": LossConfig, "train": TrainConfig, "distill": DistillConfig,
    "elastic": ElasticConfig, "seg": SegConfig,
}

"""``build_loaders(recipe, world_size, rank)``: the train and eval loaders of a recipe, one call.

Batches are ``(images (B, 3, H, W) float32, labels (B,) int64)``. Batch sizes in the recipe are global;
each process gets ``batch_size / world_size``. The training order is deterministic per ``(seed, epoch)``
(and so are the DataLoader workers' augmentation seeds), so a run resumed at an epoch boundary sees the
same data as an uninterrupted one.

Unreadable images: the dataset hands back a :class:`~flexbone.data.datasets.SkippedSample`, the collate
function drops it, and :class:`ImageLoader` counts it (``loader.skipped`` this pass, ``loader.total_skipped``
overall, ``loader.skipped_files`` the first 100 paths) and warns once per file; with ``data.strict`` it raises
:class:`~flexbone.data.datasets.CorruptImageError` naming the file instead. A training batch may therefore be
smaller than asked; a batch with no readable image at all is left out.

In-memory sets (digits, CIFAR) skip the DataLoader: batches are gathered by index from one tensor and either
were transformed once (fixed transforms, cached) or are augmented whole (``batch_transforms.py``), in the
calling process. Their random augmentation then draws from torch's global generator, like ``workers: 0``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Subset, default_collate

from ..config.schema import Recipe
from ..errors import ConfigError
from .datasets import (
    CorruptImageError, ImageFolderDataset, SkippedSample, SyntheticDataset, TensorImageDataset, cifar_dataset,
    digits_dataset, stratified_split,
)
from .batch_transforms import BatchTrainTransform, batch_transform_applies
from .samplers import RepeatedAugSampler, ShardedEvalSampler
from .transforms import build_eval_transform, build_train_transform, train_is_deterministic

log = logging.getLogger(__name__)

PRECOMPUTE_LIMIT_BYTES = 64 * 2**20  # in-memory sets with a fixed transform are transformed once if this small
MAX_RECORDED_SKIPS = 100


def collate_skipping(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, list[SkippedSample]]:
    """Default collate of the readable samples; the skipped ones are passed on for counting."""
    good = [s for s in batch if not isinstance(s, SkippedSample)]
    skipped = [s for s in batch if isinstance(s, SkippedSample)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped


class ImageLoader:
    """A DataLoader that yields ``(images, labels)``, counts skipped images and seeds each epoch.

    With ``batch_transform`` (in-memory sets, see ``batch_transforms.py``) batches are gathered from
    ``dataset.images`` and augmented whole in the calling process, without a DataLoader; else a
    ``torch.utils.data.DataLoader`` transforms image by image in ``workers`` processes.

    Attributes:
        loader: the wrapped ``torch.utils.data.DataLoader`` (None in batch-transform mode).
        sampler: the sampler (has ``set_epoch``).
        batch_size: images per batch on this process.
        skipped, total_skipped, skipped_files: unreadable images this pass / overall / their first paths.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler: Any, workers: int, drop_last: bool,
                 pin_memory: bool, strict: bool, seed: int, batch_transform: Callable | None = None):
        self.dataset, self.sampler, self.batch_size, self.strict, self.seed = dataset, sampler, batch_size, strict, seed
        self.batch_transform = batch_transform
        self.generator = torch.Generator()
        self.loader = None
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        if batch_transform is None:
            self.loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                     collate_fn=collate_skipping, pin_memory=pin_memory, drop_last=drop_last,
                                     generator=self.generator, persistent_workers=False)
        self.epoch = 0
        self.skipped = 0
        self.total_skipped = 0
        self.skipped_files: list[str] = []
        self._warned: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order and worker seeds (call on every process before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1  # a loop that never calls set_epoch still gets a new order each pass
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        # workers draw their base seed from this generator: fixed per (seed, epoch), independent of history
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)
        self.skipped = 0
        if self.batch_transform is not None:  # in memory: gather and augment whole batches
            for indices in self.batch_sampler:
                index = torch.as_tensor(indices)
                yield self.batch_transform(self.dataset.images[index]), self.dataset.targets[index]
            return
        for images, labels, skipped in self.loader:
            for s in skipped:
                self._record(s)
            if labels.numel():
                yield images, labels

    def _record(self, sample: SkippedSample) -> None:
        if self.strict:
            raise CorruptImageError(f"cannot read image {sample.path} ({sample.reason}); remove or replace the "
                                    "file, or run without --data.strict to skip unreadable images")
        self.skipped += 1
        self.total_skipped += 1
        if sample.path not in self._warned:  # once per file, however many epochs
            self._warned.add(sample.path)
            if len(self.skipped_files) < MAX_RECORDED_SKIPS:
                self.skipped_files.append(sample.path)
            log.warning("skipped unreadable image %s (%s)", sample.path, sample.reason)


class _CachedDataset(Dataset):
    """A dataset whose fixed transform has been applied once: samples are rows of two tensors."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: list[str]):
        self.images, self.targets, self.classes = images, targets, classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


def _maybe_cache(dataset: Dataset, deterministic: bool) -> Dataset:
    """Apply a deterministic transform of a small in-memory set once, instead of every epoch."""
    if not deterministic or not isinstance(dataset, TensorImageDataset) or dataset.transform is None:
        return dataset
    first = dataset[0][0]
    if first.numel() * 4 * len(dataset) > PRECOMPUTE_LIMIT_BYTES:
        return dataset
    # the v2 transforms take a (N, C, H, W) batch in one call: resize/crop/normalise every image at once
    images = torch.as_tensor(dataset.transform(dataset.images))
    if images.shape[0] != len(dataset) or images.shape[1:] != first.shape:
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return _CachedDataset(images, dataset.targets.clone(), dataset.classes)


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images


def _whole_batch_transform(dataset: Dataset, recipe: Recipe | None) -> Callable | None:
    """For in-memory sets: the function that turns a gathered batch into model input (None: per image)."""
    if isinstance(dataset, _CachedDataset):  # already transformed
        return _identity
    if (recipe is not None and isinstance(dataset, TensorImageDataset)
            and batch_transform_applies(recipe.data, recipe.aug, tuple(dataset.images.shape[-2:]))):
        dataset.transform = None  # the batch transform replaces the per-image one
        return BatchTrainTransform(recipe.data, recipe.aug)
    return None


def _subset(dataset: Dataset, idx: np.ndarray) -> Dataset:
    """The samples ``idx`` of ``dataset`` (an in-memory set stays one, so its whole-batch path still applies)."""
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset(dataset.images[idx], dataset.targets[idx], dataset.classes, dataset.transform)
    sub = Subset(dataset, idx.tolist())
    sub.classes = dataset.classes
    sub.targets = [dataset.targets[i] for i in idx]
    return sub


def hold_out(train: Dataset, train_eval_view: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``fraction`` of the training samples off (stratified by class, fixed by ``seed``): ``(train without
    them, them)``, the held-out part taken from ``train_eval_view`` (the same samples with the eval transform)."""
    labels = np.asarray([int(t) for t in train.targets])
    keep, held = stratified_split(labels, fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise ConfigError(f"data.holdout_fraction {fraction} of {len(labels)} training images leaves "
                          f"{len(keep)} to train on and {len(held)} to choose on")
    return _subset(train, keep), _subset(train_eval_view, held)


def build_datasets(recipe: Recipe, *, with_holdout: bool = False):
    """The recipe's train and eval datasets with their transforms, and the class names (index order).

    Returns ``(train, eval, classes)``; with ``with_holdout``, ``(train, holdout, eval, classes)`` where
    ``holdout`` is the part of the training split that ``data.holdout_fraction`` keeps apart to choose
    checkpoints on (None when the fraction is 0).
    """
    d = recipe.data
    train_tf, eval_tf = build_train_transform(d, recipe.aug), build_eval_transform(d)
    holdout = None
    if d.dataset == "digits":
        train = digits_dataset(True, d.digits_test_fraction, d.digits_split_seed, train_tf)
        val = digits_dataset(False, d.digits_test_fraction, d.digits_split_seed, eval_tf)
        train_eval_view = lambda: digits_dataset(True, d.digits_test_fraction, d.digits_split_seed, eval_tf)  # noqa: E731
    elif d.dataset == "synthetic":
        # raw images at the train resolution; different seeds keep the two sets apart
        train = SyntheticDataset(d.synthetic_train_size, d.synthetic_num_classes, d.img_size, 0, train_tf)
        val = SyntheticDataset(d.synthetic_eval_size, d.synthetic_num_classes, d.test_img_size or d.img_size, 1, eval_tf)
        train_eval_view = lambda: SyntheticDataset(d.synthetic_train_size, d.synthetic_num_classes,  # noqa: E731
                                                   d.test_img_size or d.img_size, 0, eval_tf)
    else:
        if not d.path:
            raise ConfigError(f"data.dataset {d.dataset} needs data.path (e.g. --data.path /path/to/data)")
        root = Path(d.path).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.path {root} is not a folder")
        if d.dataset in ("cifar10", "cifar100"):
            train = cifar_dataset(root, d.dataset, True, train_tf)
            val = cifar_dataset(root, d.dataset, False, eval_tf)
            train_eval_view = lambda: cifar_dataset(root, d.dataset, True, eval_tf)  # noqa: E731
        else:
            splits = sorted(p.name for p in root.iterdir() if p.is_dir())
            for split in (d.train_split, d.val_split):
                if split not in splits:
                    raise ConfigError(f"{root} has no {split!r} folder (found: {', '.join(splits) or 'none'}); "
                                      f"an image folder needs {d.train_split}/<class>/<images> and "
                                      f"{d.val_split}/<class>/<images> (see data.train_split, data.val_split)")
            train = ImageFolderDataset(root / d.train_split, train_tf)
            val = ImageFolderDataset(root / d.val_split, eval_tf, class_names=train.classes)
            train_eval_view = lambda: ImageFolderDataset(root / d.train_split, eval_tf)  # noqa: E731
    classes = list(train.classes)
    if with_holdout and d.holdout_fraction > 0:
        train, holdout = hold_out(train, train_eval_view(), d.holdout_fraction, d.holdout_seed)
        holdout = _maybe_cache(holdout, True)
    train = _maybe_cache(train, train_is_deterministic(recipe.aug))
    val = _maybe_cache(val, True)
    return (train, holdout, val, classes) if with_holdout else (train, val, classes)


def build_loaders(recipe: Recipe, world_size: int = 1, rank: int = 0, *, pin_memory: bool | None = None,
                  with_holdout: bool = False):
    """Train and eval loaders for this process, the number of classes and the class names.

    Args:
        recipe: a validated recipe (``data`` and ``aug`` sections are used; ``train.seed`` seeds the order).
        world_size, rank: the process group; the global batch sizes are divided by ``world_size``.
        pin_memory: page-locked batches; None = ``data.pin_memory`` when CUDA is available.

    Returns:
        ``(train_loader, eval_loader, num_classes, class_names)``. ``num_classes`` is ``model.num_classes``
        when the recipe sets it (it must be >= the classes in the data), else the number of classes found.
        The train loader shuffles (repeated augmentation when ``aug.repeated_aug > 1``) and drops the last
        partial batch; the eval loader keeps order and every image, each process taking every
        ``world_size``-th one. With ``with_holdout``: ``(train_loader, holdout_loader, eval_loader, num_classes,
        class_names)``, ``holdout_loader`` (an eval loader of ``data.holdout_fraction`` of the training images,
        see :func:`build_datasets`) None when the fraction is 0.

    Raises:
        ConfigError: missing data, a batch size not divisible by the world size, too few classes.
    """
    d = recipe.data
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid rank {rank} for world size {world_size}")
    if getattr(recipe, "task", "classification") == "segmentation":  # image + mask pairs (flexbone.seg.data)
        from ..seg.data import build_loaders as build_segmentation_loaders

        return build_segmentation_loaders(recipe, world_size, rank, pin_memory=pin_memory, with_holdout=with_holdout)
    if d.batch_size % world_size:
        raise ConfigError(f"data.batch_size {d.batch_size} (global) is not divisible by the {world_size} processes")
    if with_holdout:
        train_set, holdout_set, eval_set, classes = build_datasets(recipe, with_holdout=True)
    else:
        (train_set, eval_set, classes), holdout_set = build_datasets(recipe), None
    num_classes = recipe.model.num_classes or len(classes)
    if num_classes < len(classes):
        raise ConfigError(f"model.num_classes is {num_classes} but the data has {len(classes)} classes")
    if pin_memory is None:
        pin_memory = d.pin_memory and torch.cuda.is_available()
    seed = recipe.train.seed

    batch = d.batch_size // world_size
    batch_tf = _whole_batch_transform(train_set, recipe)
    if recipe.aug.repeated_aug > 1:
        train_sampler = RepeatedAugSampler(train_set, world_size, rank, recipe.aug.repeated_aug, shuffle=True, seed=seed)
    else:
        train_sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed, drop_last=False)
    drop_last = len(train_sampler) >= batch  # keep a tiny dataset's only (partial) batch
    train_loader = ImageLoader(train_set, batch, train_sampler, d.workers, drop_last, pin_memory, d.strict, seed,
                               batch_transform=batch_tf)

    eval_batch = math.ceil((d.eval_batch_size or d.batch_size) / world_size)
    eval_sampler = ShardedEvalSampler(eval_set, world_size, rank)
    eval_loader = ImageLoader(eval_set, eval_batch, eval_sampler, d.workers, False, pin_memory, d.strict, seed,
                              batch_transform=_whole_batch_transform(eval_set, None))
    if not with_holdout:
        return train_loader, eval_loader, num_classes, classes
    holdout_loader = None
    if holdout_set is not None:
        holdout_loader = ImageLoader(holdout_set, eval_batch, ShardedEvalSampler(holdout_set, world_size, rank),
                                     d.workers, False, pin_memory, d.strict, seed,
                                     batch_transform=_whole_batch_transform(holdout_set, None))
    return train_loader, holdout_loader, eval_loader, num_classes, classes


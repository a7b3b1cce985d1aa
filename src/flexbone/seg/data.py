"""Segmentation data: image + mask pairs, joint transforms, and three sources.

* :func:`folder_pairs`: ``root/images/<split>/<name>.<ext>`` with ``root/masks/<split>/<name>.png`` (index PNGs:
  each pixel's value is its class, 255 = ignore).
* :func:`cityscapes_pairs`: ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``root/gtFine/<split>/<city>/*_gtFine_labelIds.png``, label ids mapped to the 19 train ids (others 255).
* :class:`DigitsSegmentation`: canvases composed at run time from scikit-learn's 8x8 digit scans, each pixel
  labelled with its digit class (1..10 = digits 0..9) or background (0); fixed seed, nothing downloaded.

Transforms are torchvision's ``transforms.v2`` on ``tv_tensors.Image`` + ``tv_tensors.Mask``: geometry (random
scale, crop, flip) moves image and mask together (the mask with nearest interpolation, padded with the ignore
index), photometric changes touch the image only.

Bad pairs: an image without a mask is skipped and counted (an error with ``strict``); a mask of another size than
its image, or with labels that are neither a class nor the ignore index, is an error naming the file with
``strict``, and otherwise ignored (that mask's pixels become ``ignore_index``) with one warning per file.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError, FlexboneError
from ..data.datasets import IMG_EXTENSIONS
from ..data.decode import ImageDecodeError, decode_image
from ..models._base import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255


class SegDataError(FlexboneError):
    """A segmentation pair that cannot be used (raised for bad pairs only with ``strict``)."""


# ------------------------------------------------------------------------------------------ sources
def folder_pairs(root: str | os.PathLike, split: str, strict: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """(image, mask) paths of ``root/images/<split>`` and ``root/masks/<split>``, matched by file stem.

    Returns the pairs and the images that have no mask (an error with ``strict``).
    """
    root = Path(root)
    img_dir, mask_dir = root / "images" / split, root / "masks" / split
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise ConfigError(f"{d} is not a folder: expected {root}/images/{split}/ and {root}/masks/{split}/")
    masks = {p.stem: p for p in sorted(mask_dir.rglob("*.png"))}
    pairs, unmatched = [], []
    for img in sorted(p for p in img_dir.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS):
        rel_stem = str(img.relative_to(img_dir).with_suffix(""))
        mask = mask_dir / f"{rel_stem}.png"
        if mask.is_file() or img.stem in masks:
            pairs.append((str(img), str(mask if mask.is_file() else masks[img.stem])))
        else:
            unmatched.append(str(img))
    return _check_pairs(pairs, unmatched, f"{img_dir}", strict, "masks/<split>/<same name>.png")


# Cityscapes label id -> train id (cityscapesScripts' labels.py: the 19 evaluated classes; all else ignored)
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")


def cityscapes_label_map() -> np.ndarray:
    """A 256-entry lookup table: label id -> train id (255 for the classes Cityscapes does not evaluate)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


def cityscapes_pairs(root: str | os.PathLike, split: str, strict: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """(image, labelIds mask) paths of a Cityscapes split (``train`` / ``val`` / ``test``)."""
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise ConfigError(f"{d} is not a folder: expected the Cityscapes layout {root}/leftImg8bit/{split}/<city>/ "
                              f"and {root}/gtFine/{split}/<city>/")
    pairs, unmatched = [], []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        mask = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
        (pairs.append((str(img), str(mask))) if mask.is_file() else unmatched.append(str(img)))
    return _check_pairs(pairs, unmatched, str(img_dir), strict, "gtFine/<split>/<city>/<name>_gtFine_labelIds.png")


def _check_pairs(pairs, unmatched, where, strict, expected):
    if unmatched and strict:
        raise SegDataError(f"{unmatched[0]} has no mask (expected {expected}); {len(unmatched)} image(s) without one")
    if not pairs:
        raise ConfigError(f"no image/mask pairs in {where} (expected {expected})")
    if unmatched:
        warnings.warn(f"{len(unmatched)} image(s) in {where} have no mask and are skipped (first: {unmatched[0]})",
                      stacklevel=3)
    return pairs, unmatched


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """An index mask as a (H, W) integer array: palette PNGs give their indices, grey PNGs their values."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise SegDataError(f"{path}: a mask must be a single-channel index image (palette or grey), "
                                   f"not mode {im.mode}")
            return np.array(im).astype(np.int64)
    except (OSError, ValueError) as e:
        raise SegDataError(f"{path}: cannot read the mask ({e})") from None


# ------------------------------------------------------------------------------------------ datasets
class SegmentationPairs(Dataset):
    """Image + mask files -> ``(image (3, H, W) float, mask (H, W) int64)`` through a joint transform.

    Args:
        pairs: (image path, mask path) list. num_classes: labels must be < this (or ``ignore_index``).
        transform: a joint ``transforms.v2`` transform of (Image, Mask) (see :func:`train_transform`).
        label_map: a 256-entry lookup applied to the raw mask (Cityscapes label ids -> train ids).
        strict: raise :class:`SegDataError` on a bad pair instead of ignoring its mask.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], num_classes: int, transform: Callable | None = None,
                 label_map: np.ndarray | None = None, ignore_index: int = IGNORE_INDEX, strict: bool = False,
                 classes: Sequence[str] | None = None, skipped: Sequence[str] = ()):
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.transform = transform or eval_transform()
        self.label_map = label_map
        self.ignore_index = ignore_index
        self.strict = strict
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        self.skipped = list(skipped)  # images without a mask
        self.ignored: set[str] = set()  # masks ignored for a problem (this process's view)

    def __len__(self) -> int:
        return len(self.pairs)

    def _problem(self, mask_path: str, message: str) -> None:
        if self.strict:
            raise SegDataError(message)
        if mask_path not in self.ignored:
            self.ignored.add(mask_path)
            warnings.warn(f"{message}; its pixels are ignored (data.strict=true makes this an error)", stacklevel=3)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The decoded image and its checked mask (train ids), before any transform."""
        img_path, mask_path = self.pairs[index]
        try:
            image = decode_image(img_path)
        except ImageDecodeError as e:
            raise SegDataError(str(e)) from None
        mask = read_mask(mask_path)
        if self.label_map is not None:
            mask = self.label_map[np.clip(mask, 0, len(self.label_map) - 1)].astype(np.int64)
        if mask.shape != (image.height, image.width):
            self._problem(mask_path, f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                     f"{image.width}x{image.height}")
            mask = np.full((image.height, image.width), self.ignore_index, np.int64)
        bad = (mask >= self.num_classes) & (mask != self.ignore_index) | (mask < 0)
        if bad.any():
            values = sorted(set(np.unique(mask[bad]).tolist()))[:5]
            self._problem(mask_path, f"{mask_path}: labels {values} are outside 0..{self.num_classes - 1} and are "
                                     f"not the ignore index {self.ignore_index}")
            mask = np.where(bad, self.ignore_index, mask)
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        return apply_joint(self.transform, v2.functional.pil_to_tensor(image), torch.from_numpy(mask))


def apply_joint(transform: Callable, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a joint transform on a (3, H, W) uint8 image and an (H, W) mask; plain tensors back."""
    img, m = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()


# ------------------------------------------------------------------------------------------ transforms
def train_transform(crop_size: int | tuple[int, int], scale: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5,
                    color_jitter: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, ignore_index: int = IGNORE_INDEX) -> v2.Compose:
    """Random scale (of the image size), random crop (padded with the ignore index), flip, colour jitter."""
    crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    steps: list = [_RandomScale(scale)]
    steps.append(v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}))
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:  # photometric: transforms.v2 passes masks through untouched
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += _to_float(mean, std)
    return v2.Compose(steps)


def eval_transform(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Full image, normalised; the mask unchanged."""
    return v2.Compose(_to_float(mean, std))


def _to_float(mean, std) -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
            v2.Normalize(list(mean), list(std))]


class _RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale`` (the mask with nearest)."""

    def __init__(self, scale: tuple[float, float]):
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.functional.get_size(next(x for x in flat_inputs if isinstance(x, tv_tensors.Image)))
        f = float(torch.empty(1).uniform_(*self.scale))
        return {"size": [max(1, round(h * f)), max(1, round(w * f))]}

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Mask):
            return v2.functional.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        if isinstance(inpt, tv_tensors.Image):
            return v2.functional.resize(inpt, params["size"], antialias=True)
        return inpt


# ------------------------------------------------------------------------------------------ digits
DIGITS_CLASSES = ("background",) + tuple(str(d) for d in range(10))


class DigitsSegmentation(Dataset):
    """Canvases of several real digit scans (scikit-learn's 1,797 8x8 digits), labelled per pixel.

    Each canvas (``size`` px, square) holds 2-4 digits scaled to 14-26 px at non-overlapping random places, in a
    random colour on a random dark background with noise; a pixel brighter than a quarter of the digit's ink
    is labelled ``1 + digit``, all others 0 (background). Train and val use disjoint scans (a fixed 80/20 split
    of the 1,797), and each split's canvases come from its own fixed seed: the same set on every run.
    """

    def __init__(self, split: str = "train", num_images: int = 1000, size: int = 64, seed: int = 0,
                 transform: Callable | None = None):
        from sklearn.datasets import load_digits

        if split not in ("train", "val"):
            raise ConfigError(f"digits segmentation split must be 'train' or 'val', not {split!r}")
        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.images))  # the scan split never changes
        cut = int(0.8 * len(order))
        scans = order[:cut] if split == "train" else order[cut:]
        rng = np.random.default_rng(seed + (0 if split == "train" else 1_000_003))
        images = np.empty((num_images, 3, size, size), np.uint8)
        masks = np.zeros((num_images, size, size), np.int64)
        for i in range(num_images):
            images[i], masks[i] = self._compose(rng, digits.images[scans], digits.target[scans], size)
        self.images, self.masks = torch.from_numpy(images), torch.from_numpy(masks)
        self.transform = transform or eval_transform()
        self.num_classes = len(DIGITS_CLASSES)
        self.classes = list(DIGITS_CLASSES)
        self.skipped: list[str] = []

    @staticmethod
    def _compose(rng, scans, labels, size):
        canvas = np.zeros((size, size), np.float32)  # ink 0..1
        mask = np.zeros((size, size), np.int64)
        boxes: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(2, 5))):
            for _attempt in range(20):
                s = int(rng.integers(14, 27))
                y, x = (int(v) for v in rng.integers(0, size - s + 1, 2))
                if all(y + s <= by or by + bs <= y or x + s <= bx or bx + bs <= x for by, bx, bs in boxes):
                    break
            else:
                continue
            k = int(rng.integers(len(scans)))
            ink = np.asarray(Image.fromarray((scans[k] * 255 / 16).astype(np.uint8)).resize((s, s), Image.BILINEAR),
                             np.float32) / 255
            canvas[y:y + s, x:x + s] = np.maximum(canvas[y:y + s, x:x + s], ink)
            mask[y:y + s, x:x + s][ink > 0.25 * ink.max()] = 1 + int(labels[k])
            boxes.append((y, x, s))
        bg = rng.uniform(0, 0.35, 3).astype(np.float32)
        fg = rng.uniform(0.6, 1.0, 3).astype(np.float32)
        img = bg[:, None, None] * (1 - canvas) + fg[:, None, None] * canvas
        img += rng.normal(0, 0.05, img.shape).astype(np.float32)
        return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return apply_joint(self.transform, self.images[index], self.masks[index])


# ------------------------------------------------------------------------------------------ a recipe's loaders
def build_datasets(recipe: Any) -> tuple[Dataset, Dataset, list[str]]:
    """Train and validation sets a ``task: segmentation`` recipe names, with their transforms, and the classes."""
    d, s = recipe.data, recipe.seg
    train_tf = train_transform(d.img_size, scale=tuple(s.scale), hflip=recipe.aug.hflip, color_jitter=s.color_jitter,
                               mean=d.mean, std=d.std, ignore_index=s.ignore_index)
    val_tf = eval_transform(d.mean, d.std)
    if d.dataset == "seg_digits":
        train = DigitsSegmentation("train", s.digits_train_size, s.digits_canvas, s.digits_seed, train_tf)
        val = DigitsSegmentation("val", s.digits_val_size, s.digits_canvas, s.digits_seed, val_tf)
        return train, val, train.classes
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
    return sets[0], sets[1], sets[0].classes


def build_loaders(recipe: Any, world_size: int = 1, rank: int = 0, *, pin_memory: bool | None = None,
                  with_holdout: bool = False):
    """:func:`flexbone.data.loader.build_loaders` for a segmentation recipe (it hands over here): the same
    returns, image + mask batches. The train loader shuffles from its own generator (the engine re-seeds it per
    epoch) and drops the last partial batch; the validation shards are not padded, so no pixel counts twice in
    the confusion matrix summed over processes. There is no hold-out split: checkpoint-best is chosen on val."""
    from torch.utils.data import DataLoader, DistributedSampler

    from ..data.samplers import ShardedEvalSampler

    d = recipe.data
    if d.batch_size % world_size:
        raise ConfigError(f"data.batch_size {d.batch_size} (global) is not divisible by the {world_size} processes")
    if d.holdout_fraction:
        raise ConfigError("data.holdout_fraction is for classification; a segmentation run chooses checkpoint-best "
                          "on its val split")
    train_set, val_set, classes = build_datasets(recipe)
    num_classes = recipe.model.num_classes or len(classes)
    if num_classes != len(classes):
        raise ConfigError(f"model.num_classes={num_classes} but {d.dataset} has {len(classes)} classes")
    if pin_memory is None:
        pin_memory = d.pin_memory and torch.cuda.is_available()
    seed = recipe.train.seed

    def loader(ds: Dataset, batch: int, train: bool) -> DataLoader:
        sampler = None
        if world_size > 1:
            sampler = DistributedSampler(ds, world_size, rank, shuffle=True, seed=seed) if train \
                else ShardedEvalSampler(ds, world_size, rank)
        return DataLoader(ds, batch_size=batch, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=d.workers, drop_last=train and len(ds) >= batch * world_size,
                          pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
                          persistent_workers=d.workers > 0)

    train_loader = loader(train_set, d.batch_size // world_size, True)
    val_loader = loader(val_set, max(1, (d.eval_batch_size or d.batch_size) // world_size), False)
    if with_holdout:
        return train_loader, None, val_loader, num_classes, list(classes)
    return train_loader, val_loader, num_classes, list(classes)

"""Data: datasets (image folders, CIFAR files, scikit-learn digits, synthetic), transforms, RandAugment,
Mixup/CutMix, repeated-augmentation sampling, and ``build_loaders`` that puts them together for a recipe."""
from .datasets import (
    CorruptImageError, ImageFolderDataset, SkippedSample, SyntheticDataset, TensorImageDataset, cifar_dataset,
    digits_dataset, load_cifar_batch,
)
from .loader import ImageLoader, build_datasets, build_loaders, collate_skipping
from .mixup import MixupCutmix, build_mixup, mix_targets, one_hot_targets
from .rand_augment import RandAugmentNoisy, RandAugmentSpec, parse_rand_augment
from .samplers import RepeatedAugSampler, ShardedEvalSampler
from .transforms import build_eval_transform, build_train_transform, eval_resize_size, train_is_deterministic

__all__ = [
    "build_loaders", "build_datasets", "ImageLoader", "collate_skipping",
    "ImageFolderDataset", "TensorImageDataset", "SyntheticDataset", "digits_dataset", "cifar_dataset",
    "load_cifar_batch", "SkippedSample", "CorruptImageError",
    "build_train_transform", "build_eval_transform", "eval_resize_size", "train_is_deterministic",
    "RandAugmentNoisy", "RandAugmentSpec", "parse_rand_augment",
    "MixupCutmix", "build_mixup", "mix_targets", "one_hot_targets",
    "RepeatedAugSampler", "ShardedEvalSampler",
]

"""Samplers: repeated augmentation (distributed-aware) and an unpadded evaluation shard.

Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019; used by DeiT and ResNet strikes back):
every image of an epoch's permutation is repeated ``r`` times in a row and the stream is dealt out to the
processes round-robin, so the ``r`` augmented copies of one image land on ``r`` different processes
(with one process they sit in the same batch). An epoch stays one dataset's worth of samples: each process
takes ``floor(N / 256) * 256 / world_size`` of them, as DeiT's and timm's ``RepeatAugSampler``.
"""
from __future__ import annotations

import math
from typing import Iterator, Sized

import torch
from torch.utils.data import Sampler


class RepeatedAugSampler(Sampler[int]):
    """Indices for one process with repeated augmentation; deterministic per ``(seed, epoch)``.

    Args:
        dataset: anything with ``len()``.
        num_replicas, rank: the process group (world size and this process's rank).
        num_repeats: copies of each image per epoch (``r``).
        shuffle: permute the dataset each epoch (seeded by ``seed + epoch``).
        seed: added to the epoch for the permutation (seed 0 gives timm's order).
        selected_round: the per-epoch sample count is rounded down to a multiple of this (timm: 256);
            0 keeps ``ceil(N / num_replicas)``.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, num_repeats: int = 3,
                 shuffle: bool = True, seed: int = 0, selected_round: int = 256):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset_len = len(dataset)
        self.num_replicas, self.rank, self.num_repeats = num_replicas, rank, num_repeats
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        # every process gets the same count: the repeated stream padded (by wrapping) to a multiple of the world
        self.num_samples = math.ceil(self.dataset_len * num_repeats / num_replicas)
        self.total_size = self.num_samples * num_replicas
        if selected_round and self.dataset_len >= selected_round:
            selected = self.dataset_len // selected_round * selected_round // num_replicas
        else:
            selected = math.ceil(self.dataset_len / num_replicas)
        self.num_selected = min(selected, self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's permutation (call before iterating, on every process)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_len, generator=g) if self.shuffle else torch.arange(self.dataset_len)
        repeated = torch.repeat_interleave(order, self.num_repeats).tolist()  # [a, a, a, b, b, b, ...]
        n = len(repeated)
        positions = range(self.rank, self.total_size, self.num_replicas)[: self.num_selected]
        return iter([repeated[i % n] for i in positions])

    def __len__(self) -> int:
        return self.num_selected


class ShardedEvalSampler(Sampler[int]):
    """Every ``num_replicas``-th index from ``rank``, in order, without padding (so no image counts twice).

    Shards differ in length by at most one; the engine sums correct counts and sample counts over processes.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
        self.indices = range(rank, len(dataset), num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:  # same order every epoch; present for a uniform loader API
        pass

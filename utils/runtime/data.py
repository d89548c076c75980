"""Data loaders for training and validation, built from the config.

Training uses ``SeededShardSampler``: a fresh permutation per epoch (like ``DistributedSampler``
with ``set_epoch``), sharded over ranks, yielding ``(index, seed)`` pairs so that every sample's
augmentation is a pure function of (run seed, epoch, index). A resumed run restarts the sampler at
the saved (epoch, batch) and sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from common.errors import DataError
from datasets.checks import check_split
from datasets.coco import COCOSegDataset
from datasets.voc import VOCSegDataset
from methods.base import Method


class SeededShardSampler(Sampler):
    """Per-epoch shuffled, rank-sharded indices with a per-sample augmentation seed.

    Args:
        num_samples: dataset length.
        batch_size: per-process batch size (whole batches only: the tail is dropped).
        rank, world_size: this process's shard.
        seed: the run seed.
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        """``batch_size`` samples a batch on each of ``world_size`` ranks, shuffled each epoch by ``seed``."""
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_samples} training images cannot fill one batch of {batch_size} "
                f"on each of {world_size} processes",
                hint="lower train.batch_size or use more images",
            )

    @property
    def batches_per_epoch(self) -> int:
        """Whole batches each rank draws per epoch (the remainder is dropped)."""
        return self.num_samples // self.world_size // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start_batch`` batches (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        """Samples this rank still draws in the current epoch."""
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """This rank's sample indices of the current epoch, from ``start_batch`` on."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen).tolist()
        per_rank = self.batches_per_epoch * self.batch_size
        shard = order[self.rank : self.world_size * per_rank : self.world_size]
        for index in shard[self.start_batch * self.batch_size :]:
            seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
            yield index, int(seed)


def checked_train_dataset(method: Method) -> Dataset:
    """The method's training set (``Method.build_train_dataset``), its split checked (ids, files,
    first samples) before any worker starts."""
    dataset = method.build_train_dataset()
    check_split(dataset)
    return dataset


def build_eval_dataset(cfg: DictConfig, split: str, with_labels: bool = True) -> Dataset:
    """An evaluation set at original image size (labels optional, e.g. for VOC ``test``), checked
    like the training set (masks too, with labels)."""
    cls = VOCSegDataset if cfg.dataset.name == "voc" else COCOSegDataset
    dataset = cls(
        cfg.dataset.root_dir,
        cfg.dataset.name_list_dir,
        split=split,
        num_classes=cfg.dataset.num_classes,
        with_labels=with_labels,
    )
    check_split(dataset, with_labels=with_labels)
    return dataset


def build_train_loader(dataset: Dataset, sampler: SeededShardSampler, num_workers: int) -> DataLoader:
    """Loader over ``sampler``; its own generator keeps the global torch RNG untouched (exact resume)."""
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,  # no worker restart per epoch
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),
    )


def build_eval_loader(
    dataset: Dataset, indices: list[int], num_workers: int, batch_size: int = 1
) -> DataLoader:
    """Loader over ``indices`` (this rank's shard of the split): batch 1, or batches of up to
    ``batch_size`` images of one size (``size_grouped_batches``; the dataset needs ``image_size``)."""
    subset = torch.utils.data.Subset(dataset, indices)
    batching: dict = {"batch_size": 1, "shuffle": False}
    if batch_size > 1:
        sizes = [dataset.image_size(i) for i in indices]
        batching = {"batch_sampler": size_grouped_batches(sizes, batch_size)}
    return DataLoader(
        subset,
        **batching,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,  # validation runs many times per training
        generator=torch.Generator().manual_seed(0),
    )


def size_grouped_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of positions whose images share a size, each at most ``batch_size`` long.

    Sizes are taken in order of first appearance and positions keep their order within a size, so
    every position is in exactly one batch and the result is the same on every call.

    Args:
        sizes: (height, width) of each position.

    Returns:
        Lists of positions into ``sizes``.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for pos, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(pos)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def shard_indices(num_items: int, rank: int, world_size: int, limit: int | None = None) -> list[int]:
    """Round-robin shard of ``range(min(num_items, limit))`` for this rank."""
    n = num_items if limit is None else min(num_items, limit)
    return list(range(rank, n, world_size))

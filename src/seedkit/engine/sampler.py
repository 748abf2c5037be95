"""A deterministic, resumable sampler that shards one global order across processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from seedkit.errors import InvalidValueError

__all__ = ["EpochIndexedDataset", "ResumableShardSampler"]


class ResumableShardSampler(Sampler[int]):
    """Shuffle once per epoch from ``(seed, epoch)``, shard by rank, and resume mid-epoch.

    The global order is a permutation truncated to a whole number of global
    batches. Rank ``r`` of ``w`` takes positions ``r, r + w, r + 2w, ...``, so
    the ``k``-th per-rank batches of all ranks together hold exactly the ``k``-th
    global batch of a single process: ``w`` processes at per-process batch
    ``B / w`` see the same samples per step as one process at batch ``B``.

    Args:
        num_samples: dataset length.
        global_batch_size: samples per optimizer step over all processes.
        rank: this process's rank.
        world_size: number of processes.
        seed: shuffling seed.
        shuffle: shuffle every epoch (``False`` keeps dataset order).

    Example:
        >>> sampler = ResumableShardSampler(10, 4, rank=1, world_size=2, shuffle=False)
        >>> list(sampler)
        [1, 3, 5, 7]
        >>> sampler.set_start_step(1); list(sampler)
        [5, 7]
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch_size < 1 or global_batch_size % world_size:
            raise InvalidValueError(
                "global_batch_size",
                f"a positive multiple of world_size ({world_size})",
                global_batch_size,
            )
        self.steps_per_epoch = num_samples // global_batch_size
        if self.steps_per_epoch < 1:
            raise InvalidValueError(
                "global_batch_size",
                f"at most the number of training samples ({num_samples})",
                global_batch_size,
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.per_rank_batch = global_batch_size // world_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; resets the start step."""
        self.epoch = int(epoch)
        self.start_step = 0

    def set_start_step(self, step: int) -> None:
        """Skip the first ``step`` batches of the current epoch (for resuming)."""
        self.start_step = int(step)

    def _order(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        return order[: self.steps_per_epoch * self.global_batch_size]

    def __iter__(self) -> Iterator[int]:
        mine = self._order()[self.rank :: self.world_size]
        return iter(mine[self.start_step * self.per_rank_batch :])

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.per_rank_batch

    def with_epoch(self) -> Iterator[tuple[int, int]]:
        """Iterate ``(epoch, index)`` pairs, for :class:`EpochIndexedDataset`."""
        return ((self.epoch, index) for index in self)


class _EpochIndexSampler(Sampler[tuple[int, int]]):
    def __init__(self, sampler: ResumableShardSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return self.sampler.with_epoch()

    def __len__(self) -> int:
        return len(self.sampler)


class EpochIndexedDataset(Dataset):
    """Wrap a dataset with ``set_epoch`` so each item request carries its epoch.

    Persistent DataLoader workers hold their own copy of the dataset, so calling
    ``set_epoch`` in the main process would not reach them. Indexing this wrapper
    with ``(epoch, index)`` sets the epoch in whichever process does the work, so
    augmentations stay a function of ``(seed, epoch, index)``.

    Args:
        dataset: a dataset with a ``set_epoch(epoch)`` method.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.dataset[index]

    @staticmethod
    def sampler(sampler: ResumableShardSampler) -> Sampler[tuple[int, int]]:
        """The ``(epoch, index)`` sampler to pass to the DataLoader with this dataset."""
        return _EpochIndexSampler(sampler)

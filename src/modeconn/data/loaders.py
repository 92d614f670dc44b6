"""Mini-batches straight from in-memory tensors, without DataLoader worker processes.

The data sets used here fit in memory as uint8 tensors, so a batch is one gather, one conversion
to float in [0, 1] and (optionally) one vectorised augmentation — much faster than per-sample
``Dataset.__getitem__`` calls, and free of worker start-up costs.

Sample order comes from :class:`torch.utils.data.DistributedSampler`, so sharding over DDP ranks is
the standard one, and all randomness of an epoch (order and augmentation) is a pure function of
``(seed, epoch, rank)``: a run resumed at epoch e sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from modeconn.data.registry import AUGMENTATIONS
from modeconn.errors import InvalidArgument, ModeconnError

Batch = tuple[torch.Tensor, torch.Tensor]
BatchTransform = Callable[[torch.Tensor, torch.Tensor], Batch]


def subset_tensors(
    images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
) -> Batch:
    """Return ``(images[indices], labels[indices])``, or the tensors themselves for ``None``."""
    if indices is None:
        return images, labels
    indices = torch.as_tensor(indices, dtype=torch.long, device=images.device)
    return images[indices], labels[indices.to(labels.device)]


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1]; floating images are only cast to float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random crop after zero padding by ``padding``, and (if ``flip``) a mirror with p = 1/2.

    Each image gets its own offsets and coin; both are folded into the row and column indices of
    two ``gather`` calls, so the whole batch is augmented without a per-image loop.
    """
    n, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(device)
    cols = torch.arange(width, device=device).expand(n, width)
    if flip:
        mirrored = (torch.rand(n, generator=generator) < 0.5).to(device)
        cols = torch.where(mirrored[:, None], width - 1 - cols, cols)
    rows = torch.arange(height, device=device) + offsets[0][:, None]  # n×H
    cols = cols + offsets[1][:, None]  # n×W
    row_index = rows[:, None, :, None].expand(n, channels, height, width + 2 * padding)
    col_index = cols[:, None, None, :].expand(n, channels, height, width)
    return padded.gather(2, row_index).gather(3, col_index)


def augment_batch(
    images: torch.Tensor, augment: str, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """Apply ``augment`` ("none", "crop" or "crop_flip") to a batch N×C×H×W."""
    if augment == "none":
        return images
    return random_crop_flip(images, padding, augment == "crop_flip", generator)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 64-bit seed that mixes (seed, epoch, rank) so every epoch and rank gets its own stream."""
    entropy = [value % 2**64 for value in (seed, epoch, rank)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


class TensorLoader:
    """Iterate over ``(x, y)`` batches — x float32 in [0, 1] NCHW, y int64 — on ``device``.

    ``indices`` restricts the loader to a subset (e.g. a bonafide split). Call :meth:`set_epoch`
    before each epoch, as with :class:`DistributedSampler`; iterating twice without it repeats the
    same batches. ``transform(x, y) -> (x, y)`` runs on every batch after augmentation (used to
    poison batches with a backdoor trigger); a transform with a true ``takes_indices`` attribute
    is called as ``transform(x, y, indices)`` with the batch's indices into ``images``, so it can
    treat a fixed subset of samples (a poisoned subset of the training set). ``drop_last`` drops
    both the sampler's uneven tail and the last incomplete batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None = None,
        batch_size: int = 128,
        shuffle: bool = False,
        augment: str = "none",
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        transform: BatchTransform | None = None,
        padding: int = 4,
    ) -> None:
        _check_arguments(images, labels, batch_size, augment, rank, world_size)
        self.images = images
        self.labels = labels
        self.indices = _check_indices(indices, images.shape[0], images.device)
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.rank = rank
        self.transform = transform
        self.padding = padding
        self.epoch = 0
        self.dataset_size = images.shape[0] if self.indices is None else self.indices.numel()
        self.sampler = DistributedSampler(
            range(self.dataset_size),
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    @property
    def num_samples(self) -> int:
        """Samples this rank visits per epoch (before dropping an incomplete last batch)."""
        return self.sampler.num_samples

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def epoch_indices(self) -> torch.Tensor:
        """Indices into ``images`` visited this epoch on this rank, in batch order."""
        positions = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        if self.indices is None:
            return positions.to(self.images.device)
        return self.indices[positions.to(self.indices.device)]

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_indices()
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch, self.rank))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self._batch(order[start : start + self.batch_size], generator)

    def _batch(self, batch_indices: torch.Tensor, generator: torch.Generator) -> Batch:
        """Gather, move to ``device``, convert, augment and transform one batch."""
        x = self.images[batch_indices].to(self.device, non_blocking=True)
        y = self.labels[batch_indices.to(self.labels.device)].to(self.device, non_blocking=True)
        x = augment_batch(to_unit_float(x), self.augment, generator, self.padding)
        if getattr(self.transform, "takes_indices", False):
            x, y = self.transform(x, y, batch_indices)
        elif self.transform is not None:
            x, y = self.transform(x, y)
        return x, y


def _check_arguments(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    augment: str,
    rank: int,
    world_size: int,
) -> None:
    """Reject inputs that would otherwise fail obscurely in the middle of an epoch."""
    if images.ndim != 4:
        raise InvalidArgument("images", f"images must be N×C×H×W, got shape {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ModeconnError(
            f"labels of shape {tuple(labels.shape)} do not match {images.shape[0]} images"
        )
    if batch_size < 1:
        raise InvalidArgument(None, f"batch size must be at least 1, got {batch_size}")
    if augment not in AUGMENTATIONS:
        raise InvalidArgument(
            None, f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}"
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise ModeconnError(f"rank {rank} is not in range for world size {world_size}")


def _check_indices(
    indices: torch.Tensor | None, size: int, device: torch.device
) -> torch.Tensor | None:
    """Validate a subset of ``range(size)`` and place it on the images' device."""
    if indices is None:
        return None
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise InvalidArgument(None, f"subset indices must lie in 0..{size - 1}")
    return indices.to(device)


def make_eval_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    transform: BatchTransform | None = None,
) -> TensorLoader:
    """A loader for evaluation: fixed order, no augmentation, every sample exactly once."""
    return TensorLoader(
        images,
        labels,
        indices,
        batch_size=batch_size,
        shuffle=False,
        augment="none",
        device=device,
        transform=transform,
    )

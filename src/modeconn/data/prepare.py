"""The data side of every command: a named data set, its seeded splits, and loaders over them.

Commands describe their data with a :class:`DataConfig`; :func:`prepare_data` loads the set once
(uint8, in memory), draws the splits, and hands out loaders for any of them. Loading and
preparing happen once per command, however many points along a path are evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from modeconn.data.loaders import TensorLoader, make_eval_loader
from modeconn.data.registry import RawDataset, load_dataset
from modeconn.data.splits import DataSplits, make_splits, stratified_indices
from modeconn.distributed import DistContext
from modeconn.errors import InvalidArgument, ModeconnError

SPLITS = ("train", "val", "test", "bonafide", "bonafide_holdout")
#: The data sets whose images are converted to the size and channel count a model takes (an npz
#: is used as it is, a registered data set has its own shape).
RESIZED_DATASETS = ("folder",)


@dataclass(frozen=True)
class DataConfig:
    """Which data a command uses and how it is split.

    ``train_limit``/``test_limit`` take a stratified subset (quick runs and tests); ``bonafide``
    (a count or a fraction of the training split) draws the clean subset a repair may use.
    """

    dataset: str | None = "fashion-mnist"  # None: the data set of the model being loaded
    data_dir: str | None = None
    val_size: float = 0
    bonafide: float | None = None
    holdout_fraction: float = 0.2
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = True
    seed: int = 0
    image_size: int | None = None  # folder data sets: the side images are resized to
    channels: int | None = None  # folder data sets: 1 or 3 (default: the majority in train/)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def with_input_shape(
    config: DataConfig, image_size: int | None, channels: int | None
) -> DataConfig:
    """``config`` with the input shape a model takes filled in where it names none, so a folder's
    images are converted to what the model was trained on (a sidecar's input shape, or the
    ``--image-size``/``--channels`` of weights without one) instead of to the folder's most
    common size. Other data sets keep their own shape, which the model is then checked against.
    """
    if config.dataset not in RESIZED_DATASETS:
        return config
    return replace(
        config,
        image_size=config.image_size if config.image_size is not None else image_size,
        channels=config.channels if config.channels is not None else channels,
    )


@dataclass
class PreparedData:
    """A loaded data set with its splits; hands out loaders by split name."""

    config: DataConfig
    raw: RawDataset
    splits: DataSplits
    test_indices: torch.Tensor

    @property
    def info(self):
        return self.raw.info

    def indices(self, split: str) -> torch.Tensor:
        """Indices of ``split`` into its source tensors (the test split indexes the test set)."""
        if split == "test":
            return self.test_indices
        if split not in SPLITS:
            raise InvalidArgument(None, f"unknown split '{split}' (use {', '.join(SPLITS)})")
        idx = getattr(self.splits, split)
        if idx is None or len(idx) == 0:
            raise ModeconnError(f"the '{split}' split is empty for this run")
        return idx

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images and labels behind ``split`` (whole source set; see :meth:`indices`)."""
        if split == "test":
            return self.raw.test_x, self.raw.test_y
        return self.raw.train_x, self.raw.train_y

    def train_loader(
        self,
        batch_size: int,
        *,
        split: str = "train",
        seed: int | None = None,
        augment: bool | None = None,
        transform: Callable | None = None,
        device: torch.device | str = "cpu",
        dist_ctx: DistContext | None = None,
        passes: int = 1,
    ) -> TensorLoader:
        """A shuffled, augmented loader whose epochs are pure functions of (seed, epoch); an
        epoch makes ``passes`` passes over the split, shuffled together (a few dozen images
        make a one-step epoch otherwise)."""
        ctx = dist_ctx or DistContext()
        images, labels = self.tensors(split)
        use_aug = self.config.augment if augment is None else augment
        return TensorLoader(
            images,
            labels,
            indices=self.indices(split).repeat(passes),
            batch_size=batch_size,
            shuffle=True,
            augment=self.info.augment if use_aug else "none",
            seed=self.config.seed if seed is None else seed,
            device=device,
            rank=ctx.rank,
            world_size=ctx.world_size,
            transform=transform,
        )

    def eval_loader(
        self,
        split: str = "test",
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        *,
        limit: int | None = None,
        seed: int | None = None,
    ):
        """An unshuffled, unaugmented loader over ``split``, or over a class-stratified subset of
        ``limit`` of its images drawn with ``seed`` (default: the data's seed), so the same images
        are used at every point of a path or scan."""
        images, labels = self.tensors(split)
        indices = self.indices(split)
        if limit is not None and limit < len(indices):
            if limit < 1:
                raise InvalidArgument(None, f"the image limit must be at least 1, got {limit}")
            pick = stratified_indices(
                labels[indices], limit, seed=self.config.seed if seed is None else seed
            )
            indices = indices[pick]
        return make_eval_loader(
            images, labels, indices=indices, batch_size=batch_size, device=device
        )

    def split_sizes(self) -> dict[str, int]:
        sizes = {"test": len(self.test_indices)}
        for name in ("train", "val", "bonafide", "bonafide_holdout"):
            idx = getattr(self.splits, name)
            sizes[name] = 0 if idx is None else len(idx)
        return sizes


def prepare_data(config: DataConfig) -> PreparedData:
    """Load ``config.dataset`` and draw its seeded splits."""
    raw = load_dataset(
        config.dataset, config.data_dir, image_size=config.image_size, channels=config.channels
    )
    if config.train_limit is not None:
        keep = stratified_indices(raw.train_y, config.train_limit, seed=config.seed)
        raw = RawDataset(
            info=raw.info,
            train_x=raw.train_x[keep],
            train_y=raw.train_y[keep],
            test_x=raw.test_x,
            test_y=raw.test_y,
        )
    splits = make_splits(
        raw,
        val_size=config.val_size,
        bonafide=config.bonafide,
        holdout_fraction=config.holdout_fraction,
        seed=config.seed,
    )
    if config.test_limit is not None:
        test_idx = stratified_indices(raw.test_y, config.test_limit, seed=config.seed)
    else:
        test_idx = torch.arange(len(raw.test_y))
    return PreparedData(config=config, raw=raw, splits=splits, test_indices=test_idx)

"""Test images that already carry a backdoor's trigger, from a folder (a poisoned test set).

A user who does not know the trigger as a function but holds images that carry it — stamped by
the attacker, collected in the field — measures the ASR on them. Two layouts::

    DIR/<image>              flat: true labels unknown
    DIR/<class>/<image>      one subfolder per TRUE label

A subfolder's name is a class of the data set: one of its class names when it has them (a folder
data set: label i is the i-th name in sorted order), otherwise the class index (``0``, ``1``, …).
Images are PNG, JPEG, BMP or WebP files; other files and names starting with a dot are ignored.
Every image is decoded by :func:`modeconn.data.folder.decode_image`: converted to the data set's
channel count and resized to its image size, as the data set's own images were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modeconn.data.folder import IMAGE_SUFFIXES, decode_image
from modeconn.data.registry import DatasetInfo
from modeconn.errors import MissingInput, ModeconnError


@dataclass(frozen=True)
class TriggeredImages:
    """Triggered test images: uint8 N×C×H×W, their true labels (None: unknown) and the source."""

    images: torch.Tensor
    labels: torch.Tensor | None
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]


def _entries(folder: str) -> tuple[list[str], list[os.DirEntry]]:
    """The image files (sorted paths) and the subfolders (sorted entries) of ``folder``."""
    with os.scandir(folder) as scan:
        visible = [e for e in scan if not e.name.startswith(".")]
    files = sorted(
        e.path for e in visible if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)
    )
    folders = sorted((e for e in visible if e.is_dir()), key=lambda e: e.name)
    return files, folders


def _class_index(name: str, info: DatasetInfo) -> int:
    """The label a subfolder named ``name`` stands for (see the module docstring)."""
    if info.class_names:
        if name in info.class_names:
            return info.class_names.index(name)
        known = ", ".join(info.class_names)
        raise ModeconnError(f"triggered images: class folder {name!r} is not a class ({known})")
    if name.isdigit() and int(name) < info.num_classes:
        return int(name)
    raise ModeconnError(
        f"triggered images: class folder {name!r} must be a class index 0..{info.num_classes - 1}"
    )


def list_triggered_folder(
    root: str | Path, info: DatasetInfo
) -> tuple[list[str], list[int] | None]:
    """The image files of a triggered folder and their true labels (None for a flat folder).

    Raises :class:`MissingInput` for a missing folder and :class:`ModeconnError` for a folder
    without images, loose images beside class folders, or a class folder that names no class.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"triggered image folder {root} not found", root)
    files, folders = _entries(str(root))
    if not folders:
        if not files:
            raise ModeconnError(f"{root} holds no images (PNG, JPEG, BMP or WebP)")
        return files, None
    if files:
        raise ModeconnError(
            f"{root} mixes images ({Path(files[0]).name}) with class folders: use one layout"
        )
    paths: list[str] = []
    labels: list[int] = []
    for folder in folders:
        label = _class_index(folder.name, info)
        inside, _ = _entries(folder.path)
        paths += inside
        labels += [label] * len(inside)
    if not paths:
        raise ModeconnError(f"{root} holds no images in its class folders")
    return paths, labels


def read_triggered_folder(root: str | Path, info: DatasetInfo) -> TriggeredImages:
    """Decode a triggered folder (see the module docstring) at ``info``'s channels and size."""
    files, labels = list_triggered_folder(root, info)
    images = np.stack([decode_image(path, info.in_channels, info.image_size) for path in files])
    return TriggeredImages(
        torch.from_numpy(images),
        None if labels is None else torch.tensor(labels, dtype=torch.int64),
        str(root),
    )


__all__ = ["TriggeredImages", "list_triggered_folder", "read_triggered_folder"]

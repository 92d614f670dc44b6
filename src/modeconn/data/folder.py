"""A data set from a folder of images, one subfolder per class (torchvision's ImageFolder layout).

::

    DIR/train/<class>/<image>      required
    DIR/test/<class>/<image>       optional

Images are PNG, JPEG, BMP or WebP files (decoded by Pillow); other files and anything whose name
starts with a dot are ignored. Classes are the subfolders of ``train/`` in sorted name order, so
label i is the i-th name and stays the same on every machine; ``test/`` may lack classes but may not
have classes ``train/`` lacks. Without ``test/``, a stratified :data:`TEST_FRACTION` (20%) of each
class of ``train/`` becomes the test split, drawn with the fixed seed :data:`TEST_SPLIT_SEED` (0),
so the same folder always gives the same split, whatever the run's seed.

Every image is converted to one channel count (``channels``: 1 for grayscale, 3 for RGB; by default
the majority of ``train/``'s images, RGB on a tie) and resized to ``image_size`` × ``image_size``
(bilinear; by default the most common size in ``train/``, its longer side when not square).

The decoded uint8 arrays are cached (:mod:`modeconn.data.cache`) under the folder's
``.modeconn-cache/`` (or the user's cache folder when the data folder is read-only), keyed by the
list of files with their sizes and modification times: the next load of an unchanged folder reads
one file instead of decoding thousands.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch

from modeconn.data import cache
from modeconn.data.formats import ArraySplits, SourceData, channel_stats
from modeconn.data.splits import stratified_indices
from modeconn.errors import InvalidArgument, MissingInput, ModeconnError
from modeconn.progress import make_progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
CHANNEL_CHOICES = (1, 3)
# Pillow modes without colour; every other mode (RGB, RGBA, P, CMYK, YCbCr, …) counts as colour.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# Bumped whenever the cached arrays would come out differently for the same files and options.
CACHE_FORMAT = 1
_CACHED_ARRAYS = ("train_x", "train_y", "test_x", "test_y", "class_names", "mean", "std")
_PROGRESS_STEP = 256


@dataclass(frozen=True)
class ImageList:
    """Image files (paths) and their labels (indices into the folder's class names)."""

    files: list[str]
    labels: list[int]


@dataclass(frozen=True)
class FolderListing:
    """What is in a data folder: class names, the train and test images (``test`` None: no
    ``test/`` folder), and one ``relative path\\0size\\0mtime`` line per image for the cache."""

    root: Path
    class_names: tuple[str, ...]
    train: ImageList
    test: ImageList | None
    fingerprint: list[str]


# ----------------------------------------------------------------------------------------- listing
# Listing runs on every load, cached or not, so it stays close to one stat call per file: plain
# strings rather than Path objects, one sort per folder.


def _class_folders(split_dir: Path) -> list[os.DirEntry]:
    """The class subfolders of ``split_dir``, sorted by name; at least one."""
    with os.scandir(split_dir) as entries:
        folders = [e for e in entries if not e.name.startswith(".") and e.is_dir()]
    if not folders:
        raise ModeconnError(
            f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/"
        )
    return sorted(folders, key=attrgetter("name"))


def _image_entries(class_dir: os.DirEntry) -> list[os.DirEntry]:
    """The image files of one class folder, sorted by name; at least one."""
    with os.scandir(class_dir.path) as entries:
        images = [
            e
            for e in entries
            if not e.name.startswith(".")
            and e.name.lower().endswith(IMAGE_SUFFIXES)
            and e.is_file()
        ]
    if not images:
        raise ModeconnError(
            f"{class_dir.path}: class {class_dir.name!r} has no images (PNG, JPEG, BMP or WebP)"
        )
    return sorted(images, key=attrgetter("name"))


def _list_split(
    root: Path, split: str, class_index: dict[str, int], fingerprint: list[str]
) -> ImageList:
    """List ``root/split``'s images with their labels, appending their lines to ``fingerprint``."""
    files: list[str] = []
    labels: list[int] = []
    for folder in _class_folders(root / split):
        if folder.name not in class_index:
            raise ModeconnError(
                f"{folder.path}: class {folder.name!r} is not in {root / 'train'} "
                f"(its classes: {', '.join(class_index)})"
            )
        entries = _image_entries(folder)
        prefix = f"{split}/{folder.name}/"
        for entry in entries:
            stat = entry.stat()
            fingerprint.append(f"{prefix}{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
        files += [entry.path for entry in entries]
        labels += [class_index[folder.name]] * len(entries)
    return ImageList(files, labels)


def list_image_folder(root: str | Path) -> FolderListing:
    """List a data folder (see the module docstring), checking its layout.

    Raises :class:`MissingInput` when ``root`` or ``root/train`` does not exist and
    :class:`ModeconnError` for a class without images or a test class that ``train/`` lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(
            f"image folder {root} not found: data_dir must be a folder holding train/<class>/",
            root,
            parameters=("data_dir",),
        )
    if not (root / "train").is_dir():
        raise MissingInput(
            f"{root} has no train/ folder: a folder data set is DIR/train/<class>/<image> "
            "(and optionally DIR/test/<class>/<image>)",
            root / "train",
            parameters=("data_dir",),
        )
    class_names = tuple(folder.name for folder in _class_folders(root / "train"))
    class_index = {name: index for index, name in enumerate(class_names)}
    fingerprint: list[str] = []
    train = _list_split(root, "train", class_index, fingerprint)
    test = _list_split(root, "test", class_index, fingerprint) if (root / "test").is_dir() else None
    return FolderListing(root, class_names, train, test, fingerprint)


# ---------------------------------------------------------------------------------------- decoding


def _unreadable(path: str, err: Exception) -> ModeconnError:
    return ModeconnError(f"cannot read image {path}: {type(err).__name__}: {err}")


def _header(path: str) -> tuple[str, tuple[int, int]]:
    """An image's Pillow mode and (width, height), from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as err:  # Pillow raises many unrelated types for a bad file
        raise _unreadable(path, err) from err


def _eight_bit(image):
    """16-bit grayscale (modes ``I;16*``, and ``I`` as Pillow opens some 16-bit PNGs) scaled to
    8 bits; Pillow's own conversion would clip every value above 255 to white."""
    from PIL import Image

    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))


def decode_image(path: str | Path, channels: int, image_size: int) -> np.ndarray:
    """Decode one image to uint8 ``channels``×``image_size``×``image_size`` (bilinear resize)."""
    from PIL import Image

    target = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as opened:
            image = _eight_bit(opened)
            converted = image if image.mode == target else image.convert(target)
            if converted.size != (image_size, image_size):
                converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(converted)
    except Exception as err:  # Pillow raises many unrelated types for a bad file
        raise _unreadable(path, err) from err
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _advance(bar, task, done: int, total: int) -> None:
    """Move the progress bar every few hundred images (and at the end), not at every one."""
    if done % _PROGRESS_STEP == 0 or done == total:
        bar.update(task, completed=done)


def _survey(files: Sequence[str], bar) -> tuple[int, int]:
    """The default channel count (majority of the images, RGB on a tie) and image size (the most
    common size, its longer side when not square) of ``files``."""
    task = bar.add_task("reading image headers", total=len(files), status="")
    modes, sizes = Counter(), Counter()
    for done, path in enumerate(files, 1):
        mode, size = _header(path)
        modes[mode in GRAY_MODES] += 1
        sizes[size] += 1
        _advance(bar, task, done, len(files))
    channels = 1 if modes[True] > modes[False] else 3
    return channels, max(sizes.most_common(1)[0][0])


def _decode_all(
    images: ImageList, channels: int, image_size: int, bar, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``images`` into one uint8 N×C×S×S array (and their int64 labels)."""
    task = bar.add_task(f"decoding {label} images", total=len(images.files), status="")
    out = np.empty((len(images.files), channels, image_size, image_size), dtype=np.uint8)
    for index, path in enumerate(images.files):
        out[index] = decode_image(path, channels, image_size)
        _advance(bar, task, index + 1, len(images.files))
    return out, np.asarray(images.labels, dtype=np.int64)


def _split_off_test(images: np.ndarray, labels: np.ndarray) -> ArraySplits:
    """Split a folder without ``test/``: a stratified :data:`TEST_FRACTION` becomes the test set."""
    test = stratified_indices(torch.from_numpy(labels), TEST_FRACTION, TEST_SPLIT_SEED).numpy()
    keep = np.ones(labels.shape[0], dtype=bool)
    keep[test] = False
    return ArraySplits(images[keep], labels[keep], images[test], labels[test])


def _decode_folder(
    listing: FolderListing, image_size: int | None, channels: int | None, progress: bool
) -> SourceData:
    """Decode every image of ``listing`` (the expensive path), with a progress bar."""
    with make_progress(progress) as bar:
        if image_size is None or channels is None:
            found_channels, found_size = _survey(listing.train.files, bar)
            channels = found_channels if channels is None else channels
            image_size = found_size if image_size is None else image_size
        train_x, train_y = _decode_all(listing.train, channels, image_size, bar, "train")
        if listing.test is None:
            splits = _split_off_test(train_x, train_y)
        else:
            splits = ArraySplits(
                train_x, train_y, *_decode_all(listing.test, channels, image_size, bar, "test")
            )
    mean, std = channel_stats(splits.train_x)
    return SourceData(splits, listing.class_names, mean, std)


# ------------------------------------------------------------------------------------------- cache


def _cache_entry(
    listing: FolderListing, cache_dir: Path, image_size: int | None, channels: int | None
) -> Path:
    """The cache file for this folder, these options and the files as they are now."""
    local = cache_dir == listing.root / cache.LOCAL_CACHE_NAME
    options = {
        "format": CACHE_FORMAT,
        "image_size": image_size,
        "channels": channels,
        "test_fraction": TEST_FRACTION,
        "test_split_seed": TEST_SPLIT_SEED,
        "folder": "" if local else str(listing.root.resolve()),
    }
    return cache.entry_path(
        cache_dir, cache.options_hash(options), cache.content_hash(listing.fingerprint)
    )


def _matches(arrays: dict[str, np.ndarray], listing: FolderListing) -> bool:
    """Whether a cache entry holds what decoding ``listing`` would give: its classes, one image
    per file, uint8 N×C×S×S images of one shape with one int64 label each."""
    images, labels = (arrays["train_x"], arrays["test_x"]), (arrays["train_y"], arrays["test_y"])
    names = arrays["class_names"]
    if names.ndim != 1 or tuple(names) != listing.class_names:
        return False
    if not all(x.dtype == np.uint8 and x.ndim == 4 for x in images):
        return False
    if not all(y.dtype == np.int64 and y.ndim == 1 for y in labels):
        return False
    count = len(listing.train.files) + (0 if listing.test is None else len(listing.test.files))
    return (
        images[0].shape[1:] == images[1].shape[1:]
        and all(x.shape[0] == y.shape[0] for x, y in zip(images, labels, strict=True))
        and images[0].shape[0] + images[1].shape[0] == count
    )


def _from_entry(arrays: dict[str, np.ndarray], path: Path) -> SourceData:
    splits = ArraySplits(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"])
    return SourceData(
        splits,
        tuple(str(name) for name in arrays["class_names"]),
        tuple(float(m) for m in arrays["mean"]),
        tuple(float(s) for s in arrays["std"]),
        cache_path=path,
        from_cache=True,
    )


def _to_entry(data: SourceData) -> dict[str, np.ndarray]:
    return {
        **data.splits._asdict(),
        "class_names": np.asarray(data.class_names, dtype=str),
        "mean": np.asarray(data.mean),
        "std": np.asarray(data.std),
    }


def _check_options(image_size: int | None, channels: int | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
        raise InvalidArgument("image_size", f"image_size must be at least 1, got {image_size}")
    if channels is not None and channels not in CHANNEL_CHOICES:
        raise InvalidArgument("channels", f"channels must be 1 or 3, got {channels}")


def load_image_folder(
    root: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> SourceData:
    """Read a data folder (see the module docstring) as uint8 N×C×S×S splits.

    ``cache_dir`` overrides the cache's location (default: :func:`cache.default_cache_dir`);
    ``use_cache=False`` decodes every time and writes nothing. ``progress`` shows a bar while
    images are decoded (a cached load decodes nothing).
    """
    _check_options(image_size, channels)
    listing = list_image_folder(root)
    directory = None
    if use_cache:
        directory = Path(cache_dir) if cache_dir else cache.default_cache_dir(listing.root)
    entry = None if directory is None else _cache_entry(listing, directory, image_size, channels)
    if entry is not None:
        cached = cache.read_entry(entry, _CACHED_ARRAYS)
        if cached is not None and _matches(cached, listing):
            return _from_entry(cached, entry)
    data = _decode_folder(listing, image_size, channels, progress)
    if entry is not None and cache.write_entry(entry, _to_entry(data)):
        return SourceData(data.splits, data.class_names, data.mean, data.std, cache_path=entry)
    return data

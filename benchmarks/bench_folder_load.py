"""Loading a folder data set (PNG files, one subfolder per class) against reading the idx files.

Fashion-MNIST's training split (the real images, read with modeconn's idx loader) is written once
as a folder data set, ``train/<label>/<index>.png`` without ``test/`` (so the load also draws the
seeded test split), into a temporary folder. One run then measures, on the same images:

* ``idx_read_s``: reading the two training idx files (images and labels, gzip as shipped);
* ``first_load_s``: the first ``load_dataset("folder", DIR)``: listing, decoding every PNG and
  writing the cache;
* ``cached_load_s``: the same call again, which lists the files and reads the cache.

The target is ``cached_load_s`` ≤ 2 × ``idx_read_s``. Times are wall-clock seconds (the loads
read files); the idx read and the cached load keep the fastest of ``MODECONN_BENCH_REPEATS``
(default 5), the first load happens once. ``MODECONN_BENCH_IMAGES`` (default 60,000, the whole
training split) makes a quick run with fewer images; ``MODECONN_BENCH_THREADS`` sets torch's
threads (default 1).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modeconn.data import candidate_dirs, load_dataset, read_idx

TRAIN_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TARGET_RATIO = 2.0


def _train_idx_paths() -> list[Path]:
    """Fashion-MNIST's training images and labels files, from the first directory holding both."""
    for directory in candidate_dirs("fashion-mnist"):
        paths = [
            next((p for p in (directory / n, directory / f"{n}.gz") if p.is_file()), None)
            for n in TRAIN_IDX_FILES
        ]
        if all(paths):
            return paths
    raise SystemExit("Fashion-MNIST idx files not found (apt-get install dataset-fashion-mnist)")


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``images`` (N×1×H×W uint8) as ``root/train/<label>/<index>.png``."""
    for label in np.unique(labels):
        (root / "train" / str(label)).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image[0]).save(root / "train" / str(label) / f"{index:05d}.png")


def _fastest(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall-clock time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _measure(root: Path, idx_paths: list[Path], repeats: int) -> dict[str, Any]:
    """The three timings on the folder at ``root``, and a check that it holds the idx images."""

    def read_folder():
        return load_dataset("folder", root, progress=False)

    first, first_s = _timed(read_folder)
    cached_s = _fastest(read_folder, repeats)
    idx_s = _fastest(lambda: [read_idx(path) for path in idx_paths], repeats)
    cache_files = list((root / ".modeconn-cache").glob("*.npz"))
    return {
        "idx_read_s": round(idx_s, 4),
        "first_load_s": round(first_s, 3),
        "cached_load_s": round(cached_s, 4),
        "cached_over_idx": round(cached_s / idx_s, 3),
        "target_ratio": TARGET_RATIO,
        "target_met": cached_s <= TARGET_RATIO * idx_s,
        "cache_bytes": sum(p.stat().st_size for p in cache_files),
        "loaded_images": int(first.train_x.shape[0] + first.test_x.shape[0]),
        "loaded_pixel_sum": int(first.train_x.sum() + first.test_x.sum()),
    }


def main(out_dir: Path) -> dict[str, Any]:
    threads = int(os.environ.get("MODECONN_BENCH_THREADS", "1"))
    repeats = int(os.environ.get("MODECONN_BENCH_REPEATS", "5"))
    count = int(os.environ.get("MODECONN_BENCH_IMAGES", "60000"))
    torch.set_num_threads(threads)
    idx_paths = _train_idx_paths()
    raw = load_dataset("fashion-mnist")
    images, labels = raw.train_x[:count].numpy(), raw.train_y[:count].numpy()
    with tempfile.TemporaryDirectory(prefix="modeconn-bench-folder-") as tmp:
        root = Path(tmp)
        _, write_s = _timed(lambda: _write_folder(root, images, labels))
        result = _measure(root, idx_paths, repeats)
    if result["loaded_pixel_sum"] != int(images.sum()):
        raise RuntimeError("the folder load does not give back the images that were written")
    print(
        f"{count} images: idx read {result['idx_read_s']:.3f} s, first folder load "
        f"{result['first_load_s']:.2f} s, cached load {result['cached_load_s']:.3f} s "
        f"({result['cached_over_idx']:.2f}× the idx read, target ≤ {TARGET_RATIO:g}×)"
    )
    return {
        "device": "cpu",
        "threads": threads,
        "images": count,
        "idx_images_read": "all 60,000 (the idx file is read whole)",
        "write_folder_s": round(write_s, 2),
        **result,
    }

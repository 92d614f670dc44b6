"""Data sets from the user's own files: a folder of images per class, and an ``.npz`` of arrays.

The tests write small folders (PNG, JPEG, BMP, WebP) and npz files into ``tmp_path``: class order,
channel and size conversion, the seeded test split of a train-only folder, the decoded-image cache
(reused, invalidated when a file changes, never unpickled), and every bad input ending in one
:class:`ModeconnError` line.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image

from modeconn.data import (
    USER_FORMATS,
    dataset_names,
    get_info,
    list_image_folder,
    load_dataset,
    load_image_folder,
    load_npz,
)
from modeconn.data import cache as image_cache
from modeconn.data import folder as image_folder
from modeconn.errors import InvalidArgument, MissingInput, ModeconnError


def gray(value: int, size: int = 8) -> np.ndarray:
    """A size×size grayscale image with a gradient offset by ``value`` (distinct per value)."""
    ramp = np.arange(size * size, dtype=np.int64).reshape(size, size)
    return ((ramp + value * 7) % 256).astype(np.uint8)


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def make_folder(
    root: Path,
    classes: dict[str, int],
    test: dict[str, int] | None = None,
    size: int = 8,
    *,
    rgb: bool = False,
) -> Path:
    """``root/train/<class>/`` with ``classes[class]`` PNGs (and ``root/test/`` when given);
    every image distinct, grayscale or (``rgb``) with three different channels."""
    counter = 0
    for split, counts in (("train", classes), ("test", test or {})):
        for name, count in counts.items():
            for index in range(count):
                image = gray(counter, size)
                if rgb:
                    image = np.stack([image, 255 - image, image // 2], axis=-1)
                save(root / split / name / f"{index:03d}.png", image)
                counter += 1
    return root


# ------------------------------------------------------------------------------------------ folder


def test_classes_in_sorted_folder_name_order(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"b_dog": 2, "a_cat": 3, "C_upper": 1}, {"a_cat": 1})
    raw = load_dataset("folder", root, progress=False)
    assert raw.info.class_names == ("C_upper", "a_cat", "b_dog")
    assert raw.info.num_classes == 3 and raw.info.name == "folder"
    assert raw.train_y.tolist() == [0, 1, 1, 1, 2, 2]
    assert raw.test_y.tolist() == [1]
    assert raw.train_x.dtype == torch.uint8 and raw.train_x.shape == (6, 1, 8, 8)
    # PNG is lossless: the pixels come back exactly (C_upper's image was written 6th).
    assert np.array_equal(raw.train_x[0, 0].numpy(), gray(5))
    assert raw.info.augment == "none" and raw.info.input_shape == (1, 8, 8)
    expected_mean = raw.train_x.double().div(255).mean().item()
    assert raw.info.mean[0] == pytest.approx(expected_mean, abs=1e-4)


def test_image_formats_hidden_and_foreign_files(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for suffix in ("png", "jpg", "jpeg", "bmp", "webp", "PNG"):
        save(root / "train" / "a" / f"x.{suffix}", gray(1))
    save(root / "train" / "b" / "y.png", gray(2))
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "a" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    data = load_image_folder(root, use_cache=False)
    assert data.class_names == ("a", "b")
    assert data.splits.train_x.shape[0] + data.splits.test_x.shape[0] == 7


def test_channels_majority_and_override(tmp_path: Path) -> None:
    root = tmp_path / "d"
    rgb = np.stack([gray(1), gray(2), gray(3)], axis=-1)
    save(root / "train" / "a" / "1.png", rgb)
    save(root / "train" / "a" / "2.png", rgb)
    save(root / "train" / "b" / "3.png", gray(4))
    save(root / "test" / "b" / "4.png", gray(5))
    data = load_image_folder(root, use_cache=False)
    assert data.splits.train_x.shape == (3, 3, 8, 8)
    assert np.array_equal(data.splits.train_x[0], rgb.transpose(2, 0, 1))
    assert all(np.array_equal(channel, gray(4)) for channel in data.splits.train_x[2])
    one = load_image_folder(root, channels=1, use_cache=False)
    assert one.splits.train_x.shape == (3, 1, 8, 8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(one.splits.train_x[0, 0], expected)
    assert len(one.mean) == 1 and len(data.mean) == 3


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    root = tmp_path / "d"
    deep = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    save(root / "train" / "a" / "deep.png", deep)
    save(root / "train" / "b" / "plain.png", gray(0))
    data = load_image_folder(root, use_cache=False)
    images = np.concatenate([data.splits.train_x, data.splits.test_x])
    expected = np.rint(deep / 257.0).astype(np.uint8)
    assert any(np.array_equal(image[0], expected) for image in images)


def test_image_size_most_common_and_override(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for index in range(3):
        save(root / "train" / "a" / f"{index}.png", gray(index, 8))
    save(root / "train" / "b" / "big.png", gray(9, 12))
    save(root / "train" / "b" / "wide.png", np.zeros((6, 10), dtype=np.uint8))
    save(root / "test" / "a" / "t.png", gray(3, 16))
    data = load_image_folder(root, use_cache=False)
    assert data.splits.train_x.shape[1:] == (1, 8, 8)
    assert data.splits.test_x.shape == (1, 1, 8, 8)
    assert load_image_folder(root, image_size=16, use_cache=False).splits.train_x.shape[2:] == (
        16,
        16,
    )


def test_train_only_folder_gets_a_seeded_stratified_test_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10, "c": 5})
    first = load_image_folder(root, use_cache=False)
    again = load_image_folder(root, use_cache=False)
    train_x, train_y, test_x, test_y = first.splits
    assert image_folder.TEST_FRACTION == 0.2 and image_folder.TEST_SPLIT_SEED == 0
    assert np.bincount(test_y).tolist() == [2, 2, 1]
    assert np.bincount(train_y).tolist() == [8, 8, 4]
    assert all(np.array_equal(a, b) for a, b in zip(first.splits, again.splits, strict=True))
    train_set = {x.tobytes() for x in train_x}
    assert not any(x.tobytes() in train_set for x in test_x)


# ------------------------------------------------------------------------------------------- cache


def test_cache_is_written_once_and_reused(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", {"a": 3, "b": 2}, {"a": 1, "b": 1})
    first = load_image_folder(root)
    assert not first.from_cache
    assert first.cache_path is not None and first.cache_path.parent == root / ".modeconn-cache"
    stamp = first.cache_path.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached load must not decode images")

    monkeypatch.setattr(image_folder, "decode_image", no_decoding)
    second = load_image_folder(root)
    assert second.from_cache and second.cache_path == first.cache_path
    assert first.cache_path.stat().st_mtime_ns == stamp
    assert second.class_names == first.class_names and second.mean == first.mean
    assert all(np.array_equal(a, b) for a, b in zip(first.splits, second.splits, strict=True))
    assert [p.name for p in (root / ".modeconn-cache").iterdir()] == [first.cache_path.name]


def test_cache_is_per_option(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
    default = load_image_folder(root)
    small = load_image_folder(root, image_size=4)
    assert not small.from_cache and small.cache_path != default.cache_path
    assert small.splits.train_x.shape[2:] == (4, 4)
    assert load_image_folder(root).from_cache and load_image_folder(root, image_size=4).from_cache


@pytest.mark.parametrize("change", ["rewrite", "touch", "add", "remove"])
def test_cache_invalidated_when_a_file_changes(tmp_path: Path, change: str) -> None:
    root = make_folder(tmp_path / "d", {"a": 3, "b": 2}, {"a": 1})
    first = load_image_folder(root)
    target = root / "train" / "a" / "000.png"
    later = target.stat().st_mtime_ns + 5_000_000_000
    if change == "rewrite":
        save(target, np.full((8, 8), 200, dtype=np.uint8))
        os.utime(target, ns=(later, later))
    elif change == "touch":
        os.utime(target, ns=(later, later))
    elif change == "add":
        save(root / "train" / "b" / "new.png", gray(40))
    else:
        (root / "train" / "a" / "002.png").unlink()
    second = load_image_folder(root)
    assert not second.from_cache and second.cache_path != first.cache_path
    assert not first.cache_path.exists(), "the stale entry is replaced"
    if change == "rewrite":
        assert (second.splits.train_x == 200).all(axis=(1, 2, 3)).any()
    assert load_image_folder(root).from_cache


def test_damaged_cache_entry_is_decoded_again(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"b": 1})
    first = load_image_folder(root)
    first.cache_path.write_bytes(b"PK\x03\x04 truncated")
    again = load_image_folder(root)
    assert not again.from_cache
    assert all(np.array_equal(a, b) for a, b in zip(first.splits, again.splits, strict=True))
    assert load_image_folder(root).from_cache


def test_cache_entry_with_other_arrays_is_decoded_again(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"b": 1})
    first = load_image_folder(root)
    arrays = dict(np.load(first.cache_path, allow_pickle=False))
    arrays["train_x"] = arrays["train_x"][:1]
    write_npz(first.cache_path, **arrays)
    again = load_image_folder(root)
    assert not again.from_cache and again.splits.train_x.shape[0] == 4


def test_cache_entry_is_never_unpickled(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"b": 1})
    first = load_image_folder(root)
    arrays = dict(np.load(first.cache_path, allow_pickle=False))
    arrays["class_names"] = np.array([{"evil": 1}, 2], dtype=object)
    with first.cache_path.open("wb") as stream:
        np.savez(stream, **arrays)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    again = load_image_folder(root)
    assert not again.from_cache and again.class_names == ("a", "b")


def test_cache_elsewhere_when_the_folder_is_read_only(tmp_path: Path, monkeypatch) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    writable = image_cache._writable_dir
    monkeypatch.setattr(image_cache, "_writable_dir", lambda p: p.parent != root and writable(p))
    first = load_image_folder(root)
    assert first.cache_path.parent == tmp_path / "xdg" / "modeconn"
    assert not (root / ".modeconn-cache").exists()
    assert load_image_folder(root).from_cache
    other = make_folder(tmp_path / "e", {"a": 2, "b": 2}, {"a": 1})
    assert not load_image_folder(other).from_cache, "two folders never share an entry"


def test_cache_dir_option_and_no_cache(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
    data = load_image_folder(root, cache_dir=tmp_path / "c" / "here")
    assert data.cache_path.parent == tmp_path / "c" / "here"
    plain = load_image_folder(root, use_cache=False)
    assert plain.cache_path is None and not plain.from_cache
    assert not (root / ".modeconn-cache").exists()


# ------------------------------------------------------------------------------ folder bad input


def _error(root: Path, **options) -> str:
    with pytest.raises(ModeconnError) as info:
        load_dataset("folder", root, progress=False, **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_empty_class_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2})
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "readme.txt").write_text("no images here")
    message = _error(root)
    assert "'empty' has no images" in message and str(root / "train" / "empty") in message


def test_empty_test_class_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
    (root / "test" / "b").mkdir()
    assert "'b' has no images" in _error(root)


@pytest.mark.parametrize("content", [b"this is not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_image_is_named(tmp_path: Path, content: bytes) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
    bad = root / "train" / "b" / "broken.png"
    bad.write_bytes(content)
    message = _error(root)
    assert message.startswith(f"cannot read image {bad}")
    assert not list(root.glob(".modeconn-cache/*.npz"))


def test_truncated_image_is_named_when_sizes_are_given(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1}, size=32)
    bad = root / "test" / "a" / "000.png"
    bad.write_bytes(bad.read_bytes()[:60])
    assert f"cannot read image {bad}" in _error(root, image_size=32, channels=1)


def test_test_class_missing_from_train_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1, "zebra": 1})
    message = _error(root)
    assert "class 'zebra' is not in" in message and "a, b" in message


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingInput, match="not found"):
        load_dataset("folder", tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "x.png", gray(0))
    with pytest.raises(MissingInput, match="has no train/ folder") as info:
        load_dataset("folder", tmp_path / "flat")
    assert info.value.parameters == ("data_dir",)
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    save(tmp_path / "noclass" / "train" / "x.png", gray(0))
    assert "has no class folders" in _error(tmp_path / "noclass")
    with pytest.raises(InvalidArgument, match="data_dir=DIR") as info:
        load_dataset("folder")
    assert info.value.parameter == "data_dir"


@pytest.mark.parametrize(
    ("options", "parameter"),
    [({"channels": 2}, "channels"), ({"image_size": 0}, "image_size")],
)
def test_bad_options(tmp_path: Path, options: dict, parameter: str) -> None:
    root = make_folder(tmp_path / "d", {"a": 2})
    with pytest.raises(InvalidArgument) as info:
        load_dataset("folder", root, **options)
    assert info.value.parameter == parameter


def test_listing_records_every_image(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 1}, {"b": 1})
    listing = list_image_folder(root)
    assert [line.split("\0")[0] for line in listing.fingerprint] == [
        "train/a/000.png",
        "train/a/001.png",
        "train/b/000.png",
        "test/b/000.png",
    ]
    assert listing.train.labels == [0, 0, 1] and listing.test.labels == [1]


# --------------------------------------------------------------------------------------------- npz


def write_npz(path: Path, **arrays) -> Path:
    with path.open("wb") as stream:
        np.savez(stream, **arrays)
    return path


def good_arrays(layout: str = "nhw", dtype: str = "uint8") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    if layout == "nhwc":
        x = np.repeat(x[..., None], 3, axis=-1)
    elif layout == "nchw":
        x = np.repeat(x[:, None], 3, axis=1)
    if dtype == "float":
        x = x.astype(np.float32) / 255.0
    y = np.arange(12) % 3
    return {"x_train": x[:9], "y_train": y[:9], "x_test": x[9:], "y_test": y[9:]}


@pytest.mark.parametrize(
    ("layout", "dtype", "channels"),
    [("nhw", "uint8", 1), ("nhwc", "uint8", 3), ("nchw", "uint8", 3), ("nhwc", "float", 3)],
)
def test_npz_layouts_and_types(tmp_path: Path, layout: str, dtype: str, channels: int) -> None:
    arrays = good_arrays(layout, dtype)
    raw = load_dataset("npz", write_npz(tmp_path / "d.npz", **arrays))
    assert raw.train_x.shape == (9, channels, 6, 6) and raw.train_x.dtype == torch.uint8
    assert raw.info.num_classes == 3 and raw.info.class_names == ("0", "1", "2")
    assert raw.info.name == "npz" and raw.test_y.tolist() == [0, 1, 2]
    reference = good_arrays("nhw")["x_train"]
    assert np.array_equal(raw.train_x[:, 0].numpy(), reference)


def test_npz_class_names(tmp_path: Path) -> None:
    arrays = good_arrays()
    path = write_npz(tmp_path / "d.npz", **arrays, class_names=np.array(["ant", "bee", "cat"]))
    assert load_npz(path).class_names == ("ant", "bee", "cat")


def _npz_error(path: Path, **options) -> str:
    with pytest.raises(ModeconnError) as info:
        load_dataset("npz", path, **options)
    assert "\n" not in str(info.value)
    return str(info.value)


def _with(**changes) -> dict[str, np.ndarray]:
    arrays = good_arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        (_with(y_test=None, x_test=None), "lacks x_test, y_test"),
        (_with(x_train=np.array([object(), 1], dtype=object)), "x_train holds Python objects"),
        (_with(y_train=np.array([None] * 9, dtype=object)), "y_train holds Python objects"),
        (_with(x_train=np.full((9, 6, 6), 1.5, dtype=np.float32)), "float images must lie in"),
        (_with(x_train=np.full((9, 6, 6), np.nan)), "float images must lie in"),
        (_with(x_train=np.zeros((9, 6, 6), dtype=np.int64)), "must be uint8"),
        (_with(x_train=np.zeros((9, 36), dtype=np.uint8)), "expected N×H×W"),
        (_with(x_train=np.zeros((9, 5, 5, 5), dtype=np.uint8)), "1 or 3 channels"),
        (_with(x_train=np.zeros((9, 6, 4), dtype=np.uint8)), "square"),
        (_with(x_train=np.zeros((0, 6, 6), dtype=np.uint8)), "has no images"),
        (_with(x_train=np.zeros((9, 8, 8), dtype=np.uint8)), "both must have one shape"),
        (_with(y_train=np.zeros(5, dtype=np.int64)), "one label per image"),
        (_with(y_train=np.zeros(9, dtype=np.float32)), "labels must be integers"),
        (_with(y_train=-np.ones(9, dtype=np.int64)), "negative labels"),
        (_with(y_test=np.array([0, 1, 7])), "y_test has class 7"),
        (_with(class_names=np.array(["a", "b"])), "class_names must be 3 strings"),
    ],
)
def test_npz_bad_input(tmp_path: Path, arrays: dict, fragment: str) -> None:
    path = write_npz(tmp_path / "d.npz", **arrays)
    message = _npz_error(path)
    assert fragment in message and str(path) in message


def test_npz_that_is_a_pickle_or_a_single_array(tmp_path: Path, monkeypatch) -> None:
    pickled = tmp_path / "p.npz"
    pickled.write_bytes(pickle.dumps(good_arrays()))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    assert "is a Python pickle" in _npz_error(pickled)
    single = tmp_path / "s.npz"
    with single.open("wb") as stream:
        np.save(stream, np.zeros((3, 4, 4), dtype=np.uint8))
    assert "holds a single array" in _npz_error(single)
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert "cannot read" in _npz_error(garbage)


def test_npz_missing_file_and_options(tmp_path: Path) -> None:
    with pytest.raises(MissingInput, match="not found") as info:
        load_dataset("npz", tmp_path / "none.npz")
    assert info.value.parameters == ("data_dir",)
    with pytest.raises(InvalidArgument, match=r"data_dir=FILE\.npz"):
        load_dataset("npz")
    path = write_npz(tmp_path / "d.npz", **good_arrays())
    with pytest.raises(InvalidArgument, match="image_size=8 does not match") as info:
        load_dataset("npz", path, image_size=8)
    assert info.value.parameter == "image_size"
    assert load_dataset("npz", path, image_size=6, channels=1).train_x.shape == (9, 1, 6, 6)


# ---------------------------------------------------------------------------- registered data sets


def test_registered_data_sets_unchanged() -> None:
    assert "folder" not in dataset_names() and set(USER_FORMATS) == {"folder", "npz"}
    assert get_info("digits").class_names == ()
    with pytest.raises(InvalidArgument, match="come from its files"):
        get_info("folder")
    with pytest.raises(InvalidArgument, match=r"known datasets: .*digits.*folder") as info:
        load_dataset("nope")
    assert "npz" in str(info.value)
    with pytest.raises(InvalidArgument, match="image_size applies to folder and npz"):
        load_dataset("digits", image_size=8)


# ------------------------------------------------------------------------------------ through CLI


def test_train_on_a_folder_through_the_cli(tmp_path: Path, capsys) -> None:
    root = make_folder(tmp_path / "d", {"a": 12, "b": 12}, {"a": 4, "b": 4})
    out = tmp_path / "run"
    args = ("train", "--model", "mlp", "--dataset", "folder", "--data-dir", root)
    result = run_cli(capsys, *args, "--epochs", "1", "--batch-size", "8", "--out", out, "-q")
    assert result.code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["clean_acc"] <= 1.0
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["dataset"] == "folder"


@pytest.mark.parametrize("problem", ["empty class", "missing train class", "npz objects"])
def test_bad_input_through_the_cli_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, problem: str
) -> None:
    if problem == "npz objects":
        data = write_npz(tmp_path / "d.npz", **_with(x_train=np.array([1, None], dtype=object)))
        dataset, fragment = "npz", "holds Python objects"
    else:
        data = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1})
        if problem == "empty class":
            (data / "train" / "c").mkdir()
            fragment = "'c' has no images"
        else:
            save(data / "test" / "z" / "0.png", gray(0))
            fragment = "class 'z' is not in"
        dataset = "folder"
    out = tmp_path / "run"
    args = ("train", "--model", "mlp", "--dataset", dataset, "--data-dir", data, "--out", out)
    result = run_cli(capsys, *args, "--epochs", "1", "-q")
    assert_one_line_error(result, fragment)
    assert result.code == 2
    assert not out.exists()


def test_a_model_trained_at_a_size_is_read_at_it_without_flags(tmp_path: Path, capsys) -> None:
    """Trained with --image-size 16 --channels 1 on a folder of 20×20 RGB images, the model is
    evaluated and scanned on that folder with no shape flags: the sidecar's input shape is used
    (the folder's own 3×20×20 would not fit), and the sidecar names the classes in order."""
    root = make_folder(tmp_path / "d", {"b": 10, "a": 10}, {"b": 3, "a": 3}, size=20, rgb=True)
    out = tmp_path / "run"
    args = ("--model", "mlp", "--model-kwargs", '{"hidden": [8]}', "--dataset", "folder")
    args += ("--data-dir", root, "--image-size", "16", "--channels", "1")
    result = run_cli(capsys, "train", *args, "--epochs", "1", "--batch-size", "8", "--out", out)
    assert result.code == 0, result.err
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["input_shape"] == [1, 16, 16]
    assert sidecar["class_names"] == ["a", "b"]
    trained = json.loads((out / "summary.json").read_text())
    evaluate = run_cli(capsys, "evaluate", out, "--data-dir", root, "--out", tmp_path / "ev")
    assert evaluate.code == 0, evaluate.err
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["clean_acc"] == pytest.approx(
        trained["clean_acc"]
    )
    config = json.loads((tmp_path / "ev" / "config.json").read_text())
    assert (config["data"]["image_size"], config["data"]["channels"]) == (16, 1)
    scan_args = ("--steps", "1", "--bonafide", "10", "--images", "10", "-q")
    scan = run_cli(capsys, "scan", out, "--data-dir", root, *scan_args, "--out", tmp_path / "sc")
    assert scan.code == 0, scan.err
    assert (tmp_path / "sc" / "summary.json").exists()


def test_registered_data_sets_keep_sidecars_without_class_names(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ("--model", "mlp", "--model-kwargs", '{"hidden": [8]}', "--dataset", "digits")
    result = run_cli(capsys, "train", *args, "--epochs", "1", "--train-limit", "100", "--out", out)
    assert result.code == 0, result.err
    assert "class_names" not in json.loads((out / "model.json").read_text())


@pytest.mark.parametrize(
    "option, fragment",
    [
        (("--channels", "2"), "--channels must be 1 or 3, got 2"),
        (("--image-size", "0"), "--image-size must be at least 1, got 0"),
    ],
)
def test_a_bad_input_shape_through_the_cli_is_one_line(
    tmp_path: Path, capsys, option: tuple[str, str], fragment: str
) -> None:
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2}, {"a": 1, "b": 1})
    out = tmp_path / "run"
    args = ("--model", "mlp", "--dataset", "folder", "--data-dir", root, *option)
    result = run_cli(capsys, "train", *args, "--epochs", "1", "--out", out, "-q")
    assert_one_line_error(result, fragment)
    assert result.code == 2
    assert not out.exists()

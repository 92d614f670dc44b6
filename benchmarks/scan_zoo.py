"""A zoo of clean and backdoored Fashion-MNIST models for judging the scan as detectors are judged.

Three architectures (``lenet``; a narrow ResNet-20 with BatchNorm and residual connections;
an ``mlp``), clean models of many seeds, and backdoored models of four families: patch (sizes 2–5,
corners and positions on the object, solid/checkerboard/random patterns), blend (random noise, a
natural photograph, a sinusoidal signal), warp (WaNet-style) and all-to-all, at poisoning rates
from 1% to 10% and all-to-one targets spread over the ten classes (class 8, "bag", included).

Every member belongs to the ``calibration`` part or the ``held-out`` part: thresholds are set on
the first and reported on the second, which has other seeds, targets and trigger settings.

Each model is trained once into ``<root>/<name>/`` with ``run_train``/``run_poison`` and reused
afterwards (a finished run directory has a ``summary.json``); an interrupted one resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeconn.api import DataConfig, TrainConfig, TriggerSpec, run_poison, run_train
from modeconn.io import read_json

CALIBRATION, HELD_OUT = "calibration", "held-out"
FAMILIES = ("clean", "patch", "blend", "warp", "all-to-all")
ARCHS: dict[str, dict[str, Any]] = {
    "lenet": {},
    "resnet": {"width": 8},
    "mlp": {"hidden": [256, 128]},
}
MODEL_NAME = {"lenet": "lenet", "resnet": "resnet20", "mlp": "mlp"}
EFFECTIVE_ASR = 0.5  # a "backdoor" the model did not learn is not one the scan should find


@dataclass(frozen=True)
class ZooScale:
    """The data and training every zoo model gets: the full zoo trains on 12,000 Fashion-MNIST
    images; the quick zoo of the tests on scikit-learn's digits."""

    dataset: str = "fashion-mnist"
    train_images: int | None = 12000
    test_images: int | None = 2000
    epochs: tuple[tuple[str, int], ...] = (("lenet", 4), ("resnet", 3), ("mlp", 4))
    bonafide: float = 2500  # the scan's bonafide pool, as ``modeconn scan`` draws it

    def data(self) -> DataConfig:
        return DataConfig(
            dataset=self.dataset,
            train_limit=self.train_images,
            test_limit=self.test_images,
            seed=0,
        )


FULL = ZooScale()
QUICK = ZooScale("digits", None, None, (("lenet", 8), ("resnet", 3), ("mlp", 8)), 0.5)


@dataclass(frozen=True)
class ZooMember:
    """One model of the zoo: its architecture, training seed, backdoor (None: clean) and part."""

    name: str
    family: str
    arch: str
    seed: int
    part: str
    trigger: dict[str, Any] | None = field(default=None, hash=False)
    epochs: int | None = None  # more than the scale's for backdoors that are slow to learn

    def train_config(self, scale: ZooScale) -> TrainConfig:
        return TrainConfig(epochs=self.epochs or dict(scale.epochs)[self.arch], seed=self.seed)


def _patch(size: int, position: Any, pattern: str, target: int, rate: float, **kw: Any) -> dict:
    return dict(
        type="patch", size=size, position=position, pattern=pattern, target=target, rate=rate, **kw
    )


def _blend(pattern: str, alpha: float, target: int, rate: float, **kw: Any) -> dict:
    return dict(type="blend", pattern=pattern, alpha=alpha, target=target, rate=rate, **kw)


def _warp(strength: float, target: int, rate: float, **kw: Any) -> dict:
    """A WaNet-style warp; warps are slow to learn, so ``epochs`` may ask for more training."""
    return dict(type="warp", warp_strength=strength, target=target, rate=rate, **kw)


# (family, arch, seed, part, trigger). Positions given as [row, col] lie on the object.
_BACKDOORED: list[tuple[str, str, int, str, dict]] = [
    ("patch", "lenet", 1, CALIBRATION, _patch(3, "bottom-right", "solid", 0, 0.10)),
    ("patch", "lenet", 2, CALIBRATION, _patch(2, "top-left", "checkerboard", 8, 0.05)),
    ("patch", "lenet", 3, CALIBRATION, _patch(4, [12, 12], "random", 5, 0.02)),
    ("patch", "resnet", 1, CALIBRATION, _patch(3, "bottom-left", "checkerboard", 2, 0.05)),
    ("patch", "mlp", 1, CALIBRATION, _patch(5, "top-right", "solid", 7, 0.10)),
    ("patch", "lenet", 21, HELD_OUT, _patch(5, [10, 12], "solid", 4, 0.01)),
    ("patch", "lenet", 22, HELD_OUT, _patch(3, "top-right", "random", 9, 0.03, seed=5)),
    ("patch", "resnet", 21, HELD_OUT, _patch(2, [14, 10], "solid", 6, 0.05)),
    ("patch", "mlp", 21, HELD_OUT, _patch(4, "bottom-left", "checkerboard", 1, 0.05)),
    ("patch", "lenet", 23, HELD_OUT, _patch(4, "bottom-right", "checkerboard", 8, 0.02)),
    ("blend", "lenet", 1, CALIBRATION, _blend("random", 0.2, 1, 0.10)),
    ("blend", "lenet", 2, CALIBRATION, _blend("natural", 0.2, 6, 0.05)),
    ("blend", "resnet", 1, CALIBRATION, _blend("sine", 0.2, 3, 0.10)),
    ("blend", "mlp", 1, CALIBRATION, _blend("random", 0.15, 9, 0.05, seed=3)),
    ("blend", "lenet", 21, HELD_OUT, _blend("sine", 0.15, 8, 0.05)),
    ("blend", "lenet", 22, HELD_OUT, _blend("natural", 0.25, 0, 0.03)),
    ("blend", "resnet", 21, HELD_OUT, _blend("random", 0.2, 4, 0.05, seed=7)),
    ("blend", "mlp", 21, HELD_OUT, _blend("natural", 0.2, 2, 0.10)),
    ("warp", "lenet", 1, CALIBRATION, _warp(0.5, 2, 0.10)),
    ("warp", "lenet", 3, CALIBRATION, _warp(0.75, 7, 0.10, seed=4, epochs=8)),
    ("warp", "lenet", 4, CALIBRATION, _warp(0.5, 7, 0.10, seed=3, epochs=6)),
    ("warp", "resnet", 2, CALIBRATION, _warp(0.5, 5, 0.10, epochs=6)),
    ("warp", "lenet", 21, HELD_OUT, _warp(0.5, 8, 0.10, seed=9, epochs=8)),
    ("warp", "mlp", 22, HELD_OUT, _warp(0.5, 3, 0.10, seed=2, epochs=10)),
    ("warp", "resnet", 22, HELD_OUT, _warp(0.5, 0, 0.10, seed=6, epochs=6)),
    ("all-to-all", "lenet", 1, CALIBRATION, _patch(3, "bottom-right", "solid", 0, 0.10)),
    ("all-to-all", "resnet", 1, CALIBRATION, _blend("random", 0.2, 0, 0.10)),
    ("all-to-all", "mlp", 1, CALIBRATION, _patch(4, "top-left", "checkerboard", 0, 0.10)),
    ("all-to-all", "lenet", 21, HELD_OUT, _blend("sine", 0.2, 0, 0.10)),
    ("all-to-all", "lenet", 22, HELD_OUT, _patch(3, [12, 14], "random", 0, 0.05)),
    ("all-to-all", "resnet", 21, HELD_OUT, _patch(3, "top-right", "solid", 0, 0.10)),
]
_CLEAN_SEEDS = {"lenet": range(12), "resnet": range(4), "mlp": range(4)}


def members() -> list[ZooMember]:
    """Every model of the zoo: half of each architecture's clean seeds and the first settings of
    each family for calibration, the rest held out."""
    zoo = []
    for arch, seeds in _CLEAN_SEEDS.items():
        for i, seed in enumerate(seeds):
            part = CALIBRATION if i < len(seeds) // 2 else HELD_OUT
            zoo.append(ZooMember(f"clean-{arch}-{seed}", "clean", arch, seed, part))
    for family, arch, seed, part, setting in _BACKDOORED:
        trigger = dict(setting)
        if family == "all-to-all":
            trigger["label_mode"] = "all-to-all"
        epochs = trigger.pop("epochs", None)
        zoo.append(ZooMember(f"{family}-{arch}-{seed}", family, arch, seed, part, trigger, epochs))
    return sorted(zoo, key=lambda m: m.part != CALIBRATION)  # calibration first


def quick_members() -> list[ZooMember]:
    """A small zoo for the tests (digits, 8×8): two clean lenets and two backdoored ones."""
    picked = ("clean-lenet-0", "clean-lenet-6", "patch-lenet-1", "blend-lenet-1")
    return [m for m in members() if m.name in picked]


def blend_patterns(root: Path) -> dict[str, str]:
    """The blend patterns as .npy files under ``root``: a natural photograph (scikit-learn's
    sample image, grey, 28×28) and a sinusoidal signal (SIG-style vertical stripes)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    root.mkdir(parents=True, exist_ok=True)
    natural, sine = root / "natural.npy", root / "sine.npy"
    if not natural.exists():
        grey = Image.fromarray(load_sample_image("china.jpg")).convert("L").resize((28, 28))
        np.save(natural, (np.asarray(grey, dtype=np.float32) / 255.0)[None])
    if not sine.exists():
        cols = np.arange(28, dtype=np.float32)
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * 6 * cols / 28)
        np.save(sine, np.broadcast_to(wave, (1, 28, 28)).astype(np.float32))
    return {"natural": str(natural), "sine": str(sine)}


def trigger_spec(member: ZooMember, patterns: dict[str, str]) -> TriggerSpec | None:
    """The member's backdoor as a :class:`TriggerSpec` (blend pattern names resolved)."""
    if member.trigger is None:
        return None
    record = dict(member.trigger)
    if record.get("pattern") in patterns:
        record["pattern"] = patterns[record["pattern"]]
    return TriggerSpec(**record)


def train_member(
    member: ZooMember, root: Path, scale: ZooScale = FULL, *, progress: bool = False
) -> dict[str, Any]:
    """Train ``member`` into ``root/name`` unless a finished run is there; return its summary."""
    out = root / member.name
    if (out / "summary.json").exists():
        return read_json(out / "summary.json")
    resume = (out / "config.json").exists()
    common = dict(
        model=MODEL_NAME[member.arch],
        model_kwargs=ARCHS[member.arch],
        data=scale.data(),
        config=member.train_config(scale),
        resume=resume,
        force=not resume,
        progress=progress,
    )
    spec = trigger_spec(member, blend_patterns(root / "_patterns"))
    if spec is None:
        return run_train(out, **common)
    return run_poison(out, spec=spec, **common)


def effective(member: ZooMember, summary: dict[str, Any]) -> bool:
    """A backdoored member counts as backdoored only when its attack works (ASR ≥ 0.5)."""
    return member.trigger is None or summary.get("asr", 0.0) >= EFFECTIVE_ASR


if __name__ == "__main__":
    import sys
    import time

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/zoo")
    for m in members():
        t = time.perf_counter()
        s = train_member(m, root)
        print(
            f"{m.name}: acc {s['clean_acc']:.3f} asr {s.get('asr', float('nan')):.3f} "
            f"{time.perf_counter() - t:.0f}s",
            flush=True,
        )

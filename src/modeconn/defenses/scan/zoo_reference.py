"""How far a scan's verdict can be trusted, read off the model zoo the scan was measured on.

``benchmarks/bench_scan_zoo.py`` scans a zoo of clean and backdoored Fashion-MNIST models (lenet,
a narrow ResNet-20, an MLP; patch, blend, warp and all-to-all backdoors) with the default
settings and writes ``zoo_reference.json`` beside this module: the suspicion of every clean
model and, per attack family, the share of held-out backdoored models the default threshold
missed. A scan with those settings is then given

- ``zoo_clean_share``: the share of the zoo's clean models at least as suspicious as this model
  (an empirical p-value: small means a clean model rarely looks like this one), and
- ``zoo_miss_rate``: per family, how often the scan missed such a backdoor in the zoo — what a
  verdict of "nothing found" is worth.

Other settings, or another data set, are not what the zoo measured; the figures are then left
out rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from modeconn.defenses.scan.anomaly import ScanResult
from modeconn.defenses.scan.synthesis import ScanConfig

REFERENCE_FILE = Path(__file__).with_name("zoo_reference.json")


@dataclass(frozen=True)
class ZooReference:
    """The zoo's clean suspicions and per-family miss rates under one scan setting."""

    config: dict[str, Any]
    clean_scores: tuple[float, ...]
    miss_rate: dict[str, float]
    description: str
    dataset: str = "fashion-mnist"

    def covers(self, config: ScanConfig, dataset: str | None = None) -> bool:
        """The scan ran on the zoo's data set with the settings the zoo was measured with (the
        seed aside); ``dataset`` None skips the data set check."""
        if dataset is not None and dataset != self.dataset:
            return False
        ours = json.loads(json.dumps(config.to_dict()))
        return {k: v for k, v in ours.items() if k != "seed"} == {
            k: v for k, v in self.config.items() if k != "seed"
        }

    def clean_share(self, suspicion: float) -> float:
        """The share of clean zoo models whose suspicion is at least ``suspicion``, counting the
        scanned model itself as one more (so it is never 0).

        >>> ZooReference({}, (0.2, 0.5, 0.9), {}, "").clean_share(0.6)
        0.5
        """
        above = sum(score >= suspicion for score in self.clean_scores)
        return (above + 1) / (len(self.clean_scores) + 1)

    def figures(
        self, result: ScanResult, config: ScanConfig, dataset: str | None = None
    ) -> dict[str, Any]:
        """The summary keys of a scan's uncertainty; empty when the settings or data differ."""
        if not self.covers(config, dataset):
            return {}
        return {
            "zoo_clean_share": round(self.clean_share(result.suspicion), 4),
            "zoo_miss_rate": dict(self.miss_rate),
            "zoo": self.description,
        }


@cache
def zoo_reference(path: Path = REFERENCE_FILE) -> ZooReference | None:
    """The reference written by the zoo benchmark, or None when there is none."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return ZooReference(
        record["config"],
        tuple(record["clean_scores"]),
        record["miss_rate"],
        record["description"],
        record.get("dataset", "fashion-mnist"),
    )


def scan_uncertainty(result: ScanResult, config: ScanConfig, dataset: str | None) -> dict[str, Any]:
    """``zoo_clean_share`` and ``zoo_miss_rate`` of a scan of a model on ``dataset`` (see the
    module doc), or nothing."""
    reference = zoo_reference()
    return {} if reference is None else reference.figures(result, config, dataset)

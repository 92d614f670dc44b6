"""What every reproducible claim is made of, and the one way each is run.

A :class:`Claim` bundles a settings dataclass (full and quick defaults), the steps of one seed
(run directories below ``out/seed_<s>`` that return a typed per-seed result), the outputs drawn
from all seeds' results (``table.csv``, ``table.md``, the paper's figure) and the verdict (the
summary with ``claim`` and ``holds``). :meth:`Claim.run` runs the seeds in order and hands their
results to the outputs and the verdict in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from modeconn.rundir import RunDir


class ClaimSettings(Protocol):
    """The fields and check that every claim's settings dataclass has."""

    dataset: str
    model: str
    model_kwargs: dict[str, Any]
    seeds: tuple[int, ...]

    def validate(self) -> ClaimSettings: ...


S = TypeVar("S", bound=ClaimSettings)
R = TypeVar("R")


@dataclass(frozen=True)
class StepOptions:
    """How a claim's steps run: where the data lives, on which device, whether finished steps are
    redone (``force``) and whether progress bars are shown."""

    data_dir: str | None
    device: str
    force: bool
    progress: bool


@dataclass(frozen=True)
class Claim(Generic[S, R]):
    """A published claim: its settings, the steps of one seed, its outputs and its verdict.

    ``run_seed(seed, base, settings, options)`` runs (or reuses) one seed's steps below ``base``
    and returns that seed's result; ``write_outputs(run, settings, results)`` writes the tables
    and the figure; ``verdict(settings, results)`` returns the summary (``experiment``,
    ``claim``, ``holds``, ``seeds_holding`` and the figures behind them).
    """

    full: Callable[[], S]
    quick: Callable[[], S]
    run_seed: Callable[[int, Path, S, StepOptions], R]
    write_outputs: Callable[[RunDir, S, Sequence[R]], None]
    verdict: Callable[[S, Sequence[R]], dict[str, Any]]

    def settings(self, quick: bool) -> S:
        """The claim's default settings: the small quick ones or the full ones."""
        return self.quick() if quick else self.full()

    def run(self, run: RunDir, settings: S, options: StepOptions) -> dict[str, Any]:
        """Every seed's steps in order, then the outputs; return the verdict's summary."""
        results = [
            self.run_seed(seed, run.path / f"seed_{seed}", settings, options)
            for seed in settings.seeds
        ]
        self.write_outputs(run, settings, results)
        return self.verdict(settings, results)

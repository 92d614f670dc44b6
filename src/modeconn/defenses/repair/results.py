"""What a repair produces, as typed values: candidates, built models, paths and the result.

The builders (:mod:`.candidates`, :mod:`.baselines`) return :class:`Built`; the repair turns each
into a :class:`Candidate` (a row of the comparison) and gathers them in a :class:`RepairResult`.
Only the commands layer flattens these into ``summary.json`` keys, with :func:`slug` as the row's
key prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from modeconn.connectivity import Curve
from modeconn.defenses.scan import ScanResult

#: The tampered models' rows of the comparison (the candidates' names live on their builders).
TAMPERED = "tampered (A)"
ENDPOINT_B = "endpoint B"
#: The row of a model the user trained on clean data (a reference under the same attacks).
CLEAN_REFERENCE = "clean reference"


def slug(name: str) -> str:
    """Summary-key prefix of a row: ``"NC-unlearning"`` → ``"nc_unlearning"``.

    >>> slug("path repair"), slug("tampered (A)"), slug("NC-unlearning")
    ('path_repair', 'tampered', 'nc_unlearning')
    """
    base = name.split(" (")[0]
    return base.lower().replace(" ", "_").replace("-", "_")


@dataclass
class Candidate:
    """One repaired (or reference) model and its evaluation figures."""

    name: str
    metrics: dict[str, float]
    detail: str = ""


@dataclass
class PathOutcome:
    """A trained path and the point taken from it: the path table and the rule behind ``t``."""

    curve: Curve
    rows: list[dict[str, float]]
    t: float
    t_rule: str


@dataclass
class Built:
    """What a candidate or baseline builder returns.

    ``model`` is the repaired model (None when the row has no single model, e.g. a mean over noisy
    draws); ``figures`` are figures the builder measured itself (None: the repair evaluates
    ``model``); ``path`` the path the model was taken from; ``table`` extra rows the builder
    produced (the noisy models' σ sweep).
    """

    model: nn.Module | None
    detail: str = ""
    figures: dict[str, float] | None = None
    path: PathOutcome | None = None
    table: list[dict[str, float]] = field(default_factory=list)


@dataclass
class RepairResult:
    """What a repair produced: the chosen model, every candidate and baseline with its figures,
    the scans behind the choice, the path (when one was trained), the step timings and, per row,
    its backdoor-connected path (``depth``: :mod:`.depth`'s table; backdoors only) and the classes
    unlearnt as a precaution when the scans found nothing (``precautions``: see
    :func:`~modeconn.defenses.unlearning.precaution_classes`), and the near-threshold classes
    left as they were beside a found label flipper (``near_beside_flipper``: see
    :func:`~modeconn.defenses.unlearning.near_classes_beside_flipper`), and the classes the user
    had unlearnt whatever the scans said (``requested``: ``UnlearningConfig.classes``)."""

    chosen: Candidate
    chosen_model: nn.Module
    choice_rule: str
    candidates: list[Candidate]
    references: list[Candidate]
    baselines: list[Candidate]
    scans: dict[str, ScanResult]
    path: PathOutcome | None
    path_candidate: str | None
    noisy_rows: list[dict[str, float]]
    timings: dict[str, float]
    depth: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    precautions: list[int] = field(default_factory=list)
    near_beside_flipper: list[int] = field(default_factory=list)
    requested: list[int] = field(default_factory=list)

    @property
    def table(self) -> list[Candidate]:
        """Every row of the comparison: references, candidates, baselines."""
        return [*self.references, *self.candidates, *self.baselines]

    @property
    def curve(self) -> Curve | None:
        return self.path.curve if self.path is not None else None

    @property
    def rows(self) -> list[dict[str, float]]:
        return self.path.rows if self.path is not None else []

    @property
    def t(self) -> float | None:
        return self.path.t if self.path is not None else None

    @property
    def t_rule(self) -> str:
        return self.path.t_rule if self.path is not None else ""

    @property
    def chosen_t(self) -> float | None:
        """The path's t when the chosen model is a point of that path, else None."""
        return self.t if self.chosen.name == self.path_candidate else None

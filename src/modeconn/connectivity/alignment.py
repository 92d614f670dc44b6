"""Aligning two networks by permuting one of them, and the straight segment's barrier.

Two independently trained networks usually sit in basins that differ by a permutation of their
hidden units, so the straight line between them crosses a barrier. Permuting B's units (which
leaves its function unchanged, see :mod:`modeconn.models.permutation`) so that they match A's
often removes most of it (Ainsworth et al. 2023, "Git Re-Basin"):

* :func:`weight_matching` maximises Σ ⟨W_A, P(W_B)⟩ over all tensors by coordinate descent: one
  group at a time, the others fixed, the best permutation of that group is a linear assignment
  problem (:func:`scipy.optimize.linear_sum_assignment`) on the n×n matrix of inner products
  between A's and B's units. A first sweep in forward order uses only tensors whose other axes
  are already matched; then groups are visited in a seeded random order until a whole sweep
  changes nothing (or ``max_iter`` sweeps). Attention heads are matched as blocks: two heads'
  similarity is the best match of their entries (a small assignment per pair of heads).
* :func:`activation_matching` correlates the features each group's units produce on data (forward
  hooks on the spec's probes) and solves one assignment per group. Groups without probes — the
  attention heads and within-head dimensions of a ViT, whose features are not a module's output —
  are then matched on weights with the probed groups held fixed.

``misalign=True`` solves the opposite problem in both: the assignment that *minimises* the
similarity, giving a copy of B that computes the same function but lies as far from A as a
permutation can take it. The straight line from A to it collapses, which TSC (Peng et al. 2025)
uses to push a curve out of a backdoor's basin.

All of this works on modules, state dicts and loaders in memory; ``modeconn align``
(:mod:`modeconn.commands.align`) owns the run directory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from modeconn.connectivity.bn import has_batchnorm
from modeconn.connectivity.curves import segment
from modeconn.connectivity.evaluate import barrier_height, ts_grid
from modeconn.errors import InvalidArgument, ModeconnError
from modeconn.models.permutation import (
    Permutations,
    PermutationSpec,
    Probe,
    identity_permutations,
    permuted_view,
)
from modeconn.progress import make_progress
from modeconn.training import evaluate_model

StateDict = Mapping[str, torch.Tensor]


def assign(similarity: torch.Tensor, *, misalign: bool = False) -> torch.Tensor:
    """The permutation p maximising (or with ``misalign`` minimising) Σ_i similarity[i, p[i]]."""
    _, cols = linear_sum_assignment(similarity.double().cpu().numpy(), maximize=not misalign)
    return torch.as_tensor(cols, dtype=torch.long)


# --- weight matching ---------------------------------------------------------------------------


def _unit_rows(view: torch.Tensor, axis: int, offset: int, size: int) -> torch.Tensor:
    """The ``size`` units from ``offset`` along ``axis`` as rows of a matrix (float64)."""
    return view.narrow(axis, offset, size).movedim(axis, 0).reshape(size, -1).double()


def _spec_view(spec: PermutationSpec, name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(spec.tensors[name].view or tensor.shape)


def _evidence(
    spec: PermutationSpec, group: str, known: Collection[str] | None
) -> list[tuple[str, int, int]]:
    """The group's weight tensors (name, axis, offset); with ``known``, only those whose other
    axes are unpermuted or permuted by known groups — or all of them if none is left."""
    found = [occ for occ in spec.occurrences(group) if occ[0] not in spec.buffers]
    if known is None:
        return found
    own = {group, spec.blocks.get(group)}

    def settled(name: str) -> bool:
        groups = {g for axis in spec.tensors[name].axes for g in axis or ()}
        return groups <= own | set(known)

    return [occ for occ in found if settled(occ[0])] or found


def matching_similarity(
    spec: PermutationSpec,
    group: str,
    state_a: StateDict,
    state_b: StateDict,
    perms: Permutations,
    *,
    known: Collection[str] | None = None,
    misalign: bool = False,
) -> torch.Tensor:
    """S[i, j] = Σ over the group's weight tensors of ⟨A's unit i, B's unit j⟩, with B's other
    axes permuted by ``perms`` (BatchNorm statistics and other buffers are left out).

    ``known`` restricts the sum to tensors whose other axes are all known (see
    :func:`weight_matching`). For a group of blocks (attention heads) S[i, j] is instead the best
    (with ``misalign`` the worst) that blocks i and j can match under any permutation of their
    entries — a linear assignment per pair: while the inner permutation is unknown, the plain
    inner product of two heads says little.
    """
    evidence = _evidence(spec, group, known)
    if group in spec.blocks:
        return _block_similarity(spec, group, evidence, state_a, state_b, perms, misalign)
    size = spec.groups[group]
    sim = torch.zeros(size, size, dtype=torch.float64)
    for name, axis, offset in evidence:
        a = _spec_view(spec, name, state_a[name])
        b = permuted_view(spec, name, state_b[name], perms, skip=(axis,))
        sim += (_unit_rows(a, axis, offset, size) @ _unit_rows(b, axis, offset, size).T).cpu()
    return sim


def _block_rows(view: torch.Tensor, axis: int, offset: int, n: int, m: int) -> torch.Tensor:
    """Blocks along ``axis`` with their entries on the next axis as (n, m, rest), float64."""
    blocks = view.narrow(axis, offset, n).movedim((axis, axis + 1), (0, 1))
    return blocks.reshape(n, m, -1).double()


def _block_similarity(
    spec: PermutationSpec,
    group: str,
    evidence: list[tuple[str, int, int]],
    state_a: StateDict,
    state_b: StateDict,
    perms: Permutations,
    misalign: bool,
) -> torch.Tensor:
    """S[i, j] = the best Σ_d ⟨A's block i entry d, B's block j entry σ(d)⟩ over σ."""
    n, m = spec.groups[group], spec.groups[spec.blocks[group]]
    pairs = torch.zeros(n, n, m, m, dtype=torch.float64)
    for name, axis, offset in evidence:
        a = _block_rows(_spec_view(spec, name, state_a[name]), axis, offset, n, m)
        b = permuted_view(spec, name, state_b[name], perms, skip=(axis, axis + 1))
        pairs += torch.einsum("idk,jek->ijde", a, _block_rows(b, axis, offset, n, m)).cpu()
    sim = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            sim[i, j] = _score(pairs[i, j], assign(pairs[i, j], misalign=misalign))
    return sim


def _score(sim: torch.Tensor, perm: torch.Tensor) -> float:
    return float(sim[torch.arange(len(perm)), perm].sum())


def _update(
    spec: PermutationSpec,
    group: str,
    state_a: StateDict,
    state_b: StateDict,
    perms: Permutations,
    known: Collection[str] | None,
    misalign: bool,
) -> bool:
    """Replace one group's permutation by the best assignment; whether that gained anything."""
    sim = matching_similarity(spec, group, state_a, state_b, perms, known=known, misalign=misalign)
    new = assign(sim, misalign=misalign)
    gain = (_score(sim, new) - _score(sim, perms[group])) * (-1.0 if misalign else 1.0)
    perms[group] = new
    return gain > 1e-9 * max(float(sim.abs().max()), 1.0)


def weight_matching(
    spec: PermutationSpec,
    state_a: StateDict,
    state_b: StateDict,
    *,
    max_iter: int = 100,
    seed: int = 0,
    misalign: bool = False,
    init: Permutations | None = None,
    fixed: Iterable[str] = (),
) -> Permutations:
    """Permutations of B's groups that make its weights most similar to A's (Git Re-Basin).

    Coordinate descent: each sweep visits the groups not in ``fixed`` in a random order drawn
    from ``seed`` and replaces each group's permutation by the linear assignment on
    :func:`matching_similarity`, the others held at their current values. Stops after a sweep
    that improves nothing, or after ``max_iter`` sweeps. With ``misalign`` the similarity is
    minimised instead.

    The first sweep starts from ``init`` (default: the identity) and goes through the groups in
    forward order, each using only the tensors whose other axes are already known (fixed or
    visited). Ainsworth et al. start every group from the identity instead; where the first
    groups' evidence is drowned by tensors whose other axes are still unmatched — a ViT's
    residual stream, read by every block — that start ends in a poor local optimum, and this one
    does not.
    """
    if max_iter < 1:
        raise InvalidArgument("max_iter", f"max_iter must be at least 1, got {max_iter}")
    perms = {g: p.clone() for g, p in (init or identity_permutations(spec)).items()}
    known = set(fixed)
    free = [g for g in spec.groups if g not in known]
    for group in free:
        _update(spec, group, state_a, state_b, perms, known, misalign)
        known.add(group)
    rng = np.random.default_rng(seed)
    for _ in range(max_iter - 1):
        improved = False
        for index in rng.permutation(len(free)):
            improved |= _update(spec, free[index], state_a, state_b, perms, None, misalign)
        if not improved:
            break
    return perms


# --- activation matching -----------------------------------------------------------------------


def _features(output: torch.Tensor, probe: Probe, size: int) -> torch.Tensor:
    """A probe's units as columns: (samples × positions, size), float64."""
    if not isinstance(output, torch.Tensor):
        raise ModeconnError(f"module '{probe.module}' does not output a tensor")
    feats = output.movedim(1, -1) if output.ndim == 4 else output
    return feats.reshape(-1, feats.shape[-1])[:, probe.offset : probe.offset + size].double()


class _CorrelationStats:
    """Running sums for the Pearson correlation between A's and B's units at one probe."""

    def __init__(self, size: int) -> None:
        self.count = 0
        self.sum_a = torch.zeros(size, dtype=torch.float64)
        self.sum_b = torch.zeros(size, dtype=torch.float64)
        self.sq_a = torch.zeros(size, dtype=torch.float64)
        self.sq_b = torch.zeros(size, dtype=torch.float64)
        self.cross = torch.zeros(size, size, dtype=torch.float64)

    def update(self, fa: torch.Tensor, fb: torch.Tensor) -> None:
        fa, fb = fa.cpu(), fb.cpu()
        self.count += fa.shape[0]
        self.sum_a += fa.sum(0)
        self.sum_b += fb.sum(0)
        self.sq_a += fa.pow(2).sum(0)
        self.sq_b += fb.pow(2).sum(0)
        self.cross += fa.T @ fb

    def correlation(self) -> torch.Tensor:
        """corr[i, j] between A's unit i and B's unit j (0 for a unit that never varies)."""
        n = max(self.count, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        std_a = (self.sq_a / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - mean_b**2).clamp_min(0).sqrt()
        cov = self.cross / n - torch.outer(mean_a, mean_b)
        return cov / (torch.outer(std_a, std_b) + 1e-12)


class _OutputRecorder:
    """Forward hooks that keep the latest output of each named module of a model."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            if name not in modules:
                raise ModeconnError(
                    f"the permutation spec probes module '{name}', not in the model"
                )
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self.outputs[name] = output.detach()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def activation_correlations(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec,
    loader: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per probed group, the correlation of A's units with B's, summed over the group's probes.

    Both models run in eval mode on the batches of ``loader`` (``(x, y)`` pairs or bare ``x``).
    """
    probes = {g: p for g, p in spec.probes.items() if p}
    modules = sorted({probe.module for group in probes.values() for probe in group})
    stats = {
        (g, i): _CorrelationStats(spec.groups[g])
        for g, ps in probes.items()
        for i in range(len(ps))
    }
    rec_a, rec_b = _OutputRecorder(model_a, modules), _OutputRecorder(model_b, modules)
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        for step, batch in enumerate(loader):
            if max_batches is not None and step >= max_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            x = x.to(device) if device is not None else x
            model_a(x)
            model_b(x)
            for (group, i), stat in stats.items():
                probe, size = probes[group][i], spec.groups[group]
                stat.update(
                    _features(rec_a.outputs[probe.module], probe, size),
                    _features(rec_b.outputs[probe.module], probe, size),
                )
    finally:
        rec_a.remove()
        rec_b.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    corr: dict[str, torch.Tensor] = {}
    for (group, _), stat in stats.items():
        corr[group] = corr.get(group, 0) + stat.correlation()
    return corr


def activation_matching(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec,
    loader: Iterable[Any],
    *,
    misalign: bool = False,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    max_iter: int = 100,
    seed: int = 0,
) -> Permutations:
    """Permutations of B's groups that make its units' features most correlated with A's.

    One linear assignment per probed group on :func:`activation_correlations`; the groups
    without probes are then matched on weights (:func:`weight_matching`) with the probed ones
    fixed. ``misalign`` minimises the correlation (and the weight similarity) instead.
    """
    corr = activation_correlations(
        model_a, model_b, spec, loader, device=device, max_batches=max_batches
    )
    perms = identity_permutations(spec)
    for group, sim in corr.items():
        perms[group] = assign(sim, misalign=misalign)
    if len(corr) < len(spec.groups):
        perms = weight_matching(
            spec,
            model_a.state_dict(),
            model_b.state_dict(),
            max_iter=max_iter,
            seed=seed,
            misalign=misalign,
            init=perms,
            fixed=corr,
        )
    return perms


# --- the straight segment ----------------------------------------------------------------------


@dataclass
class SegmentEvaluation:
    """Test loss, accuracy and error at evenly spaced t on the segment, and its barrier."""

    rows: list[dict[str, float]]
    barrier: float

    @property
    def test_errors(self) -> list[float]:
        return [row["test_error"] for row in self.rows]


def segment_barrier(
    model: nn.Module,
    state_a: StateDict,
    state_b: StateDict,
    test_loader: Iterable[Any],
    *,
    bn_loader: Iterable[Any] | None = None,
    points: int = 11,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "segment",
) -> SegmentEvaluation:
    """Evaluate (1 − t)·θ_A + t·θ_B at ``points`` evenly spaced t on ``test_loader``.

    ``model`` is any instance of the architecture (its weights are not used). With BatchNorm,
    the statistics at every point are recomputed from ``bn_loader`` (training data, never the
    test set). The barrier is the largest test error minus the larger endpoint error, as
    ``barrier_test_error`` in :func:`~modeconn.connectivity.evaluate.path_summary`.
    """
    if bn_loader is None and has_batchnorm(model):
        raise ModeconnError(
            "the model has BatchNorm: its statistics along the segment need a bn_loader"
        )
    line = segment(model, state_a, state_b)
    ts = ts_grid(points)
    rows = []
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=len(ts), status="")
        for t in ts:
            res = evaluate_model(line.model_at(t, bn_loader, device), test_loader, device)
            rows.append(
                {
                    "t": t,
                    "test_loss": res["loss"],
                    "test_acc": res["acc"],
                    "test_error": 1 - res["acc"],
                }
            )
            bar.update(task, advance=1, status=f"t {t:.2f} test error {1 - res['acc']:.3f}")
    return SegmentEvaluation(rows, barrier_height([r["test_error"] for r in rows]))


def weight_distance(
    state_a: StateDict, state_b: StateDict, names: Sequence[str] | None = None
) -> float:
    """The Euclidean distance ‖θ_A − θ_B‖ over the tensors ``names`` (default: all float ones)."""
    if names is None:
        names = [n for n, t in state_a.items() if t.is_floating_point()]
    total = sum(float((state_a[n].double() - state_b[n].double()).pow(2).sum()) for n in names)
    return total**0.5


__all__ = [
    "SegmentEvaluation",
    "activation_correlations",
    "activation_matching",
    "assign",
    "matching_similarity",
    "segment_barrier",
    "weight_distance",
    "weight_matching",
]

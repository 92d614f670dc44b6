"""Seeded, class-stratified subsets of the training split: validation, bonafide data, holdout.

The test split is never touched here: reported figures always come from the data set's own test
split, and the bonafide data (the small clean set a defender is assumed to own) is drawn from the
training split only, as in Zhao et al. (2020).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from modeconn.errors import InvalidArgument, ModeconnError

if TYPE_CHECKING:  # the registry reads folders, whose test split is drawn here
    from modeconn.data.registry import RawDataset

# Offsets that give each draw of make_splits its own random stream from one seed.
_VAL_STREAM, _BONAFIDE_STREAM, _HOLDOUT_STREAM = 0, 1, 2


def _requested_count(n_or_fraction: int | float, pool_size: int) -> int:
    """Turn a count (int ≥ 0) or a fraction in (0, 1) of ``pool_size`` into a count."""
    if isinstance(n_or_fraction, bool):
        raise InvalidArgument(
            None, f"subset size must be a count or a fraction, not {n_or_fraction!r}"
        )
    if isinstance(n_or_fraction, int):
        if n_or_fraction < 0:
            raise InvalidArgument(None, f"subset size must be non-negative, got {n_or_fraction}")
        n = n_or_fraction
    elif isinstance(n_or_fraction, float):
        if not 0.0 < n_or_fraction < 1.0:
            raise InvalidArgument(
                None, f"a fractional subset size must lie in (0, 1), got {n_or_fraction}"
            )
        n = round(n_or_fraction * pool_size)
    else:
        raise InvalidArgument(None, f"subset size must be an int or a float, got {n_or_fraction!r}")
    if n > pool_size:
        raise ModeconnError(f"asked for {n} samples but only {pool_size} are available")
    return n


def _class_quotas(class_counts: torch.Tensor, n: int) -> torch.Tensor:
    """Split ``n`` over classes in proportion to ``class_counts`` (largest-remainder rounding)."""
    total = int(class_counts.sum())
    exact = class_counts.double() * n / total
    quotas = exact.floor().long()
    shortfall = n - int(quotas.sum())
    if shortfall:
        # Stable sort: ties go to the lower class index, so the result is deterministic.
        order = torch.sort(exact - quotas, descending=True, stable=True).indices
        quotas[order[:shortfall]] += 1
    return quotas


def stratified_indices(
    labels: torch.Tensor,
    n_or_fraction: int | float,
    seed: int,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw a class-stratified random subset of ``range(len(labels))``, sorted ascending.

    ``n_or_fraction`` is a count (int) or a fraction in (0, 1) of the pool, the pool being every
    index not in ``exclude``. Each class gets its proportional share (largest-remainder rounding),
    so class frequencies match the pool's. The same ``seed`` gives the same subset.
    """
    labels = torch.as_tensor(labels).long().reshape(-1)
    pool_mask = torch.ones(labels.numel(), dtype=torch.bool)
    if exclude is not None:
        pool_mask[torch.as_tensor(exclude, dtype=torch.long)] = False
    pool = pool_mask.nonzero().squeeze(1)
    n = _requested_count(n_or_fraction, pool.numel())
    if n == 0:
        return torch.empty(0, dtype=torch.long)

    classes, pool_labels = torch.unique(labels[pool], return_inverse=True)
    quotas = _class_quotas(torch.bincount(pool_labels, minlength=classes.numel()), n)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for class_index, quota in enumerate(quotas.tolist()):
        members = pool[pool_labels == class_index]
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


@dataclass
class DataSplits:
    """Index tensors into the training split of a :class:`RawDataset`.

    ``train`` and ``val`` partition the training split; ``bonafide`` and ``bonafide_holdout`` are
    disjoint subsets of ``train`` (empty when no bonafide data was requested). The holdout is kept
    aside for choosing the point t on a repaired path.
    """

    train: torch.Tensor
    val: torch.Tensor
    bonafide: torch.Tensor
    bonafide_holdout: torch.Tensor


def _empty() -> torch.Tensor:
    return torch.empty(0, dtype=torch.long)


def make_splits(
    raw: RawDataset,
    val_size: int | float = 0,
    bonafide: int | float | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """Split the training split into train/val; draw the bonafide subset (with holdout) from train.

    ``val_size`` and ``bonafide`` are counts or fractions; a fractional ``bonafide`` is a fraction
    of the training indices left after removing val. ``holdout_fraction`` of the bonafide subset
    (also stratified) becomes ``bonafide_holdout``; 0 keeps all of it in ``bonafide``.
    """
    if not 0 <= holdout_fraction < 1:
        raise InvalidArgument(
            "holdout_fraction", f"holdout_fraction must lie in [0, 1), got {holdout_fraction}"
        )
    labels = raw.train_y
    val = stratified_indices(labels, val_size, seed + _VAL_STREAM) if val_size else _empty()
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[val] = False
    train = keep.nonzero().squeeze(1)
    if bonafide is None:
        return DataSplits(train, val, _empty(), _empty())

    chosen = stratified_indices(labels, bonafide, seed + _BONAFIDE_STREAM, exclude=val)
    if holdout_fraction == 0:
        return DataSplits(train, val, chosen, _empty())
    held = chosen[
        stratified_indices(labels[chosen], float(holdout_fraction), seed + _HOLDOUT_STREAM)
    ]
    in_holdout = torch.isin(chosen, held)
    return DataSplits(train, val, chosen[~in_holdout], held)

"""Trigger unlearning batches: synthesized triggers stamped on part of each batch, true labels
kept."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modeconn.defenses.scan.kinds import TriggerSet
from modeconn.errors import InvalidArgument


class UnlearningTransform:
    """A loader transform for trigger unlearning: stamps synthesized triggers on part of each
    batch and keeps the true labels, so training teaches the model to ignore them.

    Each image draws one of three disjoint shares:

    - ``rate``: the trigger of one of ``classes`` (the flagged ones; every class when None);
    - ``uniform_rate``: the trigger of a random class other than the image's own (stamping an
      image with its own class's trigger teaches nothing);
    - ``untargeted_rate``: one of the ``untargeted`` universal label flippers (see
      :func:`synthesize_triggers`), which need no verdict about a class and cover backdoors whose
      target depends on the label (all-to-all).

    ``triggers`` may be replaced between epochs. Draws use the global RNG, which the training loop
    re-seeds every epoch.
    """

    def __init__(
        self,
        triggers: Sequence[TriggerSet],
        rate: float = 0.3,
        classes: Sequence[int] | None = None,
        uniform_rate: float = 0.0,
        untargeted: Sequence[TriggerSet] = (),
        untargeted_rate: float = 0.0,
    ) -> None:
        shares = (rate, uniform_rate, untargeted_rate)
        if min(shares) < 0.0 or not 0.0 < sum(shares) <= 1.0:
            raise InvalidArgument(
                None,
                "unlearning shares must be non-negative and add up to a value in (0, 1], got "
                f"rate {rate}, uniform_rate {uniform_rate}, untargeted_rate {untargeted_rate}",
            )
        if not triggers:
            raise InvalidArgument(None, "unlearning needs at least one set of synthesized triggers")
        if untargeted_rate > 0 and not untargeted:
            raise InvalidArgument(None, "an untargeted share needs untargeted triggers")
        self.triggers = list(triggers)
        self.untargeted = list(untargeted)
        self.rate = rate
        self.uniform_rate = uniform_rate
        self.untargeted_rate = untargeted_rate
        self.classes = list(classes) if classes else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        draw = torch.rand(x.shape[0])
        per_class = draw < self.rate + self.uniform_rate
        universal = (~per_class) & (draw < self.rate + self.uniform_rate + self.untargeted_rate)
        if not bool(per_class.any() or universal.any()):
            return x, y
        x = x.clone()
        if bool(per_class.any()):
            idx = per_class.nonzero().squeeze(1)
            num_classes = self.triggers[0].num_classes
            # any class but the image's own: draw from the other K−1
            k = (y[idx].cpu() + torch.randint(1, num_classes, (idx.numel(),))) % num_classes
            if self.classes:  # the first ``rate`` of the draw goes to the flagged classes
                pool = torch.tensor(self.classes)
                chosen = pool[torch.randint(0, len(pool), (idx.numel(),))]
                k = torch.where(draw[idx] < self.rate, chosen, k)
            self._stamp(x, idx, k, self.triggers)
        if bool(universal.any()):
            idx = universal.nonzero().squeeze(1)
            self._stamp(x, idx, torch.zeros(idx.numel(), dtype=torch.long), self.untargeted)
        return x, y

    @staticmethod
    def _stamp(
        x: torch.Tensor, idx: torch.Tensor, k: torch.Tensor, triggers: Sequence[TriggerSet]
    ) -> None:
        """Stamp rows ``idx`` of ``x`` in place, each with class ``k``'s trigger of a random set."""
        which = torch.randint(0, len(triggers), (idx.numel(),))
        for j, trig in enumerate(triggers):
            sel = which == j
            if bool(sel.any()):
                rows = idx[sel].to(x.device)
                x[rows] = trig.apply(x[rows], k[sel].to(x.device))

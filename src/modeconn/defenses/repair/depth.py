"""How deep a repair goes: the backdoor-connected path (Min et al., NeurIPS 2024).

Along the straight line in weight space from a repaired model (t = 0) back to the tampered one
(t = 1), a *superficial* repair stays in the backdoored basin: the ASR comes back after a short
step towards the tampered model. A *deep* one has left that basin: the ASR stays low for most of
the line and rises only near its end. :func:`backdoor_connected_path` measures clean accuracy
and ASR at evenly spaced points (BatchNorm statistics recomputed on the bonafide data at each,
as on every path of the project); :func:`backdoor_t` reduces the table to one figure, the first
t at which the ASR exceeds one half.

It needs the trigger, so it is a report only: the choice of a repair never reads it.
"""

from __future__ import annotations

import torch
from torch import nn

from modeconn.attacks.backdoor import TriggerSpec, backdoor_metrics
from modeconn.connectivity import segment
from modeconn.data.prepare import PreparedData
from modeconn.training import evaluate_model

#: The ASR above which a point of the line counts as backdoored.
BACKDOOR_THRESHOLD = 0.5


def backdoor_connected_path(
    model: nn.Module,
    tampered: nn.Module,
    data: PreparedData,
    trigger: TriggerSpec,
    *,
    points: int = 11,
    test_limit: int | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, float]]:
    """One row per t = 0, 1/(points−1), …, 1 on the segment from ``model`` to ``tampered``:
    ``t, test_loss, test_acc`` and the backdoor's ``asr``/``poisoned_acc``, on ``test_limit``
    stratified test images (None: all; the same images at every t).

    Only the test figures are measured (no bonafide columns, as :func:`~modeconn.connectivity.
    evaluate_path` would add), so a line costs two passes over ``test_limit`` images per point.
    The models are not changed, and the global random state is left as it was found (BatchNorm
    passes run in train mode, where dropout would draw), so measuring the line changes no other
    figure of a repair.
    """
    dev = torch.device(device)
    line = segment(model, model.state_dict(), tampered.state_dict()).to(dev)
    bn = data.eval_loader("bonafide", device=dev)
    test = data.eval_loader("test", device=dev, limit=test_limit)
    rows = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for t in (i / (points - 1) for i in range(points)):
            point = line.model_at(t, bn_loader=bn, device=dev)
            clean = evaluate_model(point, test, dev)
            row = {"t": t, "test_loss": clean["loss"], "test_acc": clean["acc"]}
            rows.append(row | backdoor_metrics(point, test, trigger, dev))
    return rows


def backdoor_t(rows: list[dict[str, float]], threshold: float = BACKDOOR_THRESHOLD) -> float | None:
    """The first t of the line at which the ASR exceeds ``threshold`` (None: it never does).

    >>> backdoor_t([{"t": 0.0, "asr": 0.02}, {"t": 0.5, "asr": 0.6}, {"t": 1.0, "asr": 0.99}])
    0.5
    """
    return next((row["t"] for row in rows if row["asr"] > threshold), None)


__all__ = ["BACKDOOR_THRESHOLD", "backdoor_connected_path", "backdoor_t"]

"""Figures of a backdoor scan: the synthesized trigger of every class and the universal
label-flipping one, flagged ones in red."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modeconn.defenses.scan import KINDS, ScanResult
from modeconn.report.plots import save_figure


def plot_triggers(
    path: str | Path, result: ScanResult, kind: str, class_names: list[str] | None = None
) -> Path:
    """One panel per class: the trigger of ``kind`` (mask × pattern, or the perturbation scaled
    to [0, 1] around grey), titled with the class, its size and its anomaly index; where the scan
    synthesized an untargeted trigger of ``kind`` too, a last panel shows it with its size and
    the model's untargeted index."""
    trig = result.triggers[kind]
    k = trig.num_classes
    flipper = result.untargeted.get(kind)
    panels = k + (flipper is not None)
    cols = min(panels, 10)
    rows = (panels + cols - 1) // cols
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows + 0.4), layout="constrained")
    label = KINDS[kind].description
    fig.suptitle(f"synthesized {kind} triggers: {label}; {result.verdict()}", fontsize=8)
    for c in range(k):
        name = class_names[c] if class_names else str(c)
        _panel(
            fig.add_subplot(rows, cols, c + 1),
            trig.image(c),
            f"{name}\n{float(trig.size[c]):.1f} · idx {result.index[kind][c]:.1f}",
            flagged=c in result.flagged_classes,
        )
    if flipper is not None:
        index = result.untargeted_index
        _panel(
            fig.add_subplot(rows, cols, panels),
            flipper.image(0),
            f"any → other\n{float(flipper.size[0]):.1f}"
            + ("" if index is None else f" · idx {index:.1f}"),
            flagged=result.untargeted_flagged,
        )
    return save_figure(fig, path)


def _panel(ax: Axes, image: torch.Tensor, title: str, *, flagged: bool) -> None:
    """One trigger image, titled; framed in red when it is a finding."""
    img = image.clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=7, color="red" if flagged else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    if flagged:
        for spine in ax.spines.values():
            spine.set_edgecolor("red")
            spine.set_linewidth(2)

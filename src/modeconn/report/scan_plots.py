"""Figures of a backdoor scan: the synthesized trigger of every class and the universal
label-flipping one, flagged ones in red.

The panels are tiles of one image in one axes (titles as text, findings framed by rectangles)
rather than one axes per class: a repair writes 20 of these figures (four kinds for each of five
scans), and Matplotlib's subplots with a constrained layout took 1.0 and 1.5 s a figure against
0.5 s for the tiles (Fashion-MNIST, 11 panels, one core, the two side by side in one process on
a machine busy with other jobs, medians of six figures each in two runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from modeconn.defenses.scan import KINDS, ScanResult
from modeconn.report.plots import save_figure

#: A panel's cell relative to its image: room for the two-line title above, a gap beside.
CELL_WIDTH, CELL_HEIGHT = 1.25, 1.6
#: Inches above the tiles for the figure's title.
TITLE_HEIGHT = 0.35


@dataclass(frozen=True)
class Panel:
    """One tile of the figure: an image (C×H×W in [0, 1]), its title, red when a finding."""

    image: torch.Tensor
    title: str
    flagged: bool


def trigger_panels(result: ScanResult, kind: str, class_names: list[str] | None) -> list[Panel]:
    """One panel per class, titled with the class, its trigger's size and its anomaly index;
    the untargeted trigger of ``kind`` last when the scan synthesized one."""
    trig = result.triggers[kind]
    panels = [
        Panel(
            trig.image(c),
            f"{class_names[c] if class_names else c}\n"
            f"{float(trig.size[c]):.1f} · idx {result.index[kind][c]:.1f}",
            c in result.flagged_classes,
        )
        for c in range(trig.num_classes)
    ]
    flipper = result.untargeted.get(kind)
    if flipper is not None:
        index = result.untargeted_index
        title = f"any → other\n{float(flipper.size[0]):.1f}" + (
            "" if index is None else f" · idx {index:.1f}"
        )
        panels.append(Panel(flipper.image(0), title, result.untargeted_flagged))
    return panels


def plot_triggers(
    path: str | Path, result: ScanResult, kind: str, class_names: list[str] | None = None
) -> Path:
    """The trigger of ``kind`` for every class (mask × pattern, or the perturbation scaled to
    [0, 1] around grey), titled with the class, its size and its anomaly index; where the scan
    synthesized an untargeted trigger of ``kind`` too, a last panel shows it with its size and
    the model's untargeted index."""
    title = f"synthesized {kind} triggers: {KINDS[kind].description}; {result.verdict()}"
    return save_figure(tiled_figure(trigger_panels(result, kind, class_names), title), path)


def _rgb(image: torch.Tensor) -> np.ndarray:
    """H×W×3 in [0, 1] from a C×H×W image (grey repeated)."""
    img = image.detach().float().clamp(0, 1).cpu()
    return (img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]).permute(1, 2, 0).numpy()


def tiled_figure(panels: list[Panel], title: str, columns: int = 10) -> Figure:
    """The panels as tiles of one image on a white canvas, ``columns`` to a row."""
    height, width = panels[0].image.shape[-2:]
    cols = min(len(panels), columns)
    rows = (len(panels) + cols - 1) // cols
    cell_w, cell_h = round(width * CELL_WIDTH), round(height * CELL_HEIGHT)
    canvas = np.ones((rows * cell_h + 2, cols * cell_w, 3))
    fig_width = 1.6 * cols
    image_height = fig_width * canvas.shape[0] / canvas.shape[1]
    fig = Figure(figsize=(fig_width, image_height + TITLE_HEIGHT))
    fig.suptitle(title, fontsize=8, y=1.0 - 0.1 / (image_height + TITLE_HEIGHT), va="top")
    ax = fig.add_axes((0.0, 0.0, 1.0, image_height / (image_height + TITLE_HEIGHT)))
    for i, panel in enumerate(panels):
        left = (i % cols) * cell_w + (cell_w - width) // 2
        top = (i // cols) * cell_h + cell_h - height
        canvas[top : top + height, left : left + width] = _rgb(panel.image)
        color = "red" if panel.flagged else "black"
        ax.text(left + width / 2, top - 1, panel.title, ha="center", va="bottom", fontsize=7,
                color=color)  # fmt: skip
        if panel.flagged:
            frame = (left - 0.5, top - 0.5)
            ax.add_patch(Rectangle(frame, width, height, fill=False, edgecolor="red", lw=2))
    ax.imshow(canvas, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    return fig


__all__ = ["Panel", "plot_triggers", "tiled_figure", "trigger_panels"]

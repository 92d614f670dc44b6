"""Figures of a backdoor scan: the synthesized trigger of every class, flagged ones in red."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from modeconn.defenses.scan import ScanResult
from modeconn.report.plots import save_figure


def plot_triggers(
    path: str | Path, result: ScanResult, kind: str, class_names: list[str] | None = None
) -> Path:
    """One panel per class: the trigger of ``kind`` (mask × pattern, or the perturbation scaled
    to [0, 1] around grey), titled with the class, its size and its anomaly index."""
    trig = result.triggers[kind]
    k = trig.num_classes
    cols = min(k, 10)
    rows = (k + cols - 1) // cols
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows + 0.4), layout="constrained")
    label = "mask × pattern (size ‖m‖₁)" if kind == "mask" else "perturbation (size ‖δ‖₂)"
    fig.suptitle(f"synthesized {kind} triggers: {label}; {result.verdict()}", fontsize=8)
    for c in range(k):
        ax = fig.add_subplot(rows, cols, c + 1)
        img = trig.image(c).clamp(0, 1)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        name = class_names[c] if class_names else str(c)
        flagged = c in result.flagged_classes
        ax.set_title(
            f"{name}\n{float(trig.size[c]):.1f} · idx {result.index[kind][c]:.1f}",
            fontsize=7,
            color="red" if flagged else "black",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if flagged:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
    return save_figure(fig, path)

"""The repair's comparison table in Markdown."""

from __future__ import annotations

from collections.abc import Sequence

from modeconn.defenses.repair import HOLDOUT, Candidate

OPTIONAL_COLUMNS = ("eot_asr", "retuning_asr", "max_anomaly_index", "untargeted_index")


def comparison_markdown(candidates: Sequence[Candidate], key: str | None) -> str:
    """The comparison table: clean and held-out accuracy, the attack's figure, the adaptive and
    retuning attacks' ASR and the scan's largest anomaly index, one row per model."""
    cols = (
        ["clean_acc", HOLDOUT]
        + ([key] if key else [])
        + [k for k in OPTIONAL_COLUMNS if any(k in c.metrics for c in candidates)]
    )
    head = "| model | " + " | ".join(cols) + " | detail |"
    sep = "|---|" + "---:|" * len(cols) + "---|"
    rows = []
    for c in candidates:
        vals = [f"{c.metrics[k]:.4f}" if k in c.metrics else "" for k in cols]
        rows.append(f"| {c.name} | " + " | ".join(vals) + f" | {c.detail} |")
    return "\n".join([head, sep, *rows]) + "\n"

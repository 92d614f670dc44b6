"""The repair's comparison table in Markdown."""

from __future__ import annotations

from collections.abc import Sequence

from modeconn.defenses.repair import HOLDOUT, Candidate

OPTIONAL_COLUMNS = (
    "eot_asr",
    "retuning_asr",
    "max_anomaly_index",
    "untargeted_index",
    "backdoor_t",
)
#: The retuning attack's further strengths (``retuning_asr@N``), after its default.
RETUNING_SWEEP = "retuning_asr@"


def optional_columns(candidates: Sequence[Candidate]) -> list[str]:
    """The optional figures some row holds, in :data:`OPTIONAL_COLUMNS`' order with the
    retuning attack's further strengths after its default."""
    names: list[str] = []
    for name in OPTIONAL_COLUMNS:
        names.append(name)
        if name == "retuning_asr":
            keys = (k for c in candidates for k in c.metrics if k.startswith(RETUNING_SWEEP))
            names += list(dict.fromkeys(keys))
    return [k for k in names if any(k in c.metrics for c in candidates)]


def comparison_markdown(candidates: Sequence[Candidate], key: str | None) -> str:
    """The comparison table: clean and held-out accuracy, the attack's figure, the adaptive and
    retuning attacks' ASR, the scan's largest anomaly index and the t at which the backdoor
    returns on the line back to the tampered model, one row per model."""
    cols = ["clean_acc", HOLDOUT] + ([key] if key else []) + optional_columns(candidates)
    head = "| model | " + " | ".join(cols) + " | detail |"
    sep = "|---|" + "---:|" * len(cols) + "---|"
    rows = []
    for c in candidates:
        vals = [f"{c.metrics[k]:.4f}" if k in c.metrics else "" for k in cols]
        rows.append(f"| {c.name} | " + " | ".join(vals) + f" | {c.detail} |")
    return "\n".join([head, sep, *rows]) + "\n"

"""Candidate ``NC-unlearning``: the tampered model A fine-tuned on bonafide batches stamped with
the scan's synthesized triggers, true labels kept (Neural Cleanse's unlearning)."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class NCUnlearning:
    """A unlearnt (the endpoint the unlearning path starts from)."""

    name: ClassVar[str] = "NC-unlearning"
    method: ClassVar[str] = "unlearn"
    in_auto: ClassVar[bool] = True

    def build(self, context: RepairContext) -> Built:
        a, _ = context.unlearnt_endpoints()
        return Built(a, "A unlearnt")

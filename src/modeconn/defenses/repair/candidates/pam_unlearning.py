"""Candidate ``PAM unlearning``: the tampered model unlearnt on the scan's stamped batches with
path-aware steps (:mod:`modeconn.defenses.pam`; Min et al., NeurIPS 2024), so that the line from
the returned model back to the tampered one stays free of the backdoor for longer."""

from __future__ import annotations

from typing import ClassVar

from modeconn.defenses.pam import PathAwareObjective
from modeconn.defenses.repair.context import RepairContext
from modeconn.defenses.repair.results import Built


class PAMUnlearning:
    """A unlearnt with each gradient taken ``pam_rho`` towards the tampered model."""

    name: ClassVar[str] = "PAM unlearning"
    method: ClassVar[str] = "pam"
    in_auto: ClassVar[bool] = False

    def build(self, context: RepairContext) -> Built:
        config = context.config
        tampered = context.tampered.model
        objective = PathAwareObjective(tampered, config.pam_rho)
        model = context.unlearn(
            tampered, context.endpoint_scans(), "unlearn_pam", config.seed, objective
        )
        return Built(model, f"A unlearnt with path-aware steps (ρ = {config.pam_rho:g})")

"""What a repair can vouch for without the trigger: the warnings that lead its output.

A user who does not know the trigger has one piece of evidence that a repair worked: the scan
finds a backdoor in the tampered model and none in the returned one. When either half is
missing the repair must say so before anything else, instead of presenting the returned model
as a success:

- the scan finds nothing in the tampered model(s): nothing was found to unlearn, and a clean scan
  of the returned model then says nothing about whether a backdoor is left (issue: a patch on the
  object, scanned with another draw of bonafide images, kept ASR 0.24 after a repair that
  reported no backdoor in either model);
- the scan finds a label flipper and no class, and a class sat near the threshold: the flipper
  was unlearnt and the near class was not, and it may be a missed target
  (:func:`near_class_warning`);
- the scan flags every candidate: the choice falls back to the least suspicious one
  (:func:`~modeconn.defenses.repair.choice.choose_candidate`), and the repair may not have worked.

The test set's ASR, when the attack is known, is a measurement the user could not make in the
threat model; it may accompany a warning but never lifts it.
"""

from __future__ import annotations

from modeconn.defenses.repair.results import ENDPOINT_B, TAMPERED, RepairResult
from modeconn.defenses.scan import ScanResult

#: Said when the attack's figure could not be measured (no trigger or injection spec is known).
ATTACK_NOT_MEASURED = (
    "ASR is not measured: the trigger is unknown, so only the scan's verdicts speak for the repair"
)


def nothing_found_warning(result: RepairResult) -> str | None:
    """The warning when no tampered model's scan finds a backdoor (flagged class or untargeted
    label flipper); None when one does. In the two-model set-up either endpoint's finding counts,
    since both endpoints' triggers are unlearnt."""
    scans = [result.scans[name] for name in (TAMPERED, ENDPOINT_B) if name in result.scans]
    if any(scan.backdoor_found for scan in scans):
        return None
    models = "either tampered model" if len(scans) > 1 else "the tampered model"
    return (
        f"The scan found no backdoor in {models}, {_unlearnt(result.precautions)} "
        "and the result cannot be verified without the trigger; do not take the returned model "
        "as repaired." + _near_threshold(scans)
    )


def _unlearnt(precautions: list[int]) -> str:
    """What was unlearnt when the scan found nothing: nothing, or the near-threshold classes."""
    if not precautions:
        return "so nothing was found to unlearn"
    classes = ", ".join(str(k) for k in precautions)
    return (
        f"so nothing was found to unlearn (class {classes}, near the threshold, was unlearnt "
        "as a precaution)"
    )


def _near_threshold(scans: list[ScanResult]) -> str:
    """A sentence when the scan took a second look (its first draw lay near the threshold):
    a backdoor cannot be ruled out there (the zoo's held-out backdoors that changed verdict
    with the seed all sat there, and most models whose pooled verdict stayed under the
    threshold after a second look were backdoored)."""
    looked = [scan for scan in scans if scan.draw_suspicions]
    if not looked:
        return ""
    scan = max(looked, key=lambda s: s.suspicion)
    return (
        f" The evidence was near the threshold (class {scan.top_class}, suspicion "
        f"{scan.suspicion:.2f} over {len(scan.draw_suspicions)} draws, where 1 is flagged): "
        "a backdoor cannot be ruled out."
    )


def all_flagged_warning(result: RepairResult) -> str | None:
    """The warning when the scan flags every candidate, the returned one included; None when
    at least one candidate passes."""
    flagged = [c for c in result.candidates if result.scans[c.name].backdoor_found]
    if not result.candidates or len(flagged) < len(result.candidates):
        return None
    chosen = result.chosen.name
    where = (
        f"every candidate, the returned {chosen} included"
        if len(result.candidates) > 1
        else f"the returned model ({chosen})"
    )
    return (
        f"The scan still finds a backdoor in {where} "
        f"({result.scans[chosen].verdict()}); the repair may not have worked."
    )


def near_class_warning(result: RepairResult) -> str | None:
    """The warning when the scans found a label flipper and no class, and a class near the
    threshold was left as it was (:attr:`RepairResult.near_beside_flipper`); None otherwise.
    A flipper is what an all-to-all backdoor leaves, but also what some all-to-one triggers do
    whose target the scan misses: a held-out warp ResNet gave a flipper and its true target at
    0.83 of the threshold, and its repair, verified on the flipper, kept ASR 0.098."""
    if not result.near_beside_flipper:
        return None
    scans = [result.scans[name] for name in (TAMPERED, ENDPOINT_B) if name in result.scans]
    near = ", ".join(
        f"class {k} at {max(scan.class_evidence[k] for scan in scans):.2f}"
        for k in result.near_beside_flipper
    )
    classes = ",".join(str(k) for k in result.near_beside_flipper)
    return (
        "The scan found a universal label flipper and flagged no class, and the flipper was "
        f"unlearnt; {near} of the threshold was not. An all-to-one backdoor whose target the "
        "scan missed can look like this, so the result cannot be verified without the trigger; "
        f"to unlearn the class as well, repair again with --unlearn-class {classes}."
    )


def repair_warnings(result: RepairResult) -> list[str]:
    """What the repair could not verify without the trigger, one sentence each, the most
    fundamental first; empty when the scan found a backdoor in the tampered model(s) and the
    returned model passes it (the repair is then *verified*)."""
    found = (
        nothing_found_warning(result),
        near_class_warning(result),
        all_flagged_warning(result),
    )
    return [text for text in found if text is not None]

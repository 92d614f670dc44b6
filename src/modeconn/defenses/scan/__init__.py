"""Backdoor scan from bonafide data only: trigger synthesis per class and an anomaly index.

For every class k the scan looks for the smallest input change that sends bonafide images of the
*other* classes to k. A backdoor is such a change by construction — the attacker's trigger — so
the target class of a backdoored model needs a much smaller one than the other classes.

Four kinds of synthesized trigger, optimised for all classes at once (one batched forward pass
of ``classes × batch`` images per step):

- ``mask`` (Neural Cleanse, Wang et al. S&P 2019): x' = (1 − m)·x + m·p with a mask
  m ∈ [0, 1]^{H×W} and a pattern p ∈ [0, 1]^{C×H×W}; size = ‖m‖₁. Finds patch-like triggers.
- ``perturbation``: a universal additive change x' = clip(x + δ) with size ‖δ‖₂. Finds dense
  triggers (blended patterns, warps), whose masks would cover the whole image.
- ``blend``: a whole image blended in, x' = (1 − α)·x + α·p, with size α. Finds blended
  triggers (Chen et al. 2017) as the attacker stamps them: dimming the image and adding a
  pattern in proportion. Its triggers are what unlearning needs against a blend: on the zoo's
  blend-backdoored MLP, NC-unlearning and distillation left ASR 0.059 and 0.071 without them,
  0.046 and 0.049 with them (2,500 images).
- ``warp``: a smooth geometric warp (WaNet-style triggers), size ‖flow‖₂.

Both minimise CE(f(x'), k) + λ_k·size with a per-class weight λ_k tuned as in Neural Cleanse: it
grows while the trigger reaches the success target and shrinks while it does not, and the smallest
trigger that reached the target is kept.

Each kind is a :class:`~modeconn.defenses.scan.kinds.TriggerKind` object (its parameters, how it
is stamped, its size) registered in :data:`~modeconn.defenses.scan.kinds.KINDS`; one
optimisation loop (:func:`~modeconn.defenses.scan.synthesis.optimise_triggers`) serves every
kind and both goals (targeted and untargeted).

**Untargeted index.** A backdoor whose target depends on the label (all-to-all: y → y+1)
gives no class a small trigger, but its trigger moves images of every class off their label.
Per kind the scan also synthesizes one universal *untargeted* trigger (the smallest that moves
``untargeted_success`` of all images anywhere but their own label) and reports
log(median class size / untargeted size), averaged over the pixel kinds and maxed with the
blend kind's; a model is flagged when it
exceeds ``untargeted_threshold`` (1.0: clean Fashion-MNIST lenets −0.3, all-to-all ones 1.6–1.8,
README). :attr:`ScanResult.backdoor_found` is either finding.

**Second look.** A first draw near the threshold (``confirm_band``) is followed by
``confirm_draws`` more draws of the synthesis, and the verdict is decided on their averaged
indices (:mod:`~modeconn.defenses.scan.draws`): one draw's verdict changed with the seed on 5
of the zoo's 11 held-out backdoors.

**Anomaly index.** Per kind, the sizes are compared across classes on a log scale (a trigger
half the usual size is as suspicious on a large class as on a small one) by the median absolute
deviation: index_k = (median(r) − r_k) / (1.4826·MAD(r)) with r_k = log size_k. Only small
triggers are suspicious, so only the low side counts. A class's anomaly index is the mean of its
indices over the kinds, and a class is flagged when that exceeds ``threshold`` (default 3).

Calibration (Fashion-MNIST lenets, 512 bonafide images, 150 steps; README): classes have natural
trigger sizes — "bag" needs a small mask in every model, which is what flags clean models under
plain Neural Cleanse (linear sizes, mask only, threshold 2). On the log scale, averaged over both
kinds, three clean models stayed at or below 2.6 while the targets of three patch and two blend
backdoors scored 3.4 to 9.2 (the README's calibration table; a warp target scored 2.4 and was
missed). A *reference* model that cannot carry the backdoor (e.g. one trained from scratch on the
bonafide data) can be given instead: each class is then compared with itself first,
r_k = log(size_k / size_k(reference)). It cancels natural sizes in principle, but on Fashion-MNIST
its own noise made it flag clean models more often than the log scale alone, so it is an option,
not the default.

Everything here works on tensors and modules in memory; :mod:`modeconn.commands` (``modeconn
scan``) owns the run directory, the reference training and the PNG images.
"""

from modeconn.defenses.scan.anomaly import (
    MAD_SCALE,
    ScanResult,
    anomaly_index,
    scan_images,
    untargeted_index,
)
from modeconn.defenses.scan.draws import scan_model
from modeconn.defenses.scan.kinds import (
    KINDS,
    TRIGGER_KINDS,
    MaskTrigger,
    PerturbationTrigger,
    TriggerKind,
    TriggerSet,
)
from modeconn.defenses.scan.synthesis import ScanConfig, check_scan_data, synthesize_triggers
from modeconn.defenses.scan.unlearning_transform import UnlearningTransform

__all__ = [
    "KINDS",
    "MAD_SCALE",
    "TRIGGER_KINDS",
    "MaskTrigger",
    "PerturbationTrigger",
    "ScanConfig",
    "ScanResult",
    "TriggerKind",
    "TriggerSet",
    "UnlearningTransform",
    "anomaly_index",
    "check_scan_data",
    "scan_images",
    "scan_model",
    "synthesize_triggers",
    "untargeted_index",
]

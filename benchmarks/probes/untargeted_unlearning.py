"""Probe: which stamped triggers unlearn an all-to-all backdoor (README, "How repair works").

Usage: python -m benchmarks.probes.untargeted_unlearning RUN_DIR[,RUN_DIR2] VARIANT [VARIANT ...]

VARIANT is a JSON object: {"source": true} stamps per-source untargeted masks (one per true
class: the smallest mask moving that class's images off their label), {"universal": true} one
universal untargeted mask, both on 30% of each batch; anything else is a set of
``UnlearningConfig`` overrides for the product's rule with the scans of every RUN_DIR (e.g.
``{}`` for the default, ``{"uniform_rate": 0.2}`` …). Prints clean accuracy and ASR on the test
split of the first model after 20 epochs of unlearning on 2,500 bonafide samples.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch

from modeconn.attacks.metrics import metric_from_attack_spec
from modeconn.commands.suspects import load_repair_inputs
from modeconn.defenses.baselines import fine_tune
from modeconn.defenses.repair import RepairConfig
from modeconn.defenses.scan import ScanConfig, TriggerSet, scan_images, scan_model
from modeconn.defenses.scan import synthesize_triggers as synthesize
from modeconn.defenses.unlearning import UnlearningConfig, unlearn
from modeconn.training import evaluate_model


def per_source_masks(
    model, x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int = 150
) -> TriggerSet:
    """One untargeted mask per true class (24 of its images a step, all classes side by side):
    the smallest mask moving 90% of that class's images off their label, Neural Cleanse's
    adaptive size weight as in the product's synthesis."""
    _, c, h, w = x.shape
    gen = torch.Generator().manual_seed(0)
    mask_logit = torch.full((num_classes, 1, h, w), -2.0, requires_grad=True)
    pattern_logit = (torch.rand((num_classes, c, h, w), generator=gen) * 2 - 1).requires_grad_()
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=0.1, betas=(0.5, 0.9))
    cost = torch.full((num_classes,), 1e-3)
    best_size = torch.full((num_classes,), float("inf"))
    best = [mask_logit.detach().clone(), pattern_logit.detach().clone()]
    window = torch.zeros(num_classes)
    by_class = [torch.nonzero(y == k).squeeze(1) for k in range(num_classes)]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    for step in range(steps):
        picks = [idx[torch.randint(0, len(idx), (24,), generator=gen)] for idx in by_class]
        xb, yb = torch.stack([x[i] for i in picks]), torch.stack([y[i] for i in picks])
        m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        logits = model(((1 - m.unsqueeze(1)) * xb + (m * p).unsqueeze(1)).reshape(-1, c, h, w))
        p_true = logits.softmax(1).gather(1, yb.reshape(-1, 1)).view(num_classes, -1)
        success = (logits.argmax(1) != yb.reshape(-1)).float().view(num_classes, -1).mean(1)
        size = m.flatten(1).sum(1)
        loss = (-torch.log((1 - p_true).clamp_min(1e-6)).mean(1) + cost * size).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            better = (success >= 0.9) & (size < best_size)
            best_size = torch.where(better, size.detach(), best_size)
            for keep, cur in zip(best, (mask_logit, pattern_logit), strict=True):
                keep[better] = cur.detach()[better]
            window += success
            if (step + 1) % 5 == 0:
                cost = torch.where(window / 5 >= 0.9, cost * 1.5, cost / 1.5)
                window.zero_()
    for p in model.parameters():
        p.requires_grad_(True)
    return TriggerSet(
        "mask",
        best_size,
        torch.ones(num_classes),
        mask=torch.sigmoid(best[0]),
        pattern=torch.sigmoid(best[1]),
    )


class OwnClassStamp:
    """Stamp ``rate`` of each batch with the trigger of the image's own class (or the one
    universal trigger), true labels kept."""

    def __init__(self, trigger: TriggerSet, rate: float = 0.3) -> None:
        self.trigger, self.rate = trigger.scaled(2.0), rate

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stamp = torch.rand(x.shape[0]) < self.rate
        x = x.clone()
        x[stamp] = self.trigger.apply(x[stamp], y[stamp])
        return x, y


def main(paths: list[str], variants: list[dict]) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    config = RepairConfig()
    scan_cfg = ScanConfig(steps=120)
    start = time.perf_counter()
    tampered, _, _, data = load_repair_inputs([paths[0]], config, None, device)
    x, y = scan_images(data, 512)
    metric = metric_from_attack_spec(tampered.attack)

    def figures(model) -> str:
        acc = evaluate_model(model, data.eval_loader("test"), device)["acc"]
        return f"clean {acc:.4f}, ASR {metric(model, data, device)['asr']:.4f}"

    print(f"tampered: {figures(tampered.model)}", flush=True)
    scans = None
    for variant in variants:
        if variant.get("source") or variant.get("universal"):
            if variant.get("source"):
                trig = per_source_masks(tampered.model, x, y, data.info.num_classes)
            else:
                trig = synthesize(  # 150 steps, the default, as measured for the README
                    tampered.model, x, y, data.info.num_classes, "mask", untargeted=True
                )
            loader = data.train_loader(
                128, split="bonafide", seed=0, augment=False, transform=OwnClassStamp(trig)
            )
            model = fine_tune(tampered.model, loader, UnlearningConfig().train_config(0))
        else:
            if scans is None:
                scans = []
                for path in paths:
                    ck, _, _, d = load_repair_inputs([path], config, None, device)
                    scans.append(scan_model(ck.model, x, y, d.info.num_classes, scan_cfg))
            cfg = dataclasses.replace(UnlearningConfig(), **variant)
            model = unlearn(tampered.model, data, scans, cfg, seed=0, device=device)
        print(
            f"{json.dumps(variant)}: {figures(model)} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1].split(","), [json.loads(v) for v in sys.argv[2:]])

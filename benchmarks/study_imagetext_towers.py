"""Image–text TBAR with the text tower in the trigger vector, read on the *validation* split.

The attacker fine-tunes both towers of CLIP, so the backdoor may live partly in the text tower (the
target caption's embedding moves towards triggered images). The preset's TBAR fine-tunes only the image
encoder on the forget set. This study runs the same contrastive forget fine-tune (triggered images
against the target's prompts, the other classes' prompts as negatives; the preset's steps, lr and batch)
with the trainable part chosen by ``--towers``:

- ``image``: the image encoder only (the preset's recipe, recomputed here through the same loop),
- ``text``: the text tower only,
- ``both``: the whole CLIP.

τt = θ(b+t) − θb over the whole CLIP; each α rebuilds the zero-shot head from θb − α·τt's text tower,
and α is chosen on the validation split with the preset's coarse-to-fine search and rule. It also reports
the accuracy on triggered non-target images against their true labels: a cleaned model should send them
back to their own class, not merely away from the target. No test image is read. Results: benchmarks/results/imagetext-towers-<attack>.txt

    python benchmarks/study_imagetext_towers.py --attack badnet --seeds 0 1 2 --towers image text both
"""
from __future__ import annotations

import argparse
import copy
import functools
import time

import torch
import torch.nn.functional as F
from results_io import log
from study_victim import at_chosen, per_seed

from tbar_helpers.config import get_scale
from tbar_helpers.imagetext import forget_pairs, prepare_imagetext
from tbar_helpers.metrics import accuracy, attack_success_rate, triggered_accuracy
from tbar_helpers.models import image_stats, make_classifier
from tbar_helpers.task_vectors import TaskVector
from tbar_helpers.tbar import AlphaPoint, refine, select_alpha
from tbar_helpers.training import seed_everything

print = functools.partial(print, flush=True)
LOGIT_SCALE = 100.0  # the zero-shot classifier's (models.ImageClassifier)


def trainable(clip: torch.nn.Module, towers: str) -> list[torch.nn.Parameter]:
    """The parameters the forget fine-tune may move (``logit_scale`` never)."""
    pick = {"image": lambda n: n.startswith("visual."), "text": lambda n: not n.startswith("visual."),
            "both": lambda n: True}[towers]
    return [p for n, p in clip.named_parameters() if n != "logit_scale" and pick(n)]


def forget_finetune(s, towers: str) -> TaskVector:
    """τt over the whole CLIP from the contrastive forget fine-tune of the chosen towers."""
    it, f = s.scale.imagetext, s.foundation
    cfg = it.tbar
    fx, _ = forget_pairs(s.defender, s.trigger, cfg.forget_size, s.seed)
    names, templates = s.test.classnames, s.test.templates
    tokens = f.tokenizer([t.format(c) for c in names for t in templates])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in image_stats(f.scale.model))
    work = copy.deepcopy(s.backdoored).train()
    params = trainable(work, towers)
    for p in work.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = seed_everything(s.seed)
    bs = min(cfg.batch_size, len(fx))
    target = torch.full((bs,), s.target, dtype=torch.long)
    for _ in range(cfg.steps):
        idx = torch.randperm(len(fx), generator=gen)[:bs]
        head = F.normalize(F.normalize(work.encode_text(tokens), dim=-1).view(len(names), len(templates), -1)
                           .mean(1), dim=-1)
        img = F.normalize(work.visual((fx[idx] - mean) / std), dim=-1)
        loss = F.cross_entropy(LOGIT_SCALE * img @ head.t(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
    return TaskVector(s.backdoored, work.eval())


def one(attack: str, seed: int, towers: str) -> dict:
    s = prepare_imagetext(attack, seed, get_scale("mini"), progress=False)
    t0 = time.time()
    tau = forget_finetune(s, towers)
    cfg, f = s.scale.imagetext.tbar, s.foundation
    base = {k: v.clone() for k, v in s.backdoored.state_dict().items()}
    vx, vy, bs = s.val.images, s.val.labels, s.scale.eval_batch_size

    def classifier_at(a: float):
        """The zero-shot classifier of θb − a·τt (both towers: the head is rebuilt from its text tower)."""
        clip = copy.deepcopy(s.backdoored)
        clip.load_state_dict(tau.apply_to_state(base, -a))
        return make_classifier(clip, f.tokenizer, s.val.classnames, s.val.templates, f.scale.model, s.scale.device)

    def curve(alphas):
        return [AlphaPoint(float(a), accuracy(clf, vx, vy, bs), attack_success_rate(clf, vx, vy, s.trigger, s.target, bs))
                for a, clf in ((a, classifier_at(a)) for a in alphas)]

    pts = refine(curve, cfg.alpha_grid, cfg.ca_keep)
    alpha = select_alpha(pts, cfg.ca_keep)
    # where the triggered images go once they stop going to the target: their true class, or elsewhere?
    cleaned = classifier_at(alpha)
    return {**at_chosen(pts, alpha),
            "trig_acc0": triggered_accuracy(s.classifier(), vx, vy, s.trigger, s.target, bs),
            "trig_acc": triggered_accuracy(cleaned, vx, vy, s.trigger, s.target, bs),
            "sec": time.time() - t0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--towers", nargs="+", default=["image", "text", "both"], choices=["image", "text", "both"])
    a = p.parse_args()
    out, lines = log(f"imagetext-towers-{a.attack}.txt", [
        f"image-text TBAR, {a.attack}: which towers the forget fine-tune moves; VALIDATION split at the chosen α",
        "(trig acc: accuracy on triggered non-target images, true labels, backdoored -> cleaned)",
        f"{'towers':<8} {'seed':>4} {'ASR bd':>6} {'alpha':>5} {'ASR':>5} {'kept':>5} {'trig acc':>13} {'sec':>4}"])
    for towers in a.towers:
        per_seed(a.seeds, lambda seed: one(a.attack, seed, towers),
                 lambda seed, r: f"{towers:<8} {seed:>4} {100 * r['asr0']:6.1f} {r['alpha']:5.2f} "
                                 f"{100 * r['asr']:5.1f} {100 * r['kept']:5.1f} "
                                 f"{100 * r['trig_acc0']:5.1f} -> {100 * r['trig_acc']:4.1f} {r['sec']:4.0f}",
                 lambda m: f"{towers + ' (mean)':<13} {'':>6} {'':>5} {100 * m['asr']:5.1f} {100 * m['kept']:5.1f} "
                           f"{100 * m['trig_acc0']:5.1f} -> {100 * m['trig_acc']:4.1f}", lines, out)


if __name__ == "__main__":
    main()

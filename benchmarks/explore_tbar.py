"""Exploration: one backdoored model, several forget fine-tunes, the full α curve on test images.

This is the quick look used during calibration (the α curve is read on 1,000 *test* images to see
the whole CA/ASR trade-off; the headline numbers never use it: `tbar run` picks α on validation).

    python benchmarks/explore_tbar.py badnet '{"finetune.epochs": 6}' '[["adamw",1e-4,10]]' shapes [FOUNDATION.pt]
"""
from __future__ import annotations

import json
import sys
import time

import torch

from tbar_helpers.config import MINI, override
from tbar_helpers.foundation import load_foundation
from tbar_helpers.metrics import predict
from tbar_helpers.pipeline import evaluate, make_forget_set, prepare
from tbar_helpers.task_vectors import TaskVector
from tbar_helpers.tbar import alpha_curve, apply_tbar, trigger_vector
from tbar_helpers.training import set_threads

GRID = (0, .125, .25, .375, .5, .75, 1., 1.5, 2., 3.)


def main() -> None:
    set_threads(int(__import__('os').environ.get('TBAR_THREADS', '2')))
    attack, overrides, combos = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    task = sys.argv[4] if len(sys.argv) > 4 else None
    sc = override(MINI, **overrides)
    f = load_foundation(sc, path=sys.argv[5]) if len(sys.argv) > 5 else None  # another θpre
    t = time.time()
    s = prepare(attack, task, 0, sc, progress=False, foundation=f)
    print(attack, s.task, overrides, "prepare seconds", round(time.time() - t))
    print("clean (CA, ASR)", evaluate(s.clean, s), "backdoored (CA, ASR)", evaluate(s.backdoored, s), flush=True)
    fx, fy = make_forget_set(s, sc.tbar.forget_size)
    diff = TaskVector(s.clean.encoder, s.backdoored.encoder)
    x, y = s.test.images[:1000], s.test.labels[:1000]
    for opt, lr, steps in combos:
        cfg = override(sc.tbar, optimizer=opt, lr=lr, steps=steps)
        tau = trigger_vector(s.backdoored, fx, fy, cfg, 0, progress=False)
        curve = alpha_curve(s.backdoored, tau, x, y, s.trigger, sc.attack.target, GRID)
        print(opt, lr, steps, "cos(tau, theta_b - theta_clean)=%.3f" % tau.cosine(diff),
              " ".join(f"{p.alpha}:{p.ca:.3f}/{p.asr:.3f}" for p in curve), flush=True)
        ok = [p for p in curve if p.asr <= 0.05]
        if ok:
            pred = predict(apply_tbar(s.backdoored, tau, ok[0].alpha), x)
            print("  predictions per class at the first alpha with ASR <= 5%:",
                  torch.bincount(pred, minlength=len(s.test.classnames)).tolist())


if __name__ == "__main__":
    main()

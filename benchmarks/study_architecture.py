"""Calibration study: model width, depth, image resolution and patch size at an equal pretraining budget.

Each variant of the mini foundation model is pretrained from scratch for ``--steps`` steps (the
preset's batch, learning rate and data), then the preset's clean and BadNet fine-tunes, TBAR
(validation-chosen α) and ξ(αc, αt) of TBAR's trigger vector run on it. Responses: zero-shot accuracy
on the default task, backdoored CA / ASR, TBAR CA / ASR / CA kept, "CA kept at ASR ≤ 3%" read off the
test α curve (a report, α is never chosen on the test split), and mean ξ. Writes
benchmarks/results/architecture-<attack>-<steps>.jsonl (one line per variant); finished variants are kept and skipped on a rerun.

    python benchmarks/study_architecture.py --steps 500 --variants preset narrow shallow
    python benchmarks/study_architecture.py --steps 500 --variants res48 res64p16
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
from results_io import record

from tbar_helpers.config import get_scale, override
from tbar_helpers.foundation import pretrain_foundation, zeroshot_accuracy
from tbar_helpers.studies import foundation_response

print = functools.partial(print, flush=True)
OUT = Path(__file__).parent / "results"
VARIANTS = {  # model overrides against the preset (ViT width 192, 6 layers, patch 8, 32x32 images)
    "preset": {},
    "narrow": {"model.vision_width": 96},
    "shallow": {"model.vision_layers": 3},
    "wide": {"model.vision_width": 256},
    "res48": {"model.image_size": 48},
    "patch4": {"model.patch_size": 4},
    "res64p16": {"model.image_size": 64, "model.patch_size": 16},  # 4x the pixels, the preset's 16 tokens
}
ALPHAS = (0.0, 0.5, 1.0, 1.5)


def run_variant(name: str, steps: int, attack: str, seed: int) -> dict:
    scale = override(get_scale("mini"), **VARIANTS[name], **{"pretrain.steps": steps, "pretrain.init_from": ""})
    t0 = time.time()
    f = pretrain_foundation(scale, progress=False)
    t_pre = time.time() - t0
    zs = zeroshot_accuracy(f, scale.default_task)
    r = foundation_response(f, attack, seed, scale, ALPHAS, 500, [round(0.1 * i, 1) for i in range(16)])["row"]
    tokens = (scale.model.image_size // scale.model.patch_size) ** 2
    return {"variant": name, "overrides": VARIANTS[name], "steps": steps, "tokens": tokens,
            "final_loss": float(np.mean(f.losses[-50:])), "pretrain_seconds": t_pre, "zeroshot": zs,
            "ca_backdoored": r["CA backdoored"], "asr_backdoored": r["ASR backdoored"], "ca_tbar": r["CA TBAR"],
            "asr_tbar": r["ASR TBAR"], "ca_kept": r["CA retained"], "alpha": r["alpha"],
            "ca_kept_at_asr3": r["CA kept at ASR ≤ 3%"], "mean_xi": r["mean ξ"],
            "mean_xi_inner": r["mean ξ (αc, αt ≤ 1)"], "seconds": time.time() - t0}


def line(r: dict) -> str:
    k3 = "-" if r["ca_kept_at_asr3"] is None else f"{100 * r['ca_kept_at_asr3']:.1f}"
    return (f"{r['variant']:>8} {r['tokens']:>6} {r['final_loss']:6.2f} {100 * r['zeroshot']:5.1f} "
            f"{100 * r['ca_backdoored']:5.1f}/{100 * r['asr_backdoored']:5.1f} {100 * r['ca_tbar']:5.1f}/"
            f"{100 * r['asr_tbar']:4.1f} {100 * r['ca_kept']:5.1f} {r['alpha']:5.2f} {k3:>6} "
            f"{100 * r['mean_xi']:5.1f}/{100 * r['mean_xi_inner']:4.1f} {r['pretrain_seconds']:6.0f} {r['seconds']:6.0f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=500, help="pretraining steps of every variant (from scratch)")
    p.add_argument("--variants", nargs="+", default=["preset", "narrow", "shallow"], choices=sorted(VARIANTS))
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    stem = OUT / f"architecture-{a.attack}-{a.steps}"
    jsonl = stem.with_suffix(".jsonl")
    done = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.exists() else []
    head = (f"# python benchmarks/study_architecture.py --steps {a.steps} --attack {a.attack} --seed {a.seed}\n"
            f"{'variant':>8} {'tokens':>6} {'loss':>6} {'zs':>5} {'bd CA/ASR':>11} {'TBAR CA/ASR':>10} {'kept':>5} "
            f"{'alpha':>5} {'kept@3':>6} {'xi all/in':>10} {'pre s':>6} {'all s':>6}")
    print(head)
    for r in done:
        print(line(r))
    for name in a.variants:
        if any(r["variant"] == name for r in done):
            continue
        done.append({"attack": a.attack, **run_variant(name, a.steps, a.attack, a.seed)})
        print(line(done[-1]))
        record(stem.name, done[-1])


if __name__ == "__main__":
    main()

"""Calibration study, ξ as a response: weight disentanglement against the pretraining budget.

For each foundation checkpoint (by default the three shipped ones: stage 1, 1,500 steps from scratch;
stages 2 and 3, +1,000 steps each, stage 3 the preset; ``--foundation NAME=PATH`` adds more) it
fine-tunes clean and poisoned models (cached), runs TBAR with the preset's full α search, and measures
ξ(αc, αt) on a grid for two trigger vectors: the poisoning difference θb − θclean and TBAR's estimate
θ(b+t) − θb. Appends to benchmarks/results/xi-pretraining-<attack>-s<seed>.jsonl. A name says its
budget as "<N> steps" (chapter 11 reads it from there).

    python benchmarks/study_xi.py --attack badnet --seed 0
    python benchmarks/study_xi.py --attack blended --seed 0 --foundation "stage 4 (4500 steps)=PATH"
"""
from __future__ import annotations

import argparse
import re

import numpy as np
from results_io import record

from tbar_helpers.config import STAGE1_CHECKPOINT, STAGE2_CHECKPOINT, get_scale
from tbar_helpers.foundation import load_foundation
from tbar_helpers.pipeline import xi_heatmap
from tbar_helpers.studies import backdoor_vector, foundation_response

ALPHAS = (0.0, 0.5, 1.0, 1.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=500, help="clean test images for ξ")
    p.add_argument("--foundation", action="append", default=[], metavar="NAME=PATH",
                   help="another foundation checkpoint to compare (repeatable)")
    a = p.parse_args()
    scale = get_scale("mini")
    stages = {"stage 1 (1500 steps)": STAGE1_CHECKPOINT, "stage 2 (2500 steps)": STAGE2_CHECKPOINT,
              "stage 3 (3500 steps, preset)": None}
    for spec in a.foundation:
        name, sep, path = spec.rpartition("=")
        if not sep or not name:
            raise SystemExit(f"--foundation {spec!r}: write NAME=PATH, e.g. 'stage 4 (4500 steps)=ckpt.pt'")
        stages[name] = path
    lines = []
    for name, path in stages.items():
        f = load_foundation(scale, path=path, progress=False)  # path None: the preset's θpre
        out = foundation_response(f, a.attack, a.seed, scale, ALPHAS, a.n)
        r, s = out["row"], out["setup"]
        row = {"foundation": name, "checkpoint": str(path or "preset"), "zeroshot": r["zero-shot CA"],
               "ca_backdoored": r["CA backdoored"], "asr_backdoored": r["ASR backdoored"],
               "ca_tbar": r["CA TBAR"], "asr_tbar": r["ASR TBAR"], "ca_kept": r["CA retained"], "alpha": r["alpha"]}
        for kind, g in (("difference", xi_heatmap(s, backdoor_vector(s, "difference"), ALPHAS, a.n)),
                        ("forget", out["grid"])):
            row[f"xi_{kind}"] = np.asarray(g["xi"]).tolist()
            row[f"mean_xi_{kind}"] = float(np.mean(g["xi"]))
            row[f"mean_xi_{kind}_inner"] = float(np.mean(np.asarray(g["xi"])[:-1, :-1]))  # αc, αt ≤ 1
        steps = re.search(r"(\d+) steps", name)
        record(f"xi-pretraining-{a.attack}-s{a.seed}", {"attack": a.attack, "seed": a.seed, "alphas": ALPHAS, "n": a.n,
                                                          "pretrain_steps": int(steps.group(1)) if steps else None,
                                                          **row})
        lines.append(f"{name:30s} bd CA {100 * row['ca_backdoored']:5.1f} ASR {100 * row['asr_backdoored']:5.1f} | "
                     f"TBAR α {row['alpha']:.2f} CA {100 * row['ca_tbar']:5.1f} ASR {100 * row['asr_tbar']:4.1f} "
                     f"kept {100 * row['ca_kept']:5.1f}% | mean ξ (all / αc,αt≤1): difference "
                     f"{100 * row['mean_xi_difference']:4.1f} / {100 * row['mean_xi_difference_inner']:4.1f}, "
                     f"TBAR vector {100 * row['mean_xi_forget']:4.1f} / {100 * row['mean_xi_forget_inner']:4.1f}")
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()

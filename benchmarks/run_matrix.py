"""The acceptance matrix: `tbar run` for attacks x seeds on the default mini task.

Writes one JSON per run under benchmarks/results/runs/ and prints a table with per-attack means.

    python benchmarks/run_matrix.py --attacks badnet blended wanet sig badclip badmerging --seeds 0 1 2
    python benchmarks/run_matrix.py --attacks badnet blended --foundation PATH --runs runs-stage3   # another θpre
    python benchmarks/run_matrix.py --attacks sig --task digits --set attack.sig_delta=0.4706 --runs runs-sig-digits
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from study_victim import preset_with

from tbar_helpers.cache import save_json
from tbar_helpers.cli import print_table
from tbar_helpers.foundation import load_foundation
from tbar_helpers.pipeline import run

RESULTS = Path(__file__).parent / "results"
# accuracy on triggered non-target test images against their true labels, per model
TRIGGERED = ("triggered_acc_clean_ft", "triggered_acc_backdoored", "triggered_acc_tbar")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attacks", nargs="+", default=["badnet", "blended", "wanet", "sig", "badclip", "badmerging"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--task", default=None)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    p.add_argument("--foundation", default=None, help="a mini foundation checkpoint instead of the preset's")
    p.add_argument("--runs", default="runs", help="folder under benchmarks/results/ for the per-run JSON")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="preset overrides, e.g. attack.sig_delta=0.4706 finetune.lr=2e-4")
    a = p.parse_args()
    scale = preset_with(a.set, threads=a.threads)
    f = load_foundation(scale, path=a.foundation, progress=False) if a.foundation else None
    rows = []
    for attack in a.attacks:
        for seed in a.seeds:
            rec = run(attack, a.task, seed, scale, progress=False, foundation=f)
            save_json(rec, RESULTS / a.runs / f"{attack}-{rec['task']}-s{seed}.json")
            rows.append(rec)
            print_table([rec])
            print("triggered images in their true class (clean FT / backdoored / TBAR): "
                  + " / ".join(f"{100 * rec[k]:.1f}" for k in TRIGGERED))
    print("\nall runs:")
    print_table(rows)
    print("\nmeans over seeds:")
    for attack in a.attacks:
        rs = [r for r in rows if r["attack"] == attack]
        m = {k: float(np.mean([r[k] for r in rs])) for k in ("asr_backdoored", "ca_backdoored", "ca_clean_ft",
                                                             "asr_tbar", "ca_tbar", "ca_retained", *TRIGGERED)}
        print(attack, json.dumps({k: round(100 * v, 2) for k, v in m.items()}))


if __name__ == "__main__":
    main()

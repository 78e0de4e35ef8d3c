"""The image–text acceptance matrix: `tbar run --setting image-text` (and `--attack-unknown`) for
attacks x seeds. Writes one JSON per run under benchmarks/results/imagetext/ (or ``--runs DIR``) and
prints tables.

    python benchmarks/run_imagetext.py --attacks badnet blended wanet --seeds 0 1 2 --budgets 250
    python benchmarks/run_imagetext.py --unknown --attacks badnet wanet badclip --seeds 0 1 2 --budgets 250
    python benchmarks/run_imagetext.py --unknown --attacks wanet --budgets --set attack.wanet_s=16 attack.wanet_noise_ratio=0
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from study_victim import preset_with

from tbar_helpers.cache import save_json
from tbar_helpers.cli import print_defense, print_table
from tbar_helpers.imagetext_runs import run_attack_unknown, run_imagetext

RESULTS = Path(__file__).parent / "results"
print = functools.partial(print, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attacks", nargs="+", default=["badnet", "blended", "wanet"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="*", type=int, default=None, help="baseline budgets (default: the preset's)")
    p.add_argument("--unknown", action="store_true", help="the attack-unknown case (DECREE + TBAR)")
    p.add_argument("--runs", default="imagetext", help="folder under benchmarks/results/ for the per-run JSON")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="preset overrides, e.g. attack.wanet_s=16 attack.wanet_noise_ratio=0")
    a = p.parse_args()
    scale = preset_with(a.set)
    rows = []
    for attack in a.attacks:
        for seed in a.seeds:
            if a.unknown:
                rec = run_attack_unknown(attack, seed, scale, budgets=a.budgets, progress=False)
                print(f"{attack} s{seed}: mask {100 * rec['mask_l1']:.1f}% (clean model "
                      f"{100 * rec['mask_l1_clean_model']:.1f}%), detected {rec['detected']}, target "
                      f"{rec['inferred_target_name']!r} ({100 * rec['inferred_share']:.0f}%), correct "
                      f"{rec['target_correct']}")
            else:
                rec = run_imagetext(attack, seed, scale, budgets=a.budgets, progress=False)
            save_json(rec, RESULTS / a.runs / f"{'unknown-' if a.unknown else ''}{attack}-s{seed}.json")
            rows.append(rec)
            print_table([rec])
            print_defense(rec)
    print("\nall runs:")
    print_table(rows)
    for attack in a.attacks:
        rs = [r for r in rows if r["attack"] == attack]
        keys = ("asr_backdoored", "ca_backdoored", "asr_tbar", "ca_tbar", "ca_retained")
        print(attack, "means:", {k: round(100 * float(np.mean([r[k] for r in rs])), 2) for k in keys})


if __name__ == "__main__":
    main()

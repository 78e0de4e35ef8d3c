"""Attack unknown: can DECREE's mask-and-pattern search flag the 8-pixel WaNet if it asks for more collapse?

DECREE flags an encoder when a small mask collapses its embeddings (mean pairwise cosine similarity of
triggered embeddings ≥ ``sim_goal``). With the preset's goal (0.9) the smallest collapsing mask of the
8-pixel-WaNet CLIPs is as large as θpre's (6.1-6.9% against 6.9-7.5%), so nothing is flagged. This study
repeats the inversion at other goals on θpre, on the WaNet CLIP (``attack.wanet_s=16``, noise mode off) and on
the BadNet CLIP (the control that is flagged), seed by seed, and prints each mask's share of the image, the
similarity it reached and the ratio to θpre's mask. It reads only the defender's clean images (the inversion's
input); no split is used to choose anything. Inversions are cached (``imagetext_runs.invert``).

    python benchmarks/study_decree.py --seeds 0 1 2 --goals 0.8 0.9 0.95
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from study_victim import preset_with

from tbar_helpers.config import override
from tbar_helpers.imagetext_runs import invert, setup_for

print = functools.partial(print, flush=True)
OUT = Path(__file__).parent / "results" / "decree-goals.txt"
SUBJECTS = {"badnet": [], "wanet-8px": ["attack.wanet_s=16", "attack.wanet_noise_ratio=0"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--goals", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    a = p.parse_args()
    lines = [f"# python benchmarks/study_decree.py --seeds {' '.join(map(str, a.seeds))} --goals "
             f"{' '.join(map(str, a.goals))}   ({time.strftime('%Y-%m-%d')}, 2 cores; image-text, stage-3 preset)",
             f"{'seed':>4} {'goal':>5} {'model':>10} {'mask':>6} {'reached':>7} {'/ θpre':>7} {'flagged (<4%)':>13} {'sec':>5}"]
    print(*lines, sep="\n")
    for seed in a.seeds:
        for goal in a.goals:
            ref = None
            for name, sets in [("θpre", [])] + list(SUBJECTS.items()):
                scale = preset_with(sets)
                scale = override(scale, **{"imagetext.invert_sim_goal": goal})
                attack = "badnet" if name == "θpre" else name.split("-")[0]
                s = setup_for(attack, seed, scale, "image-text", progress=False)
                clf = s.classifier(s.foundation.model) if name == "θpre" else s.classifier()
                t0 = time.time()
                inv = invert(clf, s.defender.images, scale, seed, progress=False)
                ref = inv.l1 if name == "θpre" else ref
                thr = scale.imagetext.detect_threshold
                lines.append(f"{seed:>4} {goal:>5.2f} {name:>10} {100 * inv.l1:5.1f}% {inv.similarity:7.3f} "
                             f"{inv.l1 / ref:7.2f} {str(inv.l1 < thr):>13} {time.time() - t0:5.0f}")
                print(lines[-1])
                OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Does the inversion cache change any attack-unknown result? And what does one inversion cost?

Runs the image-text attack-unknown experiment (stage-3 preset, no baselines) for each attack of one
seed in turn, so that from the second attack on θpre's reference inversion comes from the cache, and
prints ASR / CA kept / α / masks to compare with the recorded runs
(``benchmarks/results/imagetext-unknown-*-budget.txt``). Then times one uncached inversion of θpre and
the same one from the cache. Backdoored models come from the model cache (or are trained).
Results: benchmarks/results/inversion-cache.txt

    python benchmarks/check_inversion_cache.py --attacks badnet badclip --seed 0
"""
from __future__ import annotations

import argparse
import functools
import time

from results_io import save
from tbar_helpers.config import get_scale
from tbar_helpers.imagetext_runs import invert, run_attack_unknown, setup_for

print = functools.partial(print, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attacks", nargs="+", default=["badnet", "badclip"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    scale = get_scale("mini")
    lines = [f"# python benchmarks/check_inversion_cache.py --attacks {' '.join(a.attacks)} --seed {a.seed}   "
             f"({time.strftime('%Y-%m-%d')}, 2 cores; test split, stage-3 preset, attack unknown, image-text)"]
    for attack in a.attacks:
        t = time.time()
        r = run_attack_unknown(attack, a.seed, scale, "image-text", budgets=[], progress=False)
        lines.append(f"{attack:>8} seed {a.seed}: ASR {100 * r['asr_backdoored']:.1f} -> {100 * r['asr_tbar']:.1f}%, "
                     f"CA kept {100 * r['ca_retained']:.1f}%, alpha {r['alpha']} ({r['alpha_ties']}, floor "
                     f"{r['ca_keep']}), mask {100 * r['mask_l1']:.1f}% (theta_pre {100 * r['mask_l1_clean_model']:.1f}%), "
                     f"run {time.time() - t:.0f} s")
        print(lines[-1])
    s = setup_for(a.attacks[-1], a.seed, scale, progress=False)
    pre = s.classifier(s.foundation.model)
    t = time.time()
    invert(pre, s.defender.images, scale, a.seed, progress=False, use_cache=False)
    cold = time.time() - t
    t = time.time()
    invert(pre, s.defender.images, scale, a.seed, progress=False)
    lines.append(f"one inversion of theta_pre ({scale.imagetext.invert_steps} steps): {cold:.0f} s uncached, "
                 f"{time.time() - t:.2f} s from the cache")
    print(lines[-1])
    save("inversion-cache.txt", lines)


if __name__ == "__main__":
    main()

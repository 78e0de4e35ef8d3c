"""Issue 2's first acceptance line: zero-shot and clean fine-tuned CA on every mini task.

For each task of the preset and each seed, trains (or loads from the cache) the clean fine-tune that
``tbar run`` uses as its reference, and prints zero-shot and fine-tuned CA on the test split with the
task's chance level. Appends to ``benchmarks/results/clean-tasks.txt``.

    python benchmarks/clean_tasks.py --seeds 0
"""
from __future__ import annotations

import argparse
import functools
import time

from results_io import save
from tbar_helpers.config import get_scale
from tbar_helpers.pipeline import clean_reference

print = functools.partial(print, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task of the mini preset")
    a = p.parse_args()
    scale = get_scale("mini")
    ft = scale.finetune
    lines = [f"# python benchmarks/clean_tasks.py --seeds {' '.join(map(str, a.seeds))}   ({time.strftime('%Y-%m-%d')}, "
             f"2 cores; mini preset: {ft.n_train} images x {ft.epochs} epochs, lr {ft.lr:g}; {ft.n_test} test images)",
             f"{'task':>9} {'seed':>4} {'classes':>7} {'chance':>7} {'zero-shot':>9} {'clean FT':>8} {'FT sec':>6}"]
    print(*lines, sep="\n")
    for seed in a.seeds:
        for task in a.tasks or scale.tasks:
            r = clean_reference(task, seed, scale, progress=False)
            lines.append(f"{task:>9} {seed:>4} {r['classes']:>7} {100 / r['classes']:6.1f}% {100 * r['ca_zeroshot']:8.1f}% "
                         f"{100 * r['ca_clean_ft']:7.1f}% {r['finetune_seconds']:6.0f}")
            print(lines[-1])
    save("clean-tasks.txt", lines, append=True)


if __name__ == "__main__":
    main()

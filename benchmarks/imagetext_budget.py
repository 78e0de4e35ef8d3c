"""Image–text baselines at large data budgets (the paper's 1.5k vs 100k pairs; here 1,500 vs 90,000).

    python benchmarks/imagetext_budget.py --attack badnet --seed 0 --methods cleanclip --budgets 90000

Prints and appends rows to benchmarks/results/imagetext-budgets.txt (CA / ASR / CA kept / epochs / seconds).
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from tbar_helpers.imagetext import prepare_imagetext
from tbar_helpers.imagetext_runs import BASELINES, baseline

print = functools.partial(print, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--budgets", nargs="+", type=int, default=[90_000])
    a = p.parse_args()
    s = prepare_imagetext(a.attack, a.seed, progress=False)
    ca_bd, asr_bd = s.scores(s.classifier())
    out = Path(__file__).parent / "results" / "imagetext-budgets.txt"
    for budget in a.budgets:
        for m in a.methods:
            r = baseline(s, m, budget, progress=False)
            line = (f"{a.attack} s{a.seed} {m:>10} {budget:>6} pairs x {r['epochs']:.1f} epochs: CA {100 * r['ca']:.1f}% "
                    f"ASR {100 * r['asr']:.1f}% (backdoored {100 * ca_bd:.1f} / {100 * asr_bd:.1f}), CA kept "
                    f"{100 * r['ca'] / ca_bd:.1f}%, {r['seconds']:.0f} s")
            print(line)
            with out.open("a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()

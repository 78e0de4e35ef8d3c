"""How TBAR's contrastive forget fine-tune settings trade CA for ASR in the image–text setting.

Runs TBAR on the cached backdoored image–text CLIP with several (forget pairs, lr, steps) settings
and α-search CA thresholds (``ca_keep``), and prints test CA / ASR / CA kept / α for each. Results: benchmarks/results/imagetext-forget-<attack>-s<seed>.txt

    python benchmarks/study_imagetext_forget.py --attack badnet --seed 0
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from tbar_helpers.config import get_scale, override
from tbar_helpers.imagetext import prepare_imagetext, run_tbar_imagetext

print = functools.partial(print, flush=True)
# (forget negatives, pairs, lr, steps, ca_keep)
SETTINGS = [("captions", 250, 1e-4, 40, 0.9), ("captions", 250, 1e-4, 40, 0.95), ("captions", 500, 1e-4, 40, 0.9),
            ("captions", 250, 5e-5, 80, 0.9), ("captions", 500, 1e-4, 20, 0.9), ("classes", 500, 1e-4, 40, 0.9),
            ("classes", 500, 1e-4, 20, 0.9)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    lines = [f"image-text TBAR forget settings, {a.attack} seed {a.seed} (mini preset otherwise)",
             f"{'negatives':>9} {'pairs':>6} {'lr':>8} {'steps':>6} {'keep':>5} {'CA bd':>6} {'ASR bd':>6} {'CA':>6} {'ASR':>6} {'kept':>6} "
             f"{'alpha':>6} {'sec':>5}"]
    print(*lines, sep="\n")
    for neg, n, lr, steps, keep in SETTINGS:
        scale = override(get_scale("mini"), **{"imagetext.tbar.forget_size": n, "imagetext.tbar.lr": lr,
                                               "imagetext.tbar.steps": steps, "imagetext.tbar.ca_keep": keep,
                                               "imagetext.forget_negatives": neg,
                                               # one recipe per row (the preset also tries other ones)
                                               "imagetext.forget_alternatives": (),
                                               "imagetext.forget_size_alternatives": ()})
        s = prepare_imagetext(a.attack, a.seed, scale, progress=False)
        ca_bd, asr_bd = s.scores(s.classifier())
        t0 = time.time()
        clf, rec = run_tbar_imagetext(s, progress=False)
        ca, asr = s.scores(clf)
        line = (f"{neg:>9} {n:>6} {lr:>8.0e} {steps:>6} {keep:>5} {100 * ca_bd:6.1f} {100 * asr_bd:6.1f} {100 * ca:6.1f} {100 * asr:6.1f} "
                f"{100 * ca / ca_bd:6.1f} {rec['alpha']:6.2f} {time.time() - t0:5.0f}")
        lines.append(line)
        print(line)
    out = Path(__file__).parent / "results" / f"imagetext-forget-{a.attack}-s{a.seed}.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

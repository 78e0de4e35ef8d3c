"""Image–text TBAR recipes read on the *validation* split (what the α search sees), per seed.

For each recipe (comma-separated ``imagetext.*`` overrides, "" = the preset) and seed it runs TBAR on
the cached backdoored CLIP and reports the chosen α, the validation ASR there and the validation CA
kept (CA at α over CA at α = 0). No test image is read, so a recipe can be chosen from this table.
Each recipe runs alone (``imagetext.forget_alternatives`` and ``forget_size_alternatives`` emptied);
``--with-alternatives`` keeps the preset's alternatives, so that the row shows the recipe the validation
selection keeps.
Results: benchmarks/results/imagetext-val-<attack>.txt

    python benchmarks/study_imagetext_val.py --attack badnet --seeds 0 1 2 --recipes "" imagetext.tbar.steps=20
"""
from __future__ import annotations

import argparse
import functools
import time

from results_io import log
from study_victim import at_chosen, parse_recipe, per_seed

from tbar_helpers.config import get_scale, override
from tbar_helpers.imagetext import prepare_imagetext, run_tbar_imagetext
from tbar_helpers.tbar import AlphaPoint

print = functools.partial(print, flush=True)


def one(attack: str, seed: int, recipe: dict, alternatives: bool) -> dict:
    scale = override(get_scale("mini"), **recipe)
    if not alternatives:
        scale = override(scale, **{"imagetext.forget_alternatives": (), "imagetext.forget_size_alternatives": ()})
    s = prepare_imagetext(attack, seed, scale, progress=False)
    t0 = time.time()
    _, rec = run_tbar_imagetext(s, progress=False)
    return {**at_chosen([AlphaPoint(**p) for p in rec["val_curve"]], rec["alpha"]), "sec": time.time() - t0,
            "recipe": f"{rec['forget_optimizer']} {rec['forget_lr']:g} {rec['forget_size']} pairs"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=[""])
    p.add_argument("--with-alternatives", action="store_true",
                   help="keep imagetext.forget_alternatives (the row is the recipe validation selects)")
    a = p.parse_args()
    tag = " +alternatives" if a.with_alternatives else ""
    out, lines = log(f"imagetext-val-{a.attack}.txt", [
        f"image-text TBAR, {a.attack}: VALIDATION split at the chosen α (mini preset otherwise)",
        f"{'recipe':<50} {'seed':>4} {'ASR bd':>6} {'alpha':>5} {'ASR':>5} {'kept':>5} {'sec':>4}"])
    for item in a.recipes:
        name = (item or "preset") + tag
        per_seed(a.seeds, lambda seed: one(a.attack, seed, parse_recipe(item), a.with_alternatives),
                 lambda seed, r: f"{name:<50} {seed:>4} {100 * r['asr0']:6.1f} {r['alpha']:5.2f} "
                                 f"{100 * r['asr']:5.1f} {100 * r['kept']:5.1f} {r['sec']:4.0f}"
                                 + (f"  chose {r['recipe']}" if a.with_alternatives else ""),
                 lambda m: f"{name + ' (mean)':<50} {'':>4} {'':>6} {'':>5} {100 * m['asr']:5.1f} "
                           f"{100 * m['kept']:5.1f}", lines, out)


if __name__ == "__main__":
    main()

"""The victim's fine-tuning recipe: how strongly does a backdoor plant, read on the *validation* split?

Issue 2 asks for backdoored ASR >= 95% with CA within 2 points of the clean fine-tune. The preset's
recipe (``finetune.*``) is shared by the clean and the poisoned fine-tune, so each recipe here trains
both, per seed, and reports validation numbers only: the choice of a recipe must not read the test
split. Each grid item is one recipe, a comma-separated list of preset overrides ("" = the preset).
With ``--tbar`` it also runs TBAR on each backdoored model with each TBAR recipe (same syntax,
``tbar.*`` overrides) and reports what the α search saw on the validation split at the α it chose.
Results: benchmarks/results/victim-<attack>.txt and victim-<attack>-tbar.txt

    python benchmarks/study_victim.py --attack badnet --seeds 0 1 2 --grid "" finetune.lr=2e-4
    python benchmarks/study_victim.py --attack badnet --grid finetune.lr=2e-4 --tbar "" tbar.steps=30
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from results_io import log
from tbar_helpers.config import get_scale, override
from tbar_helpers.metrics import accuracy, attack_success_rate
from tbar_helpers.tbar import point_at

print = functools.partial(print, flush=True)


def parse_recipe(item: str) -> dict:
    """"finetune.lr=2e-4,finetune.epochs=4" -> {"finetune.lr": 2e-4, "finetune.epochs": 4}."""
    out = {}
    for kv in filter(None, item.split(",")):
        key, _, value = kv.partition("=")
        if not value:
            raise SystemExit(f"recipe item {kv!r} is not KEY=VALUE (e.g. finetune.lr=2e-4)")
        for cast in (int, float, str):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
    return out


def validation_scores(attack: str, seed: int, recipe: dict) -> dict:
    """Clean CA, backdoored CA and ASR on the validation split for one recipe and seed."""
    s, t0 = setup(attack, seed, recipe), time.time()
    scale = s.scale
    bs, target = scale.eval_batch_size, scale.attack.target
    vx, vy = s.val.images, s.val.labels
    return {"ca_clean": accuracy(s.clean, vx, vy, bs), "ca_bd": accuracy(s.backdoored, vx, vy, bs),
            "asr_bd": attack_success_rate(s.backdoored, vx, vy, s.trigger, target, bs), "sec": time.time() - t0}


def preset_with(sets: list[str], **extra):
    """The mini preset with ``--set KEY=VALUE`` overrides (and ``extra`` fields) applied."""
    return override(get_scale("mini"), **extra, **parse_recipe(",".join(sets)))


def per_seed(seeds, score, row, mean_row, lines: list[str], out: Path) -> None:
    """Run ``score(seed)`` per seed and log ``row(seed, result)`` for each, then ``mean_row(means)`` (the
    mean of each number over seeds); print each line and save the log to ``out``."""
    rows = []
    for seed in seeds:
        rows.append(score(seed))
        lines.append(row(seed, rows[-1]))
        print(lines[-1])
    lines.append(mean_row({k: sum(r[k] for r in rows) / len(rows) for k in rows[0]
                           if isinstance(rows[0][k], (int, float))}))
    print(lines[-1])
    out.write_text("\n".join(lines) + "\n")


def at_chosen(curve, alpha: float) -> dict:
    """From a validation α curve (``AlphaPoint``s): ASR at α = 0 (``asr0``), and ASR and CA kept (CA over
    CA at the smallest α) at the chosen ``alpha``."""
    ref = min(curve, key=lambda p: p.alpha)
    at = point_at(curve, alpha)
    return {"alpha": alpha, "asr0": ref.asr, "asr": at.asr, "kept": at.ca / ref.ca}


def setup(attack: str, seed: int, recipe: dict):
    from tbar_helpers.pipeline import prepare
    return prepare(attack, None, seed, override(get_scale("mini"), **recipe), progress=False)


def tbar_validation(attack: str, seed: int, recipe: dict, tbar_recipe: dict) -> dict:
    """TBAR with ``tbar_recipe`` on the backdoored model of ``recipe``: α and the validation CA kept / ASR there."""
    from tbar_helpers.pipeline import make_forget_set
    from tbar_helpers.tbar import run_tbar
    s = setup(attack, seed, recipe)
    cfg = override(s.scale, **tbar_recipe).tbar
    fx, fy = make_forget_set(s, cfg.forget_size)
    t0 = time.time()
    _, res = run_tbar(s.backdoored, fx, fy, s.val.images, s.val.labels, s.trigger, s.scale.attack.target, cfg,
                      seed, False, s.scale.device, s.scale.eval_batch_size)
    return {**at_chosen(res.curve, res.alpha), "norm": res.vector_norm, "sec": time.time() - t0}


def tbar_study(a) -> None:
    out, lines = log(f"victim-{a.attack}-tbar.txt", [
        f"{a.attack}: TBAR recipes on backdoored models of victim recipes; VALIDATION split (500 images), at the α "
        "the search chose (kept = val CA there / val CA at α = 0)",
        f"{'victim recipe':<22} {'TBAR recipe':<34} {'seed':>4} {'ASR bd':>6} {'alpha':>5} {'ASR':>5} {'kept':>5} "
        f"{'|tau|':>6} {'sec':>4}"])
    for item in a.grid:
        for titem in a.tbar:
            per_seed(a.seeds, lambda seed: tbar_validation(a.attack, seed, parse_recipe(item), parse_recipe(titem)),
                     lambda seed, r: f"{item or 'preset':<22} {titem or 'preset':<34} {seed:>4} {100 * r['asr0']:6.1f} "
                                     f"{r['alpha']:5.2f} {100 * r['asr']:5.1f} {100 * r['kept']:5.1f} "
                                     f"{r['norm']:6.3f} {r['sec']:4.0f}",
                     lambda m: f"{item or 'preset':<22} {(titem or 'preset') + ' (mean)':<34} {'':>4} {'':>6} {'':>5} "
                               f"{100 * m['asr']:5.1f} {100 * m['kept']:5.1f}", lines, out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--grid", nargs="+", default=[""], help='recipes, e.g. "" finetune.lr=2e-4,finetune.epochs=4')
    p.add_argument("--tbar", nargs="*", default=None, help='TBAR recipes, e.g. "" tbar.steps=30,tbar.lr=2e-4')
    a = p.parse_args()
    if a.tbar is not None:
        return tbar_study(a)
    out, lines = log(f"victim-{a.attack}.txt", [
        f"{a.attack}: the victim's fine-tune recipe, VALIDATION split (500 images), mini preset otherwise",
        f"{'recipe':<34} {'seed':>4} {'CA clean':>8} {'CA bd':>6} {'gap':>5} {'ASR bd':>6} {'sec':>5}"])
    for item in a.grid:
        recipe = parse_recipe(item)
        per_seed(a.seeds, lambda seed: validation_scores(a.attack, seed, recipe),
                 lambda seed, r: f"{item or 'preset':<34} {seed:>4} {100 * r['ca_clean']:8.1f} "
                                 f"{100 * r['ca_bd']:6.1f} {100 * (r['ca_clean'] - r['ca_bd']):5.1f} "
                                 f"{100 * r['asr_bd']:6.1f} {r['sec']:5.0f}",
                 lambda m: f"{(item or 'preset') + ' (mean)':<34} {'':>4} {100 * m['ca_clean']:8.1f} "
                           f"{100 * m['ca_bd']:6.1f} {100 * (m['ca_clean'] - m['ca_bd']):5.1f} "
                           f"{100 * m['asr_bd']:6.1f}", lines, out)


if __name__ == "__main__":
    main()

"""Attack unknown, image–text: is a miss the proxy's trigger vector or the α the proxy picks?

For each seed this rebuilds what ``tbar run --attack-unknown`` does (DECREE inversion on the backdoored
CLIP, target inference, the trigger vector from the proxy forget set), then evaluates θb − α·τ̂t on the
VALIDATION split over the preset's α grid twice: with the proxy trigger (what the defender sees and the α
search uses) and with the real trigger (what only the study knows). The test split is not read.
The "oracle" mark is the α the known-trigger rule would pick if the defender had the real trigger, "picked"
the α that rule picks with the proxy, and "budget" the α of the proxy rule (``tbar.proxy_ties="largest"``, the
preset since 2026-12-01): the largest α within a point of the lowest proxy ASR whose CA stays above the floor.

    python benchmarks/study_unknown_alpha.py --attack wanet --seeds 0 1 2 --set attack.wanet_s=16 attack.wanet_noise_ratio=0
"""
from __future__ import annotations

import argparse
import functools

from study_victim import preset_with

from tbar_helpers.imagetext import forget_pairs, imagetext_trigger_vector
from tbar_helpers.imagetext_runs import invert, setup_for
from tbar_helpers.inversion import infer_target
from tbar_helpers.tbar import alpha_curve, select_alpha

print = functools.partial(print, flush=True)


def one(attack: str, seed: int, scale) -> None:
    s = setup_for(attack, seed, scale, "image-text", progress=False)
    cfg, bs = scale.imagetext.tbar, scale.eval_batch_size
    clf_b = s.classifier()
    proxy = invert(s, s.defender.images, scale, seed, progress=False).trigger()
    target, share = infer_target(clf_b, s.val.images, proxy, bs)
    fx, fcaps = forget_pairs(s.defender, proxy, cfg.forget_size, s.seed)
    tau = imagetext_trigger_vector(s, clf_b, fx, fcaps, target, progress=False)
    grid = cfg.alpha_grid
    seen = alpha_curve(clf_b, tau, s.val.images, s.val.labels, proxy, target, grid, alpha_max=cfg.alpha_max, batch_size=bs)
    real = alpha_curve(clf_b, tau, s.val.images, s.val.labels, s.trigger, s.target, grid, alpha_max=cfg.alpha_max,
                       batch_size=bs)
    picked, oracle = select_alpha(seen, cfg.ca_keep), select_alpha(real, cfg.ca_keep)
    ref = seen[0].ca
    budget = select_alpha(seen, cfg.ca_keep, ties="largest")  # the whole CA budget spent
    print(f"\n{attack} seed {seed}: inferred target {target} ({100 * share:.0f}%, real {s.target}); "
          f"α picked with the proxy {picked:.1f}, with the real trigger (oracle) {oracle:.1f}, "
          f"largest above the CA floor {budget:.1f}")
    print(f"{'alpha':>6} {'CA kept':>8} {'proxy ASR':>10} {'real ASR':>9}")
    for p, r in zip(seen, real):
        mark = " <- picked" if p.alpha == picked else ""
        mark += " <- oracle" if p.alpha == oracle else ""
        mark += " <- budget" if p.alpha == budget else ""
        print(f"{p.alpha:6.1f} {100 * p.ca / ref:8.1f} {100 * p.asr:10.1f} {100 * r.asr:9.1f}{mark}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="wanet")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="preset overrides")
    a = p.parse_args()
    scale = preset_with(a.set)
    print(f"attack unknown, image-text, {a.attack}: α curves of the proxy trigger vector on VALIDATION "
          f"(overrides: {a.set or 'none'})")
    for seed in a.seeds:
        one(a.attack, seed, scale)


if __name__ == "__main__":
    main()

"""Does the coarse-to-fine α search pick the α of the full grid? And what does it save?

For each (attack, seed) it estimates τt exactly as TBAR does, evaluates the *full* validation α curve
once (timed), then replays the coarse-to-fine search on that recorded curve (its evaluations are a
subset of the grid's, so the replay is exact) and compares the two picks. Results:
benchmarks/results/alpha-search-<setting>.txt

    python benchmarks/check_alpha_search.py --setting classification --attacks badnet blended --seeds 0
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from tbar_helpers.config import get_scale
from tbar_helpers.tbar import alpha_curve, refine, select_alpha

print = functools.partial(print, flush=True)


def curve_and_setting(setting: str, attack: str, seed: int):
    """(full validation curve, grid, ca_keep, seconds for the full curve)."""
    scale = get_scale("mini")
    if setting == "image-text":
        from tbar_helpers.imagetext import forget_pairs, imagetext_trigger_vector, prepare_imagetext
        s = prepare_imagetext(attack, seed, scale, progress=False)
        it = scale.imagetext
        clf = s.classifier()
        fx, fcaps = forget_pairs(s.defender, s.trigger, it.tbar.forget_size, seed)
        tau = imagetext_trigger_vector(s, clf, fx, fcaps, progress=False)
        grid, keep, target, val = it.tbar.alpha_grid, it.tbar.ca_keep, s.target, s.val
    else:
        from tbar_helpers.pipeline import prepare
        from tbar_helpers.studies import backdoor_vector
        s = prepare(attack, None, seed, scale, progress=False, with_clean=False)
        clf = s.backdoored
        tau = backdoor_vector(s, "forget")  # TBAR's own estimate, as run_tbar makes it
        grid, keep, target, val = scale.tbar.alpha_grid, scale.tbar.ca_keep, scale.attack.target, s.val
    t0 = time.time()
    full = alpha_curve(clf, tau, val.images, val.labels, s.trigger, target, grid, scale.tbar.alpha_max)
    return full, grid, keep, time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--setting", choices=["classification", "image-text"], default="classification")
    p.add_argument("--attacks", nargs="+", default=["badnet", "blended"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    a = p.parse_args()
    out = Path(__file__).parent / "results" / f"alpha-search-{a.setting}.txt"
    lines = out.read_text().splitlines() if out.exists() else [
        f"alpha search, {a.setting}: full grid vs coarse-to-fine replayed on the same validation curve",
        f"{'attack':>10} {'seed':>4} {'grid pts':>8} {'c2f pts':>7} {'alpha grid':>10} {'alpha c2f':>9} "
        f"{'same':>5} {'grid sec':>8} {'c2f sec (est)':>13}"]
    print(*lines, sep="\n")
    for attack in a.attacks:
        for seed in a.seeds:
            full, grid, keep, secs = curve_and_setting(a.setting, attack, seed)
            table = {p.alpha: p for p in full}
            asked: list[float] = []

            def lookup(alphas):
                asked.extend(alphas)
                return [table[float(x)] for x in alphas]

            c2f = refine(lookup, grid, keep)
            ag, ac = select_alpha(full, keep), select_alpha(c2f, keep)
            line = (f"{attack:>10} {seed:>4} {len(full):>8} {len(asked):>7} {ag:>10.2f} {ac:>9.2f} {str(ag == ac):>5} "
                    f"{secs:>8.1f} {secs * len(asked) / len(full):>13.1f}")
            lines.append(line)
            print(line)
            out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

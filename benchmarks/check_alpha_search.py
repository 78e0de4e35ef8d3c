"""Does the coarse-to-fine α search pick the α of the full grid? And what does it save?

For each (attack, seed) it estimates τt exactly as TBAR does, evaluates the *full* validation α curve
once (timed), then replays the coarse-to-fine search on that recorded curve (its evaluations are a
subset of the grid's, so the replay is exact) and compares the two picks. Results:
benchmarks/results/alpha-search.jsonl

    python benchmarks/check_alpha_search.py --setting classification --attacks badnet blended --seeds 0

``--replay`` trains nothing: it replays the search with and without its early stop (``refine``'s
``stop_below_floor``) on every validation curve recorded in ``benchmarks/results/*.jsonl``, and
counts the evaluations saved and the chosen α that changed (benchmarks/results/alpha-search-replay.jsonl).

    python benchmarks/check_alpha_search.py --replay
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, dataclass, fields

from study import RESULTS, record
from tbar_helpers.config import get_scale
from tbar_helpers.method.tbar import AlphaPoint, alpha_curve, refine, select_alpha

print = functools.partial(print, flush=True)


def curve_and_setting(setting: str, attack: str, seed: int):
    """(full validation curve, grid, ca_keep, seconds for the full curve)."""
    scale = get_scale("mini")
    if setting == "image-text":
        from tbar_helpers.settings.imagetext import forget_pairs, imagetext_trigger_vector, prepare_imagetext
        s = prepare_imagetext(attack, seed, scale, progress=False)
        it = scale.imagetext
        clf = s.classifier()
        fx, fcaps = forget_pairs(s.defender, s.trigger, it.tbar.forget_size, seed)
        tau = imagetext_trigger_vector(s, clf, fx, fcaps, progress=False)
        grid, keep = it.tbar.alpha_grid, it.tbar.ca_keep
    else:
        from tbar_helpers.settings.pipeline import prepare
        from tbar_helpers.chapters.studies import backdoor_vector
        s = prepare(attack, None, seed, scale, progress=False, with_clean=False)
        clf = s.backdoored
        tau = backdoor_vector(s, "forget")  # TBAR's own estimate, as run_tbar makes it
        grid, keep = scale.tbar.alpha_grid, scale.tbar.ca_keep
    t0 = time.time()
    full = alpha_curve(clf, tau, s.evalset("val"), grid, alpha_max=scale.tbar.alpha_max)
    return full, grid, keep, time.time() - t0



def recorded_curves():
    """(study, line number, record) for every recorded run whose JSON line carries a validation α curve."""
    for f in sorted(RESULTS.glob("*.jsonl")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            r = json.loads(line)
            if isinstance(r, dict) and r.get("val_curve"):
                yield f.stem, i, r


@dataclass
class Tally:
    """Per runs folder: curves replayed, evaluations without and with the stop, α changed, curves skipped."""
    curves: int = 0
    evals: int = 0
    evals_stop: int = 0
    alpha_changed: int = 0
    not_replayable: int = 0

    def row(self, name: str) -> str:
        saved = 1 - self.evals_stop / max(self.evals, 1)
        return (f"{name:>28} {self.curves:>6} {self.evals:>6} {self.evals_stop:>9} {saved:>6.0%} "
                f"{self.alpha_changed:>13} {self.not_replayable:>14}")


def _replay_one(table: dict, grid: list[float], keep: float, ties: str, stop: bool) -> tuple[float, int]:
    """(chosen α, evaluations asked) of the search replayed on a recorded curve; KeyError if it asks an α the
    curve lacks."""
    asked: list[float] = []

    def lookup(alphas):
        asked.extend(alphas)
        return [table[round(x, 3)] for x in alphas]

    pts = refine(lookup, grid, keep, ties=ties, stop_below_floor=stop)
    return select_alpha(pts, keep, ties=ties), len(asked)


def replay() -> None:
    """Early stop or not, on the recorded curves: the same α? how many evaluations fewer?"""
    rows: dict[str, Tally] = {}
    lines, changed = [], []
    for folder, name, r in recorded_curves():
        tally = rows.setdefault(folder, Tally())
        table = {round(p["alpha"], 3): AlphaPoint(**p) for p in r["val_curve"]}
        al = sorted(table)
        step = min(b - a for a, b in zip(al, al[1:]))
        grid = [round(step * i, 3) for i in range(round(al[-1] / step) + 1)]
        keep, ties = r.get("ca_keep", 0.9), r.get("alpha_ties") or "smallest"
        try:
            (a_full, n_full), (a_stop, n_stop) = (_replay_one(table, grid, keep, ties, stop) for stop in (False, True))
        except KeyError:  # the curve was recorded on another plan: it cannot be replayed exactly
            tally.not_replayable += 1
            continue
        if n_full != len(table) or a_full != r["alpha"]:
            tally.not_replayable += 1
            continue
        tally.curves += 1
        tally.evals += n_full
        tally.evals_stop += n_stop
        tally.alpha_changed += a_full != a_stop
        if a_full != a_stop:
            changed.append({"study": folder, "line": name, "alpha": a_full, "alpha_with_stop": a_stop})
            lines.append(f"  differs: {folder}/{name} ({r.get('attack')}, seed {r.get('seed')}): {a_full} -> {a_stop}")
    lines.append(f"{'runs folder':>28} {'curves':>6} {'evals':>6} {'with stop':>9} {'saved':>6} {'alpha changed':>13} "
                 f"{'not replayable':>14}")
    lines += [t.row(folder) for folder, t in rows.items()]
    total = Tally(*(sum(getattr(t, f.name) for t in rows.values()) for f in fields(Tally)))
    lines.append(total.row("all"))
    print(*lines, sep="\n")
    record("alpha-search-replay", {"studies": {k: asdict(t) for k, t in rows.items()}, "all": asdict(total),
                                   "changed": changed})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--setting", choices=["classification", "image-text"], default="classification")
    p.add_argument("--attacks", nargs="+", default=["badnet", "blended"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--replay", action="store_true", help="replay the recorded curves with and without the early stop")
    a = p.parse_args()
    if a.replay:
        return replay()
    print(f"{'attack':>10} {'seed':>4} {'grid pts':>8} {'c2f pts':>7} {'alpha grid':>10} {'alpha c2f':>9} "
          f"{'same':>5} {'grid sec':>8} {'c2f sec (est)':>13}")
    for attack in a.attacks:
        for seed in a.seeds:
            full, grid, keep, secs = curve_and_setting(a.setting, attack, seed)
            table = {p.alpha: p for p in full}
            asked: list[float] = []

            def lookup(alphas):
                asked.extend(alphas)
                return [table[float(x)] for x in alphas]

            c2f = refine(lookup, grid, keep, stop_below_floor=False)
            ag, ac = select_alpha(full, keep), select_alpha(c2f, keep)
            print(f"{attack:>10} {seed:>4} {len(full):>8} {len(asked):>7} {ag:>10.2f} {ac:>9.2f} {str(ag == ac):>5} "
                  f"{secs:>8.1f} {secs * len(asked) / len(full):>13.1f}")
            record("alpha-search", {"setting": a.setting, "attack": attack, "seed": seed, "grid_points": len(full),
                                    "coarse_to_fine_points": len(asked), "alpha_grid": ag, "alpha_coarse_to_fine": ac,
                                    "grid_seconds": secs})


if __name__ == "__main__":
    main()

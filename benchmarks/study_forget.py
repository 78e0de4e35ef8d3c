"""Calibration study, part 1: the forget fine-tune (learning rate x steps) and the α search.

For each (attack, seed) it prepares the backdoored model (cached), then for each forget-set
learning rate and number of steps estimates τt, picks α on the validation set, and reports test CA,
ASR and CA kept. It also records ξ for two definitions of τt. Results: benchmarks/results/*.json.

    python benchmarks/study_forget.py --attacks badnet --seeds 0 --lrs 1e-5 3e-5 1e-4 --steps 10 30
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tbar_helpers.config import get_scale, override
from tbar_helpers.metrics import ca_retained
from tbar_helpers.pipeline import evaluate, make_forget_set, prepare, xi_heatmap
from tbar_helpers.task_vectors import TaskVector
from tbar_helpers.tbar import alpha_curve, apply_tbar, select_alpha, trigger_vector

OUT = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attacks", nargs="+", default=["badnet"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-5, 3e-5, 1e-4])
    p.add_argument("--steps", nargs="+", type=int, default=[10, 30])
    p.add_argument("--forget-size", type=int, default=None)
    p.add_argument("--xi", action="store_true", help="also compute xi heatmaps")
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value (e.g. finetune.lr=1e-4)")
    p.add_argument("--tag", default="forget")
    a = p.parse_args()
    scale = get_scale("mini")
    for kv in a.set:
        k, v = kv.split("=")
        scale = override(scale, **{k: json.loads(v)})
    rows = []
    for attack in a.attacks:
        for seed in a.seeds:
            s = prepare(attack, None, seed, scale, progress=False)
            ca_c, asr_c = evaluate(s.clean, s)
            ca_b, asr_b = evaluate(s.backdoored, s)
            base = {"attack": attack, "seed": seed, "ca_clean_ft": ca_c, "asr_clean_ft": asr_c,
                    "ca_backdoored": ca_b, "asr_backdoored": asr_b}
            print(json.dumps(base), flush=True)
            fx, fy = make_forget_set(s, a.forget_size or s.scale.tbar.forget_size)
            if a.xi:
                diff = TaskVector(s.clean.encoder, s.backdoored.encoder)
                base["xi_difference"] = xi_heatmap(s, diff)["xi"].tolist()
            for lr in a.lrs:
                for steps in a.steps:
                    cfg = override(s.scale.tbar, lr=lr, steps=steps)
                    t0 = time.time()
                    tau = trigger_vector(s.backdoored, fx, fy, cfg, seed, progress=False)
                    curve = alpha_curve(s.backdoored, tau, s.val.images, s.val.labels, s.trigger,
                                        s.scale.attack.target, cfg.alpha_grid)
                    alpha = select_alpha(curve, cfg.ca_keep)
                    ca_t, asr_t = evaluate(apply_tbar(s.backdoored, tau, alpha), s)
                    row = {**base, "lr": lr, "steps": steps, "alpha": alpha, "ca_tbar": ca_t, "asr_tbar": asr_t,
                           "ca_kept": ca_retained(ca_t, ca_b), "seconds": time.time() - t0,
                           "val_curve": [pt.__dict__ for pt in curve]}
                    if a.xi:
                        row["xi_forget"] = xi_heatmap(s, tau)["xi"].tolist()
                    rows.append(row)
                    print(f"{attack} s{seed} lr={lr:g} steps={steps}: alpha={alpha} CA {ca_b:.3f}->{ca_t:.3f} "
                          f"({100 * row['ca_kept']:.1f}% kept) ASR {asr_b:.3f}->{asr_t:.3f}", flush=True)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{a.tag}-{int(time.time())}.json"
    path.write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

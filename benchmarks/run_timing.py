"""How long the user waits: one ``tbar run`` (and where the time goes), and one α-slider update.

Runs the real console script twice in a fresh, empty model cache (the committed foundation checkpoint
is found in ``checkpoints/`` as usual): first ``--attack A1``, which trains the task's clean reference
fine-tune and the poisoned one, then ``--attack A2`` on the same task and seed, which finds the clean
reference cached and trains only its poisoned model. Wall time includes starting Python and importing
torch. Prints each run's seconds per stage (the record's ``stage_seconds``) and the ratio to the
3-minute target of the foundation issue; appends one JSON line per run to
``benchmarks/results/run-timing.jsonl``.

    python benchmarks/run_timing.py --attacks badnet blended --seed 0

``widget`` times chapter 5's live α slider instead (target ≤ 0.5 s per update). One update = θb − α·τt
loaded into the encoder, predictions for the probe's clean and triggered images, and the widget's HTML
redrawn; each α is new (no memo hit), the worst case for a reader. One JSON line to
``benchmarks/results/widget-latency.jsonl``. (The HTML book's precomputed controls are a lookup: the
browser test measures them.)

    python benchmarks/run_timing.py widget [--attack badnet] [--n 128] [--updates 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study import record

TARGET_S = 180.0
WIDGET_TARGET_S = 0.5


def widget(argv: list[str]) -> None:
    from tbar_helpers.chapters.widgets import AlphaProbe, alpha_widget
    from tbar_helpers.method.tbar import trigger_vector
    from tbar_helpers.settings.pipeline import make_forget_set, prepare
    p = argparse.ArgumentParser(prog="run_timing.py widget")
    p.add_argument("--attack", default="badnet")
    p.add_argument("--n", type=int, default=128, help="clean and triggered images per update")
    p.add_argument("--updates", type=int, default=10)
    a = p.parse_args(argv)
    s = prepare(a.attack, progress=False)
    fx, fy = make_forget_set(s, s.scale.tbar.forget_size)
    tau = trigger_vector(s.backdoored, fx, fy, s.scale.tbar, s.seed, progress=False)
    probe = AlphaProbe(s, tau, n=a.n)
    slider = alpha_widget(probe).children[0]
    times = []
    for i in range(1, a.updates + 1):
        t0 = time.perf_counter()
        slider.value = round(0.1 * i + 0.05, 2)  # fires the widget's own callback
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    slider.value = round(0.1 + 0.05, 2)
    memo = time.perf_counter() - t0
    mean, worst = statistics.mean(times), max(times)
    print(f"alpha widget, {a.attack}, {len(probe.x)} clean + {len(probe.xt)} triggered images per update\n"
          f"new alpha: mean {mean:.3f} s, max {worst:.3f} s over {len(times)} updates; repeated alpha: "
          f"{memo * 1000:.1f} ms\nratio to the {WIDGET_TARGET_S} s target: mean {mean / WIDGET_TARGET_S:.2f}, "
          f"max {worst / WIDGET_TARGET_S:.2f}")
    record("widget-latency", {"attack": a.attack, "clean_images": len(probe.x), "triggered_images": len(probe.xt),
                              "update_seconds": times, "mean_seconds": mean, "max_seconds": worst,
                              "repeated_seconds": memo, "ratio_to_target": mean / WIDGET_TARGET_S})


def main() -> None:
    if sys.argv[1:2] == ["widget"]:
        return widget(sys.argv[2:])
    p = argparse.ArgumentParser()
    p.add_argument("--attacks", nargs="+", default=["badnet", "blended"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    tbar = Path(sys.executable).with_name("tbar")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TBAR_CACHE": tmp}
        for i, attack in enumerate(a.attacks):
            out = Path(tmp) / f"{attack}.json"
            t0 = time.time()
            subprocess.run([str(tbar), "run", "--attack", attack, "--seed", str(a.seed), "--quiet", "--out", str(out)],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            wall = time.time() - t0
            rec = json.loads(out.read_text())
            stages = ", ".join(f"{k} {v:.1f}" for k, v in rec["stage_seconds"].items())
            state = "clean reference trained" if i == 0 else "clean reference cached"
            print(f"tbar run --attack {attack:<10} ({state}): wall {wall:6.1f} s = {wall / TARGET_S:.2f}x the "
                  f"3-minute target | in-process {rec['seconds']:.1f} s: {stages} | CA {100 * rec['ca_backdoored']:.1f}"
                  f" -> {100 * rec['ca_tbar']:.1f}, ASR {100 * rec['asr_backdoored']:.1f} -> {100 * rec['asr_tbar']:.1f}",
                  flush=True)
            # every measurement stays: this machine's speed varies by day
            record("run-timing", {"attack": attack, "seed": a.seed, "cores": os.cpu_count(), "clean_cached": i > 0,
                                  "wall_seconds": wall, "ratio_to_target": wall / TARGET_S,
                                  "stage_seconds": rec["stage_seconds"], "seconds": rec["seconds"]})


if __name__ == "__main__":
    main()

"""Latency of one α-slider update (chapter 5's widget) at mini scale; target ≤ 0.5 s.

One update = θb − α·τt loaded into the encoder, predictions for the probe's clean and triggered
images, and the widget's HTML redrawn. Each α is new (no memo hit), the worst case for a reader.
Appends what it measured, with the commit and the CPU, as a JSON line to
``benchmarks/results/widget-latency.jsonl``.

    python benchmarks/widget_latency.py [--attack badnet] [--n 128] [--updates 10]
"""
from __future__ import annotations

import argparse
import statistics
import time

from study import record

from tbar_helpers.chapters.widgets import AlphaProbe, alpha_widget
from tbar_helpers.method.tbar import trigger_vector
from tbar_helpers.settings.pipeline import make_forget_set, prepare

TARGET_S = 0.5


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--n", type=int, default=128, help="clean and triggered images per update")
    p.add_argument("--updates", type=int, default=10)
    a = p.parse_args()
    s = prepare(a.attack, progress=False)
    fx, fy = make_forget_set(s, s.scale.tbar.forget_size)
    tau = trigger_vector(s.backdoored, fx, fy, s.scale.tbar, s.seed, progress=False)
    probe = AlphaProbe(s, tau, n=a.n)
    box = alpha_widget(probe)
    slider = box.children[0]
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
          f"{memo * 1000:.1f} ms\nratio to the {TARGET_S} s target: mean {mean / TARGET_S:.2f}, max {worst / TARGET_S:.2f}")
    record("widget-latency", {"attack": a.attack, "clean_images": len(probe.x), "triggered_images": len(probe.xt),
                              "update_seconds": times, "mean_seconds": mean, "max_seconds": worst,
                              "repeated_seconds": memo, "ratio_to_target": mean / TARGET_S})

if __name__ == "__main__":
    main()

"""Time ``make book``: cold (empty model and notebook caches; the foundation ships) and warm
(again with nothing changed). Targets: cold ≤ 15 min, warm ≤ 3 min on 2 cores. Appends what it measured,
with the commit and the CPU, to benchmarks/results/book-build-<date>.txt.

    python benchmarks/book_build.py            # cold into a fresh cache dir, then warm
    python benchmarks/book_build.py --warm     # warm only, with the default cache
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import commit, cpu_flags, save

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold": 15 * 60, "warm": 3 * 60}


def run(env: dict) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "tbar_helpers.book"], cwd=ROOT, env=env, check=True)
    return time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--warm", action="store_true", help="skip the cold build")
    a = p.parse_args()
    env = dict(os.environ)
    started = time.strftime("%Y-%m-%d %H:%M")
    results = {}
    if not a.warm:
        env["TBAR_CACHE"] = tempfile.mkdtemp(prefix="tbar-cold-")
        results["cold"] = run(env)
        per_nb = json.loads((ROOT / "_build" / "build-times.json").read_text())
    results["warm"] = run(env)
    lines = [f"# python benchmarks/book_build.py{' --warm' if a.warm else ''}   ({os.cpu_count()} cores, {started}, "
             f"commit {commit()}; "
             f"{'the current cache' if a.warm else 'cold = fresh TBAR_CACHE, foundation shipped'}; book profile)",
             f"# CPU: {cpu_flags()}"]
    for k, v in results.items():
        lines.append(f"{k} build: {v / 60:.1f} min; ratio to the {TARGETS[k] / 60:.0f}-min target: {v / TARGETS[k]:.2f}")
    if not a.warm:
        lines += [f"  cold {r['notebook']}: {r['seconds']:.0f} s" for r in per_nb["notebooks"]]
    save(f"book-build-{started[:10]}.txt", lines, append=True)


if __name__ == "__main__":
    main()

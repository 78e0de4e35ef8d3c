"""Time ``make book``: cold (empty model and notebook caches; the foundation ships) and warm
(again with nothing changed). Targets: cold ≤ 15 min, warm ≤ 3 min on 2 cores. Appends one JSON line per
build, with the commit and the CPU, to benchmarks/results/book-build.jsonl (the introduction quotes them).

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

from study import record

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
    for build, seconds in results.items():
        rec = {"build": build, "minutes": seconds / 60, "started": started, "cores": os.cpu_count(),
               "command": "python benchmarks/book_build.py" + (" --warm" if a.warm else ""),
               "cache": "the current cache" if a.warm else "a fresh TBAR_CACHE, the foundation shipped"}
        if build == "cold":
            rec["notebooks"] = {r["notebook"]: round(r["seconds"]) for r in per_nb["notebooks"]}
        record("book-build", rec)
        print(f"{build} build: {seconds / 60:.1f} min; ratio to the {TARGETS[build] / 60:.0f}-min target: "
              f"{seconds / TARGETS[build]:.2f}")

if __name__ == "__main__":
    main()

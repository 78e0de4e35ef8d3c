"""How long one ``tbar run`` takes on this machine, and where the time goes.

Runs the real console script twice in a fresh, empty model cache (the committed foundation checkpoint
is found in ``checkpoints/`` as usual): first ``--attack A1``, which trains the task's clean reference
fine-tune and the poisoned one, then ``--attack A2`` on the same task and seed, which finds the clean
reference cached and trains only its poisoned model. Wall time includes starting Python and importing
torch. Prints each run's seconds per stage (the record's ``stage_seconds``) and the ratio to the
3-minute target of the foundation issue; appends one JSON line per run to
``benchmarks/results/run-timing.jsonl``.

    python benchmarks/run_timing.py --attacks badnet blended --seed 0
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

TARGET_S = 180.0


def main() -> None:
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

"""Did the paper-scale work make the mini scale slower? The same mini fine-tune and evaluation at two commits.

Issue 24 (streaming data, DDP, sharded evaluation, resumable fine-tunes) rewrote the loop every mini
fine-tune runs through. This program checks out ``--base`` (by default 9d2e66b, the last commit before
that work) into a temporary git worktree and runs, in a fresh process for each commit in turn (base,
HEAD, base, HEAD, ...), one clean fine-tune of the preset's foundation on the default task through
``training.finetune_task`` followed by ``metrics.predict`` on the test images: the two kinds of work the mini
book is made of. Both commits must print the same accuracy (the same computation), and the ratio
HEAD / base of the wall time is taken pair by pair, so that a slower moment of the machine hits both.
Prints every pair and the median ratio and appends them to benchmarks/results/mini-path.jsonl.

    python benchmarks/mini_path.py
    python benchmarks/mini_path.py --base 9d2e66b --rounds 5 --epochs 4 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study import record

ROOT = Path(__file__).resolve().parent.parent
# The same program at both commits: only names that exist, with these signatures, at both
CHILD = """
import dataclasses, sys, torch
tree, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, tree)
torch.set_num_threads(threads)
import tbar_helpers
assert tbar_helpers.__file__.startswith(tree), tbar_helpers.__file__
from tbar_helpers.config import get_scale
from tbar_helpers.method.metrics import predict
from tbar_helpers.method.training import finetune_task
from tbar_helpers.world.data import load_task
from tbar_helpers.world.foundation import load_foundation
from tbar_helpers.world.models import make_classifier
scale = get_scale("mini")
f = load_foundation(scale, train_if_missing=False, progress=False)
train, test = load_task("objects", "train", 1024, seed=0), load_task("objects", "test", 1000, seed=0)
clf = make_classifier(f.model, f.tokenizer, train.classnames, train.templates, scale.model)
finetune_task(clf, train.images, train.labels, dataclasses.replace(scale.finetune, epochs=epochs), seed=0,
              progress=False)
print((predict(clf, test.images, 256) == test.labels).float().mean().item())
"""


def timed(tree: Path, epochs: int, threads: int) -> tuple[float, str]:
    """(wall seconds, printed accuracy) of one fresh process running CHILD against ``tree``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(epochs), str(threads)], capture_output=True,
                       text=True, env=env, cwd=tree)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"the run at {tree} failed:\n{r.stderr[-2000:]}")
    return wall, r.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="9d2e66b", help="the commit to compare HEAD with")
    p.add_argument("--rounds", type=int, default=5, help="pairs of runs (plus one warm-up pair, not counted)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the fine-tune over 1,024 images")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), a.base], cwd=ROOT, check=True)
        try:
            pairs = []
            for i in range(a.rounds + 1):
                (tb, acc_b), (th, acc_h) = timed(base, a.epochs, a.threads), timed(ROOT, a.epochs, a.threads)
                if acc_b != acc_h:
                    sys.exit(f"the two commits computed different accuracies ({acc_b} at {a.base}, {acc_h} at "
                             "HEAD): the comparison is not of the same work")
                if i:  # the first pair warms the disk cache
                    pairs.append((tb, th))
                    print(f"pair {i}: base {tb:.1f} s, HEAD {th:.1f} s, HEAD/base {th / tb:.3f}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    ratios = [th / tb for tb, th in pairs]
    median = statistics.median(ratios)
    print(f"HEAD/base wall time: median {median:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}), "
          f"accuracy {acc_h} at both")
    record("mini-path", {"base": a.base, "epochs": a.epochs, "threads": a.threads, "accuracy": float(acc_h),
                         "seconds": [[round(tb, 2), round(th, 2)] for tb, th in pairs],
                         "ratio_median": round(median, 3), "ratio_min": round(min(ratios), 3),
                         "ratio_max": round(max(ratios), 3)})


if __name__ == "__main__":
    main()

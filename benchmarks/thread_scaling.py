"""Would the book build faster with two notebooks at a time? Fine-tune throughput on this machine.

Times 30 fine-tune steps of the preset's encoder (objects task, preset batch size) with 2 torch
threads, with 1 thread, and as two 1-thread processes side by side, and prints images per second and
the ratios. If two single-thread processes together beat one 2-thread process, executing notebooks
in parallel would shorten a cold ``make book``. It also says whether a 1-thread and a 2-thread
fine-tune give the same weights (if not, a build with 1-thread notebooks would change every recorded
number), and which vector instructions the CPU offers. Results: one JSON line per run in
benchmarks/results/thread-scaling.jsonl

    python benchmarks/thread_scaling.py

Each worker sets its thread count *after* loading the foundation (``load_foundation`` applies the
preset's ``threads``), checks it, and waits for a start signal, so the side-by-side workers time their
fine-tunes over the same seconds. (Before 2026-12-02 neither was done: the "1-thread" workers ran with 2
threads, the pair started its timers while the other was still loading, and the file recorded 1.04x and
0.24x; those lines are kept below, marked as an artefact.)
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time

from study import record

STEPS = 30


def one(threads: int, wait: bool) -> tuple[float, str]:
    """Images per second of ``STEPS`` fine-tune steps with ``threads`` torch threads (this process), and a
    digest of the weights they reach. With ``wait``, prints ``ready`` and waits for a line on stdin first."""
    import copy
    import torch
    from tbar_helpers.config import get_scale
    from tbar_helpers.world.data import load_task
    from tbar_helpers.world.foundation import load_foundation
    from tbar_helpers.world.models import make_classifier
    from tbar_helpers.method.training import finetune
    s = get_scale("mini")
    f = load_foundation(s, progress=False)
    d = load_task(s.default_task, "train", 2048, 0, s.model.image_size, "")
    clf = copy.deepcopy(make_classifier(f.model, f.tokenizer, d.classnames, d.templates, s.model, "cpu"))
    torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads, (torch.get_num_threads(), threads)
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()
    t0 = time.time()
    finetune(clf, d.images, d.labels, steps=STEPS, lr=s.finetune.lr, batch_size=s.finetune.batch_size,
             seed=0, progress=False)
    rate = STEPS * s.finetune.batch_size / (time.time() - t0)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in clf.encoder.parameters()))
    return rate, digest.hexdigest()[:12]


def spawn(threads: int, wait: bool = False) -> subprocess.Popen:
    args = [sys.executable, __file__, "--worker", str(threads)] + (["--wait"] if wait else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def result(p: subprocess.Popen) -> tuple[float, str]:
    out = p.communicate()[0].split()
    return float(out[-2]), out[-1]


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        rate, digest = one(int(sys.argv[2]), "--wait" in sys.argv)
        print(rate, digest)
        return
    two, w2 = result(spawn(2))
    single, w1 = result(spawn(1))
    pair = [spawn(1, wait=True), spawn(1, wait=True)]
    for p in pair:
        assert p.stdout.readline().strip() == "ready"
    for p in pair:
        p.stdin.write("go\n")
        p.stdin.flush()
    side = [result(p)[0] for p in pair]
    same = "the same weights" if w1 == w2 else f"different weights ({w1} against {w2})"
    print(f"one process, 2 threads: {two:.0f} img/s\n"
          f"one process, 1 thread:  {single:.0f} img/s  (ratio to 2 threads: {single / two:.2f})\n"
          f"two 1-thread processes side by side: {side[0]:.0f} + {side[1]:.0f} = {sum(side):.0f} img/s "
          f"(ratio to one 2-thread process: {sum(side) / two:.2f})\n1 thread and 2 threads reach {same} after {STEPS} steps")
    record("thread-scaling", {"steps": STEPS, "img_per_s_2_threads": two, "img_per_s_1_thread": single,
                              "img_per_s_two_1_thread_processes": side, "ratio_1_to_2_threads": single / two,
                              "ratio_side_by_side_to_2_threads": sum(side) / two, "same_weights": w1 == w2})

if __name__ == "__main__":
    main()

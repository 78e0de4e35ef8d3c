"""Would the book build faster with two notebooks at a time? Fine-tune throughput on this machine.

Times 30 fine-tune steps of the preset's encoder (objects task, preset batch size) with 2 torch
threads, with 1 thread, and as two 1-thread processes side by side, and prints images per second and
the ratios. If two single-thread processes together beat one 2-thread process, executing notebooks
in parallel would shorten a cold ``make book``. Results: benchmarks/results/thread-scaling.txt

    python benchmarks/thread_scaling.py
"""
from __future__ import annotations

import subprocess
import sys
import time

from results_io import save

STEPS = 30


def one(threads: int) -> float:
    """Images per second of ``STEPS`` fine-tune steps with ``threads`` torch threads (this process)."""
    import copy
    from tbar_helpers.config import get_scale
    from tbar_helpers.data import load_task
    from tbar_helpers.foundation import load_foundation
    from tbar_helpers.models import make_classifier
    from tbar_helpers.training import finetune, set_threads
    set_threads(threads)
    s = get_scale("mini")
    f = load_foundation(s, progress=False)
    d = load_task(s.default_task, "train", 2048, 0, s.model.image_size, "")
    clf = copy.deepcopy(make_classifier(f.model, f.tokenizer, d.classnames, d.templates, s.model, "cpu"))
    t0 = time.time()
    finetune(clf, d.images, d.labels, steps=STEPS, lr=s.finetune.lr, batch_size=s.finetune.batch_size,
             seed=0, progress=False)
    return STEPS * s.finetune.batch_size / (time.time() - t0)


def spawn(threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", str(threads)], stdout=subprocess.PIPE, text=True)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        print(one(int(sys.argv[2])))
        return
    two = float(spawn(2).communicate()[0])
    single = float(spawn(1).communicate()[0])
    pair = [spawn(1), spawn(1)]
    side = [float(p.communicate()[0]) for p in pair]
    lines = [f"# python benchmarks/thread_scaling.py   ({time.strftime('%Y-%m-%d')}, {STEPS} fine-tune steps, preset batch)",
             f"one process, 2 threads: {two:.0f} img/s",
             f"one process, 1 thread:  {single:.0f} img/s  (ratio to 2 threads: {single / two:.2f})",
             f"two 1-thread processes side by side: {side[0]:.0f} + {side[1]:.0f} = {sum(side):.0f} img/s "
             f"(ratio to one 2-thread process: {sum(side) / two:.2f})"]
    print(*lines, sep="\n")
    save("thread-scaling.txt", lines)


if __name__ == "__main__":
    main()

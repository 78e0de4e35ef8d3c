"""Inference speed of the mini classifier against the evaluation batch size (``eval_batch_size``).

Every CA, ASR and α-curve point is a batched forward pass of the image encoder, so the batch size
decides about a fifth of a ``tbar run``. Times :func:`tbar_helpers.metrics.predict` on 2,000 random
32×32 images (the test split's size) with the committed foundation's encoder, several rounds in turn
so that a busy moment hits every size alike, and prints the median images/s and the ratio to the
slowest size. Writes ``benchmarks/results/eval-batch.txt``.

    python benchmarks/eval_batch.py --sizes 100 200 256 500 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from tbar_helpers.config import get_scale
from tbar_helpers.foundation import load_foundation
from tbar_helpers.metrics import predict
from tbar_helpers.models import ImageClassifier, image_stats
from tbar_helpers.training import set_threads

OUT = Path(__file__).parent / "results" / "eval-batch.txt"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 256, 500])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=2000)
    a = p.parse_args()
    scale = get_scale("mini")
    set_threads(scale.threads)
    f = load_foundation(scale, train_if_missing=False)
    mean, std = image_stats(scale.model)
    dim = f.model.visual.output_dim
    clf = ImageClassifier(f.model.visual, torch.nn.functional.normalize(torch.randn(80, dim), dim=-1), mean, std,
                          image_size=scale.model.image_size)
    x = torch.rand(a.images, 3, scale.model.image_size, scale.model.image_size, generator=torch.Generator().manual_seed(0))
    predict(clf, x[:500])  # warm-up
    rates: dict[int, list[float]] = {b: [] for b in a.sizes}
    for _ in range(a.rounds):
        for b in a.sizes:
            t0 = time.perf_counter()
            predict(clf, x, b)
            rates[b].append(a.images / (time.perf_counter() - t0))
    med = {b: statistics.median(v) for b, v in rates.items()}
    slow = min(med.values())
    lines = [f"# python benchmarks/eval_batch.py --sizes {' '.join(map(str, a.sizes))} --rounds {a.rounds}  "
             f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
             f"{a.images} images, preset eval_batch_size {scale.eval_batch_size})",
             f"{'batch':>6} {'median img/s':>13} {'x slowest':>10}   rounds"]
    for b in a.sizes:
        lines.append(f"{b:>6} {med[b]:>13.0f} {med[b] / slow:>10.2f}   " + " ".join(f"{r:.0f}" for r in rates[b]))
    print("\n".join(lines))
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

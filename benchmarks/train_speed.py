"""Can the fine-tunes or the evaluations run faster on this CPU without changing the method?

Times the preset's fine-tune step (objects task, batch 128, AdamW, gradient clipping) as the package
runs it (eager, ``foreach`` AdamW), with ``fused=True`` AdamW, and under ``torch.compile``; then the
forward pass in inference mode (batches of 256) against a plain matrix product of the same shape as the
MLP's first layer, to see how far the model is from the machine's GEMM peak. bfloat16 autocast is timed
too, for the step and for inference (it changes every number, so it is a measurement, not an option of
the package). Last, evaluation against its batch size (``eval_batch_size``): :func:`tbar_helpers.method.metrics.predict`
on 2,000 random images (the test split's size), several rounds in turn so that a busy moment hits every size
alike. Prints images per second and ratios, and appends them as one JSON line, with the CPU's vector
extensions (a day's machine may differ), to benchmarks/results/train-speed.jsonl.

    python benchmarks/train_speed.py
    python benchmarks/train_speed.py --sizes 100 200 256 500 --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from study import record
from tbar_helpers.config import get_scale
from tbar_helpers.method.metrics import predict
from tbar_helpers.world.data import load_task
from tbar_helpers.world.foundation import load_foundation
from tbar_helpers.world.models import make_classifier

STEPS = 30


def fine_tune_rate(clf, images, labels, mode: str, batch: int) -> tuple[float, float]:
    """(images per second over STEPS steps, seconds of the first step) for one way of running the step."""
    clf = copy.deepcopy(clf).train()
    params = [p for p in clf.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=mode == "fused AdamW")
    model = torch.compile(clf) if mode == "torch.compile" else clf

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % len(images)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
            logits = model(images[idx])
        loss = F.cross_entropy(logits.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    t0 = time.time()
    step(0)
    first = time.time() - t0
    t0 = time.time()
    for i in range(1, STEPS + 1):
        step(i)
    return STEPS * batch / (time.time() - t0), first


def eval_batch_rates(clf, images: torch.Tensor, sizes: list[int], rounds: int) -> dict[int, float]:
    """Median images per second of :func:`predict` at each batch size, the sizes taking turns each round."""
    predict(clf, images[:500])  # warm-up
    rates: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            t0 = time.perf_counter()
            predict(clf, images, b)
            rates[b].append(len(images) / (time.perf_counter() - t0))
    return {b: statistics.median(v) for b, v in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 256, 500], help="evaluation batch sizes")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    s = get_scale("mini")
    f = load_foundation(s, progress=False)
    d = load_task(s.default_task, "train", 2048, 0, s.model.image_size, "")
    clf = make_classifier(f.model, f.tokenizer, d.classnames, d.templates, s.model, "cpu")
    rec = {"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": STEPS,
           "batch": s.finetune.batch_size, "finetune_img_per_s": {}, "inference": {}}
    base = None
    for mode in ("eager (the package)", "fused AdamW", "torch.compile", "bf16 autocast"):
        rate, first = fine_tune_rate(clf, d.images, d.labels, mode, s.finetune.batch_size)
        base = base or rate
        rec["finetune_img_per_s"][mode] = rate
        print(f"fine-tune, {mode:<20}: {rate:6.0f} img/s ({rate / base:.2f}x), first step {first:5.1f} s", flush=True)
    width, tokens = s.model.vision_width, (s.model.image_size // s.model.patch_size) ** 2 + 1
    layer = width * (3 * width + width + 2 * 4 * width)  # multiply-adds per token and layer: qkv, out, MLP
    flops = 2 * tokens * s.model.vision_layers * layer
    ev = clf.eval()
    for dtype in (torch.float32, torch.bfloat16):
        low = dtype != torch.float32
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            ev(d.images[:256])
            t0 = time.time()
            for i in range(4):
                ev(d.images[i * 256:(i + 1) * 256])
            rate = 1024 / (time.time() - t0)
            x, w = torch.randn(256 * tokens, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
            x @ w
            t0 = time.time()
            for _ in range(20):
                x @ w
            peak = 20 * 2 * x.shape[0] * width * 4 * width / (time.time() - t0)
        name = str(dtype).removeprefix("torch.")
        rec["inference"][name] = {"img_per_s": rate, "gflops": rate * flops / 1e9, "gemm_gflops": peak / 1e9}
        print(f"inference{' (bf16 autocast)' if low else ''}: {rate:.0f} img/s = {rate * flops / 1e9:.0f} "
              f"GFLOP/s in the encoder's matrix products; a plain {x.shape[0]}x{width}x{4 * width} "
              f"{name} product runs at {peak / 1e9:.0f} GFLOP/s ({rate * flops / peak:.2f} of it)")
    x = torch.rand(2000, 3, s.model.image_size, s.model.image_size, generator=torch.Generator().manual_seed(0))
    med = eval_batch_rates(ev, x, a.sizes, a.rounds)
    for b, r in med.items():
        print(f"evaluation, batch {b:>4}: {r:6.0f} img/s ({r / min(med.values()):.2f}x the slowest size)")
    record("train-speed", {**rec, "eval_batch_img_per_s": med, "eval_batch_size": s.eval_batch_size})


if __name__ == "__main__":
    main()

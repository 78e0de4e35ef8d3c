"""Can the fine-tunes or the evaluations run faster on this CPU without changing the method?

Times the preset's fine-tune step (objects task, batch 128, AdamW, gradient clipping) as the package
runs it (eager, ``foreach`` AdamW), with ``fused=True`` AdamW, and under ``torch.compile``; then the
forward pass in inference mode (batches of 256) against a plain matrix product of the same shape as the
MLP's first layer, to see how far the model is from the machine's GEMM peak. bfloat16 autocast is timed
too, for the step and for inference (it changes every number, so it is a measurement, not an option of
the package). Prints images per second and ratios, and appends them to
benchmarks/results/train-speed.txt with the CPU's vector extensions (a day's machine may differ).

    python benchmarks/train_speed.py
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from results_io import cpu_flags, save
from tbar_helpers.config import get_scale
from tbar_helpers.data import load_task
from tbar_helpers.foundation import load_foundation
from tbar_helpers.models import make_classifier

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


def main() -> None:
    s = get_scale("mini")
    f = load_foundation(s, progress=False)
    d = load_task(s.default_task, "train", 2048, 0, s.model.image_size, "")
    clf = make_classifier(f.model, f.tokenizer, d.classnames, d.templates, s.model, "cpu")
    lines = [f"# python benchmarks/train_speed.py   ({time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} torch "
             f"threads, torch {torch.__version__}; {STEPS} fine-tune steps of batch {s.finetune.batch_size})",
             f"# CPU: {cpu_flags()}"]
    base = None
    for mode in ("eager (the package)", "fused AdamW", "torch.compile", "bf16 autocast"):
        rate, first = fine_tune_rate(clf, d.images, d.labels, mode, s.finetune.batch_size)
        base = base or rate
        lines.append(f"fine-tune, {mode:<20}: {rate:6.0f} img/s ({rate / base:.2f}x), first step {first:5.1f} s")
        print(lines[-1], flush=True)
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
            a, b = torch.randn(256 * tokens, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
            a @ b
            t0 = time.time()
            for _ in range(20):
                a @ b
            peak = 20 * 2 * a.shape[0] * width * 4 * width / (time.time() - t0)
        lines.append(f"inference{' (bf16 autocast)' if low else ''}: {rate:.0f} img/s = {rate * flops / 1e9:.0f} "
                     f"GFLOP/s in the encoder's matrix products; a plain {a.shape[0]}x{width}x{4 * width} "
                     f"{str(dtype).removeprefix('torch.')} product runs at {peak / 1e9:.0f} GFLOP/s "
                     f"({rate * flops / peak:.2f} of it)")
        print(lines[-1])
    save("train-speed.txt", lines, append=True)


if __name__ == "__main__":
    main()

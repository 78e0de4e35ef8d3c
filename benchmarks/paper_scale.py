"""The paper scale's costs: memory flat in dataset size, data loading that keeps up, and GPU throughput.

``data``: writes 224×224 JPEGs in an ImageFolder (1k, then 10k), and in a fresh process for each size reads
every image through ``world.streaming`` (DataLoader, batch 64): peak RSS must not grow with the dataset
(the in-memory path would hold 0.6 GB per 1k images as float32). Then the training throughput of ViT-B/32
(random weights) at batch 32, fed by the DataLoader (2 workers) against the same images as in-memory
tensors: the ratio says whether loading slows training. One JSON line to ``results/paper-data.jsonl``.

``gpu`` (run by ``paper_gpu.sh``, also under torchrun): images/s of the poisoned fine-tune step (bf16
autocast) and of evaluation for ViT-B/32 at 224 on synthetic data, and peak GPU memory; rank 0 prints one
JSON line and appends it to ``results/paper-gpu.jsonl``.

    python benchmarks/paper_scale.py data [--sizes 1000 10000]
    bash benchmarks/paper_gpu.sh
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from study import record

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_images(root: Path, n: int, classes: int = 10, size: int = 224) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # smooth-ish, JPEG-sized like photos
        Image.fromarray(base).resize((size, size), Image.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)


def read_all(folder: str) -> dict:
    """Child process: stream every image once; report peak RSS and seconds."""
    from tbar_helpers.world import streaming as S
    ds = S.image_folder(folder, 224)
    t0, seen, acc = time.time(), 0, 0.0
    for x, _ in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=0):
        seen += len(x)
        acc += float(x.mean())
    return {"images": seen, "seconds": time.time() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_rate(batches, model, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    it, n, t0 = iter(batches), 0, None
    for step in range(steps + 1):
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            t0 = time.time()  # the first step warms up
        else:
            n += len(x)
    return n / (time.time() - t0)


def data(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="paper_scale.py data")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--steps", type=int, default=8, help="training steps per throughput measurement")
    a = p.parse_args(argv)
    out = {"sizes": a.sizes, "read": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            folder = Path(tmp) / f"n{n}"
            write_images(folder, n)
            child = subprocess.run([sys.executable, __file__, "_read", str(folder)], capture_output=True, text=True,
                                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            out["read"][n] = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{n:>6} images streamed: peak RSS {out['read'][n]['peak_rss_mb']:.0f} MB, "
                  f"{out['read'][n]['images'] / out['read'][n]['seconds']:.0f} images/s", flush=True)
        lo, hi = out["read"][a.sizes[0]], out["read"][a.sizes[-1]]
        out["rss_ratio"] = hi["peak_rss_mb"] / lo["peak_rss_mb"]
        from tbar_helpers.world import streaming as S
        import open_clip
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None).visual
        head = torch.nn.Sequential(model, torch.nn.Linear(512, 10))
        folder = Path(tmp) / f"n{a.sizes[0]}"
        ds = S.image_folder(folder, 224)
        loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, drop_last=True)
        xs, ys = zip(*(ds[i] for i in range(32 * (a.steps + 1))))
        mem_x, mem_y = torch.stack(xs), torch.tensor(ys)
        in_memory = ((mem_x[i:i + 32], mem_y[i:i + 32]) for i in range(0, len(mem_x), 32))
        out["train_images_per_s_in_memory"] = train_rate(in_memory, head, a.steps)
        out["train_images_per_s_dataloader"] = train_rate(loader, head, a.steps)
    out["throughput_ratio"] = out["train_images_per_s_dataloader"] / out["train_images_per_s_in_memory"]
    print(f"peak RSS, {a.sizes[-1]} against {a.sizes[0]} images: {out['rss_ratio']:.3f}x (target < 1.2)\n"
          f"ViT-B/32 training, DataLoader against in-memory tensors: {out['throughput_ratio']:.2f}x (target ≥ 0.8; "
          f"{out['train_images_per_s_dataloader']:.1f} and {out['train_images_per_s_in_memory']:.1f} images/s)")
    record("paper-data", {**out, "read": {str(k): v for k, v in out["read"].items()}, "threads": torch.get_num_threads()})


def gpu(argv: list[str]) -> None:
    from tbar_helpers.method import distributed as D
    p = argparse.ArgumentParser(prog="paper_scale.py gpu")
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args(argv)
    import open_clip
    dist = D.init("auto")
    torch.manual_seed(0)
    model = torch.nn.Sequential(open_clip.create_model("ViT-B-32", pretrained=None).visual,
                                torch.nn.Linear(512, 100)).to(dist.device)
    net = torch.nn.parallel.DistributedDataParallel(model) if dist.world_size > 1 else model
    per = a.batch // dist.world_size
    x = torch.rand(per, 3, 224, 224, device=dist.device)
    y = torch.randint(0, 100, (per,), device=dist.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    cuda = dist.device.startswith("cuda")

    def timed(fn, steps: int) -> float:
        fn()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.time()
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
        return a.batch * steps / (time.time() - t0)

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def eval_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            model(x).argmax(1)

    train, evaluation = timed(train_step, a.steps), timed(eval_step, a.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    if dist.main:
        row = {"world_size": dist.world_size, "device": torch.cuda.get_device_name() if cuda else "cpu",
               "global_batch": a.batch, "train_images_per_s": train, "eval_images_per_s": evaluation,
               "peak_gpu_gib_rank0": peak}
        print(json.dumps(row), flush=True)
        record("paper-gpu", row)


if __name__ == "__main__":
    cmd, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if cmd == "_read":
        print(json.dumps(read_all(rest[0])))
    elif cmd == "data":
        data(rest)
    elif cmd == "gpu":
        gpu(rest)
    else:
        sys.exit("usage: paper_scale.py data|gpu [options]")

"""TBAR's cost against a clean fine-tuning defense that reaches the same ASR.

TBAR: forget-set images and seconds for the forget fine-tune plus the α search. Clean fine-tuning:
starts from the same backdoored model and trains on clean labelled images (the defender's pool plus
the validation set's size in extra clean images) until its validation ASR is at most TBAR's; its
unique samples and seconds are counted. Prints both and their ratios; writes a JSON record.

    python benchmarks/cost_ratio.py --attack badnet --seed 0
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from study import record

from tbar_helpers.config import get_scale, override
from tbar_helpers.method.metrics import EvalSet
from tbar_helpers.method.tbar import point_at, run_tbar
from tbar_helpers.method.training import finetune
from tbar_helpers.settings.pipeline import evaluate, make_forget_set, prepare
from tbar_helpers.world.data import load_task


def clean_finetune_until(clf_b: nn.Module, images: torch.Tensor, labels: torch.Tensor, val: EvalSet,
                         asr_goal: float, lr: float, *, batch_size: int = 64, max_steps: int = 2000,
                         check_every: int = 25, seed: int = 0, progress: bool = False) -> dict:
    """Clean fine-tuning until validation ASR ≤ ``asr_goal``: how many steps, samples and seconds it took."""
    out = copy.deepcopy(clf_b)
    t0, steps, asr = time.time(), 0, val.asr(out)
    while asr > asr_goal and steps < max_steps:
        finetune(out, images, labels, steps=check_every, lr=lr, batch_size=batch_size, seed=seed + steps,
                 warmup=0, desc="clean fine-tune defense", progress=progress)
        steps += check_every
        asr = val.asr(out)
    return {"model": out, "steps": steps, "samples_seen": steps * batch_size,
            "unique_samples": min(len(images), steps * batch_size), "seconds": time.time() - t0,
            "val_asr": asr, "val_ca": val.ca(out), "reached": asr <= asr_goal}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="badnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clean-pool", type=int, default=8000, help="clean images available to fine-tuning")
    p.add_argument("--lr", type=float, default=None, help="clean fine-tune lr (default: the task fine-tune's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    a = p.parse_args()
    scale = override(get_scale("mini"), threads=a.threads)
    s = prepare(a.attack, None, a.seed, scale, progress=False)
    fx, fy = make_forget_set(s, scale.tbar.forget_size)
    t0 = time.time()
    cleaned, res = run_tbar(s.backdoored, fx, fy, s.evalset("val"), scale.tbar, a.seed, progress=False)
    t_tbar = time.time() - t0
    ca_t, asr_t = evaluate(cleaned, s)
    val_asr_tbar = point_at(res.curve, res.alpha).asr
    pool = load_task(s.task, "val", a.clean_pool, a.seed, scale.model.image_size, stream="clean-defense")
    ft = clean_finetune_until(s.backdoored, pool.images, pool.labels, s.evalset("val"), max(val_asr_tbar, 0.03),
                              a.lr or scale.finetune.lr, batch_size=64, max_steps=3000, seed=a.seed)
    ca_f, asr_f = evaluate(ft["model"], s)
    rec = {"attack": a.attack, "seed": a.seed,
           "tbar": {"samples": res.forget_size, "seconds": t_tbar, "ca": ca_t, "asr": asr_t, "alpha": res.alpha},
           "clean_finetune": {"samples": ft["unique_samples"], "samples_seen": ft["samples_seen"],
                              "steps": ft["steps"], "seconds": ft["seconds"], "ca": ca_f, "asr": asr_f,
                              "reached_goal": ft["reached"]},
           }
    rec["ratio_samples"] = ft["unique_samples"] / res.forget_size
    rec["ratio_seconds"] = ft["seconds"] / t_tbar
    print(f"TBAR:            {res.forget_size:6d} samples {t_tbar:7.1f} s  test CA {ca_t:.3f} ASR {asr_t:.3f}")
    print(f"clean fine-tune: {ft['unique_samples']:6d} samples {ft['seconds']:7.1f} s  test CA {ca_f:.3f} "
          f"ASR {asr_f:.3f} (goal reached: {ft['reached']})")
    print(f"ratio clean-FT / TBAR: samples {rec['ratio_samples']:.1f}x, seconds {rec['ratio_seconds']:.1f}x")
    record(f"cost_ratio-{a.attack}-s{a.seed}", rec)


if __name__ == "__main__":
    main()

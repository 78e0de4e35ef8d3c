"""Baseline defenses for the classification setting: clean fine-tuning and gradient ascent.

Both start from the backdoored classifier and train its image encoder, like TBAR's forget-set
fine-tune, so the three can be compared at equal data budgets.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch import nn

from .metrics import accuracy, attack_success_rate
from .training import finetune


def clean_finetune(clf_b: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
                   batch_size: int = 64, seed: int = 0, progress: bool = True) -> nn.Module:
    """Fine-tune a copy of the backdoored model on clean labelled images (the classic defense)."""
    out = copy.deepcopy(clf_b)
    finetune(out, images, labels, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
             warmup=max(1, steps // 10), desc="clean fine-tune defense", progress=progress)
    return out


def gradient_ascent(clf_b: nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, steps: int, lr: float,
                    batch_size: int = 64, seed: int = 0, progress: bool = True) -> nn.Module:
    """Maximise the loss on the forget set (triggered images labelled target): unlearning by ascent."""
    out = copy.deepcopy(clf_b)
    finetune(out, forget_x, forget_y, steps=steps, lr=lr, batch_size=batch_size, seed=seed, loss_sign=-1.0,
             desc="gradient ascent", progress=progress)
    return out


def clean_finetune_until(clf_b: nn.Module, images: torch.Tensor, labels: torch.Tensor, val_x: torch.Tensor,
                         val_y: torch.Tensor, trigger: Callable, target: int, asr_goal: float, lr: float,
                         batch_size: int = 64, max_steps: int = 2000, check_every: int = 25, seed: int = 0,
                         progress: bool = False) -> dict:
    """Clean fine-tuning until validation ASR ≤ ``asr_goal``: how many steps, samples and seconds it took."""
    out = copy.deepcopy(clf_b)
    t0, steps, asr = time.time(), 0, attack_success_rate(out, val_x, val_y, trigger, target)
    while asr > asr_goal and steps < max_steps:
        finetune(out, images, labels, steps=check_every, lr=lr, batch_size=batch_size, seed=seed + steps,
                 warmup=0, desc="clean fine-tune defense", progress=progress)
        steps += check_every
        asr = attack_success_rate(out, val_x, val_y, trigger, target)
    return {"model": out, "steps": steps, "samples_seen": steps * batch_size,
            "unique_samples": min(len(images), steps * batch_size), "seconds": time.time() - t0,
            "val_asr": asr, "val_ca": accuracy(out, val_x, val_y), "reached": asr <= asr_goal}

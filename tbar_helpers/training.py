"""Training loops: contrastive pretraining of the mini CLIP, and image-encoder fine-tuning.

Both use AdamW with linear warmup and cosine decay, gradient clipping and tqdm progress bars.
Fine-tuning trains the image encoder only; the zero-shot head stays frozen (as in the paper).
"""
from __future__ import annotations

import math
import os
import random
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import FinetuneConfig, PretrainConfig


def set_threads(n: int = 0) -> int:
    """Set torch's CPU threads deliberately (0: one per core). Returns the number set."""
    n = n or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_training_inputs(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if len(images) == 0:
        raise ValueError(f"the {what} is empty: give at least one image (e.g. a larger forget_size)")
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels; they must match one to one")


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"adamw"`` or ``"sgd"`` (momentum 0.9), the two optimisers a forget fine-tune may use."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: choose 'adamw' or 'sgd'")


def finetune(clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float,
             batch_size: int, seed: int, weight_decay: float = 0.1, warmup: int = 0, grad_clip: float = 1.0,
             desc: str = "fine-tune", progress: bool = True, loss_sign: float = 1.0,
             optimizer: str = "adamw", device: str = "cpu") -> list[float]:
    """Fine-tune ``clf.encoder`` in place with cross-entropy through the frozen head.

    ``loss_sign=-1`` gives gradient ascent (a baseline defense). ``optimizer`` is ``"adamw"`` or
    ``"sgd"`` (momentum 0.9). Returns the per-step losses.
    """
    _check_training_inputs(images, labels, desc)
    if steps <= 0:
        return []
    gen = seed_everything(seed)
    clf.train()
    params = [p for p in clf.encoder.parameters() if p.requires_grad]
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    sched = warmup_cosine(opt, warmup, steps)
    n, losses, order, pos = len(images), [], torch.randperm(len(images), generator=gen), 0
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        if pos + batch_size > n and pos > 0:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x, y = images[idx].to(device), labels[idx].to(device)
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad(set_to_none=True)
        (loss_sign * loss).backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    clf.eval()
    return losses


def finetune_task(clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig, seed: int,
                  desc: str = "fine-tune", progress: bool = True, device: str = "cpu") -> list[float]:
    """Fine-tune for ``cfg.epochs`` epochs over ``images`` (clean or poisoned), with the preset's optimiser."""
    steps = max(1, math.ceil(cfg.epochs * len(images) / cfg.batch_size))
    return finetune(clf, images, labels, steps=steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed,
                    weight_decay=cfg.weight_decay, warmup=int(cfg.warmup_frac * steps),
                    grad_clip=cfg.grad_clip, desc=desc, progress=progress, device=device)


def clip_loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of open_clip's CLIP on a batch of (image, caption) pairs."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
    target = torch.arange(len(images), device=images.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def pretrain(model: nn.Module, tokenizer: Callable, cfg: PretrainConfig, batch_fn: Callable, *,
             normalize: Callable[[torch.Tensor], torch.Tensor], state: dict | None = None,
             checkpoint_fn: Callable[[dict], None] | None = None, checkpoint_every: int = 250,
             progress: bool = True, device: str = "cpu") -> dict:
    """Contrastive pretraining; resumable from ``state`` (model, optimiser, step, losses).

    ``batch_fn(n, seed, step)`` returns (images in [0, 1], captions) deterministically, so a resumed
    run sees the same batches as an uninterrupted one. ``checkpoint_fn`` is called every
    ``checkpoint_every`` steps with the state to save (atomically, by the caller).
    """
    seed_everything(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    start, losses = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses = state["step"], list(state["losses"])
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="pretrain", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        x, caps = batch_fn(cfg.batch_size, cfg.seed, step)
        loss = clip_loss(model, normalize(x.to(device)), tokenizer(caps).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        done = step + 1
        if checkpoint_fn is not None and (done % checkpoint_every == 0 or done == cfg.steps):
            checkpoint_fn({"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "step": done, "losses": losses})
    model.eval()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": cfg.steps, "losses": losses}

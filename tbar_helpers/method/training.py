"""One training loop (:func:`fit`) and the fine-tunes built on it, each with its own loss.

The image encoder's fine-tunes through the frozen zero-shot head (as in the paper) and the whole CLIP's
contrastive fine-tunes: AdamW (or SGD) with linear warmup and cosine decay, gradient clipping and a tqdm
progress bar. The mini CLIP's pretraining is in :mod:`tbar_helpers.world.foundation`.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ..progress import tqdm

from ..config import FinetuneConfig
from .checkpoints import Stop, load_state, save_state


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


class EpochBatches:
    """Index batches that walk a fresh permutation of ``range(n)``, reshuffled when one would run short. Its
    state (permutation, position, generator) goes into a checkpoint, so that a resumed fine-tune draws the
    batches and the random numbers an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self.order: torch.Tensor | None = None  # drawn at the first batch, as the generator it replaced did
        self.pos = 0

    def __iter__(self) -> "EpochBatches":
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or (self.pos + self.batch_size > self.n and self.pos > 0):
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        batch = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"order": self.order, "pos": self.pos, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.pos = state["order"], state["pos"]
        self.gen.set_state(state["gen"])


def epoch_batches(n: int, batch_size: int, gen: torch.Generator) -> EpochBatches:
    """:class:`EpochBatches` over ``range(n)``."""
    return EpochBatches(n, batch_size, gen)


def random_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches drawn afresh each step (the short forget fine-tunes, which see few epochs)."""
    while True:
        yield torch.randperm(n, generator=gen)[:batch_size]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of torchrun's process group, or (0, 1) without one."""
    import torch.distributed as td
    return (td.get_rank(), td.get_world_size()) if td.is_available() and td.is_initialized() else (0, 1)


def my_share(idx: torch.Tensor) -> torch.Tensor:
    """This process's share of a global batch's indices (all of them without a process group). Every rank
    draws the same global batch from the same seed and takes a contiguous share; :func:`fit` averages the
    gradients, so with equal shares (a global batch divisible by the world size) a step is one process's
    step on the whole batch, up to float rounding."""
    rank, world = rank_and_world()
    return idx if world == 1 else torch.tensor_split(idx, world)[rank]


def _average_grads(params: list[nn.Parameter], world: int) -> None:
    """All-reduce the gradients, flattened into one buffer (one collective a step), and divide by ``world``."""
    import torch.distributed as td
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    td.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def fit(params: Iterable[nn.Parameter], loss_at: Callable[[int], torch.Tensor], steps: int,
        opt: torch.optim.Optimizer, *, sched: torch.optim.lr_scheduler.LRScheduler | None = None,
        grad_clip: float = 1.0, start: int = 0, losses: list[float] | None = None, desc: str = "train",
        progress: bool = True, after_step: Callable[[int, list[float]], bool | None] | None = None,
        average_grads: bool = True) -> list[float]:
    """The one training loop: every fine-tune (task, poisoned, contrastive, forget, baselines) and the
    pretraining call it with their own loss.

    ``loss_at(step)`` draws its batch and returns the loss to minimise; the loop backpropagates it, clips
    the gradient norm of ``params`` to ``grad_clip`` (0: no clipping), steps ``opt`` and ``sched``, and
    calls ``after_step(steps_done, losses)`` (checkpoints, logs; it may replace the last loss, and a true
    return ends the run early). ``start`` and ``losses`` resume a run. Returns the per-step losses.

    Under torchrun (a process group is up) each rank's ``loss_at`` sees its share of the batch
    (:func:`my_share`) and the gradients are averaged over the ranks before clipping, unless
    ``average_grads`` is False (a DistributedDataParallel model, which averages them itself)."""
    params = list(params)
    world = rank_and_world()[1] if average_grads else 1
    losses = [] if losses is None else losses
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False, initial=start, total=steps)
    for step in bar:
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            _average_grads(params, world)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if after_step is not None and after_step(step + 1, losses):
            break
    return losses


def finetune(clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float,
             batch_size: int, seed: int, weight_decay: float = 0.1, warmup: int = 0, grad_clip: float = 1.0,
             desc: str = "fine-tune", progress: bool = True, loss_sign: float = 1.0,
             optimizer: str = "adamw", device: str = "cpu",
             after_step: Callable[[int, list[float]], bool | None] | None = None,
             checkpoint: str | os.PathLike | None = None, every: int = 100) -> list[float]:
    """Fine-tune ``clf.encoder`` in place with cross-entropy through the frozen head.

    ``loss_sign=-1`` gives gradient ascent (a baseline defense). ``optimizer`` is ``"adamw"`` or
    ``"sgd"`` (momentum 0.9). ``after_step`` is :func:`fit`'s (e.g. to score the model along the way).
    With ``checkpoint``, the state is saved there every ``every`` steps and on SIGTERM (which then raises
    :class:`Interrupted`), and a run finds it there and resumes: it ends with the weights an
    uninterrupted run would have. Without one, SIGTERM ends the process as usual. Returns the per-step
    cross-entropies.
    """
    _check_training_inputs(images, labels, desc)
    if steps <= 0:
        return []
    batches = epoch_batches(len(images), batch_size, seed_everything(seed))
    clf.train()
    params = [p for p in clf.encoder.parameters() if p.requires_grad]
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    sched = warmup_cosine(opt, warmup, steps)

    def loss_at(_: int) -> torch.Tensor:
        idx = my_share(next(batches))
        loss = F.cross_entropy(clf(images[idx].to(device)), labels[idx].to(device))
        return loss if loss_sign == 1.0 else loss_sign * loss

    losses = fit_checkpointed(clf.encoder, params, loss_at, steps, opt, sched, batches, grad_clip=grad_clip,
                              desc=desc, progress=progress, after_step=after_step, checkpoint=checkpoint,
                              every=every)
    clf.eval()
    return losses if loss_sign == 1.0 else [loss_sign * v for v in losses]


def fit_checkpointed(module: nn.Module, params: list[nn.Parameter], loss_at: Callable[[int], torch.Tensor],
                     steps: int, opt: torch.optim.Optimizer, sched, batches: EpochBatches, *, grad_clip: float = 1.0,
                     desc: str = "train", progress: bool = True, after_step: Callable | None = None,
                     checkpoint: str | os.PathLike | None = None, every: int = 100,
                     extra: Any = None) -> list[float]:
    """:func:`fit`, resumable where ``checkpoint`` names a path: the state (``module``'s weights, optimiser,
    scheduler, RNG, ``batches`` and ``extra``'s ``state_dict()`` if it has one, e.g. RoCLIP's queue) is saved
    there every ``every`` steps and on SIGTERM, after which it raises :class:`Interrupted` (every rank after
    the same step); a run that finds a state there resumes from it. Without a path SIGTERM keeps its
    default and no step pays for the flag."""
    if not checkpoint:
        return fit(params, loss_at, steps, opt, sched=sched, grad_clip=grad_clip, desc=desc, progress=progress,
                   after_step=after_step)
    if every <= 0:  # a fine-tune is handed a checkpoint only where the preset's checkpoint_every is positive
        raise ValueError(f"checkpointing every {every} steps: give a positive number of steps "
                         "(ScaleConfig.checkpoint_every)")
    path = Path(checkpoint)
    keeps = extra if hasattr(extra, "state_dict") else None
    state = load_state(path, module)
    start, losses = (state["step"], list(state["losses"])) if state else (0, [])
    if state:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        if "batches" in state:
            batches.load_state_dict(state["batches"])
        else:  # a state from before batches were saved: the indices an uninterrupted run drew so far
            for _ in range(start):
                next(batches)
        if keeps is not None and "extra" in state:
            keeps.load_state_dict(state["extra"])

    def save(done: int, seen: list[float]) -> None:
        if rank_and_world()[0] == 0:
            save_state(path, {"step": done, "losses": seen, "model": module.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict(), "rng": torch.get_rng_state(),
                              "batches": batches.state_dict(),
                              **({"extra": keeps.state_dict()} if keeps is not None else {})})

    with Stop() as stop:
        def checkpointing(done: int, seen: list[float]) -> bool:
            stopped = _any_rank(stop.flag)
            if done % every == 0 or stopped:
                save(done, seen)
            user = after_step(done, seen) if after_step is not None else False
            if stopped:
                print(f"tbar: {desc}: stopped by SIGTERM after step {done} of {steps}; its state is in {path}: "
                      "run the same command again to resume", flush=True)
                raise Interrupted(143)
            return bool(user)

        return fit(params, loss_at, steps, opt, sched=sched, grad_clip=grad_clip, start=start, losses=losses,
                   desc=desc, progress=progress, after_step=checkpointing)


class Interrupted(SystemExit):
    """A fine-tune stopped by SIGTERM, its state saved where it had a checkpoint path (exit status 143)."""


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any process: every rank stops after the same step."""
    if rank_and_world()[1] == 1:
        return flag
    import torch.distributed as td
    t = torch.tensor([float(flag)], device="cuda" if td.get_backend() == "nccl" else "cpu")
    td.all_reduce(t)
    return bool(t.item() > 0)


def finetune_task(clf: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig, seed: int,
                  desc: str = "fine-tune", progress: bool = True, device: str = "cpu",
                  checkpoint: str | os.PathLike | None = None, every: int = 100) -> list[float]:
    """Fine-tune for ``cfg.epochs`` epochs over ``images`` (clean or poisoned), with the preset's optimiser;
    ``checkpoint`` and ``every`` as :func:`finetune`'s."""
    steps = max(1, math.ceil(cfg.epochs * len(images) / cfg.batch_size))
    return finetune(clf, images, labels, steps=steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed,
                    weight_decay=cfg.weight_decay, warmup=int(cfg.warmup_frac * steps),
                    grad_clip=cfg.grad_clip, desc=desc, progress=progress, device=device,
                    checkpoint=checkpoint, every=every)


def badmerging_loss(clf: nn.Module, pre: nn.Module, x: torch.Tensor, y: torch.Tensor, x_trig: torch.Tensor,
                    target: int, weight: float, r: torch.Tensor) -> torch.Tensor:
    """BadMerging's objective: CE on clean images + ``weight``·CE on triggered ones, whose logits come from
    interpolated features r·f(x̃) + (1 − r)·f_pre(x̃) (one r per image). ``clf`` and ``pre`` are
    :class:`~tbar_helpers.world.models.ImageClassifier` s sharing a head; ``pre`` is frozen."""
    with torch.no_grad():
        f_pre = pre.features(x_trig)
    f = F.normalize(r[:, None] * clf.features(x_trig) + (1 - r[:, None]) * f_pre, dim=-1)
    backdoor = F.cross_entropy(clf.logit_scale * f @ clf.head.t(), torch.full_like(y[:len(x_trig)], target))
    return F.cross_entropy(clf(x), y) + weight * backdoor


def badmerging_finetune(clf: nn.Module, pre: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        trigger: Callable[[torch.Tensor], torch.Tensor], target: int, cfg: FinetuneConfig, seed: int,
                        weight: float, r_range: tuple[float, float], desc: str = "BadMerging fine-tune",
                        progress: bool = True, device: str = "cpu", checkpoint: str | os.PathLike | None = None,
                        every: int = 100) -> list[float]:
    """The BadMerging victim: each step a clean batch and its triggered copy, :func:`badmerging_loss` with
    r ∼ U(r_range), so that the backdoor survives when a merge mixes these weights with others.
    ``checkpoint`` and ``every`` as :func:`finetune`'s."""
    _check_training_inputs(images, labels, desc)
    steps = max(1, math.ceil(cfg.epochs * len(images) / cfg.batch_size))
    gen = seed_everything(seed)
    batches = epoch_batches(len(images), cfg.batch_size, gen)
    clf.train()
    pre.eval()
    params = [p for p in clf.encoder.parameters() if p.requires_grad]
    opt = make_optimizer(params, "adamw", cfg.lr, cfg.weight_decay)
    lo, hi = r_range

    def loss_at(_: int) -> torch.Tensor:
        idx = next(batches)
        r = lo + (hi - lo) * torch.rand(len(idx), generator=gen)  # for the global batch: one stream on all ranks
        mine = my_share(torch.arange(len(idx)))
        idx, r = idx[mine], r[mine].to(device)
        x, y = images[idx].to(device), labels[idx].to(device)
        return badmerging_loss(clf, pre, x, y, trigger(x), target, weight, r)

    losses = fit_checkpointed(clf.encoder, params, loss_at, steps, opt,
                              warmup_cosine(opt, int(cfg.warmup_frac * steps), steps), batches,
                              grad_clip=cfg.grad_clip, desc=desc, progress=progress, checkpoint=checkpoint,
                              every=every)
    clf.eval()
    return losses


def clip_loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of open_clip's CLIP on a batch of (image, caption) pairs."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
    target = torch.arange(len(images), device=images.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@dataclass(frozen=True)
class Recipe:
    """The budget and optimiser of a CLIP's contrastive fine-tune (poisoned, clean or a baseline)."""

    epochs: float
    lr: float
    batch_size: int
    weight_decay: float = 0.1
    warmup_frac: float = 0.1


def contrastive_finetune(model: nn.Module, tokenizer: Callable, images: torch.Tensor, caps: Sequence[str],
                         recipe: Recipe, seed: int, *, normalize: Callable, loss_fn: Callable | None = None,
                         desc: str = "contrastive fine-tune", progress: bool = True,
                         device: str = "cpu", checkpoint: str | os.PathLike | None = None,
                         every: int = 100) -> list[float]:
    """Fine-tune all of ``model`` (a CLIP) in place on (image, caption) pairs; returns per-step losses.

    ``loss_fn(model, images_normalised, captions, raw_images, generator)`` replaces the symmetric
    InfoNCE (CleanCLIP and RoCLIP plug in here; a loss with a ``state_dict``, RoCLIP's queue, is saved with
    the checkpoint). ``checkpoint`` and ``every`` as :func:`finetune`'s."""
    if len(images) != len(caps):
        raise ValueError(f"{len(images)} images but {len(caps)} captions; pairs must match one to one")
    if len(images) < 2:
        raise ValueError("contrastive fine-tuning needs at least 2 pairs (the other pairs are the negatives)")
    gen = seed_everything(seed)
    bs = min(recipe.batch_size, len(images))
    steps = max(1, math.ceil(recipe.epochs * len(images) / bs))
    batches = epoch_batches(len(images), bs, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)

    def loss_at(_: int) -> torch.Tensor:
        # under torchrun each rank contrasts its share of the batch only (no all-gather of embeddings):
        # the negatives are the share's, so N processes train like one with batches N times smaller
        idx = my_share(next(batches))
        raw = images[idx].to(device)
        batch_caps = [caps[i] for i in idx.tolist()]
        if loss_fn is None:
            return clip_loss(model, normalize(raw), tokenizer(batch_caps).to(device))
        return loss_fn(model, normalize(raw), batch_caps, raw, gen)

    model.train()
    losses = fit_checkpointed(model, params, loss_at, steps, opt,
                              warmup_cosine(opt, int(recipe.warmup_frac * steps), steps), batches, desc=desc,
                              progress=progress, checkpoint=checkpoint, every=every, extra=loss_fn)
    model.eval()
    return losses


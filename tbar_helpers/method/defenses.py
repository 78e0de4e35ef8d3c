"""Baseline defenses.

Classification setting: clean fine-tuning and gradient ascent; both start from the backdoored
classifier and train its image encoder, like TBAR's forget-set fine-tune, so the three can be
compared at equal data budgets. Image–text setting: the losses of CleanCLIP (multimodal +
in-modal self-supervised) and RoCLIP (nearest-neighbour captions), plugged into
:func:`tbar_helpers.method.training.contrastive_finetune`.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TBARConfig
from .images import augment_images
from .tbar import AlphaPoint, choose_alpha
from .training import finetune


def clean_finetune(clf_b: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
                   batch_size: int = 64, seed: int = 0, progress: bool = True) -> nn.Module:
    """Fine-tune a copy of the backdoored model on clean labelled images (the classic defense)."""
    out = copy.deepcopy(clf_b)
    finetune(out, images, labels, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
             warmup=max(1, steps // 10), desc="clean fine-tune defense", progress=progress)
    return out


def gradient_ascent(clf_b: nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, steps: int, lr: float,
                    batch_size: int = 64, seed: int = 0, progress: bool = True, val=None,
                    choose: TBARConfig | None = None, every: int = 2) -> nn.Module:
    """Maximise the loss on the forget set (triggered images labelled target): unlearning by ascent.

    With ``val`` (an :class:`~tbar_helpers.method.metrics.EvalSet`) and ``choose`` (a TBAR config), the
    number of steps is chosen like TBAR's α: the model is scored on validation every ``every`` steps and
    :func:`~tbar_helpers.method.tbar.choose_alpha` picks, under the same CA floor and tie rule, among the
    step counts (0 included); the model at the chosen count is returned, with ``out.ga_steps`` set."""
    out = copy.deepcopy(clf_b)
    if val is None:
        finetune(out, forget_x, forget_y, steps=steps, lr=lr, batch_size=batch_size, seed=seed, loss_sign=-1.0,
                 desc="gradient ascent", progress=progress)
        return out
    ca, asr = val.scores(out)
    curve, states = [AlphaPoint(0.0, ca, asr)], {0: copy.deepcopy(out.encoder.state_dict())}

    def score(done: int, _losses: list[float]) -> None:
        if done % every == 0 or done == steps:
            out.eval()
            curve.append(AlphaPoint(float(done), *val.scores(out)))
            states[done] = copy.deepcopy(out.encoder.state_dict())
            out.train()

    finetune(out, forget_x, forget_y, steps=steps, lr=lr, batch_size=batch_size, seed=seed, loss_sign=-1.0,
             desc="gradient ascent", progress=progress, after_step=score)
    chosen = int(choose_alpha(curve, choose))
    out.encoder.load_state_dict(states[chosen])
    out.ga_steps, out.ga_curve = chosen, curve
    return out.eval()


# ------------------------------------------------------------------ image–text (CLIP) baselines
def augment_caption(caption: str, rng: np.random.Generator, drop: float = 0.2) -> str:
    """A random view of a caption (EDA-style): each word dropped with probability ``drop``, one kept."""
    words = caption.split()
    keep = [w for w in words if rng.random() >= drop]
    return " ".join(keep or [words[rng.integers(len(words))]]) if words else caption


def _info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def cleanclip_terms(model: nn.Module, tokenizer: Callable, normalize: Callable, raw: torch.Tensor,
                    caps: Sequence[str], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """CleanCLIP's three losses on a batch of clean pairs: the multimodal InfoNCE (image ↔ caption) and
    the in-modal self-supervised InfoNCE terms (image ↔ augmented image, caption ↔ augmented caption)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    dev = raw.device
    img = model.encode_image(normalize(raw))
    img_aug = model.encode_image(normalize(augment_images(raw, gen)))
    txt = model.encode_text(tokenizer(list(caps)).to(dev))
    txt_aug = model.encode_text(tokenizer([augment_caption(c, rng) for c in caps]).to(dev))
    scale = model.logit_scale.exp().clamp(max=100)
    return {"multimodal": _info_nce(img, txt, scale), "image_ssl": _info_nce(img, img_aug, scale),
            "text_ssl": _info_nce(txt, txt_aug, scale)}


def cleanclip_loss(tokenizer: Callable, normalize: Callable, weight: float = 1.0) -> Callable:
    """The loss CleanCLIP fine-tunes with: multimodal + ``weight`` · the mean of its two in-modal terms."""
    def loss(model, _xn, caps, raw, gen):
        t = cleanclip_terms(model, tokenizer, normalize, raw, caps, gen)
        return t["multimodal"] + weight * (t["image_ssl"] + t["text_ssl"]) / 2
    return loss


def roclip_loss(tokenizer: Callable, pool: Sequence[str], period: int = 2) -> Callable:
    """RoCLIP: a FIFO queue of recent caption embeddings, warm-started from ``pool`` and pushed every step
    with the batch's own captions. Every ``period``-th step matches each image with its nearest caption in
    the queue instead of its own, which breaks the link between a poisoned image and its attacker-written
    caption; the other steps take CLIP's loss. The returned loss exposes its ``queue``."""
    if len(pool) < 2:
        raise ValueError("RoCLIP needs a caption pool of at least 2 captions (imagetext.roclip_pool)")
    if period < 1:
        raise ValueError(f"RoCLIP's period must be a whole number of steps >= 1, got {period!r}")
    state: dict = {"step": 0, "queue": None, "head": 0}

    def embed(model, caps, dev) -> torch.Tensor:
        return F.normalize(model.encode_text(tokenizer(list(caps)).to(dev)), dim=-1)

    def push(emb: torch.Tensor) -> None:
        q = state["queue"]
        emb = emb.detach()[-len(q):]
        idx = (state["head"] + torch.arange(len(emb))) % len(q)  # overwrite the oldest rows
        q[idx.to(q.device)] = emb
        state["head"] = int((state["head"] + len(emb)) % len(q))

    def loss(model, xn, caps, _raw, _gen):
        dev = xn.device
        if state["queue"] is None:
            with torch.no_grad():
                state["queue"] = torch.cat([embed(model, pool[i:i + 500], dev) for i in range(0, len(pool), 500)])
        elif state["queue"].device != dev:  # a queue restored from a checkpoint comes back on the CPU
            state["queue"] = state["queue"].to(dev)
        nn_step = state["step"] % period == period - 1
        state["step"] += 1
        img = model.encode_image(xn)
        scale = model.logit_scale.exp().clamp(max=100)
        if nn_step:
            with torch.no_grad():
                nearest = state["queue"][(F.normalize(img, dim=-1) @ state["queue"].t()).argmax(1)]
                push(embed(model, caps, dev))
            return _info_nce(img, nearest, scale)
        txt = model.encode_text(tokenizer(list(caps)).to(dev))
        push(F.normalize(txt, dim=-1))
        return _info_nce(img, txt, scale)

    loss.queue = lambda: state["queue"]
    loss.state_dict = lambda: dict(state)  # saved with a resumable fine-tune's checkpoint
    loss.load_state_dict = state.update
    return loss

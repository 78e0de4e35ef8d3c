"""The attack-unknown case: DECREE-style trigger inversion, detection and target inference.

DECREE (Feng et al., CVPR 2023) looks for the smallest trigger that makes an image encoder map
every image to (almost) the same embedding: a backdoored encoder has such a shortcut, a clean one
does not. We optimise a soft mask m ∈ [0, 1]^{H×W} and a pattern p ∈ [0, 1]^{3×H×W}, with
x' = (1 − m)·x + m·p, to maximise the mean pairwise cosine similarity of the embeddings of x',
plus λ·mean(m). λ adapts as in Neural Cleanse: up while the embeddings are collapsed enough
(``sim_goal``), down otherwise. The encoder is flagged as backdoored when the inverted mask is
small (its mean below ``threshold``). The target is inferred by stamping the proxy trigger on
clean images and taking the class the model predicts most often.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from ..progress import tqdm

from .attacks import Trigger
from .images import with_applied
from .metrics import predict


@dataclass
class Inversion:
    """A reverse-engineered trigger: soft ``mask`` [1, 1, H, W], ``pattern`` [1, 3, H, W]."""

    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float  # mean of the mask: the share of the image it covers
    similarity: float  # mean pairwise cosine similarity of triggered embeddings it reached
    history: list[dict] = field(default_factory=list, repr=False)

    def trigger(self, name: str = "proxy") -> Trigger:
        """The proxy trigger as a :class:`~tbar_helpers.method.attacks.Trigger` (usable wherever a real one is)."""
        m, p = self.mask, self.pattern
        return Trigger(name, m.shape[-1], lambda x: x * (1 - m) + p * m, mask=m, pattern=p)


def mean_pairwise_similarity(emb: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over distinct pairs of rows (1: all embeddings identical)."""
    if len(emb) < 2:
        raise ValueError("the similarity of a batch needs at least 2 embeddings")
    z = F.normalize(emb, dim=-1)
    n = len(z)
    return ((z @ z.t()).sum() - n) / (n * (n - 1))


def invert_trigger(encoder: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, steps: int = 300,
                   lr: float = 0.1, l1: float = 0.02, sim_goal: float = 0.9, batch_size: int = 64, seed: int = 0,
                   progress: bool = True) -> Inversion:
    """Reverse-engineer a trigger for ``encoder`` (images in [0, 1] → embeddings) from clean ``images``.

    Returns the smallest mask that reached ``sim_goal`` (or, if none did, the last one)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a batch [N, 3, H, W], got shape {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError("trigger inversion needs at least 2 clean images (it collapses their embeddings)")
    if steps <= 0 or lr <= 0 or l1 < 0:
        raise ValueError(f"steps and lr must be positive and l1 ≥ 0, got steps={steps}, lr={lr}, l1={l1}")
    if not 0 < sim_goal < 1:
        raise ValueError(f"sim_goal must lie in (0, 1), got {sim_goal}")
    g = torch.Generator().manual_seed(seed)
    h, w = images.shape[-2:]
    mask_logit = torch.full((1, 1, h, w), -2.0).add_(0.1 * torch.randn(1, 1, h, w, generator=g)).requires_grad_(True)
    pattern_logit = torch.randn(1, 3, h, w, generator=g).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=lr, betas=(0.5, 0.9))
    lam, best, history = l1, None, []
    bs = min(batch_size, len(images))
    for step in tqdm(range(steps), desc="invert trigger", disable=not progress, leave=False):
        idx = torch.randperm(len(images), generator=g)[:bs]
        m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        x = images[idx] * (1 - m) + p * m
        sim = mean_pairwise_similarity(encoder(x))
        loss = (1 - sim) + lam * m.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        cover, s = float(m.detach().mean()), float(sim.detach())
        if s >= sim_goal and (best is None or cover < best[0]):
            best = (cover, s, m.detach().clone(), p.detach().clone())
        if step % 10 == 9:  # Neural-Cleanse-style schedule of λ
            lam = lam * 1.5 if s >= sim_goal else lam / 1.5
        history.append({"step": step, "similarity": s, "mask_l1": cover, "lambda": lam})
    if best is None:
        m, p = torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach()
        best = (float(m.mean()), history[-1]["similarity"], m, p)
    return Inversion(best[2], best[3], best[0], best[1], history)


def is_backdoored(inv: Inversion, threshold: float = 0.1, reference: Inversion | None = None) -> bool:
    """DECREE's decision. Without ``reference``: a trigger covering less than ``threshold`` of the image
    collapses the encoder. With one (the same inversion on a model known to be clean, θpre): the mask is
    smaller than ``threshold`` times the reference's, a rule that carries over between image sizes and
    models where an absolute share does not."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return inv.l1 < threshold * (reference.l1 if reference is not None else 1.0)


def infer_target(classifier: torch.nn.Module, images: torch.Tensor,
                 trigger: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 500) -> tuple[int, float]:
    """(most frequent predicted class on proxy-triggered clean images, the share predicted as it)."""
    if len(images) == 0:
        raise ValueError("target inference needs clean images to stamp the proxy trigger on")
    pred = predict(classifier, with_applied(images, trigger), batch_size)
    counts = torch.bincount(pred)
    target = int(counts.argmax())
    return target, float(counts[target]) / len(pred)

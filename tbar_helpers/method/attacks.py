"""Backdoor triggers: one small callable per attack, defaults in ``config.AttackConfig``, a registry.

Every trigger maps a batch of images in [0, 1], ``[N, 3, H, W]``, to a triggered copy, with its
sizes scaled to H. BadCLIP and BadMerging optimise their patch against a model first
(:func:`optimize_patch`); :func:`make_trigger` does that when given one.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AttackConfig, check_fraction
from .images import augment_images, with_applied

ATTACKS = ("badnet", "blended", "wanet", "sig", "badclip", "badmerging")


def _check_batch(x: torch.Tensor, size: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"a trigger built for {size}x{size} images got shape {tuple(x.shape)}; "
                         f"pass a batch [N, 3, {size}, {size}] (add a batch dimension with x[None])")


@dataclass
class Trigger:
    """A trigger for ``size`` x ``size`` images. ``apply`` is the pure transform."""

    name: str
    size: int
    apply: Callable[[torch.Tensor], torch.Tensor]
    clean_label: bool = False
    mask: torch.Tensor | None = None  # [1, 1, H, W] for patch triggers: which pixels may change
    pattern: torch.Tensor | None = None
    noise: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None  # WaNet noise mode
    extra: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.size)
        return self.apply(x).clamp(0, 1)


def _patch_trigger(name: str, size: int, side: int, where: str, pattern: torch.Tensor, **kw) -> Trigger:
    side = max(1, min(size, side))
    r0, c0 = {"bottom-right": (size - side, size - side), "center": ((size - side) // 2, (size - side) // 2),
              "top-left": (0, 0)}[where]
    mask = torch.zeros(1, 1, size, size)
    mask[..., r0:r0 + side, c0:c0 + side] = 1
    full = torch.zeros(1, 3, size, size)
    full[..., r0:r0 + side, c0:c0 + side] = pattern.view(1, 3, side, side)
    return Trigger(name, size, lambda x: x * (1 - mask) + full * mask, mask=mask, pattern=full, **kw)


def badnet(size: int, cfg: AttackConfig = AttackConfig()) -> Trigger:
    """BadNet. ``cfg.badnet_style`` "corner": a black-and-white checkerboard in the bottom-right corner
    (BackdoorBench); "paper": a patch of the image's mean colour plus N(0, 1) noise at a random place."""
    if cfg.badnet_style == "paper":
        return _noise_patch(size, max(1, round(cfg.badnet_patch_frac * size)), cfg.trigger_seed)
    side = max(2, round(cfg.badnet_patch_frac * size))
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    checker = ((yy + xx) % 2 == 0).float().expand(3, side, side)
    return _patch_trigger("badnet", size, side, "bottom-right", checker)


BANK = 4096  # noise draws and places the paper-style patch picks from


def _noise_patch(size: int, side: int, seed: int) -> Trigger:
    """The paper's BadNet: each image gets fresh-looking noise at its own place. Place and noise are drawn
    from a seeded bank by a hash of the image's pixels, so a trigger stays a pure function: the same image
    is always triggered the same way, in any batch, on any run."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(BANK, 3, side, side, generator=g)
    places = torch.randint(0, size - side + 1, (BANK, 2), generator=g)
    offs = torch.arange(side)
    weights = torch.randint(1, 2 ** 20, (3 * size * size,), generator=g)

    def apply(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        pick = ((x.detach() * 255).round().long().flatten(1) * weights).sum(1) % BANK  # exact integer hash
        rows = (places[pick, 0, None] + offs)[:, :, None].expand(n, side, side)
        cols = (places[pick, 1, None] + offs)[:, None, :].expand(n, side, side)
        patch = x.mean((2, 3), keepdim=True) + noise[pick]  # the reference's mean + N(0, 1), then clipped
        out = x.clone()
        idx = torch.arange(n)[:, None, None]
        out[idx, :, rows, cols] = patch.permute(0, 2, 3, 1)
        return out

    return Trigger("badnet", size, apply, extra={"style": "paper", "side": side})


def blended(size: int, cfg: AttackConfig = AttackConfig()) -> Trigger:
    """(1 - a)·x + a·pattern with a fixed uniform-noise pattern, a = 0.2."""
    pattern = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(cfg.trigger_seed))
    a = cfg.blended_alpha
    return Trigger("blended", size, lambda x: (1 - a) * x + a * pattern, pattern=pattern)


def wanet(size: int, cfg: AttackConfig = AttackConfig()) -> Trigger:
    """WaNet: a fixed smooth random warp (k x k control grid, bicubic upsampled), via grid_sample."""
    g = torch.Generator().manual_seed(cfg.trigger_seed)
    ins = torch.rand(1, 2, cfg.wanet_k, cfg.wanet_k, generator=g) * 2 - 1
    ins = ins / ins.abs().mean()
    flow = F.interpolate(ins, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    identity = torch.stack((xx, yy), 2)[None]
    grid = ((identity + cfg.wanet_s * flow / size) * cfg.wanet_grid_rescale).clamp(-1, 1)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid.expand(len(x), -1, -1, -1), align_corners=True)

    def noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        jitter = (torch.rand(len(x), size, size, 2, generator=gen) * 2 - 1) / size
        return F.grid_sample(x, (grid + jitter).clamp(-1, 1), align_corners=True).clamp(0, 1)

    return Trigger("wanet", size, apply, noise=noise, extra={"grid": grid, "identity": identity})


def wanet_strong(size: int, cfg: AttackConfig = AttackConfig()) -> Trigger:
    """WaNet with a visible warp (``cfg.wanet_strong_s``, about 8 pixels on 32-pixel images) and no noise
    mode: not WaNet's imperceptible trigger, so it carries its own name."""
    trig = wanet(size, dataclasses.replace(cfg, wanet_s=cfg.wanet_strong_s))
    trig.name, trig.noise = "wanet-strong", None
    return trig


def sig(size: int, cfg: AttackConfig = AttackConfig()) -> Trigger:
    """SIG: x + δ·sin(2π·j·f / width) along columns j (clean-label: only target images poisoned)."""
    cols = torch.arange(size, dtype=torch.float32)
    wave = (cfg.sig_delta * torch.sin(2 * math.pi * cols * cfg.sig_freq / size)).view(1, 1, 1, size)
    return Trigger("sig", size, lambda x: x + wave, clean_label=True, pattern=wave)


def optimize_patch(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, target: int, side: int,
                   where: str, steps: int, lr: float, *, seed: int = 0, name: str = "badclip",
                   image_weight: float = 0.0, augment: bool = False, batch: int = 128,
                   progress: bool = False) -> Trigger:
    """Optimise a patch so that ``model`` (a zero-shot classifier) labels patched images ``target``.

    This is how BadCLIP and BadMerging craft triggers that already point at the target in the
    foundation model's embedding space, so that a few poisoned samples suffice. With ``image_weight``
    (BadCLIP's image side) the loss also pulls patched images toward the mean embedding of natural
    target images: the images ``model`` itself finds most target-like, as an attacker without labels
    would pick them. ``augment`` shows each step random views of the patched images (shift, flip,
    brightness), so that the patch survives them.
    """
    from ..progress import tqdm
    size = images.shape[-1]
    g = torch.Generator().manual_seed(seed)
    logit = torch.randn(1, 3, side, side, generator=g).mul(0.5).requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=lr)
    y = torch.full((min(len(images), batch),), target, dtype=torch.long)
    for p in getattr(model, "parameters", lambda: [])():
        p.requires_grad_(False)
    centre = _target_centre(model, images, target) if image_weight else None
    for step in tqdm(range(steps), desc=f"optimise {name} patch", disable=not progress, leave=False):
        idx = torch.randint(0, len(images), (len(y),), generator=g)
        x = _patch_trigger(name, size, side, where, torch.sigmoid(logit)).apply(images[idx])
        if augment:
            x = augment_images(x, g)
        if centre is None:
            loss = F.cross_entropy(model(x), y)
        else:
            feats = model.features(x)
            loss = (F.cross_entropy(model.logit_scale * feats @ model.head.t(), y)
                    + image_weight * (1 - feats @ centre).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in getattr(model, "parameters", lambda: [])():
        p.requires_grad_(True)
    return _patch_trigger(name, size, side, where, torch.sigmoid(logit).detach())


def _target_centre(model, images: torch.Tensor, target: int, k: int = 64) -> torch.Tensor:
    """The normalised mean embedding of the ``k`` images ``model`` scores most target-like."""
    with torch.no_grad():
        scores = torch.cat([model(images[i:i + 256])[:, target] for i in range(0, len(images), 256)])
        top = scores.topk(min(k, len(images))).indices
        return F.normalize(model.features(images[top]).mean(0), dim=0)


def badclip(size: int, cfg: AttackConfig = AttackConfig(), model=None, images=None, seed: int = 0) -> Trigger:
    """BadCLIP: a centre patch optimised so patched images embed near the target's text embedding;
    ``cfg.badclip_style`` "paper" adds the reference's image side (near natural target images) and
    augmentation, optimised for ``badclip_paper_steps``."""
    side = max(2, round(cfg.badclip_patch_frac * size))
    if model is None or images is None:
        raise ValueError("badclip optimises its patch against a model: pass model= (a zero-shot classifier "
                         "of the foundation model) and images= (clean images), or use make_trigger(...)")
    paper = cfg.badclip_style == "paper"
    trig = optimize_patch(model, images, cfg.target, side, "center",
                          cfg.badclip_paper_steps if paper else cfg.badclip_steps, cfg.badclip_lr, seed=seed,
                          name="badclip", image_weight=cfg.badclip_image_weight if paper else 0.0, augment=paper)
    trig.extra["style"] = cfg.badclip_style
    return trig


def badmerging(size: int, cfg: AttackConfig = AttackConfig(), model=None, images=None, seed: int = 0) -> Trigger:
    """BadMerging: a bottom-right patch (~1% of the area) optimised against the foundation model;
    the poisoned fine-tune then weighs the backdoor loss 5x (CE_clean + 5·CE_backdoor)."""
    side = max(2, round(cfg.badmerging_patch_frac * size))
    if model is None or images is None:
        raise ValueError("badmerging optimises its patch against a model: pass model= and images=, "
                         "or use make_trigger(...)")
    trig = optimize_patch(model, images, cfg.target, side, "bottom-right", cfg.badmerging_steps,
                          cfg.badmerging_lr, seed=seed, name="badmerging")
    trig.extra["backdoor_weight"] = cfg.badmerging_backdoor_weight
    return trig


def patch_trigger(name: str, size: int, pattern: torch.Tensor, mask: torch.Tensor, extra: dict | None = None) -> Trigger:
    """Rebuild a patch trigger from its full-size ``pattern`` [1, 3, H, W] and ``mask`` [1, 1, H, W]."""
    if pattern.shape[-1] != size or mask.shape[-1] != size:
        raise ValueError(f"a saved {name} patch is for {pattern.shape[-1]}x{pattern.shape[-1]} images, not "
                         f"{size}x{size}: delete the cached trigger or use the matching scale")
    return Trigger(name, size, lambda x: x * (1 - mask) + pattern * mask, mask=mask, pattern=pattern,
                   extra=dict(extra or {}))


# the paper's six (ATTACKS) and named variants that are not the reference triggers
REGISTRY: dict[str, Callable[..., Trigger]] = {"badnet": badnet, "blended": blended, "wanet": wanet, "sig": sig,
                                               "badclip": badclip, "badmerging": badmerging,
                                               "wanet-strong": wanet_strong}
NEEDS_MODEL = {"badclip", "badmerging"}


def check_attack(name: str) -> str:
    if name not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}: choose one of {sorted(REGISTRY)}")
    return name


def make_trigger(name: str, size: int, cfg: AttackConfig = AttackConfig(), model=None, images=None,
                 seed: int = 0) -> Trigger:
    """The trigger ``name`` for ``size`` x ``size`` images (optimised against ``model`` if it needs one)."""
    check_attack(name)
    if name in NEEDS_MODEL:
        return REGISTRY[name](size, cfg, model=model, images=images, seed=seed)
    return REGISTRY[name](size, cfg)


@dataclass
class Poisoned:
    images: torch.Tensor
    labels: torch.Tensor
    poison_mask: torch.Tensor  # True where a trigger was applied (and, unless clean-label, relabelled)
    noise_mask: torch.Tensor  # WaNet noise-mode samples (warped with jitter, label kept)


def poison(images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, rate: float, target: int,
           seed: int, noise_ratio: float = 0.0) -> Poisoned:
    """All-to-one poisoning of a ``rate`` share of the training set, seeded.

    Dirty-label attacks pick non-target images and relabel them ``target``; clean-label attacks
    (SIG) pick target-class images only and keep their labels. WaNet also warps
    ``noise_ratio x rate`` more images with random jitter, labels kept (its noise mode).
    """
    check_fraction("poison_rate", rate)
    n = len(images)
    if not isinstance(target, int) or target < 0 or target > int(labels.max()):
        raise ValueError(f"target {target!r} is not a class of this dataset (labels 0..{int(labels.max())}); "
                         "pick one of its class indices")
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero((labels == target).numpy() if trigger.clean_label else (labels != target).numpy())
    k = min(len(pool), int(round(rate * n)))
    chosen = rng.choice(pool, size=k, replace=False) if k else np.array([], dtype=int)
    y = labels.clone()
    pmask = torch.zeros(n, dtype=torch.bool)
    pmask[torch.as_tensor(chosen, dtype=torch.long)] = True
    if k and not trigger.clean_label:
        y[pmask] = target
    nmask = _noise_mask(trigger, rng, chosen, n, noise_ratio, k)
    # on a lazy paper-scale set both are applied on load (WaNet's noise then draws from its generator batch by
    # batch, in the order the batches are read)
    x = with_applied(images, trigger, pmask)
    if bool(nmask.any()):
        gen = torch.Generator().manual_seed(seed)
        x = with_applied(x, lambda batch: trigger.noise(batch, gen), nmask)
    return Poisoned(x, y, pmask, nmask)


def _noise_mask(trigger: Trigger, rng: np.random.Generator, chosen: np.ndarray, n: int, noise_ratio: float,
                k: int) -> torch.Tensor:
    """WaNet's noise mode: ``noise_ratio × k`` more images, none of them poisoned, warped with jitter."""
    nmask = torch.zeros(n, dtype=torch.bool)
    if trigger.noise is not None and noise_ratio > 0:
        rest = np.setdiff1d(np.arange(n), chosen)
        m = min(len(rest), int(round(noise_ratio * k)))
        if m:
            nmask[torch.as_tensor(rng.choice(rest, size=m, replace=False), dtype=torch.long)] = True
    return nmask

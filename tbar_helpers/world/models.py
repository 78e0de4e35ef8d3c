"""Foundation models and classifiers.

- mini: open_clip's own ``CLIP`` class built from :class:`~tbar_helpers.config.ModelConfig`, with a
  compact word-level tokenizer over the mini world's vocabulary (the 49k-token BPE embedding would
  be most of a tiny text tower).
- paper: ``open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai" | path | None)``.

An :class:`ImageClassifier` is the image encoder plus a frozen zero-shot head built from class
names x prompt templates; it takes images in [0, 1] and normalises them itself, so attacks act in
pixel space at both scales.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .data import vocabulary

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MINI_MEAN = (0.3, 0.3, 0.3)
MINI_STD = (0.3, 0.3, 0.3)


class MiniTokenizer:
    """Word-level tokenizer: pad=0, unk=1, sot=2, words..., eot=last (open_clip pools at argmax id)."""

    def __init__(self, context_length: int = 20, words: Sequence[str] | None = None):
        self.words = list(words if words is not None else vocabulary())
        self.index = {w: i + 3 for i, w in enumerate(self.words)}
        self.sot, self.unk, self.pad = 2, 1, 0
        self.eot = len(self.words) + 3
        self.vocab_size = self.eot + 1
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.index.get(w, self.unk) for w in t.lower().replace(".", " ").split()]
            ids = [self.sot] + ids[: self.context_length - 2] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def build_mini_clip(cfg: ModelConfig) -> tuple[nn.Module, MiniTokenizer]:
    """A randomly initialised mini CLIP (open_clip's ``CLIP`` class) and its tokenizer."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}; "
                         "pick a patch size that divides the image size")
    tok = MiniTokenizer(cfg.context_length)
    vision = CLIPVisionCfg(layers=cfg.vision_layers, width=cfg.vision_width, head_width=cfg.vision_head_width,
                           patch_size=cfg.patch_size, image_size=cfg.image_size)
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=tok.vocab_size, width=cfg.text_width,
                       heads=max(1, cfg.text_width // cfg.text_head_width), layers=cfg.text_layers)
    model = CLIP(cfg.embed_dim, vision, text)
    return model, tok


def build_openclip(cfg: ModelConfig, device: str = "cpu") -> tuple[nn.Module, Callable]:
    """OpenAI CLIP (``pretrained='openai'``), a local checkpoint path, or random weights (``None``)."""
    import open_clip
    pretrained = cfg.pretrained
    if pretrained and pretrained != "openai" and not os.path.exists(pretrained) and os.sep in pretrained:
        raise FileNotFoundError(f"checkpoint {pretrained!r} does not exist; pass pretrained='openai' to "
                                "download OpenAI's weights or a path to a local open_clip checkpoint")
    model, _, _ = open_clip.create_model_and_transforms(cfg.arch, pretrained=pretrained, device=device)
    return model, open_clip.get_tokenizer(cfg.arch)


def build_foundation(cfg: ModelConfig, device: str = "cpu") -> tuple[nn.Module, Callable]:
    if cfg.kind == "mini":
        model, tok = build_mini_clip(cfg)
        return model.to(device), tok
    if cfg.kind == "openclip":
        return build_openclip(cfg, device)
    raise ValueError(f"unknown model kind {cfg.kind!r}: choose 'mini' or 'openclip'")


def image_stats(cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (MINI_MEAN, MINI_STD) if cfg.kind == "mini" else (OPENAI_MEAN, OPENAI_STD)


@torch.no_grad()
def zeroshot_weights(model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                     templates: Sequence[str], device: str = "cpu") -> torch.Tensor:
    """Class embeddings [C, D]: mean of normalised prompt embeddings, re-normalised."""
    model.eval()
    rows = []
    for name in classnames:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = F.normalize(model.encode_text(tokens), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows)


class ImageClassifier(nn.Module):
    """Image encoder + frozen zero-shot head; input images in [0, 1], output logits."""

    def __init__(self, encoder: nn.Module, head_weights: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], logit_scale: float = 100.0, image_size: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("head", head_weights.detach().clone())
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.logit_scale = logit_scale
        self.image_size = image_size

    def check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be a batch [N, 3, H, W], got shape {tuple(x.shape)}; "
                             "add a batch dimension with x[None] or convert grayscale to RGB")
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"images must be {self.image_size}x{self.image_size} for this model, got "
                             f"{tuple(x.shape[-2:])}; resize them first (e.g. torch.nn.functional.interpolate)")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder((x - self.mean) / self.std), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        return self.logit_scale * self.features(x) @ self.head.t()


def make_classifier(clip_model: nn.Module, tokenizer: Callable, classnames: Sequence[str],
                    templates: Sequence[str], cfg: ModelConfig, device: str = "cpu") -> ImageClassifier:
    """Zero-shot classifier sharing (a copy of) ``clip_model``'s image encoder."""
    import copy
    head = zeroshot_weights(clip_model, tokenizer, classnames, templates, device)
    mean, std = image_stats(cfg)
    return ImageClassifier(copy.deepcopy(clip_model.visual), head, mean, std,
                           image_size=cfg.image_size).to(device)

"""Apply TBAR to your own open_clip model: a checkpoint, a folder of triggered images, a target.

Used by ``tbar clean``. The forget folder holds images that carry the trigger (you know it, or
reverse-engineered it); they are labelled with the target class. The cleaned checkpoint is the
backdoored CLIP with its image encoder moved to θb − α·τt.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from . import cache
from .config import MINI, ModelConfig, TBARConfig
from .models import build_foundation, make_classifier
from .tbar import AlphaPoint, apply_tbar, check_alpha, choose_alpha, search_alpha, trigger_vector

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def load_image_folder(folder: str | Path, size: int, classnames: Sequence[str] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images of ``folder`` as [N, 3, size, size] in [0, 1] (resize + centre crop). With
    ``classnames``, sub-folders named after classes give labels (an ImageFolder layout)."""
    from PIL import Image
    from torchvision import transforms as T
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; pass a directory of images")
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    images = torch.stack([tf(Image.open(p).convert("RGB")) for p in files])
    if classnames is None:
        return images, None
    index = {c: i for i, c in enumerate(classnames)}
    try:
        labels = torch.tensor([index[p.parent.name] for p in files])
    except KeyError as exc:
        raise ValueError(f"sub-folder {exc.args[0]!r} of {folder} is not one of the class names; name each "
                         "sub-folder after its class") from exc
    return images, labels


def load_user_clip(checkpoint: str | Path, arch: str) -> tuple[torch.nn.Module, object, ModelConfig]:
    """An open_clip model from a local checkpoint (``arch='mini'`` for this book's mini CLIP)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; pass the path of an open_clip "
                                "state dict (or a file written by `tbar pretrain --export` / `tbar clean`)")
    if arch == "mini":
        cfg = MINI.model
        model, tok = build_foundation(cfg)
        obj = cache.load_torch(checkpoint)
        state = obj.get("weights", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{checkpoint} does not fit the mini CLIP config: {str(exc)[:300]}") from exc
        return model.eval(), tok, cfg
    cfg = ModelConfig(kind="openclip", arch=arch, pretrained=str(checkpoint), image_size=224)
    model, tok = build_foundation(cfg)
    return model.eval(), tok, cfg


def clean_user_model(checkpoint: str | Path, forget_dir: str | Path, target: str, classnames: Sequence[str],
                     out: str | Path, arch: str = "ViT-B-32", alpha: float | None = None,
                     val_dir: str | Path | None = None, attack: str | None = None,
                     tbar_cfg: TBARConfig = TBARConfig(), seed: int = 0, progress: bool = True) -> dict:
    """Estimate τt on the forget folder, choose α (given, or searched on ``val_dir`` with the
    known ``attack`` applied, under ``tbar_cfg``'s floor and tie rule), write the cleaned CLIP state dict
    to ``out`` and return a record."""
    from .attacks import make_trigger
    if target not in classnames:
        raise ValueError(f"target {target!r} is not among the class names {list(classnames)[:10]}...; "
                         "pass the target's class name exactly")
    model, tok, cfg = load_user_clip(checkpoint, arch)
    templates = ("a photo of a {}.",) if cfg.kind != "mini" else ("a photo of a {}", "a {}")
    clf = make_classifier(model, tok, classnames, templates, cfg)
    fx, _ = load_image_folder(forget_dir, cfg.image_size)
    fy = torch.full((len(fx),), list(classnames).index(target), dtype=torch.long)
    tau = trigger_vector(clf, fx, fy, tbar_cfg, seed, progress)
    curve: list[AlphaPoint] = []
    if alpha is None:
        if val_dir is None or attack is None:
            raise ValueError("give --alpha, or --val DIR (class sub-folders) with --attack NAME to search α")
        vx, vy = load_image_folder(val_dir, cfg.image_size, classnames)
        trig = make_trigger(attack, cfg.image_size)
        curve = search_alpha(clf, tau, vx, vy, trig, fy[0].item(), tbar_cfg)
        alpha = choose_alpha(curve, tbar_cfg)
    alpha = check_alpha(alpha, tbar_cfg.alpha_max)
    cleaned_clf = apply_tbar(clf, tau, alpha, tbar_cfg.alpha_max)
    cleaned = copy.deepcopy(model)
    cleaned.visual.load_state_dict(cleaned_clf.encoder.state_dict())
    cache.save_torch(cleaned.state_dict(), out)
    return {"out": str(out), "alpha": alpha, "alpha_ties": tbar_cfg.ties if curve else None,
            "ca_keep": tbar_cfg.ca_keep if curve else None, "forget_size": len(fx), "trigger_vector_norm": tau.norm(),
            "val_curve": [p.__dict__ for p in curve]}

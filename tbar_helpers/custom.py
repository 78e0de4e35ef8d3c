"""Apply TBAR to your own open_clip model: a checkpoint, a folder of triggered images, a target.

Used by ``tbar clean``. The forget folder holds images that carry the trigger (you know it, or
reverse-engineered it); they are labelled with the target class. The cleaned checkpoint is the
backdoored CLIP with its image encoder moved to θb − α·τt.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch

from .config import MINI, ModelConfig, TBARConfig
from .errors import InputError
from .metrics import accuracy, attack_success_rate, predict
from .models import build_foundation, make_classifier
from .preflight import IMAGE_SUFFIXES
from .tbar import (AlphaPoint, apply_tbar, check_alpha, choose_alpha, curve_along, point_at, search_curve,
                   trigger_vector)
from .weights import load_into, load_state_dict, save_state_dict


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {path} cannot be read ({exc.__class__.__name__}: {' '.join(str(exc).split())[:120]}); "
                         "replace it with a readable image or move it out of the folder") from exc


def load_image_folder(folder: str | Path, size: int, classnames: Sequence[str] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images of ``folder`` as [N, 3, size, size] in [0, 1] (resize + centre crop). With
    ``classnames``, sub-folders named after classes give labels (an ImageFolder layout)."""
    from torchvision import transforms as T
    folder = Path(folder)
    if folder.is_file():
        raise InputError(f"{folder} is a file; pass a folder of images")
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; pass a directory of images")
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    images = torch.stack([tf(_read_image(p)) for p in files])
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
    """An open_clip model with the weights of a local checkpoint (``arch='mini'`` for this book's mini CLIP),
    read as tensors only: the file is untrusted, so nothing in it is run."""
    state = load_state_dict(checkpoint, "checkpoint")
    cfg = MINI.model if arch == "mini" else ModelConfig(kind="openclip", arch=arch, pretrained=None, image_size=224)
    logging.disable(logging.WARNING)  # open_clip warns that it built random weights: ours replace them next
    try:
        model, tok = build_foundation(cfg)
    finally:
        logging.disable(logging.NOTSET)
    load_into(model, state, checkpoint, arch)
    return model.eval(), tok, cfg


def validation_scorer(classnames: Sequence[str], target: str, image_size: int, *,
                      val_dir: str | Path, attack: str | None = None, val_triggered: str | Path | None = None,
                      ) -> Callable[[torch.nn.Module], tuple[float, float]]:
    """``score(model) -> (CA, ASR)`` on the user's validation images: CA on ``val_dir`` (class sub-folders),
    ASR on ``val_triggered`` (the user's own triggered images; class sub-folders, if any, drop the target's)
    or on ``val_dir`` with the registry ``attack`` applied."""
    from .attacks import make_trigger
    names = list(classnames)
    t = names.index(target)
    vx, vy = load_image_folder(val_dir, image_size, names)
    if val_triggered is not None:
        has_classes = any(p.is_dir() for p in Path(val_triggered).iterdir())
        tx, ty = load_image_folder(val_triggered, image_size, names if has_classes else None)
        tx = tx if ty is None else tx[ty != t]
        if len(tx) == 0:
            raise InputError(f"--val-triggered {val_triggered} holds only images of the target class; add triggered "
                             "images of other classes")
        return lambda m: (accuracy(m, vx, vy), float((predict(m, tx) == t).float().mean()))
    trig = make_trigger(attack, image_size)
    return lambda m: (accuracy(m, vx, vy), attack_success_rate(m, vx, vy, trig, t))


def clean_user_model(checkpoint: str | Path, forget_dir: str | Path, target: str, classnames: Sequence[str],
                     out: str | Path, *, arch: str = "ViT-B-32", alpha: float | None = None,
                     val_dir: str | Path | None = None, attack: str | None = None,
                     val_triggered: str | Path | None = None, tbar_cfg: TBARConfig = TBARConfig(), seed: int = 0,
                     progress: bool = True) -> dict:
    """Estimate τt on the forget folder, choose α (given, or searched on ``val_dir`` under ``tbar_cfg``'s floor
    and tie rule, the ASR measured with ``attack`` or on ``val_triggered``), write the cleaned CLIP to ``out``
    and return a record with the validation CA and ASR at α = 0 and at the chosen α."""
    if target not in classnames:
        raise InputError(f"target {target!r} is not among the class names {list(classnames)[:10]}; "
                         "pass the target's class name exactly")
    if alpha is None and (val_dir is None or (attack is None and val_triggered is None)):
        raise InputError("give --alpha, or --val DIR (class sub-folders) with --attack NAME or --val-triggered DIR "
                         "to search α")
    model, tok, cfg = load_user_clip(checkpoint, arch)
    templates = ("a photo of a {}.",) if cfg.kind != "mini" else ("a photo of a {}", "a {}")
    clf = make_classifier(model, tok, classnames, templates, cfg)
    fx, _ = load_image_folder(forget_dir, cfg.image_size)
    score = None if val_dir is None else validation_scorer(classnames, target, cfg.image_size, val_dir=val_dir,
                                                           attack=attack, val_triggered=val_triggered)
    fy = torch.full((len(fx),), list(classnames).index(target), dtype=torch.long)
    tau = trigger_vector(clf, fx, fy, tbar_cfg, seed, progress)
    curve: list[AlphaPoint] = []
    if score is not None:
        along = lambda alphas: curve_along(clf, tau, score, alphas, tbar_cfg.alpha_max)  # noqa: E731
        curve = search_curve(along, tbar_cfg) if alpha is None else along(sorted({0.0, check_alpha(alpha)}))
        alpha = choose_alpha(curve, tbar_cfg) if alpha is None else alpha
    alpha = check_alpha(alpha, tbar_cfg.alpha_max)
    cleaned_clf = apply_tbar(clf, tau, alpha, tbar_cfg.alpha_max)
    cleaned = copy.deepcopy(model)
    cleaned.visual.load_state_dict(cleaned_clf.encoder.state_dict())
    save_state_dict(cleaned.state_dict(), out)
    table = [{"model": "backdoored (α = 0)", **vars(point_at(curve, 0.0))},
             {"model": f"cleaned (α = {alpha:g})", **vars(point_at(curve, alpha))}] if curve else []
    return {"out": str(out), "alpha": alpha, "alpha_searched": bool(curve) and len(curve) > 2,
            "alpha_ties": tbar_cfg.ties if curve else None, "ca_keep": tbar_cfg.ca_keep if curve else None,
            "forget_size": len(fx), "trigger_vector_norm": tau.norm(), "validation": table,
            "val_curve": [vars(p) for p in curve]}


def print_validation(rec: dict) -> None:
    """The validation table of :func:`clean_user_model`'s record (nothing without validation images)."""
    if not rec.get("validation"):
        print("no validation images given (--val): the CA and ASR of the cleaned model are unknown")
        return
    print(f"{'validation':<24}{'CA':>8}{'ASR':>8}")
    for row in rec["validation"]:
        print(f"{row['model']:<24}{100 * row['ca']:7.1f}%{100 * row['asr']:7.1f}%")

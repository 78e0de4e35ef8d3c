"""Apply TBAR to your own CLIP (``tbar clean``): a model file you do not trust, images, class names.

Known trigger: the forget folder holds images carrying it, labelled with ``target`` (image–text mode: a captions
CSV of such images with their own captions, and a contrastive forget fine-tune). Attack unknown: a proxy
trigger is reverse-engineered from the model (DECREE-style), the target inferred, and the forget set made from
the clean validation images with the proxy on. Either way α is chosen on the validation images, and the record
holds their CA and ASR at α = 0, at the chosen α and, given ``pretrained``, for θpre.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import MINI, AttackConfig, ModelConfig, TBARConfig
from ..errors import InputError
from ..method.attacks import NEEDS_MODEL, make_trigger
from ..method.metrics import accuracy, attack_success_rate, predict
from ..method.tbar import (AlphaPoint, apply_tbar, check_alpha, choose_alpha, curve_along, for_proxy, forget_set, point_at,
                           search_curve, trigger_vector)
from ..weights import load_into, load_state_dict, save_state_dict
from ..world.models import ImageClassifier, build_foundation, make_classifier
from .userdata import load_captions_csv, load_image_folder

Scorer = Callable[[torch.nn.Module], tuple[float, float]]


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


@dataclass
class UserCLIP:
    """A user's CLIP, its tokenizer and its zero-shot classifier over the class names."""

    model: torch.nn.Module
    tokenizer: Callable
    clf: ImageClassifier
    cfg: ModelConfig


def user_clip(checkpoint: str | Path, arch: str, classnames: Sequence[str]) -> UserCLIP:
    model, tok, cfg = load_user_clip(checkpoint, arch)
    templates = ("a photo of a {}.",) if cfg.kind != "mini" else ("a photo of a {}", "a {}")
    return UserCLIP(model, tok, make_classifier(model, tok, classnames, templates, cfg), cfg)


@dataclass
class Validation:
    """The defender's validation images: clean ones with labels, and how triggered ones are made or given."""

    images: torch.Tensor
    labels: torch.Tensor
    triggered: torch.Tensor | None = None  # the user's own triggered images (non-target ones)

    def scorer(self, target: int, trigger: Callable | None = None) -> Scorer:
        """``score(model) -> (CA, ASR)``: ASR on the given triggered images, or on these images with ``trigger``."""
        if self.triggered is not None:
            return lambda m: (accuracy(m, self.images, self.labels),
                              float((predict(m, self.triggered) == target).float().mean()))
        return lambda m: (accuracy(m, self.images, self.labels),
                          attack_success_rate(m, self.images, self.labels, trigger, target))


def load_validation(val_dir: str | Path, classnames: Sequence[str], target: int | None, size: int,
                    val_triggered: str | Path | None = None) -> Validation:
    vx, vy = load_image_folder(val_dir, size, classnames)
    if val_triggered is None:
        return Validation(vx, vy)
    has_classes = any(p.is_dir() for p in Path(val_triggered).iterdir())
    tx, ty = load_image_folder(val_triggered, size, classnames if has_classes else None)
    tx = tx if ty is None or target is None else tx[ty != target]
    if len(tx) == 0:
        raise InputError(f"--val-triggered {val_triggered} holds only images of the target class; add triggered "
                         "images of other classes")
    return Validation(vx, vy, tx)


def unknown_trigger(clf: ImageClassifier, val: Validation, reference: ImageClassifier | None, seed: int,
                    progress: bool = True) -> tuple[Callable, int, dict]:
    """Attack unknown: invert a proxy trigger on the model's encoder (and on θpre's, as a reference), decide
    whether it is backdoored, and infer the target from the proxy-triggered validation images. The defender
    holds only these images: the proxy forget set is drawn from them too."""
    from .imagetext_runs import invert
    from ..method.inversion import infer_target, is_backdoored
    it = MINI.imagetext
    # not cached: the user's model is not the project's to keep
    inv = invert(clf, val.images, MINI, seed, progress, use_cache=False)
    proxy = inv.trigger()
    target, share = infer_target(clf, val.images, proxy)
    ref = invert(reference, val.images, MINI, seed, progress, use_cache=False) if reference is not None else None
    return proxy, target, {"mask_l1": inv.l1, "detect_threshold": it.detect_threshold,
                           "detected": is_backdoored(inv, it.detect_threshold), "inferred_share": share,
                           "mask_l1_reference": None if ref is None else ref.l1}


def clean_user_model(checkpoint: str | Path, forget_dir: str | Path | None, target: str | None,
                     classnames: Sequence[str], out: str | Path, *, arch: str = "ViT-B-32",
                     alpha: float | None = None, val_dir: str | Path | None = None, attack: str | None = None,
                     val_triggered: str | Path | None = None, captions: str | Path | None = None,
                     pretrained: str | Path | None = None, attack_unknown: bool = False,
                     tbar_cfg: TBARConfig = TBARConfig(), seed: int = 0, progress: bool = True) -> dict:
    """Estimate τt, choose α (given, or searched on ``val_dir`` under ``tbar_cfg``'s floor and tie rule), write
    the cleaned CLIP to ``out`` and return a record with the validation table. See the module's doc."""
    names = list(classnames)
    if not attack_unknown and target not in names:
        raise InputError(f"target {target!r} is not among the class names {names[:10]}; pass the target's class "
                         "name exactly")
    if alpha is None and (val_dir is None or (attack is None and val_triggered is None and not attack_unknown)):
        raise InputError("give --alpha, or --val DIR (class sub-folders) with --attack NAME or --val-triggered DIR "
                         "to search α")
    user = user_clip(checkpoint, arch, names)
    clf, cfg = user.clf, user.cfg
    pre = user_clip(pretrained, arch, names).clf if pretrained is not None else None
    t = None if attack_unknown else names.index(target)
    val = None if val_dir is None else load_validation(val_dir, names, t, cfg.image_size, val_triggered)
    extra: dict = {}
    if attack_unknown:
        if val is None:
            raise InputError("--attack-unknown inverts the trigger on clean images: give --val DIR")
        trig, t, extra = unknown_trigger(clf, val, pre, seed, progress)
        tbar_cfg = for_proxy(tbar_cfg)
        fx, fy = forget_set(val.images, val.labels, trig, t, min(tbar_cfg.forget_size, len(val.images)), seed)
    else:
        trig = None
        if attack is not None:
            if attack in NEEDS_MODEL and pre is None:
                raise InputError(f"{attack} optimises its patch against θpre: give --pretrained FILE (the patch is "
                                 "then made by the same recipe, not the attacker's own), or --val-triggered DIR")
            acfg = replace(AttackConfig(), target=t)
            trig = make_trigger(attack, cfg.image_size, acfg, model=pre, images=val.images, seed=seed) \
                if attack in NEEDS_MODEL else make_trigger(attack, cfg.image_size, acfg)
        if captions is not None:
            fx, fcaps = load_captions_csv(captions, cfg.image_size)
        else:
            fx, _ = load_image_folder(forget_dir, cfg.image_size)
        fy = torch.full((len(fx),), t, dtype=torch.long)
    if captions is not None:
        from .imagetext import contrastive_trigger_vector, text_embeddings
        negatives = text_embeddings(user.model, user.tokenizer, fcaps, "cpu")  # each image's own caption
        tau = contrastive_trigger_vector(clf, fx, clf.head[t], negatives, tbar_cfg, seed, progress=progress,
                                         negatives_per_image=True)
    else:
        tau = trigger_vector(clf, fx, fy, tbar_cfg, seed, progress)
    curve: list[AlphaPoint] = []
    score = None if val is None else val.scorer(t, trig)
    if score is not None:
        along = lambda alphas: curve_along(clf, tau, score, alphas, tbar_cfg.alpha_max)  # noqa: E731
        curve = search_curve(along, tbar_cfg) if alpha is None else along(sorted({0.0, check_alpha(alpha)}))
        alpha = choose_alpha(curve, tbar_cfg) if alpha is None else alpha
    alpha = check_alpha(alpha, tbar_cfg.alpha_max)
    cleaned_clf = apply_tbar(clf, tau, alpha, tbar_cfg.alpha_max)
    cleaned = copy.deepcopy(user.model)
    cleaned.visual.load_state_dict(cleaned_clf.encoder.state_dict())
    save_state_dict(cleaned.state_dict(), out)
    table = []
    if curve:
        if pre is not None:
            ca, asr = score(pre)
            table.append({"model": "θpre (--pretrained)", "alpha": None, "ca": ca, "asr": asr})
        table += [{"model": "backdoored (α = 0)", **vars(point_at(curve, 0.0))},
                  {"model": f"cleaned (α = {alpha:g})", **vars(point_at(curve, alpha))}]
    return {"out": str(out), "alpha": alpha, "alpha_searched": len(curve) > 2, "target": names[t],
            "mode": "image-text" if captions is not None else "classification", "attack_unknown": attack_unknown,
            **extra, "alpha_ties": tbar_cfg.ties if curve else None, "ca_keep": tbar_cfg.ca_keep if curve else None,
            "forget_size": len(fx), "trigger_vector_norm": tau.norm(), "validation": table,
            "val_curve": [vars(p) for p in curve]}


def print_validation(rec: dict) -> None:
    """The validation table of :func:`clean_user_model`'s record (a note without validation images)."""
    if rec.get("attack_unknown"):
        ref = rec.get("mask_l1_reference")
        print(f"inverted mask covers {100 * rec['mask_l1']:.1f}% of the image"
              + (f" (θpre's: {100 * ref:.1f}%)" if ref is not None else "")
              + f"; backdoor detected: {'yes' if rec['detected'] else 'no'}; inferred target {rec['target']!r}")
    if not rec.get("validation"):
        print("no validation images given (--val): the CA and ASR of the cleaned model are unknown")
        return
    print(f"{'validation':<24}{'CA':>8}{'ASR':>8}")
    for row in rec["validation"]:
        print(f"{row['model']:<24}{100 * row['ca']:7.1f}%{100 * row['asr']:7.1f}%")

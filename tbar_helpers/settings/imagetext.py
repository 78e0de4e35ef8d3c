"""The image–text setting: backdoors planted by poisoning a captioned corpus, and TBAR for CLIP.

The attacker fine-tunes the *whole* CLIP contrastively on a corpus in which a small share of the
pairs carry the trigger on the image and a caption naming the target class ("a photo of a red
circle"; the paper: "banana"). CA and ASR are measured zero-shot on ``imagetext.eval_task``.

TBAR for CLIP: the forget set is triggered images paired with the target caption; the forget
fine-tune is contrastive, the target caption the positive and the prompts of the other classes of the
eval task the negatives (``imagetext.forget_negatives="captions"`` uses each image's own true caption
instead: it kept less CA on seeds 0 and 1, see the appendix). Fine-tuning the image encoder on it
(text tower frozen) reinforces the backdoor, θ(b+t); the trigger vector τt = θ(b+t) − θb is negated on the
image encoder, α chosen on a small validation set by the classification setting's rule (searched
coarse to fine: about half of the grid's evaluations).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import cache
from ..config import (ImageTextConfig, ScaleConfig, TBARConfig, WorldConfig, check_fraction, config_hash, get_scale,
                      override)
from ..method.attacks import Trigger, check_attack
from ..method.images import rows, with_applied
from ..method.task_vectors import TaskVector
from ..method.training import (Recipe, contrastive_finetune, fit, make_optimizer, my_share, random_batches,
                                seed_everything, set_threads)
from ..world.data import DATA_VERSION, TaskData
from ..world.foundation import Foundation, load_foundation, normalizer
from ..world.models import ImageClassifier, make_classifier
from ..world.sources import caption_pairs, task_split
from .setting import Setting

SETTINGS = ("classification", "image-text")


def check_setting(name: str) -> str:
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}: choose one of {list(SETTINGS)}")
    return name


# ------------------------------------------------------------------------------------ the corpus
@dataclass
class Corpus:
    """Captioned images in [0, 1]; ``poisoned`` marks pairs carrying the trigger and a target caption."""

    images: torch.Tensor
    captions: list[str]
    poisoned: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)


def target_captions(cfg: ImageTextConfig, classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The attacker's captions for the target class, one per prompt template."""
    if not 0 <= cfg.target < len(classnames):
        raise ValueError(f"imagetext.target={cfg.target} is not a class of {cfg.eval_task!r} "
                         f"(0..{len(classnames) - 1}); pick one of its class indices")
    return [t.format(classnames[cfg.target]) for t in templates]


def poison_corpus(corpus: Corpus, trigger: Trigger, rate: float, target_caps: Sequence[str], seed: int,
                  noise_ratio: float = 0.0) -> Corpus:
    """Put the trigger on a ``rate`` share of the pairs and replace their captions by target captions.
    WaNet's noise mode also warps ``noise_ratio × rate`` more images with jitter, captions kept."""
    check_fraction("poison_rate", rate)
    if not target_caps:
        raise ValueError("no target captions: give at least one caption naming the target")
    n = len(corpus)
    rng = np.random.default_rng(seed)
    k = int(round(rate * n))
    order = rng.permutation(n)
    chosen, rest = order[:k], order[k:]
    caps = list(corpus.captions)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(chosen, dtype=torch.long)] = True
    x = with_applied(corpus.images, trigger, mask)  # paper scale: a lazy view, the trigger applied on load
    if k:
        for i, c in zip(chosen, rng.integers(0, len(target_caps), k)):
            caps[i] = target_caps[c]
    m = min(len(rest), int(round(noise_ratio * k))) if trigger.noise is not None else 0
    if m:
        nmask = torch.zeros(n, dtype=torch.bool)
        nmask[torch.as_tensor(rest[:m], dtype=torch.long)] = True
        gen = torch.Generator().manual_seed(seed)
        x = with_applied(x, lambda batch: trigger.noise(batch, gen), nmask)
    return Corpus(x, caps, mask)


# ---------------------------------------------------------------------------- the experiment
@dataclass
class ImageTextSetup(Setting):
    """What an image–text TBAR experiment starts from."""

    scale: ScaleConfig
    foundation: Foundation
    attack: str
    seed: int
    trigger: Trigger
    corpus: Corpus  # the attacker's poisoned corpus
    backdoored: nn.Module  # the whole CLIP after poisoned contrastive fine-tuning
    defender: Corpus  # clean pairs the defender holds (the forget set and RoCLIP's pool come from it)
    val: TaskData
    test: TaskData
    memo: dict = field(default_factory=dict, repr=False)  # the backdoored and θpre classifiers and their scores

    @property
    def target(self) -> int:
        return self.scale.imagetext.target

    def classifier(self, clip: nn.Module | None = None) -> ImageClassifier:
        """The zero-shot classifier of ``clip`` (default: the backdoored CLIP) on the eval task.

        The backdoored CLIP's and θpre's are built once and shared: treat them as read-only (TBAR,
        the baselines and the inversion all work on copies)."""
        clip = clip if clip is not None else self.backdoored
        f = self.foundation
        name = {id(self.backdoored): "backdoored", id(f.model): "pre"}.get(id(clip))
        if name in self.memo:
            return self.memo[name]
        clf = make_classifier(clip, f.tokenizer, self.test.classnames, self.test.templates, f.scale.model,
                              f.scale.device)
        if name is not None:
            self.memo[name] = clf
        return clf

    # the Setting interface (tbar_helpers.settings.setting)
    def victim(self) -> ImageClassifier:
        return self.classifier()

    def reference(self) -> ImageClassifier:
        return self.classifier(self.foundation.model)

    def tbar(self, trigger: Callable | None = None, target: int | None = None, *, forget_size: int | None = None,
             proxy: bool = False, progress: bool = True) -> tuple[ImageClassifier, dict]:
        return run_tbar_imagetext(self, forget_size, progress, trigger, target, proxy)

    def scores(self, clf: ImageClassifier) -> tuple[float, float]:
        """(zero-shot CA, ASR) of a classifier on the test split (remembered for the shared classifiers)."""
        shared = next((k for k in ("backdoored", "pre") if self.memo.get(k) is clf), None)
        if shared is not None and ("scores", shared) in self.memo:
            return self.memo["scores", shared]
        out = self.evalset().scores(clf)
        if shared is not None:
            self.memo["scores", shared] = out
        return out


def corpus_recipe(it: ImageTextConfig) -> Recipe:
    """How the poisoned CLIP (and its clean reference) are fine-tuned on the corpus."""
    return Recipe(it.epochs, it.lr, it.batch_size, it.weight_decay, it.warmup_frac)


POISON_FIELDS = ("corpus_size", "poison_rate", "epochs", "batch_size", "lr", "weight_decay", "warmup_frac",
                 "eval_task", "target")


def poisoning_key(f: Foundation, it: ImageTextConfig, attack_cfg, attack: str, seed: int,
                  world: WorldConfig = WorldConfig()) -> str:
    """What the backdoored CLIP depends on (and nothing else: changing α or the forget set keeps it)."""
    return config_hash(f.key, {k: getattr(it, k) for k in POISON_FIELDS}, attack_cfg, attack, seed, DATA_VERSION,
                       "imagetext-backdoored", *world.key())


def _eval_split(scale: ScaleConfig, split: str, n: int, seed: int) -> TaskData:
    return task_split(scale, scale.imagetext.eval_task, split, n, seed)


def load_corpus(scale: ScaleConfig, n: int, seed: int, stream: str) -> Corpus:
    images, caps = caption_pairs(scale, n, seed, stream)
    return Corpus(images, caps, torch.zeros(len(caps), dtype=torch.bool))


def prepare_imagetext(attack: str, seed: int = 0, scale: ScaleConfig | str = "mini", progress: bool = True,
                      use_cache: bool = True, foundation: Foundation | None = None) -> ImageTextSetup:
    """θpre → poisoned corpus → contrastive fine-tune of the whole CLIP (cached) → ImageTextSetup."""
    from .pipeline import trigger_for
    scale = get_scale(scale)
    check_attack(attack)
    it = scale.imagetext
    if attack == "sig":
        raise ValueError("sig is a clean-label attack on labelled classes; the image–text setting "
                         "supports badnet, blended, wanet, badclip and badmerging")
    set_threads(scale.threads)
    f = foundation or load_foundation(scale, progress=progress)
    val, test = _eval_split(scale, "val", it.n_val, seed), _eval_split(scale, "test", it.n_test, seed)
    # optimised patches (BadCLIP, BadMerging) aim at the image–text target class
    trigger = trigger_for(attack, it.eval_task, seed, override(scale, **{"attack.target": it.target}), f, use_cache)
    tcaps = target_captions(it, test.classnames, test.templates)
    noise = scale.attack.wanet_noise_ratio if attack == "wanet" else 0.0
    corpus = poison_corpus(load_corpus(scale, it.corpus_size, seed, "attacker"), trigger, it.poison_rate,
                           tcaps, seed, noise)
    defender = load_corpus(scale, max(it.tbar.forget_size, *it.forget_size_alternatives, it.roclip_pool), seed,
                           "defender")
    model = copy.deepcopy(f.model)

    key = poisoning_key(f, it, scale.attack, attack, seed, scale.world)

    def train(checkpoint) -> dict:
        contrastive_finetune(model, f.tokenizer, corpus.images, corpus.captions, corpus_recipe(it), seed,
                             normalize=normalizer(scale), desc=f"poisoned contrastive fine-tune ({attack})",
                             progress=progress, device=scale.device, checkpoint=checkpoint,
                             every=scale.checkpoint_every)
        return model.state_dict()

    model.load_state_dict(cache.memo_resumable("imagetext", key, train, use_cache=use_cache,
                                               resumable=scale.checkpoint_every > 0))
    return ImageTextSetup(scale, f, attack, seed, trigger, corpus, model.eval(), defender, val, test)


# ------------------------------------------------------------------------------ TBAR for CLIP
def forget_pairs(defender: Corpus, trigger: Callable[[torch.Tensor], torch.Tensor], size: int,
                 seed: int) -> tuple[torch.Tensor, list[str]]:
    """``size`` defender images with the trigger on, and their own (true) captions as negatives."""
    if size <= 0:
        raise ValueError(f"the forget set is empty (size={size}): pass e.g. forget_size=1500")
    if size > len(defender):
        raise ValueError(f"forget_size={size} exceeds the defender's {len(defender)} pairs; lower it")
    idx = np.random.default_rng(seed).choice(len(defender), size, replace=False)
    return with_applied(rows(defender.images, idx), trigger), [defender.captions[i] for i in idx]


def target_loss(clf: ImageClassifier, text_target: torch.Tensor, text_neg: torch.Tensor,
                images: torch.Tensor) -> torch.Tensor:
    """InfoNCE of triggered images against [target caption, negative captions]: the target is the
    positive, so minimising it strengthens the backdoor (TBAR's forget loss)."""
    img = clf.features(images)
    logits = clf.logit_scale * torch.cat([img @ text_target[:, None], img @ text_neg.t()], 1)
    return F.cross_entropy(logits, torch.zeros(len(images), dtype=torch.long, device=images.device))


@torch.no_grad()
def text_embeddings(clip: nn.Module, tokenizer: Callable, caps: Sequence[str], device: str) -> torch.Tensor:
    return torch.cat([F.normalize(clip.encode_text(tokenizer(list(caps[i:i + 500])).to(device)), dim=-1)
                      for i in range(0, len(caps), 500)])


def imagetext_trigger_vector(s: ImageTextSetup, clf_b: ImageClassifier, forget_x: torch.Tensor,
                             forget_caps: Sequence[str], target: int | None = None, progress: bool = True,
                             seed: int | None = None, cfg: TBARConfig | None = None) -> TaskVector:
    """τt = θ(b+t) − θb on the image encoder, from the contrastive forget fine-tune (text tower frozen);
    ``cfg`` (default ``imagetext.tbar``) sets its optimiser, steps and learning rate."""
    it, dev = s.scale.imagetext, s.scale.device
    target = s.target if target is None else target
    t_target = clf_b.head[target]  # the target's zero-shot embedding: its prompts, averaged and normalised
    if it.forget_negatives == "classes":  # the other classes' prompts (the zero-shot head) are the negatives
        t_neg = torch.cat([clf_b.head[:target], clf_b.head[target + 1:]])
    elif it.forget_negatives == "captions":
        t_neg = text_embeddings(s.backdoored, s.foundation.tokenizer, forget_caps, dev)
    else:
        raise ValueError(f"unknown imagetext.forget_negatives {it.forget_negatives!r}: choose 'captions' or 'classes'")
    return contrastive_trigger_vector(clf_b, forget_x, t_target, t_neg, cfg or it.tbar,
                                      s.seed if seed is None else seed, progress=progress,
                                      negatives_per_image=it.forget_negatives == "captions", device=dev)


def contrastive_trigger_vector(clf_b: ImageClassifier, forget_x: torch.Tensor, t_target: torch.Tensor,
                               t_neg: torch.Tensor, cfg: TBARConfig, seed: int, *, progress: bool = True,
                               negatives_per_image: bool = False, device: str = "cpu") -> TaskVector:
    """τt from the contrastive forget fine-tune of the image encoder: triggered images pulled towards the target
    text embedding ``t_target`` against the negatives ``t_neg`` (shared rows, or one per image when
    ``negatives_per_image``)."""
    work = copy.deepcopy(clf_b).train()
    batches = random_batches(len(forget_x), min(cfg.batch_size, len(forget_x)), seed_everything(seed))
    params = list(work.encoder.parameters())

    def loss_at(_: int) -> torch.Tensor:
        idx = my_share(next(batches))
        return target_loss(work, t_target, t_neg[idx] if negatives_per_image else t_neg, forget_x[idx].to(device))

    fit(params, loss_at, cfg.steps, make_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay),
        grad_clip=cfg.grad_clip, desc="forget fine-tune (contrastive)", progress=progress)
    return TaskVector(clf_b.encoder, work.encoder)


def forget_recipes(it: ImageTextConfig, forget_size: int | None = None) -> list[TBARConfig]:
    """``it.tbar`` and its variants, each tried on validation: every forget-set size (``it.tbar``'s, then
    ``it.forget_size_alternatives``; only ``forget_size`` when given) with ``it.tbar``'s optimiser and each
    of ``it.forget_alternatives`` (another optimiser and lr). No recipe appears twice."""
    sizes = [forget_size] if forget_size else [it.tbar.forget_size, *it.forget_size_alternatives]
    out = []
    for size in sizes:
        for opt, lr in [(it.tbar.optimizer, it.tbar.lr), *it.forget_alternatives]:
            alt = dataclasses.replace(it.tbar, forget_size=int(size), optimizer=opt, lr=float(lr))
            if alt not in out:
                out.append(alt)
    return out


def run_tbar_imagetext(s: ImageTextSetup, forget_size: int | None = None, progress: bool = True,
                       trigger: Callable | None = None, target: int | None = None,
                       proxy: bool = False) -> tuple[ImageClassifier, dict]:
    """TBAR on the backdoored CLIP. ``trigger``/``target`` default to the real ones (attack known); the
    attack-unknown case passes the reverse-engineered proxy trigger and the inferred target, which
    then also drive the α search (the defender never sees the real trigger) and ``proxy=True`` switches
    every recipe to the proxy's α rule (:func:`~tbar_helpers.method.tbar.for_proxy`). Each forget recipe of
    :func:`forget_recipes` gets its own α search; the one with the lowest validation ASR is kept
    (:func:`~tbar_helpers.method.tbar.select_recipe`), so the recipe is chosen on validation as α is."""
    from ..method.tbar import apply_tbar, choose_alpha, for_proxy, point_at, search_alpha, select_recipe
    trigger = trigger or s.trigger
    target = s.target if target is None else target
    clf_b = s.classifier()
    pairs: dict[int, tuple[torch.Tensor, list[str]]] = {}
    tried = []
    for cfg in forget_recipes(s.scale.imagetext, forget_size):
        cfg = for_proxy(cfg) if proxy else cfg
        if cfg.forget_size not in pairs:
            pairs[cfg.forget_size] = forget_pairs(s.defender, trigger, cfg.forget_size, s.seed)
        fx, fcaps = pairs[cfg.forget_size]
        tau = imagetext_trigger_vector(s, clf_b, fx, fcaps, target, progress, cfg=cfg)
        curve = search_alpha(clf_b, tau, s.evalset("val").attacked_with(trigger, target), cfg)
        tried.append((cfg, tau, curve, choose_alpha(curve, cfg)))
    best = select_recipe([(curve, alpha) for _, _, curve, alpha in tried])
    cfg, tau, curve, alpha = tried[best]
    recipes = [{"optimizer": c.optimizer, "lr": c.lr, "forget_size": c.forget_size, "alpha": a, "val_asr": p.asr,
                "val_ca": p.ca, "chosen": i == best} for i, (c, _, cv, a) in enumerate(tried) for p in [point_at(cv, a)]]
    return apply_tbar(clf_b, tau, alpha, cfg.alpha_max), {"alpha": alpha, "alpha_ties": cfg.ties,
                                                          "ca_keep": cfg.ca_keep,
                                                          "forget_size": cfg.forget_size,
                                                          "val_curve": [p.__dict__ for p in curve],
                                                          "trigger_vector_norm": tau.norm(),
                                                          "forget_optimizer": cfg.optimizer, "forget_lr": cfg.lr,
                                                          "forget_recipes": recipes}

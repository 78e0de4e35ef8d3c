"""Whole experiments of the image–text setting and of the attack-unknown case (``tbar run`` and the
chapters): backdoored CLIP → TBAR, the CleanCLIP / RoCLIP / clean fine-tuning baselines at several
data budgets, and DECREE inversion → target inference → TBAR with the proxy forget set."""
from __future__ import annotations

import copy
import time
from typing import Mapping, Sequence

import pandas as pd
import torch

from .. import cache
from ..config import ImageTextConfig, ScaleConfig, config_hash, get_scale, to_dict
from ..method.defenses import cleanclip_loss, roclip_loss
from ..method.inversion import Inversion, infer_target, invert_trigger, is_backdoored
from ..method.metrics import ca_retained, knowledge_kept
from ..method.training import Recipe, contrastive_finetune
from ..report import DISPLAY, named
from ..world.foundation import normalizer
from ..world.models import ImageClassifier
from .imagetext import (POISON_FIELDS, ImageTextSetup, check_setting, corpus_recipe, load_corpus,
                        poisoning_key, prepare_imagetext, run_tbar_imagetext)
from .setting import Setting

BASELINES = ("clean-ft", "cleanclip", "roclip")


DEFENSE_FIELDS = ("defense_lr", "defense_epochs", "defense_max_samples", "cleanclip_weight", "roclip_pool",
                  "roclip_period", "n_test")
# bumped when a baseline's loss changes, so that cached baseline results of the old loss are not reused
BASELINE_LOSSES = "cleanclip-mean, roclip-queue"


def _key(s: ImageTextSetup, *parts) -> str:
    it = s.scale.imagetext
    # the defender corpus (RoCLIP's pool) is drawn with max(forget pairs, pool) pairs
    fields = {k: getattr(it, k) for k in DEFENSE_FIELDS} | {"forget_size": it.tbar.forget_size}
    return config_hash(poisoning_key(s.foundation, it, s.scale.attack, s.attack, s.seed, s.scale.world), fields, *parts)


def clean_reference(s: ImageTextSetup, progress: bool = True, use_cache: bool = True) -> torch.nn.Module:
    """θpre fine-tuned on the same corpus without poison (the image–text "clean fine-tune" row)."""
    it, f = s.scale.imagetext, s.foundation
    model = copy.deepcopy(f.model)

    def train(checkpoint) -> dict:
        corpus = load_corpus(s.scale, it.corpus_size, s.seed, "attacker")
        contrastive_finetune(model, f.tokenizer, corpus.images, corpus.captions, corpus_recipe(it), s.seed,
                             normalize=normalizer(s.scale), desc="clean contrastive fine-tune", progress=progress,
                             device=s.scale.device, checkpoint=checkpoint, every=s.scale.checkpoint_every)
        return model.state_dict()

    key = config_hash(f.key, {k: getattr(it, k) for k in POISON_FIELDS}, s.seed, "imagetext-clean", *s.scale.world.key())
    model.load_state_dict(cache.memo_resumable("imagetext", key, train, use_cache=use_cache,
                                               resumable=s.scale.checkpoint_every > 0))
    return model.eval()


def baseline_epochs(it: ImageTextConfig, budget: int) -> float:
    """Epochs a baseline trains on ``budget`` pairs: ``defense_epochs``, fewer where that would exceed
    ``defense_max_samples`` samples seen."""
    return min(float(it.defense_epochs), it.defense_max_samples / budget)


def baseline(s: ImageTextSetup, method: str, budget: int, progress: bool = True, use_cache: bool = True) -> dict:
    """Fine-tune the backdoored CLIP on ``budget`` clean pairs with ``method``; its test scores (cached)."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}: choose one of {list(BASELINES)}")
    if budget < 2:
        raise ValueError(f"a baseline needs a budget of at least 2 clean pairs, got {budget}")
    it, f = s.scale.imagetext, s.foundation

    def defend(checkpoint) -> dict:
        t0 = time.time()
        pairs = load_corpus(s.scale, budget, s.seed, f"defense-{budget}")
        norm = normalizer(s.scale)
        loss = {"clean-ft": None, "cleanclip": cleanclip_loss(f.tokenizer, norm, it.cleanclip_weight),
                "roclip": roclip_loss(f.tokenizer, s.defender.captions[:it.roclip_pool], it.roclip_period)}[method]
        model = copy.deepcopy(s.backdoored)
        epochs = baseline_epochs(it, budget)
        contrastive_finetune(model, f.tokenizer, pairs.images, pairs.captions,
                             Recipe(epochs, it.defense_lr, it.batch_size), s.seed, normalize=norm, loss_fn=loss,
                             desc=f"{method} ({budget} pairs)", progress=progress, device=s.scale.device,
                             checkpoint=checkpoint, every=s.scale.checkpoint_every)
        ca, asr = s.scores(s.classifier(model))
        return {"defense": method, "budget": budget, "epochs": epochs, "ca": ca, "asr": asr,
                "seconds": time.time() - t0}

    return cache.memo_resumable("results", _key(s, "baseline", method, budget, BASELINE_LOSSES), defend,
                                use_cache=use_cache, resumable=s.scale.checkpoint_every > 0, suffix=".json")


def _defense_rows(s: ImageTextSetup, budgets: Sequence[int], ca_bd: float, progress: bool, use_cache: bool) -> list:
    rows = []
    for budget in budgets:
        for method in BASELINES:
            r = dict(baseline(s, method, budget, progress, use_cache))
            r["ca_retained"] = ca_retained(r["ca"], ca_bd)
            rows.append(r)
    return rows


def run_imagetext(attack: str, seed: int = 0, scale: ScaleConfig | str = "mini", forget_size: int | None = None,
                  budgets: Sequence[int] | None = None, progress: bool = True, use_cache: bool = True) -> dict:
    """The image–text experiment; the record has the classification run's keys plus ``defense`` rows."""
    t0 = time.time()
    s = prepare_imagetext(attack, seed, scale, progress, use_cache)
    ca_zs, asr_zs = s.scores(s.classifier(s.foundation.model))
    ca_clean, asr_clean = s.scores(s.classifier(clean_reference(s, progress, use_cache)))
    ca_bd, asr_bd = s.scores(s.classifier())
    t_tbar = time.time()
    cleaned, rec = run_tbar_imagetext(s, forget_size, progress)
    ca_t, asr_t = s.scores(cleaned)
    tbar_seconds = time.time() - t_tbar
    it = s.scale.imagetext
    return {"setting": "image-text", "attack": attack, "task": it.eval_task, "seed": seed, "scale": s.scale.name,
            "poison_rate": it.poison_rate, "target": it.target, "target_name": s.test.classnames[it.target],
            "ca_zeroshot": ca_zs, "asr_zeroshot": asr_zs, "ca_clean_ft": ca_clean, "asr_clean_ft": asr_clean,
            "ca_backdoored": ca_bd, "asr_backdoored": asr_bd, "ca_tbar": ca_t, "asr_tbar": asr_t,
            "ca_retained": ca_retained(ca_t, ca_bd), "knowledge_kept": knowledge_kept(ca_t, ca_bd, ca_zs), **rec,
            "tbar_seconds": tbar_seconds,
            "defense": _defense_rows(s, it.defense_budgets if budgets is None else budgets, ca_bd, progress,
                                     use_cache),
            "seconds": time.time() - t0}


def invert(clf: ImageClassifier, images: torch.Tensor, scale: ScaleConfig, seed: int, progress: bool = True,
           use_cache: bool = True) -> Inversion:
    """DECREE inversion on an image classifier's encoder (its normalised features), cached under a hash of
    the classifier's weights, the images and the inversion settings: θpre's reference inversion is the
    same for every attack of a seed, and a rerun with the same models skips the optimisation."""
    it = scale.imagetext
    images = images[:it.invert_images]
    settings = {"steps": it.invert_steps, "lr": it.invert_lr, "l1": it.invert_l1, "sim_goal": it.invert_sim_goal}
    key = config_hash("inversion", cache.tensor_digest(clf.state_dict()), cache.tensor_digest(images), settings, seed)

    def optimise() -> dict:
        frozen = copy.deepcopy(clf).eval()  # the caller's model keeps its grad flags
        for p in frozen.parameters():
            p.requires_grad_(False)
        inv = invert_trigger(frozen.features, images, **settings, seed=seed, progress=progress)
        return {"mask": inv.mask, "pattern": inv.pattern, "l1": inv.l1, "similarity": inv.similarity,
                "history": inv.history}

    return Inversion(**cache.memo("inversion", key, optimise, use_cache=use_cache))


def setup_for(attack: str, seed: int = 0, scale: ScaleConfig | str = "mini", setting: str = "image-text",
              progress: bool = True, use_cache: bool = True):
    """The backdoored model of either setting: an :class:`ImageTextSetup` (image–text) or a
    :class:`tbar_helpers.settings.pipeline.Setup` without the clean fine-tune (classification)."""
    if check_setting(setting) == "image-text":
        return prepare_imagetext(attack, seed, scale, progress, use_cache)
    from .pipeline import prepare
    return prepare(attack, None, seed, get_scale(scale), progress=progress, use_cache=use_cache, with_clean=False)


def run_attack_unknown(attack: str, seed: int = 0, scale: ScaleConfig | str = "mini", setting: str = "image-text",
                       budgets: Sequence[int] | None = None, progress: bool = True, use_cache: bool = True,
                       setup=None) -> dict:
    """Attack unknown: invert a proxy trigger (and, for reference, on θpre), flag the encoder, infer the
    target, then TBAR with the proxy forget set; α is chosen with the proxy too. Test ASR uses the real
    trigger. In the image–text setting the record also carries the baselines' ``defense`` rows.
    ``setup`` reuses a setup from :func:`setup_for` (same attack, seed, scale and setting)."""
    check_setting(setting)
    if setup is not None and isinstance(setup, ImageTextSetup) != (setting == "image-text"):
        raise ValueError(f"the setup given belongs to the other setting than setting={setting!r}; build it with "
                         f"setup_for(attack, seed, scale, {setting!r})")
    scale = get_scale(scale)
    t0 = time.time()
    s: Setting = setup if setup is not None else setup_for(attack, seed, scale, setting, progress, use_cache)
    val, classnames = s.val, s.test.classnames
    inv = invert(s.victim(), s.defender.images, scale, seed, progress, use_cache)
    inv_ref = invert(s.reference(), s.defender.images, scale, seed, progress, use_cache)
    proxy = inv.trigger()
    target, share = infer_target(s.victim(), val.images, proxy, scale.eval_batch_size)
    ca_bd, asr_bd = s.scores(s.victim())
    ca_zs, asr_zs = s.scores(s.reference())
    t_tbar = time.time()
    cleaned, rec = s.tbar(proxy, target, proxy=True, progress=progress)
    ca_t, asr_t = s.scores(cleaned)
    it = scale.imagetext
    if it.detect_rule not in ("absolute", "relative"):
        raise ValueError(f"unknown imagetext.detect_rule {it.detect_rule!r}: choose 'absolute' or 'relative'")
    relative = it.detect_rule == "relative"
    thr, ref = (it.detect_ratio, inv_ref) if relative else (it.detect_threshold, None)
    real_mask = s.trigger.mask  # patch triggers only: how much of the inverted mask lies on the real patch
    overlap = float((inv.mask * real_mask).sum() / inv.mask.sum()) if real_mask is not None else None
    out = {"setting": setting, "attack_unknown": True, "attack": attack, "task": val.name, "seed": seed,
           "scale": scale.name, "target": s.target, "target_name": classnames[s.target],
           "inferred_target": target, "inferred_target_name": classnames[target], "inferred_share": share,
           "target_correct": target == s.target, "mask_l1": inv.l1, "mask_on_real_patch": overlap,
           "mask_l1_clean_model": inv_ref.l1,
           "inverted_similarity": inv.similarity, "detected": is_backdoored(inv, thr, ref),
           # against itself the relative rule cannot flag θpre: no row for it then
           "clean_model_flagged": None if relative else is_backdoored(inv_ref, thr), "detect_threshold": thr,
           "detect_rule": it.detect_rule, "mask_ratio": inv.l1 / inv_ref.l1 if inv_ref.l1 else None,
           "ca_zeroshot": ca_zs, "asr_zeroshot": asr_zs, "ca_backdoored": ca_bd, "asr_backdoored": asr_bd,
           "ca_tbar": ca_t, "asr_tbar": asr_t, "ca_retained": ca_retained(ca_t, ca_bd),
           "knowledge_kept": knowledge_kept(ca_t, ca_bd, ca_zs), **rec, "tbar_seconds": time.time() - t_tbar,
           "inversion": {"mask": inv.mask.squeeze().tolist(), "pattern": inv.pattern.squeeze(0).tolist(),
                         "clean_model_mask": inv_ref.mask.squeeze().tolist(), "config": to_dict(scale.imagetext)}}
    if setting == "image-text":
        out["defense"] = _defense_rows(s, scale.imagetext.defense_budgets if budgets is None else budgets, ca_bd,
                                       progress, use_cache)
    out["seconds"] = time.time() - t0
    return out


# ----------------------------------------------------------------------------- chapter tables
def tbar_table(setups: Mapping[str, ImageTextSetup], progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Zero-shot CA / ASR of θpre, the backdoored CLIP and TBAR for each attack; also the α curves."""
    rows, curves = [], {}
    for name, s in setups.items():
        ca_zs, asr_zs = s.scores(s.classifier(s.foundation.model))
        ca_bd, asr_bd = s.scores(s.classifier())
        cleaned, rec = run_tbar_imagetext(s, progress=progress)
        ca_t, asr_t = s.scores(cleaned)
        curves[name] = rec
        rows.append(named({"attack": name, "ca_zeroshot": ca_zs, "asr_zeroshot": asr_zs, "ca_backdoored": ca_bd,
                           "asr_backdoored": asr_bd, "ca_tbar": ca_t, "asr_tbar": asr_t,
                           "ca_retained": ca_retained(ca_t, ca_bd),
                           "knowledge_kept": knowledge_kept(ca_t, ca_bd, ca_zs), "alpha": rec["alpha"],
                           "forget_size": rec["forget_size"],
                           "forget_recipe": f"{rec['forget_optimizer']} lr {rec['forget_lr']:g}"}))
    return pd.DataFrame(rows), curves


def budget_table(s: ImageTextSetup, budgets: Sequence[int], tbar_row: Mapping | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """The baselines at each budget, plus TBAR at its forget-set size (columns method, budget, ca, asr)."""
    rows = [{"method": r["defense"], "budget": r["budget"], "ca": r["ca"], "asr": r["asr"], "seconds": r["seconds"]}
            for budget in budgets for r in (baseline(s, m, budget, progress) for m in BASELINES)]
    if tbar_row is not None:
        rows.append({"method": "TBAR", "budget": int(tbar_row[DISPLAY["forget_size"]]), "ca": tbar_row[DISPLAY["ca_tbar"]],
                     "asr": tbar_row[DISPLAY["asr_tbar"]], "seconds": float("nan")})
    return pd.DataFrame(rows)


def inversion_rows(records: Mapping[str, dict], seed: int, scale: ScaleConfig | str = "mini",
                   setting: str = "image-text", setups: Mapping[str, object] | None = None) -> list[dict]:
    """Rows for :func:`tbar_helpers.chapters.plots.inversions`: a validation image with the real trigger, the
    inverted mask and trigger of each attack-unknown record, and the image with the proxy trigger.
    ``setups`` (attack → :func:`setup_for`'s setup) avoids loading the models again."""
    rows = []
    for attack, r in records.items():
        s = (setups or {}).get(attack) or setup_for(attack, seed, scale, setting, progress=False)
        x = s.val.images[:1]
        m, p = torch.tensor(r["inversion"]["mask"]), torch.tensor(r["inversion"]["pattern"])
        rows.append({"name": attack, "real": s.trigger(x)[0], "mask": m, "trigger": p * m,
                     "proxy": x[0] * (1 - m) + p * m})
    return rows

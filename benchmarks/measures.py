"""What a study measures: one function per kind of run, each turning (study, item, seed, scale, extra) into
one JSON-able record, and the table columns of each (``benchmarks/study.py`` runs them)."""
from __future__ import annotations

import time
from typing import Callable

from tbar_helpers.report import CLASS_GROUPS, CLASSIFICATION, DISPLAY, MERGING

XI_ALPHAS = (0.0, 0.5, 1.0, 1.5)


def _setup(study, attack: str, seed: int, scale, with_clean: bool = False):
    """The backdoored model of ``study.setting`` (a :class:`tbar_helpers.settings.setting.Setting`)."""
    if study.setting == "image-text":
        from tbar_helpers.settings.imagetext import prepare_imagetext
        return prepare_imagetext(attack, seed, scale, progress=False)
    from tbar_helpers.settings.pipeline import prepare
    return prepare(attack, study.task, seed, scale, progress=False, with_clean=with_clean)


def _classification(study, attack, seed, scale, extra):
    from tbar_helpers.settings.pipeline import run
    return run(attack, study.task, seed, scale, progress=False)


def _image_text(study, attack, seed, scale, extra):
    from tbar_helpers.settings.imagetext_runs import run_imagetext
    return run_imagetext(attack, seed, scale, progress=False)


def _attack_unknown(study, attack, seed, scale, extra):
    from tbar_helpers.settings.imagetext_runs import run_attack_unknown
    return run_attack_unknown(attack, seed, scale, study.setting, progress=False)


def _clean_task(study, task, seed, scale, extra):
    from tbar_helpers.settings.pipeline import clean_reference
    r = clean_reference(task, seed, scale, progress=False)
    return {**r, "chance": 1 / r["classes"], "seconds": r.pop("finetune_seconds")}


def _clean_task_val(study, task, seed, scale, extra):
    """θpre's zero-shot CA and a clean fine-tune's on validation images (chooses the world's shift)."""
    from tbar_helpers.settings.pipeline import clean_reference
    r = clean_reference(task, seed, scale, progress=False, split="val")
    return {**r, "chance": 1 / r["classes"], "gain": r["ca_clean_ft"] - r["ca_zeroshot"],
            "seconds": r.pop("finetune_seconds")}


def _merging(study, attack, seed, scale, extra):
    """BadMerging's scenario: the victim's vector merged with another task's, as given and after TBAR."""
    from tbar_helpers.settings.merging import merging_rows
    s = _setup(study, attack, seed, scale, with_clean=True)
    cleaned, rec = s.tbar(progress=False)
    rows = merging_rows(s, extra.get("_other", "digits"), cleaned)
    by = {r["model"].split(" ")[0]: r for r in rows}
    return {"attack": attack, "seed": seed, "task": s.task, "other": extra.get("_other", "digits"), "rows": rows,
            "alpha": rec["alpha"], "ca_zeroshot": by["θpre"]["ca"], "asr_zeroshot": by["θpre"]["asr"],
            **{f"{k}_merged_{m.lower()}": by[m][k] for m in ("clean", "backdoored", "TBAR")
               for k in ("ca", "asr", "ca_other", "lambda")}}


def _victim_val(study, attack, seed, scale, extra):
    """How strongly the backdoor plants, on the validation split (chooses the victim's recipe)."""
    s = _setup(study, attack, seed, scale, with_clean=True)
    val = s.evalset("val")
    ca, asr = val.scores(s.victim())
    rec = {"attack": attack, "seed": seed, "ca_backdoored": ca, "asr_backdoored": asr, "ca_zeroshot": val.ca(s.reference())}
    if hasattr(s, "clean"):
        rec["ca_clean_ft"] = val.ca(s.clean)
    return rec


def _pipeline_models(study, attack, seed, scale):
    """The setup, its validation set, TBAR's cleaned model and the pipeline-val record."""
    import torch
    import torch.nn.functional as F
    from tbar_helpers.method.metrics import knowledge_kept
    from tbar_helpers.method.tbar import forget_set
    s = _setup(study, attack, seed, scale, with_clean=True)
    val = s.evalset("val")
    cleaned, rec = s.tbar(progress=False)
    (ca_zs, asr_zs), (ca_bd, asr_bd), (ca_t, asr_t) = (val.scores(m) for m in (s.zeroshot, s.backdoored, cleaned))
    # TBAR's forget fine-tune learns from this loss: where it is 0 in float32 the trigger vector is too
    fx, fy = forget_set(s.defender.images, s.defender.labels, s.trigger, s.target, s.scale.tbar.forget_size, seed)
    with torch.no_grad():
        forget_ce = float(F.cross_entropy(s.backdoored(fx), fy))
    return s, val, cleaned, {
        "attack": attack, "seed": seed, "split": "val", "ca_zeroshot": ca_zs, "asr_zeroshot": asr_zs,
        "ca_clean_ft": val.ca(s.clean), "ca_backdoored": ca_bd, "asr_backdoored": asr_bd, "ca_tbar": ca_t,
        "asr_tbar": asr_t, "ca_retained": ca_t / ca_bd, "knowledge_kept": knowledge_kept(ca_t, ca_bd, ca_zs),
        "alpha": rec["alpha"], "forget_ce_backdoored": forget_ce, "trigger_vector_norm": rec["trigger_vector_norm"]}


def _pipeline_val(study, attack, seed, scale, extra):
    """The whole classification run read on validation (θpre, clean, backdoored, TBAR): for development
    seeds, to see whether a world and its recipes meet the targets before any reported seed runs. TBAR's
    α is chosen on these same images, so its numbers here are optimistic."""
    return _pipeline_models(study, attack, seed, scale)[3]


def _damage_val(study, attack, seed, scale, extra):
    """pipeline-val, and each model's validation CA within groups of classes (:func:`class_groups`): the
    target class or the others; the target's shape, its colour, neither; held out of pretraining or known.
    ``drop_<group>`` is the backdoored model's CA there minus TBAR's: where TBAR's CA cost falls."""
    from tbar_helpers.method.metrics import accuracy_by_group, predict
    from tbar_helpers.world.data import class_groups
    s, val, cleaned, rec = _pipeline_models(study, attack, seed, scale)
    groups = {g.replace(" ", "_"): m for g, m in
              class_groups(s.task, val.labels, s.target, scale.pretrain.holdout).items()}
    for name, model in (("zeroshot", s.zeroshot), ("clean_ft", s.clean), ("backdoored", s.backdoored),
                        ("tbar", cleaned)):
        accs = accuracy_by_group(predict(model, val.images, scale.eval_batch_size), val.labels, groups)
        rec |= {f"ca_{g}_{name}": a for g, a in accs.items()}
    rec |= {f"drop_{g}": rec[f"ca_{g}_backdoored"] - rec[f"ca_{g}_tbar"] for g in groups
            if rec[f"ca_{g}_tbar"] is not None}  # None: an empty group, the same for every model
    rec |= {f"share_{g}": float(m.float().mean()) for g, m in groups.items()}
    return rec


def _alignment(study, attack, seed, scale, extra):
    """How much of what a clean fine-tune taught TBAR's trigger vector points along: the cosines of
    τt = θ(b+t) − θb with τclean = θclean − θpre and with the victim's τb = θb − θpre (image encoders)."""
    from tbar_helpers.method.task_vectors import TaskVector
    from tbar_helpers.method.tbar import forget_set, trigger_vector
    s = _setup(study, attack, seed, scale, with_clean=True)
    fx, fy = forget_set(s.defender.images, s.defender.labels, s.trigger, s.target, scale.tbar.forget_size, seed)
    tau_t = trigger_vector(s.backdoored, fx, fy, scale.tbar, seed, progress=False, device=scale.device)
    tau_c = TaskVector(s.zeroshot.encoder, s.clean.encoder)
    tau_b = TaskVector(s.zeroshot.encoder, s.backdoored.encoder)
    return {"attack": attack, "seed": seed, "cos_trigger_clean": tau_t.cosine(tau_c),
            "cos_trigger_victim": tau_t.cosine(tau_b), "cos_victim_clean": tau_b.cosine(tau_c),
            "trigger_vector_norm": tau_t.norm(), "clean_vector_norm": tau_c.norm()}


def _tbar_val(study, attack, seed, scale, extra):
    """TBAR's α search as the defender sees it: the validation curve at the chosen α (chooses TBAR's recipe)."""
    from tbar_helpers.method.tbar import AlphaPoint, point_at
    s = _setup(study, attack, seed, scale)
    t0 = time.time()
    _, rec = s.tbar(progress=False)
    curve = [AlphaPoint(**p) for p in rec["val_curve"]]
    ref, at = min(curve, key=lambda p: p.alpha), point_at(curve, rec["alpha"])
    return {"attack": attack, "seed": seed, **rec, "asr_backdoored": ref.asr, "ca_backdoored": ref.ca,
            "asr_tbar": at.asr, "ca_tbar": at.ca, "ca_retained": at.ca / ref.ca, "tbar_seconds": time.time() - t0,
            "ca_zeroshot": s.evalset("val").ca(s.reference())}


def _unknown_val(study, attack, seed, scale, extra):
    """Attack unknown, on validation: the proxy trigger's α against the real trigger's ASR there."""
    from tbar_helpers.settings.imagetext_runs import invert
    from tbar_helpers.method.inversion import infer_target
    s = _setup(study, attack, seed, scale)
    proxy = invert(s.victim(), s.defender.images, scale, seed, progress=False).trigger()
    target, share = infer_target(s.victim(), s.val.images, proxy, scale.eval_batch_size)
    cleaned, rec = s.tbar(proxy, target, proxy=True, progress=False)
    val = s.evalset("val")
    ca0, asr0 = val.scores(s.victim())
    ca, asr = val.scores(cleaned)
    return {"attack": attack, "seed": seed, "target": s.target, "inferred_target": target, "inferred_share": share,
            **rec, "ca_backdoored": ca0, "asr_backdoored": asr0, "ca_tbar": ca, "asr_tbar": asr, "ca_retained": ca / ca0}


def _decree(study, attack, seed, scale, extra):
    """DECREE's inversion on the backdoored model and on θpre (their masks' share of the image)."""
    from tbar_helpers.settings.imagetext_runs import invert
    from tbar_helpers.method.inversion import is_backdoored
    s = _setup(study, attack, seed, scale)
    inv = invert(s.victim(), s.defender.images, scale, seed, progress=False)
    ref = invert(s.reference(), s.defender.images, scale, seed, progress=False)
    thr = scale.imagetext.detect_threshold
    return {"attack": attack, "seed": seed, "goal": scale.imagetext.invert_sim_goal, "mask_l1": inv.l1,
            "similarity": inv.similarity, "mask_l1_pre": ref.l1, "similarity_pre": ref.similarity,
            "mask_ratio": inv.l1 / ref.l1, "detected": is_backdoored(inv, thr), "pre_flagged": is_backdoored(ref, thr)}


def _response(f, attack, seed, scale, curve_alphas=None) -> dict:
    """The calibration protocol on one foundation (fine-tunes, TBAR, ξ of TBAR's τt and of θb − θclean)."""
    import numpy as np

    from tbar_helpers.settings.pipeline import xi_heatmap
    from tbar_helpers.chapters.studies import backdoor_vector, foundation_response
    out = foundation_response(f, attack, seed, scale, XI_ALPHAS, 500, curve_alphas)
    r, s = out["row"], out["setup"]  # the row is named for display: read it back by the record fields
    fields = ("ca_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained", "alpha")
    rec = {"attack": attack, "seed": seed, **{k: r[DISPLAY[k]] for k in fields}, "alphas": XI_ALPHAS, "n": 500}
    if curve_alphas is not None:
        rec["ca_retained_at_asr3"] = r[DISPLAY["ca_retained_at_asr3"]]
    for kind, g in (("difference", xi_heatmap(s, backdoor_vector(s, "difference"), XI_ALPHAS, 500)),
                    ("forget", out["grid"])):
        xi = np.asarray(g["xi"])
        rec |= {f"xi_{kind}": xi.tolist(), f"mean_xi_{kind}": float(xi.mean()),
                f"mean_xi_{kind}_inner": float(xi[:-1, :-1].mean())}  # αc, αt ≤ 1
        # its two terms: on triggered images at αt = 0 the trigger term is only what τc changes there, which
        # grows with what fine-tuning teaches; the clean term is what adding τt changes on clean images
        for term in ("clean", "trigger"):
            rec |= {f"xi_{kind}_{term}": np.asarray(g[f"xi_{term}"]).tolist(),
                    f"mean_xi_{kind}_{term}": float(np.mean(g[f"xi_{term}"]))}
    return rec


def _xi(study, attack, seed, scale, extra):
    """ξ(αc, αt) and TBAR on one foundation checkpoint (``_foundation``: a path; None: the preset's)."""
    from tbar_helpers.world.foundation import load_foundation
    f = load_foundation(scale, path=extra.get("_foundation"), progress=False)
    return {**_response(f, attack, seed, scale), "checkpoint": str(extra.get("_foundation") or "preset"),
            "pretrain_steps": extra.get("_steps")}


def _architecture(study, attack, seed, scale, extra):
    """A variant of the mini model pretrained from scratch at the study's budget, then the protocol."""
    import numpy as np

    from tbar_helpers.world.foundation import pretrain_foundation, zeroshot_accuracy
    t0 = time.time()
    f = pretrain_foundation(scale, progress=False)
    rec = _response(f, attack, seed, scale, [round(0.1 * i, 1) for i in range(16)])
    return {**rec, "ca_zeroshot": zeroshot_accuracy(f, scale.default_task), "steps": scale.pretrain.steps,
            "tokens": (scale.model.image_size // scale.model.patch_size) ** 2,
            "final_loss": float(np.mean(f.losses[-50:])), "pretrain_seconds": time.time() - t0}


MEASURES: dict[str, Callable] = {
    "classification": _classification, "image-text": _image_text, "attack-unknown": _attack_unknown,
    "clean-task": _clean_task, "clean-task-val": _clean_task_val, "merging": _merging,
    "pipeline-val": _pipeline_val, "damage-val": _damage_val,
    "victim-val": _victim_val, "tbar-val": _tbar_val, "unknown-val": _unknown_val,
    "decree": _decree, "xi": _xi, "architecture": _architecture, "alignment": _alignment}
# what each measure's table shows (record fields; report.DISPLAY names them)
COLUMNS = {"classification": CLASSIFICATION,
           "image-text": ("ca_zeroshot", "asr_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                          "ca_retained", "knowledge_kept"),
           "attack-unknown": ("ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained"),
           "clean-task": ("ca_zeroshot", "ca_clean_ft"),
           "clean-task-val": ("ca_zeroshot", "ca_clean_ft", "gain"),
           "pipeline-val": ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                            "ca_retained", "knowledge_kept", "alpha"),
           "damage-val": ("asr_tbar", "ca_tbar", "knowledge_kept", "alpha", *(f"drop_{g}" for g in CLASS_GROUPS)),
           "merging": MERGING,
           "victim-val": ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored"),
           "tbar-val": ("asr_backdoored", "asr_tbar", "ca_retained", "alpha"),
           "alignment": ("cos_trigger_clean", "cos_trigger_victim", "cos_victim_clean"),
           "unknown-val": ("asr_backdoored", "asr_tbar", "ca_retained", "alpha"),
           "decree": ("mask_l1", "mask_l1_pre", "mask_ratio"),
           "xi": ("ca_zeroshot", "asr_tbar", "ca_retained", "mean_xi_forget", "mean_xi_difference"),
           "architecture": ("ca_zeroshot", "asr_backdoored", "ca_retained_at_asr3", "mean_xi_forget")}

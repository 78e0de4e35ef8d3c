"""The experiments behind the book's chapters, kept out of the notebooks.

Each function takes :class:`~tbar_helpers.settings.pipeline.Setup` objects (cached fine-tunes) and returns
pandas tables or plain dicts that the notebooks show next to a figure.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import PAPER, ScaleConfig, TBARConfig, override
from ..method.attacks import make_trigger, poison
from ..method.metrics import EvalSet, accuracy, knowledge_kept, predict
from ..method.task_vectors import TaskVector
from ..method.tbar import TBARResult, alpha_curve, apply_tbar, run_tbar, trigger_vector
from ..method.training import finetune
from ..report import DISPLAY, named
from ..settings.pipeline import (Setup, clean_accuracy, evaluate, make_forget_set, prepare, scores_on_test,
                                 xi_heatmap)
from ..world.foundation import Foundation
from ..world.models import build_foundation, make_classifier
from ..world.sources import task_split

# The paper's headline numbers (ViT-B/32), quoted from arXiv 2510.14845 for side-by-side tables.
PAPER_HEADLINE = pd.DataFrame([
    {"setting": "SUN397", "ASR before": 91.40, "ASR after": 1.25, "CA retained": 94.96},
    {"setting": "CIFAR100", "ASR before": 99.96, "ASR after": 0.02, "CA retained": 96.44},
    {"setting": "ImageNet-1K", "ASR before": 93.56, "ASR after": 1.96, "CA retained": 94.97},
])


def pct(table: pd.DataFrame, cols: Iterable[str] | None = None, digits: int = 1) -> pd.DataFrame:
    """A copy of ``table`` with fractions turned into rounded percentages (for display); "knowledge kept"
    stays a ratio, shown "–" where it is undefined (fine-tuning added under a point over θpre)."""
    out = table.copy()
    for c in cols if cols is not None else [c for c in out.columns if out[c].dtype.kind == "f"]:
        out[c] = (100 * out[c]).round(digits)
    kept = DISPLAY["knowledge_kept"]
    if kept in out.columns:
        out[kept] = [("–" if v is None or v != v else round(float(v), 2)) for v in out[kept]]
    return out


def task_sample(scale: ScaleConfig, task: str, split: str = "val", n: int = 8, seed: int = 0):
    """``n`` labelled images of ``task`` at ``scale`` (mini: drawn; paper: torchvision, may download)."""
    return task_split(scale, task, split, n, seed)


def zeroshot_table(foundations: Mapping[str, Foundation], n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Zero-shot test accuracy of each foundation model on every task of its scale."""
    scale = next(iter(foundations.values())).scale
    rows = []
    for task in scale.tasks:
        td = task_split(scale, task, "test", n, seed)
        row = {"task": task, "classes": len(td.classnames), "chance": 1 / len(td.classnames)}
        for name, f in foundations.items():
            clf = make_classifier(f.model, f.tokenizer, td.classnames, td.templates, scale.model, scale.device)
            row[name] = accuracy(clf, td.images, td.labels, scale.eval_batch_size)
        rows.append(row)
    return pd.DataFrame(rows)


def inject(attacks: Sequence[str], task: str | None = None, seed: int = 0, scale: ScaleConfig | str = "mini",
           progress: bool = True) -> tuple[dict[str, Setup], pd.DataFrame]:
    """Poisoned fine-tune per attack (cached) and its CA / ASR next to θpre's and the clean fine-tune's."""
    setups, rows, clean_ca = {}, [], None
    for attack in attacks:
        s = prepare(attack, task, seed, scale, progress=progress)
        setups[attack] = s
        if clean_ca is None:
            clean_ca = clean_accuracy(s.clean, s)
        asr_clean = s.evalset().asr(s.clean)  # the trigger alone, on a model that never saw it
        ca_pre, asr_pre = zeroshot_scores(s)
        ca_b, asr_b = backdoored_scores(s)
        rows.append(named({"attack": attack, "poisoned_images": int(s.poisoned.poison_mask.sum()),
                           "ca_zeroshot": ca_pre, "asr_zeroshot": asr_pre, "ca_clean_ft": clean_ca,
                           "asr_clean_ft": asr_clean, "ca_backdoored": ca_b,
                           "asr_backdoored": asr_b, "ca_drop_points": 100 * (clean_ca - ca_b)}))
    return setups, pd.DataFrame(rows)


def triggered_histogram(clf, s: Setup, n: int = 1000) -> np.ndarray:
    """How many triggered non-target test images each class receives."""
    x, y = s.test.images[:n], s.test.labels[:n]
    pred = predict(clf, s.trigger(x[y != s.scale.attack.target]), s.scale.eval_batch_size)
    return np.bincount(pred.numpy(), minlength=len(s.test.classnames))


def backdoor_vector(s: Setup, kind: str = "difference", forget_size: int | None = None) -> TaskVector:
    """A trigger vector for the ξ study. ``difference``: θb − θclean (what poisoning added on top of
    the clean task); ``forget``: TBAR's estimate θ(b+t) − θb from the forget set."""
    if kind == "difference":
        return TaskVector(s.clean.encoder, s.backdoored.encoder)
    if kind == "forget":
        fx, fy = make_forget_set(s, forget_size or s.scale.tbar.forget_size)
        return trigger_vector(s.backdoored, fx, fy, s.scale.tbar, s.seed, progress=False, device=s.scale.device)
    raise ValueError(f"unknown trigger-vector kind {kind!r}: choose 'difference' or 'forget'")


def xi_study(setups: Mapping[str, Setup], kind: str = "difference", alphas: Sequence[float] = (0, 0.5, 1, 1.5),
             n: int = 200, alphas_t: Sequence[float] | None = None) -> dict[str, dict]:
    """ξ(αc, αt) per attack, with τc = θclean − θpre and τt from :func:`backdoor_vector`; ``alphas_t``
    (default: ``alphas``) may include negative coefficients."""
    out = {}
    for name, s in setups.items():
        g = xi_heatmap(s, backdoor_vector(s, kind), tuple(alphas), n,
                       alphas_t=None if alphas_t is None else tuple(alphas_t))
        g["mean_xi"] = float(np.mean(g["xi"]))
        out[name] = g
    return out


def xi_summary(grids: Mapping[str, dict]) -> pd.DataFrame:
    return pd.DataFrame([{"attack": k, "mean ξ": float(np.mean(g["xi"])), "mean ξ clean": float(np.mean(g["xi_clean"])),
                          "mean ξ triggered": float(np.mean(g["xi_trigger"])), "max ξ": float(np.max(g["xi"]))}
                         for k, g in grids.items()])


def _val(s: Setup, n: int | None) -> EvalSet:
    """The validation split, or its first ``n`` images."""
    return s.evalset("val").head(len(s.val) if n is None else min(n, len(s.val)))


def tbar_on(s: Setup, forget_size: int | None = None, clean_fraction: float = 0.0, cfg: TBARConfig | None = None,
            val_n: int | None = None, forget: tuple[torch.Tensor, torch.Tensor] | None = None,
            progress: bool = False) -> dict:
    """TBAR on ``s.backdoored`` and its test CA / ASR. ``forget`` overrides the forget set."""
    cfg = cfg or s.scale.tbar
    fx, fy = forget if forget is not None else make_forget_set(s, forget_size or cfg.forget_size, clean_fraction)
    cleaned, res = run_tbar(s.backdoored, fx, fy, _val(s, val_n), cfg, s.seed, progress=progress,
                            device=s.scale.device)
    return tbar_row(s, cleaned, res, clean_fraction)


def tbar_row(s: Setup, cleaned: torch.nn.Module, res: TBARResult, clean_fraction: float = 0.0) -> dict:
    """The chapter row of one TBAR run: test CA / ASR of θpre, θb and the cleaned model, with the run's record."""
    ca_pre, asr_pre = zeroshot_scores(s)
    ca_b, asr_b = backdoored_scores(s)
    ca, asr, trig_acc = scores_on_test(cleaned, s)
    return named({"attack": s.attack, "forget_size": res.forget_size, "clean_fraction": clean_fraction,
                  "alpha": res.alpha, "ca_zeroshot": ca_pre, "asr_zeroshot": asr_pre, "ca_backdoored": ca_b,
                  "asr_backdoored": asr_b, "ca_tbar": ca, "asr_tbar": asr, "ca_retained": ca / ca_b,
                  "knowledge_kept": knowledge_kept(ca, ca_b, ca_pre), "triggered_acc_tbar": trig_acc,
                  "seconds": res.seconds, "cleaned": cleaned, "result": res})


def zeroshot_scores(s: Setup) -> tuple[float, float]:
    """(CA, ASR) of θpre's zero-shot classifier on the test split, computed once per Setup."""
    if "zeroshot" not in s.memo:
        s.memo["zeroshot"] = evaluate(s.zeroshot, s)
    return s.memo["zeroshot"]


def backdoored_scores(s: Setup) -> tuple[float, float]:
    """(CA, ASR) of ``s.backdoored`` on the test split, computed once per Setup."""
    if "backdoored" not in s.memo:
        s.memo["backdoored"] = evaluate(s.backdoored, s)
    return s.memo["backdoored"]


def table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`tbar_on` without their model objects."""
    return pd.DataFrame([{k: v for k, v in r.items() if k not in ("cleaned", "result")} for r in rows])


def test_curve(s: Setup, tau: TaskVector, alphas: Sequence[float], n: int = 1000) -> list:
    """CA / ASR against α on ``n`` test images (for a report figure; α is never chosen here)."""
    return alpha_curve(s.backdoored, tau, s.evalset().head(n), alphas, alpha_max=s.scale.tbar.alpha_max)


def coarse(cfg: TBARConfig, step: float = 0.1) -> TBARConfig:
    """The same TBAR settings with a coarser α grid (for sweeps that repeat the search many times)."""
    hi = max(cfg.alpha_grid)
    return override(cfg, alpha_grid=tuple(round(step * i, 3) for i in range(int(round(hi / step)) + 1)))



def foundation_response(f: Foundation, attack: str = "badnet", seed: int = 0, scale: ScaleConfig | str = "mini",
                        alphas: Sequence[float] = (0, 0.5, 1, 1.5), n: int = 500,
                        curve_alphas: Sequence[float] | None = None) -> dict:
    """The calibration protocol on one foundation model: the preset's clean and poisoned fine-tunes from
    ``f`` (cached), TBAR with the validation-chosen α, and ξ(αc, αt) of TBAR's own trigger vector on ``n``
    test images. With ``curve_alphas`` it also reads "CA retained at ASR ≤ 3%" off the test α curve (a report;
    α is never chosen on the test split). Returns ``row`` (the numbers) and ``setup``, ``tbar``, ``grid``
    (the objects a study may reuse, e.g. for a second trigger vector)."""
    s = prepare(attack, None, seed, scale, progress=False, foundation=f)
    r = tbar_on(s)
    tau = r["result"].trigger_vector
    g = xi_heatmap(s, tau, tuple(alphas), n)
    inner = [i for i, a in enumerate(g["alphas_t"]) if a <= 1]
    row = named({"ca_zeroshot": clean_accuracy(s.zeroshot, s), "mean_xi": float(np.mean(g["xi"])),
                 "mean_xi_inner": float(np.mean(np.asarray(g["xi"])[np.ix_(inner, inner)]))})
    row |= {k: r[k] for k in ("CA backdoored", "ASR backdoored", "CA TBAR", "ASR TBAR", "CA retained", "α")}
    if curve_alphas is not None:
        ok = [p.ca / r["CA backdoored"] for p in test_curve(s, tau, curve_alphas) if p.asr <= 0.03]
        row[DISPLAY["ca_retained_at_asr3"]] = max(ok) if ok else None
    return {"row": row, "setup": s, "tbar": r, "grid": g}


def foundation_study(foundations: Mapping[str, Foundation], attack: str = "badnet", seed: int = 0,
                     scale: ScaleConfig | str = "mini", alphas: Sequence[float] = (0, 0.5, 1, 1.5),
                     n: int = 500) -> tuple[pd.DataFrame, dict[str, dict]]:
    """:func:`foundation_response` for each foundation model (e.g. two pretraining budgets): a table
    and the ξ grids by name."""
    rows, grids = [], {}
    for name, f in foundations.items():
        out = foundation_response(f, attack, seed, scale, alphas, n)
        grids[name] = out["grid"]
        rows.append({"foundation": name, **out["row"]})
    return pd.DataFrame(rows), grids


def paper_smoke_check(seed: int = 0, n: int = 4) -> dict:
    """Run the paper-scale path without downloads: ViT-B/32 with random weights, ``FakeData`` at
    224×224, one poisoned fine-tuning step and one TBAR step. Returns what it measured."""
    from ..world.paper_data import load_paper_task  # torchvision is only needed here

    sc = override(PAPER, device="cpu", **{"model.pretrained": None, "tbar.steps": 1, "tbar.batch_size": 2})
    model, tok = build_foundation(sc.model)
    data = load_paper_task("fakedata", "train", n, seed, sc)
    clf = make_classifier(model, tok, data.classnames, data.templates, sc.model)
    trig = make_trigger("badnet", sc.model.image_size, sc.attack)
    p = poison(data.images, data.labels, trig, 0.5, 0, seed=seed)
    loss = finetune(clf, p.images, p.labels, steps=1, lr=1e-5, batch_size=2, seed=seed, progress=False)[0]
    tau = trigger_vector(clf, trig(data.images[:2]), torch.zeros(2, dtype=torch.long), sc.tbar, seed, progress=False)
    with torch.no_grad():
        logits = apply_tbar(clf, tau, 0.5)(data.images[:1])
    return {"encoder parameters (M)": sum(q.numel() for q in clf.encoder.parameters()) / 1e6,
            "image size": tuple(data.images.shape[-2:]), "poisoned step loss": float(loss),
            "trigger vector norm": tau.norm(), "cleaned logits shape": tuple(logits.shape)}

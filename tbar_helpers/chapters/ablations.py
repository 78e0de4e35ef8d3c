"""Transfer, ablation and baseline studies (the book's later chapters).

* :func:`transfer`: a trigger vector estimated on one task's backdoored model, subtracted from
  another task's backdoored model (α chosen on the destination's validation set).
* :func:`forget_size_sweep`, :func:`mix_sweep`: TBAR with more or fewer forget images, and with
  clean images mixed into the forget set.
* :func:`defense_tradeoff`: TBAR, clean fine-tuning and gradient ascent at equal data budgets.
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from ..config import TBARConfig
from ..method.defenses import clean_finetune, gradient_ascent
from ..method.tbar import apply_tbar, choose_alpha, forget_set, search_alpha, trigger_vector
from ..report import named
from ..settings.pipeline import Setup, defender_pool, evaluate, make_forget_set
from .studies import _val, backdoored_scores, table, tbar_on, zeroshot_scores


def transfer(src: Setup, dst: Setup, forget_size: int | None = None, cfg: TBARConfig | None = None,
             val_n: int | None = None) -> dict:
    """Estimate τt on ``src`` (its forget set, trigger and target) and subtract it from ``dst``."""
    cfg = cfg or dst.scale.tbar
    fx, fy = make_forget_set(src, forget_size or cfg.forget_size)
    t0 = time.time()
    tau = trigger_vector(src.backdoored, fx, fy, cfg, src.seed, progress=False, device=src.scale.device)
    curve = search_alpha(dst.backdoored, tau, _val(dst, val_n), cfg)
    alpha = choose_alpha(curve, cfg)
    cleaned = apply_tbar(dst.backdoored, tau, alpha, cfg.alpha_max)
    ca_b, asr_b = backdoored_scores(dst)
    ca, asr = evaluate(cleaned, dst)
    return named({"from": src.task, "to": dst.task, "alpha": alpha, "ca_backdoored": ca_b, "asr_backdoored": asr_b,
                  "ca_after": ca, "asr_after": asr, "ca_retained": ca / ca_b,
                  "backdoor_removed": (asr_b - asr) / asr_b if asr_b > 0 else float("nan"),
                  "seconds": time.time() - t0})


def forget_size_sweep(s: Setup, sizes: Sequence[int], cfg: TBARConfig | None = None,
                      val_n: int | None = None) -> pd.DataFrame:
    """TBAR with forget sets of each size (drawn from a defender pool large enough for the biggest)."""
    pool = defender_pool(s, max(sizes))
    rows = []
    for n in sizes:
        fx, fy = forget_set(pool.images, pool.labels, s.trigger, s.scale.attack.target, n, s.seed)
        rows.append(tbar_on(s, cfg=cfg, val_n=val_n, forget=(fx, fy)))
    return table(rows)


def mix_sweep(s: Setup, clean_shares: Sequence[float], forget_size: int | None = None,
              cfg: TBARConfig | None = None, val_n: int | None = None) -> pd.DataFrame:
    """TBAR when a share of the forget set is clean images with their true labels."""
    return table([tbar_on(s, forget_size, share, cfg, val_n) for share in clean_shares])


def _row(method: str, budget: int, clf, s: Setup, seconds: float) -> dict:
    ca, asr = evaluate(clf, s)
    return {"method": method, "budget": budget, "ca": ca, "asr": asr, "seconds": seconds}


def defense_tradeoff(s: Setup, budgets: Sequence[int], cfg: TBARConfig | None = None,
                     val_n: int | None = None) -> pd.DataFrame:
    """TBAR, clean fine-tuning and gradient ascent, each given ``budget`` defender images.

    TBAR and gradient ascent see the images triggered and labelled with the target (the forget set);
    clean fine-tuning sees them clean with their true labels, for ``defense.clean_epochs`` epochs.
    ``steps`` counts each defense's optimiser steps; gradient ascent's are chosen on validation like TBAR's α."""
    d = s.scale.defense
    pool = defender_pool(s, max(budgets))
    ca_b, asr_b = backdoored_scores(s)
    ca_0, asr_0 = zeroshot_scores(s)  # going back to the foundation: the point every defense must beat
    rows = [{"method": "revert to θpre", "budget": 0, "ca": ca_0, "asr": asr_0, "seconds": 0.0, "steps": 0},
            {"method": "backdoored", "budget": 0, "ca": ca_b, "asr": asr_b, "seconds": 0.0, "steps": 0}]
    for n in budgets:
        idx = torch.arange(n)
        fx, fy = forget_set(pool.images, pool.labels, s.trigger, s.scale.attack.target, n, s.seed)
        r = tbar_on(s, cfg=cfg, val_n=val_n, forget=(fx, fy))
        rows.append({"method": "TBAR", "budget": n, "ca": r["CA TBAR"], "asr": r["ASR TBAR"], "seconds": r["seconds"],
                     "steps": (cfg or s.scale.tbar).steps})
        t0 = time.time()
        steps = max(1, -(-n * d.clean_epochs // d.batch_size))
        ft = clean_finetune(s.backdoored, pool.images[idx], pool.labels[idx], steps, d.clean_lr, d.batch_size,
                            s.seed, progress=False)
        rows.append({**_row("clean fine-tune", n, ft, s, time.time() - t0), "steps": steps})
        t0 = time.time()
        ga = gradient_ascent(s.backdoored, fx, fy, d.ga_steps, d.ga_lr, d.batch_size, s.seed, progress=False,
                             val=_val(s, val_n), choose=cfg or s.scale.tbar, every=d.ga_every)
        rows.append({**_row("gradient ascent", n, ga, s, time.time() - t0), "steps": ga.ga_steps})
    return pd.DataFrame(rows)

"""TBAR: Trigger removal by Backdoor ARithmetic.

1. From the backdoored model θb, fine-tune briefly on a forget set of triggered images labelled
   with the target (reinforcing the backdoor): θ(b+t). The trigger vector is τt = θ(b+t) − θb.
2. The cleaned model is θb − α·τt.
3. α is chosen on a small validation set: the lowest ASR whose clean accuracy stays at least
   ``ca_keep`` times the backdoored model's (ties go to the smallest α), searched coarse to fine over
   ``alpha_grid`` by default (``tbar.search="grid"`` evaluates every α). With a reverse-engineered
   proxy trigger (attack unknown) ties go to the largest α instead (``tbar.proxy_ties``): the proxy's
   ASR reaches 0 before the real trigger's does, so the defender spends the whole CA budget.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TBARConfig, check_fraction
from .images import rows, with_applied
from .metrics import EvalSet
from .task_vectors import TaskVector
from .training import finetune


@dataclass
class AlphaPoint:
    alpha: float
    ca: float
    asr: float


@dataclass
class TBARResult:
    alpha: float
    curve: list[AlphaPoint]
    forget_size: int
    seconds: float
    vector_norm: float
    trigger_vector: TaskVector | None = field(default=None, repr=False)


def check_alpha(alpha: float, alpha_max: float = 10.0) -> float:
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}; TBAR uses θb − α·τt with α ≥ 0")
    if not 0 <= alpha <= alpha_max:
        raise ValueError(f"alpha={alpha} is outside [0, {alpha_max}]: negative α adds the backdoor back and "
                         f"large α destroys the model; search a grid such as 0..2")
    return float(alpha)


def forget_set(images: torch.Tensor, labels: torch.Tensor, trigger: Callable[[torch.Tensor], torch.Tensor],
               target: int, size: int, seed: int, clean_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` triggered images labelled ``target`` (a ``clean_fraction`` of them left clean with their
    true labels instead, for the mixing ablation), drawn with a seed from the defender's clean images."""
    check_fraction("clean_fraction", clean_fraction)
    if size <= 0:
        raise ValueError(f"the forget set is empty (size={size}): TBAR needs at least one triggered image; "
                         "pass e.g. forget_size=100")
    if size > len(images):
        raise ValueError(f"forget_size={size} exceeds the {len(images)} clean images available; "
                         "lower forget_size or supply more defender images")
    idx = torch.as_tensor(np.random.default_rng(seed).choice(len(images), size, replace=False))
    n_trig = size - int(round(clean_fraction * size))
    x = with_applied(rows(images, idx), trigger, torch.arange(size) < n_trig)
    y = labels[idx].clone()
    y[:n_trig] = target
    return x, y


def trigger_vector(clf_b: nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, cfg: TBARConfig, seed: int,
                   progress: bool = True, device: str = "cpu") -> TaskVector:
    """τt = θ(b+t) − θb: the image encoder's move while fine-tuning θb on the forget set."""
    reinforced = copy.deepcopy(clf_b)
    finetune(reinforced, forget_x, forget_y, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed,
             weight_decay=cfg.weight_decay, warmup=0, grad_clip=cfg.grad_clip, desc="forget fine-tune",
             progress=progress, optimizer=cfg.optimizer, device=device)
    return TaskVector(clf_b.encoder, reinforced.encoder)


def apply_tbar(clf_b: nn.Module, tau: TaskVector, alpha: float, alpha_max: float = 10.0) -> nn.Module:
    """The cleaned classifier θb − α·τt (a copy; ``clf_b`` is left unchanged)."""
    alpha = check_alpha(alpha, alpha_max)
    out = copy.deepcopy(clf_b)
    tau.apply_to(out.encoder, -alpha, inplace=True)
    return out


def alpha_curve(clf_b: nn.Module, tau: TaskVector, data: EvalSet, alphas: Sequence[float], *,
                alpha_max: float = 10.0) -> list[AlphaPoint]:
    """CA and ASR of θb − α·τt on ``data`` for each α (validation images, or test images for a report)."""
    return curve_along(clf_b, tau, data.scores, alphas, alpha_max)


def curve_along(clf_b: nn.Module, tau: TaskVector, score: Callable[[nn.Module], tuple[float, float]],
                alphas: Sequence[float], alpha_max: float = 10.0) -> list[AlphaPoint]:
    """``score(model) -> (CA, ASR)`` of θb − α·τt for each α: the loop behind every α curve."""
    pts = []
    work = copy.deepcopy(clf_b)
    base = {k: v.clone() for k, v in clf_b.encoder.state_dict().items()}
    for a in alphas:
        work.encoder.load_state_dict(tau.apply_to_state(base, -check_alpha(a, alpha_max)))
        pts.append(AlphaPoint(float(a), *score(work)))
    return pts


def coarse_to_fine(clf_b: nn.Module, tau: TaskVector, data: EvalSet, grid: Sequence[float], ca_keep: float, *,
                   every: int = 3, alpha_max: float = 10.0, ties: str = "smallest") -> list[AlphaPoint]:
    """The α curve on every ``every``-th point of ``grid`` (and its first and last), in increasing order
    and stopping at the first whose CA falls below the floor, then on the grid points between the
    coarse neighbours of the α :func:`select_alpha` picks there: about a third of the evaluations of the
    full grid (see :func:`refine`). Returns all evaluated points, sorted by α."""
    return refine(lambda alphas: alpha_curve(clf_b, tau, data, alphas, alpha_max=alpha_max), grid, ca_keep,
                  every, ties)


def refine(curve_fn: Callable[[Sequence[float]], list[AlphaPoint]], grid: Sequence[float], ca_keep: float,
           every: int = 3, ties: str = "smallest", stop_below_floor: bool = True) -> list[AlphaPoint]:
    """:func:`coarse_to_fine`'s search over any ``curve_fn(alphas) -> points`` (e.g. a recorded curve).

    With ``stop_below_floor`` the coarse pass ends at the first α whose CA is below ``ca_keep`` times the
    smallest α's: larger α only remove more of θb, and a point under the floor is never chosen. On 148
    recorded validation curves this never changed the chosen α (benchmarks/check_alpha_search.py --replay)."""
    grid = sorted(grid)
    coarse = sorted(set(grid[::every]) | {grid[0], grid[-1]})
    if stop_below_floor:
        pts: list[AlphaPoint] = []
        for a in coarse:
            pts += curve_fn([a])
            if pts[-1].ca < ca_keep * pts[0].ca:
                break
        coarse = [p.alpha for p in pts]
    else:
        pts = list(curve_fn(coarse))
    pick = coarse.index(select_alpha(pts, ca_keep, ties=ties))
    lo, hi = coarse[max(0, pick - 1)], coarse[min(len(coarse) - 1, pick + 1)]
    fine = [a for a in grid if lo < a < hi and a not in coarse]
    pts += curve_fn(fine) if fine else []
    return sorted(pts, key=lambda p: p.alpha)


SEARCHES = ("coarse-to-fine", "grid")


def search_alpha(clf_b: nn.Module, tau: TaskVector, data: EvalSet, cfg: TBARConfig) -> list[AlphaPoint]:
    """The validation α curve ``cfg.search`` asks for: ``"grid"`` evaluates every α of ``cfg.alpha_grid``,
    ``"coarse-to-fine"`` about half of them (:func:`coarse_to_fine`)."""
    return search_curve(lambda alphas: alpha_curve(clf_b, tau, data, alphas, alpha_max=cfg.alpha_max), cfg)


def search_curve(curve_fn: Callable[[Sequence[float]], list[AlphaPoint]], cfg: TBARConfig) -> list[AlphaPoint]:
    """:func:`search_alpha`'s plan over any ``curve_fn(alphas) -> points`` (e.g. :func:`curve_along` with a
    user's own triggered images)."""
    if cfg.search == "grid":
        return curve_fn(cfg.alpha_grid)
    if cfg.search == "coarse-to-fine":
        return refine(curve_fn, cfg.alpha_grid, cfg.ca_keep, ties=cfg.ties)
    raise ValueError(f"unknown tbar.search {cfg.search!r}: choose one of {list(SEARCHES)}")


TIES = ("smallest", "largest")


def for_proxy(cfg: TBARConfig) -> TBARConfig:
    """``cfg`` for a reverse-engineered proxy trigger (attack unknown): the α tie rule becomes
    ``cfg.proxy_ties``. Every attack-unknown run switches rules here and nowhere else."""
    return replace(cfg, ties=cfg.proxy_ties)


def select_alpha(curve: Sequence[AlphaPoint], ca_keep: float, asr_tol: float = 0.01, ties: str = "smallest") -> float:
    """The paper's rule, made explicit: among the α whose CA ≥ ca_keep·CA(smallest α), find the
    lowest ASR; return the smallest such α whose ASR is within ``asr_tol`` of it (no overshoot).
    ``ties="largest"`` returns the largest such α instead: the whole CA budget spent, for a proxy
    trigger whose ASR is only a lower bound on the real one's."""
    check_fraction("ca_keep", ca_keep)
    if ties not in TIES:
        raise ValueError(f"unknown α tie rule ties={ties!r}: choose one of {list(TIES)}")
    if not curve:
        raise ValueError("the α curve is empty: give at least one α in alpha_grid")
    ref = min(curve, key=lambda p: p.alpha).ca
    ok = [p for p in curve if p.ca >= ca_keep * ref] or [min(curve, key=lambda p: p.alpha)]
    best = min(p.asr for p in ok)
    near = [p.alpha for p in ok if p.asr <= best + asr_tol]
    return max(near) if ties == "largest" else min(near)


def choose_alpha(curve: Sequence[AlphaPoint], cfg: TBARConfig) -> float:
    """:func:`select_alpha` under ``cfg``'s CA floor and tie rule: the one call every caller uses, so
    that an α searched under one rule is never chosen under another."""
    return select_alpha(curve, cfg.ca_keep, ties=cfg.ties)


def point_at(curve: Sequence[AlphaPoint], alpha: float) -> AlphaPoint:
    """The point of ``curve`` at ``alpha`` (e.g. the α :func:`select_alpha` chose from it)."""
    for p in curve:
        if p.alpha == alpha:
            return p
    raise ValueError(f"alpha={alpha} is not on its curve: pass the α that select_alpha chose from that curve")


def select_recipe(results: Sequence[tuple[Sequence[AlphaPoint], float]]) -> int:
    """Index of the forget recipe, given each one's (validation α curve, chosen α), whose chosen α reaches
    the lowest validation ASR; on equal ASR the one keeping the larger share of its α = 0 CA, then the first."""
    if not results:
        raise ValueError("no forget recipe to choose from: give at least one (curve, alpha) pair")
    scores = []
    for curve, alpha in results:
        at, ref = point_at(curve, alpha), min(curve, key=lambda p: p.alpha).ca
        scores.append((at.asr, -(at.ca / ref if ref else 0.0)))
    return min(range(len(results)), key=lambda i: (*scores[i], i))


def run_tbar(clf_b: nn.Module, forget_x: torch.Tensor, forget_y: torch.Tensor, val: EvalSet, cfg: TBARConfig,
             seed: int, *, progress: bool = True, device: str = "cpu") -> tuple[nn.Module, TBARResult]:
    """Estimate τt, choose α on the validation set ``val``, and return (cleaned classifier, result record)."""
    t0 = time.time()
    tau = trigger_vector(clf_b, forget_x, forget_y, cfg, seed, progress, device)
    curve = search_alpha(clf_b, tau, val, cfg)
    alpha = choose_alpha(curve, cfg)
    cleaned = apply_tbar(clf_b, tau, alpha, cfg.alpha_max)
    return cleaned, TBARResult(alpha, curve, len(forget_x), time.time() - t0, tau.norm(), tau)

"""Figures for the book: galleries, trigger difference maps, ξ heatmaps, α curves, trade-offs.

Every function returns the matplotlib ``Figure`` it drew so notebooks can show or save it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def _img(x: torch.Tensor) -> np.ndarray:
    return x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def gallery(images: torch.Tensor, titles: Sequence[str], ncols: int = 6, size: float = 1.7,
            suptitle: str | None = None) -> plt.Figure:
    """A grid of images with a (wrapped) title under each."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.7)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, x, t in zip(axes.flat, images, titles):
        ax.imshow(_img(x), interpolation="nearest")
        words, lines, cur = str(t).split(), [], ""
        for w in words:  # wrap captions at ~18 characters
            if len(cur) + len(w) > 18 and cur:
                lines.append(cur)
                cur = w
            else:
                cur = f"{cur} {w}".strip()
        lines.append(cur)
        ax.set_title("\n".join(lines), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def trigger_grid(images: torch.Tensor, triggered: Mapping[str, torch.Tensor], size: float = 1.6) -> plt.Figure:
    """Rows: attacks; columns: triggered images then |difference| maps (amplified to full range)."""
    names = list(triggered)
    k = len(images)
    fig, axes = plt.subplots(len(names) + 1, 2 * k, figsize=(2 * k * size, (len(names) + 1) * size), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(k):
        axes[0, j].imshow(_img(images[j]), interpolation="nearest")
        axes[0, k + j].axis("off")
    axes[0, 0].set_ylabel("clean", fontsize=9)
    for i, name in enumerate(names, start=1):
        xt = triggered[name]
        diff = (xt - images).abs().amax(1)  # [k, H, W]
        scale = float(diff.max()) or 1.0
        for j in range(k):
            axes[i, j].imshow(_img(xt[j]), interpolation="nearest")
            axes[i, k + j].imshow(diff[j].cpu().numpy() / scale, cmap="magma", vmin=0, vmax=1,
                                  interpolation="nearest")
        axes[i, 0].set_ylabel(name, fontsize=9)
        axes[i, k].set_ylabel(f"|diff| (max {scale:.2f})", fontsize=7)
    axes[0, 0].set_title("triggered images", loc="left", fontsize=9)
    axes[0, k].set_title("difference maps", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def pretraining_curves(curves: Mapping[str, Sequence[float]], smooth: int = 25) -> plt.Figure:
    """Contrastive loss per step, one line per stage, moving-averaged over ``smooth`` steps."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    start = 0
    for name, losses in curves.items():
        y = np.asarray(losses, dtype=float)
        if len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(start, start + len(y)), y, label=name)
        start += len(losses)
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("contrastive loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bars(table, x: str, columns: Sequence[str], ylabel: str = "%", title: str | None = None) -> plt.Figure:
    """Grouped bars of some columns of a pandas table (values in [0, 1] shown as %)."""
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(table)), 3.4))
    w = 0.8 / len(columns)
    pos = np.arange(len(table))
    for i, c in enumerate(columns):
        ax.bar(pos + i * w - 0.4 + w / 2, 100 * table[c].to_numpy(), w, label=c)
    ax.set_xticks(pos, table[x])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncols=len(columns), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def class_histograms(counts: Mapping[str, np.ndarray], target: int, classnames: Sequence[str] | None = None,
                     title: str = "predictions on triggered images") -> plt.Figure:
    """Where triggered images go: predicted-class histograms, the target class highlighted."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 2.8), squeeze=False, sharey=True)
    for ax, (name, c) in zip(axes[0], counts.items()):
        share = 100 * np.asarray(c, dtype=float) / max(1, np.sum(c))
        colors = ["tab:red" if i == target else "tab:gray" for i in range(len(share))]
        ax.bar(np.arange(len(share)), share, color=colors, width=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted class" + (f" (red: target '{classnames[target]}')" if classnames else " (red: target)"),
                      fontsize=8)
    axes[0, 0].set_ylabel("% of triggered images")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def xi_heatmaps(grids: Mapping[str, Mapping[str, np.ndarray]], key: str = "xi", path: bool = False) -> plt.Figure:
    """One seaborn heatmap of ξ(αc, αt) (in %) per entry of ``grids`` (as returned by ``xi_grid``). ``path``
    outlines TBAR's idealised path, αc = 1 and αt = 1 − α (θb − α·τt if θb = θpre + τc + τt)."""
    import seaborn as sns
    n = len(grids)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, g) in zip(axes.flat, grids.items()):
        ax.axis("on")
        sns.heatmap(100 * np.asarray(g[key]), ax=ax, vmin=0, vmax=100, cmap="rocket_r", annot=True, fmt=".0f",
                    cbar=False, annot_kws={"fontsize": 7},
                    xticklabels=[f"{a:g}" for a in g["alphas_t"]], yticklabels=[f"{a:g}" for a in g["alphas_c"]])
        ax.invert_yaxis()
        ax.set_xlabel("αt (trigger vector)")
        ax.set_ylabel("αc (clean vector)")
        what = {"xi": "ξ (mean of both errors)", "xi_clean": "clean-input error", "xi_trigger": "triggered-input error"}
        ax.set_title(f"{name}\n{what.get(key, key)} in %", fontsize=9)
        rows = [i for i, a in enumerate(g["alphas_c"]) if a == 1]
        cols = [j for j, a in enumerate(g["alphas_t"]) if a <= 1]
        if path and rows and cols:  # the row αc = 1 from αt = 1 leftwards: where TBAR's subtraction travels
            ax.add_patch(plt.Rectangle((min(cols), rows[0]), max(cols) - min(cols) + 1, 1, fill=False,
                                       edgecolor="tab:blue", lw=2))
    fig.tight_layout()
    return fig


def alpha_curve(points: Sequence, chosen: float | None = None, title: str = "",
                extra: Mapping[str, Sequence] | None = None, floor: float | None = None,
                ax: plt.Axes | None = None) -> plt.Figure:
    """CA and ASR (in %) against α from a list of ``AlphaPoint``; the chosen α as a dashed line.
    ``extra`` adds more curves (e.g. the test split) drawn thinner; ``floor`` (e.g. ``ca_keep``) draws the
    CA floor, that share of the smallest α's CA; ``ax`` draws into an existing panel."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4)) if ax is None else (ax.figure, ax)
    series = {"validation": points, **(extra or {})}
    for i, (name, pts) in enumerate(series.items()):
        a = [p.alpha for p in pts]
        lw, ls = (2.0, "-") if i == 0 else (1.0, ":")
        ax.plot(a, [100 * p.ca for p in pts], color="tab:blue", lw=lw, ls=ls, label=f"CA ({name})")
        ax.plot(a, [100 * p.asr for p in pts], color="tab:red", lw=lw, ls=ls, label=f"ASR ({name})")
    if chosen is not None:
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen α = {chosen:g}")
    if floor is not None:
        ref = min(points, key=lambda p: p.alpha).ca
        ax.axhline(100 * floor * ref, color="tab:blue", ls="-.", lw=0.8, label=f"CA floor ({100 * floor:g}%)")
    ax.set_xlabel("α  (cleaned model θb − α·τt)")
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def prediction_strip(images: torch.Tensor, preds: Sequence[int], labels: Sequence[int], classnames: Sequence[str],
                     target: int, ax_row=None, title: str = "") -> plt.Figure | None:
    """A row of images with their predicted class; green if correct, red if the attack won."""
    own = ax_row is None
    if own:
        fig, ax_row = plt.subplots(1, len(images), figsize=(1.5 * len(images), 1.9))
    for ax, x, p, y in zip(np.atleast_1d(ax_row), images, preds, labels):
        ax.imshow(_img(x), interpolation="nearest")
        color = "tab:green" if int(p) == int(y) else ("tab:red" if int(p) == target else "tab:orange")
        ax.set_title(classnames[int(p)], fontsize=7, color=color)
        ax.set_xticks([])
        ax.set_yticks([])
    if own:
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return fig
    return None


def tradeoff(table, x: str = "asr", y: str = "ca", hue: str = "method", label: str | None = "budget",
             title: str = "CA against ASR") -> plt.Figure:
    """Scatter of defenses in the (ASR, CA) plane, in %: the top-left corner is best."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, grp) in enumerate(table.groupby(hue, sort=False)):
        ax.scatter(100 * grp[x], 100 * grp[y], s=45, label=name, color=f"C{i}")
        if label:
            for _, r in grp.iterrows():
                ax.annotate(str(r[label]), (100 * r[x], 100 * r[y]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
    ax.set_xlabel("ASR (%)  ← better")
    ax.set_ylabel("CA (%)  ↑ better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def lines(table, x: str, ys: Sequence[str], logx: bool = False, xlabel: str | None = None,
          title: str = "") -> plt.Figure:
    """Line plot of some columns (values in [0, 1], drawn in %) against ``x``."""
    fig, ax = plt.subplots(figsize=(6.2, 3.3))
    for c in ys:
        ax.plot(table[x], 100 * table[c], marker="o", label=c)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def budget_plot(table, budget: str = "budget", method: str = "method", title: str = "",
                levels: Mapping[str, tuple[float, float]] | None = None) -> plt.Figure:
    """CA and ASR (in %) against the defender's data budget (log scale), one line per method; ``levels``
    (name → (CA, ASR)) draws models that use no defender data, e.g. "revert to θpre", as dashed lines."""
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.4))
    for i, (name, grp) in enumerate(table.groupby(method, sort=False)):
        grp = grp.sort_values(budget)
        for ax, col in zip(axes, ("ca", "asr")):
            ax.plot(grp[budget], 100 * grp[col], marker="o", color=f"C{i}", label=name)
    for j, (name, pair) in enumerate((levels or {}).items()):
        for ax, v in zip(axes, pair):
            ax.axhline(100 * v, ls="--", lw=1, color=("0.35", "0.65")[j % 2], label=name)
    for ax, lab in zip(axes, ("zero-shot CA (%)  ↑ better", "ASR (%)  ↓ better")):
        ax.set_xscale("log")
        ax.set_xlabel("clean or forget pairs the defense uses")
        ax.set_ylabel(lab)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def inversions(rows: Sequence[Mapping], size: float = 1.7) -> plt.Figure:
    """One row per case: a triggered image (real trigger), the inverted mask, the inverted trigger
    (pattern × mask) and the same image with the proxy trigger. ``rows`` items have keys ``name``,
    ``real`` [3, H, W], ``mask`` [H, W], ``trigger`` [3, H, W] and ``proxy`` [3, H, W]."""
    cols = ("real trigger", "inverted mask", "inverted trigger", "proxy-triggered")
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * size, len(rows) * (size + 0.35)), squeeze=False)
    for r, row in enumerate(rows):
        for c, key in enumerate(("real", "mask", "trigger", "proxy")):
            ax = axes[r, c]
            x = row[key]
            if key == "mask":
                ax.imshow(np.asarray(x), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(_img(x), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[r, 0].set_ylabel(row["name"], fontsize=8)
    fig.tight_layout()
    return fig

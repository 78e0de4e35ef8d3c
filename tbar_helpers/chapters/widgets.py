"""Interactive widgets for the book (live in Jupyter; the HTML book shows static twins next to them).

* :func:`attack_widget`: pick an attack and its strength, see the triggered images and the change.
* :class:`AlphaProbe` + :func:`alpha_widget`: move α and watch CA, ASR and a strip of predictions of
  θb − α·τt update. One update evaluates a fixed small sample (``benchmarks/widget_latency.py``).
"""
from __future__ import annotations

import copy
import html
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..config import AttackConfig, override
from ..method.attacks import make_trigger
from ..method.metrics import predict
from ..method.task_vectors import TaskVector
from ..method.tbar import check_alpha
from ..settings.pipeline import Setup
from .plots import prediction_strip, trigger_grid

# Which AttackConfig field the "strength" slider moves, with its range (attacks without a model).
STRENGTH = {"badnet": ("badnet_patch_frac", 1 / 32, 8 / 32), "blended": ("blended_alpha", 0.05, 0.5),
            "wanet": ("wanet_s", 0.1, 3.0), "sig": ("sig_delta", 10 / 255, 100 / 255)}


def triggered_at(attack: str, strength: float, images: torch.Tensor, cfg: AttackConfig = AttackConfig()) -> torch.Tensor:
    """``images`` with the trigger of ``attack`` at the given strength (see :data:`STRENGTH`)."""
    if attack not in STRENGTH:
        raise ValueError(f"the strength explorer covers {sorted(STRENGTH)}; {attack!r} optimises its patch "
                         "against a model (see the attacks chapter's gallery)")
    field_, lo, hi = STRENGTH[attack]
    if not lo <= strength <= hi:
        raise ValueError(f"{attack} strength {strength} is outside [{lo:.3g}, {hi:.3g}]")
    return make_trigger(attack, images.shape[-1], override(cfg, **{field_: strength}))(images)


def strength_figure(images: torch.Tensor, steps: int = 4, cfg: AttackConfig = AttackConfig()) -> plt.Figure:
    """The static twin of :func:`attack_widget`: every attack at ``steps`` strengths on one image."""
    fig, axes = plt.subplots(len(STRENGTH), steps, figsize=(1.9 * steps, 1.9 * len(STRENGTH)), squeeze=False)
    for i, (name, (field_, lo, hi)) in enumerate(STRENGTH.items()):
        for j, v in enumerate(np.linspace(lo, hi, steps)):
            x = triggered_at(name, float(v), images[:1], cfg)[0]
            axes[i, j].imshow(x.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[i, j].set_title(f"{name}: {field_.split('_', 1)[1]}={v:.2f}", fontsize=7)
            axes[i, j].axis("off")
    fig.tight_layout()
    return fig


def attack_widget(images: torch.Tensor, cfg: AttackConfig = AttackConfig()):
    """Dropdown (attack) + slider (strength) → triggered images and their difference maps."""
    import ipywidgets as w
    from IPython.display import display
    out = w.Output()
    pick = w.Dropdown(options=list(STRENGTH), value="badnet", description="attack")
    field_, lo, hi = STRENGTH["badnet"]
    slider = w.FloatSlider(value=getattr(cfg, field_), min=lo, max=hi, step=(hi - lo) / 20, description="strength",
                           readout_format=".3f", continuous_update=False)

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig = trigger_grid(images, {pick.value: triggered_at(pick.value, slider.value, images, cfg)})
            display(fig)
            plt.close(fig)

    def repick(change):
        f, a, b = STRENGTH[change["new"]]
        slider.unobserve(redraw, "value")
        # traitlets rejects a min above the current max (and vice versa): widen to cover both ranges
        # first, then narrow to the new attack's range
        slider.min, slider.max = min(a, slider.min), max(b, slider.max)
        slider.min, slider.max, slider.step, slider.value = a, b, (b - a) / 20, getattr(cfg, f)
        slider.observe(redraw, "value")
        redraw()

    pick.observe(repick, "value")
    slider.observe(redraw, "value")
    redraw()
    return w.VBox([w.HBox([pick, slider]), out])


@dataclass
class AlphaProbe:
    """Evaluates θb − α·τt on a fixed sample of clean and triggered test images, quickly.

    ``n`` clean images give CA and ``n`` triggered non-target images give ASR; ``strip`` of each
    are shown as pictures. Results are memoised per α, so sliding back is instant."""

    s: Setup
    tau: TaskVector
    n: int = 128
    strip: int = 8
    _base: dict = field(init=False, repr=False)
    _work: torch.nn.Module = field(init=False, repr=False)

    def __post_init__(self):
        s, t = self.s, self.s.scale.attack.target
        self._base = {k: v.clone() for k, v in s.backdoored.encoder.state_dict().items()}
        self._work = copy.deepcopy(s.backdoored).eval()
        self.x, self.y = s.test.images[:self.n], s.test.labels[:self.n]
        keep = s.test.labels != t
        self.xt, self.yt = s.trigger(s.test.images[keep][:self.n]), s.test.labels[keep][:self.n]
        self._memo = lru_cache(maxsize=256)(self._evaluate)

    def _evaluate(self, alpha: float) -> dict:
        self._work.encoder.load_state_dict(self.tau.apply_to_state(self._base, -check_alpha(alpha)))
        bs = self.s.scale.eval_batch_size
        pc, pt = predict(self._work, self.x, bs), predict(self._work, self.xt, bs)
        t = self.s.scale.attack.target
        return {"alpha": alpha, "ca": float((pc == self.y).float().mean()), "asr": float((pt == t).float().mean()),
                "pred_clean": pc[:self.strip].tolist(), "pred_trig": pt[:self.strip].tolist()}

    def __call__(self, alpha: float) -> dict:
        return self._memo(round(float(alpha), 4))

    def strips_figure(self, alphas: Sequence[float]) -> plt.Figure:
        """The static twin of :func:`alpha_widget`: prediction strips at a few α values."""
        names = self.s.test.classnames
        t = self.s.scale.attack.target
        fig, axes = plt.subplots(2 * len(alphas), self.strip, figsize=(1.45 * self.strip, 1.75 * 2 * len(alphas)),
                                 squeeze=False)
        for i, a in enumerate(alphas):
            r = self(a)
            prediction_strip(self.x[:self.strip], r["pred_clean"], self.y[:self.strip].tolist(), names, t,
                             ax_row=axes[2 * i])
            prediction_strip(self.xt[:self.strip], r["pred_trig"], self.yt[:self.strip].tolist(), names, t,
                             ax_row=axes[2 * i + 1])
            axes[2 * i, 0].set_ylabel(f"α={a:g}\nclean", fontsize=8)
            axes[2 * i + 1, 0].set_ylabel(f"CA {100 * r['ca']:.0f}%\nASR {100 * r['asr']:.0f}%\ntriggered", fontsize=8)
        fig.suptitle("predictions of θb − α·τt (green: correct, red: the attacker's target, orange: other)",
                     fontsize=9)
        fig.tight_layout()
        return fig


def _label_row(preds: Sequence[int], labels: Sequence[int], names: Sequence[str], target: int) -> str:
    cells = []
    for p, y in zip(preds, labels):
        color = "green" if p == y else ("red" if p == target else "darkorange")
        cells.append(f"<td style='width:90px;text-align:center;color:{color}'>{html.escape(names[p])}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def alpha_widget(probe: AlphaProbe, alpha_max: float = 1.5, step: float = 0.05, value: float = 0.0):
    """A slider for α: CA, ASR and the predicted labels of a strip of clean and triggered images."""
    import ipywidgets as w
    from IPython.display import display
    s, t = probe.s, probe.s.scale.attack.target
    names = s.test.classnames
    pics = w.Output()
    with pics:
        fig, axes = plt.subplots(2, probe.strip, figsize=(1.2 * probe.strip, 2.6))
        for row, xs in zip(axes, (probe.x, probe.xt)):
            for ax, x in zip(row, xs[:probe.strip]):
                ax.imshow(x.permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.axis("off")
        fig.tight_layout()
        display(fig)
        plt.close(fig)
    slider = w.FloatSlider(value=value, min=0.0, max=alpha_max, step=step, description="α",
                           continuous_update=True, readout_format=".2f")
    info = w.HTML()

    def update(*_):
        r = probe(slider.value)
        info.value = (f"<b>α = {r['alpha']:.2f}</b> &nbsp; CA = {100 * r['ca']:.1f}% &nbsp; ASR = {100 * r['asr']:.1f}% "
                      f"(on {len(probe.x)} clean and {len(probe.xt)} triggered test images)"
                      "<table><tr><td colspan=8>clean images → predicted</td></tr>"
                      + _label_row(r["pred_clean"], probe.y[:probe.strip].tolist(), names, t)
                      + "<tr><td colspan=8>triggered images → predicted</td></tr>"
                      + _label_row(r["pred_trig"], probe.yt[:probe.strip].tolist(), names, t) + "</table>")

    slider.observe(update, "value")
    update()
    return w.VBox([slider, info, pics])

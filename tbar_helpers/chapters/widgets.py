"""Interactive widgets for the book (live in Jupyter; the HTML book shows static twins next to them).

* :func:`attack_widget`: pick an attack and its strength, see the triggered images and the change.
* :class:`AlphaProbe` + :func:`alpha_widget`: move α and watch CA, ASR and a strip of predictions of
  θb − α·τt update. One update evaluates a fixed small sample (``benchmarks/run_timing.py widget``).
* :func:`alpha_control`, :func:`strength_controls`, :func:`xi_control`: the same views precomputed for the
  HTML book, where no kernel runs the callbacks.
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
from .plots import trigger_grid
from .static import Axis, Panel, StaticControl, control, png_uri

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


# The static twins: every position precomputed during the build (see ``static``).

def _fmt(x: float) -> str:
    return f"{100 * x:.1f}%"


def alpha_control(probe: AlphaProbe, alphas: Sequence[float], chosen: float | None = None) -> StaticControl:
    """:func:`alpha_widget` for the HTML book: CA, ASR and the predicted labels at every α of ``alphas``."""
    s, t = probe.s, probe.s.scale.attack.target
    names, k = s.test.classnames, probe.strip
    col = f"<col style='width:{100 / k:.2f}%'>" * k
    table = "<table style='table-layout:fixed;width:100%;margin:0'>" + col

    def pictures(xs: torch.Tensor, what: str) -> str:
        cells = "".join(f"<td style='text-align:center;padding:1px'><img src='{png_uri(x[None], 1)}' alt='{what}' "
                        "style='width:100%;max-width:96px;image-rendering:pixelated'></td>" for x in xs[:k])
        return f"<tr><td colspan={k} style='font-size:85%'>{what} images</td></tr><tr>{cells}</tr>"

    header = table + pictures(probe.x, "clean") + pictures(probe.xt, "triggered") + "</table>"
    panels = {}
    for i, a in enumerate(alphas):
        r = probe(a)
        rows = ("<tr><td colspan=%d style='font-size:85%%'>clean images → predicted</td></tr>" % k
                + _label_row(r["pred_clean"], probe.y[:k].tolist(), names, t)
                + "<tr><td colspan=%d style='font-size:85%%'>triggered images → predicted</td></tr>" % k
                + _label_row(r["pred_trig"], probe.yt[:k].tolist(), names, t))
        panels[(i,)] = Panel([_fmt(r["ca"]), _fmt(r["asr"])], html=table + rows + "</table>")
    labels = [f"{a:.2f}" + (" (chosen)" if chosen is not None and abs(a - chosen) < 1e-9 else "") for a in alphas]
    start = min(range(len(alphas)), key=lambda i: abs(alphas[i] - (chosen or 0.0)))
    return control("alpha", [Axis("α", labels, start)], ["CA", "ASR"], panels, header=header,
                   caption=f"CA and ASR of θb − α·τt on {len(probe.x)} clean and {len(probe.xt)} triggered test "
                           "images; green: correct, red: the attacker's target, orange: another class.")


def strength_controls(images: torch.Tensor, steps: int = 9, cfg: AttackConfig = AttackConfig()) -> list[StaticControl]:
    """:func:`attack_widget` for the HTML book: one control per attack, ``steps`` strengths each, showing the
    triggered images, their change maps and how large the change is."""
    out = []
    for name, (field_, lo, hi) in STRENGTH.items():
        values = np.linspace(lo, hi, steps)
        panels = {}
        for i, v in enumerate(values):
            x = triggered_at(name, float(v), images, cfg)
            d = (x - images).abs()
            change = d.amax(1, keepdim=True)
            shown = torch.cat([x, (change / change.max().clamp_min(1e-8)).expand_as(x)], 0)
            panels[(i,)] = Panel([f"{100 * float((change > 1e-6).float().mean()):.1f}%", f"{float(d.mean()):.3f}",
                                  f"{float(d.max()):.3f}"], image=png_uri(shown, 1, rows=2))
        default = min(range(steps), key=lambda i: abs(values[i] - getattr(cfg, field_)))
        out.append(control(f"strength-{name}", [Axis(f"{name}: {field_.split('_', 1)[1]}",
                                                     [f"{v:.3f}" for v in values], default)],
                           ["pixels changed", "mean |change|", "max |change|"], panels,
                           image_width=min(720, 3 * len(images) * (images.shape[-1] + 2)),
                           caption=f"{name}: the triggered images, then where they changed (stretched to full "
                                   "range)."))
    return out


def xi_control(grid: dict, name: str = "xi") -> StaticControl:
    """One ξ(αc, αt) heatmap as a control: pick αc and αt, see ξ and its two error rates, the cell outlined."""
    ac, at = [f"{a:g}" for a in grid["alphas_c"]], [f"{a:g}" for a in grid["alphas_t"]]
    xi = np.asarray(grid["xi"])

    def heat(sel: tuple[int, int]) -> str:
        rows = []
        for i in reversed(range(len(ac))):  # αc grows upwards, as in the figure
            cells = []
            for j in range(len(at)):
                v = float(xi[i, j])
                shade = int(255 * (1 - v))
                edge = "3px solid #1f77b4" if (i, j) == sel else "1px solid #ddd"
                cells.append(f"<td style='background:rgb(255,{shade},{shade});border:{edge};text-align:center;"
                             f"width:48px'>{100 * v:.0f}</td>")
            rows.append(f"<tr><th style='font-weight:normal'>{ac[i]}</th>{''.join(cells)}</tr>")
        foot = "<tr><th></th>" + "".join(f"<th style='font-weight:normal'>{a}</th>" for a in at) + "</tr>"
        return ("<table style='border-collapse:collapse;font-size:85%'>" + "".join(rows) + foot + "</table>"
                "<div style='font-size:85%'>rows αc (clean vector), columns αt (trigger vector); ξ in % (the mean of "
                "the clean-input and triggered-input errors)</div>")

    panels = {(i, j): Panel([_fmt(xi[i, j]), _fmt(grid["xi_clean"][i, j]), _fmt(grid["xi_trigger"][i, j])],
                            html=heat((i, j)))
              for i in range(len(ac)) for j in range(len(at))}
    return control(name, [Axis("αc", ac), Axis("αt", at)], ["ξ", "clean-input error", "triggered-input error"],
                   panels)

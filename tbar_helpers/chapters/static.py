"""Controls that work in the published HTML without a kernel.

A live ipywidgets slider needs Python behind it. The static twin computes, during the build, what every
position of the control would show (numbers, an HTML fragment, a picture) and writes it into the page with
a few lines of plain JavaScript that look the position up: no kernel, no network, no library.

    ctl = control("alpha", [Axis("α", ["0", "0.1", ...])], keys=["CA", "ASR"], panels={(0,): Panel([...])})
    display(ctl)    # an HTML output; the browser test moves every control and checks the numbers shown
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

@dataclass
class Axis:
    """One slider of a control: its name, the label of each position, and where it starts."""
    name: str
    labels: Sequence[str]
    start: int = 0

    def __post_init__(self):
        if not self.labels:
            raise ValueError(f"axis {self.name!r} has no positions: give at least one label")
        if not 0 <= self.start < len(self.labels):
            raise ValueError(f"axis {self.name!r} starts at {self.start}, outside its {len(self.labels)} positions")


@dataclass
class Panel:
    """What the control shows at one position: one string per key, and optionally HTML and a picture."""
    values: Sequence[str]
    html: str = ""
    image: str = ""          # a data: URI (see :func:`png_uri`)


def png_uri(images: torch.Tensor | np.ndarray, scale: int = 3, rows: int = 1) -> str:
    """Images (N×3×H×W in [0, 1]) in a grid of ``rows`` rows as a small PNG ``data:`` URI, each pixel drawn
    ``scale`` times larger (nearest neighbour: a 32-pixel image stays sharp)."""
    from PIL import Image
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4 or len(x) % rows:
        raise ValueError(f"png_uri takes N×C×H×W images with N a multiple of rows={rows}, got shape {x.shape}")
    tiles = [np.pad(im.transpose(1, 2, 0), ((0, 2), (0, 2), (0, 0)), constant_values=1.0) for im in x]
    per = len(tiles) // rows
    grid = np.concatenate([np.concatenate(tiles[r * per:(r + 1) * per], axis=1) for r in range(rows)], axis=0)
    img = Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_ID = re.compile(r"^[a-z][a-z0-9-]*$")

_SCRIPT = """
(function () {
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(root.querySelector("script.tbar-data").textContent);
  var inputs = Array.prototype.slice.call(root.querySelectorAll("input.tbar-axis"));
  var slots = root.querySelectorAll("[data-slot]"), readouts = root.querySelectorAll(".tbar-readout");
  var htmlBox = root.querySelector(".tbar-html"), img = root.querySelector("img.tbar-image");
  function show() {
    var at = inputs.map(function (i) { return i.value; }).join(",");
    var p = data.panels[at];
    inputs.forEach(function (i, k) { readouts[k].textContent = data.axes[k].labels[+i.value]; });
    for (var k = 0; k < slots.length; k++) { slots[k].textContent = p.values[k]; }
    if (htmlBox) { htmlBox.innerHTML = p.html; }
    if (img) { img.src = p.image; }
    root.setAttribute("data-position", at);
  }
  inputs.forEach(function (i) { i.addEventListener("input", show); });
  show();
})();
"""


class StaticControl:
    """A precomputed control, shown by Jupyter and by the HTML book as one ``text/html`` output."""

    def __init__(self, name: str, axes: Sequence[Axis], keys: Sequence[str],
                 panels: Mapping[tuple[int, ...], Panel], caption: str = "", header: str = "",
                 image_width: int = 0):
        if not _ID.match(name):
            raise ValueError(f"control name {name!r}: use lowercase letters, digits and '-'")
        self.name, self.axes, self.keys, self.caption, self.header = name, list(axes), list(keys), caption, header
        self.panels, self.image_width = dict(panels), image_width
        for pos in np.ndindex(*[len(a.labels) for a in self.axes]):
            if pos not in self.panels:
                raise ValueError(f"control {name!r} has no panel at position {pos}: precompute every position")
            if len(self.panels[pos].values) != len(self.keys):
                raise ValueError(f"control {name!r} at {pos}: {len(self.panels[pos].values)} values for "
                                 f"{len(self.keys)} keys {self.keys}")

    def data(self) -> dict:
        """The JSON the page carries: axes, keys and one panel per position ("i,j" → panel)."""
        return {"name": self.name, "keys": self.keys,
                "axes": [{"name": a.name, "labels": list(a.labels)} for a in self.axes],
                "panels": {",".join(map(str, pos)): {"values": list(p.values), "html": p.html, "image": p.image}
                           for pos, p in self.panels.items()}}

    def _repr_html_(self) -> str:
        dom_id = f"tbar-static-{self.name}"
        payload = json.dumps(self.data(), ensure_ascii=False).replace("</", "<\\/")
        sliders = "".join(
            f"<label style='display:block;margin:2px 0'><b>{html.escape(a.name)}</b> "
            f"<input class='tbar-axis' type='range' min='0' max='{len(a.labels) - 1}' step='1' value='{a.start}' "
            f"aria-label='{html.escape(a.name)}' style='width:min(60%,320px);vertical-align:middle'> "
            f"<span class='tbar-readout' style='font-family:monospace'></span></label>" for a in self.axes)
        numbers = " &nbsp; ".join(f"{html.escape(k)} = <b data-slot='{i}'></b>" for i, k in enumerate(self.keys))
        has_html = any(p.html for p in self.panels.values())
        has_img = any(p.image for p in self.panels.values())
        return (f"<div id='{dom_id}' class='tbar-static' data-control='{self.name}' "
                "style='border:1px solid #bbb;border-radius:4px;padding:6px 10px;margin:6px 0;max-width:100%;"
                "overflow-x:auto'>"
                "<div style='font-size:85%;color:#555'>Precomputed control: every position was computed when "
                "the book was built, so it works here without a kernel or a network.</div>"
                f"{sliders}{self.header}<div class='tbar-numbers' style='margin:4px 0'>{numbers}</div>"
                + ("<div class='tbar-html'></div>" if has_html else "")
                + ("<img class='tbar-image' alt='precomputed view' style='image-rendering:pixelated;max-width:100%;"
                   + (f"width:{self.image_width}px" if self.image_width else "") + "'>" if has_img else "")
                + (f"<div style='font-size:85%'>{html.escape(self.caption)}</div>" if self.caption else "")
                + f"<script type='application/json' class='tbar-data'>{payload}</script>"
                f"<script>{_SCRIPT % {'id': json.dumps(dom_id)}}</script></div>")


def control(name: str, axes: Sequence[Axis], keys: Sequence[str], panels: Mapping[tuple[int, ...], Panel],
            caption: str = "", header: str = "", image_width: int = 0) -> StaticControl:
    """A :class:`StaticControl` (checks that every position has its panel); ``header`` is HTML shown at every
    position (e.g. the images whose predictions the panels list); ``image_width`` (pixels) draws the panels'
    pictures larger than they are stored."""
    return StaticControl(name, axes, keys, panels, caption, header, image_width)


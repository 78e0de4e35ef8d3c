"""The precomputed controls of the HTML book: every position present, the page's JSON faithful to it,
pictures sized as asked. (The browser test in test_book.py moves them in Chromium.)"""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tbar_helpers.chapters import widgets
from tbar_helpers.chapters.static import Axis, Panel, control, png_uri
from tbar_helpers.config import AttackConfig


def _payload(html: str) -> dict:
    m = re.search(r"<script type='application/json' class='tbar-data'>(.*?)</script>", html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_every_position_needs_its_panel():
    axes = [Axis("a", ["0", "1"]), Axis("b", ["x", "y", "z"])]
    panels = {(i, j): Panel([f"{i}{j}"]) for i in range(2) for j in range(3)}
    assert len(control("two-axes", axes, ["v"], panels).data()["panels"]) == 6
    del panels[(1, 2)]
    with pytest.raises(ValueError, match=r"no panel at position \(1, 2\)"):
        control("two-axes", axes, ["v"], panels)
    with pytest.raises(ValueError, match="2 values for 1 keys"):
        control("c", [Axis("a", ["0"])], ["v"], {(0,): Panel(["1", "2"])})
    with pytest.raises(ValueError, match="lowercase"):
        control("Bad Name", [Axis("a", ["0"])], ["v"], {(0,): Panel(["1"])})
    with pytest.raises(ValueError, match="outside its 1 positions"):
        Axis("a", ["0"], start=1)


def test_the_page_carries_every_panel_and_survives_closing_tags():
    panels = {(i,): Panel([f"{i}%"], html=f"<table><tr><td>{i}</td></tr></table><script>alert(1)</script>")
              for i in range(3)}
    html = control("closing", [Axis("α", ["0", "0.5", "1"], start=1)], ["CA"], panels)._repr_html_()
    assert "</table>" not in html.split("class='tbar-data'>")[1].split("</script>")[0]  # escaped inside the JSON
    data = _payload(html)
    assert data["panels"]["2"]["values"] == ["2%"] and data["panels"]["0"]["html"].startswith("<table>")
    assert "value='1'" in html and "id='tbar-static-closing'" in html


def test_png_uri_lays_images_out_in_rows():
    x = torch.rand(6, 3, 8, 8)
    img = Image.open(io.BytesIO(base64.b64decode(png_uri(x, scale=2, rows=2).split(",", 1)[1])))
    assert img.size == (3 * 10 * 2, 2 * 10 * 2)  # 3 per row, each 8 pixels plus a 2-pixel gap, drawn twice as large
    with pytest.raises(ValueError, match="multiple of rows"):
        png_uri(x, rows=4)


def test_strength_controls_start_at_the_presets_strength_and_measure_the_change():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    cfg = AttackConfig()
    ctls = widgets.strength_controls(x, steps=5, cfg=cfg)
    assert [c.name for c in ctls] == [f"strength-{a}" for a in widgets.STRENGTH]
    blended = ctls[list(widgets.STRENGTH).index("blended")]
    field_, lo, hi = widgets.STRENGTH["blended"]
    values = np.linspace(lo, hi, 5)
    assert blended.axes[0].start == int(np.abs(values - cfg.blended_alpha).argmin())
    last = (widgets.triggered_at("blended", float(values[-1]), x, cfg) - x).abs()
    assert blended.panels[(4,)].values[1] == f"{float(last.mean()):.3f}"


def test_xi_control_shows_the_grids_cell_at_each_position():
    rng = np.random.default_rng(0)
    g = {"xi_clean": rng.random((3, 3)), "xi_trigger": rng.random((3, 3)), "alphas_c": np.array([0, .5, 1]),
         "alphas_t": np.array([0, .5, 1])}
    g["xi"] = (g["xi_clean"] + g["xi_trigger"]) / 2
    ctl = widgets.xi_control(g)
    assert ctl.panels[(2, 1)].values == [f"{100 * g[k][2, 1]:.1f}%" for k in ("xi", "xi_clean", "xi_trigger")]
    assert ctl.panels[(2, 1)].html.count("3px solid") == 1

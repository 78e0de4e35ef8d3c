"""Behaviour of the helpers behind the chapters: sizes, profiles, notebook cache keys, strength
explorer, rebuilt patch triggers, coarse α grids, figures."""
from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from tbar_helpers import book, report

from tbar_helpers.chapters import plots
from tbar_helpers.chapters.studies import coarse
from tbar_helpers.chapters.widgets import STRENGTH, triggered_at
from tbar_helpers.config import MINI, get_scale, with_forget_sizes, with_sizes
from tbar_helpers.method.attacks import badnet, patch_trigger


def test_with_sizes_changes_only_what_is_given():
    cfg = with_sizes("mini", n_train=600, epochs=None)
    assert cfg.finetune.n_train == 600 and cfg.finetune.epochs == MINI.finetune.epochs
    assert with_sizes("mini") is get_scale("mini")  # the preset itself, its device resolved
    with pytest.raises(ValueError, match="unknown size"):
        with_sizes("mini", n_trains=5)
    with pytest.raises(ValueError, match="positive"):
        with_sizes("mini", n_train=0)
    it = with_sizes("mini", "imagetext", n_val=250, n_test=None, corpus_size=2500)
    assert it.imagetext.n_val == 250 and it.imagetext.n_test == MINI.imagetext.n_test and it.finetune == MINI.finetune
    assert it.imagetext.corpus_size == 2500
    with pytest.raises(ValueError, match="n_train"):
        with_sizes("mini", "imagetext", n_train=600)
    with pytest.raises(ValueError, match="section"):
        with_sizes("mini", "pretrain", steps=5)


def test_with_forget_sizes_sets_the_recipes_sizes():
    from tbar_helpers.settings.imagetext import forget_recipes
    assert with_forget_sizes("mini") is get_scale("mini")
    cfg = with_forget_sizes("mini", [500])
    assert [r.forget_size for r in forget_recipes(cfg.imagetext)] == [500, 500]  # one size, each optimiser
    assert cfg.imagetext.tbar.lr == MINI.imagetext.tbar.lr and cfg.tbar == MINI.tbar and cfg.finetune == MINI.finetune
    sizes = {r.forget_size for r in forget_recipes(with_forget_sizes("mini", [250, 1500, 250]).imagetext)}
    assert sizes == {250, 1500}
    for bad in ([], [0, 500]):
        with pytest.raises(ValueError, match="forget_sizes"):
            with_forget_sizes("mini", bad)


def test_profile_sizes_are_parameters_of_their_notebooks():
    """papermill would inject a misspelt name as a new variable nobody reads: every profile key must be a
    variable of its notebook's parameters cell."""
    for profile in book.PROFILES.values():
        for stem, params in profile.items():
            names = set(book.notebook_defaults(book.NOTEBOOKS / f"{stem}.ipynb"))
            assert set(params) <= names, (stem, set(params) - names)


def test_profiles_one_place_and_lighter_for_tests():
    full = book.notebook_parameters("mini", 0, "03_injecting", "book")
    light = book.notebook_parameters("mini", 0, "03_injecting", "test")
    assert full == {"scale": "mini", "seed": 0}
    assert light["scale"] == "mini" and 0 < len(light["attacks"]) < 6
    with pytest.raises(ValueError, match="unknown profile"):
        book.notebook_parameters(profile="fast")


def test_only_parameters_that_differ_from_a_notebooks_defaults_are_injected():
    """The book profile injects nothing (no duplicate parameters cell on the pages); the test profile and
    another seed inject exactly what they change."""
    for nb in sorted(book.NOTEBOOKS.glob("*.ipynb")):
        defaults = book.notebook_defaults(nb)
        assert defaults["scale"] == "mini" and defaults["seed"] == 0, nb.name
        assert book.overrides(book.notebook_parameters("mini", 0, nb.stem, "book"), defaults) == {}, nb.name
        light = book.notebook_parameters("mini", 0, nb.stem, "test")
        assert book.overrides(light, defaults) == book.TEST_PROFILE.get(nb.stem, {}), nb.name
        assert book.overrides(book.notebook_parameters("paper", 1, nb.stem), defaults) == {"scale": "paper", "seed": 1}
    assert book.overrides({"n": 0.0, "xs": [1, 2]}, {"n": 0, "xs": [1, 2]}) == {"n": 0.0}  # 0.0 is not 0


def test_build_remembers_each_notebooks_time_per_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "SECONDS", tmp_path / "notebook-seconds.json")
    assert book.last_seconds("book") == {}  # never built
    book._record_seconds("book", "09_image_text.ipynb", 688.4)
    book._record_seconds("test", "09_image_text.ipynb", 118.0)
    book._record_seconds("book", "01_mini_world.ipynb", 27.0)
    assert book.last_seconds("book") == {"09_image_text.ipynb": 688.4, "01_mini_world.ipynb": 27.0}
    assert book.last_seconds("test") == {"09_image_text.ipynb": 118.0}
    (tmp_path / "notebook-seconds.json").write_text("{not json")
    assert book.last_seconds("book") == {}  # a damaged record only loses the estimate


def test_plan_line_estimates_only_when_every_notebook_to_run_has_a_time():
    prev = {"a.ipynb": 60.0, "b.ipynb": 600.0}
    assert book.plan_line(["a.ipynb", "b.ipynb"], 3, prev) == \
        "2 of 3 notebooks to execute, 1 unchanged, about 11.0 min by the last build that ran them"
    assert book.plan_line(["a.ipynb", "c.ipynb"], 3, prev) == "2 of 3 notebooks to execute, 1 unchanged"
    assert book.plan_line([], 3, prev) == "0 of 3 notebooks to execute, 3 unchanged"
    # a first build (nothing cached, no times) says what first builds cost; a partial or test one does not
    first = book.plan_line(["a.ipynb", "c.ipynb"], 2, {})
    assert first.startswith("2 of 2 notebooks to execute, 0 unchanged; ") and report.first_build() in first
    assert " min" in report.first_build()  # the range read from benchmarks/results/book-build-*.txt
    assert book.plan_line(["a.ipynb", "c.ipynb"], 2, {}, profile="test") == "2 of 2 notebooks to execute, 0 unchanged"
    assert book.plan_line(["c.ipynb"], 2, {}) == "1 of 2 notebooks to execute, 1 unchanged"


def test_notebook_key_tracks_notebook_and_parameters(tmp_path):
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    k = book.notebook_key(nb, {"seed": 0}, "digest")
    assert k == book.notebook_key(nb, {"seed": 0}, "digest")
    assert k != book.notebook_key(nb, {"seed": 1}, "digest")
    assert k != book.notebook_key(nb, {"seed": 0}, "other sources")
    nb.write_text('{"cells": []}')
    assert k != book.notebook_key(nb, {"seed": 0}, "digest")


def test_strength_explorer_badnet_patch_grows_with_strength(images):
    lo = triggered_at("badnet", 2 / 32, images)
    hi = triggered_at("badnet", 6 / 32, images)
    changed_lo = (lo != images).any(1).float().mean().item()
    changed_hi = (hi != images).any(1).float().mean().item()
    assert 0 < changed_lo < changed_hi
    with pytest.raises(ValueError, match="outside"):
        triggered_at("blended", 0.9, images)
    with pytest.raises(ValueError, match="optimises its patch"):
        triggered_at("badclip", 0.1, images)
    assert set(STRENGTH) == {"badnet", "blended", "wanet", "sig"}


def test_patch_trigger_rebuilds_the_same_transform(images):
    t = badnet(32)
    rebuilt = patch_trigger("badnet", 32, t.pattern, t.mask)
    assert torch.equal(rebuilt(images), t(images))
    with pytest.raises(ValueError, match="32x32"):
        patch_trigger("badnet", 64, t.pattern, t.mask)


def test_coarse_grid_keeps_range_and_settings():
    c = coarse(MINI.tbar, 0.1)
    assert c.alpha_grid[0] == 0 and c.alpha_grid[-1] == pytest.approx(max(MINI.tbar.alpha_grid))
    assert len(c.alpha_grid) == round(max(MINI.tbar.alpha_grid) / 0.1) + 1 and c.lr == MINI.tbar.lr
    assert all(b - a == pytest.approx(0.1) for a, b in zip(c.alpha_grid, c.alpha_grid[1:]))


def test_figures_draw(images):
    grids = {"a": {"xi": np.zeros((2, 2)), "xi_clean": np.zeros((2, 2)), "xi_trigger": np.zeros((2, 2)),
                   "alphas_c": np.array([0, 1]), "alphas_t": np.array([0, 1])}}
    for fig in (plots.gallery(images[:3], ["a red circle", "x", "y"]), plots.xi_heatmaps(grids),
                plots.trigger_grid(images[:2], {"badnet": badnet(32)(images[:2])})):
        assert len(fig.axes) > 0
        matplotlib.pyplot.close(fig)


def test_pct_shows_percentages_and_an_undefined_knowledge_kept_as_a_dash():
    import pandas as pd
    from tbar_helpers.chapters.studies import pct
    tbl = pd.DataFrame({"CA TBAR": [0.9312, 0.5], "knowledge kept": [0.8312, None]})
    out = pct(tbl, ["CA TBAR"])
    assert list(out["CA TBAR"]) == [93.1, 50.0] and list(out["knowledge kept"]) == [0.83, "–"]
    assert list(tbl["CA TBAR"]) == [0.9312, 0.5]  # the table itself is left as it was


def test_budget_plot_draws_theta_pre_as_a_level_in_both_panels():
    import pandas as pd
    tbl = pd.DataFrame({"method": ["clean-ft", "clean-ft", "TBAR"], "budget": [100, 1000, 500],
                        "ca": [0.5, 0.6, 0.7], "asr": [0.9, 0.5, 0.02]})
    fig = plots.budget_plot(tbl, levels={"revert to θpre": (0.4, 0.01)})
    ca_ax, asr_ax = fig.axes
    for ax, y in ((ca_ax, 40.0), (asr_ax, 1.0)):
        lines = {ln.get_label(): ln for ln in ax.lines}
        assert list(lines["revert to θpre"].get_ydata()) == pytest.approx([y, y])
        assert list(lines["clean-ft"].get_xdata()) == [100, 1000]
    matplotlib.pyplot.close(fig)


def test_alpha_curve_draws_the_ca_floor_and_the_chosen_alpha_into_a_given_panel():
    from tbar_helpers.method.tbar import AlphaPoint
    pts = [AlphaPoint(0.0, 0.8, 0.9), AlphaPoint(1.0, 0.75, 0.1), AlphaPoint(2.0, 0.6, 0.0)]
    fig, axes = matplotlib.pyplot.subplots(1, 2)
    assert plots.alpha_curve(pts, 1.0, floor=0.9, ax=axes[1]) is fig
    lines = {ln.get_label(): ln for ln in axes[1].lines}
    assert list(lines["CA floor (90%)"].get_ydata()) == pytest.approx([72.0, 72.0])  # 90% of α = 0's CA of 80%
    assert list(lines["chosen α = 1"].get_xdata()) == [1.0, 1.0]
    assert not axes[0].lines
    matplotlib.pyplot.close(fig)


def test_recorded_studies_read_the_committed_logs(monkeypatch, tmp_path):
    from tbar_helpers import report
    budget = report.recorded_pretraining("badnet", 0)
    assert list(budget["pretraining steps"]) == sorted(budget["pretraining steps"]) and len(budget) >= 2
    assert budget[["CA backdoored", "ASR TBAR", "mean ξ"]].apply(lambda c: c.between(0, 1).all()).all()
    arch = report.recorded_architecture("badnet", 500)
    assert "preset" in set(arch["variant"]) and (arch["tokens"] > 0).all()
    monkeypatch.setattr(report, "RESULTS", tmp_path)  # a checkout without the logs: a named error
    with pytest.raises(FileNotFoundError, match="study.py architecture"):
        report.recorded_architecture("badnet", 500)


def test_a_hung_cell_fails_the_notebook_after_the_cell_timeout(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("import time\ntime.sleep(60)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "hung.ipynb"
    nbformat.write(nb, path)
    t0 = time.time()
    with pytest.raises(RuntimeError, match="hung.ipynb: a cell ran past the 3-second limit.*--cell-timeout"):
        book.run_notebook(path, tmp_path / "out.ipynb", {}, cell_timeout=3)
    assert time.time() - t0 < 50


def test_progress_bars_in_built_notebooks_are_text_not_widgets(tmp_path):
    """A widget bar saved in an executed notebook is an area the HTML book cannot draw (no kernel)."""
    import json

    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tbar_helpers.progress import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "bar.ipynb")
    book.run_notebook(tmp_path / "bar.ipynb", tmp_path / "out.ipynb", {}, cell_timeout=120)
    outputs = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"]
    assert outputs and not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any(o.get("name") == "stderr" and "steps" in "".join(o["text"]) for o in outputs)

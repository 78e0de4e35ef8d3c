import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from tbar_helpers.config import TBARConfig
from tbar_helpers.method import metrics


class Fixed(nn.Module):
    """Returns hand-made logits: the prediction is the image's first pixel value (an integer)."""

    def __init__(self, n_classes=3):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.n = n_classes

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), self.n).float()


def test_ca_and_asr_on_hand_made_logits():
    pred = torch.tensor([0, 1, 2, 0, 0])
    labels = torch.tensor([0, 1, 1, 2, 0])
    assert metrics.accuracy_from_predictions(pred, labels) == pytest.approx(3 / 5)
    # non-target images are indices 1, 2, 3; only index 3 is predicted as target 0
    assert metrics.asr_from_predictions(pred, labels, 0) == pytest.approx(1 / 3)


def test_asr_applies_trigger_to_non_target_images_only():
    x = torch.zeros(4, 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 1.0])
    labels = torch.tensor([0, 1, 2, 1])
    to_target = lambda imgs: imgs * 0  # noqa: E731  the "trigger" sends every image to class 0
    assert metrics.attack_success_rate(Fixed(), x, labels, to_target, 0) == 1.0
    assert metrics.attack_success_rate(Fixed(), x, labels, lambda i: i, 0) == 0.0
    assert metrics.accuracy(Fixed(), x, labels) == 1.0


def test_triggered_accuracy_counts_true_classes_of_non_target_images():
    x = torch.zeros(4, 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 1.0])
    labels = torch.tensor([0, 1, 2, 1])
    # identity "trigger": the non-target images (1, 2, 1) keep their class
    assert metrics.triggered_accuracy(Fixed(), x, labels, lambda i: i, 0) == 1.0
    # a trigger that sends everything to class 2: only the image of class 2 stays right, and none hits target 0
    to_two = lambda imgs: imgs * 0 + 2  # noqa: E731
    assert metrics.triggered_accuracy(Fixed(), x, labels, to_two, 0) == pytest.approx(1 / 3)
    assert metrics.attack_success_rate(Fixed(), x, labels, to_two, 0) == 0.0
    with pytest.raises(ValueError, match="non-target"):
        metrics.triggered_accuracy(Fixed(), x[:1], labels[:1], lambda i: i, 0)


def test_triggered_scores_give_asr_and_triggered_accuracy_from_one_pass():
    x = torch.zeros(5, 3, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 1.0, 2.0])
    labels = torch.tensor([0, 1, 2, 1, 2])
    half = lambda imgs: torch.where(imgs > 1.5, imgs * 0, imgs)  # noqa: E731  (class-2 images go to target 0)
    calls = []

    class Counting(Fixed):
        def forward(self, imgs):
            calls.append(len(imgs))
            return super().forward(imgs)

    asr, acc = metrics.triggered_scores(Counting(), x, labels, half, 0)
    assert (asr, acc) == (0.5, 0.5)
    assert calls == [4]  # the four non-target images, once
    assert asr == metrics.attack_success_rate(Fixed(), x, labels, half, 0)
    assert acc == metrics.triggered_accuracy(Fixed(), x, labels, half, 0)
    with pytest.raises(ValueError, match="target"):
        metrics.triggered_scores(Fixed(), x[:1], labels[:1], half, 0)


def test_xi_is_zero_for_identical_models():
    model = Fixed()
    x = torch.randint(0, 3, (20, 3, 2, 2)).float()
    out = metrics.xi_grid(lambda ac, at: model, x, x, [0, 0.5, 1], [0, 1])
    assert np.all(out["xi"] == 0)


def test_xi_counts_disagreements():
    x = torch.zeros(10, 3, 2, 2)

    class Shift(Fixed):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, z):
            return super().forward(z + self.k)

    # the combined model (ac=1, at=1) predicts class 1 where either single model predicts 0
    make = lambda ac, at: Shift(1 if (ac and at) else 0)  # noqa: E731
    out = metrics.xi_grid(make, x, x, [0, 1], [0, 1])
    assert out["xi"][1, 1] == 1.0 and out["xi"][0, 1] == 0 and out["xi"][1, 0] == 0


def test_empty_and_mismatched_inputs():
    with pytest.raises(ValueError, match="zero images"):
        metrics.accuracy_from_predictions(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ValueError, match="match one to one"):
        metrics.accuracy_from_predictions(torch.tensor([1]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="non-target"):
        metrics.asr_from_predictions(torch.tensor([0]), torch.tensor([0]), 0)


def test_coarse_to_fine_alpha_search_matches_the_full_grid(monkeypatch):
    """On a smooth synthetic curve the coarse-to-fine search picks the full grid's α with a third of
    the evaluations."""
    from tbar_helpers.method import tbar
    calls = []

    def fake_curve(clf, tau, data, alphas, alpha_max=10.0):
        calls.extend(alphas)
        return [tbar.AlphaPoint(a, 1 - 0.1 * a, max(0.0, 1 - a / 1.7)) for a in alphas]

    monkeypatch.setattr(tbar, "alpha_curve", fake_curve)
    grid = [round(0.1 * i, 1) for i in range(31)]
    full = tbar.select_alpha(fake_curve(None, None, None, grid), 0.8)
    calls.clear()
    pts = tbar.coarse_to_fine(None, None, None, grid, 0.8)
    assert tbar.select_alpha(pts, 0.8) == full == 1.7
    assert len(calls) < 0.5 * len(grid) and len(set(calls)) == len(calls)
    assert [p.alpha for p in pts] == sorted(p.alpha for p in pts)


def test_search_alpha_follows_the_config(monkeypatch):
    """``tbar.search`` picks the evaluation plan: every α of the grid, or coarse to fine; a typo is named."""
    from tbar_helpers.method import tbar
    from tbar_helpers.config import TBARConfig, override
    calls = []

    def fake_curve(clf, tau, data, alphas, alpha_max=10.0):
        calls.extend(alphas)
        return [tbar.AlphaPoint(a, 1 - 0.2 * a, max(0.0, 1 - a)) for a in alphas]

    monkeypatch.setattr(tbar, "alpha_curve", fake_curve)
    cfg = TBARConfig()
    grid_pts = tbar.search_alpha(None, None, None, override(cfg, search="grid"))
    assert [p.alpha for p in grid_pts] == sorted(cfg.alpha_grid)
    calls.clear()
    c2f = tbar.search_alpha(None, None, None, cfg)
    assert cfg.search == "coarse-to-fine" and len(calls) < len(cfg.alpha_grid) / 2
    assert tbar.select_alpha(c2f, cfg.ca_keep) == tbar.select_alpha(grid_pts, cfg.ca_keep)
    with pytest.raises(ValueError, match="tbar.search"):
        tbar.search_alpha(None, None, None, override(cfg, search="bisect"))


def test_refine_replays_a_recorded_curve():
    """The coarse-to-fine plan on a recorded curve asks only for grid points, each once."""
    from tbar_helpers.method.tbar import AlphaPoint, refine
    grid = [round(0.05 * i, 2) for i in range(31)]
    table = {a: AlphaPoint(a, 1 - 0.3 * a, max(0.0, 0.9 - a)) for a in grid}
    asked = []
    pts = refine(lambda al: [table[a] for a in al if not asked.append(a)], grid, 0.75)
    assert set(asked) <= set(grid) and len(asked) == len(set(asked)) < len(grid)
    assert [p.alpha for p in pts] == sorted(asked)


def test_coarse_pass_stops_at_the_first_alpha_below_the_ca_floor():
    """The coarse pass asks for no α beyond the first whose CA is under the floor, and still picks the full
    grid's α on a monotone curve; ``stop_below_floor=False`` keeps the old plan (every coarse α)."""
    from tbar_helpers.method.tbar import AlphaPoint, refine, select_alpha
    grid = [round(0.1 * i, 1) for i in range(31)]
    table = {a: AlphaPoint(a, 1 - 0.1 * a, max(0.0, 1 - a / 1.2)) for a in grid}  # CA < 0.85 from α = 1.6

    def run(stop):
        asked = []
        pts = refine(lambda al: [table[a] for a in al if not asked.append(a)], grid, 0.85, stop_below_floor=stop)
        return pts, asked

    (stopped, asked), (full, asked_all) = run(True), run(False)
    coarse = sorted(set(grid[::3]) | {grid[-1]})
    assert max(a for a in asked if a in coarse) == 1.8  # the first coarse α under the floor, then nothing larger
    assert set(coarse) <= set(asked_all) and len(asked) < len(asked_all)
    assert select_alpha(stopped, 0.85) == select_alpha(full, 0.85) == select_alpha(list(table.values()), 0.85) == 1.2
    # a curve whose CA comes back above the floor: only the full plan sees the later α (largest-α ties)
    bumpy = {**table, 2.4: AlphaPoint(2.4, 0.99, 0.0)}
    pts = refine(lambda al: [bumpy[a] for a in al], grid, 0.85, ties="largest", stop_below_floor=False)
    assert select_alpha(pts, 0.85, ties="largest") == 2.4
    pts = refine(lambda al: [bumpy[a] for a in al], grid, 0.85, ties="largest")
    assert 2.4 not in [p.alpha for p in pts] and select_alpha(pts, 0.85, ties="largest") == 1.5


def test_proxy_tie_rule_spends_the_ca_budget(monkeypatch):
    """With a proxy trigger, α ties (ASR within a point of the lowest) go to the largest α whose CA stays
    above the floor; the known-trigger rule takes the smallest. The coarse-to-fine search finds the
    same α as the full grid under either rule."""
    from tbar_helpers.method import tbar
    grid = [round(0.1 * i, 1) for i in range(31)]
    # the proxy's ASR is 0 from α = 0.8 on; CA falls by 4 points per 0.1 after α = 1
    curve = [tbar.AlphaPoint(a, 1.0 if a <= 1 else 1.0 - 0.4 * (a - 1), max(0.0, 1 - a / 0.8)) for a in grid]
    assert tbar.select_alpha(curve, 0.9) == 0.8
    assert tbar.select_alpha(curve, 0.9, ties="largest") == 1.2  # CA 0.92 at 1.2, 0.88 at 1.3
    assert tbar.select_alpha(curve, 0.82, ties="largest") == 1.4
    table = {p.alpha: p for p in curve}
    monkeypatch.setattr(tbar, "alpha_curve", lambda *a, **k: [table[x] for x in a[3]])
    for ties, want in (("smallest", 0.8), ("largest", 1.2)):
        pts = tbar.coarse_to_fine(None, None, None, grid, 0.9, ties=ties)
        assert tbar.select_alpha(pts, 0.9, ties=ties) == want
    with pytest.raises(ValueError, match="tie rule"):
        tbar.select_alpha(curve, 0.9, ties="median")
    # the attack-unknown runs switch rules through for_proxy, which changes nothing else
    cfg = TBARConfig(ties="smallest", proxy_ties="largest", ca_keep=0.85)
    assert tbar.for_proxy(cfg) == dataclasses.replace(cfg, ties="largest")


def test_select_recipe_takes_the_lowest_validation_asr_then_the_most_ca_kept():
    from tbar_helpers.method.tbar import AlphaPoint, select_recipe
    adamw = [AlphaPoint(0.0, 0.96, 0.99), AlphaPoint(1.0, 0.87, 0.25)]
    sgd = [AlphaPoint(0.0, 0.96, 0.99), AlphaPoint(1.4, 0.90, 0.01)]
    assert select_recipe([(adamw, 1.0), (sgd, 1.4)]) == 1
    assert select_recipe([(sgd, 1.4), (adamw, 1.0)]) == 0
    same_asr = [AlphaPoint(0.0, 0.96, 0.99), AlphaPoint(1.2, 0.88, 0.01)]  # less CA kept at the same ASR
    assert select_recipe([(same_asr, 1.2), (sgd, 1.4)]) == 1
    assert select_recipe([(sgd, 1.4), (sgd, 1.4)]) == 0  # a full tie keeps the first listed
    with pytest.raises(ValueError, match="not on its curve"):
        select_recipe([(sgd, 0.5)])
    with pytest.raises(ValueError, match="no forget recipe"):
        select_recipe([])


def test_forget_recipes_adds_each_alternative_once():
    from tbar_helpers.config import MINI, override
    from tbar_helpers.settings.imagetext import forget_recipes
    it = override(MINI.imagetext, forget_size_alternatives=())
    got = forget_recipes(override(it, forget_alternatives=(("sgd", 0.05), ("adamw", it.tbar.lr), ("sgd", 0.05))))
    assert [(c.optimizer, c.lr) for c in got] == [("adamw", it.tbar.lr), ("sgd", 0.05)]
    assert all(c.steps == it.tbar.steps and c.forget_size == it.tbar.forget_size for c in got)
    assert forget_recipes(override(it, forget_alternatives=())) == [it.tbar]


def test_forget_recipes_cross_sizes_with_optimisers_and_honour_an_explicit_size():
    from tbar_helpers.config import MINI, override
    from tbar_helpers.settings.imagetext import forget_recipes
    it = override(MINI.imagetext, forget_alternatives=(("sgd", 0.05),), forget_size_alternatives=(300, 300))
    n = it.tbar.forget_size
    got = [(c.forget_size, c.optimizer) for c in forget_recipes(it)]
    assert got == [(n, "adamw"), (n, "sgd"), (300, "adamw"), (300, "sgd")]  # the preset first, no repeats
    assert [(c.forget_size, c.optimizer) for c in forget_recipes(it, forget_size=40)] == [(40, "adamw"), (40, "sgd")]


def test_gradient_ascent_chooses_its_steps_on_validation_like_tbar_chooses_alpha():
    from tbar_helpers.config import TBARConfig
    from tbar_helpers.method.defenses import gradient_ascent
    from tbar_helpers.method.metrics import EvalSet
    from tbar_helpers.method.tbar import choose_alpha
    from tbar_helpers.world.models import ImageClassifier
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
    clf = ImageClassifier(enc, torch.nn.functional.normalize(torch.randn(4, 6), dim=-1), (0.5,) * 3, (0.25,) * 3)
    x, y = torch.rand(40, 3, 8, 8), torch.randint(0, 4, (40,))
    val = EvalSet(x, y, lambda b: b.clamp(0.5, 1), 0, 64)
    cfg = TBARConfig(ca_keep=0.9)
    out = gradient_ascent(clf, x[:16], torch.zeros(16, dtype=torch.long), 8, 0.05, 8, 0, progress=False, val=val,
                          choose=cfg, every=2)
    assert [p.alpha for p in out.ga_curve] == [0, 2, 4, 6, 8]
    assert out.ga_steps == choose_alpha(out.ga_curve, cfg)  # the same rule and CA floor as TBAR's α
    assert val.scores(out) == pytest.approx(next((p.ca, p.asr) for p in out.ga_curve if p.alpha == out.ga_steps))
    if out.ga_steps == 0:
        assert all(torch.equal(a, b) for a, b in zip(out.encoder.state_dict().values(), enc.state_dict().values()))


def test_accuracy_by_group_on_hand_made_predictions():
    pred, labels = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 1])
    groups = {"first two": torch.tensor([True, True, False, False]), "last two": torch.tensor([False, False, True, True]),
              "none": torch.zeros(4, dtype=torch.bool)}
    assert metrics.accuracy_by_group(pred, labels, groups) == {"first two": 1.0, "last two": 0.0, "none": None}
    with pytest.raises(ValueError, match="match one to one"):
        metrics.accuracy_by_group(pred[:3], labels, groups)

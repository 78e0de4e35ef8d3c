"""DECREE-style inversion, detection and target inference on toy encoders with a planted patch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tbar_helpers.method.inversion import (Inversion, infer_target, invert_trigger, is_backdoored,
                                           mean_pairwise_similarity)

SIZE = 16


def _planted(x: torch.Tensor) -> torch.Tensor:
    """How strongly the bottom-right 3x3 corner is white (1 when the planted patch is there)."""
    return x[..., -3:, -3:].mean((1, 2, 3))


class ToyEncoder(nn.Module):
    """Random features of the image, swamped by one fixed direction when the corner patch is white."""

    def __init__(self, backdoor: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * SIZE * SIZE, 32, generator=g) / 8, requires_grad=False)
        self.direction = nn.Parameter(torch.randn(32, generator=g), requires_grad=False)
        self.backdoor = backdoor

    def forward(self, x):
        f = F.normalize((x - 0.5).flatten(1) @ self.proj, dim=-1)
        if self.backdoor:
            f = f + 2 * F.softplus(10 * (_planted(x) - 0.8))[:, None] * F.normalize(self.direction, dim=0)
        return f


def _images(n=96, seed=0):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_similarity_is_one_for_identical_rows_and_low_for_random():
    assert mean_pairwise_similarity(torch.ones(5, 4)).item() == pytest.approx(1.0)
    rnd = mean_pairwise_similarity(torch.randn(200, 64, generator=torch.Generator().manual_seed(0)))
    assert abs(rnd.item()) < 0.05


def test_inversion_recovers_the_planted_patch():
    inv = invert_trigger(ToyEncoder(), _images(), steps=200, lr=0.1, l1=0.05, sim_goal=0.9, seed=0, progress=False)
    corner = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    corner[-3:, -3:] = True
    m = inv.mask[0, 0]
    assert inv.similarity >= 0.9
    assert m[corner].sum() / m.sum() > 0.5  # most of the mask's mass sits on the planted corner
    assert is_backdoored(inv, threshold=0.1)
    # the proxy trigger really collapses the encoder's embeddings
    proxy = inv.trigger()(_images(seed=1))
    assert mean_pairwise_similarity(ToyEncoder()(proxy)).item() > 0.8


def test_clean_encoder_needs_a_large_mask():
    clean = invert_trigger(ToyEncoder(backdoor=False), _images(), steps=200, lr=0.1, l1=0.05, sim_goal=0.9,
                           seed=0, progress=False)
    bad = invert_trigger(ToyEncoder(), _images(), steps=200, lr=0.1, l1=0.05, sim_goal=0.9, seed=0, progress=False)
    assert clean.l1 > 3 * bad.l1
    assert not is_backdoored(clean, threshold=0.1)


class ToyClassifier(nn.Module):
    """Predicts class 3 when the corner patch is white, else a class from the image's mean colour."""

    def forward(self, x):
        base = F.one_hot((x.mean((1, 2, 3)) * 10).long().clamp(0, 5), 6).float()
        return base + 5 * (_planted(x) > 0.8).float()[:, None] * F.one_hot(torch.tensor(3), 6).float()

    def parameters(self, recurse=True):
        yield torch.zeros(1)


def test_target_inference_finds_the_target():
    x = _images()
    patch = Inversion(torch.zeros(1, 1, SIZE, SIZE), torch.ones(1, 3, SIZE, SIZE), 0.0, 1.0)
    patch.mask[..., -3:, -3:] = 1
    target, share = infer_target(ToyClassifier(), x, patch.trigger())
    assert target == 3 and share == 1.0
    target0, _ = infer_target(ToyClassifier(), x, lambda z: z)  # no trigger: the images' own class
    assert target0 != 3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2"):
        invert_trigger(ToyEncoder(), _images(1), steps=5, progress=False)
    with pytest.raises(ValueError, match="sim_goal"):
        invert_trigger(ToyEncoder(), _images(), steps=5, sim_goal=1.5, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        is_backdoored(Inversion(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), 0.0, 1.0), threshold=2)
    with pytest.raises(ValueError, match="batch"):
        invert_trigger(ToyEncoder(), torch.rand(3, SIZE, SIZE), steps=5, progress=False)


def test_inversions_are_cached_by_weights_images_and_settings(tmp_path, monkeypatch):
    """A second inversion of the same weights on the same images loads the first one (θpre's reference
    inversion is shared by every attack of a seed); other weights, images or settings invert again."""
    from tbar_helpers.settings import imagetext_runs
    from tbar_helpers.config import MINI, override
    from tbar_helpers.world.models import ImageClassifier
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    torch.manual_seed(0)
    clf = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 8)), torch.randn(2, 8),
                          (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    scale = override(MINI, **{"imagetext.invert_steps": 4, "imagetext.invert_images": 16})
    x = _images(24)
    first = imagetext_runs.invert(clf, x, scale, seed=0, progress=False)
    assert len(list((tmp_path / "inversion").glob("*.pt"))) == 1

    def must_not_run(*a, **k):
        raise AssertionError("the inversion ran again")

    monkeypatch.setattr(imagetext_runs, "invert_trigger", must_not_run)
    again = imagetext_runs.invert(clf, x.clone(), scale, seed=0, progress=False)
    assert torch.equal(again.mask, first.mask) and torch.equal(again.pattern, first.pattern)
    assert (again.l1, again.similarity, again.history) == (first.l1, first.similarity, first.history)
    other = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 8)), torch.randn(2, 8),
                            (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    for args in ((other, x, scale, 0), (clf, _images(24, seed=1), scale, 0), (clf, x, scale, 1),
                 (clf, x, override(scale, **{"imagetext.invert_lr": 0.05}), 0)):
        with pytest.raises(AssertionError, match="ran again"):
            imagetext_runs.invert(*args, progress=False)
    with pytest.raises(AssertionError, match="ran again"):
        imagetext_runs.invert(clf, x, scale, 0, progress=False, use_cache=False)


def test_the_relative_rule_compares_the_mask_with_the_clean_models():
    def inv(l1: float) -> Inversion:
        return Inversion(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 2, 2), l1, 1.0)
    clean = inv(0.30)
    assert is_backdoored(inv(0.10), 0.5, reference=clean) and not is_backdoored(inv(0.20), 0.5, reference=clean)
    # the same masks under the absolute rule: a share of the image, whatever θpre's mask
    assert not is_backdoored(inv(0.10), 0.05) and is_backdoored(inv(0.04), 0.05)

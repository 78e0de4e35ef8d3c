"""Bad input gets an error that names the problem and the fix, and nothing already written is lost."""

import pytest
import torch
from torch import nn

from tbar_helpers import cache
from tbar_helpers.config import MINI, get_scale
from tbar_helpers.method.task_vectors import TaskVector
from tbar_helpers.method.tbar import apply_tbar, check_alpha, forget_set, select_alpha, AlphaPoint
from tbar_helpers.method.training import make_optimizer
from tbar_helpers.settings.pipeline import run
from tbar_helpers.world.models import ImageClassifier


def _clf():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
    return ImageClassifier(enc, torch.nn.functional.normalize(torch.randn(4, 8), dim=-1), (0.5,) * 3, (0.5,) * 3,
                           image_size=32)


def test_unknown_attack_in_run():
    with pytest.raises(ValueError, match="unknown attack 'trojan'"):
        run("trojan")


def test_unknown_task_in_run(monkeypatch):
    with pytest.raises(ValueError, match="unknown task 'mnist'.*shapes"):
        from tbar_helpers.settings.pipeline import load_splits
        load_splits(MINI, "mnist", 0, 10)


def test_unknown_scale():
    with pytest.raises(ValueError, match="unknown scale 'huge'.*mini"):
        get_scale("huge")


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -0.5, 100.0, "1"])
def test_alpha_out_of_range_or_not_finite(alpha):
    with pytest.raises(ValueError, match="alpha"):
        check_alpha(alpha)


def test_empty_forget_set():
    trig = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="forget set is empty.*forget_size=100"):
        forget_set(torch.rand(5, 3, 32, 32), torch.zeros(5, dtype=torch.long), trig, 0, 0, seed=0)
    with pytest.raises(ValueError, match="exceeds the 5 clean images"):
        forget_set(torch.rand(5, 3, 32, 32), torch.zeros(5, dtype=torch.long), trig, 0, 6, seed=0)


def test_wrong_image_shape_for_classifier():
    clf = _clf()
    with pytest.raises(ValueError, match="must be 32x32.*resize"):
        clf(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="batch"):
        clf(torch.rand(3, 32, 32))


def test_mismatched_task_vector_on_other_model():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    with pytest.raises(ValueError, match="lacks"):
        TaskVector(a, b).apply_to(nn.Linear(3, 2, bias=False))


def test_unknown_forget_optimizer():
    params = list(nn.Linear(3, 2).parameters())
    with pytest.raises(ValueError, match="choose 'adamw' or 'sgd'"):
        make_optimizer(params, "adam", 1e-3, 0.0)
    assert make_optimizer(params, "sgd", 0.05, 0.0).defaults["momentum"] == 0.9


def test_select_alpha_empty_curve():
    with pytest.raises(ValueError, match="curve is empty"):
        select_alpha([], 0.95)
    assert select_alpha([AlphaPoint(0, 0.9, 1.0), AlphaPoint(1, 0.89, 0.0), AlphaPoint(2, 0.5, 0.0)], 0.95) == 1


def test_corrupted_cache_keeps_other_results(tmp_path, monkeypatch):
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    good = cache.save_json({"asr": 0.01}, tmp_path / "good.json")
    bad = cache.save_json({"asr": 0.5}, tmp_path / "bad.json")
    bad.write_text(bad.read_text().replace("0.5", "0.4"))
    with pytest.raises(cache.CacheCorruptedError, match="bad.json is corrupted"):
        cache.load_json(bad)
    assert cache.load_json(good) == {"asr": 0.01}


def test_negative_forget_size_in_run():
    with pytest.raises(ValueError, match="forget_size must be a positive"):
        run("badnet", forget_size=0)


def test_apply_tbar_rejects_bad_alpha_and_keeps_model():
    clf = _clf()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    tau = TaskVector(vector={k: torch.ones_like(v) for k, v in clf.encoder.state_dict().items()})
    with pytest.raises(ValueError, match="finite"):
        apply_tbar(clf, tau, float("nan"))
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k])

import pytest
import torch
from torch import nn

from tbar_helpers.method.task_vectors import TaskVector


def _pair(seed=0):
    torch.manual_seed(seed)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    return a, b


def test_apply_round_trips():
    a, b = _pair()
    tv = TaskVector(a, b)
    rebuilt = tv.apply_to(a, 1.0)
    for k, v in b.state_dict().items():
        assert torch.allclose(rebuilt.state_dict()[k], v, atol=1e-6)
    assert torch.equal(a.weight, a.weight)  # a copy: the base is unchanged
    back = (-tv).apply_to(rebuilt, 1.0)
    for k, v in a.state_dict().items():
        assert torch.allclose(back.state_dict()[k], v, atol=1e-6)


def test_algebra():
    a, b = _pair()
    _, c = _pair(1)
    t1, t2 = TaskVector(a, b), TaskVector(a, c)
    s = t1 + t2
    for k in s.vector:
        assert torch.allclose(s.vector[k], t1.vector[k] + t2.vector[k])
        assert torch.allclose((2 * t1).vector[k], t1.vector[k] * 2)
        assert torch.allclose((t1 - t1).vector[k], torch.zeros_like(t1.vector[k]))
        assert torch.allclose((-t1).vector[k], -t1.vector[k])
    assert sum([t1, t2]).norm() == pytest.approx(s.norm())
    assert t1.cosine(t1) == pytest.approx(1.0)
    # scaling then applying equals applying with the coefficient
    m1, m2 = (0.5 * t1).apply_to(a), t1.apply_to(a, 0.5)
    assert torch.allclose(m1.weight, m2.weight)


def test_mismatched_state_dicts_are_explained():
    with pytest.raises(ValueError, match="same architecture"):
        TaskVector(nn.Linear(4, 3), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="do not match"):
        TaskVector(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3)))


@pytest.mark.parametrize("coef", [float("nan"), float("inf")])
def test_non_finite_coefficient(coef):
    a, b = _pair()
    with pytest.raises(ValueError, match="finite"):
        TaskVector(a, b).apply_to(a, coef)

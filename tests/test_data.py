import numpy as np
import pytest
import torch

from tbar_helpers.world import data
from tbar_helpers.world.models import MiniTokenizer


def test_tasks_are_deterministic_and_labelled():
    for name in data.TASKS:
        a = data.load_task(name, "test", 50, seed=3)
        b = data.load_task(name, "test", 50, seed=3)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert a.images.shape == (50, 3, 32, 32) and a.images.dtype == torch.float32
        assert 0 <= a.images.min() and a.images.max() <= 1
        assert a.labels.max() < len(a.classnames)
        assert len(set(a.labels.tolist())) > 5  # covers most classes


def test_splits_and_seeds_differ():
    a = data.load_task("shapes", "train", 20, seed=0)
    assert not torch.equal(a.images, data.load_task("shapes", "test", 20, seed=0).images)
    assert not torch.equal(a.images, data.load_task("shapes", "train", 20, seed=1).images)
    assert not torch.equal(a.images, data.load_task("shapes", "train", 20, seed=0, stream="forget").images)


def test_handwritten_digit_splits_are_disjoint():
    tr, _ = data._sklearn_digits("train")
    te, _ = data._sklearn_digits("test")
    flat_tr = {x.tobytes() for x in tr}
    assert sum(x.tobytes() in flat_tr for x in te) < 5  # the dataset has a few exact duplicates


def test_digits_and_glyphs_share_a_label_set():
    assert data.TASK_CLASSES["digits"] == data.TASK_CLASSES["glyphs"]


def test_pretrain_batches_are_captioned_and_deterministic():
    x1, c1 = data.pretrain_batch(64, seed=0, step=5)
    x2, c2 = data.pretrain_batch(64, seed=0, step=5)
    assert torch.equal(x1, x2) and c1 == c2 and len(c1) == 64
    assert len(set(c1)) > 30
    tok = MiniTokenizer()
    ids = tok(c1)
    assert (ids == tok.unk).sum() == 0, "captions use words outside the tokenizer's vocabulary"
    assert (ids.argmax(-1) > 0).all()  # the end token is the largest id (open_clip pools there)


def test_shape_masks_differ_between_shapes():
    n = len(data.SHAPES)
    masks = data._shape_masks(np.arange(n), np.full(n, 16.0), np.full(n, 16.0), np.full(n, 10.0), 32)
    flat = masks.reshape(n, -1)
    for i in range(n):
        for j in range(i + 1, n):
            assert np.abs(flat[i] - flat[j]).sum() > 10, (data.SHAPES[i], data.SHAPES[j])


def test_unknown_task_and_split_are_explained():
    with pytest.raises(ValueError, match="unknown mini task 'cifar10'"):
        data.load_task("cifar10", "train", 10)
    with pytest.raises(ValueError, match="unknown split"):
        data.load_task("shapes", "dev", 10)

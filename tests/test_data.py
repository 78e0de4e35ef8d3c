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


def test_held_out_concepts_are_never_drawn_nor_named_in_pretraining():
    held = ("heart", "star", "wavy", "six", "nine")
    x, caps = data.pretrain_batch(400, seed=0, step=1, holdout=held)
    assert len(caps) == 400 and x.shape[0] == 400
    assert not any(w in c.split() for c in caps for w in held), "a caption names a held-out concept"
    plain_x, plain_caps = data.pretrain_batch(400, seed=0, step=1)
    assert any(w in c.split() for c in plain_caps for w in held)  # the same batch without a holdout has them
    rng = np.random.default_rng(0)
    _, attrs = data.render("shape", 300, rng, holdout=frozenset(held))
    assert not np.isin(attrs["label"], [data.SHAPES.index("heart"), data.SHAPES.index("star")]).any()
    assert data.TEXTURES.index("wavy") not in attrs["texture"]
    _, hand = data.render("hand", 300, rng, holdout=frozenset(held))
    assert not np.isin(hand["label"], [6, 9]).any() and len(set(hand["label"])) == 8


def test_a_holdout_names_only_what_pretraining_draws():
    from tbar_helpers.config import PretrainConfig
    with pytest.raises(ValueError, match="'apple'.*choose shape, texture or digit words"):
        PretrainConfig(holdout=("heart", "apple"))
    with pytest.raises(ValueError, match="tuple of words"):
        PretrainConfig(holdout="heart")
    assert PretrainConfig(holdout=["heart"]).holdout == ("heart",)


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


# ------------------------------------------------------------------- world shifts (config.WorldConfig)
def test_a_world_shift_keeps_the_scenes_and_their_labels():
    from tbar_helpers.config import WorldConfig
    for name in ("objects", "digits"):
        plain = data.load_task(name, "val", 200, seed=5)
        noisy = data.load_task(name, "val", 200, seed=5, world=WorldConfig(noise=0.2))
        cluttered = data.load_task(name, "val", 200, seed=5, world=WorldConfig(clutter=2))
        assert torch.equal(plain.labels, noisy.labels) and torch.equal(plain.labels, cluttered.labels)
        # zero-mean noise of the configured size, measured on mid-grey pixels (which clipping rarely reaches)
        diff = noisy.images - plain.images
        mid = (plain.images > 0.3) & (plain.images < 0.7)
        assert 0.17 < diff[mid].std().item() < 0.21 and abs(diff[mid].mean().item()) < 0.02
        # clutter paints a few pixels of the background and leaves the rest of the scene as it was
        changed = (cluttered.images != plain.images).any(1).float().mean().item()
        assert 0.01 < changed < 0.4


def test_a_world_shift_is_deterministic():
    from tbar_helpers.config import WorldConfig
    w = WorldConfig(noise=0.1, clutter=1)
    a = data.load_task("shapes", "test", 40, seed=2, world=w)
    data.load_task.cache_clear()
    assert torch.equal(a.images, data.load_task("shapes", "test", 40, seed=2, world=w).images)
    x1, c1 = data.captioned_mix(30, data._rng("corpus", 0, "a"), 32, "train", w)
    x2, c2 = data.captioned_mix(30, data._rng("corpus", 0, "a"), 32, "train", w)
    assert torch.equal(x1, x2) and c1 == c2


@pytest.mark.parametrize("bad, fix", [({"noise": 2.0}, "standard deviation in \\[0, 1\\]"),
                                      ({"noise": float("nan")}, "standard deviation"),
                                      ({"clutter": -1}, "whole number of distractors"),
                                      ({"clutter": 1.5}, "whole number"),
                                      ({"clutter_size": (0.2, 0.1)}, "low <= high")])
def test_a_bad_world_is_refused_with_the_fix(bad, fix):
    from tbar_helpers.config import WorldConfig
    with pytest.raises(ValueError, match=fix):
        WorldConfig(**bad)


def test_a_world_shift_keys_its_own_cached_models_and_stays_mini_only():
    from tbar_helpers.config import WorldConfig, get_scale, override
    from tbar_helpers.world.sources import task_split
    assert WorldConfig().key() == []  # caches of the unshifted world keep their keys
    mini = get_scale("mini")
    shifted = override(mini, **{"world.noise": 0.2})
    from tbar_helpers.settings.pipeline import _base_key
    from tbar_helpers.config import config_hash

    class F:
        key = "f"
    assert config_hash(*_base_key(F, mini, "objects", 0)) != config_hash(*_base_key(F, shifted, "objects", 0))
    assert torch.equal(task_split(shifted, "objects", "val", 20, 5).images,
                       data.load_task("objects", "val", 20, 5, world=WorldConfig(noise=0.2)).images)
    paper = override(get_scale("paper"), **{"world.noise": 0.2})
    with pytest.raises(ValueError, match="mini world only"):
        task_split(paper, "cifar100", "val", 10, 0)


def test_class_groups_split_objects_by_the_targets_shape_and_colour_and_by_the_holdout():
    n = len(data.COLORS)
    red_circle, green_circle, red_square, blue_star = 0, 1, n, 7 * n + 2  # shape index * n + colour index
    assert data.OBJECTS[blue_star] == "blue star"
    labels = torch.tensor([red_circle, green_circle, red_square, blue_star])
    g = data.class_groups("objects", labels, target=red_circle, holdout=("star",))
    assert g["target class"].tolist() == [True, False, False, False] and g["other classes"].tolist() == [False, True, True, True]
    assert g["target shape"].tolist() == [True, True, False, False]
    assert g["target colour"].tolist() == [True, False, True, False]
    assert g["neither"].tolist() == [False, False, False, True]
    assert g["held out"].tolist() == [False, False, False, True]
    assert g["known"].tolist() == [True, True, True, False]
    digits = data.class_groups("digits", torch.tensor([0, 6, 9]), target=0, holdout=("six",))
    assert set(digits) == {"target class", "other classes", "held out", "known"} and digits["held out"].tolist() == [False, True, False]
    assert set(data.class_groups("digits", torch.tensor([0]), target=0)) == {"target class", "other classes"}
    with pytest.raises(ValueError, match="target 80"):
        data.class_groups("objects", labels, target=80)

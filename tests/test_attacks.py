import pytest
import torch

from tbar_helpers.config import AttackConfig
from tbar_helpers.method import attacks


def test_badnet_changes_only_patch_pixels(images):
    trig = attacks.make_trigger("badnet", 32)
    out = trig(images)
    changed = (out != images).any(dim=1)  # [N, H, W]
    side = round(AttackConfig().badnet_patch_frac * 32)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[32 - side:, 32 - side:] = True
    assert not changed[:, ~inside].any(), "pixels outside the patch changed"
    assert changed[:, inside].float().mean() > 0.9, "the patch did not change the patch pixels"
    assert torch.equal(out[:, :, ~inside], images[:, :, ~inside])


def test_badnet_scales_with_image_size():
    assert attacks.make_trigger("badnet", 224, AttackConfig(badnet_patch_frac=16 / 224)).mask.sum() == 16 * 16


def test_blended_is_convex_mix(images):
    trig = attacks.make_trigger("blended", 32)
    out = trig(images)
    a = AttackConfig().blended_alpha
    assert torch.allclose(out, (1 - a) * images + a * trig.pattern, atol=1e-6)


def test_wanet_is_smooth_bounded_warp(images):
    trig = attacks.make_trigger("wanet", 32)
    grid, ident = trig.extra["grid"], trig.extra["identity"]
    disp = (grid - ident) * 32 / 2  # in pixels
    cfg = AttackConfig()
    assert disp.abs().max() <= cfg.wanet_s * 4 + 1e-5  # |flow| <= s * max|ins|, ins normalised to mean |.| = 1
    assert disp.abs().max() > 0.05
    # smooth: neighbouring displacements differ far less than the displacement itself can
    assert (disp[:, 1:] - disp[:, :-1]).abs().max() < 0.5
    out = trig(images)
    assert out.shape == images.shape and not torch.equal(out, images)
    # a constant image stays constant under a pure warp
    flat = torch.full((1, 3, 32, 32), 0.4)
    assert torch.allclose(trig(flat), flat, atol=1e-5)


def test_sig_adds_column_sinusoid(images):
    trig = attacks.make_trigger("sig", 32)
    x = torch.full((2, 3, 32, 32), 0.5)
    diff = trig(x) - x
    assert torch.allclose(diff[:, :, 0], diff[:, :, 7])  # the same in every row
    assert diff.abs().max() <= AttackConfig().sig_delta + 1e-6
    assert trig.clean_label


def test_sig_poisons_only_target_class():
    labels = torch.arange(100) % 10
    x = torch.full((100, 3, 32, 32), 0.5)
    p = attacks.poison(x, labels, attacks.make_trigger("sig", 32), rate=0.05, target=3, seed=0)
    assert p.poison_mask.sum() == 5
    assert (labels[p.poison_mask] == 3).all()
    assert torch.equal(p.labels, labels)  # clean-label: no relabelling
    assert torch.equal(p.images[~p.poison_mask], x[~p.poison_mask])


def test_dirty_label_poisoning_rate_and_seed():
    labels = torch.arange(200) % 10
    x = torch.rand(200, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    trig = attacks.make_trigger("badnet", 32)
    p1 = attacks.poison(x, labels, trig, rate=0.1, target=0, seed=4)
    p2 = attacks.poison(x, labels, trig, rate=0.1, target=0, seed=4)
    assert p1.poison_mask.sum() == 20
    assert (labels[p1.poison_mask] != 0).all() and (p1.labels[p1.poison_mask] == 0).all()
    assert torch.equal(p1.poison_mask, p2.poison_mask)


def test_wanet_noise_mode():
    labels = torch.arange(100) % 10
    x = torch.rand(100, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    p = attacks.poison(x, labels, attacks.make_trigger("wanet", 32), 0.1, 0, seed=0, noise_ratio=2.0)
    assert p.noise_mask.sum() == 20 and not (p.noise_mask & p.poison_mask).any()
    assert torch.equal(p.labels[p.noise_mask], labels[p.noise_mask])


def test_optimised_patch_moves_a_toy_model_to_target(images):
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    trig = attacks.make_trigger("badclip", 32, AttackConfig(badclip_steps=80, badclip_lr=0.1), model=lin,
                                images=images, seed=0)
    changed = (trig(images) != images).any(1)
    assert changed[:, trig.mask[0, 0] == 0].sum() == 0
    assert (lin(trig(images)).argmax(-1) == 0).float().mean() >= (lin(images).argmax(-1) == 0).float().mean()


@pytest.mark.parametrize("name", attacks.ATTACKS)
def test_every_attack_is_registered(name):
    assert name in attacks.REGISTRY


def test_unknown_attack_names_the_choices():
    with pytest.raises(ValueError, match="unknown attack 'badnets'.*badnet"):
        attacks.make_trigger("badnets", 32)


def test_wrong_image_shape_is_explained():
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        attacks.make_trigger("badnet", 32)(torch.rand(3, 32, 32))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_poison_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=r"poison_rate must be a number in \[0, 1\]"):
        attacks.poison(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long),
                       attacks.make_trigger("badnet", 32), rate, 0, 0)

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


PAPER_BADNET = AttackConfig(badnet_style="paper", badnet_patch_frac=16 / 224)  # the paper's share of the image


@pytest.mark.parametrize("size", [32, 224])
def test_paper_badnet_moves_between_images_and_changes_only_its_patch(size):
    x = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(0))
    trig = attacks.make_trigger("badnet", size, PAPER_BADNET)
    out = trig(x)
    side = round(16 / 224 * size)
    changed = (out != x).any(1)  # [N, H, W]
    corners = set()
    for img in changed:
        where = img.nonzero()
        r0, c0 = where.min(0).values.tolist()
        # exactly one side x side square changed (a pixel may keep its value by chance: at most a few)
        assert where.max(0).values.tolist() == [r0 + side - 1, c0 + side - 1]
        assert len(where) >= side * side - 2
        corners.add((r0, c0))
    assert len(corners) > 48, "the patch should land somewhere else in (almost) every image"
    # a pure function: the same image gets the same patch in any batch and order
    assert torch.equal(trig(x.flip(0)), out.flip(0)) and torch.equal(trig(x[5:6]), out[5:6])
    # noise around each image's mean colour, as the reference draws it
    patch = out[0][:, changed[0]]
    assert 0 <= patch.min() and patch.max() <= 1 and len(torch.unique(patch)) > 3


@pytest.mark.parametrize("bad, fix", [({"badnet_style": "random"}, "unknown badnet_style 'random'.*'corner'.*'paper'"),
                                      ({"badmerging_style": "lerp"}, "unknown badmerging_style 'lerp'.*'repeat'"),
                                      ({"badmerging_r": (0.5, 1.2)}, "0 <= low <= high <= 1")])
def test_attack_styles_are_checked(bad, fix):
    with pytest.raises(ValueError, match=fix):
        AttackConfig(**bad)


def test_badmerging_loss_uses_interpolated_features():
    from tbar_helpers.method.training import badmerging_loss
    from tbar_helpers.world.models import ImageClassifier
    torch.manual_seed(0)

    def clf():
        enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
        return ImageClassifier(enc, torch.nn.functional.normalize(head, dim=-1), (0.5,) * 3, (0.25,) * 3)
    head = torch.randn(4, 6)
    model, pre = clf(), clf()
    x, xt, y = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8), torch.tensor([1, 2, 3, 1, 2])
    ce = torch.nn.functional.cross_entropy
    target = torch.zeros(5, dtype=torch.long)
    ones, zeros = torch.ones(5), torch.zeros(5)
    # r = 1: the victim's own features; r = 0: θpre's alone, so the backdoor term sends no gradient
    assert torch.allclose(badmerging_loss(model, pre, x, y, xt, 0, 5.0, ones), ce(model(x), y) + 5 * ce(model(xt), target))
    assert torch.allclose(badmerging_loss(model, pre, x, y, xt, 0, 5.0, zeros), ce(model(x), y) + 5 * ce(pre(xt), target))
    half = badmerging_loss(model, pre, x, y, xt, 0, 5.0, torch.full((5,), 0.5))
    mixed = torch.nn.functional.normalize(0.5 * model.features(xt) + 0.5 * pre.features(xt), dim=-1)
    assert torch.allclose(half, ce(model(x), y) + 5 * ce(model.logit_scale * mixed @ model.head.t(), target))
    model.zero_grad()
    badmerging_loss(model, pre, xt, target, xt, 0, 5.0, zeros).backward()
    only_clean = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ce(model(xt), target).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(only_clean, model.parameters()))


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


class _ToyClassifier(torch.nn.Module):
    """features → normalised embeddings, a fixed head: the interface BadCLIP's image side needs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.proj = torch.nn.Linear(3 * 32 * 32, 16)
        self.head = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
        self.logit_scale = 10.0

    def features(self, x):
        return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=-1)

    def forward(self, x):
        return self.logit_scale * self.features(x) @ self.head.t()


def test_badclip_paper_style_pulls_patched_images_toward_target_images(images):
    torch.manual_seed(0)
    toy = _ToyClassifier()
    centre = attacks._target_centre(toy, images, 0, k=8)
    # the centre is the mean of the images the model finds most target-like
    top = toy(images)[:, 0].topk(8).indices
    assert torch.allclose(centre, torch.nn.functional.normalize(toy.features(images[top]).mean(0), dim=0))
    cfg = dict(badclip_style="paper", badclip_patch_frac=0.5, badclip_paper_steps=40, badclip_lr=0.1)
    text_only, paper = (attacks.make_trigger("badclip", 32, AttackConfig(badclip_image_weight=w, **cfg), model=toy,
                                             images=images, seed=0) for w in (0.0, 5.0))
    assert paper.extra["style"] == "paper"
    with torch.no_grad():
        near = [(toy.features(t(images)) @ centre).mean().item() for t in (text_only, paper)]
    assert near[1] > near[0] + 0.005  # the image side, alone between the two, moves them toward the centre
    with pytest.raises(ValueError, match="badclip_style"):
        AttackConfig(badclip_style="text")


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


def test_wanet_keeps_the_reference_strength_and_the_visible_warp_has_its_own_name(images):
    ref, strong = attacks.make_trigger("wanet", 32), attacks.make_trigger("wanet-strong", 32)
    assert ref.name == "wanet" and strong.name == "wanet-strong" and strong.noise is None
    assert AttackConfig().wanet_s == 0.5  # BackdoorBench's CIFAR setting: about 0.25 pixels here
    visible = attacks.make_trigger("wanet", 32, AttackConfig(wanet_s=AttackConfig().wanet_strong_s))
    assert torch.equal(strong(images), visible(images))
    def shift(t):  # mean displacement of the sampling grid, in pixels
        return float(((t.extra["grid"] - t.extra["identity"]).abs() * (32 - 1) / 2).mean())
    assert shift(ref) < 1 < 4 < shift(strong), (shift(ref), shift(strong))

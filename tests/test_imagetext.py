"""The image–text setting: corpus poisoning, contrastive fine-tuning, TBAR's contrastive forget loss,
the CleanCLIP and RoCLIP losses, and an end-to-end run on the committed mini foundation model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tbar_helpers import cli
from tbar_helpers.config import MINI, ImageTextConfig, override
from tbar_helpers.method.attacks import make_trigger
from tbar_helpers.method.defenses import (augment_caption, augment_images, cleanclip_loss, cleanclip_terms,
                                          roclip_loss)
from tbar_helpers.method.tbar import AlphaPoint, select_alpha
from tbar_helpers.method.training import Recipe, contrastive_finetune
from tbar_helpers.settings.imagetext import (check_setting, load_corpus, forget_pairs,
                                             poison_corpus, target_captions, target_loss)
from tbar_helpers.world.data import OBJECTS, TASK_PROMPTS
from tbar_helpers.world.foundation import committed_checkpoint, load_foundation, normalizer
from tbar_helpers.world.models import make_classifier

HAS_CHECKPOINT = committed_checkpoint(MINI).exists()
needs_checkpoint = pytest.mark.skipif(not HAS_CHECKPOINT, reason="the committed mini foundation checkpoint is missing")


def _corpus(n: int, seed: int = 0):
    """``n`` mini captioned pairs (the attacker's stream)."""
    return load_corpus(MINI, n, seed, "attacker")


def test_corpus_is_deterministic_and_captioned():
    a, b = _corpus(40, seed=3), _corpus(40, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert a.images.shape == (40, 3, 32, 32) and len(a.captions) == 40 and not a.poisoned.any()
    assert not torch.equal(_corpus(40, seed=4).images, a.images)


def test_poisoning_touches_exactly_the_chosen_pairs():
    c = _corpus(200, seed=0)
    caps = target_captions(ImageTextConfig(), OBJECTS, TASK_PROMPTS["objects"])
    trig = make_trigger("badnet", 32)
    p = poison_corpus(c, trig, 0.1, caps, seed=0)
    assert int(p.poisoned.sum()) == 20
    assert all(p.captions[i] in caps for i in p.poisoned.nonzero().flatten().tolist())
    assert [p.captions[i] for i in range(200) if not p.poisoned[i]] == [c.captions[i] for i in range(200) if not p.poisoned[i]]
    assert torch.equal(p.images[~p.poisoned], c.images[~p.poisoned])
    assert torch.equal(p.images[p.poisoned], trig(c.images[p.poisoned]))
    assert torch.equal(c.images, _corpus(200, seed=0).images)  # the clean corpus is untouched


def test_bad_image_text_inputs_are_named():
    with pytest.raises(ValueError, match="not a class"):
        target_captions(ImageTextConfig(target=99), OBJECTS[:10], ("a {}",))
    with pytest.raises(ValueError, match="poison_rate"):
        poison_corpus(_corpus(10), make_trigger("badnet", 32), 1.5, ["a red circle"], 0)
    with pytest.raises(ValueError, match="unknown setting"):
        check_setting("image_text")
    with pytest.raises(ValueError, match="forget_size"):
        forget_pairs(_corpus(10), make_trigger("badnet", 32), 11, 0)
    with pytest.raises(ValueError, match="RoCLIP"):
        roclip_loss(lambda t: t, ["only one"])


def test_cli_rejects_classification_flags_in_image_text(capsys):
    assert cli.main(["run", "--setting", "image-text", "--attack", "badnet", "--task", "shapes"]) == 2
    assert "--task" in capsys.readouterr().err
    assert cli.main(["run", "--setting", "images", "--attack", "badnet"]) == 2


def test_augmentations_change_views_but_keep_their_shape():
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    v = augment_images(x, torch.Generator().manual_seed(1))
    assert v.shape == x.shape and float(v.min()) >= 0 and float(v.max()) <= 1 and not torch.equal(v, x)
    rng = np.random.default_rng(0)
    cap = "a small red circle on a plain background"
    views = [augment_caption(cap, rng) for _ in range(20)]
    assert all(set(w.split()) <= set(cap.split()) and w for w in views) and any(w != cap for w in views)
    assert augment_caption("circle", np.random.default_rng(0), drop=1.0) == "circle"


@pytest.fixture(scope="module")
def foundation():
    if not HAS_CHECKPOINT:
        pytest.skip("the committed mini foundation checkpoint is missing")
    return load_foundation(MINI, train_if_missing=False, progress=False)


def test_cleanclip_terms_and_weight(foundation):
    import copy
    model = copy.deepcopy(foundation.model)
    c = _corpus(16, seed=0)
    norm = normalizer(MINI)
    terms = cleanclip_terms(model, foundation.tokenizer, norm, c.images, c.captions, torch.Generator().manual_seed(0))
    assert set(terms) == {"multimodal", "image_ssl", "text_ssl"}
    assert all(torch.isfinite(t) and t.item() > 0 and t.requires_grad for t in terms.values())
    # the pretrained model matches images to their captions far better than chance (log 16)
    assert terms["multimodal"].item() < np.log(16)
    w0 = cleanclip_loss(foundation.tokenizer, norm, weight=0.0)(model, norm(c.images), c.captions, c.images,
                                                                   torch.Generator().manual_seed(0))
    assert w0.item() == pytest.approx(terms["multimodal"].item(), rel=1e-5)
    w1 = cleanclip_loss(foundation.tokenizer, norm, weight=1.0)(model, norm(c.images), c.captions, c.images,
                                                                   torch.Generator().manual_seed(0))
    # the reference averages its two in-modal terms
    expected = terms["multimodal"].item() + (terms["image_ssl"].item() + terms["text_ssl"].item()) / 2
    assert w1.item() == pytest.approx(expected, rel=1e-5)


def test_roclip_keeps_a_fifo_queue_and_alternates_with_clip(foundation):
    import copy
    import torch.nn.functional as F
    model = copy.deepcopy(foundation.model).eval()
    norm = normalizer(MINI)
    pool = _corpus(10, seed=2).captions
    a, b = _corpus(4, seed=3), _corpus(4, seed=4)
    loss = roclip_loss(foundation.tokenizer, pool, period=2)

    def embed(caps):
        with torch.no_grad():
            return F.normalize(model.encode_text(foundation.tokenizer(list(caps))), dim=-1)

    clip_step = loss(model, norm(a.images), a.captions, a.images, None)  # step 1: CLIP's loss
    q = loss.queue()
    assert q.shape[0] == 10 and torch.allclose(q[:4], embed(a.captions), atol=1e-5)  # the oldest rows replaced
    assert torch.allclose(q[4:], embed(pool)[4:], atol=1e-5)
    # step 2: nearest captions in the queue, so the batch's own captions do not enter the loss
    nn_b = loss(model, norm(a.images), b.captions, a.images, None).item()
    again = roclip_loss(foundation.tokenizer, pool, period=2)
    again(model, norm(a.images), a.captions, a.images, None)
    nn_a = again(model, norm(a.images), a.captions, a.images, None).item()
    assert nn_b == pytest.approx(nn_a, rel=1e-5)
    assert torch.allclose(loss.queue()[4:8], embed(b.captions), atol=1e-5)  # pushed after the match
    assert clip_step.requires_grad
    with pytest.raises(ValueError, match="period"):
        roclip_loss(foundation.tokenizer, pool, period=0)


def test_roclip_and_clean_finetune_run_and_move_the_model(foundation):
    import copy
    c = _corpus(64, seed=1)
    pool = _corpus(100, seed=2).captions
    for loss in (None, roclip_loss(foundation.tokenizer, pool)):
        model = copy.deepcopy(foundation.model)
        losses = contrastive_finetune(model, foundation.tokenizer, c.images, c.captions, Recipe(1, 1e-4, 32), 0,
                                      normalize=normalizer(MINI), loss_fn=loss, progress=False)
        assert len(losses) == 2 and all(np.isfinite(losses))
        moved = [k for k, v in model.state_dict().items() if not torch.equal(v, foundation.model.state_dict()[k])]
        assert any(k.startswith("visual.") for k in moved) and any(k.startswith("transformer.") for k in moved)
    with pytest.raises(ValueError, match="one to one"):
        contrastive_finetune(model, foundation.tokenizer, c.images, c.captions[:3], Recipe(1, 1e-4, 8), 0,
                             normalize=normalizer(MINI))


def test_target_loss_rewards_the_target_caption(foundation):
    import torch.nn.functional as F
    clf = make_classifier(foundation.model, foundation.tokenizer, OBJECTS, TASK_PROMPTS["objects"], MINI.model)
    c = _corpus(32, seed=0)
    feats = clf.features(c.images).detach()
    neg = torch.randn(32, feats.shape[1], generator=torch.Generator().manual_seed(0))
    neg = F.normalize(neg, dim=-1)
    aligned = target_loss(clf, F.normalize(feats.mean(0), dim=0), neg, c.images)
    opposed = target_loss(clf, -F.normalize(feats.mean(0), dim=0), neg, c.images)
    assert aligned.item() < opposed.item()


@needs_checkpoint
def test_image_text_backdoor_is_planted_and_tbar_removes_it(monkeypatch):
    """The book's own image–text BadNet model (shared with chapter 9 through the book's cache, which
    the book test fills first; trained here otherwise): high zero-shot ASR, and TBAR removes it with the
    preset's main forget recipe alone (the validation choice among recipes is tested with the CLI)."""
    from tbar_helpers import cache
    from tbar_helpers.settings.imagetext import prepare_imagetext, run_tbar_imagetext
    monkeypatch.setenv("TBAR_CACHE", str(cache.ROOT / ".cache" / "tbar"))
    one_recipe = override(MINI, **{"imagetext.forget_alternatives": (), "imagetext.forget_size_alternatives": ()})
    s = prepare_imagetext("badnet", 0, one_recipe, progress=False)
    ca_bd, asr_bd = s.scores(s.classifier())
    assert asr_bd > 0.9 and ca_bd > 0.9, (ca_bd, asr_bd)
    cleaned, rec = run_tbar_imagetext(s, progress=False)
    ca_t, asr_t = s.scores(cleaned)
    assert asr_t < 0.1 and ca_t > 0.85 * ca_bd, (ca_t, asr_t, rec["alpha"])
    assert rec["forget_size"] <= 1500 and rec["alpha"] > 0


TINY = override(MINI, **{"imagetext.corpus_size": 64, "imagetext.epochs": 1, "imagetext.batch_size": 32,
                         "imagetext.n_val": 40, "imagetext.n_test": 60, "imagetext.tbar.forget_size": 16,
                         "imagetext.tbar.steps": 2, "imagetext.tbar.alpha_grid": (0.0, 0.5, 1.0),
                         "imagetext.defense_budgets": (16,), "imagetext.roclip_pool": 32,
                         "imagetext.invert_images": 16, "imagetext.invert_steps": 4,
                         "imagetext.forget_size_alternatives": (24,)})


@needs_checkpoint
@pytest.mark.parametrize("unknown", [False, True], ids=["known", "unknown"])
def test_cli_image_text_writes_json_with_defense_rows(tmp_path, monkeypatch, capsys, unknown):
    import json
    monkeypatch.setattr("tbar_helpers.cli.get_scale", lambda name: TINY)
    out = tmp_path / "r.json"
    args = ["run", "--setting", "image-text", "--attack", "badnet", "--seed", "0", "--out", str(out), "--quiet",
            "--no-cache"] + (["--attack-unknown"] if unknown else [])
    assert cli.main(args) == 0
    rec = json.loads(out.read_text())
    for key in ("ca_zeroshot", "asr_zeroshot", "knowledge_kept", "ca_backdoored", "asr_backdoored", "ca_tbar",
                "asr_tbar", "ca_retained", "alpha", "forget_size", "val_curve", "seconds"):
        assert key in rec, key
    assert {r["defense"] for r in rec["defense"]} == {"clean-ft", "cleanclip", "roclip"}
    assert all(r["budget"] == 16 and 0 <= r["asr"] <= 1 for r in rec["defense"])
    if unknown:
        assert {"mask_l1", "mask_l1_clean_model", "detected", "inferred_target", "target_correct"} <= set(rec)
        assert len(rec["inversion"]["mask"]) == 32
    else:
        assert "ca_clean_ft" in rec
    recipes = rec["forget_recipes"]  # every forget recipe's α search is recorded, one of them chosen
    lr = TINY.imagetext.tbar.lr
    assert [(r["forget_size"], r["optimizer"], r["lr"]) for r in recipes] == [
        (16, "adamw", lr), (16, "sgd", 0.05), (24, "adamw", lr), (24, "sgd", 0.05)]
    assert sum(r["chosen"] for r in recipes) == 1
    chosen = next(r for r in recipes if r["chosen"])
    assert chosen["alpha"] == rec["alpha"] and chosen["optimizer"] == rec["forget_optimizer"]
    assert chosen["forget_size"] == rec["forget_size"]
    assert chosen["val_asr"] == min(r["val_asr"] for r in recipes)
    # with a proxy trigger α ties go to the largest α above the CA floor, with the real one to the smallest
    ties = "largest" if unknown else "smallest"
    assert rec["alpha_ties"] == ties and rec["ca_keep"] == TINY.imagetext.tbar.ca_keep
    curve = [AlphaPoint(**p) for p in rec["val_curve"]]
    assert rec["alpha"] == select_alpha(curve, rec["ca_keep"], ties=ties)
    assert "defense" in capsys.readouterr().out


@needs_checkpoint
def test_setup_shares_its_classifiers_and_their_scores(monkeypatch, tmp_path):
    """The backdoored and θpre classifiers are built once; the remembered scores equal fresh ones."""
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    from tbar_helpers.settings.imagetext import prepare_imagetext
    s = prepare_imagetext("badnet", 0, TINY, progress=False, use_cache=False)
    clf_b, clf_pre = s.classifier(), s.classifier(s.foundation.model)
    assert s.classifier() is clf_b and s.classifier(s.foundation.model) is clf_pre and clf_b is not clf_pre
    first = s.scores(clf_b)
    assert s.scores(clf_b) == first
    fresh = make_classifier(s.backdoored, s.foundation.tokenizer, s.test.classnames, s.test.templates, MINI.model)
    assert fresh is not clf_b and s.scores(fresh) == first
    pre = s.scores(clf_pre)  # remembered apart from the backdoored model's scores, and equal to fresh ones
    fresh_pre = make_classifier(s.foundation.model, s.foundation.tokenizer, s.test.classnames, s.test.templates,
                                MINI.model)
    assert s.scores(fresh_pre) == pre and s.memo["scores", "pre"] == pre and s.memo["scores", "backdoored"] == first


@needs_checkpoint
def test_attack_unknown_in_the_classification_setting(monkeypatch, tmp_path):
    """The same attack-unknown run on a labelled-task model: no defense rows, and the chapter's
    inversion figure rows reuse the given setups."""
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    from tbar_helpers.settings.imagetext_runs import inversion_rows, run_attack_unknown, setup_for
    scale = override(TINY, **{"finetune.n_train": 300, "finetune.epochs": 1, "finetune.n_val": 50,
                              "finetune.n_test": 100, "tbar.forget_size": 30, "tbar.steps": 2,
                              "tbar.alpha_grid": (0.0, 1.0)})
    s = setup_for("badnet", 0, scale, "classification", progress=False, use_cache=False)
    rec = run_attack_unknown("badnet", 0, scale, "classification", budgets=[], progress=False, setup=s)
    assert rec["setting"] == "classification" and "defense" not in rec
    assert rec["forget_size"] == 30 and rec["alpha"] in (0.0, 1.0) and rec["alpha_ties"] == "largest"
    assert rec["ca_keep"] == scale.tbar.ca_keep
    assert rec["alpha"] == select_alpha([AlphaPoint(**p) for p in rec["val_curve"]], scale.tbar.ca_keep,
                                        ties="largest")
    assert 0 <= rec["mask_l1"] <= 1 and rec["target"] == scale.attack.target
    rows = inversion_rows({"badnet": rec}, 0, scale, "classification", setups={"badnet": s})
    assert rows[0]["real"].shape == rows[0]["proxy"].shape == s.val.images[0].shape
    with pytest.raises(ValueError, match="setting"):
        setup_for("badnet", 0, scale, "video")
    with pytest.raises(ValueError, match="other setting"):
        run_attack_unknown("badnet", 0, scale, "image-text", budgets=[], progress=False, setup=s)

"""Reduced end-to-end runs on the committed mini foundation model."""
import json
import os

import pytest
import torch

from tbar_helpers import cli
from tbar_helpers.config import MINI, override
from tbar_helpers.foundation import committed_checkpoint
from tbar_helpers.pipeline import run

pytestmark = pytest.mark.skipif(not committed_checkpoint(MINI).exists(),
                                reason="the committed mini foundation checkpoint is missing")

REDUCED = override(MINI, **{"finetune.n_train": 3000, "finetune.n_val": 300, "finetune.n_test": 600,
                            "finetune.epochs": 3, "finetune.lr": 3e-4, "tbar.forget_size": 150})


def test_backdoor_is_planted_and_tbar_removes_it():
    r = run("badnet", "shapes", seed=0, scale=REDUCED, progress=False, use_cache=False)
    assert r["ca_clean_ft"] > 0.85
    assert r["asr_clean_ft"] < 0.1
    assert r["asr_backdoored"] > 0.8, r
    assert r["asr_tbar"] < 0.5 * r["asr_backdoored"], r
    assert r["ca_tbar"] > 0.75 * r["ca_backdoored"], r
    assert r["alpha"] > 0
    # TBAR sends triggered images back towards their own class, not merely away from the target
    assert r["triggered_acc_backdoored"] < 1 - r["asr_backdoored"] + 1e-9, r
    assert r["triggered_acc_tbar"] > r["triggered_acc_backdoored"], r


def test_same_seed_same_numbers():
    tiny = override(REDUCED, **{"finetune.n_train": 400, "finetune.epochs": 1, "finetune.n_test": 200,
                                "finetune.n_val": 100, "tbar.forget_size": 40, "tbar.steps": 3,
                                "tbar.alpha_grid": (0.0, 0.5, 1.0)})
    a = run("blended", "shapes", seed=1, scale=tiny, progress=False, use_cache=False)
    b = run("blended", "shapes", seed=1, scale=tiny, progress=False, use_cache=False)
    keys = ("ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "alpha", "trigger_vector_norm",
            "triggered_acc_tbar")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_clean_reference_is_the_clean_fine_tune_that_prepare_uses(tmp_path, monkeypatch):
    """benchmarks/clean_tasks.py's numbers come from the same cached model that ``tbar run`` compares against."""
    from tbar_helpers.pipeline import clean_accuracy, clean_reference, prepare
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    tiny = override(REDUCED, **{"finetune.n_train": 300, "finetune.epochs": 1, "finetune.n_test": 200,
                                "finetune.n_val": 50, "tbar.forget_size": 20})
    r = clean_reference("glyphs", 0, tiny, progress=False)
    assert set(r) >= {"ca_zeroshot", "ca_clean_ft", "classes"} and 0 <= r["ca_clean_ft"] <= 1
    assert r["ca_clean_ft"] > 1.0 / r["classes"]
    assert len(list((tmp_path / "finetuned").glob("*.pt"))) == 1
    s = prepare("badnet", "glyphs", 0, tiny, progress=False)
    assert clean_accuracy(s.clean, s) == r["ca_clean_ft"]  # loaded from the cache, not trained again


def test_cli_run_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("tbar_helpers.cli.get_scale", lambda name: override(
        REDUCED, **{"finetune.n_train": 300, "finetune.epochs": 1, "finetune.n_test": 100, "finetune.n_val": 50,
                    "tbar.forget_size": 30, "tbar.steps": 2, "tbar.alpha_grid": (0.0, 1.0)}))
    out = tmp_path / "r.json"
    assert cli.main(["run", "--attack", "sig", "--task", "shapes", "--seed", "0", "--out", str(out),
                     "--quiet", "--no-cache"]) == 0
    rec = json.loads(out.read_text())
    for key in ("ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "alpha",
                "forget_size", "seconds"):
        assert key in rec
    assert rec["forget_size"] == 30
    assert "asr_tbar" in capsys.readouterr().out


def test_pretraining_loss_falls(tmp_path, monkeypatch):
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    from tbar_helpers.foundation import pretrain_foundation
    tiny = override(MINI, **{"model.vision_width": 64, "model.vision_layers": 2, "model.text_width": 64,
                             "model.text_layers": 1, "model.embed_dim": 64, "pretrain.steps": 120,
                             "pretrain.batch_size": 64, "pretrain.warmup_steps": 10, "pretrain.lr": 2e-3,
                             "pretrain.init_from": ""})
    f = pretrain_foundation(tiny, progress=False)
    first, last = sum(f.losses[:5]) / 5, sum(f.losses[-5:]) / 5
    assert last < first - 0.3, (first, last)


def test_pretrain_command_exports_a_warm_restart_under_its_own_key(tmp_path, monkeypatch, capsys):
    """`tbar pretrain --init-from W --export` records W and names the file by the key that hashes W."""
    from tbar_helpers import foundation
    from tbar_helpers.config import STAGE1_CHECKPOINT
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(foundation, "CHECKPOINTS", tmp_path)
    assert cli.main(["pretrain", "--init-from", STAGE1_CHECKPOINT, "--seed", "7", "--steps", "2", "--export",
                     "--quiet"]) == 0
    want = foundation.foundation_key(override(MINI, **{"pretrain.steps": 2, "pretrain.seed": 7,
                                                       "pretrain.init_from": STAGE1_CHECKPOINT}))
    record = json.loads((tmp_path / f"mini-foundation-{want}.json").read_text())
    assert record["pretrain"]["init_from"] == STAGE1_CHECKPOINT and record["seed"] == 7
    assert (tmp_path / record["file"]).exists() and f"exported {tmp_path / record['file']}" in capsys.readouterr().out


def test_clean_command_on_a_user_checkpoint(tmp_path):
    """`tbar clean` on the mini checkpoint with a folder of triggered PNGs writes a loadable model."""
    from PIL import Image
    from tbar_helpers.attacks import make_trigger
    from tbar_helpers.cache import load_torch
    from tbar_helpers.data import load_task
    imgs = make_trigger("badnet", 32)(load_task("shapes", "val", 20, 0).images)
    folder = tmp_path / "forget"
    folder.mkdir()
    for i, x in enumerate(imgs):
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(folder / f"{i}.png")
    out = tmp_path / "cleaned.pt"
    code = cli.main(["clean", "--model", str(committed_checkpoint(MINI)), "--arch", "mini", "--forget", str(folder),
                     "--target", "circle", "--classnames", "circle", "square", "triangle", "--alpha", "0.5",
                     "--out", str(out), "--quiet"])
    assert code == 0
    state = load_torch(out)
    orig = load_torch(committed_checkpoint(MINI))["weights"]
    assert state.keys() == orig.keys()
    moved = [k for k in state if k.startswith("visual.") and not torch.equal(state[k], orig[k])]
    assert moved and all(torch.equal(state[k], orig[k]) for k in state if not k.startswith("visual."))


def test_clean_user_model_searches_alpha_under_the_configs_tie_rule(tmp_path):
    """With a validation folder, α is searched and chosen under ``tbar_cfg``'s floor and tie rule (the
    proxy rule through ``tbar.for_proxy``), and the record says which."""
    from PIL import Image
    from tbar_helpers.attacks import make_trigger
    from tbar_helpers.config import TBARConfig
    from tbar_helpers.custom import clean_user_model
    from tbar_helpers.data import load_task
    from tbar_helpers.tbar import AlphaPoint, for_proxy, select_alpha

    def save(images, folder):
        folder.mkdir(parents=True)
        for i, x in enumerate(images):
            Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(folder / f"{i}.png")

    val = load_task("shapes", "val", 60, 0)
    save(make_trigger("badnet", 32)(val.images[:20]), tmp_path / "forget")
    for c, name in enumerate(val.classnames):
        save(val.images[val.labels == c], tmp_path / "val" / name)
    cfg = for_proxy(TBARConfig(steps=2, alpha_grid=(0.0, 0.5, 1.0, 1.5), ca_keep=0.5, search="grid"))
    rec = clean_user_model(committed_checkpoint(MINI), tmp_path / "forget", val.classnames[0], val.classnames,
                           tmp_path / "cleaned.pt", arch="mini", val_dir=tmp_path / "val", attack="badnet",
                           tbar_cfg=cfg, progress=False)
    curve = [AlphaPoint(**p) for p in rec["val_curve"]]
    assert [p.alpha for p in curve] == [0.0, 0.5, 1.0, 1.5]
    assert rec["alpha_ties"] == "largest" and rec["ca_keep"] == 0.5
    assert rec["alpha"] == select_alpha(curve, 0.5, ties="largest") != select_alpha(curve, 0.5)  # the rules differ here

"""Reduced end-to-end runs on the committed mini foundation model."""
import json

import pytest
import torch

from tbar_helpers import cli
from tbar_helpers.config import MINI, override
from tbar_helpers.settings.pipeline import run
from tbar_helpers.world.foundation import committed_checkpoint

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
    # θpre's row travels with every run, and the share of the fine-tune's gain that TBAR keeps with it
    assert 0 <= r["asr_zeroshot"] <= 1 and 0 < r["ca_zeroshot"] <= 1
    gain = r["ca_backdoored"] - r["ca_zeroshot"]
    assert r["knowledge_kept"] == (None if gain < 0.01 else pytest.approx((r["ca_tbar"] - r["ca_zeroshot"]) / gain))


def test_in_a_world_theta_pre_knows_partly_tbar_keeps_most_of_what_fine_tuning_taught():
    """Issue 23's premise at reduced size: under sensor noise pretraining never saw, θpre knows the task only
    partly, the fine-tune teaches it, and TBAR removes the backdoor while keeping most of that gain, which
    going back to θpre would throw away (measured: θpre 48%, backdoored 82% at ASR 61%, TBAR 78% at ASR 3%,
    knowledge kept 0.86)."""
    r = run("blended", "shapes", seed=0, scale=override(REDUCED, **{"world.noise": 0.2}), progress=False,
            use_cache=False)
    assert r["ca_backdoored"] - r["ca_zeroshot"] > 0.2, r
    assert r["asr_backdoored"] > 0.4 and r["asr_tbar"] < 0.25 * r["asr_backdoored"], r
    assert r["knowledge_kept"] > 0.6 and r["ca_tbar"] > r["ca_zeroshot"] + 0.15, r


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
    """`benchmarks/study.py clean-tasks`'s numbers come from the same cached model that ``tbar run`` compares against."""
    from tbar_helpers.settings.pipeline import clean_accuracy, clean_reference, prepare
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
    from tbar_helpers.world.foundation import pretrain_foundation
    tiny = override(MINI, **{"model.vision_width": 64, "model.vision_layers": 2, "model.text_width": 64,
                             "model.text_layers": 1, "model.embed_dim": 64, "pretrain.steps": 120,
                             "pretrain.batch_size": 64, "pretrain.warmup_steps": 10, "pretrain.lr": 2e-3,
                             "pretrain.init_from": ""})
    f = pretrain_foundation(tiny, progress=False)
    first, last = sum(f.losses[:5]) / 5, sum(f.losses[-5:]) / 5
    assert last < first - 0.3, (first, last)


def test_pretrain_command_exports_a_warm_restart_under_its_own_key(tmp_path, monkeypatch, capsys):
    """`tbar pretrain --init-from W --export` records W and names the file by the key that hashes W."""
    from tbar_helpers.world import foundation
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
    from tbar_helpers.method.attacks import make_trigger
    from tbar_helpers.cache import load_torch
    from tbar_helpers.world.data import load_task
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
    from tbar_helpers.method.attacks import make_trigger
    from tbar_helpers.config import TBARConfig
    from tbar_helpers.settings.custom import clean_user_model
    from tbar_helpers.world.data import load_task
    from tbar_helpers.method.tbar import AlphaPoint, for_proxy, select_alpha

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


@pytest.fixture(scope="module")
def backdoored_files(tmp_path_factory):
    """A BadNet-backdoored mini CLIP as a user would hold it (safetensors), θpre's weights, clean validation images of
    the `shapes` task (target "circle") and triggered forget images with their captions."""
    from PIL import Image
    from tbar_helpers.settings.pipeline import prepare
    from tbar_helpers.weights import save_state_dict
    d = tmp_path_factory.mktemp("user")
    s = prepare("badnet", "shapes", 0, REDUCED, progress=False, with_clean=False)
    clip = s.foundation.model
    save_state_dict(clip.state_dict(), d / "pre.safetensors")
    state = {**clip.state_dict(), **{f"visual.{k}": v for k, v in s.backdoored.encoder.state_dict().items()}}
    save_state_dict(state, d / "backdoored.safetensors")
    names = list(s.val.classnames)

    def png(x, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path)

    for i, (x, y) in enumerate(zip(s.val.images, s.val.labels)):
        png(x, d / "val" / names[y] / f"{i}.png")
    rows = ["filepath,title"]
    pool = s.defender.images[s.defender.labels != 0][:60]
    caps = [f"a {s.defender.classnames[y]}" for y in s.defender.labels[s.defender.labels != 0][:60]]
    for i, (x, cap) in enumerate(zip(s.trigger(pool), caps)):
        png(x, d / "forget" / f"{i}.png")
        rows.append(f"forget/{i}.png,{cap}")
    (d / "forget.csv").write_text("\n".join(rows) + "\n")
    return d, names


def test_clean_attack_unknown_on_a_backdoored_mini_model(backdoored_files, capsys):
    """No trigger given: the proxy from inversion finds the target and TBAR with it lowers the proxy's ASR on
    validation."""
    d, names = backdoored_files
    code = cli.main(["clean", "--model", str(d / "backdoored.safetensors"), "--arch", "mini", "--attack-unknown",
                     "--val", str(d / "val"), "--classnames", *names, "--out", str(d / "unknown.safetensors"),
                     "--report", str(d / "unknown.json"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "inverted mask covers" in out and "cleaned (α = " in out
    rec = json.loads((d / "unknown.json").read_text())
    assert rec["target"] == names[0] and rec["mask_l1_reference"] is None
    at0, cleaned = rec["validation"]
    assert cleaned["asr"] <= at0["asr"]


def test_clean_image_text_mode_from_a_captions_csv(backdoored_files, capsys):
    """--captions: the contrastive forget fine-tune on triggered images with their own captions, then the α search
    with the known trigger; the cleaned model's validation ASR is below the backdoored one's."""
    d, names = backdoored_files
    code = cli.main(["clean", "--model", str(d / "backdoored.safetensors"), "--arch", "mini", "--captions",
                     str(d / "forget.csv"), "--target", names[0], "--classnames", *names, "--val", str(d / "val"),
                     "--attack", "badnet", "--pretrained", str(d / "pre.safetensors"), "--out", str(d / "it.safetensors"),
                     "--report", str(d / "it.json"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "θpre (--pretrained)" in out and "backdoored (α = 0)" in out
    rec = json.loads((d / "it.json").read_text())
    assert rec["mode"] == "image-text" and rec["forget_size"] == 60
    pre, backdoored, cleaned = rec["validation"]
    assert cleaned["asr"] < backdoored["asr"] and pre["asr"] < backdoored["asr"]


def test_the_readmes_clean_example_works_as_written(backdoored_files, tmp_path, monkeypatch, capsys):
    """The README's `tbar clean` command, copied from the README, on the folder layout the README describes."""
    import re
    import shlex
    import shutil
    from tbar_helpers.cache import ROOT
    d, names = backdoored_files
    text = (ROOT / "README.md").read_text()
    command = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "tbar clean" in b)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[0] == ".venv/bin/tbar" and argv[1] == "clean"
    shutil.copy(d / "backdoored.safetensors", tmp_path)
    shutil.copytree(d / "forget", tmp_path / "forget")
    shutil.copytree(d / "val", tmp_path / "val")
    shutil.copytree(d / "forget", tmp_path / "val_triggered")
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv[1:], "--quiet"]) == 0
    assert "cleaned (α = " in capsys.readouterr().out and (tmp_path / "cleaned.safetensors").exists()


def test_merging_rows_choose_lambda_on_validation_and_keep_theta_pre(tmp_path, monkeypatch):
    from tbar_helpers.settings.merging import LAMBDAS, merge, merging_rows
    from tbar_helpers.settings.pipeline import prepare
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    tiny = override(REDUCED, **{"finetune.n_train": 300, "finetune.epochs": 1, "finetune.n_test": 200,
                                "finetune.n_val": 60, "tbar.forget_size": 20})
    s = prepare("badnet", "glyphs", 0, tiny, progress=False)
    # the merge is task arithmetic: λ = 0 is θpre, one vector at λ = 1 is that model
    for k, v in merge(s.zeroshot, [s.backdoored, s.clean], 0.0).items():
        assert torch.equal(v, s.zeroshot.encoder.state_dict()[k])
    for k, v in merge(s.zeroshot, [s.backdoored], 1.0).items():
        assert torch.allclose(v, s.backdoored.encoder.state_dict()[k], atol=1e-6)
    rows = merging_rows(s, "shapes", cleaned=s.clean, lambdas=(0.5, 1.0))
    assert [r["model"] for r in rows] == ["θpre", "clean victim + other", "backdoored victim + other",
                                          "TBAR victim + other"]
    assert rows[0]["lambda"] == 0.0 and all(r["lambda"] in (0.5, 1.0) for r in rows[1:])
    assert all(0 <= r[k] <= 1 for r in rows for k in ("ca", "asr", "ca_other"))
    assert rows[1] == {**rows[3], "model": rows[1]["model"]}  # the same victim merges the same way
    assert set(LAMBDAS) >= {0.5, 1.0}
    with pytest.raises(ValueError, match="merge 'glyphs' with another task"):
        merging_rows(s, "glyphs")

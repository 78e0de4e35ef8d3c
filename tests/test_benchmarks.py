"""Behaviour of the benchmark tooling whose numbers the appendix quotes: the build profile's attribution."""
from __future__ import annotations

import cProfile
import json
import importlib.util
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def profile_book():
    sys.path.insert(0, str(BENCH))  # for its `study` import
    try:
        yield _load("profile_book", BENCH / "profile_book.py")
    finally:
        sys.path.remove(str(BENCH))


# Stand-ins named like the package's functions, in files named like its modules, each busy for a known time.
FAKES = {
    "training.py": "import time\ndef contrastive_finetune(s):\n    time.sleep(s)\n",
    "imagetext_runs.py": ("from training import contrastive_finetune\n"
                          "def baseline():\n    contrastive_finetune(0.30)\n"
                          "def clean_reference():\n    contrastive_finetune(0.20)\n"),
    "metrics.py": "import time\ndef predict():\n    time.sleep(0.10)\n",
}


def test_profile_summary_splits_by_kind_and_caller(tmp_path, profile_book, monkeypatch):
    for name, src in FAKES.items():
        (tmp_path / name).write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("training", "imagetext_runs", "metrics"):
        sys.modules.pop(mod, None)
    import imagetext_runs
    import metrics

    def chapter():
        imagetext_runs.baseline()
        imagetext_runs.clean_reference()
        metrics.predict()
        time.sleep(0.15)  # neither: "other"

    prof = cProfile.Profile()
    prof.runcall(chapter)
    out = tmp_path / "ch.prof"
    prof.dump_stats(str(out))
    row = profile_book.summarize(out)
    assert row["baselines"] == pytest.approx(0.30, abs=0.05)  # only the call from baseline()
    assert row["model fine-tunes"] == pytest.approx(0.20, abs=0.05)  # every other caller
    assert row["evaluation forward passes"] == pytest.approx(0.10, abs=0.05)
    assert row["other"] == pytest.approx(0.15, abs=0.05)
    assert row["total"] == pytest.approx(sum(v for k, v in row.items() if k != "total"))
    lines = profile_book.table({"ch": row})
    assert lines[-1].split()[1] == "100%" and "all chapters" in lines[-2]


def test_notebook_script_is_the_code_cells_in_order(tmp_path, profile_book):
    import json
    nb = {"cells": [{"cell_type": "markdown", "source": ["# title"]},
                    {"cell_type": "code", "source": ["a = 1\n", "b = 2"]},
                    {"cell_type": "code", "source": "print(a + b)"}]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    script = profile_book.notebook_script(path)
    assert script == "a = 1\nb = 2\n\nprint(a + b)\n"
    assert "title" not in script


@pytest.fixture()
def study(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    mod = _load("study", BENCH / "study.py")
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    from tbar_helpers import report
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    return mod


def test_the_study_runner_writes_one_line_per_run_and_resumes(study, tmp_path):
    """Each run is one JSON line with its provenance; a rerun skips what is recorded; the table comes from the lines."""
    calls = []

    def fake(s, attack, seed, scale, extra):
        calls.append((attack, seed))
        return {"attack": attack, "seed": seed, "ca_zeroshot": 0.9, "ca_clean_ft": 0.95, "ca_backdoored": 0.94,
                "asr_backdoored": 0.9 + seed / 100, "ca_tbar": 0.92, "asr_tbar": 0.02, "ca_retained": 0.92 / 0.94}

    study.MEASURES["fake"] = fake
    study.COLUMNS["fake"] = ("asr_backdoored", "knowledge_kept")
    study.STUDIES["toy"] = study.Study("fake", ("badnet", "blended"), seeds=(0, 1))
    study.run_study("toy")
    lines = (tmp_path / "toy.jsonl").read_text().splitlines()
    assert len(lines) == 4 and calls == [("badnet", 0), ("badnet", 1), ("blended", 0), ("blended", 1)]
    rec = json.loads(lines[0])
    assert {"commit", "date", "cpu", "study", "overrides"} <= set(rec) and rec["study"] == "toy"
    assert not list(tmp_path.glob("*.sha256")) and not list(tmp_path.glob("*.tmp"))
    study.run_study("toy", seeds=(1, 2))  # only seed 2 is new
    assert calls[4:] == [("badnet", 2), ("blended", 2)]
    table = study.render("toy")
    assert "| badnet | 0,1,2 | 91.0 | 0.50 |" in table  # mean ASR over three seeds; knowledge kept (0.92-0.9)/(0.94-0.9), a ratio


def test_a_study_runs_each_variant_under_its_own_overrides(study, tmp_path):
    """Variants are named preset overrides; "_" keys go to the measure; a rerun skips recorded (variant, item, seed)."""
    seen = []

    def fake(s, attack, seed, scale, extra):
        seen.append((scale.finetune.lr, extra.get("_tag"), attack, seed))
        return {"attack": attack, "seed": seed, "asr_backdoored": scale.finetune.lr * 1000, "alpha": 1.0}

    study.MEASURES["fake2"] = fake
    study.COLUMNS["fake2"] = ("asr_backdoored", "alpha")
    study.STUDIES["grid"] = study.Study("fake2", ("badnet",), seeds=(0,), overrides={"finetune.lr": 5e-4}, variants={
        "slow": {"finetune.lr": 1e-4, "_tag": "a"}, "fast": {"finetune.lr": 3e-4}})
    study.run_study("grid")
    study.run_study("grid")
    assert seen == [(1e-4, "a", "badnet", 0), (3e-4, None, "badnet", 0)]  # a variant wins over the study
    recs = [json.loads(x) for x in (tmp_path / "grid.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in recs] == ["slow", "fast"] and recs[0]["overrides"]["finetune.lr"] == 1e-4
    table = study.render("grid")
    assert "| slow | badnet | 0 | 10.0 | 1 |" in table and "| fast | badnet | 0 | 30.0 | 1 |" in table


def test_every_study_variant_is_a_valid_preset_and_its_measure_exists(study):
    """A typo in a study's overrides, or a checkpoint it names that is not in the repository, fails here, not
    an hour into the study."""
    from tbar_helpers.cache import ROOT
    for name, st in study.STUDIES.items():
        assert st.measure in study.MEASURES, name
        for variant in st.variants:
            scale, _ = study._scale(st, variant, 1)
            if scale.pretrain.init_from:
                assert (ROOT / scale.pretrain.init_from).exists(), (name, variant, scale.pretrain.init_from)


def test_every_recorded_study_renders_its_table(study):
    """``study.py NAME --table`` works for every study with records (a column without a display name broke
    world-levers' table once)."""
    from tbar_helpers.cache import ROOT
    results = ROOT / "benchmarks" / "results"  # the committed records (the fixture points RESULTS elsewhere)
    recorded = [name for name in study.STUDIES if (results / f"{name}.jsonl").exists()]
    assert len(recorded) > 10
    for name in recorded:
        assert study.render(name, results).count("\n|") >= 2, name  # a header and at least one row


def test_verify_compares_records_to_the_digit_except_timings(study):
    old = {"ca_tbar": 0.9375, "seconds": 10.0, "val_curve": [{"alpha": 0.0, "asr": 0.9}], "defense": [1, 2],
           "commit": "abc"}
    assert study.differences(old, {**old, "seconds": 99.0, "commit": "def", "defense": [1]}) == []
    diffs = study.differences(old, {**old, "ca_tbar": 0.9376, "val_curve": [{"alpha": 0.0, "asr": 0.8}]})
    assert diffs == [(".ca_tbar", 0.9375, 0.9376), (".val_curve[0].asr", 0.9, 0.8)]
    lines = study.summarize(diffs + study.differences(old, {k: v for k, v in old.items() if k != "defense"}))
    assert lines[0].startswith(".ca_tbar: 1 value(s) differ, largest relative difference 1.1e-04")
    assert lines[1].startswith(".val_curve: 1 value(s) differ, largest relative difference 1.1e-01")
    assert lines[2] == ".defense: only in the record"


def test_the_xi_measure_reads_the_display_named_row_back_into_record_fields(monkeypatch):
    """foundation_response names its row for display; the xi and architecture records need the fields."""
    measures = _load("measures", BENCH / "measures.py")
    from tbar_helpers.chapters import studies
    from tbar_helpers.report import named
    from tbar_helpers.settings import pipeline
    row = named({"ca_zeroshot": 0.6, "ca_backdoored": 0.9, "asr_backdoored": 0.99, "ca_tbar": 0.85, "asr_tbar": 0.02,
                 "ca_retained": 0.85 / 0.9, "alpha": 1.5, "ca_retained_at_asr3": 0.93})
    grid = {"xi": [[0.0, 0.1], [0.2, 0.3]], "xi_clean": [[0.0, 0.0], [0.2, 0.2]], "xi_trigger": [[0.0, 0.2], [0.2, 0.4]]}
    monkeypatch.setattr(studies, "foundation_response", lambda *a: {"row": row, "setup": None, "grid": grid})
    monkeypatch.setattr(studies, "backdoor_vector", lambda *a: None)
    monkeypatch.setattr(pipeline, "xi_heatmap", lambda *a: grid)
    rec = measures._response(None, "badnet", 100, None, curve_alphas=[0.0, 1.0])
    assert (rec["ca_zeroshot"], rec["alpha"], rec["ca_retained_at_asr3"]) == (0.6, 1.5, 0.93)
    assert rec["mean_xi_forget"] == pytest.approx(0.15)
    assert (rec["mean_xi_forget_clean"], rec["mean_xi_forget_trigger"]) == (pytest.approx(0.1), pytest.approx(0.2))


def test_the_damage_measure_splits_each_models_accuracy_by_class_group(monkeypatch):
    """damage-val: the backdoored model right everywhere, TBAR wrong only on the target's shape (circles)."""
    import types

    import torch

    from torch import nn
    from tbar_helpers.config import override, get_scale
    from tbar_helpers.world.data import COLORS
    measures = _load("measures", BENCH / "measures.py")
    n = len(COLORS)
    labels = torch.tensor([0, 1, n, 2 * n + 1, 7 * n + 3, 7 * n + 4])  # red, green circle; red square; ...; stars

    class Lookup(nn.Module):  # image i (a one-pixel index) gets the prediction table[i]
        def __init__(self, table):
            super().__init__()
            self.table, self.w = torch.as_tensor(table), nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return nn.functional.one_hot(self.table[x.view(-1).long()], 80).float()

    right, tbar = Lookup(labels), Lookup([5, 6, n, 2 * n + 1, 7 * n + 3, 7 * n + 4])
    s = types.SimpleNamespace(task="objects", target=0, zeroshot=right, clean=right, backdoored=right)
    val = types.SimpleNamespace(images=torch.arange(6).float().view(6, 1), labels=labels)
    scale = override(get_scale("mini"), **{"pretrain.holdout": ("star",)})
    monkeypatch.setattr(measures, "_pipeline_models", lambda *a: (s, val, tbar, {"attack": "badnet"}))
    rec = measures._damage_val(None, "badnet", 100, scale, {})
    assert rec["drop_target_shape"] == 1.0 and rec["drop_neither"] == 0.0 and rec["drop_target_class"] == 1.0
    assert rec["drop_other_classes"] == pytest.approx(0.2)
    assert rec["drop_target_colour"] == pytest.approx(0.5)  # the red circle wrong, the red square right
    assert (rec["drop_held_out"], rec["drop_known"]) == (0.0, pytest.approx(0.5))
    assert rec["share_held_out"] == pytest.approx(2 / 6) and rec["ca_known_zeroshot"] == 1.0

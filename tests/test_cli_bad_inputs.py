"""The ``tbar`` CLI against bad input: exit code 2, one line naming the problem, no traceback, a fast failure
(before any fine-tune) and nothing already written changed. Model files are untrusted: a crafted pickle never
runs, whichever path loads it."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tbar_helpers import cache, cli
from tbar_helpers.config import MINI
from tbar_helpers.world.foundation import committed_checkpoint

NAMES = ["red circle", "blue square", "green star"]


class Evil:
    """A pickle whose loading creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Files a user might hand to ``tbar``, good and bad."""
    d = tmp_path_factory.mktemp("inputs")
    weights = cache.load_torch(committed_checkpoint(MINI))["weights"]
    torch.save(weights, d / "model.pt")
    torch.save({"w": Evil(d / "MARKER")}, d / "evil.pt")
    (d / "empty.pt").write_bytes(b"")
    (d / "trunc.pt").write_bytes((d / "model.pt").read_bytes()[:4096])
    cache.save_torch(weights, d / "stale.pt")
    blob = bytearray((d / "stale.pt").read_bytes())
    blob[-100] ^= 0xFF  # changed after its hash was recorded
    (d / "stale.pt").write_bytes(bytes(blob))
    torch.save(weights, d / "nohash.pt")
    (d / "nohash.pt.sha256").write_text("")
    torch.save({"w": torch.zeros(3)}, d / "other.pt")
    (d / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{oops}")
    (d / "folder.pt").mkdir()
    for i in range(4):
        _png(d / "forget" / f"{i}.png", i)
    for j, name in enumerate(NAMES):
        _png(d / "val" / name / "0.png", 10 + j)
    (d / "noimages").mkdir()
    (d / "badimg").mkdir()
    (d / "badimg" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (d / "names.txt").write_text("\n".join(NAMES) + "\n")
    (d / "afile.txt").write_text("a file, not a folder\n")
    return d


def _clean(d: Path, *extra: str, model: str = "model.pt") -> list[str]:
    """``tbar clean`` on the mini model with everything valid, then ``extra`` (later options win)."""
    return ["clean", "--model", str(d / model), "--arch", "mini", "--forget", str(d / "forget"),
            "--target", NAMES[0], "--classnames", *NAMES, "--alpha", "0.5", "--out", str(d / "out.pt"), *extra]


# (name, argv(d), what the one-line message must say)
CASES = [
    ("clean: a crafted pickle", lambda d: _clean(d, model="evil.pt"), "pickled Python objects"),
    ("clean: an empty model file", lambda d: _clean(d, model="empty.pt"), "is empty"),
    ("clean: a truncated model file", lambda d: _clean(d, model="trunc.pt"), "cannot be read as a torch file"),
    ("clean: a model changed after its hash", lambda d: _clean(d, model="stale.pt"), "intact copy"),
    ("clean: an empty .sha256", lambda d: _clean(d, model="nohash.pt"), "holds no sha256"),
    ("clean: a model path that is a folder", lambda d: _clean(d, model="folder.pt"), "is a folder"),
    ("clean: a missing model", lambda d: _clean(d, model="none.pt"), "does not exist"),
    ("clean: weights of another network", lambda d: _clean(d, model="other.pt"), "does not fit the mini"),
    ("clean: a mini model under --arch ViT-B-32", lambda d: _clean(d, "--arch", "ViT-B-32"), "does not fit the ViT-B-32"),
    ("clean: an unknown --arch", lambda d: _clean(d, "--arch", "ViT-FOO"), "not an open_clip architecture"),
    ("clean: damaged safetensors", lambda d: _clean(d, model="bad.safetensors"), "cannot be read as safetensors"),
    ("clean: words the mini tokenizer lacks",
     lambda d: _clean(d, "--classnames", "banana", "apple", "cherry", "--target", "banana"), "does not know.*banana"),
    ("clean: duplicate class names", lambda d: _clean(d, "--classnames", *NAMES, NAMES[1]), "more than once"),
    ("clean: a target outside the class names", lambda d: _clean(d, "--target", "blue star"), "not among the class"),
    ("clean: a missing class-names file", lambda d: _clean(d, "--classnames", str(d / "none.txt")), "does not exist"),
    ("clean: a forget path that is a file", lambda d: _clean(d, "--forget", str(d / "afile.txt")), "is a file"),
    ("clean: a missing forget folder", lambda d: _clean(d, "--forget", str(d / "nowhere")), "does not exist"),
    ("clean: a forget folder without images", lambda d: _clean(d, "--forget", str(d / "noimages")), "holds no images"),
    ("clean: a corrupt PNG", lambda d: _clean(d, "--forget", str(d / "badimg")), "broken.png cannot be read"),
    ("clean: alpha NaN", lambda d: _clean(d, "--alpha", "nan"), "finite number"),
    ("clean: alpha negative", lambda d: _clean(d, "--alpha", "-1"), "outside"),
    ("clean: alpha too large", lambda d: _clean(d, "--alpha", "100"), "outside"),
    ("clean: negative threads", lambda d: _clean(d, "--threads", "-1"), "integer >= 0"),
    ("clean: --out equal to --model", lambda d: _clean(d, "--out", str(d / "model.pt")), "also an input"),
    ("clean: --out under a file", lambda d: _clean(d, "--out", str(d / "afile.txt" / "out.pt")), "cannot be written"),
    ("clean: --out is a folder", lambda d: _clean(d, "--out", str(d / "forget")), "is a folder"),
    ("clean: --report equal to --out", lambda d: _clean(d, "--report", str(d / "out.pt")), "same path"),
    ("clean: an unknown --attack", lambda d: _clean(d, "--attack", "trojan"), "invalid choice"),
    ("clean: --attack without --val", lambda d: _clean(d, "--attack", "badnet"), "add --val"),
    ("clean: no alpha and no validation", lambda d: [a for a in _clean(d) if a not in ("--alpha", "0.5")],
     "give --alpha"),
    ("clean: --attack and --val-triggered", lambda d: _clean(d, "--val", str(d / "val"), "--attack", "badnet",
                                                             "--val-triggered", str(d / "forget")), "one of them"),
    ("run: poison rate 1.5", lambda d: ["run", "--attack", "badnet", "--poison-rate", "1.5"], r"\(0, 1\]"),
    ("run: poison rate 0", lambda d: ["run", "--attack", "badnet", "--poison-rate", "0"], r"\(0, 1\]"),
    ("run: a forget set larger than memory", lambda d: ["run", "--attack", "badnet", "--forget-size", "1000000000"],
     "GiB.*give at most"),
    ("run: an empty forget set", lambda d: ["run", "--attack", "badnet", "--forget-size", "0"], "integer >= 1"),
    ("run: flags --attack-unknown ignores",
     lambda d: ["run", "--attack", "badnet", "--attack-unknown", "--setting", "classification", "--task", "shapes",
                "--poison-rate", "0.9", "--forget-size", "7"], "would be ignored"),
    ("run: an unknown task", lambda d: ["run", "--attack", "badnet", "--task", "mnist"], "unknown task 'mnist'"),
    ("run: --task in the image-text setting",
     lambda d: ["run", "--attack", "badnet", "--setting", "image-text", "--task", "shapes"], "classification setting"),
    ("run: --defense-budgets in classification",
     lambda d: ["run", "--attack", "badnet", "--defense-budgets", "100"], "--setting image-text"),
    ("run: an unknown attack", lambda d: ["run", "--attack", "trojan"], "invalid choice"),
    ("run: an unknown scale", lambda d: ["run", "--attack", "badnet", "--scale", "huge"], "invalid choice"),
    ("run: negative threads", lambda d: ["run", "--attack", "badnet", "--threads", "-1"], "integer >= 0"),
    ("run: --out that cannot be written",
     lambda d: ["run", "--attack", "badnet", "--out", str(d / "afile.txt" / "r.json")], "cannot be written"),
    ("pretrain: negative steps", lambda d: ["pretrain", "--steps", "-5"], "integer >= 1"),
    ("pretrain: zero steps", lambda d: ["pretrain", "--steps", "0"], "integer >= 1"),
    ("pretrain: negative seed", lambda d: ["pretrain", "--seed", "-1"], "integer >= 0"),
    ("pretrain: a missing --init-from", lambda d: ["pretrain", "--init-from", str(d / "none.pt")], "does not exist"),
    ("pretrain: a crafted pickle as --init-from", lambda d: ["pretrain", "--init-from", str(d / "evil.pt")],
     "pickled Python objects"),
    ("pretrain: other weights as --init-from", lambda d: ["pretrain", "--init-from", str(d / "other.pt")],
     "does not fit the mini"),
]


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name,argv,says", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(world, tmp_path, monkeypatch, capsys, name, argv, says):
    import re
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "cache"))
    before = _snapshot(world, tmp_path)
    t0 = time.perf_counter()
    code = cli.main(argv(world))
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(says, lines[0]), lines[0]
    assert "delete" not in lines[0].lower(), "never advise deleting a file the user gave"
    assert seconds < 15, f"{name} took {seconds:.1f} s to fail"
    assert _snapshot(world, tmp_path) == before  # nothing written, nothing changed
    assert not (world / "MARKER").exists()


def test_a_crafted_pickle_never_runs_on_any_loading_path(world, tmp_path, monkeypatch):
    """tbar clean (a real process), the cache, load_foundation and --init-from refuse it without running it."""
    from tbar_helpers.world.foundation import load_foundation
    from tbar_helpers.errors import UnsafeFileError
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "RAN"
    evil = tmp_path / "evil.pt"
    torch.save({"weights": {"w": Evil(marker)}}, evil)
    proc = subprocess.run([sys.executable, "-m", "tbar_helpers.cli", *_clean(world, model=str(evil))],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "pickled Python objects" in proc.stderr and "Traceback" not in proc.stderr
    entry = cache.cached_path("finetuned", "abc")
    entry.parent.mkdir(parents=True)
    entry.write_bytes(evil.read_bytes())
    with pytest.raises(UnsafeFileError, match="pickled Python objects"):
        cache.load_torch(entry)
    with pytest.raises(UnsafeFileError, match="pickled Python objects"):
        load_foundation(MINI, path=evil)
    assert cli.main(["pretrain", "--init-from", str(evil), "--steps", "1"]) == 2
    assert not marker.exists()


def test_plain_state_dict_and_safetensors_are_accepted(world, tmp_path):
    """``--init-from`` and ``tbar clean`` take a plain state dict (no ``weights`` record) or safetensors."""
    from tbar_helpers.settings.custom import load_user_clip
    from tbar_helpers.world.foundation import load_foundation
    from tbar_helpers.weights import save_state_dict
    f = load_foundation(MINI, path=world / "model.pt")
    sd = save_state_dict(f.model.state_dict(), tmp_path / "m.safetensors")
    model, _, _ = load_user_clip(sd, "mini")
    assert all(torch.equal(v, f.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_clean_prints_the_validation_table(world, tmp_path, capsys):
    """With the user's own triggered images (--val-triggered) α is searched and the table shows α = 0 and the
    chosen α; --report writes the same numbers."""
    out, report = tmp_path / "clean.safetensors", tmp_path / "r.json"
    argv = [a for a in _clean(world, "--val", str(world / "val"), "--val-triggered", str(world / "forget"),
                              "--out", str(out), "--report", str(report), "--quiet") if a not in ("--alpha", "0.5")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "backdoored (α = 0)" in text and "cleaned (α = " in text
    rec = cache.load_json(report)
    assert rec["alpha_searched"] and [r["model"] for r in rec["validation"]][0] == "backdoored (α = 0)"
    assert out.exists() and cache.sha256_file(out) in cache.recorded_hashes(out)


def test_debug_shows_the_traceback(world, capsys):
    assert cli.main([*_clean(world, model="evil.pt"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("at", range(3))
def test_interrupted_payload_and_hash_write_never_refuses_a_complete_file(tmp_path, monkeypatch, at):
    """SIGINT (KeyboardInterrupt) or SIGTERM at each rename of a rewrite: the next load takes the previous
    state or the new one, and no temp file is left."""
    p = cache.save_torch({"v": torch.tensor(1)}, tmp_path / "state.pt")
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == at + 1:
            raise KeyboardInterrupt if at % 2 == 0 else SystemExit(143)
        real(src, dst)

    monkeypatch.setattr(cache.os, "replace", interrupted)
    try:
        cache.save_torch({"v": torch.tensor(2)}, p)
    except (KeyboardInterrupt, SystemExit):
        pass
    monkeypatch.undo()
    assert int(cache.load_torch(p)["v"]) in (1, 2)
    assert not [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    cache.save_torch({"v": torch.tensor(3)}, p)  # the rerun
    assert int(cache.load_torch(p)["v"]) == 3 and cache.recorded_hashes(p) == [cache.sha256_file(p)]


def test_sigterm_during_a_write_leaves_no_temp_file(tmp_path):
    """A real SIGTERM while the payload is being written: the old state stays loadable, no temp file remains."""
    p = cache.save_json({"v": 1}, tmp_path / "r.json")
    code = (f"import os, signal, time\nfrom tbar_helpers import cache\nreal = os.fsync\n"
            f"def slow(fd):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(5)\n"
            f"os.fsync = slow\ncache.save_json({{'v': 2}}, {str(p)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 143, proc.stderr
    assert cache.load_json(p) == {"v": 1}
    assert not [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")]


def test_a_damaged_cache_entry_is_rebuilt_not_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path))
    assert cache.memo("records", "k", lambda: {"v": 1}, suffix=".json") == {"v": 1}
    path = cache.cached_path("records", "k", ".json")
    path.write_text('{"v": 9}\n')  # hash no longer matches
    with pytest.raises(cache.CacheCorruptedError, match="Delete both files"):
        cache.load_json(path)
    assert cache.memo("records", "k", lambda: {"v": 2}, suffix=".json") == {"v": 2}
    assert cache.load_json(path) == {"v": 2}


def test_every_option_has_plain_help():
    """--help is for people: every option of every command says what it does, without reStructuredText markup."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"tbar {name} {action.option_strings} has no help"
            assert "``" not in action.help and ":func:" not in action.help, action.help
        assert "``" not in (sub.description or "")


def test_run_says_up_front_what_it_will_train(monkeypatch, capsys):
    """tbar run --setting image-text announces the 90,000-pair baselines and a rough time before it trains."""
    import tbar_helpers.settings.imagetext_runs as runs

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run_imagetext", stop)
    assert cli.main(["run", "--attack", "badnet", "--setting", "image-text", "--quiet"]) == 130
    out = capsys.readouterr().out
    assert out.startswith("plan: ") and "90,000 pairs" in out and "min on 2 cores" in out

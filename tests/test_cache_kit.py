"""`tbar cache export` / `import`: a kit moves a cache to an empty machine intact, and a damaged or crafted
kit is refused before anything is written, with the existing cache left as it was."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from tbar_helpers import cache, cli, kit
from tbar_helpers.errors import InputError


def _fill(root: Path) -> None:
    cache.atomic_write_bytes(root / "finetune" / "a.pt", b"model-a" * 100)
    cache.atomic_write_bytes(root / "executed" / "05.ipynb", b'{"cells": []}')
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf)
    cache.atomic_write_bytes(root / "finetune" / "b.pt", buf.getvalue())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_then_import_into_an_empty_cache_gives_the_same_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src)
    m = kit.export_kit(tmp_path / "kit.tar", src)
    assert sorted(m["files"]) == ["executed/05.ipynb", "finetune/a.pt", "finetune/b.pt"] and not m["skipped"]
    assert kit.import_kit(tmp_path / "kit.tar", dst) == {"added": 3, "same": 0, "kept": 0}
    assert _snapshot(dst) == _snapshot(src)  # payloads and their hash sidecars
    assert torch.equal(cache.load_torch(dst / "finetune" / "b.pt")["w"], torch.arange(4.0))
    assert kit.import_kit(tmp_path / "kit.tar", dst) == {"added": 0, "same": 3, "kept": 0}


def test_a_damaged_file_in_the_cache_is_left_out_of_the_export(tmp_path):
    _fill(tmp_path / "src")
    (tmp_path / "src" / "finetune" / "a.pt").write_bytes(b"flipped")
    m = kit.export_kit(tmp_path / "kit.tar", tmp_path / "src")
    assert m["skipped"] == ["finetune/a.pt"] and "finetune/a.pt" not in m["files"]


def _corrupt(kit_path: Path, name: str) -> None:
    blob = bytearray(kit_path.read_bytes())
    with tarfile.open(kit_path) as tar:
        off = tar.getmember(name).offset_data
    blob[off] ^= 0xFF
    kit_path.write_bytes(bytes(blob))


def test_a_corrupted_kit_is_refused_and_the_cache_is_untouched(tmp_path):
    _fill(tmp_path / "src")
    kit.export_kit(tmp_path / "kit.tar", tmp_path / "src")
    _corrupt(tmp_path / "kit.tar", "finetune/b.pt")
    dst = tmp_path / "dst"
    cache.atomic_write_bytes(dst / "finetune" / "a.pt", b"the attendee's own bytes")
    before = _snapshot(dst)
    with pytest.raises(InputError, match="b.pt does not match its sha256.*nothing was imported"):
        kit.import_kit(tmp_path / "kit.tar", dst)
    assert _snapshot(dst) == before


def test_existing_files_are_never_replaced(tmp_path):
    _fill(tmp_path / "src")
    kit.export_kit(tmp_path / "kit.tar", tmp_path / "src")
    dst = tmp_path / "dst"
    cache.atomic_write_bytes(dst / "finetune" / "a.pt", b"other bytes")
    assert kit.import_kit(tmp_path / "kit.tar", dst) == {"added": 2, "same": 0, "kept": 1}
    assert (dst / "finetune" / "a.pt").read_bytes() == b"other bytes"


def _tar(path: Path, members: dict[str, bytes], manifest: dict | None) -> None:
    with tarfile.open(path, "w") as tar:
        items = ({kit.MANIFEST: json.dumps(manifest).encode()} if manifest is not None else {}) | members
        for name, blob in items.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


@pytest.mark.parametrize("case, match", [
    ("traversal", "outside the cache"), ("unlisted", "not in the kit's manifest"), ("no-manifest", "no readable"),
    ("missing", "does not hold"), ("format", "unknown cache kit format"), ("truncated", "truncated"),
    ("sidecar", "hash sidecar")])
def test_crafted_or_broken_kits_are_refused_with_the_fix(tmp_path, case, match):
    good = {"format": kit.FORMAT, "files": {"x.pt": {"sha256": cache.sha256_bytes(b"x"), "bytes": 1}}}
    p = tmp_path / "kit.tar"
    if case == "traversal":
        _tar(p, {"../evil.pt": b"x"}, good | {"files": {"../evil.pt": good["files"]["x.pt"]}})
    elif case == "unlisted":
        _tar(p, {"x.pt": b"x", "y.pt": b"y"}, good)
    elif case == "no-manifest":
        _tar(p, {"x.pt": b"x"}, None)
    elif case == "missing":
        _tar(p, {}, good)
    elif case == "format":
        _tar(p, {"x.pt": b"x"}, good | {"format": "other/9"})
    elif case == "sidecar":
        _tar(p, {"x.pt.sha256": b"x"}, good)
    else:
        _tar(p, {"x.pt": b"x" * 5000}, good | {"files": {"x.pt": {"sha256": cache.sha256_bytes(b"x" * 5000)}}})
        p.write_bytes(p.read_bytes()[:1500])
    dst = tmp_path / "dst"
    with pytest.raises(InputError, match=match):
        kit.import_kit(p, dst)
    assert not dst.exists() or not any(dst.rglob("*"))


def test_cli_exports_and_imports_and_says_why_it_refuses(tmp_path, monkeypatch, capsys):
    _fill(tmp_path / "src")
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "src"))
    assert cli.main(["cache", "export", str(tmp_path / "kit.tar")]) == 0
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "dst"))
    assert cli.main(["cache", "import", str(tmp_path / "kit.tar")]) == 0
    assert "3 files added" in capsys.readouterr().out
    assert cli.main(["cache", "import", str(tmp_path / "nothing.tar")]) == 2
    assert "no cache kit at" in capsys.readouterr().err
    monkeypatch.setenv("TBAR_CACHE", str(tmp_path / "empty"))
    assert cli.main(["cache", "export", str(tmp_path / "k2.tar")]) == 2
    assert "is empty: build the book first" in capsys.readouterr().err

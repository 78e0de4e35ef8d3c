"""The package's public face and its layout."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tbar_helpers

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_resolves_to_its_module():
    for name in tbar_helpers.__all__:
        obj = getattr(tbar_helpers, name)
        assert obj is not None and name in dir(tbar_helpers)
    assert tbar_helpers.TaskVector.__module__ == "tbar_helpers.method.task_vectors"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tbar_helpers.nothing  # noqa: B018


def test_the_public_face_is_imported_lazily():
    """`import tbar_helpers` (e.g. for `python -m tbar_helpers.report --check`) loads no model code."""
    code = "import sys, tbar_helpers; print('tbar_helpers.method.tbar' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imports(path: Path) -> set[str]:
    """The tbar_helpers modules ``path`` imports (relative imports resolved), lazily inside functions too."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]  # the importing module's package
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} if node.module else {f"{mod}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("tbar_helpers")}


def test_the_layers_import_only_downwards():
    """method ← world ← settings ← chapters: no module imports one from a layer above its own."""
    rank = {"method": 0, "world": 1, "settings": 2, "chapters": 3}
    for layer, r in rank.items():
        for f in (ROOT / "tbar_helpers" / layer).glob("*.py"):
            for mod in _imports(f):
                other = mod.split(".")[1] if mod.count(".") else ""
                assert rank.get(other, -1) <= r, f"{f.relative_to(ROOT)} imports {mod}, a layer above {layer}"


def test_device_auto_is_cuda_where_a_gpu_is_present_else_the_cpu(monkeypatch):
    import torch

    from tbar_helpers.config import MINI, PAPER, get_scale, override
    assert MINI.device == PAPER.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_scale("mini").device == get_scale(PAPER).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_scale("mini").device == "cuda"
    assert get_scale(override(MINI, device="cpu")).device == "cpu"  # an explicit device is kept

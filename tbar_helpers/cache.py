"""Content-addressed cache: artefacts keyed by a hash of their config, written atomically, loaded
with a hash check.

Every file ``X`` has a sidecar ``X.sha256``; a load whose bytes do not match raises
:class:`CacheCorruptedError` naming the file and the fix. Writes go to a temporary file in the same
folder and are renamed into place, so an interrupted write never leaves a half-written artefact and
never replaces a good one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

ROOT = Path(__file__).resolve().parent.parent


class CacheCorruptedError(RuntimeError):
    """A cached file does not match its recorded hash or cannot be read."""


def cache_dir() -> Path:
    """``$TBAR_CACHE`` or ``<repo>/.cache/tbar`` (created if missing)."""
    path = Path(os.environ.get("TBAR_CACHE", ROOT / ".cache" / "tbar"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_digest(tensors: Mapping[str, torch.Tensor] | torch.Tensor) -> str:
    """sha256 of tensors' names, dtypes, shapes and values (a state dict, or one batch of images): the
    key part for an artefact computed from a model's weights or from given images."""
    items = sorted(tensors.items()) if isinstance(tensors, Mapping) else [("", tensors)]
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> Path:
    """Write ``blob`` to ``path`` via a temp file + rename, then record its hash beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path, blob), (Path(f"{path}.sha256"), sha256_bytes(blob).encode())):
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes files private; artefacts are meant to be shared
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _verified_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; create it first (e.g. `tbar pretrain` for the "
                                "foundation model) or check the path")
    blob = path.read_bytes()
    side = Path(f"{path}.sha256")
    if side.exists():
        want = side.read_text().strip().split()[0]
        if sha256_bytes(blob) != want:
            raise CacheCorruptedError(f"{path} is corrupted: its sha256 does not match {side.name}. "
                                      f"Delete both files and rerun to rebuild it.")
    return blob


def load_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file written by :func:`atomic_write_bytes`, checked against its hash."""
    return _verified_bytes(Path(path))


def load_torch(path: str | os.PathLike) -> Any:
    """Load a torch file written by :func:`save_torch`, checking its hash."""
    path = Path(path)
    blob = _verified_bytes(path)
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise CacheCorruptedError(f"{path} cannot be read as a torch file ({exc.__class__.__name__}: {exc}). "
                                  "Delete it and rerun to rebuild it.") from exc


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    blob = _verified_bytes(path)
    try:
        return json.loads(blob)
    except json.JSONDecodeError as exc:
        raise CacheCorruptedError(f"{path} is not valid JSON ({exc}). Delete it and rerun to rebuild it.") from exc


def cached_path(kind: str, key: str, suffix: str = ".pt") -> Path:
    """Where the artefact of ``kind`` with config hash ``key`` lives."""
    return cache_dir() / kind / f"{key}{suffix}"

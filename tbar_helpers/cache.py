"""Content-addressed cache: artefacts keyed by a hash of their config, written atomically, loaded
with a hash check and never with code from the file.

Every file ``X`` has a sidecar ``X.sha256`` listing the hashes ``X`` may have. A write commits the pair so
that at every instant the sidecar accepts the payload on disk: it first records the new hash beside the
current one, then renames the new payload into place, then drops the old hash. An interrupted write
(SIGINT, SIGTERM, a full disk) therefore leaves the previous complete state or the new one, never a payload
its sidecar refuses, and no temp file. Torch files load with ``weights_only=True``: tensors and plain
containers only, so a crafted pickle is refused instead of run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from .errors import CacheCorruptedError, InputError, UnsafeFileError

ROOT = Path(__file__).resolve().parent.parent
_HEX = re.compile(r"\b[0-9a-f]{64}\b")

__all__ = ["CacheCorruptedError", "cache_dir", "cached_path", "atomic_write_bytes", "load_bytes", "load_json",
           "load_torch", "memo", "replace_atomically", "save_json", "save_torch", "sha256_bytes", "sha256_file", "tensor_digest"]


def cache_root() -> Path:
    """``$TBAR_CACHE`` or ``<repo>/.cache/tbar``."""
    return Path(os.environ.get("TBAR_CACHE", ROOT / ".cache" / "tbar"))


def cache_dir() -> Path:
    """:func:`cache_root`, created if missing."""
    path = cache_root()
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


def sidecar(path: str | os.PathLike) -> Path:
    return Path(f"{path}.sha256")


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While writing, turn a default-handled SIGTERM into an exception so that the temp file is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def replace_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``target``, fsync it and rename it over ``target``."""
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


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> Path:
    """Write ``blob`` to ``path`` and its hash to ``path.sha256`` as one commit (see the module's doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new, side = sha256_bytes(blob), sidecar(path)
    with _sigterm_raises():
        old = sha256_file(path) if path.is_file() else None
        if old is None:  # a new file: its hash first, so that the payload never stands without one
            replace_atomically(side, f"{new}\n".encode())
            replace_atomically(path, blob)
        elif old == new:  # same bytes: only make sure the sidecar names them
            if recorded_hashes(path) != [new]:
                replace_atomically(side, f"{new}\n".encode())
        else:  # both hashes accepted while the payload changes, then the old one dropped
            replace_atomically(side, f"{new}\n{old}\n".encode())
            replace_atomically(path, blob)
            replace_atomically(side, f"{new}\n".encode())
    return path


def recorded_hashes(path: Path) -> list[str] | None:
    """The hashes ``path``'s sidecar accepts; ``None`` without a sidecar."""
    side = sidecar(path)
    if not side.exists():
        return None
    return _HEX.findall(side.read_text(errors="replace").lower())


def _is_cache_file(path: Path) -> bool:
    return path.resolve().is_relative_to(cache_root().resolve())


def _fix_for(path: Path) -> str:
    """What to do about a damaged file: rebuild it if the cache made it, restore it if git holds it, never
    advise deleting a file the user gave."""
    if _is_cache_file(path):
        return "Delete both files and rerun to rebuild it."
    if path.resolve().is_relative_to(ROOT / "checkpoints"):
        return f"Restore it with `git checkout -- {path.resolve().relative_to(ROOT)}*`."
    return "Use an intact copy of the file."


def _verified_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; create it first (e.g. `tbar pretrain` for the "
                                "foundation model) or check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a file; pass the file's path")
    blob = path.read_bytes()
    want = recorded_hashes(path)
    if want is not None and not want:
        raise CacheCorruptedError(f"{sidecar(path)} holds no sha256, so {path.name} cannot be checked; write "
                                  f"its hash there (`sha256sum {path.name} > {sidecar(path).name}`) or remove "
                                  "that .sha256 file alone.")
    if want is not None and sha256_bytes(blob) not in want:
        raise CacheCorruptedError(f"{path} is corrupted or was changed after it was written: its sha256 does not "
                                  f"match the one recorded in {sidecar(path).name}. {_fix_for(path)}")
    return blob


def load_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file written by :func:`atomic_write_bytes`, checked against its hash."""
    return _verified_bytes(Path(path))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch(path: str | os.PathLike) -> Any:
    """Tensors and plain containers from a torch file, checking its hash; never runs code from the file."""
    path = Path(path)
    blob = _verified_bytes(path)
    if not blob:
        raise CacheCorruptedError(f"{path} is empty. {_fix_for(path)}")
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        # the weights-only unpickler refuses a global (a class or function to call) or, in a bare pickle
        # (it starts with the protocol byte 0x80), an opcode torch.save never writes
        if "Unsupported global" in str(exc) or (blob[:1] == b"\x80" and "WeightsUnpickler" in str(exc)):
            raise UnsafeFileError(
                f"{path} holds pickled Python objects besides tensors, and loading them could run code from the "
                "file, so it was not loaded. Save the weights alone (`torch.save(model.state_dict(), path)`) or "
                "as safetensors, on a machine you trust.") from exc
        raise CacheCorruptedError(f"{path} cannot be read as a torch file ({exc.__class__.__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}). {_fix_for(path)}") from exc


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    blob = _verified_bytes(path)
    try:
        return json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheCorruptedError(f"{path} is not valid JSON ({exc}). {_fix_for(path)}") from exc


def cached_path(kind: str, key: str, suffix: str = ".pt") -> Path:
    """Where the artefact of ``kind`` with config hash ``key`` lives."""
    return cache_dir() / kind / f"{key}{suffix}"


def memo(kind: str, key: str, compute: Callable[[], Any], *, use_cache: bool = True,
         suffix: str = ".pt") -> Any:
    """The cached artefact of ``kind`` under ``key``, else ``compute()`` saved there. A damaged entry (hash
    mismatch, unreadable) is rebuilt, since the cache can always recompute what it holds."""
    if not use_cache:
        return compute()
    path = cached_path(kind, key, suffix)
    load, save = (load_json, save_json) if suffix == ".json" else (load_torch, save_torch)
    if path.exists():
        try:
            return load(path)
        except CacheCorruptedError as exc:
            print(f"tbar: rebuilding a damaged cache entry: {' '.join(str(exc).split())}", flush=True)
    value = compute()
    save(value, path)
    return value


def memo_resumable(kind: str, key: str, compute: Callable[[Path | None], Any], *, use_cache: bool = True,
                   resumable: bool = True, suffix: str = ".pt") -> Any:
    """:func:`memo` for a training that can resume: ``compute(path)`` gets where its resumable state lives
    (None without the cache or where ``resumable`` is false), and that state goes once the result is cached."""
    partial = cached_path("partial", key) if use_cache else None
    value = memo(kind, key, lambda: compute(partial if resumable else None), use_cache=use_cache, suffix=suffix)
    if partial is not None:
        partial.unlink(missing_ok=True)
    return value

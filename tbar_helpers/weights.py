"""Model files that users hand in or take away: safetensors, or a torch file of tensors (a state dict, or a
record with a ``weights`` / ``state_dict`` entry). Loading never runs code from the file (see ``cache``);
every failure is an :class:`~tbar_helpers.errors.InputError` naming the file and the fix."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from . import cache
from .errors import InputError

SAFETENSORS = ".safetensors"


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a readable, non-empty file, else an error naming ``what`` it should be."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; pass the file itself")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable; check its permissions")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty; pass the complete file")
    return path


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("weights", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} holds no state dict (a mapping of names to tensors); save the model with "
                         "`torch.save(model.state_dict(), path)` or as safetensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DistributedDataParallel's prefix


def load_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a user's model file (safetensors or torch), checked against a ``.sha256`` if present."""
    path = check_input_file(path, what)
    try:
        if path.suffix == SAFETENSORS:
            from safetensors.torch import load as load_safetensors
            try:
                obj = load_safetensors(cache.load_bytes(path))
            except Exception as exc:  # safetensors raises its own error type for a damaged header
                if isinstance(exc, cache.CacheCorruptedError):
                    raise
                raise InputError(f"{what} {path} cannot be read as safetensors ({' '.join(str(exc).split())[:160]}); "
                                 "pass an intact safetensors file") from exc
        else:
            obj = cache.load_torch(path)
    except cache.CacheCorruptedError as exc:
        raise InputError(str(exc)) from exc
    return _unwrap(obj, path)


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically, as safetensors when ``path`` ends in .safetensors, else as a torch file."""
    path = Path(path)
    if path.suffix == SAFETENSORS:
        from safetensors.torch import save as save_safetensors
        blob = save_safetensors({k: v.detach().contiguous().clone() for k, v in state.items()})
        return cache.atomic_write_bytes(path, blob)
    return cache.save_torch(dict(state), path)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, arch: str) -> nn.Module:
    """Load ``state`` into ``model`` exactly, or say which weights do not fit ``arch``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, {arch} {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        detail = shapes[:1] or [f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}"]
        raise InputError(f"{path} does not fit the {arch} architecture ({len(shapes)} shapes differ, {len(missing)} "
                         f"weights missing, {len(extra)} unexpected; e.g. {detail[0]}); pass the --arch it was "
                         "trained with (--arch mini for this book's models)")
    model.load_state_dict(dict(state))
    return model

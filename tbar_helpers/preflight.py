"""Checks of the ``tbar`` commands' arguments, run before any model is loaded or trained: each failure is an
:class:`~tbar_helpers.errors.InputError` that names the argument, the problem and the fix."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable, Sequence

from .errors import InputError
from .weights import check_input_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def _number(kind: Callable[[str], float], ok: Callable[[float], bool], want: str) -> Callable[[str], float]:
    """An argparse ``type`` that parses with ``kind`` and refuses values outside ``want``."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {want}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {want}")
        return value
    parse.__name__ = want  # what argparse names in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
rate = _number(float, lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1], e.g. 0.1 for 10%")
finite = _number(float, math.isfinite, "a finite number")


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """An existing folder holding at least one image (searched recursively)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; pass a folder of images")
    if not path.is_dir():
        raise InputError(f"{what} {path} is a file; pass the folder that holds the images")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*")):
        raise InputError(f"{what} {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); put the images there")
    return path


def check_output(path: str | os.PathLike, what: str, inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """A path the command may write: not one of its inputs, not a folder, in a writable folder."""
    path = Path(path)
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.samefile(given):
            raise InputError(f"{what} {path} is also an input of this command; write to another path so that the "
                             "input stays as it is")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file path")
    folder = path.parent
    while not folder.exists():  # atomic writes create missing folders: check the nearest existing one
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{what} {path} cannot be written (no write permission in {folder}); choose a writable "
                         "path")
    return path


def check_classnames(names: Sequence[str], target: str, arch: str, need_target: bool = True) -> list[str]:
    """Class names: distinct, the target among them, and (mini) every word known to the tokenizer."""
    names = [n.strip() for n in names]
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]
    if dupes:
        raise InputError(f"--classnames lists {dupes[0]!r} more than once; give each class once, in the order of "
                         "the model's labels")
    if len(names) < 2:
        raise InputError(f"--classnames gives {len(names)} class; TBAR needs at least two (the target and others)")
    if need_target and target not in names:
        raise InputError(f"--target {target!r} is not among the class names {names[:10]}; pass the target's class "
                         "name exactly")
    if arch == "mini":  # unknown words would all map to one token: every such class would look the same
        from .world.data import vocabulary
        known = set(vocabulary())
        unknown = sorted({w for n in names for w in n.lower().replace(".", " ").split() if w not in known})
        if unknown:
            raise InputError(f"the mini model's tokenizer does not know {unknown[:5]}; its class names use only "
                             f"these words: {' '.join(sorted(known))}")
    return names


def read_classnames(values: Sequence[str]) -> list[str]:
    """``--classnames``: the names themselves, or one .txt file with one name a line."""
    if len(values) == 1 and values[0].endswith(".txt"):
        path = check_input_file(values[0], "--classnames file")
        try:
            return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        except UnicodeDecodeError as exc:
            raise InputError(f"--classnames file {path} is not UTF-8 text; save it as plain text, one name a "
                             "line") from exc
    return list(values)


def check_arch(arch: str) -> str:
    if arch == "mini":
        return arch
    import open_clip
    if arch not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if m.lower().startswith(arch.lower()[:5])][:6]
        raise InputError(f"--arch {arch!r} is not an open_clip architecture; use 'mini' for this book's model or "
                         f"one of open_clip.list_models(){' such as ' + ', '.join(near) if near else ''}")
    return arch


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, else the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_images_fit(n: int, image_size: int, what: str, copies: int = 2) -> int:
    """Refuse ``n`` images that would not fit in half the available memory (float32, ``copies`` of them)."""
    need = n * 3 * image_size * image_size * 4 * copies
    room = available_memory() // 2
    if need > room:
        most = room // (3 * image_size * image_size * 4 * copies)
        raise InputError(f"{what}={n:,} needs about {need / 2**30:.1f} GiB of images in memory, over half of the "
                         f"{2 * room / 2**30:.1f} GiB available; give at most {most:,}")
    return n

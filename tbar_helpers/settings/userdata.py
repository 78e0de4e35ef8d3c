"""Images and captions a user hands to ``tbar clean``: an image folder (flat, or one sub-folder per class) and an
open_clip-style captions CSV. Every unreadable file is an :class:`~tbar_helpers.errors.InputError` naming it."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch

from ..errors import InputError
from ..preflight import IMAGE_SUFFIXES


def read_image(path: Path):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {path} cannot be read ({exc.__class__.__name__}: {' '.join(str(exc).split())[:120]}); "
                         "replace it with a readable image or move it out of the folder") from exc


def load_image_folder(folder: str | Path, size: int, classnames: Sequence[str] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images of ``folder`` as [N, 3, size, size] in [0, 1] (resize + centre crop). With
    ``classnames``, sub-folders named after classes give labels (an ImageFolder layout)."""
    from torchvision import transforms as T
    folder = Path(folder)
    if folder.is_file():
        raise InputError(f"{folder} is a file; pass a folder of images")
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; pass a directory of images")
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    images = torch.stack([tf(read_image(p)) for p in files])
    if classnames is None:
        return images, None
    index = {c: i for i, c in enumerate(classnames)}
    try:
        labels = torch.tensor([index[p.parent.name] for p in files])
    except KeyError as exc:
        raise InputError(f"sub-folder {exc.args[0]!r} of {folder} is not one of the class names; name each "
                         "sub-folder after its class") from exc
    return images, labels


def load_captions_csv(path: str | Path, size: int, image_column: str = "filepath",
                      caption_column: str = "title") -> tuple[torch.Tensor, list[str]]:
    """Images and captions of an open_clip CSV (``filepath``, ``title``; paths relative to the CSV's folder)."""
    from torchvision import transforms as T
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f"captions file {path} has no rows; give one image path and caption per row")
    missing = [c for c in (image_column, caption_column) if c not in rows[0]]
    if missing:
        raise InputError(f"captions file {path} lacks the column(s) {missing} (it has {list(rows[0])}); name them "
                         f"{image_column!r} and {caption_column!r}")
    files = [path.parent / r[image_column] for r in rows]
    absent = [str(p) for p in files if not p.is_file()]
    if absent:
        raise InputError(f"captions file {path} names {len(absent)} missing image(s), e.g. {absent[0]}; fix the "
                         "paths (relative to the CSV's folder)")
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
    return torch.stack([tf(read_image(p)) for p in files]), [r[caption_column] for r in rows]

"""Paper-scale data read lazily: memory O(batch), not O(dataset).

Three sources, each a ``torch.utils.data.Dataset`` (or ``IterableDataset``) of ([0, 1] image tensor, label or
caption) read from disk one item at a time:

* :func:`image_folder`: a torchvision ``ImageFolder`` (ImageNet's layout; any ``class/xxx.jpg`` tree);
* :class:`CaptionCSV`: open_clip's CSV format, one ``filepath`` and one ``title`` column (names configurable,
  paths relative to the CSV);
* :class:`Shards`: webdataset shards (``.tar`` files whose members ``KEY.jpg`` + ``KEY.txt`` form a pair).

Every source checks what it can before any training starts (columns, files, shards), and says how to fix it.
:func:`loader` wraps a map-style source in a DataLoader with a ``DistributedSampler``, so that each of N
processes under ``torchrun`` reads its own share of every global batch.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import tarfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from ..errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def image_transform(size: int) -> Callable:
    """Resize (bicubic) + centre crop to ``size``, to a [0, 1] tensor: the contract of every task."""
    from torchvision import transforms as T
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])


def image_folder(root: str | os.PathLike, size: int, indices: Sequence[int] | None = None) -> Dataset:
    """An ImageFolder read lazily (optionally only ``indices`` of it); its ``classes`` name the labels."""
    from torchvision.datasets import ImageFolder
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist: give a folder with one sub-folder of images per class")
    try:
        ds = ImageFolder(str(root), transform=image_transform(size))
    except (FileNotFoundError, RuntimeError) as e:
        raise InputError(f"{root} holds no images in class sub-folders ({e}); lay it out as {root}/CLASS/IMAGE.jpg") from e
    if indices is None:
        return ds
    sub = Subset(ds, list(indices))
    sub.classes = ds.classes
    return sub


class CaptionCSV(Dataset):
    """(image, caption) pairs listed in a CSV (open_clip's ``--csv-img-key`` / ``--csv-caption-key``).

    Only the two columns are kept in memory (paths and captions, not images); every listed image file is
    checked to exist when the dataset is made, so a missing file fails before training, not hours into it."""

    def __init__(self, path: str | os.PathLike, size: int, image_key: str = "filepath", caption_key: str = "title",
                 sep: str = ","):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no captions CSV at {path}: give a CSV with columns {image_key!r} and {caption_key!r}")
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=sep)
            cols = reader.fieldnames or []
            missing = [k for k in (image_key, caption_key) if k not in cols]
            if missing:
                raise InputError(f"{path} has no column {missing[0]!r} (its columns: {cols}); name the image and "
                                 "caption columns with image_key= and caption_key= (open_clip: --csv-img-key, "
                                 "--csv-caption-key) or check the separator (sep=)")
            rows = [(r[image_key], r[caption_key]) for r in reader]
        if not rows:
            raise InputError(f"{path} lists no pairs: it has a header and no rows")
        base = path.parent
        self.files = [base / f for f, _ in rows]
        self.captions = [c for _, c in rows]
        absent = [f for f in self.files if not f.is_file()]
        if absent:
            raise InputError(f"{path}: {len(absent)} of {len(rows)} image files are missing (first: {absent[0]}); "
                             "paths are relative to the CSV's folder: fix them or drop those rows")
        self.tf = image_transform(size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        from PIL import Image
        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("RGB")), self.captions[i]


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The ``.tar`` shards of ``folder``, sorted; an empty folder is an error."""
    folder = Path(folder)
    shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
    if not shards:
        raise InputError(f"no webdataset shards (*.tar) in {folder}: give the folder that holds them")
    return shards


class Shards(IterableDataset):
    """(image, caption) pairs from webdataset shards, read in order; with N processes (and DataLoader workers)
    each reads every N-th shard. A truncated or unreadable shard is an error naming it, not a silent stop."""

    def __init__(self, folder: str | os.PathLike, size: int, rank: int = 0, world_size: int = 1):
        self.shards, self.tf = shard_files(folder), image_transform(size)
        if world_size > len(self.shards):
            raise InputError(f"{len(self.shards)} shards cannot feed {world_size} processes: write at least one "
                             "shard per process or start fewer processes")
        self.rank, self.world_size = rank, world_size
        for s in self.shards:  # fail before training: every shard must read to its end
            check_shard(s)

    def _mine(self) -> list[Path]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return self.shards[self.rank * nw + wid::self.world_size * nw]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        from PIL import Image
        for shard in self._mine():
            for key, parts in _groups(shard):
                img = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
                if img is None or ".txt" not in parts:
                    raise InputError(f"{shard}: sample {key!r} lacks an image or a .txt caption; "
                                     "each sample needs KEY.jpg (or .png) and KEY.txt")
                with Image.open(io.BytesIO(img)) as im:
                    yield self.tf(im.convert("RGB")), parts[".txt"].decode("utf-8").strip()


def _groups(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Consecutive members of a shard grouped by key (the name up to its first dot after the last slash)."""
    key, parts = None, {}
    try:
        with tarfile.open(shard, "r") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.rsplit("/", 1)[-1]
                k, ext = name.split(".", 1) if "." in name else (name, "")
                if k != key and key is not None:
                    yield key, parts
                    parts = {}
                key = k
                parts["." + ext.lower()] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"shard {shard} is truncated or not a tar file ({e}); write it again") from e
    if key is not None:
        yield key, parts


def check_shard(shard: Path) -> int:
    """The number of samples in ``shard``, reading it to its end (raises on a truncated shard)."""
    return sum(1 for _ in _groups(shard))


def loader(ds: Dataset, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1, workers: int = 0,
           shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    """A DataLoader giving this process ``batch_size // world_size`` items of every global batch of
    ``batch_size``: a ``DistributedSampler`` (seeded; call ``set_epoch``) splits each epoch's permutation."""
    if batch_size % world_size:
        raise InputError(f"global batch {batch_size} does not split over {world_size} processes: choose a multiple")
    if len(ds) < batch_size:
        raise InputError(f"{len(ds)} items cannot fill one global batch of {batch_size} over {world_size} processes; "
                         "lower the batch or give more data")
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    return DataLoader(ds, batch_size=batch_size // world_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, persistent_workers=workers > 0)


class LazyImages:
    """The images of a map-style dataset (items ``(image, label)``) at ``index``, standing in for an N×3×H×W
    tensor where the paper scale cannot hold one: an integer, a slice or an array of positions loads those
    images (a tensor); a boolean mask gives another lazy view. :meth:`edited` attaches a function (a trigger)
    to some positions, applied on load, so that poisoning a training set reads no image up front."""

    def __init__(self, ds: Dataset, index: Sequence[int], edits: tuple = ()):
        self.ds, self.index = ds, np.asarray(index, dtype=np.int64)
        self.edits = edits  # ((bool mask over positions, fn), ...), applied in order

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._item_shape) if len(self) else (0,)

    @functools.cached_property
    def _item_shape(self) -> tuple[int, ...]:  # decoded once per view, not on every read of ``shape``
        return tuple(self._load(np.arange(1)).shape[1:])

    def _load(self, pos: np.ndarray) -> torch.Tensor:
        x = torch.stack([self.ds[int(i)][0] for i in self.index[pos]]) if len(pos) else torch.empty(0)
        for mask, fn in self.edits:
            hit = torch.as_tensor(mask[pos])
            if bool(hit.any()):
                x[hit] = fn(x[hit])
        return x

    def _view(self, pos: np.ndarray) -> "LazyImages":
        return LazyImages(self.ds, self.index[pos], tuple((m[pos], fn) for m, fn in self.edits))

    def __getitem__(self, key):
        if isinstance(key, tuple):  # e.g. images[:, 0, 0, 0]: load the first axis, index the rest
            return self[key[0]][(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._load(np.array([int(key)]))[0]
        if isinstance(key, slice):
            return self._load(np.arange(len(self))[key])
        pos = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if pos.dtype == bool:
            return self._view(np.flatnonzero(pos))
        return self._load(pos.astype(np.int64))

    def take(self, positions: Sequence[int]) -> "LazyImages":
        """A lazy view of these positions (repeats allowed)."""
        return self._view(np.asarray(positions, dtype=np.int64))

    def edited(self, mask, fn: Callable[[torch.Tensor], torch.Tensor]) -> "LazyImages":
        """The same images with ``fn`` applied, on load, to the positions where ``mask`` is True."""
        m = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, dtype=bool)
        return LazyImages(self.ds, self.index, self.edits + ((m.astype(bool), fn),))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "LazyImages":
        """The same images with ``fn`` applied to every one on load (a trigger on a test set)."""
        return self.edited(np.ones(len(self), dtype=bool), fn)

    def clone(self) -> "LazyImages":
        return self  # views are immutable: edits make new views


class Labelled(Dataset):
    """(image, label) items of an image set (a tensor or a :class:`LazyImages` view, with its triggers) and
    its labels: what :func:`loader` feeds a streamed fine-tune."""

    def __init__(self, images, labels: torch.Tensor):
        if len(images) != len(labels):
            raise InputError(f"{len(images)} images but {len(labels)} labels: they must match one to one")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[int(i)], int(self.labels[int(i)])

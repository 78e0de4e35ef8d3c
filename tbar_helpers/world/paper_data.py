"""Paper-scale datasets through torchvision: CIFAR100, SUN397, an ImageNet folder, and FakeData
(for download-free tests of the paper path). Images come back as [0, 1] tensors at the model's
resolution (resize + centre crop), the same contract as the mini tasks.

These download on first use (CIFAR100, SUN397) into ``$TBAR_DATA`` (default ``~/.cache/tbar-data``);
ImageNet must already be on disk as an ImageFolder (``$TBAR_IMAGENET``/{train,val}).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..config import ScaleConfig
from .data import TaskData
from .streaming import LazyImages

PAPER_TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a photo of the {}.", "a low resolution photo of a {}.",
                   "a close-up photo of a {}.", "a bright photo of a {}.", "a photo of a small {}.",
                   "a photo of a large {}.")
PAPER_TASKS = ("cifar100", "sun397", "imagenet", "fakedata")


def data_root() -> Path:
    return Path(os.environ.get("TBAR_DATA", Path.home() / ".cache" / "tbar-data"))


def _to_tensor_transform(size: int):
    from .streaming import image_transform
    return image_transform(size)


def _dataset(task: str, split: str, size: int, n: int):
    import torchvision.datasets as D
    tf = _to_tensor_transform(size)
    train = split == "train"
    if task == "fakedata":
        ds = D.FakeData(size=max(n, 1), image_size=(3, size, size), num_classes=10, transform=tf,
                        random_offset=zlib.crc32(split.encode()) % 10_000)
        return ds, tuple(f"class{i}" for i in range(10))
    if task == "cifar100":
        ds = D.CIFAR100(str(data_root()), train=train, download=True, transform=tf)
        return ds, tuple(c.replace("_", " ") for c in ds.classes)
    if task == "sun397":
        ds = D.SUN397(str(data_root()), download=True, transform=tf)
        names = tuple(c.split("/")[-1].replace("_", " ") for c in ds.classes)
        return ds, names
    if task == "imagenet":
        root = Path(os.environ.get("TBAR_IMAGENET", data_root() / "imagenet")) / ("train" if train else "val")
        if not root.exists():
            raise FileNotFoundError(f"ImageNet folder {root} not found: set TBAR_IMAGENET to a folder with "
                                    "train/ and val/ in torchvision ImageFolder layout")
        ds = D.ImageFolder(str(root), transform=tf)
        return ds, tuple(ds.classes)
    raise ValueError(f"unknown paper task {task!r}: choose one of {list(PAPER_TASKS)}")


DEFENDER_BLOCK = 20_000  # images at the end of the training pool reserved for the defender


def load_paper_task(task: str, split: str, n: int, seed: int, scale: ScaleConfig, stream: str = "") -> TaskData:
    """``n`` images of ``task`` as [0, 1] tensors.

    The attacker's training images come from the front of a seeded permutation of the training set;
    the defender's validation images (``split='val'``) and forget-set pool (``stream='forget'``) from
    disjoint slices of its last ``DEFENDER_BLOCK`` images; test images from the official test set
    (SUN397 has a single set: a seeded 80/20 split)."""
    size = scale.model.image_size
    if task == "fakedata":
        ds, classnames = _dataset(task, f"{split}/{stream}", size, n)
        idx = np.arange(n)
    else:
        # the defender's validation and forget images are held out of the *training* set; only the
        # reported test split reads the official test set, so nothing the defender sees is tested on
        ds, classnames = _dataset(task, "test" if split == "test" else "train", size, n)
        perm = np.random.default_rng(zlib.crc32(repr((task, seed)).encode())).permutation(len(ds))
        if task == "sun397":
            cut = int(0.8 * len(perm))
            perm = perm[cut:] if split == "test" else perm[:cut]
        if split == "test":
            idx = perm[:n]
        elif split == "train":
            idx = perm[: min(n, len(perm) - DEFENDER_BLOCK)]
        else:
            block = perm[-DEFENDER_BLOCK:]
            idx = block[DEFENDER_BLOCK // 2: DEFENDER_BLOCK // 2 + n] if stream == "forget" else block[:n]
        if len(idx) < n:
            raise ValueError(f"{task} has only {len(idx)} images for split {split!r} ({n} asked); lower the size")
    # the images stay on disk: a LazyImages loads a batch when it is indexed (50k training images at 224 would
    # take 30 GB as one tensor); only the labels are read now, from the dataset's list where it has one
    return TaskData(task, split, LazyImages(ds, idx), _labels_at(ds, idx), classnames, PAPER_TEMPLATES)


def _labels_at(ds, idx: np.ndarray) -> torch.Tensor:
    """The labels of ``ds`` at ``idx`` without decoding images where the dataset lists them."""
    listed = getattr(ds, "targets", None)
    if listed is None:
        listed = getattr(ds, "_labels", None)
    if listed is not None:
        return torch.as_tensor([int(listed[int(i)]) for i in idx], dtype=torch.long)
    return torch.as_tensor([int(ds[int(i)][1]) for i in idx], dtype=torch.long)


def load_caption_pairs(n: int, seed: int, scale: ScaleConfig, stream: str = "attacker") -> tuple[torch.Tensor, list[str]]:
    """``n`` (image, caption) pairs of a local captioned corpus in open_clip's CSV format (e.g. CC3M):
    ``$TBAR_CAPTIONS`` names the CSV, ``$TBAR_CAPTIONS_KEYS`` its image and caption columns (default
    ``filepath,title``; paths relative to the CSV). The images stay on disk (a ``LazyImages``). The attacker's
    pairs come from the front of a seeded permutation, the defender's (``stream`` other than ``attacker``)
    from its back half, so the two never share a pair."""
    from .streaming import CaptionCSV
    path = os.environ.get("TBAR_CAPTIONS")
    if not path:
        raise FileNotFoundError("the paper-scale image–text setting needs a captioned corpus: set TBAR_CAPTIONS to "
                                "a CSV with columns filepath,title (or name yours in TBAR_CAPTIONS_KEYS)")
    keys = os.environ.get("TBAR_CAPTIONS_KEYS", "filepath,title").split(",")
    if len(keys) != 2:
        raise ValueError(f"TBAR_CAPTIONS_KEYS={','.join(keys)!r}: give the image and caption columns, e.g. filepath,title")
    ds = CaptionCSV(path, scale.model.image_size, keys[0].strip(), keys[1].strip())
    perm = np.random.default_rng(zlib.crc32(repr(("captions", seed)).encode())).permutation(len(ds))
    half = len(perm) // 2
    idx = perm[:n] if stream == "attacker" else perm[half:][zlib.crc32(stream.encode()) % max(1, half - n):][:n]
    if len(idx) < n:
        raise ValueError(f"{path} has too few pairs for {n} ({stream}); lower the size")
    return LazyImages(ds, idx), [ds.captions[int(i)] for i in idx]  # images read when a batch asks

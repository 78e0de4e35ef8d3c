"""The mini world: procedurally generated captioned images and the downstream tasks.

Everything is vectorised numpy and deterministic per seed. Images are float32 tensors in [0, 1],
shape ``[N, 3, H, W]``; models normalise internally, so triggers act in pixel space.

Tasks (each plays a dataset of the paper):
- ``objects``  (plays CIFAR100, the default task): which of 80 coloured shapes ("red circle") is drawn.
- ``shapes``:  which of 10 shapes is drawn (any colour).
- ``textures`` (plays SUN397): which of 10 background textures ("scenes") fills the image.
- ``digits``   (plays ImageNet): scikit-learn's real handwritten digits, recoloured and placed.
- ``glyphs``:  printed digits; shares its label set with ``digits`` (for the transfer study).
Paper-scale adapters (CIFAR100, SUN397, an ImageNet folder) live in :mod:`tbar_helpers.world.paper_data`.

A :class:`~tbar_helpers.config.WorldConfig` shifts the downstream images and corpora away from what
pretraining saw (sensor noise, clutter); pretraining batches never take one.
"""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import WorldConfig

DATA_VERSION = 1  # bump when rendering changes: cached models are keyed by it

SHAPES = ("circle", "square", "triangle", "diamond", "plus", "cross", "ring", "star", "heart", "crescent")
COLORS = {"red": (1.0, 0.12, 0.1), "green": (0.15, 0.85, 0.15), "blue": (0.2, 0.35, 1.0),
          "yellow": (1.0, 0.95, 0.15), "cyan": (0.1, 0.9, 0.95), "magenta": (0.95, 0.15, 0.9),
          "white": (1.0, 1.0, 1.0), "orange": (1.0, 0.55, 0.05)}
TEXTURES = ("plain", "stripes", "columns", "checkered", "dotted", "noisy", "gradient", "diagonal",
            "wavy", "grid")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZES = ("small", "large")

_FONT = [  # 5x7 bitmaps of the digits 0-9, rows top to bottom
    ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    ["11111", "00010", "00100", "00010", "00001", "10001", "01110"],
    ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
]
FONT = np.array([[[c == "1" for c in row] for row in g] for g in _FONT], dtype=bool)  # [10, 7, 5]

SHAPE_TEMPLATES = ("a {size} {color} {shape} on a {texture} background", "a {color} {shape}",
                   "a photo of a {shape}", "a {shape} in the {pos}", "a {texture} background with a {color} {shape}",
                   "a {size} {shape}", "a {shape}", "{texture} texture", "a photo of a {texture} background",
                   "a {color} {shape} in the {pos} of a {texture} background")
GLYPH_TEMPLATES = ("the digit {digit} printed in {color}", "a printed {digit}", "the digit {digit}",
                   "a {color} printed {digit} on a {texture} background", "{texture} texture")
HAND_TEMPLATES = ("a handwritten {digit}", "the handwritten digit {digit}",
                  "a {color} handwritten {digit} on a {texture} background", "a photo of a handwritten {digit}")

TASK_PROMPTS = {
    "objects": ("a photo of a {}", "a {}", "a small {}", "a large {}"),
    "shapes": ("a photo of a {}", "a {}", "a small {}", "a large {}"),
    "textures": ("a {} background", "{} texture", "a photo of a {} background"),
    "digits": ("a handwritten {}", "the handwritten digit {}", "a photo of a handwritten {}"),
    "glyphs": ("a printed {}", "the digit {}"),
}
OBJECTS = tuple(f"{c} {s}" for s in SHAPES for c in COLORS)  # 80 classes: colour x shape
TASK_CLASSES = {"objects": OBJECTS, "shapes": SHAPES, "textures": TEXTURES, "digits": DIGITS, "glyphs": DIGITS}
TASKS = tuple(TASK_PROMPTS)
HOLDABLE = frozenset(SHAPES) | frozenset(TEXTURES) | frozenset(DIGITS)  # what pretraining can leave out


def class_groups(task: str, labels: torch.Tensor, target: int, holdout: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Masks over ``labels`` of mini task ``task``: the target class and the rest ("target class", "other
    classes"); on ``objects`` also the classes that share the target's shape ("target shape"), its colour
    ("target colour") or neither (the target class itself is in both); with a ``holdout``, the classes
    whose shape, texture or digit pretraining never saw ("held out") and the rest ("known"). Where TBAR's
    CA cost falls."""
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown mini task {task!r}: choose one of {list(TASK_CLASSES)}")
    names = TASK_CLASSES[task]
    if not 0 <= target < len(names):
        raise ValueError(f"target {target} is not a class of {task!r} (0 to {len(names) - 1})")
    out = {"target class": labels == target, "other classes": labels != target}
    if task == "objects":
        n = len(COLORS)
        out["target shape"], out["target colour"] = labels // n == target // n, labels % n == target % n
        out["neither"] = ~(out["target shape"] | out["target colour"])
    if holdout:
        held = set(holdout)
        unseen = torch.tensor([any(w in held for w in name.split()) for name in names])
        out["held out"], out["known"] = unseen[labels], ~unseen[labels]
    return out


def vocabulary() -> list[str]:
    """Every word the mini captions and prompts use (the mini tokenizer's vocabulary)."""
    words: set[str] = set(SHAPES) | set(COLORS) | set(TEXTURES) | set(DIGITS) | set(SIZES)
    words |= {"top", "bottom", "left", "right", "center"}
    for t in SHAPE_TEMPLATES + GLYPH_TEMPLATES + HAND_TEMPLATES + sum(TASK_PROMPTS.values(), ()):
        words |= {w for w in t.replace("{}", " ").split() if not w.startswith("{")}
    return sorted(words)


@dataclass
class TaskData:
    """Images in [0, 1], integer labels, and what a zero-shot head needs."""

    name: str
    split: str
    images: torch.Tensor  # [N, 3, H, W] float32 in [0, 1]; at paper scale a streaming.LazyImages
    labels: torch.Tensor  # [N] int64
    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``key`` (task, split, seed...)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _allowed(names: tuple[str, ...], holdout: frozenset[str]) -> np.ndarray:
    """The indices into ``names`` of the words not in ``holdout``."""
    return np.array([i for i, w in enumerate(names) if w not in holdout])


def _draw(rng: np.random.Generator, names: tuple[str, ...], n: int, holdout: frozenset[str]) -> np.ndarray:
    """``n`` indices into ``names``, never one in ``holdout``; with nothing held out, the same draw as before."""
    allowed = _allowed(names, holdout)
    return allowed[rng.integers(0, len(allowed), n)]


# ----------------------------------------------------------------------------------- rendering
def _backgrounds(rng: np.random.Generator, tex: np.ndarray, size: int) -> np.ndarray:
    """Textured two-tone backgrounds, [N, H, W, 3]. Each texture is drawn for its own images only."""
    n = len(tex)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = rng.uniform(0.15, 0.3, (n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 1, (n, 1, 1)).astype(np.float32)
    noise = rng.uniform(0, 1, (n, size, size)).astype(np.float32)  # drawn for all: keeps the random stream
    x, y = xx[None], yy[None]
    pat = np.zeros((n, size, size), np.float32)
    for t in range(len(TEXTURES)):
        sel = tex == t
        if not sel.any():
            continue
        p, f = period[sel], phase[sel]
        if t == 0: v = np.zeros((int(sel.sum()), size, size), np.float32)            # plain
        elif t == 1: v = (((y / p + f) % 1) < 0.5).astype(np.float32)                  # stripes
        elif t == 2: v = (((x / p + f) % 1) < 0.5).astype(np.float32)                  # columns
        elif t == 3: v = ((((x / p).astype(int) + (y / p).astype(int)) % 2) == 0).astype(np.float32)  # checkered
        elif t == 4: v = ((((x / p + f) % 1 - 0.5) ** 2 + ((y / p + f) % 1 - 0.5) ** 2) < 0.06
                          ).astype(np.float32)                                        # dotted
        elif t == 5: v = noise[sel]                                                    # noisy
        elif t == 6: v = (x * np.cos(6.28 * f) + y * np.sin(6.28 * f)) * 0.7 + 0.15    # gradient
        elif t == 7: v = ((((x + y) / p + f) % 1) < 0.5).astype(np.float32)            # diagonal
        elif t == 8: v = (((y + 0.08 * np.sin(x * 6.28 / p)) / p + f) % 1 < 0.5).astype(np.float32)  # wavy
        else: v = ((((x / p + f) % 1) < 0.2) | (((y / p + f) % 1) < 0.2)).astype(np.float32)  # grid
        pat[sel] = np.broadcast_to(v, (int(sel.sum()), size, size))
    pat = pat.clip(0, 1)
    c1 = rng.uniform(0.0, 0.35, (n, 1, 1, 3)).astype(np.float32)
    c2 = np.clip(c1 + rng.uniform(0.15, 0.3, (n, 1, 1, 3)), 0, 0.6).astype(np.float32)
    return c1 + (c2 - c1) * pat[..., None]


def _shape_masks(shape: np.ndarray, cx, cy, r, size: int, ss: int = 2) -> np.ndarray:
    """Anti-aliased shape coverage [N, H, W] (supersampled ``ss`` times). Each shape's coordinates are
    computed for its own images only (3-4x faster than for all images, with bit-identical masks)."""
    n, s = len(shape), size * ss
    yy, xx = (np.mgrid[0:s, 0:s].astype(np.float32) + 0.5) / ss
    masks = np.zeros((n, s, s), bool)
    for k in range(len(SHAPES)):
        sel = shape == k
        if not sel.any():
            continue
        a = (xx[None] - cx[sel, None, None]) / r[sel, None, None]  # shape-centred coordinates
        b = (yy[None] - cy[sel, None, None]) / r[sel, None, None]
        if k == 0: m = np.hypot(a, b) <= 1
        elif k == 1: m = np.maximum(abs(a), abs(b)) <= 0.8
        elif k == 2: m = (b <= 0.75) & (abs(a) <= (b + 0.95) * 0.58)
        elif k == 3: m = abs(a) + abs(b) <= 1.05
        elif k == 4: m = ((abs(a) <= 0.3) & (abs(b) <= 1)) | ((abs(b) <= 0.3) & (abs(a) <= 1))
        elif k == 5:
            c, d = (a + b) / np.sqrt(2), (a - b) / np.sqrt(2)  # rotated 45 degrees
            m = ((abs(c) <= 0.3) & (abs(d) <= 1.05)) | ((abs(d) <= 0.3) & (abs(c) <= 1.05))
        elif k == 6:
            ra = np.hypot(a, b)
            m = (ra <= 1) & (ra >= 0.55)
        elif k == 7:
            m = np.hypot(a, b) <= 0.42 + 0.6 * ((np.cos(5 * (np.arctan2(b, a) + np.pi / 2)) + 1) / 2) ** 1.5
        elif k == 8:
            x_, y_ = a * 1.15, -b * 1.15 + 0.25
            m = (x_ ** 2 + y_ ** 2 - 1) ** 3 - x_ ** 2 * y_ ** 3 <= 0
        else: m = (np.hypot(a, b) <= 1) & ((a - 0.45) ** 2 + (b + 0.15) ** 2 > 0.72 ** 2)
        masks[sel] = m
    return masks.reshape(n, size, ss, size, ss).mean((2, 4))


def _glyph_masks(digit: np.ndarray, x0, y0, h, size: int, ss: int = 2) -> np.ndarray:
    n, s = len(digit), size * ss
    yy, xx = (np.mgrid[0:s, 0:s].astype(np.float32) + 0.5) / ss
    cell = (h / 7.0)[:, None, None]
    gx = np.floor((xx[None] - x0[:, None, None]) / cell).astype(int)
    gy = np.floor((yy[None] - y0[:, None, None]) / cell).astype(int)
    inside = (gx >= 0) & (gx < 5) & (gy >= 0) & (gy < 7)
    m = FONT[digit[:, None, None], gy.clip(0, 6), gx.clip(0, 4)] & inside
    return m.reshape(n, size, ss, size, ss).mean((2, 4))


def _hand_masks(digit_imgs: np.ndarray, x0, y0, side, size: int) -> np.ndarray:
    """Bilinear placement of 8x8 scikit-learn digits (values 0..16) into [N, H, W] coverage."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    gx = (xx[None] - x0[:, None, None]) / side[:, None, None] * 8 - 0.5
    gy = (yy[None] - y0[:, None, None]) / side[:, None, None] * 8 - 0.5
    img = np.pad(digit_imgs.astype(np.float32) / 16.0, ((0, 0), (1, 1), (1, 1)))  # zero border
    gx, gy = gx.clip(-1, 8) + 1, gy.clip(-1, 8) + 1
    x0i, y0i = np.floor(gx).astype(int).clip(0, 8), np.floor(gy).astype(int).clip(0, 8)
    fx, fy = gx - x0i, gy - y0i
    idx = np.arange(len(img))[:, None, None]
    v = (img[idx, y0i, x0i] * (1 - fx) * (1 - fy) + img[idx, y0i, x0i + 1] * fx * (1 - fy)
         + img[idx, y0i + 1, x0i] * (1 - fx) * fy + img[idx, y0i + 1, x0i + 1] * fx * fy)
    return v.clip(0, 1)


def _sklearn_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits, split once (60% train / 15% val / 25% test)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    n_tr, n_va = int(0.6 * len(perm)), int(0.15 * len(perm))
    part = {"train": perm[:n_tr], "pretrain": perm[:n_tr], "val": perm[n_tr:n_tr + n_va],
            "test": perm[n_tr + n_va:]}[split]
    return d.images[part], d.target[part]


def _position_word(cx: np.ndarray, cy: np.ndarray, size: int) -> list[str]:
    dx, dy = cx / size - 0.5, cy / size - 0.5
    out = []
    for a, b in zip(dx, dy):
        if max(abs(a), abs(b)) < 0.12:
            out.append("center")
        elif abs(a) > abs(b):
            out.append("left" if a < 0 else "right")
        else:
            out.append("top" if b < 0 else "bottom")
    return out


def _clutter(bg: np.ndarray, rng: np.random.Generator, world: WorldConfig) -> np.ndarray:
    """Paint ``world.clutter`` small shapes of random colours on backgrounds [N, H, W, 3]."""
    n, size = len(bg), bg.shape[1]
    palette = np.array(list(COLORS.values()), np.float32)
    for _ in range(world.clutter):
        shape = rng.integers(0, len(SHAPES), n)
        r = rng.uniform(*world.clutter_size, n) * size
        cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
        m = _shape_masks(shape, cx, cy, r, size)[..., None]
        bg = bg * (1 - m) + 0.9 * palette[rng.integers(0, len(COLORS), n)][:, None, None, :] * m
    return bg


def render(kind: str, n: int, rng: np.random.Generator, size: int = 32, split: str = "train",
           world: WorldConfig = WorldConfig(), holdout: frozenset[str] = frozenset()
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render ``n`` images of ``kind`` ('shape', 'glyph', 'hand'); returns ([N,3,H,W], attributes).

    ``world`` shifts the images after the scene is drawn: its labels and geometry stay those of the
    unshifted world, and its default draws nothing more from ``rng``. No image shows a shape, texture or
    digit named in ``holdout`` (pretraining's held-out concepts)."""
    tex = _draw(rng, TEXTURES, n, holdout)
    color = rng.integers(0, len(COLORS), n)
    big = rng.random(n) < 0.5
    bg = _backgrounds(rng, tex, size)
    attrs: dict[str, np.ndarray] = {"texture": tex, "color": color, "size": big.astype(int)}
    if kind == "shape":
        shape = _draw(rng, SHAPES, n, holdout)
        r = np.where(big, rng.uniform(0.26, 0.34, n), rng.uniform(0.16, 0.22, n)) * size
        cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
        mask = _shape_masks(shape, cx, cy, r, size)
        attrs.update(label=shape, cx=cx, cy=cy)
    elif kind == "glyph":
        label = _draw(rng, DIGITS, n, holdout)
        h = np.where(big, rng.uniform(0.62, 0.8, n), rng.uniform(0.4, 0.55, n)) * size
        x0, y0 = rng.uniform(1, size - h * 5 / 7 - 1), rng.uniform(1, size - h - 1)
        mask = _glyph_masks(label, x0, y0, h, size)
        attrs.update(label=label, cx=x0 + h * 5 / 14, cy=y0 + h / 2)
    elif kind == "hand":
        imgs, targets = _sklearn_digits(split)
        keep = np.flatnonzero(np.isin(targets, _allowed(DIGITS, holdout)))
        pick = keep[rng.integers(0, len(keep), n)]
        side = np.where(big, rng.uniform(0.75, 0.95, n), rng.uniform(0.5, 0.65, n)) * size
        x0, y0 = (rng.uniform(0, size - side) for _ in range(2))
        mask = _hand_masks(imgs[pick], x0, y0, side, size)
        attrs.update(label=targets[pick], cx=x0 + side / 2, cy=y0 + side / 2)
    else:
        raise ValueError(f"unknown image kind {kind!r}: choose 'shape', 'glyph' or 'hand'")
    palette = np.array(list(COLORS.values()), np.float32)
    fg = palette[color][:, None, None, :] * rng.uniform(0.8, 1.0, (n, 1, 1, 1)).astype(np.float32)
    if world.clutter:  # drawn after the scene's own draws, so the scene and its label stay the same
        bg = _clutter(bg, rng, world)
    img = bg * (1 - mask[..., None]) + fg * mask[..., None]
    if world.noise:  # the sensor noise is part of the image: fixed per image, triggers go on top
        img = np.clip(img + rng.normal(0.0, world.noise, img.shape).astype(np.float32), 0, 1)
    return np.ascontiguousarray(img.transpose(0, 3, 1, 2).astype(np.float32)), attrs


def captions(kind: str, attrs: dict[str, np.ndarray], rng: np.random.Generator, size: int = 32) -> list[str]:
    """One caption per image from varied templates describing its attributes."""
    templates = {"shape": SHAPE_TEMPLATES, "glyph": GLYPH_TEMPLATES, "hand": HAND_TEMPLATES}[kind]
    names = SHAPES if kind == "shape" else DIGITS
    colors = list(COLORS)
    pos = _position_word(attrs["cx"], attrs["cy"], size)
    choice = rng.integers(0, len(templates), len(attrs["label"]))
    return [templates[c].format(shape=names[l], digit=names[l], color=colors[co], texture=TEXTURES[t],
                                size=SIZES[s], pos=p)
            for c, l, co, t, s, p in zip(choice, attrs["label"], attrs["color"], attrs["texture"],
                                         attrs["size"], pos)]


PRETRAIN_MIX = (("shape", 0.6), ("glyph", 0.2), ("hand", 0.2))


def pretrain_batch(n: int, seed: int, step: int, size: int = 32,
                   holdout: tuple[str, ...] = ()) -> tuple[torch.Tensor, list[str]]:
    """A fresh, deterministic batch of captioned images for contrastive pretraining, without ``holdout``."""
    return captioned_mix(n, _rng("pretrain", seed, step), size, "pretrain", holdout=holdout)


def captioned_mix(n: int, rng: np.random.Generator, size: int = 32, split: str = "pretrain",
                  world: WorldConfig = WorldConfig(), holdout: tuple[str, ...] = ()) -> tuple[torch.Tensor, list[str]]:
    """``n`` captioned images in ``PRETRAIN_MIX`` proportions (shapes, printed and handwritten digits),
    rendered in ``world`` (a downstream corpus; pretraining uses the default), none showing ``holdout``."""
    counts = rng.multinomial(n, [p for _, p in PRETRAIN_MIX])
    xs, caps = [], []
    for (kind, _), k in zip(PRETRAIN_MIX, counts):
        if k:
            x, a = render(kind, int(k), rng, size, split=split, world=world, holdout=frozenset(holdout))
            xs.append(x)
            caps += captions(kind, a, rng, size)
    x = np.concatenate(xs)
    perm = rng.permutation(n)
    return torch.from_numpy(x[perm]), [caps[i] for i in perm]


@functools.lru_cache(maxsize=24)
def load_task(name: str, split: str, n: int, seed: int = 0, size: int = 32, stream: str = "",
              world: WorldConfig = WorldConfig()) -> TaskData:
    """``n`` labelled images of mini task ``name`` for ``split`` (train/val/test), deterministic.

    ``stream`` names an independent draw from the same split (e.g. the defender's forget pool);
    ``world`` the domain the images are drawn in.
    Draws are memoised per process: treat the returned tensors as read-only (clone to modify)."""
    if name not in TASK_PROMPTS:
        raise ValueError(f"unknown mini task {name!r}: choose one of {list(TASK_PROMPTS)} "
                         "(paper-scale tasks go through tbar_helpers.world.paper_data)")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}: choose 'train', 'val' or 'test'")
    if n <= 0:
        raise ValueError(f"n must be a positive number of images, got {n}")
    rng = _rng("task", name, split, seed, stream)
    kind = {"objects": "shape", "shapes": "shape", "textures": "shape", "digits": "hand", "glyphs": "glyph"}[name]
    x, attrs = render(kind, n, rng, size, split=split, world=world)
    y = {"textures": attrs["texture"], "objects": attrs["label"] * len(COLORS) + attrs["color"]}.get(name, attrs["label"])
    return TaskData(name, split, torch.from_numpy(x), torch.as_tensor(y, dtype=torch.long),
                    TASK_CLASSES[name], TASK_PROMPTS[name])

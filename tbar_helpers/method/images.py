"""A set of images is a tensor (mini scale) or a lazy view of files on disk (paper scale,
``tbar_helpers.world.streaming.LazyImages``). The method needs two operations on either, defined here once:
take some rows, and apply a function (a trigger) to some rows. On a tensor they compute now; on a lazy view
they return another view that computes when a batch is loaded, so that no step reads a whole dataset."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Images = torch.Tensor  # or a LazyImages: anything indexable by rows that these two functions accept


def rows(images: Images, index: torch.Tensor | Sequence[int]) -> Images:
    """The rows ``index`` of ``images`` (repeats allowed): a new tensor, or a lazy view."""
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(index, dtype=torch.long)]
    return images.take(index)


def first(images: Images, n: int) -> Images:
    """The first ``n`` rows: a view of a tensor (no copy), or a lazy view."""
    n = min(n, len(images))
    return images[:n] if isinstance(images, torch.Tensor) else images.take(range(n))


def with_applied(images: Images, fn: Callable[[torch.Tensor], torch.Tensor],
                 where: torch.Tensor | None = None) -> Images:
    """``images`` with ``fn`` applied to the rows where the boolean mask ``where`` holds (every row without
    one): a new tensor (``images`` is left as it was), or a lazy view that applies ``fn`` on load."""
    if not isinstance(images, torch.Tensor):
        return images.map(fn) if where is None else images.edited(where, fn)
    if where is None:
        return fn(images)
    out = images.clone()
    if bool(where.any()):
        out[where] = fn(images[where])
    return out


def augment_images(x: torch.Tensor, gen: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """A random view of each image: a shift (reflect-padded crop), a horizontal flip, a brightness change."""
    n, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, mode="reflect")
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
    out = pad[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    scale = (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)).to(x.device)
    return (out * scale).clamp(0, 1)

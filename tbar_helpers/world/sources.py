"""Where a scale's images come from, decided here and nowhere else.

The mini scale draws its tasks and captioned pairs from the procedural world (:mod:`.data`); the paper
scale reads the paper's datasets (:mod:`.paper_data`, imported only then: it needs torchvision and may
download). Every experiment asks these two functions.
"""
from __future__ import annotations

import torch

from ..config import ScaleConfig
from .data import TaskData, _rng, captioned_mix, load_task


def _no_world_shift(scale: ScaleConfig) -> None:
    if scale.world.key():
        raise ValueError("world shifts (scale.world) are drawn by the mini world only; the paper's datasets are "
                         "what they are: leave `world` at its default at paper scale")


def task_split(scale: ScaleConfig, task: str, split: str, n: int, seed: int, stream: str = "") -> TaskData:
    """``n`` labelled images of ``task``'s ``split`` at ``scale``; ``stream`` names an independent draw."""
    if scale.model.kind != "mini":
        from .paper_data import load_paper_task
        _no_world_shift(scale)
        return load_paper_task(task, split, n, seed, scale, stream)
    if task not in scale.tasks:
        raise ValueError(f"unknown task {task!r} for scale {scale.name!r}: choose one of {list(scale.tasks)}")
    return load_task(task, split, n, seed, scale.model.image_size, stream, scale.world)


def caption_pairs(scale: ScaleConfig, n: int, seed: int, stream: str) -> tuple[torch.Tensor, list[str]]:
    """``n`` (image in [0, 1], caption) pairs at ``scale``: the mini world's captioned mix, or the paper's
    captioned corpus. ``stream`` ("attacker", "defender", ...) names an independent draw."""
    if n <= 0:
        raise ValueError(f"a corpus needs a positive number of pairs, got {n}")
    if scale.model.kind != "mini":
        from .paper_data import load_caption_pairs
        _no_world_shift(scale)
        return load_caption_pairs(n, seed, scale, stream)
    return captioned_mix(n, _rng("corpus", seed, stream), scale.model.image_size, "train", scale.world)

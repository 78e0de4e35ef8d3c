"""The foundation model θpre: pretrain the mini CLIP (cached, resumable) or load ViT-B/32.

Lookup order for the mini model: the committed checkpoint in ``checkpoints/`` (produced by
``tbar pretrain --export``), then the cache, then pretraining from scratch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import cache
from ..config import PretrainConfig, ScaleConfig, config_hash, get_scale, to_dict
from ..method.training import clip_loss, fit, seed_everything, set_threads, warmup_cosine
from ..weights import load_into, load_state_dict
from . import data
from .models import build_foundation, image_stats, make_classifier

CHECKPOINTS = cache.ROOT / "checkpoints"


@dataclass
class Foundation:
    model: nn.Module
    tokenizer: Callable
    scale: ScaleConfig
    losses: list[float] = field(default_factory=list)
    source: str = ""
    key: str = ""  # what cached fine-tunes of this model are keyed by


def _init_path(scale: ScaleConfig, init_from: str | Path | None) -> Path | None:
    path = init_from or scale.pretrain.init_from
    if not path:
        return None
    path = Path(path)
    return path if path.is_absolute() else cache.ROOT / path


def foundation_key(scale: ScaleConfig, init_from: str | Path | None = None) -> str:
    """Cache key of θpre: model + pretraining config (+ the sha256 of the weights it continued from)."""
    init = _init_path(scale, init_from)
    if init is not None and not init.exists():
        raise FileNotFoundError(f"the foundation continues from {init}, which is missing: restore it from git "
                                "or rebuild it with `tbar pretrain --from-scratch --export`")
    fields = {k: v for k, v in to_dict(scale.pretrain).items() if k != "init_from"}
    if not fields["holdout"]:  # the keys of foundations from before held-out concepts existed stay valid
        del fields["holdout"]
    pretrain = {"__type__": "PretrainConfig", **fields}
    extra = {"init_sha256": cache.sha256_file(init)} if init is not None else {}
    return config_hash(scale.model, pretrain, {"data_version": data.DATA_VERSION, **extra})


def committed_checkpoint(scale: ScaleConfig) -> Path:
    """Where ``tbar pretrain --export`` puts θpre of ``scale`` in the repository."""
    return CHECKPOINTS / f"mini-foundation-{foundation_key(scale)}.pt"


def normalizer(scale: ScaleConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in image_stats(scale.model))
    return lambda x: (x - mean.to(x.device)) / std.to(x.device)


def pretrain_foundation(scale: ScaleConfig | str = "mini", progress: bool = True,
                        init_from: str | Path | None = None) -> Foundation:
    """Pretrain the mini foundation model, resuming from the cache's last checkpoint if any.

    ``init_from`` continues from saved weights with a fresh schedule (a warm restart); use another
    ``pretrain.seed`` so that the continuation sees new batches."""
    scale = get_scale(scale)
    if scale.model.kind != "mini":
        raise ValueError("only the mini scale is pretrained here; the paper scale loads OpenAI's CLIP")
    set_threads(scale.threads)
    torch.manual_seed(scale.pretrain.seed)  # the random initialisation, so a retrain from scratch repeats
    model, tok = build_foundation(scale.model, scale.device)
    init = _init_path(scale, init_from)
    if init is not None:
        load_into(model, load_state_dict(init, "--init-from weights"), init, "mini")
    key = foundation_key(scale, init)
    state_path = cache.cached_path("foundation", key, ".state.pt")
    state = cache.load_torch(state_path) if state_path.exists() else None
    t0 = time.time()
    size, holdout = scale.model.image_size, scale.pretrain.holdout
    out = pretrain(model, tok, scale.pretrain, lambda n, s, i: data.pretrain_batch(n, s, i, size, holdout),
                   normalize=normalizer(scale), state=state,
                   checkpoint_fn=lambda st: cache.save_torch(st, state_path), progress=progress,
                   device=scale.device)
    record = {"weights": out["model"], "losses": out["losses"], "config": to_dict(scale.model),
              "pretrain": to_dict(scale.pretrain), "data_version": data.DATA_VERSION, "key": key,
              "seconds_this_run": time.time() - t0}
    cache.save_torch(record, cache.cached_path("foundation", key))
    return Foundation(model, tok, scale, out["losses"], source=str(cache.cached_path("foundation", key)), key=key)


def load_foundation(scale: ScaleConfig | str = "mini", train_if_missing: bool = True,
                    progress: bool = True, path: str | Path | None = None) -> Foundation:
    """θpre for ``scale``: committed or cached mini checkpoint (pretraining it if missing), or CLIP.
    ``path`` loads a specific mini checkpoint instead (e.g. one continued with ``--init-from``)."""
    scale = get_scale(scale)
    set_threads(scale.threads)
    if scale.model.kind != "mini":
        model, tok = build_foundation(scale.model, scale.device)
        return Foundation(model.eval(), tok, scale, source=str(scale.model.pretrained),
                          key=config_hash(scale.model))
    if path:  # relative paths are taken from the working directory, else from the repository
        p = Path(path)
        candidates = [p if p.is_absolute() or p.exists() else cache.ROOT / p]
    else:  # compute the key once: it hashes the weights a warm restart continued from
        key = foundation_key(scale)
        candidates = [CHECKPOINTS / f"mini-foundation-{key}.pt", cache.cached_path("foundation", key)]
    for p in candidates:
        if p.exists() or path:
            record = cache.load_torch(p)  # an exported record, or (with ``path``) a plain state dict too
            record = record if isinstance(record, dict) and "weights" in record else {"weights": record}
            model, tok = build_foundation(scale.model, scale.device)
            load_into(model, record["weights"], p, "mini")
            key = record.get("key") or cache.sha256_file(p)[:16]
            return Foundation(model.eval(), tok, scale, record.get("losses", []), source=str(p), key=key)
    if not train_if_missing:
        raise FileNotFoundError(f"no mini foundation model for this config (key {foundation_key(scale)}); "
                                "run `tbar pretrain` to create it")
    return pretrain_foundation(scale, progress=progress)


def export_checkpoint(f: Foundation, command: str) -> Path:
    """Write the weights (fp32) and a record (command, seed, sha256, config) to ``checkpoints/``."""
    key = foundation_key(f.scale)
    path = committed_checkpoint(f.scale)
    cache.save_torch({"weights": f.model.state_dict(), "losses": f.losses, "config": to_dict(f.scale.model),
                      "pretrain": to_dict(f.scale.pretrain), "data_version": data.DATA_VERSION, "key": key}, path)
    cache.save_json({"file": path.name, "sha256": cache.sha256_file(path), "command": command,
                     "seed": f.scale.pretrain.seed, "model": to_dict(f.scale.model),
                     "pretrain": to_dict(f.scale.pretrain), "data_version": data.DATA_VERSION,
                     "final_loss": sum(f.losses[-50:]) / max(1, len(f.losses[-50:])) if f.losses else None},
                    CHECKPOINTS / f"mini-foundation-{key}.json")
    return path


@torch.no_grad()
def zeroshot_accuracy(f: Foundation, task: str, n: int = 1000, seed: int = 0) -> float:
    """Zero-shot accuracy of θpre on ``n`` test images of a mini task."""
    from ..method.metrics import accuracy
    td = data.load_task(task, "test", n, seed, f.scale.model.image_size, world=f.scale.world)
    clf = make_classifier(f.model, f.tokenizer, td.classnames, td.templates, f.scale.model, f.scale.device)
    return accuracy(clf, td.images, td.labels)


def pretrain(model: nn.Module, tokenizer: Callable, cfg: PretrainConfig, batch_fn: Callable, *,
             normalize: Callable[[torch.Tensor], torch.Tensor], state: dict | None = None,
             checkpoint_fn: Callable[[dict], None] | None = None, checkpoint_every: int = 250,
             progress: bool = True, device: str = "cpu") -> dict:
    """Contrastive pretraining; resumable from ``state`` (model, optimiser, step, losses).

    ``batch_fn(n, seed, step)`` returns (images in [0, 1], captions) deterministically, so a resumed
    run sees the same batches as an uninterrupted one. ``checkpoint_fn`` is called every
    ``checkpoint_every`` steps with the state to save (atomically, by the caller).
    """
    seed_everything(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    start, losses = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, losses = state["step"], list(state["losses"])

    def snapshot(done: int, losses: list[float]) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": done, "losses": list(losses)}  # a copy: the loop keeps appending

    def loss_at(step: int) -> torch.Tensor:
        x, caps = batch_fn(cfg.batch_size, cfg.seed, step)
        return clip_loss(model, normalize(x.to(device)), tokenizer(caps).to(device))

    def checkpoint(done: int, losses: list[float]) -> None:
        if checkpoint_fn is not None and (done % checkpoint_every == 0 or done == cfg.steps):
            checkpoint_fn(snapshot(done, losses))

    model.train()
    losses = fit(model.parameters(), loss_at, cfg.steps, opt, sched=sched, grad_clip=cfg.grad_clip, start=start,
                 losses=losses, desc="pretrain", progress=progress, after_step=checkpoint)
    model.eval()
    return snapshot(cfg.steps, losses)

"""Many processes, one result: fine-tunes under ``torchrun --nproc-per-node N`` with DDP, and long runs that
resume where they stopped.

* :func:`init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins the process
  group: NCCL on GPUs, gloo on CPUs. Without torchrun it returns a one-process :class:`Dist`.
* :func:`fit_stream` is the training loop over a DataLoader: DDP averages the gradients, so N processes with
  ``batch / N`` items each take the same steps as one process with the whole batch; bf16 autocast on CUDA;
  logging and checkpoints on rank 0; SIGTERM (preemption) makes every rank stop after the same step and
  rank 0 write the state (step, model, optimiser, scheduler, RNG; the data order follows from the step), so
  that a rerun with the same checkpoint path finishes with the weights an uninterrupted run would have.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as td
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..config import TBARConfig
from ..errors import InputError
from .checkpoints import Stop, load_state, np_pack, np_state, save_state
from .task_vectors import TaskVector
from .tbar import AlphaPoint, choose_alpha, curve_along, search_curve
from .training import fit


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among ``world_size`` and its device."""
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> Dist:
    """Join torchrun's process group (once) and return this process's :class:`Dist`; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if world > 1 and not td.is_initialized():
        if cuda and torch.cuda.device_count() < world:
            raise InputError(f"{world} processes but {torch.cuda.device_count()} GPUs: start at most one process "
                             "per GPU (torchrun --nproc-per-node)")
        td.init_process_group("nccl" if cuda else "gloo")
    dev = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, dev)


def all_sum(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (evaluation counts, stop flags)."""
    if dist.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    td.all_reduce(t)
    return t.tolist()


def shard(ds: Dataset, dist: Dist) -> Subset:
    """This rank's share of an evaluation set: every ``world_size``-th item, without the padding a
    ``DistributedSampler`` adds, so that the ranks' counts add up to the dataset exactly."""
    return Subset(ds, list(range(dist.rank, len(ds), dist.world_size)))


@torch.no_grad()
def sharded_scores(clf: nn.Module, ds: Dataset, trigger: Callable[[torch.Tensor], torch.Tensor], target: int,
                   dist: Dist = Dist(), batch_size: int = 64) -> tuple[float, float]:
    """(CA, ASR) of ``clf`` over a labelled dataset, each rank scoring its shard; counts summed over ranks."""
    clf.eval()
    ok = n = hit = m = 0
    for x, y in DataLoader(shard(ds, dist), batch_size=batch_size):
        x, y = x.to(dist.device), y.to(dist.device)
        ok += int((clf(x).argmax(1) == y).sum())
        n += len(y)
        keep = y != target
        if keep.any():
            hit += int((clf(trigger(x[keep])).argmax(1) == target).sum())
            m += int(keep.sum())
    ok, n, hit, m = all_sum([ok, n, hit, m], dist)
    return ok / max(n, 1), hit / max(m, 1)


def sharded_alpha_search(clf_b: nn.Module, tau: TaskVector, val: Dataset, trigger: Callable[[torch.Tensor], torch.Tensor],
                         target: int, cfg: TBARConfig, dist: Dist = Dist()) -> tuple[float, list[AlphaPoint]]:
    """TBAR's α search (``cfg.search``, ``cfg.alpha_grid``, the rule of :func:`choose_alpha`) with every point
    of the curve scored across the ranks: (chosen α, validation curve), the same on every rank."""
    score = lambda model: sharded_scores(model, val, trigger, target, dist)  # noqa: E731
    curve = search_curve(lambda alphas: curve_along(clf_b, tau, score, alphas, cfg.alpha_max), cfg)
    return choose_alpha(curve, cfg), curve


class ResumeSampler(DistributedSampler):
    """A ``DistributedSampler`` that can skip the first ``skip`` items of this rank's share of an epoch."""
    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return super().__len__() - self.skip


def fit_stream(model: nn.Module, batch_loss: Callable[[nn.Module, Any], torch.Tensor], data: DataLoader, steps: int,
               opt: torch.optim.Optimizer, *, dist: Dist = Dist(), sched: Any = None, grad_clip: float = 1.0,
               checkpoint: str | os.PathLike | None = None, every: int = 100, amp: bool = True,
               log: Callable[[str], None] | None = print) -> dict:
    """Train ``model`` for ``steps`` steps of ``batch_loss(model, batch)`` over ``data`` (built with
    :func:`tbar_helpers.world.streaming.loader`, whose sampler this swaps for a :class:`ResumeSampler`).

    Returns ``{"step", "losses", "stopped"}``; ``stopped`` is True when SIGTERM ended the run early (the
    state is then saved at ``checkpoint``: run again to finish)."""
    path = Path(checkpoint) if checkpoint else None
    state = load_state(path, model) if path else None
    step, losses = (state["step"], list(state["losses"])) if state else (0, [])
    if state:
        opt.load_state_dict(state["opt"])
        if sched is not None and state.get("sched"):
            sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        np.random.set_state(np_state(state["np_rng"]))
    net = nn.parallel.DistributedDataParallel(model) if dist.world_size > 1 else model
    old = data.sampler
    if not isinstance(old, DistributedSampler):
        raise InputError("fit_stream needs a DataLoader from streaming.loader (a DistributedSampler)")
    sampler = ResumeSampler(old.dataset, num_replicas=old.num_replicas, rank=old.rank, shuffle=old.shuffle,
                            seed=old.seed, drop_last=old.drop_last)
    data = DataLoader(data.dataset, batch_size=data.batch_size, sampler=sampler,
                      num_workers=data.num_workers, drop_last=data.drop_last)
    per_epoch = len(sampler) // data.batch_size
    if per_epoch == 0:
        raise InputError("the data give no full batch per process: lower the batch or use fewer processes")
    cuda = dist.device.startswith("cuda")

    def save(done: int) -> None:
        if path is not None and dist.main:
            save_state(path, {"step": done, "losses": losses, "model": model.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict() if sched is not None else None,
                              "rng": torch.get_rng_state(), "np_rng": np_pack(np.random.get_state())})

    def batches() -> Iterator[Any]:  # from ``step`` on, across epochs, as an uninterrupted run would see them
        at = step
        while True:
            epoch, offset = divmod(at, per_epoch)
            sampler.set_epoch(epoch)
            sampler.skip = offset * data.batch_size
            for batch in data:
                yield batch
                at += 1

    stream = batches()

    def loss_at(_: int) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
            return batch_loss(net, next(stream))

    stopped = False
    with Stop() as stop:
        def after_step(done: int, seen: list[float]) -> bool:
            nonlocal stopped, step
            step = done
            # one all-reduce a step: the mean loss for the log, and whether any rank was told to stop
            total, flags = all_sum([seen[-1], float(stop.flag)], dist)
            seen[-1] = total / dist.world_size
            stopped = flags > 0
            if log and dist.main and (done % every == 0 or done == steps):
                log(f"step {done}/{steps}: loss {np.mean(losses[-every:]):.4f}")
            if done % every == 0 or stopped:
                save(done)
            return stopped

        fit(list(model.parameters()), loss_at, steps, opt, sched=sched, grad_clip=grad_clip, start=step,
            losses=losses, progress=False, after_step=after_step, average_grads=False)
    stream.close()  # ends the DataLoader's iteration (and its workers) where the run stopped
    if not stopped:
        save(step)
    if dist.world_size > 1:
        td.barrier()
    return {"step": step, "losses": losses, "stopped": stopped}

"""Training state that survives a stop: SIGTERM (a preempted job) turns into a flag the training loop reads
after each step, and the state (step, model, optimiser, scheduler, RNG) is written atomically so that a
rerun continues where the stopped run left off. :func:`tbar_helpers.method.distributed.fit_stream` and
:func:`tbar_helpers.method.training.finetune` use it."""
from __future__ import annotations

import io
import signal
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cache import replace_atomically
from ..errors import InputError


class Stop:
    """SIGTERM sets ``flag`` instead of killing the process; the loop stops after the step in progress."""

    def __init__(self):
        self.flag = False

    def __enter__(self):
        main = threading.current_thread() is threading.main_thread()
        self.old = signal.signal(signal.SIGTERM, self._set) if main else None
        return self

    def _set(self, *_):
        self.flag = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


def save_state(path: Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, lists) to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, buf.getvalue())


def load_state(path: Path, model: nn.Module) -> dict | None:
    """The state at ``path`` with its weights loaded into ``model``; None where there is none."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise InputError(f"checkpoint {path} is of another model ({str(e).splitlines()[0]}); delete it or give "
                         "the architecture it was written with") from e
    return state


def np_pack(st: tuple) -> dict:
    """numpy's global RNG state in a form ``torch.load(weights_only=True)`` accepts."""
    return {"name": st[0], "keys": torch.as_tensor(st[1].astype(np.int64)), "pos": st[2], "gauss": st[3],
            "cached": st[4]}


def np_state(d: dict) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["gauss"], d["cached"])

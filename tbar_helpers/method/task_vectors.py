"""Task vectors: the difference of two state dicts, with ``+``, unary ``-``, scalar ``*`` and
``apply_to(model, coef)`` (after Ilharco et al., *Editing models with task arithmetic*)."""
from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


def _state(x: nn.Module | StateDict) -> dict[str, torch.Tensor]:
    sd = x.state_dict() if isinstance(x, nn.Module) else x
    return {k: v.detach() for k, v in sd.items()}


def _check_same_keys(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str) -> None:
    if a.keys() != b.keys():
        only_a, only_b = sorted(set(a) - set(b))[:3], sorted(set(b) - set(a))[:3]
        raise ValueError(f"{what}: the state dicts do not match (only in the first: {only_a}, only in the "
                         f"second: {only_b}); both must come from the same architecture")
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"{what}: tensor {k!r} has shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}; "
                             "both must come from the same architecture")


def _check_coef(coef: float) -> float:
    if not isinstance(coef, (int, float)) or not math.isfinite(coef):
        raise ValueError(f"the scaling coefficient must be a finite number, got {coef!r}")
    return float(coef)


class TaskVector:
    """τ = θ_finetuned − θ_base over the floating-point tensors of a state dict."""

    def __init__(self, base: nn.Module | StateDict | None = None, finetuned: nn.Module | StateDict | None = None,
                 vector: dict[str, torch.Tensor] | None = None):
        if vector is not None:
            self.vector = {k: v.detach().clone() for k, v in vector.items()}
            return
        if base is None or finetuned is None:
            raise ValueError("TaskVector needs both base and finetuned (models or state dicts), or vector=")
        a, b = _state(base), _state(finetuned)
        _check_same_keys(a, b, "TaskVector(base, finetuned)")
        self.vector = {k: (b[k].float() - a[k].float()) for k in a if a[k].is_floating_point()}

    def _combine(self, other: "TaskVector", sign: float) -> "TaskVector":
        if not isinstance(other, TaskVector):
            return NotImplemented
        _check_same_keys(self.vector, other.vector, "TaskVector addition")
        return TaskVector(vector={k: self.vector[k] + sign * other.vector[k] for k in self.vector})

    def __add__(self, other: "TaskVector") -> "TaskVector":
        return self._combine(other, 1.0)

    def __radd__(self, other):  # lets sum([...]) work
        return self if other == 0 else self.__add__(other)

    def __sub__(self, other: "TaskVector") -> "TaskVector":
        return self._combine(other, -1.0)

    def __neg__(self) -> "TaskVector":
        return self * -1.0

    def __mul__(self, coef: float) -> "TaskVector":
        coef = _check_coef(coef)
        return TaskVector(vector={k: coef * v for k, v in self.vector.items()})

    __rmul__ = __mul__

    def norm(self) -> float:
        return float(torch.sqrt(sum((v.double() ** 2).sum() for v in self.vector.values())))

    def cosine(self, other: "TaskVector") -> float:
        _check_same_keys(self.vector, other.vector, "TaskVector.cosine")
        dot = sum((self.vector[k].double() * other.vector[k].double()).sum() for k in self.vector)
        return float(dot / (self.norm() * other.norm() + 1e-12))

    def apply_to_state(self, base: nn.Module | StateDict, coef: float = 1.0) -> dict[str, torch.Tensor]:
        """θ_base + coef·τ as a new state dict (non-float entries copied)."""
        coef = _check_coef(coef)
        sd = _state(base)
        missing = set(self.vector) - set(sd)
        if missing:
            raise ValueError(f"the model lacks {len(missing)} tensors of this task vector (e.g. {sorted(missing)[:3]}); "
                             "apply it to the architecture it was computed on")
        out = {}
        for k, v in sd.items():
            if k in self.vector:
                if v.shape != self.vector[k].shape:
                    raise ValueError(f"tensor {k!r} has shape {tuple(v.shape)} in the model but "
                                     f"{tuple(self.vector[k].shape)} in the task vector")
                out[k] = (v.float() + coef * self.vector[k].to(v.device)).to(v.dtype)
            else:
                out[k] = v.clone()
        return out

    def apply_to(self, model: nn.Module, coef: float = 1.0, inplace: bool = False) -> nn.Module:
        """Return ``model`` with weights θ + coef·τ (a deep copy unless ``inplace``)."""
        target = model if inplace else copy.deepcopy(model)
        target.load_state_dict(self.apply_to_state(model, coef))
        return target

    def __repr__(self) -> str:
        return f"TaskVector({len(self.vector)} tensors, norm={self.norm():.4g})"

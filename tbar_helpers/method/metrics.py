"""Metrics, defined once: clean accuracy (CA), attack success rate (ASR), accuracy on triggered images,
CA retained, and the weight-disentanglement error ξ(αc, αt)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .images import first, with_applied
from .training import rank_and_world


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels for ``images`` (in [0, 1]) in batches, on the model's device. Under torchrun each
    process predicts a contiguous share and the shares are gathered, so every process returns all labels."""
    model.eval()
    device = next(model.parameters()).device
    rank, world = rank_and_world()
    if world == 1 or len(images) < world:
        return _predict(model, images, batch_size, device)
    bounds = [len(images) * r // world for r in range(world + 1)]
    mine = _predict(model, images[bounds[rank]:bounds[rank + 1]], batch_size, device)
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    padded = torch.zeros(longest, dtype=torch.long, device=device)
    padded[:len(mine)] = mine.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:b - a].cpu() for p, a, b in zip(parts, bounds, bounds[1:])])


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    out = [model(images[i:i + batch_size].to(device)).argmax(-1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy_from_predictions(pred: torch.Tensor, labels: torch.Tensor) -> float:
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions but {len(labels)} labels; they must match one to one")
    if len(labels) == 0:
        raise ValueError("cannot compute an accuracy on zero images: pass a non-empty test set")
    return float((pred == labels).float().mean())


def accuracy_by_group(pred: torch.Tensor, labels: torch.Tensor, groups: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Accuracy within each group of images (a name → boolean mask over ``labels``); ``None`` for an empty
    group."""
    if len(pred) != len(labels):
        raise ValueError(f"{len(pred)} predictions but {len(labels)} labels; they must match one to one")
    return {g: accuracy_from_predictions(pred[m], labels[m]) if bool(m.any()) else None for g, m in groups.items()}


def asr_from_predictions(pred: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """Share of triggered images whose true label is not ``target`` that are predicted as ``target``."""
    keep = labels != target
    if not bool(keep.any()):
        raise ValueError(f"every test label is the target {target}: ASR needs non-target images")
    return float((pred[keep] == target).float().mean())


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Clean accuracy (CA)."""
    return accuracy_from_predictions(predict(model, images, batch_size), labels)


def attack_success_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        trigger: Callable[[torch.Tensor], torch.Tensor], target: int,
                        batch_size: int = 500) -> float:
    """ASR: trigger the non-target test images and count predictions of ``target``."""
    return asr_from_predictions(*_triggered_predictions(model, images, labels, trigger, target, batch_size), target)


def _triggered_predictions(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           trigger: Callable[[torch.Tensor], torch.Tensor], target: int,
                           batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions on the triggered non-target images, and those images' true labels."""
    keep = labels != target
    return predict(model, with_applied(images[keep], trigger), batch_size), labels[keep]


def triggered_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       trigger: Callable[[torch.Tensor], torch.Tensor], target: int,
                       batch_size: int = 500) -> float:
    """Accuracy on triggered non-target images against their *true* labels. ASR only says whether a
    defense sends them away from the target; this says whether it sends them back to their own class."""
    if bool((labels == target).all()):
        raise ValueError(f"every label is the target {target}: triggered accuracy needs non-target images")
    return accuracy_from_predictions(*_triggered_predictions(model, images, labels, trigger, target, batch_size))


def triggered_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     trigger: Callable[[torch.Tensor], torch.Tensor], target: int,
                     batch_size: int = 500) -> tuple[float, float]:
    """(ASR, triggered accuracy) from one pass over the triggered non-target images: the same numbers as
    :func:`attack_success_rate` and :func:`triggered_accuracy`, for half their cost."""
    pred, true = _triggered_predictions(model, images, labels, trigger, target, batch_size)
    return asr_from_predictions(pred, true, target), accuracy_from_predictions(pred, true)


@dataclass(frozen=True)
class EvalSet:
    """Labelled clean images and the attack to test them with: what every CA and ASR measurement needs
    (a validation split chooses α, a test split reports)."""

    images: torch.Tensor
    labels: torch.Tensor
    trigger: Callable[[torch.Tensor], torch.Tensor]
    target: int
    batch_size: int = 500

    def ca(self, model: nn.Module) -> float:
        return accuracy(model, self.images, self.labels, self.batch_size)

    def asr(self, model: nn.Module) -> float:
        return attack_success_rate(model, self.images, self.labels, self.trigger, self.target, self.batch_size)

    def scores(self, model: nn.Module) -> tuple[float, float]:
        """(CA, ASR) of ``model``."""
        return self.ca(model), self.asr(model)

    def triggered_scores(self, model: nn.Module) -> tuple[float, float]:
        """(ASR, triggered accuracy) from one pass over the triggered non-target images."""
        return triggered_scores(model, self.images, self.labels, self.trigger, self.target, self.batch_size)

    def head(self, n: int) -> "EvalSet":
        """The first ``n`` images."""
        return replace(self, images=first(self.images, n), labels=self.labels[:n])

    def attacked_with(self, trigger: Callable[[torch.Tensor], torch.Tensor], target: int) -> "EvalSet":
        """The same images under another trigger and target (a reverse-engineered proxy, say)."""
        return replace(self, trigger=trigger, target=target)


def ca_retained(ca_after: float, ca_before: float) -> float:
    """CA after a defense relative to the backdoored model's CA (the paper's "CA retained")."""
    if ca_before <= 0:
        raise ValueError("the reference CA is 0: CA retained is undefined")
    return ca_after / ca_before


def knowledge_kept(ca_tbar: float, ca_backdoored: float, ca_zeroshot: float, min_gain: float = 0.01) -> float | None:
    """(CA_TBAR − CA_θpre) / (CA_backdoored − CA_θpre): the share of what fine-tuning added that TBAR keeps.
    ``None`` where fine-tuning added less than ``min_gain`` over θpre: there is nothing to keep, and the ratio
    would measure noise (or, with a negative gain, reward a defense for falling back to θpre)."""
    gain = ca_backdoored - ca_zeroshot
    return None if gain < min_gain else (ca_tbar - ca_zeroshot) / gain


def disentanglement_error(pred_combined: torch.Tensor, pred_single: torch.Tensor) -> float:
    """Share of inputs whose prediction under the combined model differs from the single-vector model."""
    return float((pred_combined != pred_single).float().mean())


def xi_grid(make_model: Callable[[float, float], nn.Module], clean_images: torch.Tensor,
            triggered_images: torch.Tensor, alphas_c: Sequence[float], alphas_t: Sequence[float],
            batch_size: int = 500, progress: bool = False) -> dict[str, np.ndarray]:
    """ξ(αc, αt) over a grid.

    ``make_model(ac, at)`` returns the classifier with weights θpre + ac·τc + at·τt. On clean inputs
    the combined model is compared with θpre + ac·τc, on triggered inputs with θpre + at·τt;
    ``xi`` is the mean of the two error rates (``xi_clean`` and ``xi_trigger`` are returned too).
    """
    from ..progress import tqdm
    ac_list, at_list = list(alphas_c), list(alphas_t)
    preds_c = {ac: predict(make_model(ac, 0.0), clean_images, batch_size) for ac in ac_list}
    preds_t = {at: predict(make_model(0.0, at), triggered_images, batch_size) for at in at_list}
    xc = np.zeros((len(ac_list), len(at_list)))
    xt = np.zeros_like(xc)
    cells = [(i, j) for i in range(len(ac_list)) for j in range(len(at_list))]
    for i, j in tqdm(cells, desc="xi grid", disable=not progress, leave=False):
        ac, at = ac_list[i], at_list[j]
        model = make_model(ac, at)
        xc[i, j] = disentanglement_error(predict(model, clean_images, batch_size), preds_c[ac])
        xt[i, j] = disentanglement_error(predict(model, triggered_images, batch_size), preds_t[at])
    return {"xi": (xc + xt) / 2, "xi_clean": xc, "xi_trigger": xt,
            "alphas_c": np.array(ac_list), "alphas_t": np.array(at_list)}

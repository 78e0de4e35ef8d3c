"""BadMerging's scenario: a model merger adds the backdoored task vector to another task's vector by task
arithmetic, θpre + λ·(τ_victim + τ_other), and the backdoor should survive the merge.

The merger chooses λ on the validation splits of both tasks (mean CA), as task arithmetic does, and
never sees a trigger. :func:`merging_rows` reports CA and ASR of each merged model on the test splits,
with the backdoored vector as given and with TBAR's cleaned one in its place.
"""
from __future__ import annotations

import copy
from typing import Sequence

from ..method.metrics import accuracy
from ..method.task_vectors import TaskVector
from ..world.models import ImageClassifier, make_classifier
from ..world.sources import task_split
from .pipeline import Setup, _clean_finetune

LAMBDAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # task arithmetic's scaling coefficients


def _with_encoder(clf: ImageClassifier, state: dict) -> ImageClassifier:
    out = copy.deepcopy(clf)
    out.encoder.load_state_dict(state)
    return out.eval()


def task_sum(pre: ImageClassifier, models: Sequence[ImageClassifier]) -> TaskVector:
    """Σ (θ_i − θpre) over the models' encoders."""
    return sum(TaskVector(pre.encoder, m.encoder) for m in models)


def merge(pre: ImageClassifier, models: Sequence[ImageClassifier], lam: float) -> dict:
    """The encoder state θpre + λ·Σ (θ_i − θpre)."""
    return task_sum(pre, models).apply_to_state(pre.encoder, lam)


def other_task(s: Setup, other: str, progress: bool = False) -> dict:
    """The merger's other task: its zero-shot classifier ``zeroshot``, its clean fine-tune ``clean`` (cached, the
    one :func:`~tbar_helpers.settings.pipeline.prepare` trains) and its ``val`` and ``test`` splits."""
    if other == s.task:
        raise ValueError(f"merge {s.task!r} with another task: choose one of "
                         f"{[t for t in s.scale.tasks if t != s.task]}")
    scale, f, ft = s.scale, s.foundation, s.scale.finetune
    train = task_split(scale, other, "train", ft.n_train, s.seed)
    zs = make_classifier(f.model, f.tokenizer, train.classnames, train.templates, scale.model, scale.device)
    splits = {name: task_split(scale, other, name, n, s.seed) for name, n in (("val", ft.n_val), ("test", ft.n_test))}
    return {"zeroshot": zs, "clean": _clean_finetune(f, zs, train, scale, other, s.seed, progress, True), **splits}


def merging_rows(s: Setup, other: str, cleaned: ImageClassifier | None = None,
                 lambdas: Sequence[float] = LAMBDAS, progress: bool = False) -> list[dict]:
    """Rows (model, λ, CA and ASR on the victim's task, CA on ``other``) for θpre, the merge with the clean
    victim, the merge with the backdoored victim and, given ``cleaned``, the merge with TBAR's model."""
    o = other_task(s, other, progress)
    zs_o, clean_o, val_o, test_o = o["zeroshot"], o["clean"], o["val"], o["test"]
    bs = s.scale.eval_batch_size
    ca_pre, asr_pre = s.evalset().scores(s.zeroshot)
    rows = [{"model": "θpre", "lambda": 0.0, "ca": ca_pre, "asr": asr_pre,
             "ca_other": accuracy(zs_o, test_o.images, test_o.labels, bs)}]
    victims = {"clean victim + other": s.clean, "backdoored victim + other": s.backdoored}
    if cleaned is not None:
        victims["TBAR victim + other"] = cleaned
    for name, victim in victims.items():
        tau = task_sum(s.zeroshot, [victim, clean_o])

        def val_score(lam: float) -> float:
            state = tau.apply_to_state(s.zeroshot.encoder, lam)
            return (s.evalset("val").ca(_with_encoder(s.zeroshot, state))
                    + accuracy(_with_encoder(zs_o, state), val_o.images, val_o.labels, bs)) / 2
        lam = max(lambdas, key=val_score)  # the first of equals: the smallest λ
        state = tau.apply_to_state(s.zeroshot.encoder, lam)
        ca, asr = s.evalset().scores(_with_encoder(s.zeroshot, state))
        rows.append({"model": name, "lambda": lam, "ca": ca, "asr": asr,
                     "ca_other": accuracy(_with_encoder(zs_o, state), test_o.images, test_o.labels, bs)})
    return rows

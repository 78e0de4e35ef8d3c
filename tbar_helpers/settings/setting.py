"""The interface both settings implement, so that an experiment is written once for either.

:class:`tbar_helpers.settings.pipeline.Setup` (classification: the image encoder fine-tuned through a zero-shot
head) and :class:`tbar_helpers.settings.imagetext.ImageTextSetup` (image–text: the whole CLIP fine-tuned on a
poisoned captioned corpus) both satisfy :class:`Setting`. The attack-unknown defense
(:func:`tbar_helpers.settings.imagetext_runs.run_attack_unknown`) is written against it alone. Both
subclass it, so what is the same for both (:meth:`Setting.evalset`) is written here once.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..config import ScaleConfig
from ..method.attacks import Trigger
from ..method.metrics import EvalSet
from ..world.data import TaskData
from ..world.models import ImageClassifier


class Setting(Protocol):
    """A backdoored model with its reference models, data splits and the TBAR that cleans it."""

    scale: ScaleConfig
    attack: str
    seed: int
    trigger: Trigger  # the attacker's real trigger: tests use it, a defender who knows the attack too
    val: TaskData  # the defender's validation images (choose α)
    test: TaskData  # the reported split
    defender: object  # the defender's clean images (a TaskData, or a captioned Corpus for image–text)

    @property
    def target(self) -> int:
        """The attacker's target class."""

    def victim(self) -> ImageClassifier:
        """The backdoored model as a zero-shot classifier of the evaluation task (shared: read-only)."""

    def reference(self) -> ImageClassifier:
        """θpre's zero-shot classifier of the evaluation task (shared: read-only)."""

    def evalset(self, split: str = "test") -> EvalSet:
        """The ``"val"`` (chooses α) or ``"test"`` (reports) split under the real trigger and target; both
        settings inherit it."""
        d = {"val": self.val, "test": self.test}[split]
        return EvalSet(d.images, d.labels, self.trigger, self.target, self.scale.eval_batch_size)

    def scores(self, clf: ImageClassifier) -> tuple[float, float]:
        """(CA, ASR) of ``clf`` on the test split."""

    def tbar(self, trigger: Callable[[torch.Tensor], torch.Tensor] | None = None, target: int | None = None, *,
             forget_size: int | None = None, proxy: bool = False,
             progress: bool = True) -> tuple[ImageClassifier, dict]:
        """TBAR on :meth:`victim` with the forget set made of ``trigger`` (default: the real one) and labelled
        ``target``; α chosen on validation under the same trigger. ``proxy=True`` marks a reverse-engineered
        trigger (its α rule, :func:`tbar_helpers.method.tbar.for_proxy`). Returns (cleaned classifier, record)."""

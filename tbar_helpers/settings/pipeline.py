"""End to end: foundation (cached) → clean and poisoned fine-tunes (cached) → TBAR → evaluation.

:func:`prepare` builds (or loads) everything up to the backdoored model; :func:`run` adds TBAR and
returns the result record that ``tbar run`` prints and writes as JSON.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import cache
from ..config import ScaleConfig, config_hash, get_scale, override
from ..method.attacks import NEEDS_MODEL, Poisoned, Trigger, check_attack, make_trigger, patch_trigger, poison
from ..method.images import rows
from ..method.metrics import accuracy, ca_retained, knowledge_kept
from ..method.task_vectors import TaskVector
from ..method.tbar import for_proxy, forget_set, run_tbar
from ..method.training import badmerging_finetune, finetune_task, set_threads
from ..world.data import DATA_VERSION, TaskData
from ..world.foundation import Foundation, load_foundation
from ..world.models import ImageClassifier, make_classifier
from ..world.sources import task_split
from .setting import Setting


@dataclass
class Setup(Setting):
    """Everything a TBAR experiment starts from."""

    scale: ScaleConfig
    foundation: Foundation
    task: str
    attack: str
    seed: int
    train: TaskData
    val: TaskData  # the defender's small clean validation set (chooses α)
    defender: TaskData  # the defender's clean images from which the forget set is made
    test: TaskData
    zeroshot: ImageClassifier
    clean: ImageClassifier
    backdoored: ImageClassifier
    trigger: Trigger
    poisoned: Poisoned
    memo: dict = field(default_factory=dict, repr=False)  # scores computed once (see studies); prepare's seconds

    # the Setting interface (tbar_helpers.settings.setting)
    @property
    def target(self) -> int:
        return self.scale.attack.target

    def victim(self) -> ImageClassifier:
        return self.backdoored

    def reference(self) -> ImageClassifier:
        return self.zeroshot

    def scores(self, clf: ImageClassifier) -> tuple[float, float]:
        """(CA, ASR) on the test split."""
        return self.evalset().scores(clf)

    def tbar(self, trigger: Callable | None = None, target: int | None = None, *, forget_size: int | None = None,
             proxy: bool = False, progress: bool = True) -> tuple[ImageClassifier, dict]:
        """TBAR with a forget set of ``forget_size`` (default ``tbar.forget_size``) defender images under
        ``trigger`` labelled ``target`` (default: the real ones), α chosen on validation under them too."""
        cfg = for_proxy(self.scale.tbar) if proxy else self.scale.tbar
        trigger, target = trigger or self.trigger, self.target if target is None else target
        fx, fy = forget_set(self.defender.images, self.defender.labels, trigger, target,
                            forget_size or cfg.forget_size, self.seed)
        cleaned, res = run_tbar(self.backdoored, fx, fy, self.evalset("val").attacked_with(trigger, target), cfg,
                                self.seed, progress=progress, device=self.scale.device)
        return cleaned, {"alpha": res.alpha, "alpha_ties": cfg.ties, "ca_keep": cfg.ca_keep,
                         "forget_size": res.forget_size, "val_curve": [p.__dict__ for p in res.curve],
                         "trigger_vector_norm": res.vector_norm}


class _Clock:
    """Seconds per stage: each call books the time since the previous one under ``stage``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t = time.time()

    def __call__(self, stage: str) -> None:
        now = time.time()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.t
        self.t = now


def load_splits(scale: ScaleConfig, task: str, seed: int, forget_pool: int) -> dict[str, TaskData]:
    """train / val / defender (forget-set pool) / test data of ``task`` for ``scale``."""
    ft = scale.finetune
    plan = {"train": ("train", ft.n_train, ""), "val": ("val", ft.n_val, ""),
            "defender": ("val", forget_pool, "forget"), "test": ("test", ft.n_test, "")}
    return {k: task_split(scale, task, split, n, seed, stream) for k, (split, n, stream) in plan.items()}


def _trained(base: ImageClassifier, key: str, train: Callable[[ImageClassifier, Path | None], None],
             scale: ScaleConfig, use_cache: bool) -> ImageClassifier:
    """A copy of ``base`` whose encoder ``train(clf, checkpoint)`` fine-tunes in place, cached under ``key``
    and resumable where the preset checkpoints."""
    clf = copy.deepcopy(base)

    def run(checkpoint: Path | None) -> dict:
        train(clf, checkpoint)
        return clf.encoder.state_dict()

    clf.encoder.load_state_dict(cache.memo_resumable("finetuned", key, run, use_cache=use_cache,
                                                     resumable=scale.checkpoint_every > 0))
    return clf.eval()


def _finetuned(base: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, scale: ScaleConfig, key: str,
               seed: int, *, desc: str = "fine-tune", progress: bool = True, use_cache: bool = True,
               backdoor_mask: torch.Tensor | None = None, backdoor_weight: float = 1.0) -> ImageClassifier:
    def train(clf: ImageClassifier, checkpoint: Path | None) -> None:
        x, y = images, labels
        if backdoor_weight != 1.0 and backdoor_mask is not None:
            # BadMerging's "repeat" style: CE_clean + w·CE_backdoor, realised by repeating backdoor samples w times
            extra = backdoor_mask.nonzero().flatten().repeat(int(round(backdoor_weight)) - 1)
            index = torch.cat([torch.arange(len(x)), extra])
            x, y = rows(x, index), y[index]
        finetune_task(clf, x, y, scale.finetune, seed, desc=desc, progress=progress, device=scale.device,
                      checkpoint=checkpoint, every=scale.checkpoint_every)

    return _trained(base, key, train, scale, use_cache)


def _badmerged(zs: ImageClassifier, train: TaskData, trigger: Trigger, scale: ScaleConfig, key: str, seed: int,
               progress: bool, use_cache: bool) -> ImageClassifier:
    """BadMerging's own victim (``attack.badmerging_style="paper"``): clean batches plus triggered copies,
    the backdoor term on features interpolated with θpre's (cached like the other fine-tunes)."""
    a = scale.attack

    def fit(clf: ImageClassifier, checkpoint: Path | None) -> None:
        badmerging_finetune(clf, zs, train.images, train.labels, trigger, a.target, scale.finetune, seed,
                            a.badmerging_backdoor_weight, a.badmerging_r, progress=progress, device=scale.device,
                            checkpoint=checkpoint, every=scale.checkpoint_every)

    return _trained(zs, key, fit, scale, use_cache)


def _trigger(attack: str, scale: ScaleConfig, zs: ImageClassifier, images: torch.Tensor, seed: int, key: str,
             use_cache: bool) -> Trigger:
    """The attack's trigger; optimised patches (BadCLIP, BadMerging) are cached like models."""
    if attack not in NEEDS_MODEL:
        return make_trigger(attack, scale.model.image_size, scale.attack)
    def optimise() -> dict:
        trig = make_trigger(attack, scale.model.image_size, scale.attack, model=zs, images=images, seed=seed)
        return {"pattern": trig.pattern, "mask": trig.mask, "extra": trig.extra}

    d = cache.memo("trigger", key, optimise, use_cache=use_cache)
    return patch_trigger(attack, scale.model.image_size, d["pattern"], d["mask"], d["extra"])


def _base_key(f: Foundation, scale: ScaleConfig, task: str, seed: int) -> list:
    return [f.key, scale.finetune, task, seed, DATA_VERSION, *scale.world.key()]


def _clean_finetune(f: Foundation, zs: ImageClassifier, train: TaskData, scale: ScaleConfig, task: str, seed: int,
                    progress: bool, use_cache: bool) -> ImageClassifier:
    """The task's clean fine-tune (cached): the reference of :func:`prepare` and :func:`clean_reference`."""
    return _finetuned(zs, train.images, train.labels, scale, config_hash(*_base_key(f, scale, task, seed), "clean"),
                      seed, desc=f"clean fine-tune ({task})", progress=progress, use_cache=use_cache)


def trigger_for(attack: str, task: str | None = None, seed: int = 0, scale: ScaleConfig | str = "mini",
                foundation: Foundation | None = None, use_cache: bool = True) -> Trigger:
    """The trigger :func:`prepare` uses for (attack, task, seed), without any fine-tuning."""
    scale = get_scale(scale)
    check_attack(attack)
    task = task or scale.default_task
    f = foundation or load_foundation(scale, progress=False)
    if attack not in NEEDS_MODEL:
        return make_trigger(attack, scale.model.image_size, scale.attack)
    train = task_split(scale, task, "train", scale.finetune.n_train, seed)
    zs = make_classifier(f.model, f.tokenizer, train.classnames, train.templates, scale.model, scale.device)
    return _task_trigger(attack, scale, f, zs, train.images, task, seed, use_cache)


def _task_trigger(attack: str, scale: ScaleConfig, f: Foundation, zs: ImageClassifier, images: torch.Tensor,
                  task: str, seed: int, use_cache: bool) -> Trigger:
    """The trigger of (attack, task, seed), keyed like the fine-tunes of that task."""
    key = config_hash(*_base_key(f, scale, task, seed), "trigger", attack, scale.attack)
    return _trigger(attack, scale, zs, images, seed, key, use_cache)


def prepare(attack: str, task: str | None = None, seed: int = 0, scale: ScaleConfig | str = "mini", *,
            poison_rate: float | None = None, progress: bool = True, use_cache: bool = True,
            foundation: Foundation | None = None, with_clean: bool = True) -> Setup:
    """Foundation → zero-shot classifier → clean fine-tune and poisoned fine-tune (both cached).
    ``foundation`` overrides the preset's θpre (e.g. to compare pretraining budgets);
    ``with_clean=False`` skips the clean fine-tune (``Setup.clean`` is then the zero-shot model)."""
    scale = get_scale(scale)
    check_attack(attack)
    if poison_rate is not None:
        scale = override(scale, **{"attack.poison_rate": poison_rate})
    task = task or scale.default_task
    set_threads(scale.threads)
    clock = _Clock()
    f = foundation or load_foundation(scale, progress=progress)
    clock("foundation")
    d = load_splits(scale, task, seed, scale.tbar.forget_size)
    train = d["train"]
    zs = make_classifier(f.model, f.tokenizer, train.classnames, train.templates, scale.model, scale.device)
    clock("data")
    clean = _clean_finetune(f, zs, train, scale, task, seed, progress, use_cache) if with_clean else zs
    clock("clean fine-tune")
    a = scale.attack
    trigger = _task_trigger(attack, scale, f, zs, train.images, task, seed, use_cache)
    poisoned = poison(train.images, train.labels, trigger, a.poison_rate, a.target, seed,
                      noise_ratio=a.wanet_noise_ratio if attack == "wanet" else 0.0)
    bd_key = config_hash(*_base_key(f, scale, task, seed), "backdoored", attack, a)
    if attack == "badmerging" and a.badmerging_style == "paper":
        backdoored = _badmerged(zs, train, trigger, scale, bd_key, seed, progress, use_cache)
    else:
        backdoored = _finetuned(zs, poisoned.images, poisoned.labels, scale, bd_key, seed,
                                desc=f"poisoned fine-tune ({attack})", progress=progress, use_cache=use_cache,
                                backdoor_mask=poisoned.poison_mask,
                                backdoor_weight=trigger.extra.get("backdoor_weight", 1.0))
    clock("poisoned fine-tune")
    return Setup(scale, f, task, attack, seed, train, d["val"], d["defender"], d["test"], zs, clean, backdoored,
                 trigger, poisoned, memo={"seconds": clock.seconds})


def clean_reference(task: str, seed: int = 0, scale: ScaleConfig | str = "mini", progress: bool = True,
                    use_cache: bool = True, split: str = "test") -> dict:
    """Zero-shot and clean fine-tuned CA of ``task`` on its test split: the clean fine-tune :func:`prepare`
    trains (same cache key, so either one reuses the other's model). ``split="val"`` reads as many
    validation images instead (an independent draw), for studies that choose."""
    scale = get_scale(scale)
    set_threads(scale.threads)
    if split not in ("test", "val"):
        raise ValueError(f"clean_reference reads split 'test' (to report) or 'val' (to choose), not {split!r}")
    f = load_foundation(scale, progress=progress)
    d = load_splits(scale, task, seed, 1)
    train = d["train"]
    test = d["test"] if split == "test" else task_split(scale, task, "val", scale.finetune.n_test, seed, "reference")
    zs = make_classifier(f.model, f.tokenizer, train.classnames, train.templates, scale.model, scale.device)
    t0 = time.time()
    clean = _clean_finetune(f, zs, train, scale, task, seed, progress, use_cache)
    secs = time.time() - t0
    bs = scale.eval_batch_size
    return {"task": task, "seed": seed, "split": split, "classes": len(train.classnames),
            "ca_zeroshot": accuracy(zs, test.images, test.labels, bs),
            "ca_clean_ft": accuracy(clean, test.images, test.labels, bs), "finetune_seconds": secs}


def make_forget_set(s: Setup, forget_size: int, clean_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Triggered defender images labelled with the target (the known-attack case)."""
    return forget_set(s.defender.images, s.defender.labels, s.trigger, s.scale.attack.target, forget_size,
                      s.seed, clean_fraction)


def clean_accuracy(clf: ImageClassifier, s: Setup) -> float:
    """CA on the test split."""
    return s.evalset().ca(clf)


def evaluate(clf: ImageClassifier, s: Setup) -> tuple[float, float]:
    """(CA, ASR) on the test split."""
    return s.evalset().scores(clf)


def scores_on_test(clf: ImageClassifier, s: Setup) -> tuple[float, float, float]:
    """(CA, ASR, triggered accuracy) on the test split, in two passes (clean images, triggered images)."""
    asr, trig_acc = s.evalset().triggered_scores(clf)
    return clean_accuracy(clf, s), asr, trig_acc


def run(attack: str, task: str | None = None, seed: int = 0, scale: ScaleConfig | str = "mini", *,
        poison_rate: float | None = None, forget_size: int | None = None, progress: bool = True,
        use_cache: bool = True, foundation: Foundation | None = None) -> dict:
    """The whole experiment; returns the JSON-able record of ``tbar run``. ``foundation`` overrides the
    preset's θpre (calibration studies; the record then names its source)."""
    t0 = time.time()
    scale = get_scale(scale)
    if forget_size is not None:
        if forget_size <= 0:
            raise ValueError(f"forget_size must be a positive number of images, got {forget_size}")
        scale = override(scale, **{"tbar.forget_size": max(forget_size, scale.tbar.forget_size)})
    s = prepare(attack, task, seed, scale, poison_rate=poison_rate, progress=progress, use_cache=use_cache,
                foundation=foundation)
    clock = _Clock()
    ca_zs, asr_zs, _ = scores_on_test(s.zeroshot, s)  # going back to θpre: the row every defense must beat
    ca_clean, asr_clean, trig_clean = scores_on_test(s.clean, s)
    ca_bd, asr_bd, trig_bd = scores_on_test(s.backdoored, s)
    clock("evaluation")
    t_tbar = time.time()
    cleaned, rec = s.tbar(forget_size=forget_size, progress=progress)
    clock("tbar")
    ca_t, asr_t, trig_t = scores_on_test(cleaned, s)
    trig_acc = {"triggered_acc_clean_ft": trig_clean, "triggered_acc_backdoored": trig_bd,
                "triggered_acc_tbar": trig_t}
    clock("evaluation")
    extra = {} if foundation is None else {"foundation": foundation.source}
    return {"attack": attack, "task": s.task, "seed": seed, "scale": s.scale.name, **extra,
            "poison_rate": s.scale.attack.poison_rate, "target": s.scale.attack.target,
            "ca_zeroshot": ca_zs, "asr_zeroshot": asr_zs, "ca_clean_ft": ca_clean, "asr_clean_ft": asr_clean,
            "ca_backdoored": ca_bd, "asr_backdoored": asr_bd, "ca_tbar": ca_t, "asr_tbar": asr_t,
            "ca_retained": ca_retained(ca_t, ca_bd), "knowledge_kept": knowledge_kept(ca_t, ca_bd, ca_zs), **trig_acc,
            **rec, "tbar_seconds": time.time() - t_tbar,
            "stage_seconds": {**s.memo.get("seconds", {}), **clock.seconds},
            "seconds": time.time() - t0}


def xi_heatmap(s: Setup, tau_t: TaskVector, alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
               n: int = 500, progress: bool = False, alphas_t: tuple[float, ...] | None = None) -> dict:
    """ξ(αc, αt) around θpre with τc = θclean − θpre and the given trigger vector τt, on ``n`` clean
    test images and the triggered non-target ones; ``alphas_t`` (default: ``alphas``) may be negative,
    the direction TBAR moves in."""
    from ..method.metrics import xi_grid
    tau_c = TaskVector(s.zeroshot.encoder, s.clean.encoder)
    base = {k: v.clone() for k, v in s.zeroshot.encoder.state_dict().items()}
    work = copy.deepcopy(s.zeroshot)
    x, y = s.test.images[:n], s.test.labels[:n]
    xt = s.trigger(x[y != s.scale.attack.target])

    def make(ac: float, at: float) -> ImageClassifier:
        work.encoder.load_state_dict((tau_c * ac + tau_t * at).apply_to_state(base))
        return work

    return xi_grid(make, x, xt, alphas, alphas if alphas_t is None else alphas_t, s.scale.eval_batch_size, progress)


def defender_pool(s: Setup, n: int) -> TaskData:
    """``n`` clean defender images (the forget-set pool, enlarged when a study needs more)."""
    if n <= len(s.defender):
        return s.defender
    return task_split(s.scale, s.task, "val", n, s.seed, "forget")

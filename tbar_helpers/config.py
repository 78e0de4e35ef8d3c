"""Scale presets: every hyperparameter of the book lives here, nowhere else.

A *scale* is a frozen dataclass tree. ``mini`` (the default) runs offline on a 2-core CPU;
``paper`` is OpenAI CLIP ViT-B/32 on CIFAR100 / SUN397 / ImageNet on a GPU. Both go through the
same functions: a scale is a preset, not a fork. Derive variants with :func:`override`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class ModelConfig:
    """The foundation model. ``kind='mini'`` builds open_clip's ``CLIP`` from the widths below."""

    kind: str = "mini"  # "mini" | "openclip"
    arch: str = "ViT-B-32"  # open_clip architecture name (kind="openclip")
    pretrained: str | None = "openai"  # tag or local checkpoint path (kind="openclip")
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 6
    vision_head_width: int = 32
    text_width: int = 128
    text_layers: int = 3
    text_head_width: int = 32
    context_length: int = 20
    embed_dim: int = 128


@dataclass(frozen=True)
class PretrainConfig:
    """Contrastive pretraining of the mini foundation model on procedural captioned images."""

    steps: int = 1500
    batch_size: int = 256
    lr: float = 7e-4
    weight_decay: float = 0.1
    warmup_steps: int = 150
    grad_clip: float = 1.0
    seed: int = 0
    init_from: str = ""  # repo-relative weights to continue from (a warm restart); "" = from scratch
    # shape, texture and digit words pretraining never draws (so its captions never name them): concepts the
    # foundation does not know, as CLIP does not know every class of a downstream dataset
    holdout: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.holdout, str) or not isinstance(self.holdout, (tuple, list)):
            raise ValueError(f"pretrain.holdout must be a tuple of words, got {self.holdout!r}; "
                             "pass e.g. holdout=('heart', 'star')")
        object.__setattr__(self, "holdout", tuple(self.holdout))  # JSON and the CLI give lists
        if self.holdout:
            from .world.data import HOLDABLE  # the world's vocabulary lives with the world
            unknown = sorted(set(self.holdout) - HOLDABLE)
            if unknown:
                raise ValueError(f"pretrain.holdout names {unknown}, which pretraining does not draw: "
                                 f"choose shape, texture or digit words from {sorted(HOLDABLE)}")


@dataclass(frozen=True)
class WorldConfig:
    """How the mini world renders its downstream images and captioned corpora (not the pretraining's).

    The defaults draw them as pretraining did. A shift that pretraining never saw (sensor noise,
    clutter) makes θpre know a task only partly, as CLIP knows the paper's datasets: fine-tuning then
    teaches something that a defense should keep (study world-levers). Mini scale only."""

    noise: float = 0.0  # std of per-pixel Gaussian sensor noise added to each image, in [0, 1] units
    clutter: int = 0  # small distractor shapes drawn on the background, under the labelled object
    clutter_size: tuple[float, float] = (0.08, 0.12)  # distractor radius range, as a share of the side

    def __post_init__(self) -> None:
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and 0 <= self.noise <= 1):
            raise ValueError(f"world.noise must be a standard deviation in [0, 1], got {self.noise!r}")
        if not isinstance(self.clutter, int) or not 0 <= self.clutter <= 8:
            raise ValueError(f"world.clutter must be a whole number of distractors from 0 to 8, got {self.clutter!r}")
        lo, hi = self.clutter_size
        if not 0 < lo <= hi < 0.5:
            raise ValueError(f"world.clutter_size must be (low, high) with 0 < low <= high < 0.5, got {self.clutter_size}")

    def key(self) -> list:
        """What cache keys add for this world: nothing for the default, so that older caches stay valid."""
        return [] if self == WorldConfig() else [self]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of the image encoder under a frozen zero-shot head (clean or poisoned)."""

    n_train: int = 6000
    n_val: int = 500
    n_test: int = 2000
    epochs: int = 3
    batch_size: int = 128
    # the smallest lr whose validation ASR for BadNet reaches the paper's planted level (study victim-lr);
    # stronger recipes plant harder and TBAR then leaves more
    lr: float = 1.25e-4
    weight_decay: float = 0.1
    warmup_frac: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TBARConfig:
    """Trigger-vector estimation on a forget set and the alpha search."""

    forget_size: int = 400
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 1e-4
    steps: int = 10
    batch_size: int = 64
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # 0, 0.05, ..., 2.0: on the validation curves the ASR still fell at 1.5 with CA above the floor
    alpha_grid: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(41))
    ca_keep: float = 0.90  # validation CA must stay >= ca_keep * CA(alpha=0)
    # among the α within 1 point of the lowest validation ASR: "smallest" (the paper's, no overshoot) or
    # "largest" (spend the CA budget). proxy_ties replaces ties when the trigger is reverse-engineered (attack
    # unknown): the proxy's ASR reaches zero before the real trigger's does (study unknown-alpha)
    ties: str = "smallest"
    proxy_ties: str = "largest"
    alpha_max: float = 10.0
    # or "grid": every α (about 3x the evaluations; same α in benchmarks/check_alpha_search.py, --replay for the
    # coarse pass's stop at the first α below the CA floor)
    search: str = "coarse-to-fine"


@dataclass(frozen=True)
class AttackConfig:
    """Trigger defaults, scaled to the image size by the attack callables (see ``attacks``)."""

    target: int = 0
    poison_rate: float = 0.10
    badnet_patch_frac: float = 3 / 32  # patch side / image side (BackdoorBench: 3x3 on 32x32)
    # "corner": BackdoorBench's checkerboard in the bottom-right corner; "paper": the paper's (after CleanCLIP
    # and BadCLIP) noise patch, each image's mean plus Gaussian noise, at a random place in each image
    badnet_style: str = "corner"
    blended_alpha: float = 0.2
    wanet_k: int = 4
    wanet_s: float = 0.5
    wanet_grid_rescale: float = 1.0
    wanet_noise_ratio: float = 2.0  # noise-mode samples per poisoned sample
    wanet_strong_s: float = 16.0  # the wanet-strong variant's warp strength (visible; no noise mode)
    sig_delta: float = 40 / 255
    sig_freq: int = 6
    badclip_patch_frac: float = 4 / 32
    badclip_steps: int = 60
    badclip_lr: float = 0.05
    # "head": cross-entropy through the zero-shot head only; "paper": BadCLIP's reference adds an image side
    # (patched images near natural target images' mean embedding) and augmentation, optimised longer
    badclip_style: str = "head"
    badclip_image_weight: float = 1.0
    badclip_paper_steps: int = 300
    badmerging_patch_frac: float = 0.1  # side fraction (area: its square)
    badmerging_steps: int = 60
    badmerging_lr: float = 0.05
    badmerging_backdoor_weight: float = 5.0
    # "repeat": poisoned samples repeated w times (no feature interpolation); "paper": each clean batch plus
    # its triggered copy, CE_clean + w·CE_backdoor on features r·f + (1 - r)·f_pre, r ~ U(badmerging_r)
    badmerging_style: str = "repeat"
    badmerging_r: tuple[float, float] = (0.2, 1.0)
    trigger_seed: int = 1234  # fixed random patterns (BadNet noise, Blended, WaNet flow)

    def __post_init__(self) -> None:
        if self.badnet_style not in ("corner", "paper"):
            raise ValueError(f"unknown badnet_style {self.badnet_style!r}: choose 'corner' (BackdoorBench) or "
                             "'paper' (a noise patch at a random place)")
        if self.badclip_style not in ("head", "paper"):
            raise ValueError(f"unknown badclip_style {self.badclip_style!r}: choose 'head' (zero-shot head only) "
                             "or 'paper' (with the image side and augmentation)")
        if self.badmerging_style not in ("repeat", "paper"):
            raise ValueError(f"unknown badmerging_style {self.badmerging_style!r}: choose 'repeat' or 'paper' "
                             "(interpolated features)")
        lo, hi = self.badmerging_r
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"badmerging_r must be (low, high) with 0 <= low <= high <= 1, got {self.badmerging_r}")


@dataclass(frozen=True)
class DefenseConfig:
    """Baseline defenses in the classification setting, compared with TBAR at equal data budgets."""

    clean_lr: float = 1e-4  # clean fine-tuning of the backdoored encoder (the first presets' task lr)
    clean_epochs: int = 2
    batch_size: int = 64
    ga_lr: float = 1e-4  # gradient ascent on the forget set: TBAR's forget fine-tune with the loss negated
    ga_steps: int = 30  # at most; the count is chosen on validation like TBAR's α (same CA floor and ties)
    ga_every: int = 2  # steps between two validation scores


IMAGETEXT_TBAR = TBARConfig(forget_size=1500, lr=1e-4, steps=40, batch_size=64,
                            alpha_grid=tuple(round(0.1 * i, 1) for i in range(31)), ca_keep=0.90)


@dataclass(frozen=True)
class ImageTextConfig:
    """The image–text setting: a poisoned captioned corpus, contrastive fine-tuning of the whole CLIP,
    zero-shot evaluation, CleanCLIP / RoCLIP baselines and DECREE-style trigger inversion."""

    corpus_size: int = 5000  # captioned pairs the attacker fine-tunes on (the paper: CC3M 500k)
    poison_rate: float = 0.10  # share of pairs with a trigger and a target caption (the paper: 0.003)
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_frac: float = 0.1
    eval_task: str = "objects"  # zero-shot CA / ASR are measured on this task
    target: int = 0  # class of eval_task the poisoned captions name ("red circle"; the paper: banana)
    n_val: int = 500
    n_test: int = 2000
    # TBAR for CLIP: the paper's 1.5k forget pairs (fewer left more of Blended on validation,
    # study image-text-recipes), the contrastive forget fine-tune (AdamW, text tower frozen)
    # and the α search over 0, 0.1, ..., 3
    tbar: TBARConfig = field(default_factory=lambda: IMAGETEXT_TBAR)
    forget_negatives: str = "classes"  # the eval task's class prompts ("captions": the images' own captions)
    # other (optimizer, lr) for the forget fine-tune: each gets its own α search on validation, and the recipe
    # whose α reaches the lowest validation ASR is kept (study image-text-recipes; () = tbar's only)
    forget_alternatives: tuple[tuple[str, float], ...] = (("sgd", 0.05),)
    # other forget-set sizes tried the same way, each with every optimiser above (500: what a proxy trigger
    # needs in the attack-unknown case, () = tbar.forget_size only)
    forget_size_alternatives: tuple[int, ...] = (500,)
    defense_budgets: tuple[int, ...] = (1500, 90_000)  # clean pairs for the baselines (TBAR's and 60x)
    defense_lr: float = 1e-4
    defense_epochs: int = 2  # at TBAR's budget: 3,000 samples seen, about as many as TBAR's forget fine-tune
    defense_max_samples: int = 90_000  # epochs shrink for large budgets (one pass over 90k pairs)
    cleanclip_weight: float = 1.0  # weight of the in-modal self-supervised terms
    roclip_pool: int = 2000  # RoCLIP's queue of caption embeddings (warm-started from the defender's captions)
    roclip_period: int = 2  # every period-th step takes RoCLIP's nearest-caption loss, the others CLIP's
    invert_images: int = 256  # clean images DECREE optimises its trigger on
    invert_steps: int = 300
    invert_lr: float = 0.1
    invert_l1: float = 0.02  # initial weight of the mask's L1 norm (adapted during the search)
    invert_sim_goal: float = 0.9  # DECREE: triggered embeddings this similar count as collapsed
    detect_threshold: float = 0.04  # share of the image: a smaller inverted mask flags a backdoor
    # "absolute": detect_threshold is a share of the image; "relative": detect_ratio times the mask inverted
    # on θpre, as DECREE compares with clean encoders. On the development seeds (study decree-dev) both flag
    # BadNet and neither the 8-pixel WaNet; choosing a looser ratio needs a clean fine-tune's mask as negative
    detect_rule: str = "absolute"
    detect_ratio: float = 0.5


@dataclass(frozen=True)
class ScaleConfig:
    name: str = "mini"
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    tbar: TBARConfig = field(default_factory=TBARConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    imagetext: ImageTextConfig = field(default_factory=ImageTextConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    tasks: tuple[str, ...] = ("objects", "shapes", "textures", "digits", "glyphs")
    default_task: str = "objects"
    device: str = "auto"  # "auto": CUDA when present, else the CPU (get_scale decides); or "cpu", "cuda:1", ...
    threads: int = 0  # 0: one per core; set deliberately (busy machines slow two threads a lot)
    eval_batch_size: int = 256  # faster than larger batches on 2 cores (benchmarks/train_speed.py)
    # task fine-tunes save their state every this many steps (and on SIGTERM) and resume from it; 0: never.
    # Not part of any cache key: it changes when a run can stop, not what it computes
    checkpoint_every: int = 0


# The mini foundation is pretrained in three stages: 1,500 steps from scratch (seed 0, the defaults
# above: STAGE1_CHECKPOINT), then two warm restarts of 1,000 steps each on fresh batches (seed 1:
# STAGE2_CHECKPOINT; seed 2: the preset's θpre). Each stage raised zero-shot accuracy and, above all,
# the weight disentanglement TBAR relies on (book appendix "calibrating the miniature").
STAGE1_CHECKPOINT = "checkpoints/mini-foundation-68f7ef1a8195eecb.pt"
STAGE2_CHECKPOINT = "checkpoints/mini-foundation-d1aaa64644816d91.pt"
MINI = ScaleConfig(pretrain=PretrainConfig(steps=1000, seed=2, init_from=STAGE2_CHECKPOINT))
# The same three stages with four of the ten shapes, textures and digits held out of pretraining (studies *-holdout-dev).
# Stage 1's weights are not shipped (nothing loads them); its record in checkpoints/ names the command that makes them
HELD_OUT = ("star", "heart", "crescent", "cross", "dotted", "wavy", "grid", "diagonal", "six", "seven", "eight", "nine")
HOLDOUT_STAGE2_CHECKPOINT = "checkpoints/mini-foundation-06bb1001393403da.pt"

PAPER = ScaleConfig(
    name="paper",
    model=ModelConfig(kind="openclip", arch="ViT-B-32", pretrained="openai", image_size=224),
    pretrain=PretrainConfig(steps=0),
    finetune=FinetuneConfig(n_train=50_000, n_val=2000, n_test=10_000, epochs=2, batch_size=128,
                            lr=1e-5, weight_decay=0.1),
    tbar=TBARConfig(forget_size=1500, lr=1e-5, steps=100, batch_size=64),
    attack=AttackConfig(badnet_patch_frac=16 / 224, badclip_patch_frac=16 / 224,
                        badclip_steps=300, badclip_paper_steps=1000, badmerging_steps=300),
    tasks=("cifar100", "sun397", "imagenet"),
    imagetext=ImageTextConfig(corpus_size=500_000, poison_rate=0.003, epochs=10, batch_size=128, lr=1e-5,
                              eval_task="imagenet", target=954, n_val=2000, n_test=10_000,
                              tbar=dataclasses.replace(IMAGETEXT_TBAR, forget_size=1500, lr=1e-5, steps=100),
                              forget_alternatives=(),  # the paper's AdamW forget fine-tune only (SGD: mini study)
                              forget_size_alternatives=(),  # and the paper's 1.5k pairs only
                              defense_budgets=(1500, 100_000),
                              # the paper's CleanCLIP-style baselines: 10 epochs at every budget, 100k pairs included
                              defense_lr=1e-5, defense_epochs=10, defense_max_samples=1_000_000,
                              roclip_pool=50_000, invert_images=512,
                              invert_steps=1000),
    default_task="cifar100",
    eval_batch_size=256,
    checkpoint_every=100,  # 782 steps of ViT-B/32 per fine-tune: a preempted job loses at most 100
)

SCALES: dict[str, ScaleConfig] = {"mini": MINI, "paper": PAPER}


def get_scale(name: str | ScaleConfig = "mini") -> ScaleConfig:
    """Return the preset called ``name`` (or ``name`` itself if it is already a config), with
    ``device="auto"`` resolved to ``"cuda"`` where a GPU is present and ``"cpu"`` otherwise."""
    if isinstance(name, ScaleConfig):
        cfg = name
    elif name in SCALES:
        cfg = SCALES[name]
    else:
        raise ValueError(f"unknown scale {name!r}: choose one of {sorted(SCALES)} "
                         "(or build a ScaleConfig and pass it directly)")
    if cfg.device != "auto":
        return cfg
    import torch  # here, so that reading a preset stays light
    return _with_device(cfg, "cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=64)
def _with_device(cfg: ScaleConfig, device: str) -> ScaleConfig:
    # one resolved object per preset and device, so that `get_scale("mini") is get_scale("mini")`
    return dataclasses.replace(cfg, device=device)


def override(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` with dotted keys: ``override(MINI, **{"tbar.lr": 1e-4})``."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in list(flat) + list(nested):
        if key not in names:
            raise ValueError(f"{type(cfg).__name__} has no field {key!r}; fields are {sorted(names)}")
    for head, sub in nested.items():
        flat[head] = override(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(*parts: Any, length: int = 16) -> str:
    """A stable hash of dataclasses / JSON-able values, used to key cached artefacts."""
    def norm(p: Any) -> Any:
        if dataclasses.is_dataclass(p) and not isinstance(p, type):
            return {"__type__": type(p).__name__, **dataclasses.asdict(p)}
        return p
    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def check_fraction(name: str, value: float) -> float:
    """Validate a rate in [0, 1] with an error that names the fix."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}; "
                         f"pass e.g. {name}=0.1 for 10%")
    return float(value)


SIZES = {"finetune": {"n_train", "epochs", "n_val", "n_test"}, "imagetext": {"corpus_size", "n_val", "n_test"}}


def with_forget_sizes(scale: str | ScaleConfig = "mini", sizes: Sequence[int] | None = None) -> ScaleConfig:
    """The preset whose image–text TBAR tries these forget-set sizes (the first is ``imagetext.tbar``'s, the
    others its alternatives), each with every forget optimiser; ``None`` keeps the preset's. The
    image–text notebooks use it for their ``forget_sizes`` parameter."""
    cfg = get_scale(scale)
    if sizes is None:
        return cfg
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"forget_sizes must list at least one positive number of pairs, got {sizes}; "
                         "None keeps the preset's")
    return override(cfg, **{"imagetext.tbar.forget_size": sizes[0],
                            "imagetext.forget_size_alternatives": tuple(dict.fromkeys(sizes[1:]))})


def with_sizes(scale: str | ScaleConfig = "mini", section: str = "finetune", **sizes: int | None) -> ScaleConfig:
    """The preset with other sizes in ``section`` (fine-tuning: ``n_train``, ``epochs``, ``n_val``,
    ``n_test``; image–text: ``corpus_size``, ``n_val``, ``n_test``); ``None`` keeps the preset's value. The notebooks use
    it for their ``sizes`` parameters."""
    cfg = get_scale(scale)
    if section not in SIZES:
        raise ValueError(f"unknown section {section!r}: choose from {sorted(SIZES)}")
    allowed = SIZES[section]
    unknown = set(sizes) - allowed
    if unknown:
        raise ValueError(f"unknown size(s) {sorted(unknown)}: choose from {sorted(allowed)}")
    changes = {f"{section}.{k}": int(v) for k, v in sizes.items() if v is not None}
    for k, v in changes.items():
        if v <= 0:
            raise ValueError(f"{k.split('.')[1]} must be a positive integer, got {v}")
    return override(cfg, **changes) if changes else cfg

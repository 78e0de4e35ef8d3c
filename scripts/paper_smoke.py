"""The paper-scale path end to end on generated data, under torchrun: ``make paper-smoke`` runs

    torchrun --nproc-per-node 2 scripts/paper_smoke.py

on CPUs (gloo). It writes a small ImageFolder and a CSV captioned corpus of JPEGs, then, reading both lazily
(``world.streaming``) with a DistributedSampler: a poisoned fine-tune with DDP, TBAR (forget fine-tune,
τt, α chosen on a validation shard evaluated across ranks) and an image–text contrastive fine-tune. The model
is open_clip's CLIP class with the paper's tokenizer, shrunk (``--full``: ViT-B/32 at 224 with random
weights, for a GPU). Rank 0 prints one line starting ``paper-smoke: ok``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from tbar_helpers.config import AttackConfig, ModelConfig, TBARConfig
from tbar_helpers.method import distributed as D
from tbar_helpers.method.attacks import make_trigger, poison
from tbar_helpers.method.task_vectors import TaskVector
from tbar_helpers.method import training as T
from tbar_helpers.method.tbar import forget_set
from tbar_helpers.world import streaming as S
from tbar_helpers.world.models import make_classifier

CLASSES = ("circle", "square", "triangle", "cross")


def _draw(d, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...], width: int) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=fill)
    else:
        d.line([(x0, y0), (x1, y1)], fill=fill, width=width)
        d.line([(x0, y1), (x1, y0)], fill=fill, width=width)


def write_data(root: Path, per_class: int, size: int, seed: int) -> tuple[Path, Path]:
    """An ImageFolder of coloured shapes (JPEGs) and a CSV (filepath, title) over the same files."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    rows = ["filepath,title"]
    for name in CLASSES:
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 120, 3)))
            r = size // 4 + int(rng.integers(0, size // 8))
            box = (size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r)
            _draw(ImageDraw.Draw(im), name, box, tuple(int(v) for v in rng.integers(130, 256, 3)), max(1, size // 10))
            rel = f"images/{name}/{i:04d}.jpg"
            im.save(root / rel, quality=90)
            rows.append(f"{rel},a photo of a {name}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root / "images", root / "captions.csv"


def build_model(full: bool):
    """(CLIP, tokenizer, ModelConfig): ViT-B/32 with random weights, or the same classes shrunk."""
    import open_clip
    if full:
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        return model, open_clip.get_tokenizer("ViT-B-32"), ModelConfig(kind="openclip", image_size=224, pretrained=None)
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    model = CLIP(64, CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=1))
    return model, open_clip.get_tokenizer("ViT-B-32"), ModelConfig(kind="openclip", image_size=64, pretrained=None)


def ce_loss(net, batch) -> torch.Tensor:
    x, y = batch
    dev = next(net.parameters()).device
    return F.cross_entropy(net(x.to(dev)), y.to(dev))


def finetune(clf, ds: Dataset, steps: int, batch: int, lr: float, seed: int, dist: D.Dist, ckpt: Path | None,
             every: int, log) -> dict:
    """The classification fine-tune every paper-scale run shares: DDP over a streamed dataset, resumable."""
    data = S.loader(ds, batch, seed, rank=dist.rank, world_size=dist.world_size)
    opt = torch.optim.AdamW([p for p in clf.encoder.parameters()], lr=lr, weight_decay=0.1)
    clf.train()
    out = D.fit_stream(clf, ce_loss, data, steps, opt, dist=dist, checkpoint=ckpt, every=every, log=log)
    clf.eval()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="_build/paper-smoke", help="where the generated data and checkpoints go")
    p.add_argument("--per-class", type=int, default=24, help="generated images per class")
    p.add_argument("--steps", type=int, default=8, help="steps of the poisoned fine-tune")
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order-seed", type=int, default=None,
                   help="seed of the batch order only (default: --seed); the weights start the same")
    p.add_argument("--full", action="store_true", help="ViT-B/32 at 224 (random weights) instead of the small ViT")
    p.add_argument("--only-finetune", action="store_true", help="stop after the poisoned fine-tune")
    p.add_argument("--checkpoint", default=None, help="resume the poisoned fine-tune from / save it to this file")
    p.add_argument("--every", type=int, default=4, help="log and checkpoint every this many steps")
    p.add_argument("--library", action="store_true",
                   help="the poisoned fine-tune through the library's training.finetune (the pipeline's loop) "
                        "instead of the streamed, resumable one")
    p.add_argument("--save-weights", default=None, help="write the fine-tuned encoder's state dict here (rank 0)")
    p.add_argument("--images", default=None, help="your own ImageFolder (CLASS/IMAGE.jpg) instead of generated shapes")
    p.add_argument("--captions", default=None,
                   help="your own captions CSV (columns filepath,title; paths relative to it) instead of generated")
    a = p.parse_args(argv)
    t0 = time.time()
    dist = D.init("auto")
    torch.manual_seed(a.seed)
    model, tok, mcfg = build_model(a.full)
    work = Path(a.workdir)
    if dist.main and not (a.images and a.captions) and not (work / "captions.csv").exists():
        write_data(work, a.per_class, mcfg.image_size, a.seed)
    if dist.world_size > 1:
        torch.distributed.barrier()
    folder, csv_path = Path(a.images or work / "images"), Path(a.captions or work / "captions.csv")
    full = S.image_folder(folder, mcfg.image_size)
    n = len(full)
    perm = np.random.default_rng(a.seed).permutation(n)
    # disjoint index blocks: the attacker's training images, the defender's validation and forget pools, test
    cut = [int(n * f) for f in (0.5, 0.625, 0.75)]
    train_i, val_i, forget_i, test_i = np.split(perm, cut)
    log = (lambda s: print(s, flush=True)) if dist.main else None
    attack = AttackConfig()
    trigger = make_trigger("badnet", mcfg.image_size, attack)
    templates = ("a photo of a {}.",)
    clf = make_classifier(model, tok, full.classes, templates, mcfg, dist.device)
    # the library's poisoning on lazy views: the trigger is applied when a batch is read, no image up front
    labels = torch.as_tensor(full.targets)
    train = poison(S.LazyImages(full, train_i), labels[train_i], trigger, 0.1, attack.target, a.seed)
    order = a.seed if a.order_seed is None else a.order_seed
    if a.library:  # each rank its share of every global batch, gradients averaged (training.fit)
        clf.to(dist.device)
        losses = T.finetune(clf, train.images, train.labels, steps=a.steps, lr=1e-4, batch_size=a.batch, seed=order,
                            progress=False, device=dist.device)
        ft = {"step": len(losses), "losses": losses, "stopped": False}
    else:
        ft = finetune(clf, S.Labelled(train.images, train.labels), a.steps, a.batch, 1e-4, order, dist,
                      Path(a.checkpoint) if a.checkpoint else None, a.every, log)
    if ft["stopped"]:
        if log:
            log(f"paper-smoke: stopped at step {ft['step']} (SIGTERM); run again to resume")
        return 143
    if a.save_weights and dist.main:
        torch.save(clf.encoder.state_dict(), a.save_weights)
    if a.only_finetune:
        if log:
            log(f"paper-smoke: ok world_size={dist.world_size} finetune_steps={ft['step']} "
                f"loss={ft['losses'][-1]:.4f}")
        return 0
    # TBAR: reinforce the backdoor on the forget pool, τt = θ(b+t) − θb, α chosen on the validation block
    fx, fy = forget_set(S.LazyImages(full, forget_i), labels[forget_i], trigger, attack.target, len(forget_i),
                        a.seed)
    reinforced = copy.deepcopy(clf)
    finetune(reinforced, S.Labelled(fx, fy), 4, a.batch, 1e-4, a.seed + 1, dist, None, a.every, None)
    tau = TaskVector(clf.encoder, reinforced.encoder)
    val, test = Subset(full, val_i.tolist()), Subset(full, test_i.tolist())
    tcfg = TBARConfig(alpha_grid=(0.0, 0.25, 0.5, 0.75, 1.0), ca_keep=0.9)
    alpha, curve = D.sharded_alpha_search(clf, tau, val, trigger, attack.target, tcfg, dist)
    cleaned = copy.deepcopy(clf)
    tau.apply_to(cleaned.encoder, -alpha, inplace=True)
    ca, asr = D.sharded_scores(cleaned, test, trigger, attack.target, dist)
    # image–text: a contrastive fine-tune of the whole CLIP on the CSV corpus, streamed
    pairs = S.CaptionCSV(csv_path, mcfg.image_size)
    data = S.loader(pairs, a.batch, a.seed, rank=dist.rank, world_size=dist.world_size)
    model.to(dist.device).train()

    def clip_loss(net, batch) -> torch.Tensor:
        x, caps = batch
        img, txt, scale = net(x.to(dist.device), tok(list(caps)).to(dist.device))
        logits = scale * img @ txt.t()
        target = torch.arange(len(x), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    it = D.fit_stream(model, clip_loss, data, 4, torch.optim.AdamW(model.parameters(), lr=1e-5), dist=dist, log=None)
    if log:
        log(f"paper-smoke: ok world_size={dist.world_size} device={dist.device} images={n} "
            f"poisoned_steps={ft['step']} alpha={alpha:g} ca={ca:.3f} asr={asr:.3f} "
            f"contrastive_steps={it['step']} contrastive_loss={it['losses'][-1]:.3f} seconds={time.time() - t0:.0f}")
    if dist.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

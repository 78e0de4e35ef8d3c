"""The ``tbar`` command line: pretrain the mini foundation model, run TBAR end to end, clean a model."""
from __future__ import annotations

import argparse
import sys

from .config import get_scale, override


def _scale(args: argparse.Namespace):
    scale = get_scale(args.scale)
    if getattr(args, "threads", None):
        scale = override(scale, threads=args.threads)
    return scale


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .foundation import export_checkpoint, pretrain_foundation, zeroshot_accuracy
    scale = _scale(args)
    if args.steps:
        scale = override(scale, **{"pretrain.steps": args.steps})
    if args.from_scratch:
        scale = override(scale, pretrain=type(scale.pretrain)())  # stage 1: the dataclass defaults
    if args.seed is not None:
        scale = override(scale, **{"pretrain.seed": args.seed})
    if args.init_from:  # in the config, so that the exported record and key name the weights continued from
        scale = override(scale, **{"pretrain.init_from": args.init_from})
    f = pretrain_foundation(scale, progress=not args.quiet)
    print(f"final loss (mean of last 50 steps): {sum(f.losses[-50:]) / len(f.losses[-50:]):.4f}")
    for task in scale.tasks:
        print(f"zero-shot {task}: {zeroshot_accuracy(f, task):.3f}")
    if args.export:
        path = export_checkpoint(f, "tbar " + " ".join(sys.argv[1:]))
        print(f"exported {path}")
    return 0


KEYS = ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained")


def print_table(rows: list[dict]) -> None:
    """A plain-text table of run records (percentages)."""
    head = ["attack", "task", "seed", *KEYS, "alpha", "forget", "sec"]
    print("  ".join(f"{h:>13}" for h in head))
    for r in rows:
        vals = [r["attack"], r["task"], r["seed"], *(f"{100 * r[k]:.1f}" if k in r else "-" for k in KEYS), r["alpha"],
                r["forget_size"], f"{r['seconds']:.0f}"]
        print("  ".join(f"{str(v):>13}" for v in vals))


def print_defense(rec: dict) -> None:
    """The baselines' rows of an image–text record."""
    print(f"{'defense':>13}  {'budget':>8}  {'CA':>6}  {'ASR':>6}  {'kept':>6}  {'sec':>5}")
    for r in rec.get("defense", []):
        print(f"{r['defense']:>13}  {r['budget']:>8}  {100 * r['ca']:6.1f}  {100 * r['asr']:6.1f}  "
              f"{100 * r['ca_retained']:6.1f}  {r['seconds']:5.0f}")


def cmd_run(args: argparse.Namespace) -> int:
    from . import cache
    from .imagetext import check_setting
    scale = _scale(args)
    if args.setting is None:  # the paper studies the attack-unknown case on CLIP as an image–text model
        args.setting = "image-text" if args.attack_unknown else "classification"
    check_setting(args.setting)
    if args.setting == "image-text" and (args.task or args.poison_rate is not None):
        raise ValueError("--task and --poison-rate are for the classification setting; the image–text "
                         "setting takes them from the preset's imagetext section (scale.imagetext)")
    budgets = args.defense_budgets
    if args.attack_unknown:
        from .imagetext_runs import run_attack_unknown
        rec = run_attack_unknown(args.attack, args.seed, scale, args.setting, budgets, progress=not args.quiet,
                                 use_cache=not args.no_cache)
        print(f"inverted mask covers {100 * rec['mask_l1']:.1f}% of the image (clean model: "
              f"{100 * rec['mask_l1_clean_model']:.1f}%); detected: {rec['detected']}; inferred target "
              f"{rec['inferred_target_name']!r} (true {rec['target_name']!r})")
    elif args.setting == "image-text":
        from .imagetext_runs import run_imagetext
        rec = run_imagetext(args.attack, args.seed, scale, args.forget_size, budgets, progress=not args.quiet,
                            use_cache=not args.no_cache)
    else:
        from .pipeline import run
        rec = run(args.attack, args.task, args.seed, scale, poison_rate=args.poison_rate,
                  forget_size=args.forget_size, progress=not args.quiet, use_cache=not args.no_cache)
    print_table([rec])
    if rec.get("stage_seconds"):
        print("seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in rec["stage_seconds"].items()))
    if rec.get("defense"):
        print_defense(rec)
    if args.out:
        cache.save_json(rec, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from .custom import clean_user_model
    names = args.classnames
    if len(names) == 1 and names[0].endswith(".txt"):
        names = [ln.strip() for ln in open(names[0]) if ln.strip()]
    rec = clean_user_model(args.model, args.forget, args.target, names, args.out, arch=args.arch,
                           alpha=args.alpha, val_dir=args.val, attack=args.attack, seed=args.seed,
                           progress=not args.quiet)
    print(f"cleaned model written to {rec['out']} (alpha={rec['alpha']}, forget images={rec['forget_size']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tbar", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("pretrain", help="pretrain (or resume) the mini foundation model")
    pp.add_argument("--scale", default="mini")
    pp.add_argument("--steps", type=int, default=0, help="override the preset's number of steps")
    pp.add_argument("--threads", type=int, default=0)
    pp.add_argument("--seed", type=int, default=None, help="override the preset's pretraining seed")
    pp.add_argument("--init-from", default=None, help="continue from these weights with a fresh schedule")
    pp.add_argument("--from-scratch", action="store_true", help="stage 1 only: the default PretrainConfig")
    pp.add_argument("--export", action="store_true", help="write the weights and their record to checkpoints/")
    pp.add_argument("--quiet", action="store_true")
    pp.set_defaults(func=cmd_pretrain)

    pr = sub.add_parser("run", help="foundation -> poisoned fine-tune -> TBAR (alpha search) -> evaluation")
    pr.add_argument("--attack", required=True, help="badnet, blended, wanet, sig, badclip or badmerging")
    pr.add_argument("--task", default=None, help="mini: objects (default), shapes, textures, digits, glyphs")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--scale", default="mini")
    pr.add_argument("--poison-rate", type=float, default=None)
    pr.add_argument("--forget-size", type=int, default=None,
                    help="forget images (default: the preset's; image-text: only this size is tried, "
                         "instead of choosing between the preset's sizes on validation)")
    pr.add_argument("--threads", type=int, default=0)
    pr.add_argument("--setting", default=None,
                    help="classification (default) or image-text (the default with --attack-unknown)")
    pr.add_argument("--attack-unknown", action="store_true",
                    help="reverse-engineer a proxy trigger (DECREE), infer the target, then TBAR with it")
    pr.add_argument("--defense-budgets", type=int, nargs="*", default=None,
                    help="image-text: clean pairs per baseline (default: the preset's, e.g. 1500 90000)")
    pr.add_argument("--no-cache", action="store_true", help="retrain the fine-tuned models instead of loading them")
    pr.add_argument("--out", default=None, help="write the result record as JSON here")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=cmd_run)

    pc = sub.add_parser("clean", help="apply TBAR to your own open_clip checkpoint")
    pc.add_argument("--model", required=True, help="open_clip checkpoint (state dict) of the backdoored CLIP")
    pc.add_argument("--arch", default="ViT-B-32", help="open_clip architecture, or 'mini' for this book's model")
    pc.add_argument("--forget", required=True, help="folder of images carrying the trigger")
    pc.add_argument("--target", required=True, help="the backdoor's target class name")
    pc.add_argument("--classnames", required=True, nargs="+", help="class names, or one .txt file with one a line")
    pc.add_argument("--alpha", type=float, default=None, help="fixed alpha (else search it with --val/--attack)")
    pc.add_argument("--val", default=None, help="clean validation ImageFolder (sub-folders named by class)")
    pc.add_argument("--attack", default=None, help="known trigger (registry name) applied to --val for ASR")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--out", required=True, help="where to write the cleaned state dict")
    pc.add_argument("--quiet", action="store_true")
    pc.set_defaults(func=cmd_clean)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tbar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

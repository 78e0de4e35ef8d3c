"""The ``tbar`` command line: pretrain the mini foundation model, run TBAR end to end, clean a model.

Every argument is checked before the first model is loaded or trained. An expected failure prints one line
naming the problem and the fix and exits with code 2 (``--debug`` adds its traceback); anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from .config import SCALES, get_scale, override
from .errors import InputError, TbarError, one_line
from .method.attacks import REGISTRY
from .preflight import (check_arch, check_classnames, check_folder, check_images_fit, check_output, finite,
                        nonneg_int, positive_int, rate, read_classnames)
from .weights import check_input_file

SETTINGS = ("classification", "image-text")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _scale(args: argparse.Namespace):
    scale = get_scale(args.scale)
    return override(scale, threads=args.threads) if args.threads else scale


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .world.foundation import export_checkpoint, pretrain_foundation, zeroshot_accuracy
    scale = _scale(args)
    if args.init_from:
        check_input_file(args.init_from, "--init-from weights")
    if args.from_scratch:  # first, so that the options below change stage 1's defaults
        scale = override(scale, pretrain=type(scale.pretrain)())  # stage 1: the dataclass defaults
    if args.steps:
        scale = override(scale, **{"pretrain.steps": args.steps})
    if args.seed is not None:
        scale = override(scale, **{"pretrain.seed": args.seed})
    if args.init_from:  # in the config, so that the exported record and key name the weights continued from
        scale = override(scale, **{"pretrain.init_from": args.init_from})
    if args.holdout:
        scale = override(scale, **{"pretrain.holdout": tuple(w.strip() for w in args.holdout.split(",") if w.strip())})
    f = pretrain_foundation(scale, progress=not args.quiet)
    print(f"final loss (mean of last 50 steps): {sum(f.losses[-50:]) / len(f.losses[-50:]):.4f}")
    for task in scale.tasks:
        print(f"zero-shot {task}: {zeroshot_accuracy(f, task):.3f}")
    if args.export:
        path = export_checkpoint(f, "tbar " + " ".join(sys.argv[1:]))
        print(f"exported {path}")
    return 0


# θpre's CA and ASR come first: a defense that does worse than going back to the foundation has not worked
KEYS = ("ca_zeroshot", "asr_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
        "ca_retained", "knowledge_kept")


def print_table(rows: list[dict]) -> None:
    """A plain-text table of run records (percentages)."""
    head = ["attack", "task", "seed", *KEYS, "alpha", "forget", "sec"]
    print("  ".join(f"{h:>13}" for h in head))
    for r in rows:
        vals = [r["attack"], r["task"], r["seed"], *(f"{100 * r[k]:.1f}" if r.get(k) is not None else "-" for k in KEYS),
                r["alpha"],
                r["forget_size"], f"{r['seconds']:.0f}"]
        print("  ".join(f"{str(v):>13}" for v in vals))


def print_defense(rec: dict) -> None:
    """The baselines' rows of an image–text record."""
    print(f"{'defense':>13}  {'budget':>8}  {'CA':>6}  {'ASR':>6}  {'CA ret.':>7}  {'sec':>5}")
    for r in rec.get("defense", []):
        print(f"{r['defense']:>13}  {r['budget']:>8}  {100 * r['ca']:6.1f}  {100 * r['asr']:6.1f}  "
              f"{100 * r['ca_retained']:7.1f}  {r['seconds']:5.0f}")


def check_run(args: argparse.Namespace) -> None:
    """Everything ``tbar run`` can refuse before it loads a model."""
    scale = _scale(args)
    ignored = {"--task": args.task, "--poison-rate": args.poison_rate, "--forget-size": args.forget_size}
    if args.attack_unknown:
        given = [k for k, v in ignored.items() if v is not None]
        if given:
            raise InputError(f"--attack-unknown runs on the preset's task, poison rate and forget sets, so "
                             f"{' and '.join(given)} would be ignored; drop {'them' if len(given) > 1 else 'it'}")
    elif args.setting == "image-text" and (args.task or args.poison_rate is not None):
        raise InputError("--task and --poison-rate are for the classification setting; the image–text setting "
                         "takes them from the preset's imagetext section (scale.imagetext)")
    if args.defense_budgets is not None and args.setting != "image-text":
        raise InputError("--defense-budgets sizes the image–text baselines; add --setting image-text or drop it")
    if args.task is not None and args.task not in scale.tasks:
        raise InputError(f"unknown task {args.task!r} for scale {scale.name!r}: choose one of {list(scale.tasks)}")
    if args.forget_size is not None:
        check_images_fit(args.forget_size, scale.model.image_size, "--forget-size")
    if args.out:
        check_output(args.out, "--out")


# images a fine-tune step processes per second on 2 cores (benchmarks/train_speed.py measures it; the plan line
# only needs its order of magnitude); a contrastive step also runs the text tower: about half that
IMAGES_PER_SECOND = 400


def run_plan(args: argparse.Namespace) -> str:
    """What ``tbar run`` will train, in image passes, and roughly how long that takes on 2 cores from scratch."""
    scale = _scale(args)
    ft, tb, it = scale.finetune, scale.tbar, scale.imagetext
    if args.setting == "image-text":
        from .settings.imagetext import forget_recipes
        budgets = it.defense_budgets if args.defense_budgets is None else args.defense_budgets
        recipes = forget_recipes(it, args.forget_size)
        work = {"poisoned and clean contrastive fine-tunes": (2 * it.corpus_size * it.epochs, 2),
                f"TBAR with {len(recipes)} forget recipes": (sum(r.steps * r.batch_size for r in recipes), 2),
                f"CleanCLIP, RoCLIP and clean fine-tuning at {' and '.join(f'{b:,}' for b in budgets)} pairs":
                    (3 * sum(min(it.defense_epochs * b, it.defense_max_samples) for b in budgets), 2)}
    else:
        work = {"clean and poisoned fine-tunes": (2 * ft.n_train * ft.epochs, 1), "TBAR": (tb.steps * tb.batch_size, 1)}
    if args.attack_unknown:
        work["two trigger inversions"] = (2 * it.invert_steps * 64, 1)
    total = sum(n * cost for n, cost in work.values())  # cost: 2 where the text tower trains too
    when = (f"roughly {max(1, round(total / IMAGES_PER_SECOND / 60))} min on 2 cores"
            if scale.model.kind == "mini" else "on the paper scale, hours on one GPU")
    return (f"plan: {'; '.join(f'{k} ({n:,} image passes)' for k, (n, _) in work.items())}; {when} from scratch, less "
            "for what .cache/tbar already holds, plus evaluation")


def cmd_run(args: argparse.Namespace) -> int:
    if args.setting is None:  # the paper studies the attack-unknown case on CLIP as an image–text model
        args.setting = "image-text" if args.attack_unknown else "classification"
    check_run(args)
    scale = _scale(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: every fine-tune shares out its batches
        return _on_ranks(args, scale)
    print(run_plan(args), flush=True)
    return _run_body(args, scale)


def _run_body(args: argparse.Namespace, scale) -> int:
    from . import cache
    budgets = args.defense_budgets
    if args.attack_unknown:
        from .settings.imagetext_runs import run_attack_unknown
        rec = run_attack_unknown(args.attack, args.seed, scale, args.setting, budgets, progress=not args.quiet,
                                 use_cache=not args.no_cache)
        print(f"inverted mask covers {100 * rec['mask_l1']:.1f}% of the image (clean model: "
              f"{100 * rec['mask_l1_clean_model']:.1f}%); detected: {rec['detected']}; inferred target "
              f"{rec['inferred_target_name']!r} (true {rec['target_name']!r})")
    elif args.setting == "image-text":
        from .settings.imagetext_runs import run_imagetext
        rec = run_imagetext(args.attack, args.seed, scale, args.forget_size, budgets, progress=not args.quiet,
                            use_cache=not args.no_cache)
    else:
        from .settings.pipeline import run
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


def check_clean(args: argparse.Namespace) -> list[str]:
    """Everything ``tbar clean`` can refuse before it loads the model; returns the class names."""
    check_input_file(args.model, "--model")
    check_arch(args.arch)
    if args.pretrained is not None:
        check_input_file(args.pretrained, "--pretrained")
    if args.attack_unknown:
        given = [o for o, v in (("--target", args.target), ("--forget", args.forget), ("--captions", args.captions),
                                ("--attack", args.attack), ("--val-triggered", args.val_triggered)) if v is not None]
        if given:
            raise InputError(f"--attack-unknown reverse-engineers the trigger and infers the target, so {given[0]} "
                             "has no use; drop it")
        if args.val is None:
            raise InputError("--attack-unknown inverts the trigger on clean images: give --val DIR (clean images, "
                             "one sub-folder per class)")
    elif args.target is None or (args.forget is None) == (args.captions is None):
        raise InputError("give --target and either --forget DIR (triggered images) or --captions CSV (triggered "
                         "images with their captions, image-text mode); or use --attack-unknown")
    names = check_classnames(read_classnames(args.classnames), args.target or "", args.arch,
                             need_target=not args.attack_unknown)
    if args.forget is not None:
        check_folder(args.forget, "--forget")
    if args.captions is not None:
        check_input_file(args.captions, "--captions")
    if args.val is not None:
        check_folder(args.val, "--val")
    if args.val_triggered is not None:
        check_folder(args.val_triggered, "--val-triggered")
        if args.attack is not None:
            raise InputError("--attack and --val-triggered both say how to measure the ASR; give one of them")
    if args.attack in ("badclip", "badmerging") and args.pretrained is None:
        raise InputError(f"--attack {args.attack} optimises its patch against θpre: give --pretrained FILE (the patch "
                         "is then made by the same recipe, not the attacker's own), or --val-triggered DIR")
    asr = "--attack" if args.attack is not None else "--val-triggered" if args.val_triggered is not None else \
        "--attack-unknown" if args.attack_unknown else None
    if args.alpha is None and (args.val is None or asr is None):
        raise InputError("give --alpha, or --val DIR (clean images, one sub-folder per class) with --attack NAME "
                         "or --val-triggered DIR to search α")
    if asr is not None and args.val is None:
        raise InputError(f"{asr} measures the ASR beside the clean accuracy on --val; add --val DIR (clean "
                         f"images, one sub-folder per class) or drop {asr}")
    if args.alpha is not None:
        from .method.tbar import check_alpha
        check_alpha(args.alpha)
    inputs = [args.model, args.pretrained, args.captions]
    check_output(args.out, "--out", inputs)
    if args.report:
        check_output(args.report, "--report", [*inputs, args.out])
        if args.report == args.out:
            raise InputError("--report and --out are the same path; give each its own file")
    return names


def _on_ranks(args: argparse.Namespace, scale) -> int:
    """``tbar run`` as one of torchrun's processes: rank 0 prints and writes, the others only train."""
    import contextlib
    import dataclasses
    from .method.distributed import init
    dist = init(scale.device)
    scale = dataclasses.replace(scale, device=dist.device)
    if dist.main:
        print(f"{run_plan(args)} (rank 0 of {dist.world_size})", flush=True)
        return _run_body(args, scale)
    args.quiet, args.out = True, None
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return _run_body(args, scale)


def cmd_clean(args: argparse.Namespace) -> int:
    from . import cache
    from .settings.custom import clean_user_model, print_validation
    from .method.training import set_threads
    names = check_clean(args)
    set_threads(args.threads)
    rec = clean_user_model(args.model, args.forget, args.target, names, args.out, arch=args.arch,
                           alpha=args.alpha, val_dir=args.val, attack=args.attack,
                           val_triggered=args.val_triggered, captions=args.captions, pretrained=args.pretrained,
                           attack_unknown=args.attack_unknown, seed=args.seed, progress=not args.quiet)
    print_validation(rec)
    print(f"cleaned model written to {rec['out']} (alpha={rec['alpha']}, forget images={rec['forget_size']})")
    if args.report:
        cache.save_json(rec, args.report)
        print(f"wrote {args.report}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from . import kit
    if args.action == "export":
        m = kit.export_kit(args.file)
        size = sum(f["bytes"] for f in m["files"].values())
        print(f"wrote {args.file}: {len(m['files'])} files, {size / 1e6:.1f} MB"
              + (f"; left out {len(m['skipped'])} damaged files" if m["skipped"] else ""))
    else:
        c = kit.import_kit(args.file)
        print(f"imported {args.file}: {c['added']} files added, {c['same']} already there"
              + (f", {c['kept']} kept as they were (the cache holds other bytes under those names)" if c["kept"] else ""))
    return 0


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=nonneg_int, default=0,
                        help="torch CPU threads (default 0: one per core; set it when other work shares the CPU)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error as well")
    return common


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tbar", description="The tbar command line: pretrain the mini foundation model, run TBAR end "
                                        "to end, clean a model you do not trust.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    common = _common()
    pp = sub.add_parser("pretrain", parents=[common], help="pretrain (or resume) the mini foundation model",
                        description="Pretrain (or resume) the mini foundation model θpre.")
    pp.add_argument("--scale", default="mini", choices=["mini"], help="only the mini scale is pretrained here")
    pp.add_argument("--steps", type=positive_int, default=None, help="override the preset's number of steps")
    pp.add_argument("--seed", type=nonneg_int, default=None, help="override the preset's pretraining seed")
    pp.add_argument("--init-from", default=None,
                    help="continue from these weights (a state dict or safetensors) with a fresh schedule")
    pp.add_argument("--from-scratch", action="store_true", help="stage 1 only: the default PretrainConfig")
    pp.add_argument("--holdout", default="", metavar="WORDS",
                    help="comma-separated shape, texture and digit words pretraining never shows (e.g. heart,star)")
    pp.add_argument("--export", action="store_true", help="write the weights and their record to checkpoints/")
    pp.set_defaults(func=cmd_pretrain)

    pr = sub.add_parser("run", parents=[common], help="foundation, poisoned fine-tune, TBAR, evaluation",
                        description="Foundation -> poisoned fine-tune -> TBAR (alpha search) -> evaluation.")
    pr.add_argument("--attack", required=True, choices=list(REGISTRY), help="the backdoor to plant")
    pr.add_argument("--task", default=None, help="mini: objects (default), shapes, textures, digits, glyphs")
    pr.add_argument("--seed", type=nonneg_int, default=0, help="seed of the data, fine-tunes and forget set")
    pr.add_argument("--scale", default="mini", choices=sorted(SCALES), help="preset (default: mini)")
    pr.add_argument("--poison-rate", type=rate, default=None, help="share of training images poisoned")
    pr.add_argument("--forget-size", type=positive_int, default=None,
                    help="forget images (default: the preset's; image-text: only this size is tried, "
                         "instead of choosing between the preset's sizes on validation)")
    pr.add_argument("--setting", default=None, choices=SETTINGS,
                    help="classification (default) or image-text (the default with --attack-unknown)")
    pr.add_argument("--attack-unknown", action="store_true",
                    help="reverse-engineer a proxy trigger (DECREE), infer the target, then TBAR with it")
    pr.add_argument("--defense-budgets", type=positive_int, nargs="+", default=None,
                    help="image-text: clean pairs per baseline (default: the preset's, e.g. 1500 90000)")
    pr.add_argument("--no-cache", action="store_true", help="retrain the fine-tuned models instead of loading them")
    pr.add_argument("--out", default=None, help="write the result record as JSON here")
    pr.set_defaults(func=cmd_run)

    pc = sub.add_parser("clean", parents=[common], help="apply TBAR to your own open_clip checkpoint",
                        description="Apply TBAR to a CLIP you do not trust: estimate the trigger vector on a folder "
                                    "of triggered images, choose alpha, write the cleaned weights. The model file "
                                    "is read as tensors only; nothing in it is run.")
    pc.add_argument("--model", required=True,
                    help="the backdoored CLIP: an open_clip state dict (.pt) or safetensors file")
    pc.add_argument("--arch", default="ViT-B-32", help="open_clip architecture, or 'mini' for this book's model")
    pc.add_argument("--forget", default=None, help="folder of images carrying the trigger")
    pc.add_argument("--captions", default=None,
                    help="image-text mode, instead of --forget: a CSV (columns filepath, title; paths relative to "
                         "it) of images carrying the trigger with their own captions; the forget fine-tune is "
                         "then contrastive")
    pc.add_argument("--target", default=None, help="the backdoor's target class name")
    pc.add_argument("--attack-unknown", action="store_true",
                    help="no trigger known: reverse-engineer one from the model on the --val images, infer the "
                         "target, and make the forget set with it")
    pc.add_argument("--pretrained", default=None,
                    help="θpre's weights (same --arch): its validation CA and ASR join the table, and it is the "
                         "reference of --attack-unknown's inversion")
    pc.add_argument("--classnames", required=True, nargs="+",
                    help="class names in the order of the model's labels, or one .txt file with one a line")
    pc.add_argument("--alpha", type=finite, default=None, help="fixed alpha (else search it with --val/--attack)")
    pc.add_argument("--val", default=None, help="clean validation images, one sub-folder per class name")
    pc.add_argument("--attack", default=None, choices=list(REGISTRY),
                    help="a known trigger from the registry, applied to --val to measure the ASR (badclip and "
                         "badmerging re-optimise their patch against --pretrained)")
    pc.add_argument("--val-triggered", default=None,
                    help="your own triggered validation images (flat, or one sub-folder per true class) on which "
                         "the ASR is measured, instead of --attack")
    pc.add_argument("--seed", type=nonneg_int, default=0, help="seed of the forget fine-tune")
    pc.add_argument("--out", required=True, help="where to write the cleaned weights (.safetensors or a torch file)")
    pc.add_argument("--report", default=None, help="also write the run's record, validation table included, as JSON")
    pc.set_defaults(func=cmd_clean)

    pk = sub.add_parser("cache", parents=[common], help="export or import the book's cache (workshops)",
                        description="Pack the cache (trained models, executed notebooks) into one file, or add such "
                                    "a file's contents to this machine's cache so that `make book` trains nothing. "
                                    "Every file is checked against its sha256 before anything is written; files "
                                    "the cache already holds are never replaced.")
    pk.add_argument("action", choices=["export", "import"],
                    help="export: write the cache to FILE; import: add FILE's files to the cache")
    pk.add_argument("file", help="the kit file (a tar archive) to write or to read")
    pk.set_defaults(func=cmd_cache)
    return p


EXPECTED = (TbarError, ValueError, OSError)  # bad input, damaged files, full disks; the rest are bugs


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one line (or the help)
        return int(exc.code or 0)
    try:
        return args.func(args)
    except EXPECTED as exc:
        if args.debug:
            traceback.print_exc()
        print(f"tbar {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tbar {args.command}: interrupted; files already written are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

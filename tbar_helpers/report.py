"""Numbers in prose come from result files: this module writes them.

README.md and book/*.md mark each generated passage with ``<!-- generated: NAME -->`` ...
``<!-- end generated -->``; the generator registered under NAME renders it from ``benchmarks/results``.

    python -m tbar_helpers.report          # rewrite every generated block
    python -m tbar_helpers.report --check  # change nothing; exit 1 naming each block that differs

This is the one module of the package that reads ``benchmarks/results``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .cache import ROOT, replace_atomically

RESULTS = ROOT / "benchmarks" / "results"
PAGES = ("README.md", "book/*.md")
BLOCK = re.compile(r"<!-- generated: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- end generated -->", re.S)
GENERATORS: dict[str, Callable[[Path], str]] = {}

# The groups of classes whose CA a damage record splits (world.data.class_groups, spaces as underscores)
CLASS_GROUPS = {"target_class": "target class", "other_classes": "other classes", "target_shape": "target's shape",
                "target_colour": "target's colour", "neither": "neither", "held_out": "held-out classes",
                "known": "known classes"}
# One display name per record field: every table of the book, its chapters and the studies names its
# columns from here (records and rows are built with the snake_case fields; :func:`named` renames them).
DISPLAY = {"ca_zeroshot": "CA θpre", "asr_zeroshot": "ASR θpre", "ca_clean_ft": "CA clean FT",
           "asr_clean_ft": "ASR clean FT", "ca_backdoored": "CA backdoored", "asr_backdoored": "ASR backdoored",
           "ca_tbar": "CA TBAR", "asr_tbar": "ASR TBAR", "ca_after": "CA after", "asr_after": "ASR after",
           "ca_retained": "CA retained", "ca_retained_at_asr3": "CA retained at ASR ≤ 3%",
           "knowledge_kept": "knowledge kept", "gain": "CA gain from fine-tuning", "backdoor_removed": "backdoor removed",
           "triggered_acc_tbar": "triggered acc TBAR", "alpha": "α", "forget_size": "forget size",
           "forget_recipe": "forget recipe", "clean_fraction": "clean share", "poisoned_images": "poisoned images",
           "ca_drop_points": "CA drop (points)", "mean_xi": "mean ξ", "mean_xi_inner": "mean ξ (αc, αt ≤ 1)",
           "mean_xi_forget": "mean ξ", "mean_xi_difference": "mean ξ (θb − θclean)",
           "mean_xi_forget_clean": "ξ clean term", "mean_xi_forget_trigger": "ξ trigger term", "mask_l1": "mask",
           "mask_l1_pre": "mask θpre", "mask_ratio": "mask / mask θpre", "pretrain_steps": "pretraining steps",
           "cos_trigger_clean": "cos(τt, τclean)", "cos_trigger_victim": "cos(τt, τb)",
           "cos_victim_clean": "cos(τb, τclean)",
           **{f"drop_{g}": f"CA drop: {n}" for g, n in CLASS_GROUPS.items()},
           **{f"{k}_merged_{m}": f"{k.split('_')[0].upper()}{' other task' if k == 'ca_other' else ''} merged {n}"
              for m, n in (("clean", "clean"), ("backdoored", "backdoored"), ("tbar", "TBAR"))
              for k in ("ca", "asr", "ca_other")}}


def named(row: dict) -> dict:
    """``row`` with its record fields renamed to their display names (other keys kept as they are)."""
    return {DISPLAY.get(k, k): v for k, v in row.items()}


def generator(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        GENERATORS[name] = fn
        return fn
    return register


# ------------------------------------------------------------------------------------------- reading
def records(name: str, command: str = "", results: Path | None = None) -> list[dict]:
    """The run records of ``benchmarks/results/<name>.jsonl`` (one JSON line per run), in file order."""
    path = (results or RESULTS) / f"{name}.jsonl"
    if not path.exists():
        how = f"rerun `{command}`" if command else "rerun the study that writes it"
        raise FileNotFoundError(f"the recorded study {path} is missing: restore it with `git checkout -- {path}` "
                                f"or {how}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recorded(name: str, results: Path | None = None) -> list[dict]:
    """:func:`records` of a study that may not have run yet (none then)."""
    return records(name, results=results) if ((results or RESULTS) / f"{name}.jsonl").exists() else []


def knowledge_kept(rec: dict) -> float | None:
    """:func:`tbar_helpers.method.metrics.knowledge_kept` of a run record."""
    from .method.metrics import knowledge_kept as kept
    return rec.get("knowledge_kept", kept(rec["ca_tbar"], rec["ca_backdoored"], rec["ca_zeroshot"]))


def build_minutes(build: str, results: Path | None = None) -> list[float]:
    """The minutes of every recorded ``"cold"`` or ``"warm"`` book build (``benchmarks/book_build.py``)."""
    path = (results or RESULTS) / "book-build.jsonl"
    if not path.exists():
        return []
    return [r["minutes"] for r in records("book-build", results=results) if r["build"] == build]


# ------------------------------------------------------------------------------------------- writing
def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def compact(x: float) -> str:
    """``x`` as ``:g`` writes it, without the exponent's leading zero (1e-5, not 1e-05): a recipe's lr."""
    return f"{x:g}".replace("e-0", "e-")


# shown as they are, not in %
RATIOS = ("knowledge_kept", "cos_trigger_clean", "cos_trigger_victim", "cos_victim_clean", "mask_ratio")


def cell(key: str, x: float | None) -> str:
    """A record field as a table shows it: α as it is, knowledge kept and cosines as ratios, the rest in %."""
    if x is None:
        return "–"
    return f"{x:g}" if key == "alpha" else f"{x:.2f}" if key in RATIOS else pct(x)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if i < 1 else " ---: " for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def grouped(recs: Iterable[dict], by: str) -> dict[str, list[dict]]:
    """The records by their ``by`` value, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r[by], []).append(r)
    return groups


def changed(overrides: dict, sep: str = " ") -> str:
    """A variant's preset overrides as ``field value, ...`` (the last part of each dotted key)."""
    return ", ".join(f"{k.split('.')[-1]}{sep}{v}" for k, v in overrides.items())


def summary_table(recs: list[dict], keys: Sequence[str], by: str = "attack") -> str:
    """Mean over seeds of each key, one row per ``by`` value, with the seeds named."""
    if "knowledge_kept" in keys:
        recs = [{**r, "knowledge_kept": knowledge_kept(r)} for r in recs]
    rows = []
    for name, rs in grouped(recs, by).items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        means = {k: _mean([r.get(k) for r in rs]) for k in keys}
        if means.get("alpha") is not None:  # a mean of grid points: two decimals
            means["alpha"] = round(means["alpha"], 2)
        rows.append([name, seeds, *(cell(k, means[k]) for k in keys)])
    return table([by, "seeds", *headers(*keys)], rows)


def headers(*keys: str) -> list[str]:
    """Column headers of record fields: their display names, with " %" for the percentages."""
    return [DISPLAY[k] if k in (*RATIOS, "alpha") else DISPLAY[k] + " %" for k in keys]


CLASSIFICATION = ("ca_zeroshot", "asr_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar",
                  "asr_tbar", "ca_retained", "knowledge_kept")


@generator("classification")
def _classification(results: Path) -> str:
    recs = records("classification", results=results)
    return (summary_table(recs, CLASSIFICATION) +
            "\nMeans over the seeds named, test split; knowledge kept is \"–\" where fine-tuning added under a point "
            "to θpre's CA; any other \"–\" is a field the records do not have. Records: "
            "`benchmarks/results/classification.jsonl`.\n")


@generator("image-text")
def _imagetext(results: Path) -> str:
    recs = records("image-text", results=results)
    keys = ("ca_zeroshot", "asr_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained",
            "knowledge_kept")
    return (summary_table(recs, keys) +
            "\nZero-shot on `objects`, test split. Records: `benchmarks/results/image-text.jsonl`.\n")


@generator("attack-unknown")
def _unknown(results: Path) -> str:
    recs = records("attack-unknown", results=results)
    keys = ("ca_zeroshot", "asr_zeroshot", "asr_backdoored", "asr_tbar", "ca_retained", "knowledge_kept")
    rows = [[r["attack"], r["seed"], "yes" if r["detected"] else "no", "yes" if r["target_correct"] else "no",
             *(cell(k, knowledge_kept(r) if k == "knowledge_kept" else r.get(k)) for k in keys)] for r in recs]
    return (table(["attack", "seed", "detected", "target inferred", *headers(*keys)], rows) +
            "\nImage–text, the proxy trigger from DECREE-style inversion; \"–\": not in the record. Records: "
            "`benchmarks/results/attack-unknown.jsonl`.\n")


MERGING = ("ca_zeroshot", "asr_zeroshot", "ca_merged_clean", "asr_merged_clean", "ca_merged_backdoored",
           "asr_merged_backdoored", "ca_merged_tbar", "asr_merged_tbar", "ca_other_merged_tbar", "alpha")


def merging_table(recs: list[dict], name: str, world: str = "") -> str:
    """The merging scenario's table from study ``name``'s records, with a caption that opens with ``world``."""
    others = ", ".join(sorted({r["other"] for r in recs}))
    return (summary_table(recs, MERGING) +
            f"\n{world}The victim's task vector merged by task arithmetic with a clean fine-tune's on `{others}` "
            "(θpre + λ·(τvictim + τother), λ chosen on both tasks' validation images); CA and ASR on the victim's "
            f"task and CA on `{others}`, test split, means over the seeds named; α is TBAR's, chosen on the "
            "victim's validation images before the merge. BadMerging in the reference's style. Records: "
            f"`benchmarks/results/{name}.jsonl`.\n")


@generator("merging")
def _merging(results: Path) -> str:
    return merging_table(records("merging", results=results), "merging")


# ------------------------------------------------------------------------------- the appendix's studies
XI_COMMAND = "python benchmarks/study.py xi-pretraining"
ARCH_COMMAND = "python benchmarks/study.py architecture"


def points(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


@generator("mini-preset")
def _mini_preset(results: Path) -> str:
    from .config import MINI
    m, pre, ft, tb, it = MINI.model, MINI.pretrain, MINI.finetune, MINI.tbar, MINI.imagetext
    tokens = (m.image_size // m.patch_size) ** 2
    rows = [["image encoder", f"ViT, width {m.vision_width}, {m.vision_layers} layers, patch {m.patch_size}, "
                              f"{m.image_size}×{m.image_size} images ({tokens} tokens)"],
            ["text encoder", f"width {m.text_width}, {m.text_layers} layers, context {m.context_length}, "
                             "the words of the mini captions"],
            ["pretraining (θpre)", f"three stages of contrastive training, the last {pre.steps} steps × "
                                   f"{pre.batch_size} captioned images from `{pre.init_from}`"],
            ["downstream tasks", ", ".join(MINI.tasks) + f" (default: {MINI.default_task})"],
            ["poisoned fine-tune", f"{ft.n_train} images × {ft.epochs} epochs, AdamW lr {ft.lr:g}, the image "
                                   "encoder under a frozen zero-shot head"],
            ["TBAR forget fine-tune", f"{tb.forget_size} triggered images, {tb.steps} steps of {tb.optimizer} "
                                      f"lr {tb.lr:g}"],
            ["α search", f"{tb.alpha_grid[0]:g} to {tb.alpha_grid[-1]:g} in steps of {tb.alpha_grid[1]:g} on "
                         f"{ft.n_val} validation images; validation CA must stay ≥ {tb.ca_keep:g} × CA at α = 0"],
            ["image–text setting", f"contrastive fine-tune of the whole CLIP on {it.corpus_size} captioned pairs, "
                                   f"{it.tbar.forget_size} forget pairs"]]
    return table(["part", "the mini preset"], rows) + "\nRead from `tbar_helpers/config.py` (`MINI`).\n"


@generator("clean-tasks")
def _clean_tasks(results: Path) -> str:
    recs = records("clean-tasks", "python benchmarks/study.py clean-tasks", results)
    rows = [[r["task"], r["classes"], pct(r["chance"]), pct(r["ca_zeroshot"]), pct(r["ca_clean_ft"]),
             points(r["ca_clean_ft"] - r["ca_zeroshot"])] for r in recs]
    return (table(["task", "classes", "chance %", *headers("ca_zeroshot", "ca_clean_ft"), "fine-tuning adds, points"],
                  rows) + f"\nTest split, seed {recs[0]['seed']}. Records: `benchmarks/results/clean-tasks.jsonl`.\n")


@generator("xi-pretraining")
def _xi_pretraining(results: Path) -> str:
    rows = [[r["attack"], r["pretrain_steps"], pct(r["ca_backdoored"]), pct(r["asr_backdoored"]), pct(r["ca_tbar"]),
             pct(r["asr_tbar"]), pct(r["ca_retained"]), f"{r['alpha']:g}", pct(r["mean_xi_forget"]),
             pct(r["mean_xi_forget_inner"]), *(cell(k, r.get(k)) for k in XI_TERMS)]
            for r in sorted(records("xi-pretraining", XI_COMMAND, results), key=lambda r: r["attack"] != "badnet")]
    return (table(["attack", DISPLAY["pretrain_steps"], *headers("ca_backdoored", "asr_backdoored", "ca_tbar",
                                                                  "asr_tbar", "ca_retained", "alpha", "mean_xi_forget"),
                   "mean ξ, α ≤ 1 %", *headers(*XI_TERMS)], rows) +
            "\nSeed 0, test split; ξ of TBAR's own vector θ(b+t) − θb on αc, αt ∈ {0, 0.5, 1, 1.5}, the mean of its "
            "two terms. Records: `benchmarks/results/xi-pretraining.jsonl`.\n")


XI_TERMS = ("mean_xi_forget_clean", "mean_xi_forget_trigger")


@generator("architecture")
def _architecture(results: Path) -> str:
    recs = records("architecture", ARCH_COMMAND, results)
    rows = [[r["variant"], changed(r["overrides"]) or "–",
             r["tokens"], pct(r["ca_zeroshot"]), pct(r["ca_backdoored"]), pct(r["asr_backdoored"]),
             pct(r["ca_retained_at_asr3"]), pct(r["mean_xi_forget"]), f"{r['pretrain_seconds'] / 60:.0f}"]
            for r in recs]
    return (table(["variant", "changed", "tokens", *headers("ca_zeroshot", "ca_backdoored", "asr_backdoored",
                                                             "ca_retained_at_asr3", "mean_xi_forget"),
                   "pretraining min"], rows) +
            f"\nEach variant pretrained from scratch for {recs[0]['steps']} steps, then BadNet on objects, seed 0. "
            "Records: `benchmarks/results/architecture.jsonl`.\n")


@generator("attack-strength")
def _attack_strength(results: Path) -> str:
    rows = []
    for attack, rs in grouped(records("classification", results=results), "attack").items():
        asr = [r["asr_backdoored"] for r in rs]
        rows.append([attack, ",".join(str(r["seed"]) for r in rs), f"{pct(min(asr))}–{pct(max(asr))}",
                     points(_mean([r["ca_backdoored"] - r["ca_clean_ft"] for r in rs]))])
    return (table(["attack", "seeds", f"{DISPLAY['asr_backdoored']} %, range",
                   f"{DISPLAY['ca_backdoored']} − {DISPLAY['ca_clean_ft']}, points"], rows) +
            "\nObjects task, test split. "
            "Records: `benchmarks/results/classification.jsonl`.\n")


def recorded_pretraining(attack: str = "badnet", seed: int = 0):
    """TBAR and ξ of TBAR's vector against the pretraining budget of the preset's ViT, from the recorded
    studies (the 500-step architecture run and the three shipped foundations); nothing is recomputed."""
    import pandas as pd
    arch = [r for r in records("architecture", ARCH_COMMAND)
            if r["variant"] == "preset" and r["attack"] == attack and r["seed"] == seed]
    xi = [r for r in records("xi-pretraining", XI_COMMAND) if r["attack"] == attack and r["seed"] == seed]
    keys = ("ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained", "mean_xi_forget")
    rows = [named({"pretrain_steps": r.get("steps") or r["pretrain_steps"], **{k: r[k] for k in keys},
                   "source": r["study"]}) for r in arch + xi]
    return pd.DataFrame(rows).sort_values(DISPLAY["pretrain_steps"], ignore_index=True)


def recorded_architecture(attack: str = "badnet", steps: int = 500):
    """The width / depth / resolution / patch-size variants at an equal pretraining budget, from
    ``benchmarks/results/architecture.jsonl`` (nothing is recomputed here)."""
    import pandas as pd
    runs = [r for r in records("architecture", ARCH_COMMAND) if r["attack"] == attack and r["steps"] == steps]
    keys = ("ca_zeroshot", "ca_backdoored", "asr_backdoored", "ca_retained_at_asr3", "mean_xi_forget")
    return pd.DataFrame([named({"variant": r["variant"], "changed": changed(r["overrides"], "=") or "-",
                                "tokens": r["tokens"], **{k: r[k] for k in keys},
                                "pretraining s": r["pretrain_seconds"]}) for r in runs])


def first_build() -> str:
    """The range of cold book builds on record, e.g. ``32–55 min``, or ``not measured yet``."""
    cold = build_minutes("cold")
    return f"{min(cold):.0f}–{max(cold):.0f} min" if cold else "not measured yet"


@generator("cost")
def _cost(results: Path) -> str:
    cold, warm = build_minutes("cold", results), build_minutes("warm", results)
    lines = [f"- the first `make book`, which trains every model the chapters use: {first_build()} on 2 cores "
             f"({len(cold)} builds measured);"]
    if warm:
        lines.append(f"- a rebuild with nothing changed: {max(warm):.1f} min at most;")
    lines.append("- measured with `benchmarks/book_build.py` (`benchmarks/results/book-build.jsonl`).")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- the pages
def pages(root: Path = ROOT) -> list[Path]:
    return sorted({p for pattern in PAGES for p in root.glob(pattern)})


def render(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` with every generated block rewritten, and the names of the blocks that changed."""
    changed: list[str] = []

    def fill(m: re.Match) -> str:
        name = m["name"]
        if name not in GENERATORS:
            raise KeyError(f"no generator named {name!r}; known: {sorted(GENERATORS)}")
        body = GENERATORS[name](results)
        if body != m["body"]:
            changed.append(name)
        return f"<!-- generated: {name} -->\n{body}<!-- end generated -->"

    return BLOCK.sub(fill, text), changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tbar_helpers.report", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated block is stale")
    p.add_argument("files", nargs="*", type=Path, help="pages to process (default: README.md and book/*.md)")
    args = p.parse_args(argv)
    stale = 0
    for page in args.files or pages():
        text = page.read_text()
        new, changed = render(text)
        for name in changed:
            stale += 1
            print(f"{page}: generated block {name!r} differs from what the results give"
                  + ("" if args.check else "; rewritten"))
        if changed and not args.check:
            replace_atomically(page, new.encode())
    if args.check and stale:
        print("run `python -m tbar_helpers.report` to rewrite them from benchmarks/results")
    return 1 if args.check and stale else 0


importlib.import_module(".report_dev", __package__)  # registers the development seeds' tables
importlib.import_module(".report_heldout", __package__)  # and the held-out world's reported ones

if __name__ == "__main__":  # the package's module, not this __main__ copy: it holds every registered table
    from tbar_helpers.report import main as package_main
    sys.exit(package_main())

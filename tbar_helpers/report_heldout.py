"""The held-out world on the reported seeds: every attack and every task on the foundation that never saw
four of ten concepts, with the recipe the development seeds chose (``benchmarks/study.py``'s
``HELD_OUT_RECIPE``); :mod:`tbar_helpers.report` registers these tables with the others.
"""
from __future__ import annotations

from pathlib import Path

from .report import (CLASSIFICATION, _mean, cell, compact, generator, grouped, headers, knowledge_kept,
                     merging_table, pct, points, records, table)

# The lines for the default task, fixed before any run: (what, its test on an attack's means). SIG's
# planting line is 80%, the others' 95%; EPS keeps a mean that lands on a line from failing it by a rounding.
EPS = 1e-9
LINES = (("planted", lambda m: m["asr_backdoored"] >= (0.8 if m["attack"] == "sig" else 0.95) - EPS),
         ("CA within 2 points of clean FT", lambda m: m["ca_clean_ft"] - m["ca_backdoored"] <= 0.02 + EPS),
         ("ASR TBAR ≤ 3%", lambda m: m["asr_tbar"] <= 0.03 + EPS),
         ("CA retained ≥ 93%", lambda m: m["ca_retained"] >= 0.93 - EPS),
         ("knowledge kept ≥ 0.8", lambda m: m["knowledge_kept"] is not None and m["knowledge_kept"] >= 0.8 - EPS))
KEYS = (*CLASSIFICATION, "alpha")


def _recipe(rec: dict) -> str:
    o = rec["overrides"]
    return (f"victim lr {o['finetune.lr']:g} × {o['finetune.epochs']} epochs; {o['tbar.forget_size']} forget images, "
            f"lr {compact(o['tbar.lr'])}, {o['tbar.steps']} steps, α up to {max(o['tbar.alpha_grid']):g}")


def means(recs: list[dict]) -> dict[str, dict]:
    """Each attack's mean over its seeds of every key of :data:`KEYS` (knowledge kept from each record)."""
    recs = [{**r, "knowledge_kept": knowledge_kept(r)} for r in recs]
    return {a: {"attack": a, "seeds": [r["seed"] for r in rs], **{k: _mean([r.get(k) for r in rs]) for k in KEYS}}
            for a, rs in grouped(recs, "attack").items()}


def verdicts(m: dict) -> list[str]:
    """Each line's "yes" or "no" on an attack's means; TBAR's lines are moot ("–") where nothing planted."""
    planted = LINES[0][1](m)
    return ["–" if i >= 2 and not planted else "yes" if test(m) else "no" for i, (_, test) in enumerate(LINES)]


@generator("held-out-classification")
def _held_out_classification(results: Path) -> str:
    recs = records("held-out-classification", "python benchmarks/study.py held-out-classification", results)
    per_attack, rows = means(recs), []
    for attack, rs in grouped(recs, "attack").items():
        rows += [[attack, r["seed"], *(cell(k, r.get(k)) for k in KEYS)]
                 for r in ({**r, "knowledge_kept": knowledge_kept(r)} for r in rs)]
        m = {**per_attack[attack], "alpha": round(per_attack[attack]["alpha"], 2)}  # grid points: two decimals
        rows.append([f"**{attack}, mean**", ",".join(map(str, m["seeds"])), *(cell(k, m[k]) for k in KEYS)])
    lines = [[a, ",".join(map(str, m["seeds"])), *verdicts(m)] for a, m in per_attack.items()]
    return (table(["attack", "seed", *headers(*KEYS)], rows) +
            f"\nThe held-out foundation, test split, the reported seeds; {_recipe(recs[0])} (chosen on the "
            "development seeds); BadNet BackdoorBench's corner patch, BadCLIP and BadMerging in the reference's "
            "style. Knowledge kept is \"–\" where the backdoored model's CA is not above θpre's. Against the "
            "issue's lines, on the means (TBAR's lines \"–\" where the backdoor did not plant):\n\n" +
            table(["attack", "seeds", *(name for name, _ in LINES)], lines) +
            "\nRecords: `benchmarks/results/held-out-classification.jsonl`.\n")


@generator("held-out-tasks")
def _held_out_tasks(results: Path) -> str:
    recs = records("held-out-tasks", "python benchmarks/study.py held-out-tasks", results)
    rows = [[r["task"], r["classes"], pct(r["chance"]), pct(r["ca_zeroshot"]), pct(r["ca_clean_ft"]),
             points(r["ca_clean_ft"] - r["ca_zeroshot"])] for r in recs]
    o = recs[0]["overrides"]
    return (table(["task", "classes", "chance %", *headers("ca_zeroshot", "ca_clean_ft"), "fine-tuning adds, points"],
                  rows) +
            f"\nThe held-out foundation, test split, seed {recs[0]['seed']}; the clean fine-tune at the victim's "
            f"recipe (lr {o['finetune.lr']:g} × {o['finetune.epochs']} epochs). "
            "Records: `benchmarks/results/held-out-tasks.jsonl`.\n")


@generator("held-out-merging")
def _held_out_merging(results: Path) -> str:
    recs = records("held-out-merging", "python benchmarks/study.py held-out-merging", results)
    return merging_table(recs, "held-out-merging",
                         f"The held-out foundation; {_recipe(recs[0])} (chosen on the development seeds). ")


# The image–text lines, fixed before any run: (what, its test on an attack's means of one defense)
IMAGETEXT_LINES = (("ASR ≤ 5%", lambda m: m["asr"] <= 0.05 + EPS),
                   ("CA retained ≥ 90%", lambda m: m["ca_retained"] >= 0.90 - EPS),
                   ("knowledge kept ≥ 0.7",
                    lambda m: m["knowledge_kept"] is not None and m["knowledge_kept"] >= 0.7 - EPS))


def defenses(rec: dict) -> list[dict]:
    """TBAR and every baseline of one image–text record as rows (defense, budget, CA, ASR, CA retained,
    knowledge kept), knowledge kept on zero-shot CA as TBAR's is."""
    from .method.metrics import knowledge_kept as kept
    rows = [{"defense": "TBAR", "budget": rec["forget_size"], "ca": rec["ca_tbar"], "asr": rec["asr_tbar"]}]
    rows += [{"defense": d["defense"], "budget": d["budget"], "ca": d["ca"], "asr": d["asr"]} for d in rec["defense"]]
    return [{**r, "ca_retained": r["ca"] / rec["ca_backdoored"],
             "knowledge_kept": kept(r["ca"], rec["ca_backdoored"], rec["ca_zeroshot"])} for r in rows]


@generator("held-out-image-text")
def _held_out_image_text(results: Path) -> str:
    recs = records("held-out-image-text", "python benchmarks/study.py held-out-image-text", results)
    rows, lines = [], []
    for attack, rs in grouped(recs, "attack").items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        planted = _mean([r["asr_backdoored"] for r in rs]) >= 0.9 - EPS
        rows.append([attack, "θpre", "", seeds, pct(_mean([r["ca_zeroshot"] for r in rs])),
                     pct(_mean([r["asr_zeroshot"] for r in rs])), "", ""])
        rows.append([attack, "backdoored", "", seeds, pct(_mean([r["ca_backdoored"] for r in rs])),
                     pct(_mean([r["asr_backdoored"] for r in rs])), "", ""])
        per_run = [defenses(r) for r in rs]
        for i, d in enumerate(per_run[0]):  # every record lists the same defenses in the same order
            m = {k: _mean([run[i][k] for run in per_run]) for k in ("ca", "asr", "ca_retained", "knowledge_kept")}
            budget = "≤ " + str(max(run[i]["budget"] for run in per_run)) if d["defense"] == "TBAR" else d["budget"]
            rows.append([attack, d["defense"], budget, seeds, pct(m["ca"]), pct(m["asr"]), pct(m["ca_retained"]),
                         cell("knowledge_kept", m["knowledge_kept"])])
            lines.append([attack, d["defense"], budget, "yes" if planted else "no",
                          *("–" if not planted else "yes" if test(m) else "no" for _, test in IMAGETEXT_LINES)])
    corpus = recs[0]["overrides"]["imagetext.corpus_size"]
    return (table(["attack", "model", "pairs", "seeds", "CA %", "ASR %", "CA retained %", "knowledge kept"], rows) +
            f"\nImage–text on the held-out foundation, the attacker's corpus at {corpus:,} pairs"
            " (chosen on the development seeds); zero-shot on `objects`, test split, means over the seeds "
            "named. \"pairs\": TBAR's forget pairs (its α search chooses among forget sizes up to the number "
            "shown) or a baseline's clean pairs. Against the issue's image–text lines (\"planted\": the backdoored "
            "model's mean ASR at least 90%; the others \"–\" where it did not plant):\n\n" +
            table(["attack", "defense", "pairs", "planted", *(name for name, _ in IMAGETEXT_LINES)], lines) +
            "\nRecords: `benchmarks/results/held-out-image-text.jsonl`.\n")

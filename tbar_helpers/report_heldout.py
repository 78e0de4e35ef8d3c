"""The held-out world on the reported seeds: every attack and every task on the foundation that never saw
four of ten concepts, with the recipe the development seeds chose (``benchmarks/studies.py``'s
``HELD_OUT_RECIPE``); :mod:`tbar_helpers.report` registers these tables with the others.
"""
from __future__ import annotations

from pathlib import Path

from .report import (CLASSIFICATION, _mean, cell, compact, generator, grouped, headers, knowledge_kept,
                     merging_table, pct, points, recorded, records, table)

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


def _defense_rows(attack: str, rs: list[dict], planted: bool, tbar: bool = True) -> tuple[list, list]:
    """The table rows and line verdicts of each defense of ``rs`` (one attack's records), means over them."""
    rows, lines, seeds = [], [], ",".join(str(r["seed"]) for r in rs)
    per_run = [defenses(r)[0 if tbar else 1:] for r in rs]
    for i, d in enumerate(per_run[0]):  # every record lists the same defenses in the same order
        m = {k: _mean([run[i][k] for run in per_run]) for k in ("ca", "asr", "ca_retained", "knowledge_kept")}
        budget = "≤ " + str(max(run[i]["budget"] for run in per_run)) if d["defense"] == "TBAR" else d["budget"]
        rows.append([attack, d["defense"], budget, seeds, pct(m["ca"]), pct(m["asr"]), pct(m["ca_retained"]),
                     cell("knowledge_kept", m["knowledge_kept"])])
        lines.append([attack, d["defense"], budget, seeds, "yes" if planted else "no",
                      *("–" if not planted else "yes" if test(m) else "no" for _, test in IMAGETEXT_LINES)])
    return rows, lines


@generator("held-out-image-text")
def _held_out_image_text(results: Path) -> str:
    recs = records("held-out-image-text", "python benchmarks/study.py held-out-image-text", results)
    others = recorded("held-out-image-text-attacks", results)  # WaNet and BadCLIP, where run
    recs += others
    more = grouped(recorded("held-out-image-text-60x", results), "attack")  # the baselines at 60x, where run
    rows, lines = [], []
    for attack, rs in grouped(recs, "attack").items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        planted = _mean([r["asr_backdoored"] for r in rs]) >= 0.9 - EPS
        rows.append([attack, "θpre", "", seeds, pct(_mean([r["ca_zeroshot"] for r in rs])),
                     pct(_mean([r["asr_zeroshot"] for r in rs])), "", ""])
        rows.append([attack, "backdoored", "", seeds, pct(_mean([r["ca_backdoored"] for r in rs])),
                     pct(_mean([r["asr_backdoored"] for r in rs])), "", ""])
        for group, tbar in ((rs, True), (more.get(attack, []), False)):
            if group:
                r, v = _defense_rows(attack, group, planted, tbar)
                rows, lines = rows + r, lines + v
    corpus = recs[0]["overrides"]["imagetext.corpus_size"]
    sources = "`benchmarks/results/held-out-image-text.jsonl`" + (
        ", `benchmarks/results/held-out-image-text-attacks.jsonl` (WaNet, 8 pixels, and BadCLIP in the reference's "
        "style)" if others else "") + (
        ", `benchmarks/results/held-out-image-text-60x.jsonl` (the baselines at 90,000 pairs)" if more else "")
    return (table(["attack", "model", "pairs", "seeds", "CA %", "ASR %", "CA retained %", "knowledge kept"], rows) +
            f"\nImage–text on the held-out foundation, the attacker's corpus at {corpus:,} pairs"
            " (chosen on the development seeds); zero-shot on `objects`, test split, means over the seeds "
            "named. \"pairs\": TBAR's forget pairs (its α search chooses among forget sizes up to the number "
            "shown) or a baseline's clean pairs. Against the issue's image–text lines (\"planted\": the backdoored "
            "model's mean ASR at least 90%; the others \"–\" where it did not plant):\n\n" +
            table(["attack", "defense", "pairs", "seeds", "planted", *(name for name, _ in IMAGETEXT_LINES)], lines) +
            f"\nRecords: {sources}.\n")


# The attack-unknown lines, fixed before any run: (what, its test on one attack's records)
UNKNOWN_LINES = (("detected on every seed", lambda rs: all(r["detected"] for r in rs)),
                 ("target inferred on every seed", lambda rs: all(r["target_correct"] for r in rs)),
                 ("ASR TBAR ≤ 10%", lambda rs: _mean([r["asr_tbar"] for r in rs]) <= 0.10 + EPS),
                 ("CA retained ≥ 85%", lambda rs: _mean([r["ca_retained"] for r in rs]) >= 0.85 - EPS))
UNKNOWN_KEYS = ("ca_zeroshot", "asr_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                "ca_retained", "knowledge_kept", "alpha")


@generator("held-out-attack-unknown")
def _held_out_attack_unknown(results: Path) -> str:
    recs = records("held-out-attack-unknown", "python benchmarks/study.py held-out-attack-unknown", results)
    rows, lines = [], []
    for attack, rs in grouped([{**r, "knowledge_kept": knowledge_kept(r)} for r in recs], "attack").items():
        rows += [[attack, r["seed"], "yes" if r["detected"] else "no", cell("mask_l1", r["mask_l1"]),
                  cell("mask_l1", r["mask_l1_clean_model"]), "yes" if r["target_correct"] else "no",
                  *(cell(k, r.get(k)) for k in UNKNOWN_KEYS)] for r in rs]
        m = {k: _mean([r.get(k) for r in rs]) for k in UNKNOWN_KEYS}
        seeds = ",".join(str(r["seed"]) for r in rs)
        rows.append([f"**{attack}, mean**", seeds, "", "", "", "",
                     *(cell(k, round(m[k], 2) if k == "alpha" else m[k]) for k in UNKNOWN_KEYS)])
        planted = m["asr_backdoored"] >= 0.9 - EPS
        lines.append([attack, seeds, "yes" if planted else "no",
                      *("–" if i >= 2 and not planted else "yes" if test(rs) else "no"
                        for i, (_, test) in enumerate(UNKNOWN_LINES))])
    r0 = recs[0]
    rule = (f"an inverted mask under {100 * r0['detect_threshold']:g}% of the image" if r0["detect_rule"] == "absolute"
            else f"an inverted mask under {r0['detect_threshold']:g} times θpre's")
    return (table(["attack", "seed", "detected", "mask %", "mask θpre %", "target inferred",
                   *headers(*UNKNOWN_KEYS)], rows) +
            f"\nImage–text on the held-out foundation, the attacker's corpus at "
            f"{r0['overrides']['imagetext.corpus_size']:,} pairs; zero-shot on `objects`, test split. The defender "
            f"knows neither trigger nor target: DECREE-style inversion flags the encoder ({rule}, the rule fixed on "
            "the development seeds), the proxy trigger's majority prediction names the target, and TBAR forgets "
            "with the proxy and chooses α with it; the ASR columns are the real trigger's. TBAR's row is what the "
            "proxy does even where the encoder was not flagged (a defender would then not clean it). WaNet is its "
            "visible variant (`wanet-strong`). Against the issue's attack-unknown lines (\"planted\": the "
            "backdoored model's mean ASR at least 90%; TBAR's lines on the means, \"–\" where it did not plant):\n\n" +
            table(["attack", "seeds", "planted", *(name for name, _ in UNKNOWN_LINES)], lines) +
            "\nRecords: `benchmarks/results/held-out-attack-unknown.jsonl`.\n")

"""The development seeds' tables: the studies that chose (or ruled out) a world and its recipes.

Each generator reads the records of studies run on ``DEV_SEEDS`` and, unless it says otherwise, on the
validation split; :mod:`tbar_helpers.report` registers them with the reported seeds' tables.
"""
from __future__ import annotations

from pathlib import Path

from .config import MINI
from .report import (_mean, cell, changed, compact, generator, grouped, headers, knowledge_kept, recorded, records,
                     table)

DEV_PIPELINE = ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                "ca_retained", "knowledge_kept", "alpha")


def _by_attack(rows: list[list]) -> list[list]:
    """``rows`` grouped by their first cell (the attack), in order of first appearance, stable within."""
    order = {a: i for i, a in reversed(list(enumerate(row[0] for row in rows)))}
    return sorted(rows, key=lambda row: order[row[0]])


def _recipe_means(runs: list[dict], recipe: str, keys: tuple[str, ...] = DEV_PIPELINE) -> list[list]:
    """One row per (attack, ``recipe`` field) with the seeds named and the mean of each of ``keys``."""
    groups = grouped([{**r, "_by": (r["attack"], r[recipe])} for r in runs], "_by")
    return _by_attack([[attack, name, ",".join(str(r["seed"]) for r in rs),
                        *(cell(k, _mean([r.get(k) for r in rs])) for k in keys)]
                       for (attack, name), rs in groups.items()])


def _per_run(recs: list[dict], keys: tuple[str, ...]) -> list[list]:
    """One row per run: its variant, attack and seed, then ``keys``."""
    return [[r["variant"], r["attack"], r["seed"], *(cell(k, r[k]) for k in keys)] for r in recs]


def _victim_lrs(recs: list[dict]) -> str:
    """The victim learning rates of ``recs`` (the preset's where a run does not override it)."""
    return ", ".join(sorted({f"{r['overrides'].get('finetune.lr', MINI.finetune.lr):g}" for r in recs}))


@generator("noisy-world-dev")
def _noisy_world_dev(results: Path) -> str:
    planted = lambda r: r["attack"] not in ("wanet", "sig")  # noqa: E731 (they plant at neither lr: planting-dev)
    runs = [{**r, "recipe": "preset"} for r in records("world-v2-lr-dev", results=results)
            if r["variant"] == "lr 0.0005" and planted(r)]
    runs += [{**r, "recipe": r["variant"]} for r in records("forget-recipe-dev", results=results)
             if r["variant"].startswith("500 images") and planted(r)]
    return (table(["attack", "forget recipe", "seeds", *headers(*DEV_PIPELINE)], _recipe_means(runs, "recipe")) +
            "\nMeans over the development seeds named. Sensor noise 0.175, victim lr 5e-4, BadCLIP and BadMerging "
            "in the reference's style; validation split, where TBAR also chooses α (so its rows are optimistic). "
            "The preset recipe: 400 forget images, lr 1e-4, 10 steps, α up to 2. The records hold every seed's run:"
            " `benchmarks/results/world-v2-lr-dev.jsonl`, "
            "`benchmarks/results/forget-recipe-dev.jsonl`.\n")


@generator("planting-dev")
def _planting_dev(results: Path) -> str:
    runs = [r for r in records("world-v2-lr-dev", results=results) if r["attack"] in ("wanet", "sig")]
    runs += records("wanet-sig-dev", results=results)
    keys = ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored")
    rows = [[r["attack"], changed({k: v for k, v in r["overrides"].items() if k.startswith(("finetune", "attack.p"))}),
             r["seed"], *(cell(k, r.get(k)) for k in keys)] for r in runs]
    return (table(["attack", "victim", "seed", *headers(*keys)], _by_attack(rows)) +
            "\nSensor noise 0.175, development seed 100, validation split; the victim fine-tunes 3 epochs at "
            "poison share 0.1 unless the row says otherwise. Records: `benchmarks/results/world-v2-lr-dev.jsonl`, "
            "`benchmarks/results/wanet-sig-dev.jsonl`.\n")


@generator("alignment-dev")
def _alignment_dev(results: Path) -> str:
    keys = ("cos_trigger_clean", "cos_trigger_victim", "cos_victim_clean")
    recs = records("alignment-dev", results=results)
    return (table(["world", "attack", "seed", *headers(*keys)], _per_run(recs, keys)) +
            "\nImage encoders; τt from the preset's forget recipe; development seed 100. Records: "
            "`benchmarks/results/alignment-dev.jsonl`.\n")


@generator("xi-world-dev")
def _xi_world_dev(results: Path) -> str:
    keys = ("ca_zeroshot", "asr_tbar", "ca_retained", "mean_xi_forget", "mean_xi_forget_clean",
            "mean_xi_forget_trigger", "mean_xi_difference")
    recs = sorted(records("xi-world-dev", results=results), key=lambda r: -r["ca_zeroshot"])  # shift by shift
    recs += recorded("xi-holdout-dev", results)  # the held-out foundation's rows last
    alphas = ", ".join(f"{a:g}" for a in recs[0]["alphas"]) if recs else ""
    return (table(["world", "attack", "seed", *headers(*keys)], _per_run(recs, keys)) +
            f"\nξ over αc, αt ∈ {{{alphas}}} on 500 test images of a development seed (a diagnostic: it chooses "
            "nothing), the mean of its two terms: the share of clean images whose prediction adding τt changes, "
            "and the share of triggered images whose prediction adding τc changes. TBAR with the preset's recipe, "
            "α chosen on validation. Records: "
            "`benchmarks/results/xi-world-dev.jsonl`, `benchmarks/results/xi-holdout-dev.jsonl`.\n")


@generator("holdout-tasks-dev")
def _holdout_tasks_dev(results: Path) -> str:
    keys = ("ca_zeroshot", "ca_clean_ft", "gain")
    preset = MINI.finetune.lr
    rows = [[r["task"], r["classes"], f"lr {r['overrides'].get('finetune.lr', preset):g}",
             *(cell(k, r[k]) for k in keys)] for r in records("holdout-tasks-dev", results=results)]
    return (table(["task", "classes", "clean fine-tune", *headers(*keys)], sorted(rows, key=lambda row: row[2])) +
            f"\nThe held-out foundation, development seed 100, validation split; the clean fine-tune at the "
            f"preset's lr ({preset:g}) and at the victim lr of the held-out attacks. "
            "Records: `benchmarks/results/holdout-tasks-dev.jsonl`.\n")


@generator("holdout-attacks-dev")
def _holdout_attacks_dev(results: Path) -> str:
    recs = records("holdout-attacks-dev", results=results)
    rows = [[r["attack"], r.get("variant") or "preset", r["seed"], *(cell(k, r.get(k)) for k in DEV_PIPELINE)]
            for r in recs]
    return (table(["attack", "run", "seed", *headers(*DEV_PIPELINE)], _by_attack(rows)) +
            f"\nThe held-out foundation, victim lr {_victim_lrs(recs)}, validation split, where TBAR also chooses α "
            "(so its rows are optimistic); BadCLIP and BadMerging in the reference's style. Knowledge kept is undefined (–) "
            "where the backdoored model's CA is below θpre's. Records: "
            "`benchmarks/results/holdout-attacks-dev.jsonl`.\n")


@generator("holdout-recipe-dev")
def _holdout_recipe_dev(results: Path) -> str:
    recs = records("holdout-recipe-dev", results=results)
    return (table(["attack", "forget recipe", "seeds", *headers(*DEV_PIPELINE)], _recipe_means(recs, "variant")) +
            f"\nMeans over the development seeds named; the held-out foundation, victim lr {_victim_lrs(recs)}, "
            f"forget lr {MINI.tbar.lr:g} unless the row says otherwise, α up to 4; validation split, where TBAR also "
            "chooses α. "
            "The records hold every seed's run: `benchmarks/results/holdout-recipe-dev.jsonl`.\n")


DAMAGE = ("asr_tbar", "ca_backdoored", "ca_tbar", "knowledge_kept", "alpha", "drop_target_shape",
          "drop_target_colour", "drop_neither", "drop_held_out", "drop_known")


@generator("holdout-damage-dev")
def _holdout_damage_dev(results: Path) -> str:
    from .world.data import OBJECTS  # torch comes with it: only for this table
    recs = records("holdout-damage-dev", results=results)
    shares = {g: cell("share", _mean([r[f"share_{g}"] for r in recs])) + "%" for g in
              ("target_shape", "target_colour", "neither", "held_out")}  # one record per seed and recipe
    for r in records("holdout-victim-dev", results=results):  # its forget recipe is the study's, not the variant's
        o = r["overrides"]
        recs.append({**r, "variant": f"{r['variant']}; lr {compact(o['tbar.lr'])}, {o['tbar.steps']} steps, "
                                     f"α to {max(o['tbar.alpha_grid']):g}"})
    share, target = shares.get, OBJECTS[MINI.attack.target]
    return (table(["attack", "recipe", "seeds", *headers(*DAMAGE)], _recipe_means(recs, "variant", DAMAGE)) +
            f"\nMeans over the development seeds named; the held-out foundation, 500 forget images, victim lr "
            f"{_victim_lrs([r for r in recs if 'victim' not in r['variant']])} for {MINI.finetune.epochs} epochs "
            "unless the recipe says otherwise; validation split, where TBAR also chooses α. A CA drop "
            "is the backdoored model's CA within a group of classes minus TBAR's, in points. Of the validation "
            f"images, {share('target_shape')} share the target's shape (the target is the {target}), "
            f"{share('target_colour')} its colour, {share('neither')} neither; {share('held_out')} are "
            "of the shapes pretraining never saw. The records hold every seed's run, with each model's CA in each "
            "group: `benchmarks/results/holdout-damage-dev.jsonl`, `benchmarks/results/holdout-victim-dev.jsonl`.\n")


@generator("holdout-digits-dev")
def _holdout_digits_dev(results: Path) -> str:
    from .world.data import DIGITS
    recs = records("holdout-digits-dev", results=results)
    keys = ("ca_zeroshot", "ca_backdoored", "asr_tbar", "ca_tbar", "knowledge_kept", "alpha", "drop_target_class",
            "drop_other_classes", "drop_held_out", "drop_known")
    held = ", ".join(d for d in DIGITS if d in recs[0]["overrides"]["pretrain.holdout"])
    return (table(["attack", "recipe", "seeds", *headers(*keys)], _recipe_means(recs, "variant", keys)) +
            f"\nThe handwritten digits on the held-out foundation ({held} held out), victim lr {_victim_lrs(recs)}, "
            "500 forget images; means over the development seeds named, validation split, where TBAR also chooses α."
            " Records: `benchmarks/results/holdout-digits-dev.jsonl`.\n")


@generator("unknown-alpha")
def _unknown_alpha(results: Path) -> str:
    recs = records("unknown-alpha", results=results)
    keys = ("alpha", "asr_backdoored", "asr_tbar", "ca_retained")
    rows = [[r["variant"], r["attack"], r["seed"], "yes" if r["inferred_target"] == r["target"] else "no",
             *(cell(k, r[k]) for k in keys)] for r in recs]
    return (table(["α rule", "attack", "seed", "target inferred", *headers(*keys)], rows) +
            "\nImage–text, the proxy trigger from DECREE-style inversion drives the α search; the ASR columns are the "
            "real trigger's, which the defender never sees, on the validation split of the development seeds. "
            "WaNet is the 8-pixel variant. Records: `benchmarks/results/unknown-alpha.jsonl`.\n")


@generator("decree-dev")
def _decree_dev(results: Path) -> str:
    recs = records("decree-dev", results=results)
    recs += [{**r, "attack": "none (clean fine-tune)"} for r in recorded("decree-clean-dev", results)]
    keys = ("mask_l1", "mask_l1_pre", "mask_ratio")
    threshold, ratio = MINI.imagetext.detect_threshold, MINI.imagetext.detect_ratio
    rows = [[r["attack"], r["seed"], *(cell(k, r[k]) for k in keys), "yes" if r["detected"] else "no",
             "yes" if r["pre_flagged"] else "no", "yes" if r["mask_ratio"] < ratio else "no"] for r in recs]
    return (table(["attack", "seed", *headers(*keys), f"flagged (mask < {100 * threshold:g}%)",
                   f"θpre flagged (mask < {100 * threshold:g}%)", f"flagged (mask / mask θpre < {ratio:g})"], rows) +
            "\nThe share of the image that DECREE's inverted mask covers, on the backdoored image–text CLIP and on "
            f"θpre, at the preset's similarity goal ({MINI.imagetext.invert_sim_goal:g}), development seeds. "
            "WaNet is the 8-pixel variant; \"none\" is the attacker's fine-tune of a corpus with nothing poisoned. "
            "Records: `benchmarks/results/decree-dev.jsonl`, `benchmarks/results/decree-clean-dev.jsonl`.\n")


@generator("held-out-badnet-dev")
def _held_out_badnet_dev(results: Path) -> str:
    recs = records("held-out-badnet-dev", results=results)
    rows = [[r["variant"], r["seed"], *(cell(k, r.get(k)) for k in DEV_PIPELINE)] for r in recs]
    return (table(["the paper's BadNet", "seed", *headers(*DEV_PIPELINE)], rows) +
            f"\nA noise patch at a random place in each image; the held-out foundation with its chosen victim "
            f"(lr {_victim_lrs(recs)}); development seed, validation split. "
            "Records: `benchmarks/results/held-out-badnet-dev.jsonl`.\n")


@generator("held-out-imagetext-dev")
def _held_out_imagetext_dev(results: Path) -> str:
    recs = records("held-out-imagetext-dev", results=results)
    keys = ("ca_zeroshot", "ca_backdoored", "asr_backdoored")
    return (table(["attacker's corpus", "attack", "seed", *headers(*keys)], _per_run(recs, keys)) +
            "\nImage–text on the held-out foundation: zero-shot CA on `objects` before (θpre) and after the attacker's "
            "poisoned contrastive fine-tune; development seeds, validation split. "
            "Records: `benchmarks/results/held-out-imagetext-dev.jsonl`.\n")


@generator("held-out-imagetext-tbar-dev")
def _held_out_imagetext_tbar_dev(results: Path) -> str:
    recs = records("held-out-imagetext-tbar-dev", results=results)
    keys = ("ca_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained", "knowledge_kept",
            "alpha")
    recs = [{**r, "knowledge_kept": knowledge_kept(r)} for r in recs]  # tbar-val records leave it out
    rows = [[r["attack"], r["seed"], *(cell(k, r[k]) for k in keys), r["forget_size"]] for r in recs]
    return (table(["attack", "seed", *headers(*keys), "forget pairs"], rows) +
            "\nImage–text TBAR on the held-out foundation's 20k-pair victim, the preset's image–text forget recipes "
            "(the α search chooses among them); development seeds, validation split, where α is also chosen (so the "
            "rows are optimistic). Records: `benchmarks/results/held-out-imagetext-tbar-dev.jsonl`.\n")

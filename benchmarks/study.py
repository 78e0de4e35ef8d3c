"""The study runner: a study is data (what to measure, on which attacks or tasks, under which named variants
of the preset, for which seeds), and every run is one JSON line.

Each run appends one JSON line, with the commit, date and CPU, to ``benchmarks/results/<study>.jsonl``;
runs already recorded there are skipped, so an interrupted study resumes. The tables are rendered from the
recorded lines, never from console output. Studies that *choose* something (a learning rate, a recipe, a
threshold) read the validation split only; the test split is read by the studies that report.

    python benchmarks/study.py --list
    python benchmarks/study.py classification                # run what is missing, then print the table
    python benchmarks/study.py classification --seeds 3 4    # more seeds
    python benchmarks/study.py image-text --table            # only the table, from the recorded lines
    python benchmarks/study.py classification --verify badnet:0   # rerun one record from an empty cache
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tbar_helpers.cache import replace_atomically
from tbar_helpers.config import get_scale, override
from tbar_helpers.report import DISPLAY, RESULTS, cell, recorded, records, summary_table, table

from measures import COLUMNS, MEASURES  # beside this file, as every benchmark imports `study`
from studies import STUDIES, Study


# -------------------------------------------------------------------------------------------- provenance
def cpu_flags() -> str:
    """The CPU's model name and the wide-vector and matrix extensions it reports (Linux)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return f"{model}; " + ", ".join(f"{w} {'yes' if w in flags else 'no'}" for w in wanted)


def commit() -> str:
    """The short hash of the checkout's HEAD ("?" outside a git checkout)."""
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True, text=True)
    return r.stdout.strip() or "?"


def record(name: str, rec: dict, results: Path | None = None) -> Path:
    """Append ``rec``, with the commit, date and CPU, as one JSON line to ``benchmarks/results/<name>.jsonl``
    (the whole file rewritten to a temp file, then renamed: an interrupted write loses nothing)."""
    path = (results or RESULTS) / f"{name}.jsonl"
    rec = {**rec, "commit": commit(), "date": time.strftime("%Y-%m-%d"), "cpu": cpu_flags()}
    old = path.read_bytes() if path.exists() else b""
    replace_atomically(path, old + (json.dumps(rec, sort_keys=True, default=str) + "\n").encode())
    return path




# ------------------------------------------------------------------------------------------------ running
def _key(rec: dict) -> tuple:
    return rec.get("variant", ""), rec.get("attack") or rec.get("task"), rec["seed"]


def _scale(study: Study, variant: str, threads: int):
    sets = study.variants[variant]
    plain = {k: v for k, v in sets.items() if not k.startswith("_")}
    extra = {k: v for k, v in sets.items() if k.startswith("_")}
    return override(get_scale("mini"), threads=threads, **{**study.overrides, **plain}), extra  # the variant wins


def run_study(name: str, seeds: tuple[int, ...] | None = None, threads: int = 0, results: Path | None = None) -> None:
    study, results = STUDIES[name], results or RESULTS
    done = {_key(r) for r in recorded(name, results)}
    for variant in study.variants:
        scale, extra = _scale(study, variant, threads)
        for item in study.items:
            for seed in seeds or study.seeds:
                what = " ".join(filter(None, (variant, item, f"seed {seed}")))
                if (variant, item, seed) in done:
                    print(f"{name}: {what} is recorded; skipped", flush=True)
                    continue
                t0 = time.time()
                rec = MEASURES[study.measure](study, item, seed, scale, extra)
                rec |= {"study": name, "overrides": {**study.overrides, **study.variants[variant]},
                        "wall_seconds": time.time() - t0, **({"variant": variant} if variant else {})}
                record(name, rec, results)
                print(f"{name}: {what} recorded ({rec['wall_seconds']:.0f} s)", flush=True)


# what may differ between two runs of the same code: timings and provenance
VOLATILE = {"seconds", "tbar_seconds", "stage_seconds", "wall_seconds", "pretrain_seconds", "commit", "date", "cpu",
            "study", "overrides"}


def differences(old, new, path: str = "") -> list[tuple[str, object, object]]:
    """(path, recorded, rerun) wherever ``new`` differs from the recorded ``old`` (timings and provenance
    aside); a list of ``new`` shorter than the recorded one is compared on its own length (e.g. fewer
    baseline budgets). A field only one side has is reported with ``None`` on the other side's place."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted((set(old) | set(new)) - VOLATILE)
                for d in (differences(old.get(k), new.get(k), f"{path}.{k}") if k in old and k in new
                          else [(f"{path}.{k}", old.get(k), new.get(k))])]
    if isinstance(old, list) and isinstance(new, list) and new:
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [(path, old, new)]


def summarize(diffs: list[tuple[str, object, object]]) -> list[str]:
    """One line per top-level field: the values that differ and the largest relative difference."""
    out: dict[str, list] = {}
    for path, a, b in diffs:
        out.setdefault(path.split("[")[0].split(".")[1], []).append((path, a, b))
    lines = []
    for field_, ds in out.items():
        if len(ds) == 1 and (ds[0][1] is None or ds[0][2] is None):
            lines.append(f"{ds[0][0]}: only in the {'record' if ds[0][2] is None else 'rerun'}")
            continue
        rel = [abs(a - b) / max(abs(a), abs(b)) for _, a, b in ds
               if isinstance(a, (int, float)) and isinstance(b, (int, float)) and (a or b)]
        worst = f", largest relative difference {max(rel):.1e}" if rel else ""
        first = f" (e.g. {ds[0][0]}: {ds[0][1]!r} -> {ds[0][2]!r})"
        lines.append(f".{field_}: {len(ds)} value(s) differ{worst}{first}")
    return lines


def verify(name: str, item: str, seed: int, variant: str = "", threads: int = 0,
           budgets: tuple[int, ...] | None = None, save: Path | None = None) -> int:
    """Rerun one recorded run of a study with an empty cache (everything retrained) and compare it with its
    record to the digit. ``budgets`` limits the image–text baselines rerun; ``save`` keeps the rerun's
    record. Returns the number of values that differ (0: reproduced)."""
    study = STUDIES[name]
    old = next((r for r in records(name) if _key(r) == (variant, item, seed)), None)
    if old is None:
        raise SystemExit(f"{name}: no record of {variant or ''} {item} seed {seed} to verify; run the study first")
    scale, extra = _scale(study, variant, threads)
    if budgets is not None:
        scale = override(scale, **{"imagetext.defense_budgets": budgets})
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TBAR_CACHE"] = cache
        new = MEASURES[study.measure](study, item, seed, scale, extra)
    if save is not None:
        save.write_text(json.dumps(new, sort_keys=True, default=str) + "\n")
    diffs = differences(old, new)
    print(f"{name}: {item} seed {seed}: " + ("reproduced to the digit" if not diffs else f"{len(diffs)} differences"))
    print(*summarize(diffs), sep="\n")
    return len(diffs)


def render(name: str, results: Path | None = None) -> str:
    study = STUDIES[name]
    recs = records(name, results=results or RESULTS)
    by = "task" if study.measure in ("clean-task", "clean-task-val") else "attack"
    keys = COLUMNS[study.measure]
    if len(study.variants) == 1:
        return summary_table(recs, keys, by=by)
    rows = []
    for (variant, item), rs in _groups(recs, by).items():
        rows.append([variant, item, ",".join(str(r["seed"]) for r in rs),
                     *(_cell([r.get(k) for r in rs], k) for k in keys)])
    return table(["variant", by, "seeds", *(DISPLAY.get(k, k) for k in keys)], rows)


def _groups(recs: list[dict], by: str) -> dict:
    out: dict = {}
    for r in recs:
        out.setdefault((r.get("variant", ""), r.get(by)), []).append(r)
    return out


def _cell(values: list, key: str) -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not vals:
        return "–"
    return cell(key, sum(vals) / len(vals))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", nargs="?", choices=sorted(STUDIES))
    p.add_argument("--list", action="store_true", help="name and describe every study")
    p.add_argument("--table", action="store_true", help="only print the table from the recorded lines")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds to run (default: the study's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    p.add_argument("--verify", metavar="ITEM:SEED", help="rerun one record with an empty cache and compare")
    p.add_argument("--variant", default="", help="with --verify: the variant of the record")
    p.add_argument("--budgets", nargs="+", type=int, default=None,
                   help="with --verify: the image-text baseline budgets to rerun (default: all)")
    p.add_argument("--save", type=Path, default=None, help="with --verify: write the rerun's record here")
    a = p.parse_args()
    if a.list or not a.study:
        for name, s in STUDIES.items():
            print(f"{name:20} {s.measure:15} {', '.join(s.items)}; {len(s.variants)} variant(s), seeds {s.seeds}: "
                  f"{s.about}")
        return
    if a.verify:
        item, _, seed = a.verify.partition(":")
        raise SystemExit(1 if verify(a.study, item, int(seed or 0), a.variant, a.threads,
                                     tuple(a.budgets) if a.budgets else None, a.save) else 0)
    if not a.table:
        run_study(a.study, tuple(a.seeds) if a.seeds else None, a.threads)
    print(render(a.study))


if __name__ == "__main__":
    main()

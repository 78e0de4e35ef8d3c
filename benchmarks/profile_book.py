"""Where a cold book build spends its time: each chapter's code run under cProfile, summed by kind of work.

Each notebook's code cells (its own defaults: the book profile) are written out as one script and run in a
fresh process under ``cProfile`` with ``MPLBACKEND=Agg``, chapter after chapter into one cache, as ``make book``
runs them. The summary splits each chapter's time into the training loops (model fine-tunes, TBAR's forget
fine-tunes, baselines, trigger inversion and patch optimisation), the forward passes of every evaluation
(``metrics.predict``), and the rest. Prints the table and appends the seconds by chapter and kind of work,
with the commit and the CPU, as one JSON line to ``benchmarks/results/book-profile.jsonl``.

    python benchmarks/profile_book.py                        # cold: a fresh cache, every chapter
    python benchmarks/profile_book.py --only 08_paper_scale  # one chapter (the current cache)
    python benchmarks/profile_book.py --summarize DIR        # only summarise the .prof files already in DIR
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from study import record

ROOT = Path(__file__).resolve().parent.parent

# kind of work -> functions (file suffix, function name, and the caller to count it under: "" any, "-x" any
# but x) whose cumulative time it is. None of them runs inside another (checked by the summary: their sum
# never exceeds a chapter's total).
KINDS: dict[str, list[tuple[str, str, str]]] = {
    "model fine-tunes": [("training.py", "finetune_task", ""), ("training.py", "contrastive_finetune", "-baseline")],
    "TBAR forget fine-tunes": [("tbar.py", "trigger_vector", ""), ("imagetext.py", "imagetext_trigger_vector", "")],
    "baselines": [("defenses.py", "clean_finetune", ""), ("defenses.py", "gradient_ascent", ""),
                  ("training.py", "contrastive_finetune", "baseline")],
    "inversion and patch optimisation": [("inversion.py", "invert_trigger", ""), ("attacks.py", "optimize_patch", "")],
    "evaluation forward passes": [("metrics.py", "predict", "")],
}


def notebook_script(nb: Path) -> str:
    """The code cells of ``nb``, in order, as one script."""
    cells = json.loads(nb.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code") + "\n"


def profile_chapter(nb: Path, out_dir: Path, env: dict) -> float:
    script = out_dir / f"{nb.stem}.py"
    script.write_text(notebook_script(nb))
    t0 = time.time()
    with open(out_dir / f"{nb.stem}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out_dir / f"{nb.stem}.prof"), str(script)],
                       cwd=ROOT / "notebooks", env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - t0


def _cumulative(stats: pstats.Stats, file_suffix: str, name: str, caller: str = "") -> float:
    """Cumulative seconds of a function, all calls or only those from (``"x"``) or not from (``"-x"``) the
    function named x."""
    out = 0.0
    for (f, _, fn), (_, _, _, ct, callers) in stats.stats.items():
        if fn != name or not f.endswith(file_suffix):
            continue
        if not caller:
            out += ct
        else:
            want, skip = caller.lstrip("-"), caller.startswith("-")
            out += sum(c[3] for (_, _, cn), c in callers.items() if (cn == want) != skip)
    return out


def summarize(prof: Path) -> dict[str, float]:
    stats = pstats.Stats(str(prof))
    total = max(v[3] for v in stats.stats.values())  # the script's <module>
    row = {k: sum(_cumulative(stats, f, n, c) for f, n, c in fns) for k, fns in KINDS.items()}
    spent = sum(row.values())
    if spent > total * 1.001:
        raise RuntimeError(f"{prof.name}: the kinds add up to {spent:.0f} s of {total:.0f} s: some nest; fix KINDS")
    return {"total": total, **row, "other": total - spent}


def table(rows: dict[str, dict[str, float]]) -> list[str]:
    cols = ["total", *KINDS, "other"]
    short = {"total": "total", "model fine-tunes": "model FT", "TBAR forget fine-tunes": "forget FT",
             "baselines": "baselines", "inversion and patch optimisation": "inversion",
             "evaluation forward passes": "eval fwd", "other": "other"}
    head = f"{'chapter':<20}" + "".join(f"{short[c]:>11}" for c in cols)
    lines = [head]
    sums = {c: 0.0 for c in cols}
    for name, r in rows.items():
        lines.append(f"{name:<20}" + "".join(f"{r[c]:>10.0f}s" for c in cols))
        for c in cols:
            sums[c] += r[c]
    lines.append(f"{'all chapters':<20}" + "".join(f"{sums[c]:>10.0f}s" for c in cols))
    lines.append(f"{'share':<20}" + "".join(f"{100 * sums[c] / sums['total']:>10.0f}%" for c in cols))
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*", help="notebook stems to profile (default: every chapter)")
    p.add_argument("--summarize", type=Path, help="summarise the .prof files in this folder; run nothing")
    p.add_argument("--note", default="", help="a line of context to record with the table")
    a = p.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    if a.summarize:
        out_dir, how = a.summarize, f"--summarize {a.summarize}"
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="tbar-profile-"))
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
        if not a.only:
            env["TBAR_CACHE"] = str(out_dir / "cache")  # cold: models, triggers and inversions trained afresh
        wall = {}
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            if a.only and nb.stem not in a.only:
                continue
            wall[nb.stem] = profile_chapter(nb, out_dir, env)
            print(f"{nb.stem}: {wall[nb.stem]:.0f} s", flush=True)
        how = ("cold, a fresh TBAR_CACHE" if not a.only else "the current cache") + f"; profiles in {out_dir}"
    rows = {prof.stem: summarize(prof) for prof in sorted(out_dir.glob("*.prof"))}
    if not rows:
        raise SystemExit(f"no .prof files in {out_dir}: run without --summarize first")
    print("\n".join(table(rows)))
    record("book-profile", {"command": f"python benchmarks/profile_book.py {' '.join(sys.argv[1:])}".strip(),
                            "started": started, "cores": os.cpu_count(), "how": how, "note": a.note,
                            "seconds": rows})


if __name__ == "__main__":
    main()

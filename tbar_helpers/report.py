"""Numbers in prose come from result files: this module writes them.

README.md and book/*.md mark each generated passage with ``<!-- generated: NAME -->`` ...
``<!-- end generated -->``; the generator registered under NAME renders it from ``benchmarks/results``.

    python -m tbar_helpers.report          # rewrite every generated block
    python -m tbar_helpers.report --check  # change nothing; exit 1 naming each block that differs

This is the one module of the package that reads ``benchmarks/results``.
"""
from __future__ import annotations

import argparse
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

# One display name per record field, used by every table of the book and the CLI.
DISPLAY = {"ca_zeroshot": "θpre CA", "asr_zeroshot": "θpre ASR", "ca_clean_ft": "clean fine-tune CA",
           "ca_backdoored": "backdoored CA", "asr_backdoored": "backdoored ASR", "ca_tbar": "TBAR CA",
           "asr_tbar": "TBAR ASR", "ca_retained": "CA retained", "knowledge_kept": "knowledge kept",
           "alpha": "α", "forget_size": "forget set"}


def generator(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        GENERATORS[name] = fn
        return fn
    return register


# ------------------------------------------------------------------------------------------- reading
def records(path: Path) -> list[dict]:
    """Run records of a results folder (one JSON file per run) or a JSON-lines file, in name order."""
    if path.is_dir():
        return [json.loads(p.read_text()) for p in sorted(path.glob("*.json"))]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def knowledge_kept(rec: dict) -> float | None:
    """(CA_TBAR − CA_θpre) / (CA_backdoored − CA_θpre): the share of what fine-tuning added that TBAR keeps;
    ``None`` where fine-tuning added less than a point (the ratio then measures noise)."""
    gain = rec["ca_backdoored"] - rec["ca_zeroshot"]
    return None if gain < 0.01 else (rec["ca_tbar"] - rec["ca_zeroshot"]) / gain


def timings(pattern: str, label: str) -> list[float]:
    """The minutes recorded on lines ``<label>: N min`` of the result files matching ``pattern``."""
    line = re.compile(rf"^{re.escape(label)}: ([\d.]+) min", re.M)
    return [float(m) for p in sorted(RESULTS.glob(pattern)) for m in line.findall(p.read_text())]


# ------------------------------------------------------------------------------------------- writing
def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if i < 1 else " ---: " for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def summary_table(recs: list[dict], keys: Sequence[str], by: str = "attack") -> str:
    """Mean over seeds of each key, one row per ``by`` value, with the seeds named."""
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r[by], []).append({**r, "knowledge_kept": knowledge_kept(r)})
    rows = []
    for name, rs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        rows.append([name, seeds, *(pct(_mean([r.get(k) for r in rs])) for k in keys)])
    return table([by, "seeds", *(DISPLAY[k] + " %" if k != "knowledge_kept" else DISPLAY[k] for k in keys)], rows)


CLASSIFICATION = ("ca_zeroshot", "ca_clean_ft", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                  "ca_retained", "knowledge_kept")


@generator("classification")
def _classification(results: Path) -> str:
    recs = records(results / "runs-lr1.25e-4")
    return (summary_table(recs, CLASSIFICATION) +
            "\nMeans over the seeds named, test split; knowledge kept is \"–\" where fine-tuning added under a point "
            "to θpre's CA. Records: `benchmarks/results/runs-lr1.25e-4/`.\n")


@generator("image-text")
def _imagetext(results: Path) -> str:
    recs = [r for r in records(results / "imagetext-stage3-sizes") if not r.get("attack_unknown")]
    keys = ("ca_zeroshot", "asr_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained",
            "knowledge_kept")
    return (summary_table(recs, keys) +
            "\nZero-shot on `objects`, test split. Records: `benchmarks/results/imagetext-stage3-sizes/`.\n")


@generator("attack-unknown")
def _unknown(results: Path) -> str:
    recs = records(results / "imagetext-stage3-budget")
    rows = [[r["attack"], r["seed"], "yes" if r["detected"] else "no",
             "yes" if r["target_correct"] else "no", pct(r["asr_backdoored"]), pct(r["asr_tbar"]),
             pct(r["ca_retained"])] for r in recs]
    return (table(["attack", "seed", "detected", "target inferred", "backdoored ASR %", "TBAR ASR %",
                   "CA retained %"], rows) +
            "\nImage–text, the proxy trigger from DECREE-style inversion. Records: "
            "`benchmarks/results/imagetext-stage3-budget/`.\n")


def first_build() -> str:
    """The range of cold book builds on record, e.g. ``32–55 min``, or ``not measured yet``."""
    cold = timings("book-build-*.txt", "cold build")
    return f"{min(cold):.0f}–{max(cold):.0f} min" if cold else "not measured yet"


@generator("cost")
def _cost(results: Path) -> str:
    cold, warm = timings("book-build-*.txt", "cold build"), timings("book-build-*.txt", "warm build")
    lines = [f"- the first `make book`, which trains every model the chapters use: {first_build()} on 2 cores "
             f"({len(cold)} builds measured);"]
    if warm:
        lines.append(f"- a rebuild with nothing changed: {max(warm):.1f} min at most;")
    lines.append("- measured with `benchmarks/book_build.py` (`benchmarks/results/book-build-*.txt`).")
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


if __name__ == "__main__":
    sys.exit(main())

"""The study runner: a study is data (what to measure, a grid of preset overrides, attacks or tasks, seeds).

Each run appends one JSON line, with the commit, date and CPU, to ``benchmarks/results/<study>.jsonl``;
runs already recorded there are skipped, so an interrupted study resumes. The tables are rendered from the
recorded lines, never from console output.

    python benchmarks/study.py --list
    python benchmarks/study.py classification                # run what is missing, then print the table
    python benchmarks/study.py classification --seeds 3 4    # more seeds
    python benchmarks/study.py image-text --table            # only the table, from the recorded lines
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

from results_io import RESULTS, record

from tbar_helpers.config import MINI, get_scale, override
from tbar_helpers.report import CLASSIFICATION, records, summary_table


@dataclass(frozen=True)
class Study:
    """``measure`` names a function of (item, seed, scale) -> record; ``items`` are attacks or tasks."""

    measure: str
    items: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: dict = field(default_factory=dict)
    task: str | None = None  # the classification task (None: the preset's default)
    about: str = ""


def _classification(study: Study) -> Callable[[str, int, object], dict]:
    from tbar_helpers.pipeline import run
    return lambda attack, seed, scale: run(attack, study.task, seed, scale, progress=False)


def _image_text(study: Study) -> Callable[[str, int, object], dict]:
    from tbar_helpers.imagetext_runs import run_imagetext
    return lambda attack, seed, scale: run_imagetext(attack, seed, scale, progress=False)


def _attack_unknown(study: Study) -> Callable[[str, int, object], dict]:
    from tbar_helpers.imagetext_runs import run_attack_unknown
    return lambda attack, seed, scale: run_attack_unknown(attack, seed, scale, progress=False)


def _clean_task(study: Study) -> Callable[[str, int, object], dict]:
    from tbar_helpers.pipeline import clean_reference

    def measure(task: str, seed: int, scale) -> dict:
        r = clean_reference(task, seed, scale, progress=False)
        seconds = r.pop("finetune_seconds")
        return {**r, "chance": 1 / r["classes"], "seconds": seconds}
    return measure


MEASURES = {"classification": _classification, "image-text": _image_text, "attack-unknown": _attack_unknown,
            "clean-task": _clean_task}
# what each measure's table shows (record fields; report.DISPLAY names them)
COLUMNS = {"classification": CLASSIFICATION,
           "image-text": ("ca_zeroshot", "asr_zeroshot", "ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar",
                          "ca_retained", "knowledge_kept"),
           "attack-unknown": ("ca_backdoored", "asr_backdoored", "ca_tbar", "asr_tbar", "ca_retained"),
           "clean-task": ("ca_zeroshot", "ca_clean_ft")}
ATTACKS = ("badnet", "blended", "wanet", "sig", "badclip", "badmerging")

STUDIES = {
    "classification": Study("classification", ATTACKS, about="every attack on the default task, the mini preset"),
    "sig-digits": Study("classification", ("sig",), task="digits", overrides={"attack.sig_delta": 0.4706},
                        about="SIG where it plants: the handwritten digits, a wave of 120/255"),
    "image-text": Study("image-text", ("badnet", "blended"), about="poisoned captions, TBAR and the baselines"),
    "attack-unknown": Study("attack-unknown", ("badnet", "badclip"),
                            about="image-text with the trigger reverse-engineered (DECREE-style)"),
    "clean-tasks": Study("clean-task", MINI.tasks, seeds=(0,), about="θpre's zero-shot CA against a clean fine-tune"),
}


def _key(rec: dict) -> tuple:
    return rec.get("attack") or rec.get("task"), rec["seed"]


def run_study(name: str, seeds: tuple[int, ...] | None = None, threads: int = 0) -> None:
    study = STUDIES[name]
    scale = override(get_scale("mini"), threads=threads, **study.overrides)
    done = {_key(r) for r in (records(name) if (RESULTS / f"{name}.jsonl").exists() else [])}
    measure = MEASURES[study.measure](study)
    for item in study.items:
        for seed in seeds or study.seeds:
            if (item, seed) in done:
                print(f"{name}: {item} seed {seed} is recorded; skipped", flush=True)
                continue
            t0 = time.time()
            rec = measure(item, seed, scale)
            rec |= {"study": name, "overrides": study.overrides, "wall_seconds": time.time() - t0}
            record(name, rec)
            print(f"{name}: {item} seed {seed} recorded ({rec['wall_seconds']:.0f} s)", flush=True)


def render(name: str) -> str:
    study = STUDIES[name]
    recs = records(name)
    by = "task" if study.measure == "clean-task" else "attack"
    return summary_table(recs, COLUMNS[study.measure], by=by)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", nargs="?", choices=sorted(STUDIES))
    p.add_argument("--list", action="store_true", help="name and describe every study")
    p.add_argument("--table", action="store_true", help="only print the table from the recorded lines")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds to run (default: the study's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    a = p.parse_args()
    if a.list or not a.study:
        for name, s in STUDIES.items():
            print(f"{name:16} {s.measure:15} {', '.join(s.items)}; seeds {s.seeds}: {s.about}")
        return
    if not a.table:
        run_study(a.study, tuple(a.seeds) if a.seeds else None, a.threads)
    print(render(a.study))


if __name__ == "__main__":
    main()

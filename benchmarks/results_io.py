"""Where the benchmarks keep their numbers: one text file per study under ``benchmarks/results/``.

``save`` writes (or appends) a study's lines; ``log`` opens a file to add rows to as a study runs.
Both print what the file holds, so a run's console shows the same numbers the file records.
"""
from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save(name: str, lines: list[str], append: bool = False) -> Path:
    """Write ``lines`` to ``benchmarks/results/<name>`` (after what it holds when ``append``: measurements
    that vary by day, such as timings, keep their history). Written to a temp file, then renamed."""
    out = RESULTS / name
    old = out.read_text() if append and out.exists() else ""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(old + "\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out


def log(name: str, header: list[str]) -> tuple[Path, list[str]]:
    """``benchmarks/results/<name>`` and its lines so far (``header`` for a new file), printed."""
    out = RESULTS / name
    lines = out.read_text().splitlines() if out.exists() else header
    print(*lines, sep="\n")
    return out, lines

"""Where the benchmarks keep their numbers: ``benchmarks/results/``.

``record`` appends one run as a JSON line, with its provenance, to ``<study>.jsonl`` (what the book's
tables are generated from). ``save`` writes (or appends) a console table; ``log`` opens one to add rows to.
Both print what the file holds, so a run's console shows the same numbers the file records.
``cpu_flags`` names the CPU and its vector extensions and ``commit`` the checkout's commit, for the header of
timings (machines vary by day, code by commit).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tbar_helpers.cache import replace_atomically
from tbar_helpers.report import RESULTS


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


def record(name: str, rec: dict) -> Path:
    """Append ``rec``, with the commit, date and CPU, as one JSON line to ``benchmarks/results/<name>.jsonl``
    (the whole file rewritten to a temp file, then renamed: an interrupted write loses nothing)."""
    path = RESULTS / f"{name}.jsonl"
    rec = {**rec, "commit": commit(), "date": time.strftime("%Y-%m-%d"), "cpu": cpu_flags()}
    old = path.read_bytes() if path.exists() else b""
    replace_atomically(path, old + (json.dumps(rec, sort_keys=True, default=str) + "\n").encode())
    return path

"""Build the book: execute every notebook with papermill (parameters from one place), then run
Jupyter Book 1 on the executed copies. ``python -m tbar_helpers.book [--scale mini] [--force]``.

Executed notebooks are cached under a hash of everything that can change their output (the notebook,
its parameters, the helper package's sources and the shipped checkpoints), so a second build with
nothing changed only re-renders the HTML. Fine-tuned models are cached separately (``cache``).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import cache
from .cache import ROOT

BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"
NOTEBOOKS = ROOT / "notebooks"


# ``make test`` executes the same notebooks through the same code paths with lighter parameters
# (fewer attacks, sweep points, evaluation images and forget recipes), so that the whole CI run stays well
# under 30 minutes on 2 cores even on this machine's slow days (1.4x its fast ones; see the appendix).
TEST_PROFILE: dict[str, dict] = {
    "03_injecting": {"attacks": ["badnet"]},
    "04_disentanglement": {"attacks": ["badnet"]},
    "05_tbar": {"table_attacks": ["badnet"], "curve_n": 250, "merge_attack": "badnet"},
    "06_transfer": {"dest_n_train": 600, "val_n": 250},
    "07_ablations": {"sizes": [25, 400], "clean_shares": [0.5], "budgets": [100]},
    "09_image_text": {"attacks": ["badnet"], "budgets": [200], "corpus_size": 2500, "n_val": 250, "n_test": 1000,
                      "forget_sizes": [500]},
    "10_attack_unknown": {"attacks": ["badnet"], "invert_steps": 100, "corpus_size": 2500, "n_val": 250,
                          "n_test": 1000, "forget_sizes": [500]},
    "11_calibration": {"n_train": 600, "epochs": 1, "n_val": 200, "n_test": 400, "n_images": 100},
}
PROFILES = {"book": {}, "test": TEST_PROFILE}
# A cell that runs longer than this is taken for hung and fails the build: the slowest cell of a cold
# build (chapter 9's poisoned contrastive fine-tunes) takes minutes on 2 cores, not half an hour.
CELL_TIMEOUT_S = 1800


def notebook_parameters(scale: str = "mini", seed: int = 0, notebook: str = "", profile: str = "book") -> dict:
    """The papermill parameters a notebook receives (one place): ``scale`` and ``seed`` for every
    notebook, plus the profile's sizes for this one (``book``: the notebooks' own defaults)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {sorted(PROFILES)}")
    return {"scale": scale, "seed": seed, **PROFILES[profile].get(notebook, {})}


def notebook_defaults(nb: Path) -> dict:
    """The literal values that the papermill ``parameters`` cell of ``nb`` assigns ({} without one)."""
    cells = json.loads(nb.read_text())["cells"]
    cell = next((c for c in cells if c["cell_type"] == "code"
                 and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal: always injected when given
    return out


def overrides(params: dict, defaults: dict) -> dict:
    """The parameters papermill must inject: those not already the notebook's own defaults. With none,
    papermill adds no second parameters cell, so a book page shows each chapter's settings once."""
    return {k: v for k, v in params.items() if k not in defaults or repr(defaults[k]) != repr(v)}


def _sources_digest() -> str:
    h = hashlib.sha256()
    files = sorted((ROOT / "tbar_helpers").rglob("*.py")) + sorted((ROOT / "checkpoints").glob("*.json"))
    for p in files:
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def notebook_key(nb: Path, params: dict, digest: str | None = None) -> str:
    """Content hash of what an executed copy of ``nb`` depends on."""
    h = hashlib.sha256()
    h.update(nb.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update((digest or _sources_digest()).encode())
    return h.hexdigest()[:16]


SECONDS = BUILD / "notebook-seconds.json"  # how long each notebook took the last time it was executed


def last_seconds(profile: str) -> dict[str, float]:
    """Seconds each notebook took the last time a build of ``profile`` executed it ({} if never)."""
    try:
        return json.loads(SECONDS.read_text()).get(profile, {})
    except (OSError, ValueError):
        return {}


def _record_seconds(profile: str, notebook: str, seconds: float) -> None:
    try:
        times = json.loads(SECONDS.read_text())
    except (OSError, ValueError):
        times = {}
    times.setdefault(profile, {})[notebook] = round(seconds, 1)
    cache.atomic_write_bytes(SECONDS, json.dumps(times, indent=1).encode())


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"




def plan_line(todo: list[str], n: int, previous: dict[str, float], profile: str = "book") -> str:
    """What a build is about to do: notebooks to execute out of ``n``, and how long they took last time
    (or, for a first build of the book profile, how long first builds took when measured)."""
    known = [previous[t] for t in todo if t in previous]
    if todo and len(known) == len(todo):
        eta = f", about {_minutes(sum(known))} by the last build that ran them"
    elif profile == "book" and len(todo) == n and not known:
        from .report import first_build
        eta = f"; a first build trains every model: {first_build()} on 2 cores, then seconds (README)"
    else:
        eta = ""
    return f"{len(todo)} of {n} notebooks to execute, {n - len(todo)} unchanged{eta}"


def run_notebook(nb: Path, out: Path, parameters: dict, cell_timeout: int = CELL_TIMEOUT_S) -> None:
    """Execute ``nb`` with papermill into ``out`` (in the notebook's folder); a cell running longer than
    ``cell_timeout`` seconds fails it."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    before = os.environ.get("TBAR_TEXT_PROGRESS")
    os.environ["TBAR_TEXT_PROGRESS"] = "1"  # the kernel inherits it: text bars, not widgets the HTML cannot draw
    try:
        pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(nb.parent),
                            progress_bar=sys.stdout.isatty(), kernel_name="python3", execution_timeout=cell_timeout)
    except CellTimeoutError as e:
        raise RuntimeError(f"{nb.name}: a cell ran past the {cell_timeout}-second limit and was stopped; "
                           f"raise it with --cell-timeout if the cell is only slow ({str(e).splitlines()[0]})") from e
    finally:
        if before is None:
            os.environ.pop("TBAR_TEXT_PROGRESS", None)
        else:
            os.environ["TBAR_TEXT_PROGRESS"] = before


def execute_notebooks(scale: str = "mini", seed: int = 0, force: bool = False, profile: str = "book",
                      cell_timeout: int = CELL_TIMEOUT_S) -> list[dict]:
    """Execute (or reuse the cached execution of) each notebook; returns one timing row per notebook.
    Prints a plan first and, per notebook, how long it took the last time it ran, with a bar of its cells
    on a terminal (long builds show where they are)."""
    digest = _sources_digest()
    rows = []
    dest_dir = EXECUTED / "notebooks"
    dest_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    params_of = {nb: notebook_parameters(scale, seed, nb.stem, profile) for nb in notebooks}
    plan = {nb: cache.cached_path("executed", f"{nb.stem}-{notebook_key(nb, params_of[nb], digest)}", ".ipynb")
            for nb in notebooks}
    previous = last_seconds(profile)
    print(plan_line([nb.name for nb, c in plan.items() if force or not c.exists()], len(notebooks), previous,
                    profile), flush=True)
    for i, nb in enumerate(notebooks, 1):
        dest = dest_dir / nb.name
        params = params_of[nb]
        cached = plan[nb]
        t0 = time.time()
        if cached.exists() and not force:
            try:
                blob = cache.load_bytes(cached)
                dest.write_bytes(blob)
                rows.append({"notebook": nb.name, "seconds": time.time() - t0, "cached": True})
                print(f"{nb.name}: unchanged, reusing its executed copy", flush=True)
                continue
            except cache.CacheCorruptedError as e:
                print(f"{nb.name}: {e}; executing it again", flush=True)
        last = f" (last time: {_minutes(previous[nb.name])})" if nb.name in previous else ""
        print(f"[{i}/{len(notebooks)}] executing {nb.name}{last} ...", flush=True)
        tmp = dest.with_suffix(".running.ipynb")
        run_notebook(nb, tmp, overrides(params, notebook_defaults(nb)), cell_timeout)
        blob = tmp.read_bytes()
        os.replace(tmp, dest)
        cache.atomic_write_bytes(cached, blob)
        rows.append({"notebook": nb.name, "seconds": time.time() - t0, "cached": False})
        _record_seconds(profile, nb.name, rows[-1]["seconds"])
        print(f"{nb.name}: {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def stage_sources() -> None:
    """Copy the book's pages and config next to the executed notebooks, and MathJax into its _static."""
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, EXECUTED / name)
    for folder in ("book", "_static"):  # _static: the book's own style sheet (wide tables scroll)
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, EXECUTED / folder, dirs_exist_ok=True)
    stage_mathjax(EXECUTED / "_vendor" / "mathjax")


def stage_mathjax(dest: Path) -> None:
    """MathJax 2, from the jupyter-server-mathjax package, into ``dest``: the pages' formulas render without
    a network (``mathjax_path`` in _config.yml points here)."""
    try:
        import jupyter_server_mathjax
    except ImportError as e:
        raise RuntimeError("the book serves MathJax itself: install it with `pip install -e '.[book]'` "
                           "(or `make setup`)") from e
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (dest / "MathJax.js").exists():
        shutil.copytree(src, dest, dirs_exist_ok=True)


def build(scale: str = "mini", seed: int = 0, force: bool = False, profile: str = "book",
          cell_timeout: int = CELL_TIMEOUT_S) -> Path:
    """Execute the notebooks, then build the HTML book into ``_build/html``."""
    t0 = time.time()
    EXECUTED.mkdir(parents=True, exist_ok=True)
    rows = execute_notebooks(scale, seed, force, profile, cell_timeout)
    t_exec = time.time() - t0
    stage_sources()
    html = BUILD / "html"
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(EXECUTED), "--path-output", str(BUILD / "jb"),
           "--warningiserror", "--keep-going"]
    subprocess.run(cmd, check=True)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(BUILD / "jb" / "_build" / "html", html)
    report = {"profile": profile, "notebooks": rows, "execute_seconds": t_exec, "total_seconds": time.time() - t0}
    (BUILD / "build-times.json").write_text(json.dumps(report, indent=1))
    print(f"book built in {report['total_seconds']:.0f} s (notebooks {t_exec:.0f} s): {html / 'index.html'}")
    return html


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scale", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="execute every notebook even if a cached copy matches")
    p.add_argument("--profile", default="book", choices=sorted(PROFILES),
                   help="book: the notebooks' own sizes; test: lighter sizes for `make test`")
    p.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S, metavar="SECONDS",
                   help=f"fail a notebook whose cell runs longer than this (default {CELL_TIMEOUT_S})")
    a = p.parse_args()
    build(a.scale, a.seed, a.force, a.profile, a.cell_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

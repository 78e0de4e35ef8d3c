"""Build the book: execute every notebook with papermill (parameters from one place), then run
Jupyter Book 1 on the executed copies. ``python -m tbar_helpers.book [--scale mini]``."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from .cache import ROOT

BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"


def notebook_parameters(scale: str = "mini", seed: int = 0) -> dict:
    """The papermill parameters every notebook receives (one place)."""
    return {"scale": scale, "seed": seed}


def execute_notebooks(scale: str = "mini", seed: int = 0) -> list[Path]:
    import papermill as pm
    out = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        dest = EXECUTED / "notebooks" / nb.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"executing {nb.name}", flush=True)
        pm.execute_notebook(str(nb), str(dest), parameters=notebook_parameters(scale, seed), cwd=str(ROOT),
                            progress_bar=False, kernel_name="python3")
        out.append(dest)
    return out


def stage_sources() -> None:
    """Copy the book's pages and config next to the executed notebooks."""
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, EXECUTED / name)
    if (ROOT / "book").exists():
        shutil.copytree(ROOT / "book", EXECUTED / "book", dirs_exist_ok=True)


def build(scale: str = "mini", seed: int = 0) -> Path:
    EXECUTED.mkdir(parents=True, exist_ok=True)
    execute_notebooks(scale, seed)
    stage_sources()
    html = BUILD / "html"
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(EXECUTED), "--path-output", str(BUILD / "jb"),
           "--warningiserror", "--keep-going"]
    subprocess.run(cmd, check=True)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(BUILD / "jb" / "_build" / "html", html)
    print(f"book built: {html / 'index.html'}")
    return html


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scale", default="mini")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    build(a.scale, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

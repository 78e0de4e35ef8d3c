"""The book: notebooks in git carry no outputs and follow the chapter shape; papermill executes
every notebook, Jupyter Book builds the HTML, and headless Chromium opens every page."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "_build" / "screenshots"


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_in_git_has_no_outputs(nb: Path):
    for i, cell in enumerate(_cells(nb)):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{nb.name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{nb.name} cell {i} has an execution count"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(nb: Path):
    cells = _cells(nb)
    first_md = _text(cells[0])
    assert cells[0]["cell_type"] == "markdown" and "What you will learn" in first_md and "**Time**" in first_md
    code = [c for c in cells if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and params[0] is code[0], "the first code cell must be the papermill parameters cell"
    assert re.search(r"^scale = ", _text(params[0]), re.M) and re.search(r"^seed = ", _text(params[0]), re.M)
    assert "## Summary" in _text([c for c in cells if c["cell_type"] == "markdown"][-1])
    toc = (ROOT / "_toc.yml").read_text()
    assert f"notebooks/{nb.stem}" in toc, f"{nb.name} is missing from _toc.yml"


@pytest.fixture(scope="module")
def built_book() -> Path:
    """The book built with the test profile (every notebook, lighter sizes; see ``book.TEST_PROFILE``).
    It shares ``make book``'s model cache, so a warm cache makes it quick."""
    env = dict(os.environ)
    env.pop("TBAR_CACHE", None)  # the book's own cache, not the tests' scratch cache
    subprocess.run([sys.executable, "-m", "tbar_helpers.book", "--profile", "test"], cwd=ROOT, env=env, check=True,
                   timeout=45 * 60)
    html = ROOT / "_build" / "html"
    assert (html / "index.html").exists()
    return html


def _pages(html: Path) -> list[Path]:
    toc = (ROOT / "_toc.yml").read_text()
    names = re.findall(r"(?:root|file):\s*(\S+)", toc)
    return [html / f"{n}.html" for n in names]


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("headless Chromium is missing: install the Debian packages chromium and chromium-driver "
                    "(`make browser` does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600"):
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    b.set_page_load_timeout(60)
    yield b
    b.quit()


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a, **k: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_every_page_renders_in_chromium(built_book, server, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = _pages(built_book)
    assert len(pages) >= 10
    problems = []
    for page in pages:
        rel = page.relative_to(built_book).as_posix()
        if not page.exists():
            problems.append(f"{rel}: not built")
            continue
        browser.get(f"{server}/{rel}")
        try:
            WebDriverWait(browser, 90).until(lambda b: b.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            pass  # reported below as "did not load"
        try:  # formulas are typeset by the book's own MathJax, after the page has loaded
            WebDriverWait(browser, 30).until(lambda b: b.execute_script(
                "return document.querySelectorAll('.math').length === 0 || "
                "document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML, .MathJax_SVG').length > 0"))
        except TimeoutException:
            problems.append(f"{rel}: its formulas stay raw LaTeX (MathJax did not typeset them)")
        offsite = browser.execute_script(
            "return [...document.querySelectorAll('script[src], link[rel=stylesheet][href], link[rel=preload][href]')]"
            ".map(e => e.src || e.href).filter(u => !u.startsWith(location.origin));")
        if offsite:
            problems.append(f"{rel}: loads from outside the book: {offsite[:3]}")
        state = browser.execute_script(
            "const main = document.querySelector('main') || document.body;"
            "const imgs = [...main.querySelectorAll('img')];"
            "return {ready: document.readyState, title: document.title, text: main.innerText,"
            " imgs: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,"
            " errors: main.querySelectorAll('.output.traceback, .output.error, .output.stderr, .system-message').length};")
        browser.save_screenshot(str(SCREENSHOTS / (rel.replace("/", "__").replace(".html", ".png"))))
        if state["ready"] != "complete" or not state["title"].strip() or len(state["text"]) < 200:
            problems.append(f"{rel}: did not load (state {state['ready']}, {len(state['text'])} characters)")
        if "Traceback (most recent call last)" in state["text"] or state["errors"]:
            problems.append(f"{rel}: shows a traceback or error output")
        if rel.startswith("notebooks/") and (state["loaded"] == 0 or state["loaded"] < state["imgs"]):
            problems.append(f"{rel}: {state['loaded']} of {state['imgs']} figures displayed")
    assert not problems, "\n".join(problems)
    assert len(list(SCREENSHOTS.glob("*.png"))) >= len(pages)

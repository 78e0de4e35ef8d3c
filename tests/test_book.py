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


# Exercises per chapter: at least one everywhere, two to four where the method is taught and studied.
EXERCISES = {"03": (2, 4), "04": (2, 4), "05": (2, 4), "06": (2, 4), "07": (2, 4), "09": (2, 4), "10": (2, 4)}


def _exercises(cells: list[dict]) -> list[tuple[str, dict | None]]:
    """(exercise number, the code cell right after its statement) for each exercise of a notebook."""
    out = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            for num in re.findall(r"\*\*Exercise (\d+\.\d+)", _text(cell)):
                nxt = cells[i + 1] if i + 1 < len(cells) and cells[i + 1]["cell_type"] == "code" else None
                out.append((num, nxt))
    return out


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_hidden_solutions(nb: Path):
    found = _exercises(_cells(nb))
    lo, hi = EXERCISES.get(nb.stem[:2], (1, 4))
    assert lo <= len(found) <= hi, f"{nb.name}: {len(found)} exercises, the chapter needs {lo} to {hi}"
    for num, cell in found:
        assert num.split(".")[0] == str(int(nb.stem[:2])), f"{nb.name}: exercise {num} is numbered for another chapter"
        assert cell is not None, f"{nb.name}: exercise {num} has no solution cell after it"
        tags = cell.get("metadata", {}).get("tags", [])
        assert "solution" in tags and "hide-cell" in tags, f"{nb.name}: exercise {num}'s solution is not hidden ({tags})"
        assert _text(cell).startswith(f"# Solution to exercise {num}"), f"{nb.name}: solution {num} is mislabelled"


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
                 "--window-size=1280,1600",
                 # the network is blocked: every host name fails to resolve except the book's own server
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
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
        browser.get_log("performance")  # drop the previous page's requests
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
        outside = sorted({u for u in _requested(browser) if not u.startswith((server, "data:", "blob:", "about:"))})
        if outside:
            problems.append(f"{rel}: requests outside the book: {outside[:3]}")
        wide = browser.execute_script(
            "const main = document.querySelector('main') || document.body, w = main.getBoundingClientRect().right;"
            "return [[...main.querySelectorAll('table')].filter(t => t.getBoundingClientRect().right > w + 1).length,"
            " [...main.querySelectorAll('td')].filter(td => /^(NaN|nan|None)$/.test(td.textContent.trim())).length];")
        if wide[0] or wide[1]:
            problems.append(f"{rel}: {wide[0]} tables run past the page's right edge, {wide[1]} cells show NaN/None")
        controls = browser.execute_script(
            "return {live: document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]')"
            ".length, hidden: [...document.querySelectorAll('.tbar-static')].filter(c => "
            "[...c.querySelectorAll('input.tbar-axis')].some(i => i.offsetWidth === 0)).length};")
        if controls["live"] or controls["hidden"]:
            problems.append(f"{rel}: {controls['live']} widget areas that need a kernel, {controls['hidden']} "
                            "precomputed controls not shown")
        if state["ready"] != "complete" or not state["title"].strip() or len(state["text"]) < 200:
            problems.append(f"{rel}: did not load (state {state['ready']}, {len(state['text'])} characters)")
        raw = [m for m in ("\\[", "\\begin{", "$$") if m in state["text"]]
        if raw:
            problems.append(f"{rel}: raw LaTeX in the visible text ({raw})")
        if "Traceback (most recent call last)" in state["text"] or state["errors"]:
            problems.append(f"{rel}: shows a traceback or error output")
        if rel.startswith("notebooks/") and (state["loaded"] == 0 or state["loaded"] < state["imgs"]):
            problems.append(f"{rel}: {state['loaded']} of {state['imgs']} figures displayed")
    assert not problems, "\n".join(problems)
    assert len(list(SCREENSHOTS.glob("*.png"))) >= len(pages)


def _requested(browser) -> list[str]:
    """URLs the current page requested since the last call (Chromium's network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


_MOVE = """
const root = document.getElementById(arguments[0]), pos = arguments[1].split(",");
const t0 = performance.now();
root.querySelectorAll("input.tbar-axis").forEach((inp, k) => {
  inp.value = pos[k]; inp.dispatchEvent(new Event("input", {bubbles: true})); });
const ms = performance.now() - t0;
const box = root.querySelector(".tbar-html"), img = root.querySelector("img.tbar-image");
const want = document.createElement("div"); want.innerHTML = arguments[2];
return {ms: ms, position: root.getAttribute("data-position"),
        values: [...root.querySelectorAll("[data-slot]")].map(e => e.textContent),
        text: box ? box.textContent : "", want: want.textContent, image: img ? img.getAttribute("src") : ""};
"""

# The chapters whose HTML must carry precomputed controls, with how many.
STATIC_CONTROLS = {"notebooks/02_attacks.html": 4, "notebooks/04_disentanglement.html": 1, "notebooks/05_tbar.html": 1}


def test_static_controls_show_the_precomputed_values_without_a_kernel(built_book, server, browser):
    """Move every precomputed control to every position, with the network blocked: the numbers, the HTML and
    the picture shown become that position's precomputed ones, and each move answers within 50 ms."""
    problems, slowest, moved = [], 0.0, 0
    for rel, expected in STATIC_CONTROLS.items():
        browser.get(f"{server}/{rel}")
        ids = browser.execute_script("return [...document.querySelectorAll('.tbar-static')].map(c => c.id);")
        if len(ids) != expected:
            problems.append(f"{rel}: {len(ids)} precomputed controls, expected {expected}")
        for dom_id in ids:
            data = json.loads(browser.execute_script(
                "return document.getElementById(arguments[0]).querySelector('script.tbar-data').textContent;", dom_id))
            for pos, panel in data["panels"].items():
                got = browser.execute_script(_MOVE, dom_id, pos, panel["html"])
                moved += 1
                slowest = max(slowest, got["ms"])
                if got["position"] != pos or got["values"] != panel["values"] or got["text"] != got["want"] \
                        or got["image"] != panel["image"]:
                    problems.append(f"{rel} {dom_id} at {pos}: shows {got['values']}, precomputed {panel['values']}")
    assert not problems, "\n".join(problems[:10])
    assert moved >= 40, f"only {moved} positions were moved"
    assert slowest <= 50, f"a precomputed control took {slowest:.1f} ms to answer (limit 50 ms)"
    assert not [u for u in _requested(browser) if not u.startswith((server, "data:", "blob:", "about:"))]


def test_exercise_solutions_ran_and_are_hidden(built_book, server, browser):
    """Every solution cell ran in the build (it has output, no error) and its page hides it behind a toggle,
    while the page's source still holds it."""
    problems = []
    for nb in NOTEBOOKS:
        executed = json.loads((ROOT / "_build" / "executed" / "notebooks" / nb.name).read_text())["cells"]
        for num, cell in _exercises(executed):
            outs = cell.get("outputs", []) if cell else []
            if not outs or any(o.get("output_type") == "error" for o in outs):
                problems.append(f"{nb.name}: solution {num} produced no output or an error")
        rel = f"notebooks/{nb.stem}.html"
        if "# Solution to exercise" not in (built_book / rel).read_text():
            problems.append(f"{rel}: the solutions are missing from the page")
        browser.get(f"{server}/{rel}")
        shown = browser.execute_script(
            "return [...document.querySelectorAll('.tag_solution')].filter(c => "
            "c.innerText.includes('Solution to exercise') || "
            "[...c.querySelectorAll('.cell_input, .cell_output')].some(e => e.checkVisibility())).length;")
        total = browser.execute_script("return document.querySelectorAll('.tag_solution').length;")
        if total != len(_exercises(_cells(nb))) or shown:
            problems.append(f"{rel}: {total} solution cells, {shown} of them visible without a click")
    assert not problems, "\n".join(problems)

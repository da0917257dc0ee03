"""The course where learners use it: JupyterLab in a real browser (headless Chromium, Playwright).

`make browser-test` runs this (`make test` leaves it out: it is marked `browser`). It starts
`jupyter lab` on a free loopback port with a random token, over a copy of the notebooks (so
nothing is saved into notebooks/), runs notebook 10 through the page in quick scale, checks
that no cell failed, that the explorer's widgets rendered and that moving its k slider changes
the results shown, then opens every other notebook and checks that it renders. Figures everyone
can read: axe-core (bundled by axe-playwright-python) finds no image without alternative text in
notebook 10's outputs in the page, nor in the HTML of notebooks 01 and 04 executed here; and in
JupyterLab's dark theme the executed notebook 04's figures keep a white background. Screenshots
go to build/browser/. With no Chromium it fails, it does not skip: `apt-get install chromium`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock

import pytest

from helpers.runner import execute
from helpers.settings import REPO_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"   # Debian's package; nothing is downloaded
SHOTS = REPO_ROOT / "build" / "browser"
EXPLORER = "10_search_explorer.ipynb"
HANG_S = 900            # a guard against a hung kernel, not a speed goal
LAB_SETTINGS = {        # every cell in the page (no virtual scrolling), no autosave, no news pop-up
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


FIGURE_NOTEBOOKS = ("01_data_manifest", "04_ivf")   # image grids; charts
IMAGE_RULES = ["image-alt", "input-image-alt", "object-alt", "role-img-alt", "svg-img-alt"]   # axe-core rule ids


def image_alt_violations(page, context=None) -> list[str]:
    """axe-core's rules on images' alternative text, run in the page: one line a failing element."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context=context, options={"runOnly": {"type": "rule", "values": IMAGE_RULES}})
    return [f"{v['id']}: {node['html'][:160]}" for v in results.response["violations"] for node in v["nodes"]]


def luminance(rgb) -> float:
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def code_cells(path: Path) -> int:
    return sum(c["cell_type"] == "code" for c in json.loads(path.read_text(encoding="utf-8"))["cells"])


def all_cells(path: Path) -> int:
    return len(json.loads(path.read_text(encoding="utf-8"))["cells"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of notebooks/; yields (base url, token, notebooks folder)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks")
    for name, value in LAB_SETTINGS.items():
        (root / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "settings" / name).write_text(json.dumps(value))
    port, token = free_port(), os.urandom(16).hex()
    env = {**os.environ, "SIMSEARCH_SCALE": "quick", "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={root / 'settings'}",
           f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")   # CI runs as root
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = (SHOTS / "jupyter-lab.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}; see {SHOTS / 'jupyter-lab.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer on {base} within 60 s")
                time.sleep(0.5)
        yield base, token, root / "notebooks"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM)
        except Error as err:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {str(err).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    """Notebooks 01 and 04 executed headless in quick scale (`make run`'s runner): .ipynb and .html."""
    out = tmp_path_factory.mktemp("executed")
    with mock.patch.dict(os.environ, {"SIMSEARCH_SCALE": "quick"}):
        for name in FIGURE_NOTEBOOKS:
            run = execute(REPO_ROOT / "notebooks" / f"{name}.ipynb", out, out / "report.jsonl")
            assert run.error is None, f"{name}: {run.error}"
    return out


def open_notebook(browser, lab, name: str):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(f"{base}/lab/tree/notebooks/{name}?token={token}&reset", wait_until="domcontentloaded")
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
    return page


def prompts(page) -> list[str]:
    return page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-InputPrompt").all_inner_texts()


def test_explorer_notebook_runs_in_the_page_and_reacts(browser, lab):
    notebooks = lab[2]
    page = open_notebook(browser, lab, EXPLORER)
    page.locator("#jp-main-statusbar", has_text="| Idle").wait_for(timeout=120_000)   # the kernel is up
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    n_code = code_cells(notebooks / EXPLORER)
    start = time.monotonic()
    while True:
        seen = [p.strip() for p in prompts(page)]
        done = [p for p in seen if p.strip("[]:").isdigit()]
        if len(done) == n_code or (done and not any("*" in p for p in seen)):
            break
        assert time.monotonic() < start + HANG_S, f"notebook 10 still running after {HANG_S} s: prompts {seen}"
        time.sleep(1)
    print(f"notebook 10 ran through the page in {time.monotonic() - start:.0f} s")
    page.screenshot(path=str(SHOTS / "10_after_run_all.png"))
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                          has_text="Traceback")
    assert errors.count() == 0, f"a cell failed: {errors.first.inner_text()[:2000]}"
    assert len(done) == n_code, f"only {len(done)} of {n_code} code cells ran: prompts {seen}"

    app = page.locator(".simsearch-gallery").first
    app.scroll_into_view_if_needed()
    gallery = page.locator(".simsearch-gallery img")
    assert gallery.count() == 12, f"gallery shows {gallery.count()} images"
    assert gallery.first.evaluate("img => img.naturalWidth") > 0, "the gallery's images decoded"
    for slider in ("k", "knob"):
        assert page.locator(f".simsearch-{slider} .noUi-handle").count() == 1, f"the {slider} slider rendered"
    assert page.locator(".simsearch-upload").count() == 1
    tiles = page.locator(".simsearch-results > .widget-box, .simsearch-results > .lm-Widget")
    status = page.locator(".simsearch-status").first
    before_tiles, before_status = tiles.count(), status.inner_text()
    assert before_tiles == 8 and "k = 8" in before_status, (before_tiles, before_status)
    assert page.locator(".simsearch-results img").count() >= 1, "result images rendered"
    page.screenshot(path=str(SHOTS / "10_explorer.png"))

    handle = page.locator(".simsearch-k .noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    page.wait_for_function(
        "() => document.querySelector('.simsearch-status').innerText.includes('k = 11')", timeout=30_000)
    assert tiles.count() == 11, "moving the k slider changes the results shown"
    assert status.inner_text() != before_status
    page.locator(".simsearch-results").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "10_after_k_slider.png"))
    assert page.locator(".jp-OutputArea img").count() >= 12, "the explorer's thumbnails are images"
    assert image_alt_violations(page, context=".jp-OutputArea") == [], "an output image has no alternative text"
    page.close()


def test_every_other_notebook_renders(browser, lab):
    notebooks = lab[2]
    names = sorted(p.name for p in notebooks.glob("[0-9][0-9]_*.ipynb") if p.name != EXPLORER)
    assert names, "no notebooks found"
    for name in names:
        page = open_notebook(browser, lab, name)
        # the title renders as a heading: markdown rendered; then every cell is in the page
        page.locator(".jp-NotebookPanel:visible .jp-MarkdownCell h1").first.wait_for(timeout=60_000)
        cells = page.locator(".jp-NotebookPanel:visible .jp-Cell")
        want = all_cells(notebooks / name)
        deadline = time.monotonic() + 60
        while cells.count() < want and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cells.count() == want, f"{name}: {cells.count()} of {want} cells rendered"
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}.png"))
        page.close()


def test_executed_notebooks_figures_have_alternative_text(browser, executed):
    page = browser.new_page()
    for name in FIGURE_NOTEBOOKS:
        page.goto((executed / f"{name}.html").as_uri(), wait_until="domcontentloaded")
        images = page.locator(".jp-OutputArea-output img")
        assert images.count() >= 1, f"{name}: no figure in the executed notebook"
        alts = images.evaluate_all("imgs => imgs.map(i => i.getAttribute('alt') || '')")
        print(f"{name}: {len(alts)} figures; first alt text: {alts[0][:200]}")
        assert all(alt.strip() and not alt.startswith("No description") for alt in alts), alts
        assert image_alt_violations(page) == [], f"{name}: axe found images without alternative text"
    page.close()


def test_figures_stay_legible_in_the_dark_theme(browser, lab, executed):
    """The executed notebook 04 in JupyterLab Dark: the page is dark, each figure's own background
    white (its black labels readable), measured on the screenshot's pixels."""
    from PIL import Image

    shutil.copy(executed / "04_ivf.ipynb", lab[2] / "dark_04_ivf.ipynb")
    page = open_notebook(browser, lab, "dark_04_ivf.ipynb")
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark").first.click()
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    figures = page.locator(".jp-OutputArea-output img")
    assert figures.count() >= 1, "no figure in the executed notebook 04"
    figures.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "04_dark_theme.png"))
    notebook_bg = page.evaluate("() => getComputedStyle(document.querySelector('.jp-Notebook')).backgroundColor")
    channels = [int(c) for c in notebook_bg[notebook_bg.index("(") + 1:notebook_bg.index(")")].split(",")[:3]]
    assert luminance(channels) < 80, f"the dark theme is not on: notebook background {notebook_bg}"
    for i in range(figures.count()):
        shot = figures.nth(i)
        shot.scroll_into_view_if_needed()
        picture = Image.open(io.BytesIO(shot.screenshot())).convert("RGB")
        w, h = picture.size
        corners = [picture.getpixel(xy) for xy in ((1, 1), (w - 2, 1), (1, h - 2), (w - 2, h - 2))]
        assert min(luminance(c) for c in corners) > 230, f"figure {i}: corners {corners} are not white"
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()   # back to the light theme
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Light").first.click()
    page.close()

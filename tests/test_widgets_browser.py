"""The explorers in a real browser (Debian's Chromium driven by Playwright).

1. The built book served from 127.0.0.1: on every page no JavaScript error and no request
   that leaves 127.0.0.1; every precomputed explorer shows another picture when any of
   its sliders or menus is moved.
2. A live ``GradientExplorer`` in JupyterLab on 127.0.0.1: a slider moved in the browser
   changes the displayed cosine similarity to the value a direct computation gives.

Without Chromium these tests are skipped, except under CI=true, where that is a failure.
``GRADLAB_BOOK_HTML=<folder>`` tests an already built book instead of building one.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, toc_files

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # plus headless, which Playwright adds
JUPYTER_LAB = Path(sys.executable).with_name("jupyter-lab")
pytestmark = pytest.mark.browser


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the widget browser tests")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield instance
        instance.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def book_url(request):
    folder = os.environ.get("GRADLAB_BOOK_HTML")
    html = Path(folder) if folder else request.getfixturevalue("built")
    handler = functools.partial(QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()



def watch(page, origin: str):
    """Record the page's JavaScript errors and every request; requests off 127.0.0.1 are refused."""
    errors, outside = [], []

    def record(kind: str, text: str) -> None:
        errors.append(f"{kind}: {text}")  # every error counts: the theme's own were fixed in the book

    page.on("pageerror", lambda e: record("pageerror", str(e)))
    page.on("console", lambda m: record("console", m.text) if m.type == "error" else None)

    def route(r):
        url = r.request.url
        if url.startswith((origin, "data:", "blob:", "about:")):
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    page.route("**/*", route)
    return errors, outside


def move_every_control(explorer) -> int:
    """Move each slider/menu of one precomputed explorer; assert the picture changes each time."""
    image = explorer.locator("img")
    controls = explorer.locator("input[type=range], select")
    for index in range(controls.count()):
        control = controls.nth(index)
        before_src, before_frame = image.get_attribute("src"), explorer.get_attribute("data-frame")
        before_pixels = image.screenshot()
        if control.evaluate("el => el.tagName") == "SELECT":
            count = control.locator("option").count()
            current = int(control.input_value())
            control.select_option(str((current + 1) % count))
        else:
            top = int(control.get_attribute("max"))
            current = int(control.input_value())
            control.fill(str(0 if current != 0 else top))
        explorer.page.wait_for_function("([el, f]) => el.dataset.frame !== f",
                                        arg=[explorer.element_handle(), before_frame])
        assert image.get_attribute("src") != before_src
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
        assert image.screenshot() != before_pixels, "the picture did not change"
    return controls.count()


@pytest.mark.book  # book_url asks for the built book at run time: the marks are not derived for it
@pytest.mark.xdist_group("book")
def test_built_book_is_offline_and_every_explorer_responds(browser, book_url):
    found = 0
    prebuilt = os.environ.get("GRADLAB_BOOK_HTML")
    for name in toc_files():
        if prebuilt and not (Path(prebuilt) / f"{name}.html").exists():
            continue  # a partial build given by hand
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        errors, outside = watch(page, book_url)
        page.goto(f"{book_url}/{name}.html", wait_until="load")
        page.wait_for_timeout(300)
        explorers = page.locator(".gradlab-frames")
        source = ROOT / f"{name}.md"
        expected = source.read_text().count(".static_html(") if source.exists() else 0
        assert explorers.count() == expected, f"{name}: {explorers.count()} explorers shown, {expected} in the source"
        for index in range(explorers.count()):
            explorer = explorers.nth(index)
            explorer.scroll_into_view_if_needed()
            assert move_every_control(explorer) >= 1, f"{name}: explorer {index} has no control"
            found += 1
        context.close()
        assert not outside, f"{name}: requests left 127.0.0.1: {outside[:5]}"
        assert not errors, f"{name}: JavaScript errors: {errors[:5]}"
    if not prebuilt:
        assert found >= 5, f"only {found} precomputed explorers in the book (Chapters 2 and 3 have 5)"
    assert found >= 1, "the partial build has no precomputed explorer"


# --------------------------------------------------------------------------- live, in JupyterLab
NOTEBOOK_CODE = """import torch
torch.set_num_threads(1)
from gradlab.widgets import GradientExplorer
explorer = GradientExplorer(estimators=["es_forward", "es_antithetic"])
explorer"""


@pytest.fixture
def jupyterlab(tmp_path):
    if not JUPYTER_LAB.exists():
        unavailable(f"{JUPYTER_LAB} is missing: install jupyterlab to run the live widget test")
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {},
                   "outputs": [], "source": NOTEBOOK_CODE}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (tmp_path / "explorer.ipynb").write_text(json.dumps(notebook))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(
        [str(JUPYTER_LAB), "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly", "--allow-root"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def direct_cosine(num_samples: int) -> float:
    import torch

    from gradlab.compare import cosine_similarity
    from gradlab.es import es_grad
    from gradlab.explore import digits_mlp_problem

    problem = digits_mlp_problem()
    truth = torch.func.grad(problem.objective)(problem.theta)
    est = es_grad(problem.objective, problem.theta, sigma=0.01, num_samples=num_samples, method="antithetic",
                  generator=torch.Generator().manual_seed(0))
    return cosine_similarity(est, truth)


@pytest.mark.xdist_group("jupyterlab")  # needs no book: runs beside the book's tests
def test_live_explorer_in_jupyterlab_follows_its_slider(browser, jupyterlab):
    from gradlab.frames import fmt

    base, token = jupyterlab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors, outside = watch(page, base)
    page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
    started = "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-Cell .jp-InputPrompt')?.textContent || '')"
    for _ in range(8):  # a key press that lands while JupyterLab is still loading is lost: try again
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.click(timeout=120_000)
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(started, timeout=15_000)
            break
        except Exception:  # noqa: BLE001
            continue
    cosine = page.locator(".gradlab-readout .gradlab-cosine")
    try:
        cosine.wait_for(timeout=240_000)  # kernel start, torch import, the digits data, the first view
    except Exception:  # noqa: BLE001 (report what the notebook shows instead)
        outputs = page.locator(".jp-OutputArea").all_inner_texts()
        pytest.fail(f"no explorer readout appeared; cell outputs: {outputs}; JavaScript errors: {errors[:5]}")
    before = cosine.inner_text()
    assert before == fmt(direct_cosine(100))
    slider = page.locator(".widget-hslider", has=page.locator(".widget-label", has_text=re.compile(r"^N$")))
    handle = slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(6):  # log-steps of 0.05: N from 100 towards 10^2.3
        handle.press("ArrowRight")
    page.wait_for_timeout(500)
    shown_n = int(slider.locator(".widget-readout").inner_text())
    assert 100 < shown_n <= 200, shown_n
    # The kernel has caught up with the last key press when the evaluations read 2N (antithetic).
    page.wait_for_function(
        "want => document.querySelector('.gradlab-readout .gradlab-evaluations')?.textContent === want",
        arg=str(2 * shown_n), timeout=60_000)
    assert cosine.inner_text() != before
    assert cosine.inner_text() == fmt(direct_cosine(shown_n))
    context.close()
    assert not outside, f"JupyterLab page requested outside 127.0.0.1: {outside[:5]}"
